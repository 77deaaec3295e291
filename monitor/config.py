"""Configuration: the YAML file, validated into immutable values.

The file is composed into PyYAML nodes (not plain Python objects) so that every error can
name its line: each is reported as `FILE:LINE: dotted.path: message`, and all errors of a
file are reported together. `${VAR}` in string values is replaced from the environment, so
secrets stay out of the file; error messages quote the file's text, never a substituted
value. Reading is bounded (file size, nesting depth, alias uses and expansion), so a wrong
or hostile file costs little to reject.

Imports the standard library, PyYAML, `monitor.model`, `monitor.timefmt`, `monitor.probes`
(the one check of a target's URL, its kind and proxy) and, to validate notifier settings and
maintenance windows, `monitor.notify` (which never imports config).
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from monitor.model import MAX_REDIRECTS, REDIRECT_POLICIES, StatusRange, Target
from monitor.notify.maintenance import Window, parse_window
from monitor.notify.registry import TYPES as NOTIFIER_TYPES
from monitor.notify.registry import build_notifier
from monitor.probes import KINDS, check_url, kind_of, parse_proxy_url
from monitor.probes.dns import rcode_names
from monitor.probes.icmp import GAP
from monitor.timefmt import parse_duration

# --- the values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1"
    port: int = 9321  # 0 picks a free port (tests)
    token: str | None = None  # optional bearer token required on every path but /healthz
    allowed_hosts: tuple[str, ...] = ()  # Host names served beyond the local ones; "*" = any
    allow_public_without_token: bool = False  # listen beyond loopback with no token
    public_status: bool = False  # status pages and badges without the token
    peers: tuple[str, ...] = ()  # other monitors' base URLs, for the location matrix


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str = "data/monitor.db"  # relative paths are relative to the CWD
    minute_retention: float = 0.0  # seconds; per-minute rollups (0 = not written)
    hour_retention: float = 400 * 86400  # per-hour rollups
    outage_retention: float | None = None  # None = keep forever


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # From 5 ms like the Prometheus clients' defaults, so fast sites are resolved too.
    duration_buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                           5, 10, 30)
    per_target_histogram: bool = True  # can be switched off at large scale


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What the daemon may use of the machine (None: derived from RLIMIT_NOFILE at start)."""

    max_probes_in_flight: int | None = None
    server_connections: int | None = None  # connections to the daemon's own HTTP server
    server_header_timeout: float = 5.0  # idle or half-sent requests are closed after this
    probe_workers: int = 0  # probe child processes (monitor.workers); 0: probes in the daemon


@dataclass(frozen=True, slots=True)
class ConnectivityConfig:
    """How the monitor tells its own network outage from the sites' (monitor.connectivity)."""

    checks: tuple[str, ...] = ()  # TCP host:port endpoints; empty: the failing-share rule
    interval: float = 30.0  # seconds between check rounds (and back-online checks)
    timeout: float = 3.0  # per check round
    # Without checks: this share of hosts failing at once = offline. Off by default: from
    # inside, a real outage of most sites at once (2022) looks the same.
    failing_share: float | None = None
    min_hosts: int = 3  # ... out of at least this many distinct hosts


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    name: str
    type: str  # a key of monitor.notify.registry.TYPES
    # The rest of the notifier's mapping as yaml.safe_load would give it, with ${VAR}
    # substituted in strings (substituted values stay strings). Checked at load time by
    # building the notifier (monitor.notify.registry): a loaded config builds without error.
    settings: Mapping[str, Any]
    line: int = 0  # line of the notifier's entry


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file path it came from, as given
    location: str  # vantage point name; default: the host name made label-safe
    server: ServerConfig
    store: StoreConfig
    metrics: MetricsConfig
    targets: tuple[Target, ...]
    limits: LimitsConfig = LimitsConfig()
    connectivity: ConnectivityConfig = ConnectivityConfig()
    notifiers: tuple[NotifierConfig, ...] = ()
    maintenance: tuple[Window, ...] = ()


class ConfigError(Exception):
    """The configuration is invalid. `errors` holds every problem found, in file order."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def format_errors(exc: ConfigError) -> str:
    """The errors, one a line, then a count: what the CLI prints."""
    count = len(exc.errors)
    return "\n".join(
        [*exc.errors, f"{count} error{'' if count == 1 else 's'} in the configuration"]
    )


# --- durations and sizes ----------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def parse_size(text: str | int) -> int:
    """Bytes in "1MiB", "512KiB", "1MB", "1000" (KB/MB/GB are decimal, KiB/MiB/GiB binary)."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    if isinstance(text, str):
        match = _SIZE.fullmatch(text.strip())
        if match and match.group(2) in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(f"must be a size like 1MiB, got {text!r}")


# --- loading ----------------------------------------------------------------------------

# Bounds on what a config file may cost to read. 100,000 targets take about 6 MiB; a
# "billion laughs" YAML bomb turns 500 bytes into 10^9 nodes through nested aliases.
MAX_CONFIG_BYTES = 16 * 2**20  # the worst (millions of one-character items) takes 1 GB and 16 s
MAX_ALIASES = 100_000  # alias uses (*name): one per target at 100,000 targets
MAX_ALIAS_NODES = 1_000_000  # nodes the aliases add to the document once expanded
MAX_ERRORS = 100  # listed; a wrong file (say, a list of 5 million lines) has no end of them
MAX_DEPTH = 64  # levels of nesting: a config needs about 5; the parsing code recurses per level


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raises ConfigError listing every error found."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)  # bounded: /dev/zero or a log file by mistake
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([
            f"{source}: the file is larger than {MAX_CONFIG_BYTES // 2**20} MiB, the limit for "
            "a config file; check that it is the right file, or split the targets over "
            "several monitors"
        ])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{source}:{line}: the file is not valid UTF-8"]) from None
    return parse_config(text, source, environ)


def host_name_problem(name: str) -> str | None:
    """Why `name` cannot go in server.allowed_hosts, or None."""
    if name == "*" or _HOST_NAME_RE.fullmatch(name.strip("[]").lower()):
        return None
    return (f"{name!r} is not a host name; write the name alone (monitor.example.com), "
            "without scheme or port")


def parse_config(text: str, source: str, environ: Mapping[str, str] | None = None) -> Config:
    """Validate config text; `source` names it in error messages."""
    parser = _Parser(source, os.environ if environ is None else environ)
    config = parser.parse(text)
    if parser.errors or config is None:
        ordered = sorted(parser.errors, key=lambda error: error[0])  # stable: file order
        messages = [message for _, message in ordered]
        if parser.unlisted:
            messages.append(f"{source}: {parser.unlisted:,} more errors; fix these first")
        raise ConfigError(messages)
    return config


# --- validation -------------------------------------------------------------------------

NAME_RE = re.compile(r"[a-z0-9_.-]+")  # target, notifier and location names: label-safe
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = frozenset({"target", "location", "url", "kind"})  # and every __* name
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HOST_NAME_RE = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")  # a name, IPv4 or IPv6
MIN_INTERVAL = 1.0

_TOP_KEYS = (
    "location",
    "server",
    "store",
    "metrics",
    "limits",
    "connectivity",
    "defaults",
    "targets",
    "notifiers",
    "maintenance",
)
_SERVER_KEYS = ("listen", "port", "token", "allowed_hosts", "allow_public_without_token",
                "public_status", "peers")
_STORE_KEYS = ("path", "retention")
_RETENTION_KEYS = ("minutes", "hours", "outages")
_METRICS_KEYS = ("duration_buckets", "per_target_histogram")
_LIMITS_KEYS = (
    "max_probes_in_flight", "server_connections", "server_header_timeout", "probe_workers"
)
_CONNECTIVITY_KEYS = ("checks", "interval", "timeout", "failing_share", "min_hosts")
_ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
_EXPECT_KEYS = ("status", "body_contains", "body_regex", "rcode")
_TARGET_KEYS = (
    "name",
    "url",
    "kind",
    "interval",
    "timeout",
    "method",
    "headers",
    "body",
    "expect",
    "follow_redirects",
    "redirects",
    "max_redirects",
    "verify_tls",
    "max_body",
    "down_after",
    "up_after",
    "labels",
    "notifiers",
    "source_address",
    "min_days_left",
    "packets",
    "max_loss",
    "proxy",
)
# The kinds each option means something for (by Target field): a target's own option that
# does nothing for its kind is an error; a default is simply not used by other kinds.
_APPLIES: dict[str, tuple[str, ...]] = {
    "method": ("http",),
    "headers": ("http",),
    "expect_status": ("http",),
    "follow_redirects": ("http",),
    "redirects": ("http",),
    "max_redirects": ("http",),
    "proxy": ("http",),
    "body": ("http", "tcp", "tls"),
    "max_body_bytes": ("http", "tcp", "tls"),
    "body_contains": ("http", "tcp", "tls", "dns"),
    "body_regex": ("http", "tcp", "tls", "dns"),
    "verify_tls": ("http", "tls"),
    "min_days_left": ("http", "tls"),
    "expect_rcode": ("dns",),
    "packets": ("icmp",),
    "max_loss": ("icmp",),
}
MAX_PACKETS = 100
_OWN_KEYS = ("name", "url")  # every target needs its own: not allowed under `defaults:`

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_NUMBER_TAGS = (_INT, _FLOAT)
_TEXT_TAGS = (_STR, _INT, _FLOAT, _BOOL, _TIMESTAMP)  # a string field takes these as written

# `$${` is a literal `${`; `${NAME}` and `${NAME:-default}` are references; a lone `${` is bad.
_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_REF = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-([^${]*))?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS = re.compile(r"(\d{3})(?:\s*-\s*(\d{3}))?|([1-5])xx")

_BOMB = "write the values out instead (is it a YAML bomb?)"

_T = TypeVar("_T")
_Items = dict[str, tuple[Node, Node]]  # key → (key node, value node)
_Option = tuple[Any, Node]  # a parsed target option and the node it came from


class _Invalid(Exception):
    """A value is wrong: the caller reports the message at the value's node and path."""


class _Reported(Exception):
    """The errors are already recorded; the value cannot be used."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compose(text: str) -> Node | None:
    """libyaml when built in (10x faster: start-up with 100,000 targets); on an error the
    pure-Python parser runs again, for its more precise messages."""
    fast = getattr(yaml, "CSafeLoader", None)
    fast_error: yaml.YAMLError | None = None
    if fast is not None:
        try:
            return yaml.compose(text, Loader=fast)
        except yaml.YAMLError as exc:
            fast_error = exc
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        # The pure-Python composer recurses once per level: libyaml says it better.
        if fast_error is not None:
            raise fast_error from None
        raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep") from None


def _children(node: Node) -> list[Node]:
    """A list's items, or a mapping's keys and values in turn (key, value, key, ...)."""
    if isinstance(node, SequenceNode):
        return node.value  # type: ignore[no-any-return]
    if isinstance(node, MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _position(stack: list[list[Any]]) -> tuple[Node, str]:
    """The node whose line to report and the dotted path of the child last visited, from
    the frames of _Parser.bounded: a mapping's key, or the list itself."""
    path, where = "", stack[0][0]
    for node, _, visited, _ in stack:
        index = visited - 1
        if isinstance(node, SequenceNode):
            path, where = f"{path}[{index}]", node
        else:
            key = node.value[index // 2][0]
            where = key
            if index % 2:  # a value, not the key itself
                path = _join(path, key.value if isinstance(key, ScalarNode) else "?")
    return where, path


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _what(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {_NULL: "null", _BOOL: "a boolean", _INT: "a number", _FLOAT: "a number"}.get(
        node.tag, "a string"
    )


def _got(node: Node) -> str:
    """The offending value as written in the file, for 'got ...' in messages."""
    if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT, _BOOL):
        return str(node.value)
    if isinstance(node, ScalarNode) and node.tag != _NULL:
        return repr(node.value)
    return _what(node)


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key; expected one of: {', '.join(allowed)}"


def label_safe(text: str) -> str:
    """The nearest label-safe name: the fix offered for a bad one, a name for a host."""
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-")


def _check_name(value: str) -> str:
    if NAME_RE.fullmatch(value):
        return value
    fix = label_safe(value)
    hint = f"; try {fix!r}" if fix else ""
    raise _Invalid(f"must match [a-z0-9_.-]+ (it is used as a label value), got {value!r}{hint}")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _default_location() -> str:
    return label_safe(socket.gethostname()) or "unknown"


class _Parser:
    """One pass over the node tree. Every check records its error and carries on."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.errors: list[tuple[int, str]] = []
        self.unlisted = 0  # errors beyond MAX_ERRORS, only counted
        self.constructor = yaml.SafeLoader("")  # builds numbers, booleans etc. from nodes
        self.notifier_names: set[str] = set()
        self.target_names: set[str] = set()  # every name given, for maintenance windows

    # -- reporting and generic shapes --

    def error(self, node: Node | None, path: str, message: str) -> None:
        if len(self.errors) >= MAX_ERRORS:
            self.unlisted += 1
            return
        line = _line(node) if node is not None else 1
        where = f"{path}: " if path else ""
        self.errors.append((line, f"{self.source}:{line}: {where}{message}"))

    def attempt(self, parse: Callable[[Node, str], _T], node: Node, path: str) -> _T:
        """parse(node, path), reporting an _Invalid at the node; raises _Reported on error."""
        try:
            return parse(node, path)
        except _Invalid as exc:
            self.error(node, path, str(exc))
            raise _Reported from None

    def field(
        self, items: _Items, key: str, path: str, parse: Callable[[Node, str], _T], default: _T
    ) -> _T:
        """The parsed value of items[key], or `default` when it is absent or invalid."""
        if key not in items:
            return default
        try:
            return self.attempt(parse, items[key][1], _join(path, key))
        except _Reported:
            return default

    def items(self, node: Node, path: str, allowed: tuple[str, ...] | None) -> _Items:
        """The keys of a mapping; reports non-string, duplicate and unknown (if `allowed`) keys."""
        if not isinstance(node, MappingNode):
            raise _Invalid(f"must be a mapping, got {_what(node)}")
        result: _Items = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.error(key_node, path, f"keys must be strings, got {_what(key_node)}")
                continue
            key = key_node.value  # as written: `no:` stays "no", `200:` stays "200"
            key_path = _join(path, key)
            if key_node.tag == _MERGE:
                self.error(key_node, key_path, "merge keys are not supported")
            elif key in result:
                first = _line(result[key][0])
                self.error(key_node, key_path, f"duplicate key (first at line {first})")
            elif allowed is not None and key not in allowed:
                self.error(key_node, key_path, _unknown_key(key, allowed))
            else:
                result[key] = (key_node, value_node)
        return result

    def section(self, node: Node | None, path: str, allowed: tuple[str, ...] | None) -> _Items:
        """Like items(), but an absent or empty (null) section has no keys."""
        if node is None or _is_null(node):
            return {}
        try:
            return self.attempt(lambda n, p: self.items(n, p, allowed), node, path)
        except _Reported:
            return {}

    def plain(self, node: Node, path: str, seen: frozenset[int] = frozenset()) -> Any:
        """The node as yaml.safe_load would build it, with ${VAR} substituted in strings."""
        if id(node) in seen:
            raise _Invalid("recursive alias")
        if isinstance(node, MappingNode):
            items = self.items(node, path, None)
            inner = seen | {id(node)}
            return {k: self.plain(v, _join(path, k), inner) for k, (_, v) in items.items()}
        if isinstance(node, SequenceNode):
            inner = seen | {id(node)}
            return [self.plain(v, f"{path}[{i}]", inner) for i, v in enumerate(node.value)]
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return self.substitute(node, path)
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            raise _Invalid(f"cannot read value: {getattr(exc, 'problem', exc)}") from None

    # -- scalars --

    def substitute(self, node: ScalarNode, path: str) -> str:
        """The string with ${VAR} replaced from the environment."""
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "$${":
                return "${"
            ref = _VAR_REF.fullmatch(match.group(1) or "")
            if match.group(1) is None:
                problems.append("unterminated '${'; write '$${' for a literal '${'")
            elif ref is None:
                problems.append(f"invalid variable reference {token!r}")
            else:
                name, default = ref.group(1), ref.group(2)
                value = self.environ.get(name)
                if default is not None and not value:
                    return default
                if value is not None:
                    return value
                problems.append(f"environment variable {name} is not set")
            return ""

        result = _VAR.sub(replace, node.value)
        for problem in problems:
            self.error(node, path, problem)
        if problems:
            raise _Reported
        return result

    def text(self, node: Node, path: str) -> str:
        if isinstance(node, ScalarNode) and node.tag not in (*_TEXT_TAGS, _NULL):
            raise _Invalid(f"unsupported YAML tag {node.tag}")
        if not isinstance(node, ScalarNode) or node.tag not in _TEXT_TAGS:
            raise _Invalid(f"must be a string, got {_what(node)}")
        if node.tag == _STR:
            return self.substitute(node, path)
        return str(node.value)  # `country: no` means "no", not False: take it as written

    def from_env(self, node: Node, path: str) -> str | None:
        """The substituted text of a string holding ${VAR}, for number and boolean fields."""
        if isinstance(node, ScalarNode) and node.tag == _STR and "${" in node.value:
            return self.substitute(node, path)
        return None

    def string(self, node: Node, path: str) -> str:
        value = self.text(node, path)
        if not value:
            raise _Invalid("must not be empty")
        return value

    def optional_string(self, node: Node, path: str) -> str | None:
        return None if _is_null(node) else self.string(node, path)

    def integer(self, node: Node, path: str, low: int, high: int | None = None) -> int:
        value: Any = None
        if isinstance(node, ScalarNode) and node.tag == _INT:
            value = self.constructor.construct_object(node)
        elif (env := self.from_env(node, path)) is not None and re.fullmatch(r"-?\d+", env):
            value = int(env)
        if not isinstance(value, int):
            raise _Invalid(f"must be a whole number, got {_got(node)}")
        if value < low:
            raise _Invalid(f"must be at least {low}, got {_got(node)}")
        if high is not None and value > high:
            raise _Invalid(f"must be at most {high}, got {_got(node)}")
        return value

    def number(self, node: Node, path: str) -> float:
        value: Any = None
        if isinstance(node, ScalarNode) and node.tag in _NUMBER_TAGS:
            value = float(self.constructor.construct_object(node))
        elif (env := self.from_env(node, path)) is not None and _NUMBER.fullmatch(env):
            value = float(env)
        if value is None or not math.isfinite(value):
            raise _Invalid(f"must be a number, got {_got(node)}")
        return float(value)

    def boolean(self, node: Node, path: str) -> bool:
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(self.constructor.construct_object(node))
        env = self.from_env(node, path)
        if env is not None and env.lower() in ("true", "false"):
            return env.lower() == "true"
        raise _Invalid(f"must be true or false, got {_got(node)}")

    def duration(self, node: Node, path: str) -> float:
        raw: Any = None
        if isinstance(node, ScalarNode) and node.tag in _NUMBER_TAGS:
            raw = self.constructor.construct_object(node)
        elif isinstance(node, ScalarNode) and node.tag == _STR:
            raw = self.substitute(node, path)
        try:
            return parse_duration(raw)
        except ValueError:
            raise _Invalid(f"must be a duration like 10s, got {_got(node)}") from None

    def positive_duration(self, node: Node, path: str) -> float:
        value = self.duration(node, path)
        if value <= 0:
            raise _Invalid(f"must be longer than 0s, got {_got(node)}")
        return value

    # -- the file --

    def parse(self, text: str) -> Config | None:
        try:
            root = _compose(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "syntax error"
            if exc.context and exc.problem and not exc.context.startswith("while "):
                problem = f"{exc.context}, {exc.problem}"  # "expected a single document..."
            self.errors.append(
                (line, f"{self.source}:{line}: invalid YAML: {problem} (column {column})")
            )
            return None
        except yaml.YAMLError as exc:  # e.g. a ReaderError for a control character
            position = getattr(exc, "position", 0)
            line = text.count("\n", 0, position) + 1
            first = str(exc).splitlines()[0]  # the rest names "<unicode string>"
            self.errors.append((line, f"{self.source}:{line}: invalid YAML: {first}"))
            return None
        if root is None:
            self.error(None, "", "the file is empty; it needs at least a list of targets")
            return None
        if not self.bounded(root):
            return None  # checked before anything recurses into it or expands an alias
        if not isinstance(root, MappingNode):
            self.error(root, "", f"the top level must be a mapping, got {_what(root)}")
            return None

        top = self.section(root, "", _TOP_KEYS)
        node = {key: value for key, (_, value) in top.items()}
        location = self.field(top, "location", "", self.name, None) or _default_location()
        server = self.server(node.get("server"))
        store = self.store(node.get("store"))
        metrics = self.metrics(node.get("metrics"))
        limits = self.limits(node.get("limits"))
        connectivity = self.connectivity(node.get("connectivity"))
        notifiers = self.notifiers(node.get("notifiers"))  # before targets: they refer to them
        defaults = self.defaults(node.get("defaults"))
        targets = self.targets(node.get("targets"), root, defaults)
        no_windows: tuple[Window, ...] = ()
        maintenance = self.field(top, "maintenance", "", self.maintenance, no_windows)
        return Config(
            source=self.source,
            location=location,
            server=server,
            store=store,
            metrics=metrics,
            targets=targets,
            limits=limits,
            connectivity=connectivity,
            notifiers=notifiers,
            maintenance=maintenance,
        )

    def bounded(self, root: Node) -> bool:
        """False, with an error where it happens, if the nesting is deeper than MAX_DEPTH,
        or aliases exceed MAX_ALIASES uses or add more than MAX_ALIAS_NODES nodes. Counted
        over distinct nodes, never by expanding them: a node met again is an alias use and
        adds its whole expanded size. Paths are worked out only for an error (speed)."""
        sizes: dict[int, int] = {}  # id(node) → expanded size, for nodes counted
        open_ids = {id(root)}  # nodes being counted: meeting one again is recursion
        uses = added = 0
        # One frame per level: the node, its children, the next child's index, size so far.
        stack: list[list[Any]] = [[root, _children(root), 0, 1]]
        while stack:
            frame = stack[-1]
            node, children, index, size = frame
            if index == len(children):
                stack.pop()
                open_ids.discard(id(node))
                sizes[id(node)] = size
                if stack:
                    stack[-1][3] += size
                continue
            frame[2] = index + 1
            child = children[index]
            problem = None
            if id(child) in sizes or id(child) in open_ids:
                # Recursion adds nothing here: plain() and the shapes report it.
                uses += 1
                added += sizes.get(id(child), 0)
                frame[3] += sizes.get(id(child), 0)
                if uses > MAX_ALIASES:
                    problem = f"more than {MAX_ALIASES:,} aliases; {_BOMB}"
                elif added > MAX_ALIAS_NODES:
                    problem = f"aliases add more than {MAX_ALIAS_NODES:,} nodes; {_BOMB}"
            elif isinstance(child, ScalarNode):
                sizes[id(child)] = 1
                frame[3] += 1
            elif len(stack) >= MAX_DEPTH:
                problem = f"nested more than {MAX_DEPTH} levels deep"
            else:
                open_ids.add(id(child))
                stack.append([child, _children(child), 0, 1])
            if problem is not None:
                where, path = _position(stack)
                self.error(where, path, problem)
                return False
        return True

    def name(self, node: Node, path: str) -> str:
        """A target or location name: label-safe."""
        return _check_name(self.string(node, path))

    def server(self, node: Node | None) -> ServerConfig:
        items = self.section(node, "server", _SERVER_KEYS)
        default = ServerConfig()
        return ServerConfig(
            listen=self.field(items, "listen", "server", self.string, default.listen),
            port=self.field(
                items, "port", "server", lambda n, p: self.integer(n, p, 0, 65535), default.port
            ),
            token=self.field(items, "token", "server", self.token, default.token),
            allowed_hosts=self.field(items, "allowed_hosts", "server", self.host_names, ()),
            allow_public_without_token=self.field(
                items, "allow_public_without_token", "server", self.boolean,
                default.allow_public_without_token,
            ),
            public_status=self.field(
                items, "public_status", "server", self.boolean, default.public_status
            ),
            peers=self.field(items, "peers", "server", self.peer_urls, ()),
        )

    def peer_urls(self, node: Node, path: str) -> tuple[str, ...]:
        """Other monitors' base URLs (http://host:port), each reported where it is wrong."""
        if not isinstance(node, SequenceNode):
            raise _Invalid(f"must be a list of URLs, got {_what(node)}")
        urls: list[str] = []
        for i, item in enumerate(node.value):
            with contextlib.suppress(_Reported):
                urls.append(self.attempt(self.url, item, f"{path}[{i}]").rstrip("/"))
        if len(urls) < len(node.value):
            raise _Reported
        return tuple(urls)

    def token(self, node: Node, path: str) -> str | None:
        if _is_null(node):
            return None
        value = self.text(node, path)
        if not value and "${" not in node.value:
            raise _Invalid("must not be empty")
        return value or None  # `${MONITOR_TOKEN:-}` with the variable unset: no token

    def host_names(self, node: Node, path: str) -> tuple[str, ...]:
        """Names for the Host allow-list: bare host names or IP addresses, or "*"."""
        if not isinstance(node, SequenceNode):
            raise _Invalid(f"must be a list of host names, got {_what(node)}")
        names: list[str] = []
        failed = False
        for i, item in enumerate(node.value):
            try:
                name = self.attempt(self.string, item, f"{path}[{i}]").strip().lower()
            except _Reported:
                failed = True
                continue
            if (problem := host_name_problem(name)) is not None:
                self.error(item, f"{path}[{i}]", problem)
                failed = True
            names.append(name.strip("[]"))
        if failed:
            raise _Reported
        return tuple(names)

    def store(self, node: Node | None) -> StoreConfig:
        items = self.section(node, "store", _STORE_KEYS)
        retention = self.section(
            items.get("retention", (None, None))[1], "store.retention", _RETENTION_KEYS
        )
        default = StoreConfig()
        path = "store.retention"
        return StoreConfig(
            path=self.field(items, "path", "store", self.string, default.path),
            minute_retention=self.field(
                retention, "minutes", path, self.duration_or_off, default.minute_retention
            ),
            hour_retention=self.field(
                retention, "hours", path, self.positive_duration, default.hour_retention
            ),
            outage_retention=self.field(
                retention, "outages", path, self.outage_retention, default.outage_retention
            ),
        )

    def duration_or_off(self, node: Node, path: str) -> float:
        """A duration, or 0 / off: not kept at all."""
        if isinstance(node, ScalarNode) and node.value == "off":
            return 0.0
        value = self.duration(node, path)
        if value < 0:
            raise _Invalid(f"must be a duration like 14d, or 0 (off), got {_got(node)}")
        return value

    def outage_retention(self, node: Node, path: str) -> float | None:
        if _is_null(node) or (isinstance(node, ScalarNode) and node.value == "forever"):
            return None
        try:
            return self.positive_duration(node, path)
        except _Invalid:
            raise _Invalid(f"must be a duration like 365d or 'forever', got {_got(node)}") from None

    def metrics(self, node: Node | None) -> MetricsConfig:
        items = self.section(node, "metrics", _METRICS_KEYS)
        default = MetricsConfig()
        return MetricsConfig(
            duration_buckets=self.field(
                items, "duration_buckets", "metrics", self.buckets, default.duration_buckets
            ),
            per_target_histogram=self.field(
                items,
                "per_target_histogram",
                "metrics",
                self.boolean,
                default.per_target_histogram,
            ),
        )

    def limits(self, node: Node | None) -> LimitsConfig:
        items = self.section(node, "limits", _LIMITS_KEYS)
        default = LimitsConfig()

        def count(n: Node, p: str) -> int | None:
            if (isinstance(n, ScalarNode) and n.value == "auto") or _is_null(n):
                return None
            try:
                return self.integer(n, p, 1)
            except _Invalid:
                raise _Invalid(f"must be a whole number of at least 1 or 'auto', got {_got(n)}")\
                    from None

        return LimitsConfig(
            max_probes_in_flight=self.field(
                items, "max_probes_in_flight", "limits", count, default.max_probes_in_flight
            ),
            server_connections=self.field(
                items, "server_connections", "limits", count, default.server_connections
            ),
            server_header_timeout=self.field(
                items, "server_header_timeout", "limits", self.positive_duration,
                default.server_header_timeout,
            ),
            probe_workers=self.field(
                items, "probe_workers", "limits", lambda n, p: self.integer(n, p, 0, 64),
                default.probe_workers,
            ),
        )

    def connectivity(self, node: Node | None) -> ConnectivityConfig:
        items = self.section(node, "connectivity", _CONNECTIVITY_KEYS)
        default = ConnectivityConfig()
        path = "connectivity"
        return ConnectivityConfig(
            checks=self.field(items, "checks", path, self.endpoints, default.checks),
            interval=self.field(items, "interval", path, self.positive_duration,
                                default.interval),
            timeout=self.field(items, "timeout", path, self.positive_duration, default.timeout),
            failing_share=self.field(items, "failing_share", path, self.share,
                                     default.failing_share),
            min_hosts=self.field(items, "min_hosts", path, lambda n, p: self.integer(n, p, 1),
                                 default.min_hosts),
        )

    def endpoints(self, node: Node, path: str) -> tuple[str, ...]:
        if _is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            raise _Invalid(f"must be a list of host:port endpoints, got {_what(node)}")
        found: list[str] = []
        for i, item in enumerate(node.value):
            try:
                value = self.attempt(self.string, item, f"{path}[{i}]")
            except _Reported:
                continue
            match = _ENDPOINT.fullmatch(value)
            if match is None or not 1 <= int(match.group(2)) <= 65535:
                self.error(item, f"{path}[{i}]",
                           f"must be host:port (like 1.1.1.1:443 or [2606:4700::1111]:443), "
                           f"got {value!r}")
            else:
                found.append(value)
        return tuple(found)

    def share(self, node: Node, path: str) -> float | None:
        if _is_null(node) or (isinstance(node, ScalarNode) and node.value == "off"):
            return None
        value = self.number(node, path)
        if not 0 < value <= 1:
            raise _Invalid(f"must be more than 0 and at most 1, or off, got {_got(node)}")
        return value

    def buckets(self, node: Node, path: str) -> tuple[float, ...]:
        if not isinstance(node, SequenceNode) or not node.value:
            raise _Invalid(f"must be a list of upper bounds in seconds, got {_what(node)}")
        bounds: list[float] = []
        failed = False
        for i, item in enumerate(node.value):
            item_path = f"{path}[{i}]"
            try:
                bound = self.attempt(self.number, item, item_path)
            except _Reported:
                failed = True
                continue
            if bound <= 0:
                self.error(item, item_path, f"must be greater than 0, got {_got(item)}")
                failed = True
            elif bounds and bound <= bounds[-1]:
                self.error(
                    item, item_path, f"must be greater than the bucket before it ({bounds[-1]:g})"
                )
                failed = True
            bounds.append(bound)
        if failed:
            raise _Reported
        return tuple(bounds)

    def notifiers(self, node: Node | None) -> tuple[NotifierConfig, ...]:
        if node is not None and not isinstance(node, MappingNode) and not _is_null(node):
            self.error(
                node,
                "notifiers",
                f"must be a mapping of notifier names to settings, got {_what(node)}",
            )
            return ()
        entries = self.section(node, "notifiers", None)
        self.notifier_names = set(entries)  # even invalid ones: no cascade of unknown references
        result: list[NotifierConfig] = []
        for name, (key_node, value_node) in entries.items():
            path = f"notifiers.{name}"
            try:
                self.attempt(lambda n, p: _check_name(n.value), key_node, path)
                items = self.attempt(lambda n, p: self.items(n, p, None), value_node, path)
                if "type" not in items:
                    self.error(value_node, path, "missing required key 'type'")
                    continue
                kind = self.attempt(self.notifier_type, items["type"][1], f"{path}.type")
                settings = {
                    key: self.attempt(self.plain, value, _join(path, key))
                    for key, (_, value) in items.items()
                    if key != "type"
                }
            except _Reported:
                continue
            self.notifier_settings(name, kind, settings, items, key_node)
            result.append(NotifierConfig(name, kind, MappingProxyType(settings), _line(key_node)))
        return tuple(result)

    def notifier_settings(
        self, name: str, kind: str, settings: dict[str, Any], items: _Items, entry: Node
    ) -> None:
        """Reports what building the notifier finds wrong, at the line of the setting."""
        path = f"notifiers.{name}"
        if "repeat" in items:  # the daemon's reminder period, not a channel setting
            with contextlib.suppress(_Reported):
                self.attempt(self.positive_duration, items["repeat"][1], f"{path}.repeat")
        try:
            build_notifier(name, kind, {k: v for k, v in settings.items() if k != "repeat"})
        except ValueError as exc:
            self.nested_error(str(exc), path, {k: key for k, (key, _) in items.items()}, entry)

    def nested_error(
        self, text: str, path: str, keys: Mapping[str, Node], entry: Node
    ) -> None:
        """An error from monitor.notify ("notifiers.ops.url: required"), reported at its
        key's line when the key is there, else at the entry's."""
        where, _, problem = text.partition(": ")
        node = entry
        if where.startswith(path) and where[len(path):len(path) + 1] in (".", "["):
            rest = where[len(path):].lstrip(".")
            key = re.match(r"[^.\[]*", rest)
            if key is not None and key.group(0) in keys:
                node = keys[key.group(0)]
        self.error(node, where, problem)

    def notifier_type(self, node: Node, path: str) -> str:
        kind = self.string(node, path)
        if kind not in NOTIFIER_TYPES:
            close = difflib.get_close_matches(kind, list(NOTIFIER_TYPES), n=1)
            choices = f"one of: {', '.join(NOTIFIER_TYPES)}"
            hint = f"did you mean '{close[0]}'?" if close else choices
            raise _Invalid(f"unknown notifier type {kind!r}; {hint}")
        return kind

    def maintenance(self, node: Node, path: str) -> tuple[Window, ...]:
        """The windows, each checked by monitor.notify.maintenance; errors name their line."""
        if _is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            raise _Invalid(f"must be a list, got {_what(node)}")
        windows: list[Window] = []
        for i, item in enumerate(node.value):
            where = f"{path}[{i}]"
            try:
                value = self.attempt(self.plain, item, where)
            except _Reported:
                continue
            if not isinstance(value, dict):
                self.error(item, where, f"must be a mapping, got {_what(item)}")
                continue
            keys = {k.value: k for k, _ in item.value if isinstance(k, ScalarNode)}
            try:
                window = parse_window(value, where)
            except ValueError as exc:
                self.nested_error(str(exc), where, keys, item)
                continue
            windows.append(window)
            # A misspelt name would make the window silently cover nothing.
            named = value.get("targets")
            for j, name in enumerate([named] if isinstance(named, str) else named or ()):
                if name not in self.target_names:
                    close = difflib.get_close_matches(name, sorted(self.target_names), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    at = f"{where}.targets" + ("" if isinstance(named, str) else f"[{j}]")
                    self.error(keys["targets"], at, f"unknown target {name!r}{hint}")
        return tuple(windows)

    # -- targets --

    def defaults(self, node: Node | None) -> dict[str, _Option]:
        items = self.section(node, "defaults", _TARGET_KEYS)
        for key in _OWN_KEYS:
            if key in items:
                self.error(
                    items[key][0],
                    f"defaults.{key}",
                    "cannot have a default; every target needs its own",
                )
                del items[key]
        options = self.options(items, "defaults")
        self.check_overlap(options, {}, "defaults")
        return options

    def targets(
        self, node: Node | None, root: Node, defaults: dict[str, _Option]
    ) -> tuple[Target, ...]:
        if node is None or _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
            self.error(node or root, "targets", "at least one target is required")
            return ()
        if not isinstance(node, SequenceNode):
            self.error(node, "targets", f"must be a list of targets, got {_what(node)}")
            return ()
        targets: list[Target] = []
        first_line: dict[str, int] = {}
        for i, item in enumerate(node.value):
            path = f"targets[{i}]"
            try:
                items = self.attempt(lambda n, p: self.items(n, p, _TARGET_KEYS), item, path)
            except _Reported:
                continue
            name = url = None
            for key in _OWN_KEYS:
                if key not in items:
                    self.error(item, path, f"missing required key '{key}'")
            name = self.field(items, "name", path, self.name, None)
            url = self.field(items, "url", path, self.url, None)
            if name is not None:
                if name in first_line:
                    self.error(
                        items["name"][1],
                        f"{path}.name",
                        f"duplicate target name {name!r} (first at line {first_line[name]})",
                    )
                else:
                    first_line[name] = _line(items["name"][1])
                    self.target_names.add(name)
            own = self.options({k: v for k, v in items.items() if k not in _OWN_KEYS}, path)
            self.check_overlap(own, defaults, path)
            if name is not None and url is not None:
                kind = self.check_kind(url, items["url"][1], own, defaults, path)
                if kind is not None:
                    targets.append(self.target(name, url, defaults, own, kind))
        return tuple(targets)

    def check_kind(
        self, url: str, url_node: Node, own: dict[str, _Option],
        defaults: dict[str, _Option], path: str,
    ) -> str | None:
        """The target's kind (its URL's scheme); its own options must mean something for it."""
        kind = kind_of(url) or "http"
        given, kind_node = own.get("kind") or defaults.get("kind") or (kind, None)
        if given != kind and kind_node is not None:
            where = "" if "kind" in own else " (from defaults)"
            self.error(url_node, f"{path}.url",
                       f"a {kind} URL, but kind is {given!r}{where}; the URL's scheme sets the "
                       f"kind, so kind: can be left out")
            return None
        failed = False
        for field, (_, node) in own.items():
            kinds = _APPLIES.get(field)
            if kinds is not None and kind not in kinds:
                self.error(node, self.option_path(path, field),
                           f"does not apply to a {kind} target (only to {', '.join(kinds)})")
                failed = True
        if kind == "http" and "min_days_left" in own and not url.lower().startswith("https:"):
            self.error(own["min_days_left"][1], f"{path}.min_days_left",
                       "applies to https:// URLs only")
            failed = True
        if kind == "icmp":
            builtin = Target(name="-", url="-")
            packets, node = own.get("packets") or defaults.get("packets") or (
                builtin.packets, url_node)
            timeout, _ = own.get("timeout") or defaults.get("timeout") or (builtin.timeout, None)
            if (packets - 1) * GAP >= timeout:
                self.error(node, f"{path}.packets",
                           f"{packets} packets {GAP:g}s apart need a timeout over "
                           f"{_seconds((packets - 1) * GAP)}, got {_seconds(timeout)}")
                failed = True
        return None if failed else kind

    @staticmethod
    def option_path(path: str, field: str) -> str:
        """The dotted path of a Target field as written in the file."""
        written = {"expect_status": "expect.status", "body_contains": "expect.body_contains",
                   "body_regex": "expect.body_regex", "expect_rcode": "expect.rcode",
                   "max_body_bytes": "max_body"}
        return _join(path, written.get(field, field))

    def target(
        self, name: str, url: str, defaults: dict[str, _Option], own: dict[str, _Option],
        kind: str,
    ) -> Target:
        fields = {key: value for key, (value, _) in (defaults | own).items()}
        fields["kind"] = kind
        # Headers and labels merge key by key: the target's own win over the defaults'.
        for key in ("headers", "labels"):
            merged = {**defaults.get(key, ({}, None))[0], **own.get(key, ({}, None))[0]}
            if merged:
                fields[key] = merged
        if "headers" in fields:
            fields["headers"] = tuple(fields["headers"].values())
        if "labels" in fields:
            fields["labels"] = tuple(sorted(fields["labels"].items()))
        for field, kinds in _APPLIES.items():  # defaults meant for other kinds
            if kind not in kinds:
                fields.pop(field, None)
        return Target(name=name, url=url, **fields)

    def check_overlap(
        self, own: dict[str, _Option], defaults: dict[str, _Option], path: str
    ) -> None:
        """A probe's timeout must fit in its interval, or runs would overlap. Reported once,
        where it was set: the target's timeout, else its interval, else the defaults."""
        if "timeout" not in own and "interval" not in own:
            return
        builtin = Target(name="-", url="-")
        timeout, timeout_node = (
            own.get("timeout") or defaults.get("timeout") or (builtin.timeout, None)
        )
        interval, interval_node = (
            own.get("interval") or defaults.get("interval") or (builtin.interval, None)
        )
        if timeout <= interval:
            return
        # Each node is there: the key was set in `own`, or checked above.
        if "timeout" in own and timeout_node is not None:
            self.error(
                timeout_node,
                f"{path}.timeout",
                f"must not be longer than the interval "
                f"({_seconds(interval)}), got "
                f"{_got(timeout_node)}",
            )
        elif interval_node is not None:
            self.error(
                interval_node,
                f"{path}.interval",
                f"must not be shorter than the timeout "
                f"({_seconds(timeout)}), got "
                f"{_got(interval_node)}",
            )

    def options(self, items: _Items, path: str) -> dict[str, _Option]:
        """Target options (everything but name and url) by Target field name."""
        parsers: dict[str, tuple[str, Callable[[Node, str], Any]]] = {
            "kind": ("kind", self.kind),
            "interval": ("interval", self.interval),
            "timeout": ("timeout", self.positive_duration),
            "method": ("method", self.method),
            "headers": ("headers", self.headers),
            "body": ("body", self.body),
            "follow_redirects": ("follow_redirects", self.boolean),
            "redirects": ("redirects", self.redirects),
            "max_redirects": ("max_redirects", lambda n, p: self.integer(n, p, 0, MAX_REDIRECTS)),
            "verify_tls": ("verify_tls", self.boolean),
            "max_body": ("max_body_bytes", self.max_body),
            "down_after": ("down_after", lambda n, p: self.integer(n, p, 1)),
            "up_after": ("up_after", lambda n, p: self.integer(n, p, 1)),
            "labels": ("labels", self.labels),
            "notifiers": ("notifiers", self.notifier_refs),
            "source_address": ("source_address", self.source_address),
            "min_days_left": ("min_days_left", self.days),
            "packets": ("packets", lambda n, p: self.integer(n, p, 1, MAX_PACKETS)),
            "max_loss": ("max_loss", self.share_lost),
            "proxy": ("proxy", self.proxy),
            "rcode": ("expect_rcode", self.rcodes),
            "status": ("expect_status", self.status),
            "body_contains": ("body_contains", self.optional_string),
            "body_regex": ("body_regex", self.regex),
        }
        if "expect" in items:
            expect = self.section(items["expect"][1], f"{path}.expect", _EXPECT_KEYS)
            items = {k: v for k, v in items.items() if k != "expect"}
            nested = [(f"{path}.expect", expect)]
        else:
            nested = []
        result: dict[str, _Option] = {}
        for base, group in [(path, items), *nested]:
            for key, (_, node) in group.items():
                field, parse = parsers[key]
                with contextlib.suppress(_Reported):  # already reported; the default stays
                    result[field] = (self.attempt(parse, node, _join(base, key)), node)
        return result

    def url(self, node: Node, path: str) -> str:
        url = self.string(node, path)
        try:
            check_url(url)
        except ValueError as exc:
            raise _Invalid(f"{exc}, got {_got(node)}") from None
        return url

    def days(self, node: Node, path: str) -> float | None:
        if _is_null(node):
            return None
        value = self.number(node, path)
        if value < 0:
            raise _Invalid(f"must be 0 days or more, got {_got(node)}")
        return value

    def share_lost(self, node: Node, path: str) -> float:
        """A share of packets as a percentage, with its sign: 20% (a bare 0.2 is ambiguous)."""
        text = self.text(node, path).strip() if isinstance(node, ScalarNode) else ""
        try:
            value = float(text.removesuffix("%")) if text.endswith("%") else math.nan
        except ValueError:
            value = math.nan
        if not 0 <= value <= 100:
            raise _Invalid(f"must be a percentage from 0% to 100% like 20%, got {_got(node)}")
        return value / 100

    def proxy(self, node: Node, path: str) -> str | None:
        url = self.optional_string(node, path)
        if url is not None:
            try:
                parse_proxy_url(url)
            except ValueError as exc:
                raise _Invalid(str(exc)) from None  # not quoted: it may hold a password
        return url

    def rcodes(self, node: Node, path: str) -> tuple[str, ...]:
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            raise _Invalid("must list at least one DNS response code")
        known = rcode_names()
        result: list[str] = []
        for item in items:
            code = self.string(item, path).upper() if isinstance(item, ScalarNode) else ""
            if code not in known:
                raise _Invalid(f"must be DNS response codes like NOERROR, NXDOMAIN or "
                               f"SERVFAIL, got {_got(item)}")
            result.append(code)
        return tuple(result)

    def source_address(self, node: Node, path: str) -> str | None:
        address = self.optional_string(node, path)
        if address is not None:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise _Invalid(f"must be an IP address of this machine, got {_got(node)}") from None
        return address

    def redirects(self, node: Node, path: str) -> str:
        policy = self.string(node, path)
        if policy not in REDIRECT_POLICIES:
            raise _Invalid(f"must be one of {', '.join(REDIRECT_POLICIES)}, got {_got(node)}")
        return policy

    def kind(self, node: Node, path: str) -> str:
        kind = self.string(node, path)
        if kind not in KINDS:
            raise _Invalid(f"must be one of {', '.join(KINDS)}, got {_got(node)}")
        return kind

    def interval(self, node: Node, path: str) -> float:
        value = self.duration(node, path)
        if value < MIN_INTERVAL:
            raise _Invalid(f"must be at least {_seconds(MIN_INTERVAL)}, got {_got(node)}")
        return value

    def method(self, node: Node, path: str) -> str:
        method = self.string(node, path).upper()
        if method not in METHODS:
            raise _Invalid(f"must be one of {', '.join(METHODS)}, got {_got(node)}")
        return method

    def headers(self, node: Node, path: str) -> dict[str, tuple[str, str]]:
        """Lower-case name → (name, value), so that defaults merge case-insensitively."""
        result: dict[str, tuple[str, str]] = {}
        failed = False
        for name, (key_node, value_node) in self.items(node, path, None).items():
            header_path = _join(path, name)
            if not _HEADER_NAME.fullmatch(name):
                self.error(key_node, header_path, "is not a valid header name")
                failed = True
                continue
            try:
                value = self.attempt(self.text, value_node, header_path)
            except _Reported:
                failed = True
                continue
            if any(c in value for c in "\r\n\0"):  # header injection
                self.error(value_node, header_path, "must not contain line breaks")
                failed = True
                continue
            result[name.lower()] = (name, value)
        if failed:
            raise _Reported
        return result

    def body(self, node: Node, path: str) -> str | None:
        return None if _is_null(node) else self.text(node, path)

    def max_body(self, node: Node, path: str) -> int:
        raw: Any = None
        if isinstance(node, ScalarNode) and node.tag == _INT:
            raw = self.constructor.construct_object(node)
        elif isinstance(node, ScalarNode) and node.tag == _STR:
            raw = self.substitute(node, path)
        try:
            size = parse_size(raw)
        except ValueError:
            raise _Invalid(f"must be a size like 1MiB, got {_got(node)}") from None
        if size < 1:
            raise _Invalid(f"must be at least 1 byte, got {_got(node)}")
        return size

    def status(self, node: Node, path: str) -> tuple[StatusRange, ...]:
        if isinstance(node, ScalarNode) and not _is_null(node):
            return (self.status_range(node, path),)  # a single code or range
        if not isinstance(node, SequenceNode):
            raise _Invalid(
                f"must be a list of status codes or ranges like 200-299, got {_what(node)}"
            )
        if not node.value:
            raise _Invalid("must list at least one status code or range")
        ranges: list[StatusRange] = []
        failed = False
        for i, item in enumerate(node.value):
            try:
                ranges.append(self.attempt(self.status_range, item, f"{path}[{i}]"))
            except _Reported:
                failed = True
        if failed:
            raise _Reported
        return tuple(ranges)

    def status_range(self, node: Node, path: str) -> StatusRange:
        text = self.text(node, path) if isinstance(node, ScalarNode) else ""
        match = _STATUS.fullmatch(text.strip())
        if match is None:
            raise _Invalid(f"must be a status code or a range like 200-299, got {_got(node)}")
        if match.group(3):  # "2xx"
            hundreds = int(match.group(3)) * 100
            return StatusRange(hundreds, hundreds + 99)
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not (100 <= low <= 599 and 100 <= high <= 599):
            raise _Invalid(f"status codes are 100 to 599, got {_got(node)}")
        if low > high:
            raise _Invalid(f"a range goes from low to high, got {_got(node)}")
        return StatusRange(low, high)

    def regex(self, node: Node, path: str) -> str | None:
        pattern = self.optional_string(node, path)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _Invalid(f"invalid regular expression: {exc}") from None
        return pattern

    def labels(self, node: Node, path: str) -> dict[str, str]:
        result: dict[str, str] = {}
        failed = False
        for name, (key_node, value_node) in self.items(node, path, None).items():
            label_path = _join(path, name)
            if not LABEL_NAME_RE.fullmatch(name):
                self.error(
                    key_node, label_path, "must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                )
                failed = True
                continue
            if name in RESERVED_LABELS or name.startswith("__"):
                self.error(key_node, label_path, "is reserved; choose another label name")
                failed = True
                continue
            try:
                result[name] = self.attempt(self.string, value_node, label_path)
            except _Reported:
                failed = True
        if failed:
            raise _Reported
        return result

    def notifier_refs(self, node: Node, path: str) -> tuple[str, ...]:
        if _is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            raise _Invalid(f"must be a list of notifier names, got {_what(node)}")
        names: list[str] = []
        failed = False
        for i, item in enumerate(node.value):
            item_path = f"{path}[{i}]"
            try:
                name = self.attempt(self.string, item, item_path)
            except _Reported:
                failed = True
                continue
            if name not in self.notifier_names:
                close = difflib.get_close_matches(name, sorted(self.notifier_names), n=1)
                if close:
                    hint = f"did you mean '{close[0]}'?"
                elif self.notifier_names:
                    hint = f"defined: {', '.join(sorted(self.notifier_names))}"
                else:
                    hint = "no notifiers are defined under notifiers:"
                self.error(item, item_path, f"unknown notifier {name!r}; {hint}")
                failed = True
            elif name in names:
                self.error(item, item_path, f"notifier {name!r} is listed twice")
                failed = True
            names.append(name)
        if failed:
            raise _Reported
        return tuple(names)
