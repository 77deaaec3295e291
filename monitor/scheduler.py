"""The scheduler: every target runs once per interval, first runs spread over the interval.

APScheduler 3.x `AsyncIOScheduler` keeps the clock, but not with one job per target: its
memory job store is a sorted list (every run re-inserts its job: O(n)) and every job run
costs ~0.3 ms of Python in APScheduler alone, too much at 100,000 targets (1,667 runs/s).
Instead each interval is cut into slots of about `SLOT_SECONDS`, one APScheduler job per
slot; when a slot job fires, it starts each of its targets at that target's own offset in
the slot with `loop.call_later`. A target's place in its interval never moves while it keeps
its interval, so the schedule stays evenly spread; every run is a task of its own.

Per target, as before: a run whose previous one is still going is skipped ("still_running"),
a slot job that fires late starts its overdue targets at once and reports their lateness,
and coalesced or missed slot runs count once per target in the slot.

At most `max_in_flight` runs go at once (descriptors are finite). A run due while every
slot is taken waits, first come first served; one that cannot start within half its
interval of its due time is skipped ("overloaded"): its target is neither blamed nor
timed out, since a probe's own deadline starts when the probe does. Each overload episode
logs one warning when it begins and one line when the queue has drained.

A watch task notices when the event loop itself stalls (CPU starvation, a paused process):
`stalled(since, until)` says how long it stood still in a window, so that the app can
count a timeout that the stall caused as the monitor's fault, not the site's. Runs look their target
up by name when they start, so a reload that changes a target takes effect at its next run.

Imports apscheduler, monitor.model and monitor.tasks only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from monitor.model import Target
from monitor.tasks import cancel, guarded_loop

log = logging.getLogger("monitor.scheduler")

RunTarget = Callable[[Target], Awaitable[None]]
WATCH_STEP = 0.1  # seconds between two looks at the event loop's timeliness
STALL = 0.25  # a look this much later than asked is a stall
STALLS_KEPT = 600.0  # seconds of stall history kept (longer than any probe timeout)
EPISODE_QUIET = 60.0  # seconds without a skipped run that end an overload episode
SLOT_SECONDS = 1.0  # length of one slot job's share of an interval (shorter intervals: one)


def stable_fraction(name: str) -> float:
    """A number in [0, 1) fixed by the name: where in its interval a new target runs."""
    return zlib.crc32(name.encode()) / 2**32


class _Interval:
    """The slots of one interval length: which targets each holds, at what offset."""

    def __init__(self, interval: float, anchor: float) -> None:
        self.interval = interval
        self.anchor = anchor  # POSIX time at which slot 0 starts (and every interval after)
        self.count = max(1, round(interval / SLOT_SECONDS))
        self.length = interval / self.count
        self.members: list[dict[str, float]] = [{} for _ in range(self.count)]  # name → offset

    def slot_of(self, offset: float) -> int:
        return min(self.count - 1, int(offset / self.length))

    def job_id(self, slot: int) -> str:
        return f"slot:{self.interval:g}:{slot}"


class Scheduler:
    """Runs `run(target)` every `target.interval` seconds for each target."""

    def __init__(
        self,
        run: RunTarget,
        *,
        on_lateness: Callable[[float], None] = lambda _: None,
        on_skipped: Callable[[str], None] = lambda _: None,
        on_loop_lag: Callable[[float], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
        max_in_flight: int | None = None,
    ) -> None:
        self._run = run
        self._on_loop_lag = on_loop_lag  # every watch step: how much later than asked
        self.max_in_flight = max_in_flight  # None: no cap
        self._on_lateness = on_lateness
        self._on_skipped = on_skipped
        self._clock = clock
        self._targets: dict[str, Target] = {}
        self._intervals: dict[float, _Interval] = {}
        self._place: dict[str, tuple[_Interval, int]] = {}  # name → its interval and slot
        self._due: dict[str, float] = {}  # slot job id → scheduled time of the run submitted
        self._pending: dict[str, tuple[asyncio.TimerHandle, float]] = {}  # name → start, due
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: deque[tuple[str, float]] = deque()  # name, due: runs waiting for a slot
        self._queued: set[str] = set()
        # The overload episode: began, last skip (monotonic), runs skipped.
        self._episode: tuple[float, float, int] | None = None
        self._stalls: deque[tuple[float, float]] = deque()  # start (POSIX time), length
        self._watch: asyncio.Task[None] | None = None
        self._asked = time.monotonic()  # when the watch last went to sleep
        self._stall_logged = float("-inf")
        self._stopping = False
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        self._scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    @property
    def targets(self) -> dict[str, Target]:
        return dict(self._targets)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def start(self, targets: Iterable[Target]) -> None:
        """Schedule the first set of targets, spread evenly over each interval."""
        targets = list(targets)
        self._scheduler.start()
        self._asked = time.monotonic()
        self._watch = asyncio.get_running_loop().create_task(guarded_loop(
            "stall watch", self._watch_step, WATCH_STEP, first=WATCH_STEP, logger=log),
            name="monitor-stall-watch")
        now = self._clock()
        by_interval: dict[float, list[Target]] = {}
        for target in targets:
            by_interval.setdefault(target.interval, []).append(target)
        for interval, group in by_interval.items():
            for i, target in enumerate(sorted(group, key=lambda t: t.name)):
                self._add(target, now + interval * i / len(group), now)

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
            self._remove(name)
        for name in changed:
            old, target = self._targets[name], new[name]
            self._targets[name] = target
            if old.interval != target.interval:
                self._remove(name)
                self._add(target, now + target.interval * stable_fraction(name), now)
        for name in added:
            self._add(new[name], now + new[name].interval * stable_fraction(name), now)
        for interval in [i for i, iv in self._intervals.items() if not any(iv.members)]:
            self._drop_interval(interval)
        return added, removed, changed

    def next_run(self, name: str) -> float | None:
        """When the target runs next (POSIX time), or None if it is not scheduled."""
        if name in self._pending:
            return self._pending[name][1]
        place = self._place.get(name)
        if place is None:
            return None
        iv, slot = place
        job = self._scheduler.get_job(iv.job_id(slot))
        if job is None or job.next_run_time is None:
            return None
        return float(job.next_run_time.timestamp()) + iv.members[slot][name] - slot * iv.length

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop scheduling and cancel probes in flight. Safe in any state: never started,
        or shut down twice."""
        self._stopping = True
        watch, self._watch = self._watch, None
        await cancel(watch)
        if self._scheduler.running:
            # A slot job submitted but not started would be cancelled before it runs, which
            # APScheduler logs as an error: let it start (and return at once) first.
            self._scheduler.pause()
            await asyncio.sleep(0)
            self._scheduler.shutdown(wait=False)
        for handle, _ in self._pending.values():
            handle.cancel()
        self._pending.clear()
        self._waiting.clear()
        self._queued.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await asyncio.sleep(0)  # let the slot jobs APScheduler cancelled unwind

    def stalled(self, since: float, until: float) -> float:
        """Seconds the event loop stood still within [since, until] (POSIX times)."""
        stalls = list(self._stalls)
        # A stall just ended may not be recorded yet: other callbacks can run before the watch.
        pending = time.monotonic() - self._asked - WATCH_STEP
        if self._watch is not None and pending >= STALL:
            stalls.append((self._clock() - pending, pending))
        return sum(max(0.0, min(until, start + length) - max(since, start))
                   for start, length in stalls)

    async def _watch_step(self) -> None:
        """One look at the event loop's timeliness (every WATCH_STEP seconds)."""
        late = time.monotonic() - self._asked - WATCH_STEP
        now = self._clock()
        self._on_loop_lag(max(0.0, late))
        if late >= STALL:
            self._stalls.append((now - late, late))
            if now - self._stall_logged >= EPISODE_QUIET:
                self._stall_logged = now
                log.warning("event loop stalled for %.1fs (CPU starvation or a paused "
                            "process): timeouts during it count as unknown", late)
        while self._stalls and self._stalls[0][0] < now - STALLS_KEPT:
            self._stalls.popleft()
        self._asked = time.monotonic()

    # --- schedule bookkeeping -----------------------------------------------------------

    def _add(self, target: Target, first: float, now: float) -> None:
        """Place `target` so that it runs first at `first` (then every interval)."""
        self._targets[target.name] = target
        iv = self._intervals.get(target.interval)
        if iv is None:
            iv = self._intervals[target.interval] = _Interval(target.interval, now)
            for slot in range(iv.count):
                self._scheduler.add_job(
                    self._slot, IntervalTrigger(seconds=iv.interval, timezone=UTC),
                    args=[iv, slot], id=iv.job_id(slot), name=iv.job_id(slot),
                    next_run_time=datetime.fromtimestamp(now + slot * iv.length, UTC),
                    max_instances=1, coalesce=True,
                    # A late run is still worth running; lateness is measured, not hidden.
                    misfire_grace_time=max(1, math.ceil(iv.interval)),
                )
        offset = (first - iv.anchor) % iv.interval
        slot = iv.slot_of(offset)
        iv.members[slot][target.name] = offset
        self._place[target.name] = (iv, slot)
        # The slot may already have fired for this round: start the first run ourselves.
        job = self._scheduler.get_job(iv.job_id(slot))
        slot_next = job.next_run_time.timestamp() if job and job.next_run_time else None
        # The slot's next run starts it at `first` or one interval later: compare halfway.
        slot_start = None if slot_next is None else slot_next + offset - slot * iv.length
        if slot_start is not None and slot_start > first + iv.interval / 2:
            self._start_later(target.name, first)

    def _remove(self, name: str) -> None:
        self._targets.pop(name, None)
        iv, slot = self._place.pop(name)
        del iv.members[slot][name]
        pending = self._pending.pop(name, None)
        if pending is not None:
            pending[0].cancel()

    def _drop_interval(self, interval: float) -> None:
        iv = self._intervals.pop(interval)
        for slot in range(iv.count):
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(iv.job_id(slot))

    # --- running ------------------------------------------------------------------------

    async def _slot(self, iv: _Interval, slot: int) -> None:
        """One slot of an interval is due: start each of its targets at its own time."""
        if self._stopping:
            return
        due = self._due.pop(iv.job_id(slot), None)
        if due is None:
            due = self._clock()
        start = due - slot * iv.length
        for name, offset in list(iv.members[slot].items()):
            self._start_later(name, start + offset)

    def _start_later(self, name: str, due: float) -> None:
        if name in self._pending:  # already waiting (e.g. placed just before its slot)
            return
        delay = max(0.0, due - self._clock())
        handle = asyncio.get_running_loop().call_later(delay, self._start, name, due)
        self._pending[name] = (handle, due)

    def _start(self, name: str, due: float) -> None:
        self._pending.pop(name, None)
        target = self._targets.get(name)
        if target is None or self._stopping:
            return
        if name in self._running:  # the previous run is still going
            self._on_skipped("still_running")
            return
        if name in self._queued:  # the previous run is still waiting for a slot
            self._overloaded()
            return
        if self.max_in_flight is not None and len(self._running) >= self.max_in_flight:
            self._waiting.append((name, due))
            self._queued.add(name)
            return
        self._launch(target, due)

    def _launch(self, target: Target, due: float) -> None:
        name = target.name
        self._on_lateness(max(0.0, self._clock() - due))
        task = asyncio.get_running_loop().create_task(self._run_one(target))
        self._running[name] = task
        task.add_done_callback(lambda _: self._finished(name))

    def _finished(self, name: str) -> None:
        self._running.pop(name, None)
        if self._stopping:
            return
        limit = self.max_in_flight if self.max_in_flight is not None else len(self._waiting)
        while self._waiting and len(self._running) < limit:
            waiting, due = self._waiting.popleft()
            self._queued.discard(waiting)
            target = self._targets.get(waiting)
            if target is None:  # removed by a reload while waiting
                continue
            if self._clock() - due > target.interval / 2:
                self._overloaded()
                continue
            self._launch(target, due)
        episode = self._episode
        if not self._waiting and episode and time.monotonic() - episode[1] >= EPISODE_QUIET:
            self._episode = None
            log.info("scheduler caught up after %.0fs of overload: %d runs skipped",
                     episode[1] - episode[0], episode[2])

    def _overloaded(self) -> None:
        """A run skipped because it could not start in time: counted, logged once an episode."""
        self._on_skipped("overloaded")
        now = time.monotonic()
        if self._episode is None:
            self._episode = (now, now, 0)
            log.warning("scheduler overloaded: %d probes in flight (the cap); runs that cannot "
                        "start within half their interval are skipped, not blamed on their "
                        "targets (monitor_scheduler_missed_runs_total{reason=\"overloaded\"})",
                        len(self._running))
        self._episode = (self._episode[0], now, self._episode[2] + 1)

    async def _run_one(self, target: Target) -> None:
        try:
            await self._run(target)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Cancelled by shutdown: an expected end, not an error.
        except Exception:
            log.exception("run of %s failed", target.name)

    def _members(self, job_id: str) -> int:
        _, interval, slot = job_id.split(":")
        iv = self._intervals.get(float(interval))
        return len(iv.members[int(slot)]) if iv else 0

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        times = event.scheduled_run_times
        if times:
            self._due[event.job_id] = times[-1].timestamp()
            if len(times) > 1:  # runs folded into one by coalescing
                for _ in range((len(times) - 1) * self._members(event.job_id)):
                    self._on_skipped("coalesced")

    def _on_missed(self, event: JobEvent) -> None:
        reason = "missed" if event.code == EVENT_JOB_MISSED else "still_running"
        for _ in range(self._members(event.job_id)):
            self._on_skipped(reason)
