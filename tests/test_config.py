"""Tests for monitor.config: exact error messages, defaults, ${VAR}, the bundled configs."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from monitor.config import (
    NAME_RE,
    Config,
    ConfigError,
    MetricsConfig,
    ServerConfig,
    StoreConfig,
    format_errors,
    load_config,
    parse_config,
    parse_size,
)
from monitor.model import StatusRange, Target
from monitor.notify.maintenance import Window
from monitor.notify.registry import TYPES as NOTIFIER_TYPES
from monitor.timefmt import parse_duration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "configs"
INVALID = sorted(FIXTURES.glob("invalid-*.yaml"))


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", environ or {})
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


# --- invalid configs: each fixture is paired with its exact messages ---------------------


def test_every_invalid_fixture_has_its_expected_messages() -> None:
    assert len(INVALID) >= 15
    for config in INVALID:
        assert config.with_suffix(".errors").is_file(), config.name


@pytest.mark.parametrize("config", INVALID, ids=lambda path: path.stem)
def test_invalid_config(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Run from the fixture folder so that FILE in the messages is just the name, as given.
    monkeypatch.chdir(FIXTURES)
    expected = config.with_suffix(".errors").read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as caught:
        load_config(config.name, environ={})
    assert caught.value.errors == expected
    assert all(line.startswith(f"{config.name}:") for line in expected)


def test_all_errors_of_a_file_are_reported_in_file_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(FIXTURES)
    with pytest.raises(ConfigError) as caught:
        load_config("invalid-values.yaml", environ={})
    lines = [int(error.split(":")[1]) for error in caught.value.errors]
    assert len(lines) > 20
    assert lines == sorted(lines)


@pytest.mark.parametrize(("retention", "minutes"), [
    ("", 0.0),  # per-minute rollups are off by default
    ("retention: {minutes: off}", 0.0),
    ("retention: {minutes: 0}", 0.0),
    ("retention: {minutes: 14d}", 14 * 86400.0),
])
def test_per_minute_rollups_are_opt_in(retention: str, minutes: float) -> None:
    text = f"store: {{path: h.db, {retention}}}\ntargets: [{{name: a, url: 'http://127.0.0.1/'}}]\n"
    assert parse_config(text, "m.yaml", {}).store.minute_retention == minutes


def test_probe_workers_are_a_count_from_zero() -> None:
    text = "limits: {{probe_workers: {}}}\ntargets: [{{name: a, url: 'http://127.0.0.1/'}}]\n"
    assert parse_config(text.format(2), "m.yaml", {}).limits.probe_workers == 2
    assert parse_config(text.format(0), "m.yaml", {}).limits.probe_workers == 0
    with pytest.raises(ConfigError) as caught:
        parse_config(text.format(-1), "m.yaml", {})
    assert caught.value.errors[0].startswith("m.yaml:1: limits.probe_workers:")


def test_format_errors_adds_a_count() -> None:
    exc = ConfigError(["a.yaml:1: x: bad", "a.yaml:2: y: bad"])
    assert format_errors(exc) == "a.yaml:1: x: bad\na.yaml:2: y: bad\n2 errors in the configuration"
    assert format_errors(ConfigError(["a.yaml:1: x: bad"])).endswith(
        "\n1 error in the configuration"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"{path}: cannot read the file: No such file or directory"]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"targets:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == [f"{path}:2: the file is not valid UTF-8"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "targets: []\nx: \x07\n",
            "c.yaml:2: invalid YAML: unacceptable character #x0007: "
            "special characters are not allowed",
        ),
        (
            "targets:\n\t- a\n",
            "c.yaml:2: invalid YAML: found character '\\t' that cannot start any token (column 1)",
        ),
        (
            "targets: []\n---\na: 1\n",
            "c.yaml:2: invalid YAML: expected a single document in the "
            "stream, but found another document (column 1)",
        ),
        (
            "targets: [{name: a, url: 'http://x/'}]\nmaintenance: &a [*a]\n",
            "c.yaml:2: maintenance[0]: recursive alias",
        ),
        (
            "defaults: &b {interval: 30s}\ntargets:\n  - <<: *b\n    name: a\n    url: http://x/\n",
            "c.yaml:3: targets[0].<<: merge keys are not supported",
        ),
        (
            "targets: [{name: !foo a, url: 'http://x/'}]\n",
            "c.yaml:1: targets[0].name: unsupported YAML tag !foo",
        ),
        (
            "? [a]\n: 1\ntargets: [{name: a, url: 'http://x/'}]\n",
            "c.yaml:1: keys must be strings, got a list",
        ),
        ("location: x\n", "c.yaml:1: targets: at least one target is required"),
        ("targets: {a: 1}\n", "c.yaml:1: targets: must be a list of targets, got a mapping"),
        (
            "server: {token: 'ab${X'}\ntargets: [{name: a, url: 'http://x/'}]\n",
            "c.yaml:1: server.token: unterminated '${'; write '$${' for a literal '${'",
        ),
        (
            "targets: [{name: a, url: 'http://x:99999/'}]\n",
            "c.yaml:1: targets[0].url: must be an http:// or https:// URL with a host, "
            "got 'http://x:99999/'",
        ),
        (
            "notifiers: [ops]\ntargets: [{name: a, url: 'http://x/'}]\n",
            "c.yaml:1: notifiers: must be a mapping of notifier names to settings, got a list",
        ),
        (
            "targets: [{name: a, url: 'http://x/', notifiers: [ops]}]\n",
            "c.yaml:1: targets[0].notifiers[0]: unknown notifier 'ops'; no notifiers are defined "
            "under notifiers:",
        ),
    ],
)
def test_more_invalid_snippets(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_secret_values_never_appear_in_messages() -> None:
    # A bad value that came from the environment is quoted as written in the file.
    text = "targets: [{name: a, url: '${URL}', interval: '${EVERY}'}]\n"
    errors = errors_of(text, {"URL": "ftp://user:hunter2@x/", "EVERY": "hunter2"})
    assert errors == [
        "c.yaml:1: targets[0].url: must be an http://, https://, tcp://, tls://, dns:// or "
        "icmp:// URL, got '${URL}'",
        "c.yaml:1: targets[0].interval: must be a duration like 10s, got '${EVERY}'",
    ]


# --- valid configs ------------------------------------------------------------------------

VALID = """\
location: ${WHERE}
server: {listen: 0.0.0.0, port: "${PORT}", token: "${TOKEN}"}
store:
  path: /var/lib/monitor/db.sqlite
  retention: {minutes: 2d, hours: 30d, outages: 365d}
metrics: {duration_buckets: [0.1, 1, 10], per_target_histogram: false}
defaults:
  interval: 2m
  timeout: 20s
  headers: {User-Agent: monitor, Accept: text/html}
  labels: {country: no, tier: 1}
  expect: {status: [200-299], body_contains: Welcome}
  notifiers: [ops]
  down_after: 5
targets:
  - name: plain
    url: http://127.0.0.1:8080/
  - name: custom
    url: https://user:pw@[::1]/path?q=1
    interval: 30s
    method: post
    headers: {accept: application/json, X-Price: "$${5}"}
    body: '{"a": 1}'
    expect:
      status: [2xx, 404]
      body_regex: ok|fine
    follow_redirects: false
    max_redirects: 0
    verify_tls: false
    max_body: 64KiB
    up_after: 2
    labels: {tier: "2", owner: "${OWNER:-nobody}"}
    notifiers: []
    source_address: 127.0.0.2
notifiers:
  ops: {type: slack, url: "${HOOK}", repeat: 4h, timeout: 5s}
  log: {type: webhook, url: http://127.0.0.1:9/}
maintenance:
  - {targets: [plain], cron: "0 2 * * *", duration: 1h, name: "${WHERE}"}
"""
ENV = {"WHERE": "lab-1", "PORT": "8080", "TOKEN": "s3cret", "HOOK": "http://127.0.0.1/hook"}


def test_valid_config_round_trip() -> None:
    config = parse_config(VALID, "valid.yaml", ENV)
    assert config.source == "valid.yaml"
    assert config.location == "lab-1"
    assert config.server == ServerConfig(listen="0.0.0.0", port=8080, token="s3cret")
    assert config.store == StoreConfig(
        path="/var/lib/monitor/db.sqlite",
        minute_retention=2 * 86400,
        hour_retention=30 * 86400,
        outage_retention=365 * 86400,
    )
    assert config.metrics == MetricsConfig(
        duration_buckets=(0.1, 1, 10), per_target_histogram=False
    )

    plain, custom = config.targets
    # Defaults fill in whatever a target does not set; the built-in defaults the rest.
    assert plain == Target(
        name="plain",
        url="http://127.0.0.1:8080/",
        interval=120,
        timeout=20,
        headers=(("User-Agent", "monitor"), ("Accept", "text/html")),
        expect_status=(StatusRange(200, 299),),
        body_contains="Welcome",
        down_after=5,
        labels=(("country", "no"), ("tier", "1")),  # `no` stays text: no YAML 1.1 surprise
        notifiers=("ops",),
    )
    # A target's own option wins; headers and labels merge key by key (header names ignore
    # case); the expect keys merge one by one too.
    assert custom == Target(
        name="custom",
        url="https://user:pw@[::1]/path?q=1",
        interval=30,
        timeout=20,
        method="POST",
        headers=(("User-Agent", "monitor"), ("accept", "application/json"), ("X-Price", "${5}")),
        body='{"a": 1}',
        expect_status=(StatusRange(200, 299), StatusRange(404, 404)),
        body_contains="Welcome",
        body_regex="ok|fine",
        follow_redirects=False,
        max_redirects=0,
        verify_tls=False,
        max_body_bytes=64 * 1024,
        down_after=5,
        up_after=2,
        labels=(("country", "no"), ("owner", "nobody"), ("tier", "2")),
        notifiers=(),
        source_address="127.0.0.2",
    )

    ops, log = config.notifiers
    assert (ops.name, ops.type, log.name, log.type) == ("ops", "slack", "log", "webhook")
    assert dict(ops.settings) == {
        "url": "http://127.0.0.1/hook",
        "repeat": "4h",
        "timeout": "5s",
    }
    lines = VALID.splitlines()
    assert ops.line == 1 + next(i for i, line in enumerate(lines) if line.startswith("  ops:"))
    assert config.maintenance == (
        Window(frozenset({"plain"}), cron="0 2 * * *", duration=3600, name="lab-1"),
    )


def test_minimal_config_gets_every_default() -> None:
    config = parse_config("targets:\n  - {name: a, url: 'http://127.0.0.1/'}\n", "m.yaml", {})
    assert config == Config(
        source="m.yaml",
        location=config.location,
        server=ServerConfig(),
        store=StoreConfig(),
        metrics=MetricsConfig(),
        targets=(Target(name="a", url="http://127.0.0.1/"),),
    )
    assert (config.targets[0].interval, config.targets[0].timeout) == (60, 10)
    assert NAME_RE.fullmatch(config.location)
    hostname = socket.gethostname()
    if NAME_RE.fullmatch(hostname):
        assert config.location == hostname


def test_empty_sections_are_allowed() -> None:
    text = (
        "server:\nstore:\nmetrics:\ndefaults:\nnotifiers:\nmaintenance:\n"
        "targets: [{name: a, url: 'http://x/'}]\n"
    )
    config = parse_config(text, "e.yaml", {})
    assert (config.server, config.notifiers, config.maintenance) == (ServerConfig(), (), ())


def test_timeout_equal_to_interval_is_fine() -> None:
    config = parse_config(
        "targets: [{name: a, url: 'http://x/', interval: 5s, timeout: 5s}]\n", "t.yaml", {}
    )
    assert (config.targets[0].interval, config.targets[0].timeout) == (5, 5)


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_TEST_TOKEN", "from-os")
    text = "server: {token: '${MONITOR_TEST_TOKEN}'}\ntargets: [{name: a, url: 'http://x/'}]\n"
    assert parse_config(text, "o.yaml").server.token == "from-os"


# --- bundled configs ----------------------------------------------------------------------


def test_bundled_default_config_runs_without_environment() -> None:
    config = load_config(ROOT / "config" / "monitor.yaml", environ={})
    assert [t.name for t in config.targets] == [
        "rt.com",
        "duma.gov.ru",
        "mil.ru",
        "kremlin.ru",
        "gazprom.ru",
    ]
    assert [t.url for t in config.targets] == [
        "https://www.rt.com/",
        "http://duma.gov.ru/",
        "https://mil.ru/",
        "http://kremlin.ru/",
        "https://www.gazprom.ru/",
    ]
    for target in config.targets:
        assert 30 <= target.interval <= 60
        assert 10 <= target.timeout <= 15
        assert target.down_after == 3
    assert config.server == ServerConfig(listen="127.0.0.1", port=9321, token=None)
    assert config.store.path == "data/monitor.db"
    assert config.notifiers == ()


EXAMPLE = ROOT / "config" / "example.yaml"
EXAMPLE_ENV = {"SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/T0/B0/x", "MONITOR_TOKEN": "t"}


def test_bundled_example_loads_with_its_variables_set() -> None:
    config = load_config(EXAMPLE, environ=EXAMPLE_ENV)
    assert config.server.token == "t"
    assert config.notifiers[0].settings["url"] == EXAMPLE_ENV["SLACK_WEBHOOK_URL"]
    assert {n.type for n in config.notifiers} <= set(NOTIFIER_TYPES)


def test_bundled_example_names_its_unset_variables() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, environ={})
    assert [error.split(": ", 1)[1] for error in caught.value.errors] == [
        "server.token: environment variable MONITOR_TOKEN is not set",
        "notifiers.ops.url: environment variable SLACK_WEBHOOK_URL is not set",
    ]


def test_bundled_example_shows_every_option() -> None:
    from monitor import config as module

    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert list(raw) == list(module._TOP_KEYS)
    assert set(raw["server"]) == set(module._SERVER_KEYS)
    assert set(raw["store"]) == set(module._STORE_KEYS)
    assert set(raw["store"]["retention"]) == set(module._RETENTION_KEYS)
    assert set(raw["metrics"]) == set(module._METRICS_KEYS)
    # Options of every kind: each appears on one of the example's targets (one per kind).
    assert set().union(*raw["targets"]) == set(module._TARGET_KEYS)
    expects = [t["expect"] for t in raw["targets"] if "expect" in t]
    assert set().union(*expects) == set(module._EXPECT_KEYS)


# --- durations and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("14d", 14 * 86400),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (" 10s ", 10),
        ("45", 45),
        ("0.25", 0.25),
        (7, 7),
        (2.5, 2.5),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["ten", "", "-5s", "5 s", "1y", "s", "1e3", "inf", -1, True])
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match=r"^must be a duration like 10s$"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1MiB", 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("1MB", 1_000_000),
        ("1kB", 1000),
        ("2GiB", 2 * 1024**3),
        ("1000", 1000),
        ("100B", 100),
        ("1.5KiB", 1536),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "1 XB", "-1", "1mib", -5, True])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"^must be a size like 1MiB, got "):
        parse_size(text)


def test_errors_of_every_section_are_listed_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets, notifier settings and maintenance windows: one pass, every error, each line."""
    monkeypatch.chdir(FIXTURES)
    with pytest.raises(ConfigError) as caught:
        load_config("invalid-every-section.yaml", environ={})
    sections = {re.split(r"[.\[]", error.split(": ")[1])[0] for error in caught.value.errors}
    assert sections == {"targets", "notifiers", "maintenance"}
    lines = [int(error.split(":")[1]) for error in caught.value.errors]
    assert lines == sorted(lines) and len(set(lines)) == len(lines) == 10
