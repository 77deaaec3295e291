"""Maintenance windows: times when outages are still recorded but nothing is sent.

A window is one-off (`start`, `end`) or recurring (`cron` + `duration`, in `timezone`,
default UTC), for some `targets` or, when they are omitted, for all:

    maintenance:
      - {targets: [rt, duma], start: 2026-03-01T02:00:00Z, end: 2026-03-01T04:00:00Z}
      - {cron: "0 3 * * SUN", duration: 2h, timezone: Europe/Moscow}

A one-off time without an offset is read in `timezone`. A recurring window covers
[fire, fire + duration) for each cron fire time, computed in its time zone, so "03:00
Moscow" stays 03:00 local time whatever the offset.

Imports: stdlib, croniter, monitor.timefmt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from monitor.timefmt import parse_duration

KEYS = {"name", "targets", "start", "end", "cron", "duration", "timezone"}


@dataclass(frozen=True)
class Window:
    targets: frozenset[str] | None  # None: every target
    start: float | None = None  # one-off: POSIX times, end exclusive
    end: float | None = None
    cron: str | None = None  # recurring: fires in `timezone`, lasts `duration` seconds
    duration: float | None = None
    timezone: str = "UTC"
    name: str = ""

    def applies_to(self, target: str) -> bool:
        return self.targets is None or target in self.targets

    def covers(self, at: float) -> bool:
        if self.start is not None and self.end is not None:
            return self.start <= at < self.end
        assert self.cron is not None and self.duration is not None
        local = datetime.fromtimestamp(at, ZoneInfo(self.timezone))
        # get_prev is strictly before its start: nudge so a fire exactly at `at` counts.
        try:
            fire = croniter(self.cron, local + timedelta(microseconds=1)).get_prev(datetime)
        except CroniterError:  # no fire time within croniter's search: not in the window
            return False
        return fire.timestamp() <= at < fire.timestamp() + self.duration


def in_maintenance(windows: Iterable[Window], target: str, at: float) -> bool:
    return any(w.applies_to(target) and w.covers(at) for w in windows)


def parse_window(item: Any, where: str) -> Window:
    """One window of the `maintenance:` list; a ValueError names its path (`where.key`)."""
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: must be a mapping")
    unknown = sorted(str(k) for k in item if k not in KEYS)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown setting")

    name = item.get("name") or ""
    if not isinstance(name, str):
        raise ValueError(f"{where}.name: must be a string")
    targets = _targets(item.get("targets"), f"{where}.targets")
    zone_name = item.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(zone_name) if isinstance(zone_name, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None:
        raise ValueError(f"{where}.timezone: unknown time zone {zone_name!r}")

    one_off = "start" in item or "end" in item
    recurring = "cron" in item or "duration" in item
    if one_off and recurring:
        raise ValueError(f"{where}: use either start and end, or cron and duration")
    if one_off:
        start = _time(item.get("start"), zone, f"{where}.start")
        end = _time(item.get("end"), zone, f"{where}.end")
        if end <= start:
            raise ValueError(f"{where}.end: must be after start")
        return Window(targets, start=start, end=end, timezone=zone_name, name=name)
    if not recurring:
        raise ValueError(f"{where}: needs start and end, or cron and duration")

    cron = item.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError(f"{where}.cron: required")
    if not croniter.is_valid(cron):
        raise ValueError(f"{where}.cron: not a valid cron expression: {cron!r}")
    try:  # valid syntax can still name a day that never comes (30 February)
        croniter(cron, datetime.now(zone)).get_next(datetime)
    except CroniterError:
        raise ValueError(f"{where}.cron: never fires: {cron!r}") from None
    if item.get("duration") is None:
        raise ValueError(f"{where}.duration: required")
    try:
        duration = parse_duration(item["duration"])
    except ValueError as e:
        raise ValueError(f"{where}.duration: {e}") from None
    if duration <= 0:
        raise ValueError(f"{where}.duration: must be more than zero")
    return Window(targets, cron=cron, duration=duration, timezone=zone_name, name=name)


def _targets(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{where}: must be a non-empty list of target names")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}[{i}]: must be a target name")
    return frozenset(value)


def _time(value: Any, zone: ZoneInfo, where: str) -> float:
    """A POSIX time from an ISO 8601 string or a datetime (YAML parses timestamps itself)."""
    if value is None:
        raise ValueError(f"{where}: required")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{where}: not an ISO 8601 time such as 2026-03-01T02:00:00Z: {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise ValueError(f"{where}: must be a time such as 2026-03-01T02:00:00Z")
    moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    return moment.timestamp()
