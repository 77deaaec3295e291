"""The scheduler: one APScheduler job per target, first runs spread over the interval.

APScheduler 3.x `AsyncIOScheduler` runs every job as a coroutine on the event loop (no
threads per target). Jobs look their target up by name at run time, so a reload that
changes a target's expectations takes effect at its next run without moving its schedule.

Imports apscheduler and monitor.model only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.model import Target

log = logging.getLogger("monitor.scheduler")

RunTarget = Callable[[Target], Awaitable[None]]


def stable_fraction(name: str) -> float:
    """A number in [0, 1) fixed by the name: where in its interval a new target runs."""
    return zlib.crc32(name.encode()) / 2**32


class Scheduler:
    """Runs `run(target)` every `target.interval` seconds for each target."""

    def __init__(
        self,
        run: RunTarget,
        *,
        on_lateness: Callable[[float], None] = lambda _: None,
        on_skipped: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._run = run
        self._on_lateness = on_lateness
        self._on_skipped = on_skipped
        self._clock = clock
        self._targets: dict[str, Target] = {}
        self._due: dict[str, float] = {}  # job id → scheduled time of the run just submitted
        self._stopping = False
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        self._scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    @property
    def targets(self) -> dict[str, Target]:
        return dict(self._targets)

    def start(self, targets: Iterable[Target]) -> None:
        """Schedule the first set of targets, spread evenly over each interval."""
        targets = list(targets)
        self._scheduler.start()
        now = self._clock()
        by_interval: dict[float, list[Target]] = {}
        for target in targets:
            by_interval.setdefault(target.interval, []).append(target)
        for interval, group in by_interval.items():
            for i, target in enumerate(sorted(group, key=lambda t: t.name)):
                self._add(target, now + interval * i / len(group))

    def update(self, targets: Iterable[Target]) -> tuple[list[str], list[str], list[str]]:
        """Apply a new target list; returns the names added, removed and changed.

        Unchanged targets keep their schedule; a changed interval restarts that target's
        schedule at its stable place in the new interval.
        """
        new = {t.name: t for t in targets}
        added = [n for n in new if n not in self._targets]
        removed = [n for n in self._targets if n not in new]
        changed = [n for n in new if n in self._targets and new[n] != self._targets[n]]
        now = self._clock()
        for name in removed:
            self._scheduler.remove_job(name)
            del self._targets[name]
            self._due.pop(name, None)
        for name in changed:
            old, target = self._targets[name], new[name]
            self._targets[name] = target
            if old.interval != target.interval:
                self._scheduler.remove_job(name)
                self._add(target, now + target.interval * stable_fraction(name))
        for name in added:
            self._add(new[name], now + new[name].interval * stable_fraction(name))
        return added, removed, changed

    def next_run(self, name: str) -> float | None:
        """When the target runs next (POSIX time), or None if it is not scheduled."""
        job = self._scheduler.get_job(name)
        return job.next_run_time.timestamp() if job and job.next_run_time else None

    async def shutdown(self) -> None:
        """Stop scheduling and cancel probes in flight (the executor cancels its tasks)."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # let cancelled probe tasks unwind

    def _add(self, target: Target, first: float) -> None:
        self._targets[target.name] = target
        self._scheduler.add_job(
            self._job, IntervalTrigger(seconds=target.interval, timezone=UTC),
            args=[target.name], id=target.name, name=target.name,
            next_run_time=datetime.fromtimestamp(first, UTC),
            max_instances=1, coalesce=True,
            # A late run is still worth running; lateness is measured, not hidden.
            misfire_grace_time=max(1, int(target.interval)),
        )

    async def _job(self, name: str) -> None:
        due = self._due.pop(name, None)
        if due is not None:
            self._on_lateness(max(0.0, self._clock() - due))
        target = self._targets.get(name)
        if target is None:
            return
        try:
            await self._run(target)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Cancelled by shutdown: an expected end, not an error for APScheduler to log.

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        times = event.scheduled_run_times
        if times:
            self._due[event.job_id] = times[-1].timestamp()
            if len(times) > 1:  # runs folded into one by coalescing
                for _ in times[1:]:
                    self._on_skipped("coalesced")

    def _on_missed(self, event: JobEvent) -> None:
        self._on_skipped("missed" if event.code == EVENT_JOB_MISSED else "still_running")

