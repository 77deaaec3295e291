"""Times and durations as people and APIs read them. Imports the standard library only."""

from __future__ import annotations

from datetime import UTC, datetime


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
