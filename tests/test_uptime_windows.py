"""The daemon's uptime refresh (`Store.uptimes`, every window at once, with a shortcut for
targets without outages) says exactly what `Store.report` says, over a real SQLite history."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from history import Clock, probe

from monitor.model import Failure, State, Transition
from monitor.store import SqliteStore

HERE = "lab"
T0 = 1_700_000_000.0
DAY = 86_400.0


async def random_history(store: SqliteStore, clock: Clock, rng: random.Random) -> float:
    """Three run periods with gaps; targets confirmed at different times (one never), up and
    down, some outages under maintenance, one still open at the end. Returns the end."""
    names = [f"t{i}" for i in range(12)]
    now = T0
    for period in range(3):
        clock.now = now
        await store.start_run(HERE, now)
        state = dict.fromkeys(names, State.UNKNOWN)
        for _ in range(40):
            now += rng.uniform(60, 6 * 3600)
            clock.now = now
            name = rng.choice(names[:-1])  # the last target is never confirmed
            new = State.DOWN if state[name] is not State.DOWN else State.UP
            if state[name] is State.UNKNOWN:
                new = rng.choice([State.UP, State.DOWN])
            failed = probe(name, now, failure=Failure.TIMEOUT)
            tr = Transition(name, state[name], new, now,
                            failed if new is State.DOWN else probe(name, now),
                            first_failure=failed if new is State.DOWN else None,
                            failures={"timeout": 3} if new is State.DOWN else {})
            await store.apply_transition(HERE, tr, maintenance=rng.random() < 0.2)
            state[name] = new
        if period < 2:
            await store.end_run(now)
            now += rng.uniform(600, DAY)  # the monitor was stopped: unknown time
    return now + 1800


@pytest.mark.parametrize("seed", range(5))
async def test_every_window_matches_the_report(tmp_path: Path, seed: int) -> None:
    clock = Clock(T0)
    async with SqliteStore(tmp_path / "h.db", clock=clock) as store:
        now = await random_history(store, clock, random.Random(seed))
        clock.now = now
        windows = {"1h": now - 3600, "1d": now - DAY, "7d": now - 7 * DAY, "30d": now - 30 * DAY}
        got = await store.uptimes(HERE, windows, now)
        assert set(got) == set(windows)
        checked = 0
        for window, since in windows.items():
            expected = {r.target: r.uptime for r in await store.report(since, now, location=HERE)}
            assert got[window].keys() == expected.keys()
            for target, ratio in expected.items():
                assert got[window][target] == pytest.approx(ratio, abs=1e-12), (window, target)
                checked += ratio is not None and ratio < 1
        assert checked > 0  # the history had downtime in some window: not all shortcuts
