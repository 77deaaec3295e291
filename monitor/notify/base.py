"""What every notifier shares: the message, the error, the interface, and config reading.

A notifier turns a `Message` into one delivery on one channel and raises `NotifyError`
marked permanent (retrying cannot help: fix the config) or temporary (try again later).
Errors, logs and reprs never contain secrets: channels register theirs and `redact` removes
them from any text that leaves the notifier.

Imports: stdlib, aiohttp and monitor.timefmt (the one duration syntax).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from monitor.timefmt import parse_duration

KINDS = ("down", "up", "reminder", "test")


class NotifyError(Exception):
    """A failed delivery. The message is safe to log: it never contains a secret."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after  # seconds the receiver asked us to wait, if it did


@dataclass(frozen=True)
class Message:
    """One notification, as stored in the outbox and handed to every channel."""

    kind: str  # "down" | "up" | "reminder" | "test"
    key: str  # idempotency key: f"{outage_id}:{kind}", reminders f"{outage_id}:reminder:{n}"
    target: str
    location: str
    url: str
    cause: str | None  # failure class of the first failure (model.Failure value)
    error: str  # first error message of the outage
    since: float  # POSIX time the outage started (for "test": when the test was made)
    duration: float | None  # "up": length of the outage; "reminder": down for so far
    outage_id: int | None
    # Of the outage so far, seconds the monitor did not watch (not running, or offline):
    # `duration` counts only the known time, as the history does.
    unknown: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping, for storing the message in the outbox."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        values: dict[str, Any] = {name: data.get(name) for name in cls.__dataclass_fields__}
        return cls(**values)


class Notifier(Protocol):
    """One configured channel. `send` raises `NotifyError` and nothing else on failure."""

    name: str
    secrets: tuple[str, ...]  # values that must never appear in logs or errors

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None: ...


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`, longest first so parts never leak."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of a URL that may carry credentials: all of it, a long path, the query, a password.

    Webhook URLs are bearer credentials (the Slack or Discord token lives in the path), so a
    message quoting only that part must not leak it either. Short paths such as `/hook` are
    not tokens and stay readable.
    """
    parts = urlsplit(url)
    found = [url, parts.query, parts.password or ""]
    for path in (parts.path, parts.path.strip("/")):
        if len(path) >= 16:
            found.append(path)
    return tuple(s for s in found if s)


_MISSING = object()


class Settings:
    """Reads one notifier's settings; every problem names its config path and hides values.

    Call `finish()` after the last read: keys nobody asked for are errors (typos are loud).
    """

    def __init__(self, where: str, raw: Mapping[str, Any]):
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        self.where = where
        self._raw = dict(raw)
        self._read: set[str] = {"type"}  # the registry has already used it

    def error(self, key: str, problem: str) -> ValueError:
        return ValueError(f"{self.where}.{key}: {problem}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        self._read.add(key)
        value = self._raw.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, "required")
            return default
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error(key, "must be a string")
        value = str(value)
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def url(self, key: str, default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if value is default:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, "must be an http:// or https:// URL")  # value may be secret
        return value

    def text_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default:
            return value
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items:
            raise self.error(key, "must be a string or a non-empty list of strings")
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"{self.where}.{key}[{i}]: must be a non-empty string")
        return tuple(items)

    def text_map(self, key: str) -> dict[str, str]:
        value = self.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a mapping of strings")
        for name, item in value.items():
            if not isinstance(name, str) or not isinstance(item, str | int | float):
                raise ValueError(f"{self.where}.{key}.{name}: must be a string")
        return {name: str(item) for name, item in value.items()}

    def duration(self, key: str, default: float, *, positive: bool = True) -> float:
        value = self.get(key, default)
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            raise self.error(key, str(e)) from None
        if positive and seconds <= 0:
            raise self.error(key, "must be more than zero")
        return seconds

    def choice(self, key: str, choices: Iterable[str], default: str) -> str:
        options = tuple(choices)
        value = self.get(key, default)
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}")
        return str(value)

    def finish(self) -> None:
        unknown = sorted(str(k) for k in self._raw if k not in self._read)
        if unknown:
            raise self.error(unknown[0], "unknown setting")
