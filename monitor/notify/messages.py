"""Rendering: the title and text people read, with per-notifier text templates.

Templates use `string.Template` (`$target`, `${duration}`): substitution only, so a config
file can never run code or reach attributes. Templates are checked when the config is
read, so rendering cannot fail at send time.

Imports: stdlib, monitor.timefmt and monitor.notify.base.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.notify.base import KINDS, Message
from monitor.timefmt import human_duration

VARIABLES = ("target", "location", "cause", "error", "since", "duration", "url", "kind")

TITLES: Mapping[str, str] = {
    "down": "DOWN: $target from $location",
    "up": "UP: $target from $location",
    "reminder": "STILL DOWN: $target from $location",
    "test": "TEST: monitor notification from $location",
}

TEXTS: Mapping[str, str] = {
    "down": "$target is down from $location since $since.\nCause: $cause: $error\n$url",
    "up": "$target is up again from $location after $duration (down since $since).\n$url",
    "reminder": (
        "$target is still down from $location: $duration so far (since $since).\n"
        "Cause: $cause: $error\n$url"
    ),
    "test": "This is a test message from monitor at $location. If you can read it, it works.",
}


@dataclass(frozen=True)
class Rendered:
    title: str
    text: str


def format_duration(seconds: float | None) -> str:
    """A short human duration: "45s", "12m 30s", "3h 5m", "2d 4h"; "unknown" for None."""
    return "unknown" if seconds is None else human_duration(seconds)


def unknown_part(seconds: float | None) -> str:
    """What a duration leaves out: the time the monitor did not watch, if any."""
    if seconds is None or seconds < 1:
        return ""
    return f" (plus {human_duration(seconds)} unknown: the monitor was not watching)"


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(ts: float) -> str:
    """RFC 3339 in UTC, as APIs (Alertmanager, PagerDuty, webhooks) want it."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MAX_ERROR = 1000  # characters of an error message shown; the probe keeps them shorter


def one_line(text: str, limit: int = MAX_ERROR) -> str:
    """`text` as one bounded line: a probed server shapes error messages, and must not add
    lines (a forged "UP: ..." paragraph) or control characters to a notification."""
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def variables(message: Message) -> dict[str, str]:
    return {
        "target": message.target,
        "location": message.location,
        "cause": message.cause or "unknown",
        "error": one_line(message.error) or "no message",
        "since": format_time(message.since),
        "duration": format_duration(message.duration) + unknown_part(message.unknown),
        "url": message.url,
        "kind": message.kind,
    }


class Templates:
    """Text templates by message kind; kinds without one use the default text."""

    def __init__(self, texts: Mapping[str, str] | None = None):
        self._texts = {kind: string.Template(TEXTS[kind]) for kind in KINDS}
        self._titles = {kind: string.Template(TITLES[kind]) for kind in KINDS}
        for kind, text in (texts or {}).items():
            self._texts[kind] = string.Template(text)

    @classmethod
    def parse(cls, raw: Any, where: str) -> Templates:
        """Check templates from config: known kinds, valid syntax, known variables only."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be a mapping of message kind to text")
        for kind, text in raw.items():
            if kind not in KINDS:
                raise ValueError(f"{where}.{kind}: unknown message kind (use {', '.join(KINDS)})")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}.{kind}: must be a non-empty string")
            template = string.Template(text)
            if not template.is_valid():
                raise ValueError(f"{where}.{kind}: invalid placeholder (write $$ for a dollar)")
            for name in template.get_identifiers():
                if name not in VARIABLES:
                    raise ValueError(
                        f"{where}.{kind}: unknown variable ${name} "
                        f"(known: {', '.join('$' + v for v in VARIABLES)})"
                    )
        return cls(raw)

    def render(self, message: Message) -> Rendered:
        values = variables(message)
        kind = message.kind if message.kind in KINDS else "down"
        return Rendered(
            title=self._titles[kind].safe_substitute(values),
            text=self._texts[kind].safe_substitute(values).strip(),
        )


def notify_test_message(location: str, at: float, notifier: str = "") -> Message:
    """The message `monitor notify-test NAME` sends."""
    return Message(
        kind="test",
        key=f"test:{notifier}:{at:.0f}",
        target="monitor-test",
        location=location,
        url="",
        cause=None,
        error="",
        since=at,
        duration=None,
        outage_id=None,
    )
