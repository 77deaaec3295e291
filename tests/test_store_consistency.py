"""Reads are consistent with writes: an outage change is seen the same way through every
read path at once (outages, open_outages, target_states, outage_times, report, uptime),
whether the writer has caught up or the disk is failing, and the same once it is written.

Real SQLite files; the failing disk is a real lock held by another connection.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from daemon import Daemon
from servers import HttpServer
from test_store import HERE, T0, Clock, down, first_up, opened, result, up

from monitor.model import Failure, OutageQuery, OutageTime, State
from monitor.store import SqliteReader, SqliteStore


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another connection holds the write lock: every write of the store fails (locked)."""
    other = sqlite3.connect(path, isolation_level=None)
    with contextlib.closing(other):
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


@contextlib.asynccontextmanager
async def failing_store(path: Path, clock: Clock) -> AsyncIterator[SqliteStore]:
    """A store whose target `site` is up since T0 (written), then the disk fails."""
    async with opened(path, clock=clock, busy_timeout=0.05) as store:
        await store.start_run(HERE, T0)
        await store.apply_transition(HERE, first_up("site", T0))
        assert await store.flush()
        with locked(path):
            yield store


async def views(store: SqliteStore, now: float) -> dict[str, object]:
    """Every read path of the store, as of `now`."""
    found = await store.outages()
    return {
        "outages": found,
        "open": await store.outages(OutageQuery(open=True)),
        "closed": await store.outages(OutageQuery(open=False, target="site", location=HERE)),
        "open_outages": await store.open_outages(HERE),
        "states": await store.target_states(HERE),
        "times": await store.outage_times(found, now),
        "report": await store.report(T0, now, location=HERE),
        "uptime": await store.uptime(HERE, "site", T0, now),
    }


async def test_an_outage_is_seen_by_every_read_at_once_while_the_disk_fails(
        tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    clock = Clock(T0 + 600)
    async with failing_store(path, clock) as store:
        outage = await store.apply_transition(HERE, down("site", T0 + 60))
        assert outage is not None
        store.record_result(HERE, result("site", T0 + 200, Failure.TIMEOUT))
        assert not await store.flush()  # nothing of it is on disk
        assert store.errors["locked"] >= 2

        seen = await views(store, T0 + 600)
        counted = replace(outage, failed_probes=4, counts={"http": 3, "timeout": 1})
        assert seen["outages"] == seen["open"] == seen["open_outages"] == [counted]
        assert seen["closed"] == []
        assert seen["states"] == {"site": (State.DOWN, T0 + 60)}
        assert seen["times"] == [OutageTime(known=540.0, unknown=0.0)]
        (report,) = seen["report"]  # type: ignore[misc]
        assert (report.outages, report.downtime_seconds) == (1, 540.0)
        assert seen["uptime"] == report.uptime == pytest.approx(60 / 600)

        # Closed, and the monitor offline for a while (its run ended and another began),
        # all still unwritten: every read agrees again.
        closed = await store.apply_transition(HERE, up("site", T0 + 300, {"http": 1}))
        assert closed is not None and closed.ended_at == T0 + 300
        await store.end_run(T0 + 400)
        await store.start_run(HERE, T0 + 500)
        seen = await views(store, T0 + 600)
        assert seen["outages"] == seen["closed"] == [closed]
        assert closed.failed_probes == 4  # at confirmation, and while down (the transition's)
        assert seen["open"] == seen["open_outages"] == []
        assert seen["states"] == {"site": (State.UP, T0 + 300)}
        assert seen["times"] == [OutageTime(known=240.0, unknown=0.0)]
        (report,) = seen["report"]  # type: ignore[misc]
        assert report.known_seconds == 500.0  # 600 s minus 100 s offline
        assert (report.outages, report.downtime_seconds) == (1, 240.0)
        assert seen["uptime"] == report.uptime == pytest.approx(260 / 500)
        before = seen

    # Once written, the file says the same: the store after a restart, and the CLI's reader.
    async with opened(path, clock=clock) as store:
        restarted = await views(store, T0 + 600)
    for name in ("outages", "closed", "open", "open_outages", "states", "times"):
        assert restarted[name] == before[name], name
    with SqliteReader(path) as reader:
        assert reader.outages() == before["outages"]
        assert reader.outage_times(reader.outages(), T0 + 600) == before["times"]


async def test_an_unwritten_change_never_pushes_a_match_out_of_a_limited_answer(
        tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path, clock=Clock(T0 + 600), busy_timeout=0.05) as store:
        for target in ("b", "c"):
            await store.apply_transition(HERE, first_up(target, T0))
        await store.apply_transition(HERE, down("c", T0 + 50))
        await store.apply_transition(HERE, up("c", T0 + 300))
        await store.apply_transition(HERE, down("b", T0 + 101))
        assert await store.flush()
        with locked(path):
            # b ends before `since`, unwritten: the file's newest match is no match at all.
            await store.apply_transition(HERE, up("b", T0 + 200))
            (found,) = await store.outages(OutageQuery(since=T0 + 250, limit=1))
            assert found.target == "c"
            (newest,) = await store.outages(OutageQuery(limit=1))
            assert (newest.target, newest.ended_at) == ("b", T0 + 200)


async def test_the_store_filters_outages_as_the_query_says(tmp_path: Path) -> None:
    """`OutageQuery.matches` (what memory uses) and the SQL (what the file uses) agree."""
    async with opened(tmp_path / "h.db", clock=Clock(T0 + 1000)) as store:
        for target, location, start, end in (("a", HERE, 100, 200), ("b", HERE, 150, None),
                                             ("a", "there", 300, 400), ("b", "there", 500, None)):
            await store.apply_transition(location, first_up(target, T0))
            await store.apply_transition(location, down(target, T0 + start))
            if end is not None:
                await store.apply_transition(location, up(target, T0 + end))
        assert await store.flush()
        everything = await store.outages()
        assert len(everything) == 4
        grid = itertools.product((None, "a"), (None, HERE), (None, T0 + 250),
                                 (None, T0 + 320), (None, True, False))
        for target, location, since, until, is_open in grid:
            query = OutageQuery(target=target, location=location, since=since, until=until,
                                open=is_open)
            assert await store.outages(query) == [o for o in everything if query.matches(o)], query


async def test_the_api_lists_an_outage_the_disk_has_not_taken(tmp_path: Path) -> None:
    """Through the daemon: with every write failing, /api/v1/outages and /api/v1/targets
    still agree that the target is down."""
    db = tmp_path / "history.db"
    async with HttpServer() as site:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: "{db}"}}
targets:
  - name: site
    url: {site.url("/ok")}
    interval: 1s
    timeout: 500ms
    down_after: 2
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from lab")
            with locked(db):
                site.status = 503
                await daemon.wait_for_log(r"site DOWN from lab")
                await daemon.wait_for_log(r"cannot write to .* \(locked\)")
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{daemon.base}/api/v1/outages?open=true") as r:
                        assert r.status == 200
                        (listed,) = (await r.json())["outages"]
                    async with http.get(f"{daemon.base}/api/v1/targets") as r:
                        (target,) = (await r.json())["targets"]
                assert db.exists()
                with contextlib.closing(sqlite3.connect(db)) as peek:  # the file lacks it
                    assert peek.execute("SELECT count(*) FROM outages").fetchone() == (0,)
    assert listed["target"] == "site" and listed["ended_at"] is None
    assert target["state"] == "down" and target["state_since"] == listed["started_at"]
