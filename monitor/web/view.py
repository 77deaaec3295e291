"""What the status page may ask of the daemon, and the recent probes it keeps for it."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from monitor.model import Outage, OutageQuery, OutageTime, ProbeResult
from monitor.store.base import TargetHistory

TimedOutage = tuple[Outage, OutageTime]
RECENT_PROBES = 20  # per target, for the phases on /target/NAME


class Unavailable(Exception):
    """The daemon cannot answer from its history right now (the store cannot be read)."""


class StatusView(Protocol):
    """The daemon as the pages see it (`monitor.app.Monitor`)."""

    location: str

    def now(self) -> float: ...
    def targets_json(self) -> list[dict[str, Any]]: ...
    def target_json(self, name: str) -> dict[str, Any] | None:
        """One target as `targets_json` shows it; None if this monitor does not probe it."""
    def offline_json(self) -> dict[str, Any] | None: ...
    async def outages(self, query: OutageQuery) -> list[TimedOutage]:
        """This monitor's outages `query` asks for, newest first, each with its known and
        unknown time as of now. Raises Unavailable when the history cannot be read."""
    async def history(self, names: Collection[str]) -> Mapping[str, TargetHistory]:
        """The history of the named targets from this location (`Store.history`).
        Raises Unavailable when it cannot be read."""
    def recent_results(self, name: str) -> Sequence[ProbeResult]:
        """The latest probes of a target, oldest first (at most RECENT_PROBES)."""


class RecentResults:
    """The last RECENT_PROBES results per target, in memory (bounded: a deque each)."""

    def __init__(self, keep: int = RECENT_PROBES) -> None:
        self.keep = keep
        self._results: dict[str, deque[ProbeResult]] = {}

    def add(self, result: ProbeResult) -> None:
        found = self._results.get(result.target)
        if found is None:
            found = self._results[result.target] = deque(maxlen=self.keep)
        found.append(result)

    def of(self, name: str) -> list[ProbeResult]:
        return list(self._results.get(name, ()))

    def forget(self, names: Collection[str]) -> None:
        for name in names:
            self._results.pop(name, None)
