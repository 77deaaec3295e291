"""The scheduler spreads first runs, measures lateness and applies target-list changes."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from monitor.model import Target
from monitor.scheduler import Scheduler


class Recorder:
    """Records when each target ran and lets a test await a number of runs."""

    def __init__(self) -> None:
        self.runs: dict[str, list[float]] = defaultdict(list)
        self.seen: list[Target] = []
        self._waiters: list[tuple[int, str | None, asyncio.Event]] = []

    async def __call__(self, target: Target) -> None:
        self.runs[target.name].append(time.time())
        self.seen.append(target)
        for n, name, event in self._waiters:
            if self.count(name) >= n:
                event.set()

    def count(self, name: str | None) -> int:
        return sum(map(len, self.runs.values())) if name is None else len(self.runs[name])

    async def wait(self, n: int, name: str | None = None) -> None:
        event = asyncio.Event()
        self._waiters.append((n, name, event))
        if self.count(name) >= n:
            return
        await asyncio.wait_for(event.wait(), 10)


async def test_first_runs_are_spread_evenly_over_the_interval() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec)
    start = time.time()
    scheduler.start([Target(f"t{i}", "http://127.0.0.1/", interval=1.0) for i in range(5)])
    try:
        await rec.wait(5)
    finally:
        await scheduler.shutdown()
    firsts = sorted(runs[0] - start for runs in rec.runs.values())
    # t0 at 0 s, t1 at 0.2 s, ... t4 at 0.8 s: no burst at start.
    for i, offset in enumerate(firsts):
        assert abs(offset - i * 0.2) < 0.15, firsts


async def test_lateness_is_observed_for_each_run() -> None:
    rec = Recorder()
    lateness: list[float] = []
    scheduler = Scheduler(rec, on_lateness=lateness.append)
    scheduler.start([Target("a", "http://127.0.0.1/", interval=0.2)])
    try:
        await rec.wait(3, "a")
    finally:
        await scheduler.shutdown()
    assert len(lateness) >= 3
    assert all(0 <= x < 0.5 for x in lateness)


async def test_update_adds_removes_and_keeps_unchanged_schedules() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec)
    keep = Target("keep", "http://127.0.0.1/", interval=0.3)
    scheduler.start([keep, Target("gone", "http://127.0.0.1/", interval=0.3),
                     Target("edit", "http://127.0.0.1/a", interval=0.3)])
    try:
        await rec.wait(2, "keep")
        await rec.wait(1, "edit")
        job_before = scheduler.next_run("keep")
        edited = Target("edit", "http://127.0.0.1/b", interval=0.3)
        added, removed, changed = scheduler.update(
            [keep, edited, Target("new", "http://127.0.0.1/", interval=0.3)])
        assert (added, removed, changed) == (["new"], ["gone"], ["edit"])
        assert scheduler.next_run("keep") == job_before
        assert scheduler.next_run("gone") is None
        gone_runs = rec.count("gone")
        await rec.wait(2, "new")
        n_edit = rec.count("edit")
        await rec.wait(n_edit + 1, "edit")
    finally:
        await scheduler.shutdown()
    assert rec.count("gone") == gone_runs
    # The edited target runs with its new definition, without a new schedule.
    assert [t.url for t in rec.seen if t.name == "edit"][-1] == "http://127.0.0.1/b"


async def test_shutdown_cancels_a_probe_in_flight() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(target: Target) -> None:
        started.set()
        try:
            await asyncio.sleep(60)  # a probe that hangs: cancelled by the shutdown under test
        except asyncio.CancelledError:
            cancelled.set()
            raise

    scheduler = Scheduler(slow)
    scheduler.start([Target("slow", "http://127.0.0.1/", interval=120)])
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    await scheduler.shutdown()
    await asyncio.wait_for(cancelled.wait(), 2)
    assert time.monotonic() - t0 < 2
