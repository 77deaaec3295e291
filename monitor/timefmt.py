"""Times and durations as people and APIs read them. Imports the standard library only."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object) -> float:
    """Seconds in "500ms", "30s", "5m", "1h", "14d", "2w" or "1h30m"; bare numbers are seconds.

    The one duration syntax of the project: config, notifier settings, maintenance windows
    and the command line all read durations here.
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a duration like 10s")  # no value: it may come from a secret
    return seconds


def rfc3339(ts: float | None) -> str | None:
    """`2022-02-26T09:14:02Z` (whole seconds, UTC), or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_duration(seconds: float) -> str:
    """A short human duration: "45s", "12m 30s", "3h 5m", "2d 4h"."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    first = next((i for i, (n, _) in enumerate(units) if n), len(units) - 1)
    # The largest unit and the next one say enough: seconds of a two-day outage are noise.
    shown = [f"{n}{u}" for n, u in units[first : first + 2] if n]
    return " ".join(shown) or "0s"
