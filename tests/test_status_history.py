"""The status page's history query on a real SQLite file: per-day downtime, uptime windows
and hourly latency percentiles, the same from the daemon's store and the CLI's reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from history import Past, probe, write_history

from monitor.model import Failure
from monitor.store import SqliteReader, SqliteStore
from monitor.store.base import DAY, HISTORY_DAYS
from monitor.store.queries import quantile
from monitor.store.schema import LATENCY_BOUNDS_MS, LATENCY_COLUMNS

NOW = 1_764_460_800.0 + 15 * 3600 + 1800  # 2025-11-30 15:30 UTC
TODAY = NOW - NOW % DAY
HERE = "here"


async def test_days_split_an_outage_across_midnight_and_count_only_known_time(
        tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    across = Past("a", TODAY - 1800, TODAY + 600, Failure.TIMEOUT, "timed out")  # 30m + 10m
    earlier = Past("a", TODAY - 5 * DAY + 3600, TODAY - 5 * DAY + 3660)  # one minute
    await write_history(path, HERE, ["a", "b"], since=NOW - 10 * DAY, until=NOW,
                        outages=[across, earlier])
    with SqliteReader(path) as reader:
        found = reader.history(HERE, NOW)
    a, b = found["a"], found["b"]
    assert len(a.days) == HISTORY_DAYS and a.days[-1].start == TODAY
    assert a.days[-1].downtime_seconds == pytest.approx(600)
    assert a.days[-2].downtime_seconds == pytest.approx(1800)
    assert a.days[-6].downtime_seconds == pytest.approx(60)
    assert a.days[-1].known_seconds == pytest.approx(NOW - TODAY)
    assert a.days[-2].known_seconds == pytest.approx(DAY)
    # Before the monitor ran nothing is known: those days have no data, not "all up".
    assert a.days[-12].known_seconds == 0
    assert a.days[-11].known_seconds == pytest.approx(TODAY - 10 * DAY + DAY - (NOW - 10 * DAY))
    assert a.days[-10].known_seconds == pytest.approx(DAY)
    assert [d.downtime_seconds for d in b.days] == [0.0] * HISTORY_DAYS
    assert [o.started_at for o in a.outages] == [across.start, earlier.start]
    assert a.uptime["24h"] == pytest.approx(1 - 2400 / DAY)
    assert a.uptime["7d"] == pytest.approx(1 - 2460 / (7 * DAY))
    assert a.uptime["90d"] == pytest.approx(1 - 2460 / (10 * DAY))  # known: 10 days
    assert b.uptime["24h"] == 1.0


async def test_latency_hours_are_percentiles_of_the_probes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    hour = NOW - NOW % 3600 - 3 * 3600
    # 100 successful probes of 1..100 ms in that hour, one failure that must not count, and
    # nothing the other hours. The hourly histogram alone gives the percentiles, so they
    # need no per-minute rollups.
    results = [probe("a", hour + 30 * i, ms=i + 1) for i in range(100)]
    results.append(probe("a", hour + 5, ms=5000, failure=Failure.TIMEOUT))
    await write_history(path, HERE, ["a"], since=NOW - DAY, until=NOW, latency=results)
    async with SqliteStore(path) as store:
        from_store = await store.history(HERE, NOW, ["a"])
    with SqliteReader(path) as reader:
        assert reader.history(HERE, NOW, ["a"]) == from_store
    hours = from_store["a"].latency
    assert len(hours) == 24 and hours[-1].start == NOW - NOW % 3600
    filled = [h for h in hours if h.p50_ms is not None]
    assert [h.start for h in filled] == [hour]
    # Buckets ≤25 (25 probes), ≤50 (25), ≤100 (50): interpolated as histogram_quantile.
    assert filled[0].p50_ms == pytest.approx(50) and filled[0].p95_ms == pytest.approx(95)


def test_quantiles_stay_within_the_fastest_and_slowest_probe() -> None:
    counts = [0] * len(LATENCY_COLUMNS)
    counts[LATENCY_BOUNDS_MS.index(250)] = 10  # ten probes between 100 and 250 ms ...
    assert quantile(0.5, counts, 120, 130) == pytest.approx(130)  # ... all of 120–130 ms
    assert quantile(0.05, counts, 120, 130) == pytest.approx(120)
    counts = [0] * len(LATENCY_COLUMNS)
    counts[-1] = 4  # over the last bound: up to the slowest probe
    assert quantile(0.5, counts, 12_000, 20_000) == pytest.approx(15_000)
    assert quantile(0.5, [0] * len(LATENCY_COLUMNS), None, None) is None


async def test_history_answers_only_the_targets_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    await write_history(path, HERE, ["a", "b", "c"], since=NOW - DAY, until=NOW,
                        outages=[Past("b", NOW - 3600, NOW - 1800)])
    async with SqliteStore(path) as store:
        found = await store.history(HERE, NOW, ["b", "c"])
        assert set(found) == {"b", "c"} and len(found["b"].outages) == 1
        assert (await store.history("elsewhere", NOW, ["b"]))["b"].outages == ()
        assert set(await store.history(HERE, NOW)) == {"a", "b", "c"}


async def test_the_last_day_is_known_only_while_the_monitor_ran(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    await write_history(path, HERE, ["a"], since=NOW - 3 * DAY, until=NOW - 10 * 3600)
    await write_history(path, HERE, ["a"], since=NOW - 6 * 3600, until=NOW)  # a restart
    with SqliteReader(path) as reader:
        a = reader.history(HERE, NOW)["a"]
    assert a.known_day == ((NOW - DAY, NOW - 10 * 3600), (NOW - 6 * 3600, NOW))
    assert a.uptime["24h"] == 1.0  # the gap is unknown, not down
    assert a.days[-1].known_seconds == pytest.approx(NOW - TODAY - 4 * 3600)
