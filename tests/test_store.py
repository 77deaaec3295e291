"""The SQLite store on real files: outages across restarts, rollups, uptime, retention and
what happens when the database is locked, read-only or full."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import StoreConfig
from monitor.model import Failure, Outage, OutageQuery, ProbeResult, State, Transition
from monitor.store import Retention, SqliteReader, SqliteStore, StoreError, open_store
from monitor.store.schema import FAILURE_COLUMNS, MIGRATIONS

T0 = 1_699_999_200.0  # the start of an hour
HERE = "here"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(
    target: str, at: float, failure: Failure | None = None, duration: float = 0.1
) -> ProbeResult:
    return ProbeResult(
        target=target,
        started_at=at,
        duration=duration,
        ok=failure is None,
        failure=failure,
        message="" if failure is None else f"{failure.value} failure",
        status=200 if failure is None else 503,
    )


def down(target: str, at: float, failures: dict[str, int] | None = None) -> Transition:
    return Transition(
        target=target,
        previous=State.UP,
        state=State.DOWN,
        at=at,
        result=result(target, at + 120, Failure.HTTP),
        first_failure=result(target, at, Failure.HTTP),
        failures=failures or {"http": 3},
    )


def up(target: str, at: float, failures: dict[str, int] | None = None) -> Transition:
    return Transition(
        target=target,
        previous=State.DOWN,
        state=State.UP,
        at=at,
        result=result(target, at),
        failures=failures or {},
    )


def first_up(target: str, at: float) -> Transition:
    return Transition(target, State.UNKNOWN, State.UP, at, result(target, at))


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


# Most tests here look at minute buckets: per-minute rollups on (the default is off).
WITH_MINUTES = Retention(minutes=14 * 86400)


@contextlib.asynccontextmanager
async def opened(path: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    kwargs.setdefault("flush_interval", 60.0)  # only explicit flushes, unless a test wants more
    kwargs.setdefault("clock", Clock())
    kwargs.setdefault("retention", WITH_MINUTES)
    store = SqliteStore(path, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def error_logs(caplog: pytest.LogCaptureFixture, kind: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "monitor.store"
        and r.levelno == logging.ERROR
        and f"({kind})" in r.getMessage()
    ]


# --- outages and restarts ----------------------------------------------------------------


async def test_open_outage_survives_restart_and_closes_later(tmp_path: Path) -> None:
    path = tmp_path / "data" / "history.db"  # the directory is created
    async with opened(path) as store:
        assert await store.start_run(HERE, T0) == 1
        assert await store.apply_transition(HERE, first_up("site", T0)) is None
        opened_outage = await store.apply_transition(HERE, down("site", T0 + 60))
        assert opened_outage == Outage(
            id=1,
            target="site",
            location=HERE,
            started_at=T0 + 60,
            ended_at=None,
            cause=Failure.HTTP,
            message="http failure",
            failed_probes=3,
            counts={"http": 3},
        )
        assert await store.open_outages(HERE) == [opened_outage]
        assert await store.open_outages("elsewhere") == []

    async with opened(path, clock=Clock(T0 + 1000)) as store:
        assert await store.open_outages(HERE) == [opened_outage]
        assert await store.target_states(HERE) == {"site": (State.DOWN, T0 + 60)}
        assert await store.start_run(HERE, T0 + 1000) == 2
        closed = await store.apply_transition(
            HERE, up("site", T0 + 1200, {"http": 2, "timeout": 1})
        )
        assert closed is not None
        assert (closed.id, closed.started_at, closed.ended_at) == (1, T0 + 60, T0 + 1200)
        assert (closed.failed_probes, closed.counts) == (6, {"http": 5, "timeout": 1})
        assert await store.open_outages(HERE) == []
        assert await store.outages(OutageQuery(target="site")) == [closed]
        assert await store.target_states(HERE) == {"site": (State.UP, T0 + 1200)}

    with SqliteReader(path) as reader:
        assert reader.outages() == [closed]
    runs = query(path, "SELECT id, started_at, last_seen_at, ended_at FROM runs ORDER BY id")
    assert runs == [(1, T0, T0, T0), (2, T0 + 1000, T0 + 1000, T0 + 1000)]


async def test_second_down_while_open_keeps_the_outage(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db") as store:
        first = await store.apply_transition(HERE, down("site", T0))
        again = await store.apply_transition(HERE, down("site", T0 + 600))
        assert again == first
        assert len(await store.outages()) == 1
        assert await store.apply_transition(HERE, up("other", T0)) is None  # nothing open


async def test_maintenance_flag_is_stored(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db") as store:
        outage = await store.apply_transition(HERE, down("site", T0), maintenance=True)
        assert outage is not None and outage.maintenance
        assert (await store.outages())[0].maintenance


async def test_outage_queries(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db") as store:
        for target, start, end in (("a", 0, 100), ("b", 200, 300), ("a", 400, None)):
            await store.apply_transition(HERE, down(target, T0 + start))
            if end is not None:
                await store.apply_transition(HERE, up(target, T0 + end))
        await store.apply_transition("there", down("a", T0 + 500))

        def ids(outages: list[Outage]) -> list[int]:
            return [o.id for o in outages]

        assert ids(await store.outages()) == [4, 3, 2, 1]  # newest first
        assert ids(await store.outages(OutageQuery(location=HERE))) == [3, 2, 1]
        assert ids(await store.outages(OutageQuery(target="a", location=HERE))) == [3, 1]
        assert ids(await store.outages(OutageQuery(open=True))) == [4, 3]
        assert ids(await store.outages(OutageQuery(open=False))) == [2, 1]
        # Overlapping [since, until]: an outage that ended at `since` still counts.
        assert ids(await store.outages(OutageQuery(since=T0 + 100, until=T0 + 250))) == [2, 1]
        assert ids(await store.outages(OutageQuery(since=T0 + 301, until=T0 + 399))) == []
        assert ids(await store.outages(OutageQuery(since=T0 + 301))) == [4, 3]
        assert ids(await store.outages(OutageQuery(limit=1))) == [4]


async def test_an_open_outage_counts_stay_current(tmp_path: Path) -> None:
    """Failures while an outage is open are counted as they come (written with the batch),
    and closing it counts each failure once."""
    path = tmp_path / "h.db"
    async with opened(path) as store:
        await store.start_run(HERE, T0)
        store.record_result(HERE, result("site", T0, Failure.HTTP))  # before: not counted
        await store.apply_transition(HERE, down("site", T0, {"http": 2}))
        for i, failure in enumerate((Failure.HTTP, Failure.TIMEOUT, Failure.HTTP)):
            store.record_result(HERE, result("site", T0 + 60 + i, failure))
        store.record_result(HERE, result("site", T0 + 70, Failure.LOCAL))  # our fault: no
        store.record_result(HERE, result("other", T0 + 70, Failure.HTTP))  # nothing open
        (current,) = await store.open_outages(HERE)
        assert (current.failed_probes, current.counts) == (5, {"http": 4, "timeout": 1})
        assert await store.flush()
        assert query(path, "SELECT failed_probes, counts FROM outages") == [
            (5, '{"http": 4, "timeout": 1}')
        ]
    async with opened(path) as store:  # after a restart: from the file, and on from there
        await store.start_run(HERE, T0 + 1000)
        store.record_result(HERE, result("site", T0 + 1000, Failure.CONNECT))
        (current,) = await store.open_outages(HERE)
        assert current.failed_probes == 6
        # The tracker reports the failures it saw while down in this run: the same one.
        closed = await store.apply_transition(HERE, up("site", T0 + 1060, {"connect": 1}))
        assert closed is not None
        assert (closed.failed_probes, closed.counts) == (
            6,
            {"http": 4, "timeout": 1, "connect": 1},
        )
    assert query(path, "SELECT failed_probes FROM outages") == [(6,)]


async def test_outage_time_splits_known_and_unknown(tmp_path: Path) -> None:
    """An outage open while the monitor was stopped lasts, honestly, only the time it was
    seen; the rest is unknown. Several run periods in one process (offline, back online)
    count the same way."""
    path = tmp_path / "h.db"
    clock = Clock()
    async with opened(path, clock=clock) as store:
        await store.start_run(HERE, T0)
        await store.apply_transition(HERE, first_up("site", T0))
        await store.apply_transition(HERE, down("site", T0 + 100))
        await store.end_run(T0 + 300)  # stopped: 200 s seen down
    clock.now = T0 + 1000
    async with opened(path, clock=clock) as store:
        await store.start_run(HERE, T0 + 1000)  # 700 s not running
        clock.now = T0 + 1100
        (outage,) = await store.outages(OutageQuery(open=True))
        (times,) = await store.outage_times([outage], clock.now)
        assert (times.known, times.unknown) == (pytest.approx(300), pytest.approx(700))
        # Offline for 100 s in the same process: a new run period after it.
        await store.end_run(T0 + 1100)
        await store.start_run(HERE, T0 + 1200)
        closed = await store.apply_transition(HERE, up("site", T0 + 1250))
        assert closed is not None
        (times,) = await store.outage_times([closed], T0 + 5000)
        assert (times.known, times.unknown) == (pytest.approx(350), pytest.approx(800))
        (report,) = await store.report(T0, T0 + 1250)
        assert report.downtime_seconds == pytest.approx(350)
        assert report.known_seconds == pytest.approx(300 + 100 + 50)
        clock.now = T0 + 1300
    runs = query(path, "SELECT started_at, ended_at FROM runs ORDER BY id")
    assert runs == [(T0, T0 + 300), (T0 + 1000, T0 + 1100), (T0 + 1200, T0 + 1300)]
    with SqliteReader(path) as reader:  # the CLI's view, daemon stopped
        assert reader.outage_times(reader.outages(), T0 + 9000)[0] == times


# --- rollups -----------------------------------------------------------------------------

ROLLUP = "SELECT bucket, probes, fail_http, fail_timeout, latency_sum_ms, latency_min_ms, "
ROLLUP += "latency_max_ms FROM {} JOIN series ON series.id = series "
ROLLUP += "WHERE target = ? AND location = ? ORDER BY bucket"


async def test_results_are_aggregated_per_minute_and_hour(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        store.record_result(HERE, result("site", T0 + 1, duration=0.1))
        store.record_result(HERE, result("site", T0 + 20, duration=0.3))
        store.record_result(HERE, result("site", T0 + 40, Failure.HTTP, duration=5.0))
        store.record_result(HERE, result("site", T0 + 61, Failure.TIMEOUT, duration=10.0))
        store.record_result(HERE, result("site", T0 + 3600, duration=0.2))  # the next hour
        store.record_result("there", result("site", T0 + 5))
        assert query(path, "SELECT count(*) FROM rollup_minute") == [(0,)]  # not yet

        assert await store.flush()
        minutes = query(path, ROLLUP.format("rollup_minute"), "site", HERE)
        assert minutes == [
            (T0, 3, 1, 0, 400, 100, 300),  # latency over successful probes only
            (T0 + 60, 1, 0, 1, 0, None, None),
            (T0 + 3600, 1, 0, 0, 200, 200, 200),
        ]
        hours = query(path, ROLLUP.format("rollup_hour"), "site", HERE)
        assert hours == [(T0, 4, 1, 1, 400, 100, 300), (T0 + 3600, 1, 0, 0, 200, 200, 200)]
        assert len(query(path, ROLLUP.format("rollup_minute"), "site", "there")) == 1

        # A later flush adds to the same buckets.
        store.record_result(HERE, result("site", T0 + 50, duration=0.05))
        store.record_result(HERE, result("site", T0 + 70, duration=0.5))
        assert await store.flush()
        minutes = query(path, ROLLUP.format("rollup_minute"), "site", HERE)
        assert minutes[:2] == [(T0, 4, 1, 0, 450, 50, 300), (T0 + 60, 2, 0, 1, 500, 500, 500)]
        hours = query(path, ROLLUP.format("rollup_hour"), "site", HERE)
        assert hours[0] == (T0, 6, 1, 1, 950, 50, 500)


async def test_by_default_results_are_aggregated_per_hour_only(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path, retention=Retention()) as store:
        store.record_result(HERE, result("site", T0 + 1, duration=0.1))
        store.record_result(HERE, result("site", T0 + 61, Failure.TIMEOUT, duration=10.0))
        store.record_result(HERE, result("site", T0 + 3600, duration=0.2))  # the next hour
        assert await store.flush()

        assert query(path, "SELECT count(*) FROM rollup_minute") == [(0,)]
        hours = query(path, ROLLUP.format("rollup_hour"), "site", HERE)
        assert hours == [(T0, 2, 0, 1, 100, 100, 100), (T0 + 3600, 1, 0, 0, 200, 200, 200)]


async def test_per_minute_rows_of_an_older_setting_are_pruned_when_off(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        store.record_result(HERE, result("site", T0))
    async with opened(path, retention=Retention()) as store:
        await store.prune(T0 + 120)
    assert query(path, "SELECT count(*) FROM rollup_minute") == [(0,)]
    assert query(path, "SELECT probes FROM rollup_hour") == [(1,)]


async def test_writer_flushes_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    clock = Clock()
    async with opened(path, flush_interval=0.05, clock=clock) as store:
        await store.start_run(HERE, T0)
        store.record_result(HERE, result("site", T0))
        clock.now = T0 + 30
        async with asyncio.timeout(10):
            # Polling: the writer's timer is internal, there is no event to await.
            while not query(path, "SELECT 1 FROM rollup_minute"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            while query(path, "SELECT last_seen_at FROM runs") != [(T0 + 30,)]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # every flush is a heartbeat


async def test_close_writes_pending_rollups(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        store.record_result(HERE, result("site", T0))
    assert query(path, "SELECT probes FROM rollup_minute") == [(1,)]


def test_every_failure_class_has_a_column() -> None:
    db = sqlite3.connect(":memory:")
    with contextlib.closing(db):
        for migration in MIGRATIONS:
            for statement in migration:
                db.execute(statement)
        for table in ("rollup_minute", "rollup_hour"):
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            assert set(FAILURE_COLUMNS.values()) <= columns
    assert set(FAILURE_COLUMNS) == {f.value for f in Failure}


# --- uptime and reports ------------------------------------------------------------------


async def test_uptime_ignores_the_gap_between_runs(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        await store.start_run(HERE, T0)
        await store.apply_transition(HERE, first_up("site", T0))
        await store.apply_transition(HERE, down("site", T0 + 900))  # down for the last 100 s
        await store.end_run(T0 + 1000)
    # The monitor is stopped for 1000 s, then the outage goes on for 100 s after restart.
    async with opened(path, clock=Clock(T0 + 3000)) as store:
        await store.start_run(HERE, T0 + 2000)
        await store.apply_transition(HERE, up("site", T0 + 2100))
        now = T0 + 3000
        assert await store.uptime(HERE, "site", T0, now) == pytest.approx(1800 / 2000)
        assert await store.uptime(HERE, "site", T0 + 1000, T0 + 2000) is None  # all unknown
        assert await store.uptime(HERE, "site", T0 + 2100, now) == 1.0
        assert await store.uptime(HERE, "nothing", T0, now) is None
        assert await store.uptime("there", "site", T0, now) is None

        (report,) = await store.report(T0, now)
        assert (report.target, report.location) == ("site", HERE)
        assert report.known_seconds == pytest.approx(2000)
        assert report.downtime_seconds == pytest.approx(200)
        assert (report.outages, report.longest_seconds, report.mttr_seconds) == (1, 200, 200)

    with SqliteReader(path) as reader:  # the same from the file alone
        assert reader.report(T0, T0 + 3000) == [report]


async def test_uptime_counts_from_the_first_confirmation(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db") as store:
        await store.start_run(HERE, T0)
        await store.apply_transition(HERE, first_up("late", T0 + 400))
        store.record_result(HERE, result("never", T0))  # probed, never confirmed
        await store.flush()
        reports = {r.target: r for r in await store.report(T0, T0 + 1000)}
        assert reports["late"].known_seconds == pytest.approx(600)
        assert reports["late"].uptime == 1.0
        assert (reports["never"].uptime, reports["never"].known_seconds) == (None, 0)


async def test_crash_keeps_file_outage_and_known_time(tmp_path: Path) -> None:
    """SIGKILL a store in another process: the file is intact, the outage still open, and
    the time from its last heartbeat to the next start is unknown."""
    path = tmp_path / "h.db"
    child = textwrap.dedent(
        f"""
        import asyncio
        from monitor.model import Failure, ProbeResult, State, Transition
        from monitor.store import SqliteStore

        T0 = {T0!r}
        def result(at, failure=None):
            return ProbeResult("site", at, 0.1, failure is None, failure, "503", 503)

        async def main():
            store = SqliteStore({str(path)!r}, clock=lambda: T0 + 100)
            await store.open()
            await store.start_run("here", T0)
            up = Transition("site", State.UNKNOWN, State.UP, T0, result(T0))
            await store.apply_transition("here", up)
            down = Transition("site", State.UP, State.DOWN, T0 + 50, result(T0 + 70, Failure.HTTP),
                              result(T0 + 50, Failure.HTTP), {{"http": 3}})
            await store.apply_transition("here", down)
            store.record_result("here", result(T0 + 50, Failure.HTTP))
            assert await store.flush()
            print("ready", flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", child, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        assert await proc.stdout.readline() == b"ready\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    assert query(path, "PRAGMA integrity_check") == [("ok",)]
    assert query(path, "SELECT started_at, last_seen_at, ended_at FROM runs") == [
        (T0, T0 + 100, None)
    ]
    async with opened(path) as store:
        (outage,) = await store.open_outages(HERE)
        assert (outage.id, outage.started_at) == (1, T0 + 50)
        assert await store.start_run(HERE, T0 + 1000) == 2
        await store.apply_transition(HERE, up("site", T0 + 1100))
        # Known: [T0, T0+100] and [T0+1000, T0+1200]; down: [T0+50, T0+100], [T0+1000, T0+1100].
        assert await store.uptime(HERE, "site", T0, T0 + 1200) == pytest.approx(0.5)
    assert query(path, "SELECT probes, fail_http FROM rollup_hour") == [(1, 1)]


async def test_reader_works_while_the_store_runs(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with pytest.raises(StoreError, match="no history at"):
        SqliteReader(path)
    clock = Clock()
    async with opened(path, clock=clock) as store:
        await store.start_run(HERE, T0)
        await store.apply_transition(HERE, first_up("site", T0))
        for start, end in ((100, 400), (1000, 1100)):
            await store.apply_transition(HERE, down("site", T0 + start))
            await store.apply_transition(HERE, up("site", T0 + end))
        await store.apply_transition(HERE, down("site", T0 + 3000))
        clock.now = T0 + 3600
        assert await store.flush()  # heartbeat: the reader counts the run until now

        with SqliteReader(path) as reader:
            (report,) = reader.report(T0, T0 + 3600)
            assert len(reader.outages(OutageQuery(target="site"))) == 3
            assert [o.id for o in reader.outages(OutageQuery(open=True))] == [3]
    assert report.known_seconds == pytest.approx(3600)
    assert report.downtime_seconds == pytest.approx(300 + 100 + 600)
    assert report.uptime == pytest.approx(2600 / 3600)
    assert (report.outages, report.longest_seconds) == (3, pytest.approx(600))
    assert report.mttr_seconds == pytest.approx(200)  # the open outage has not recovered
    with SqliteReader(path) as reader:  # the daemon stopped
        (after,) = reader.report(T0, T0 + 3600)
        assert after == report


async def test_maintenance_counts_neither_up_nor_down(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db") as store:
        await store.start_run(HERE, T0)
        await store.apply_transition(HERE, first_up("site", T0))
        await store.apply_transition(HERE, down("site", T0 + 100), maintenance=True)
        await store.apply_transition(HERE, up("site", T0 + 400))
        (report,) = await store.report(T0, T0 + 1000)
        assert (report.known_seconds, report.downtime_seconds, report.outages) == (700, 0, 0)
        assert report.uptime == 1.0


# --- schema and retention ----------------------------------------------------------------


async def test_migrations_are_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    for _ in range(2):
        async with opened(path) as store:
            await store.apply_transition(HERE, down("site", T0))
    assert query(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert len(query(path, "SELECT * FROM outages")) == 1


async def test_store_from_config(tmp_path: Path) -> None:
    settings = StoreConfig(path=str(tmp_path / "h.db"), minute_retention=3600, hour_retention=None)
    store = open_store(settings)
    assert (store.path, store.retention) == (tmp_path / "h.db", Retention(3600, None, None))
    await store.open()
    await store.close()
    assert query(tmp_path / "h.db", "PRAGMA user_version") == [(len(MIGRATIONS),)]


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    query(path, f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer version"):
        await SqliteStore(path).open()
    with pytest.raises(StoreError, match="newer version"):
        SqliteReader(path)


async def test_retention_prunes_each_level(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    day = 86400.0
    now = T0 + 10 * day
    retention = Retention(minutes=1 * day, hours=5 * day, outages=3 * day)
    async with opened(path, retention=retention) as store:
        for age in (9 * day, 4 * day, 2 * 3600):
            store.record_result(HERE, result("site", now - age))
        store.record_result(HERE, result("gone", now - 9 * day))
        for target, start, end in (("old", 8, 7), ("recent", 4, 2)):
            await store.apply_transition(HERE, down(target, now - start * day))
            await store.apply_transition(HERE, up(target, now - end * day))
        await store.apply_transition(HERE, down("long", now - 9 * day))  # still open
        await store.prune(now)

        minutes = query(path, "SELECT bucket FROM rollup_minute ORDER BY bucket")
        assert minutes == [(now - 2 * 3600,)]
        hours = query(path, "SELECT bucket FROM rollup_hour ORDER BY bucket")
        assert hours == [(now - 4 * day,), (now - 2 * 3600,)]
        assert query(path, "SELECT target FROM series") == [("site",)]
        assert sorted(o.target for o in await store.outages()) == ["long", "recent"]

        # The series of a pruned target comes back when it is probed again.
        store.record_result(HERE, result("gone", now))
        assert await store.flush()
        assert len(query(path, ROLLUP.format("rollup_minute"), "gone", HERE)) == 1


async def test_prune_deletes_in_small_transactions_between_writes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    day = 86400.0
    now = T0 + 10 * day
    retention = Retention(minutes=1 * day, hours=None, outages=None)
    async with opened(path, retention=retention, prune_batch=50) as store:
        for target in ("a", "b", "c"):
            for minute in range(600):  # ten hours of minutes, a week ago
                store.record_result(HERE, result(target, now - 7 * day + 60 * minute))
            store.record_result(HERE, result(target, now - 60))
        assert await store.flush()
        pruning = asyncio.create_task(store.prune(now))
        await asyncio.sleep(0)  # the first delete is under way
        # An outage change waits for one write: it goes between two deletes, not after all.
        assert await store.apply_transition(HERE, down("a", now)) is not None
        assert query(path, "SELECT count(*) FROM outages") == [(1,)]
        assert not pruning.done()
        assert await pruning == 1800
        assert query(path, "SELECT count(*) FROM rollup_minute") == [(3,)]
        assert query(path, "SELECT count(*) FROM rollup_hour") == [(33,)]  # kept forever


# --- store failures ----------------------------------------------------------------------


async def test_locked_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.db"
    async with opened(path, busy_timeout=0.05, max_pending=2) as store:
        await store.start_run(HERE, T0)
        other = sqlite3.connect(path, isolation_level=None)
        with contextlib.closing(other):
            other.execute("BEGIN EXCLUSIVE")
            store.record_result(HERE, result("site", T0))
            outage = await store.apply_transition(HERE, down("site", T0))  # does not raise
            assert outage is not None and outage.id == 1
            assert await store.open_outages(HERE) == [outage]
            assert not await store.flush()
            # While writes fail, pending rollups are bounded: the oldest minute goes.
            store.record_result(HERE, result("site", T0 + 60))
            store.record_result(HERE, result("site", T0 + 120))
            assert store.dropped == 1
            assert store.errors["locked"] >= 2
            assert len(error_logs(caplog, "locked")) == 1
            other.execute("ROLLBACK")

        assert await store.flush()
        assert [o.id for o in await store.outages(OutageQuery(open=True))] == [1]
        buckets = query(path, "SELECT bucket FROM rollup_minute ORDER BY bucket")
        assert buckets == [(T0 + 60,), (T0 + 120,)]
        assert "writing to" in caplog.text and "works again" in caplog.text


@contextlib.contextmanager
def unprivileged_dir() -> Iterator[Path]:
    """A directory whose files' permissions really apply to this process.

    Root ignores file modes, so as root the test runs as `nobody` (the effective uid of the
    whole process, all threads) in a directory `nobody` owns, outside root's private tmp_path.
    """
    path = Path(tempfile.mkdtemp(prefix="monitor-store-"))
    try:
        if os.geteuid() != 0:
            yield path
            return
        os.chown(path, 65534, 65534)
        os.seteuid(65534)
        try:
            yield path
        finally:
            os.seteuid(0)
    finally:
        shutil.rmtree(path)


async def test_read_only_database(caplog: pytest.LogCaptureFixture) -> None:
    with unprivileged_dir() as directory:
        path = directory / "h.db"
        async with opened(path) as store:
            await store.apply_transition(HERE, first_up("site", T0))
        path.chmod(0o444)

        async with opened(path) as store:  # opening is not an error
            assert store.errors["readonly"] == 0  # nothing written yet
            assert await store.target_states(HERE) == {"site": (State.UP, T0)}
            assert await store.start_run(HERE, T0 + 60) == 1
            store.record_result(HERE, result("site", T0 + 60, Failure.HTTP))
            outage = await store.apply_transition(HERE, down("site", T0 + 60))
            assert outage is not None and outage.id == 1
            assert not await store.flush()
            assert store.errors["readonly"] == 3  # each attempt counts
            assert len(error_logs(caplog, "readonly")) == 1

            # SQLite gave the -wal and -shm files it created the mode of the database file.
            for file in directory.glob("h.db*"):
                file.chmod(0o644)
            assert await store.flush()
            assert [o.id for o in await store.outages(OutageQuery(open=True))] == [1]

        assert query(path, "SELECT count(*) FROM runs WHERE ended_at IS NOT NULL") == [(1,)]
        assert query(path, "SELECT probes, fail_http FROM rollup_minute") == [(1, 1)]


async def test_new_database_in_read_only_directory(caplog: pytest.LogCaptureFixture) -> None:
    with unprivileged_dir() as directory:
        directory.chmod(0o555)
        path = directory / "h.db"
        store = SqliteStore(path, flush_interval=60)
        await store.open()
        try:
            assert store.errors["cantopen"] == 1
            assert await store.apply_transition(HERE, first_up("site", T0)) is None
            assert not await store.flush()
            directory.chmod(0o755)
            assert await store.flush()
        finally:
            await store.close()
        assert query(path, "SELECT state FROM target_state") == [("up",)]
    assert len(error_logs(caplog, "cantopen")) == 1


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A real, small filesystem (tmpfs), or a skip where mounting is not permitted."""
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


async def test_full_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with tiny_filesystem(tmp_path / "small", "4m") as directory:
        path = directory / "h.db"
        async with opened(path, max_pending=100_000) as store:
            await store.apply_transition(HERE, first_up("site", T0))
            filler = directory / "filler"
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
                while True:  # until the disk is full
                    f.write(b"\0" * 65536)
            for i in range(3000):  # needs new pages: many series and rollups
                store.record_result(HERE, result(f"site-{i}", T0))
            outage = await store.apply_transition(HERE, down("site", T0))
            assert outage is not None
            assert not await store.flush()
            assert store.errors["full"] >= 1
            assert len(error_logs(caplog, "full")) == 1

            filler.unlink()
            assert await store.flush()
            assert [o.id for o in await store.outages(OutageQuery(open=True))] == [1]
            assert query(path, "SELECT count(*) FROM rollup_minute") == [(3000,)]


async def test_the_store_is_an_async_context_manager_and_closing_is_safe_in_any_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    never_opened = SqliteStore(path, flush_interval=60.0)
    await never_opened.close()  # nothing to do, no error
    assert not path.exists()

    async with SqliteStore(path, flush_interval=60.0, clock=Clock(T0 + 5)) as store:
        assert await store.start_run(HERE, T0) == 1
    await store.close()  # a second time: no error
    assert query(path, "SELECT ended_at FROM runs") == [(T0 + 5,)]  # ended at close

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database" * 10)
    failed = SqliteStore(damaged, flush_interval=60.0)
    with pytest.raises(StoreError, match="is damaged"):
        await failed.open()
    await failed.close()  # after a failed open: no error
