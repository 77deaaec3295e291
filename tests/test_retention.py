"""Retention runs in the daemon: over simulated days (an injected clock), the history keeps
only what `store.retention` says, so the file stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from servers import HttpServer

from monitor.app import Monitor
from monitor.config import load_config
from monitor.model import ProbeResult
from monitor.store import open_store

TARGETS = ("a", "b", "c")
HOUR = 3600.0
DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counts(path: Path) -> tuple[int, int, float, float]:
    """Minute rows, hour rows, oldest minute bucket, oldest hour bucket."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        minutes, oldest_minute = db.execute(
            "SELECT count(*), coalesce(min(bucket), 0) FROM rollup_minute").fetchone()
        hours, oldest_hour = db.execute(
            "SELECT count(*), coalesce(min(bucket), 0) FROM rollup_hour").fetchone()
    return minutes, hours, oldest_minute, oldest_hour


async def test_the_daemon_prunes_history_and_the_file_stays_bounded(tmp_path: Path) -> None:
    async with HttpServer() as site:
        db = tmp_path / "history.db"
        config_path = tmp_path / "monitor.yaml"
        config_path.write_text(f"""\
location: lab
store:
  path: "{db}"
  retention: {{minutes: 1h, hours: 1d}}
targets:
  - {{name: site, url: "{site.url("/ok")}", interval: 1h}}
""")
        config = load_config(str(config_path))
        store = open_store(config.store)
        await store.open()
        clock = Clock(time.time())
        monitor = Monitor(config, store, clock=clock, prune_interval=0.05)
        await monitor.start()
        pages = []
        try:
            for _ in range(4 * 4):  # four simulated days, a quarter of a day at a time
                for _ in range(360):  # one result per target and minute, as probes give
                    for target in TARGETS:
                        store.record_result("lab", ProbeResult(target, clock.now, 0.05, True))
                    clock.now += 60
                assert await store.flush()
                # The daemon's retention loop catches up (no event to await: poll the file).
                async with asyncio.timeout(30):
                    while True:
                        minutes, hours, oldest_minute, oldest_hour = counts(db)
                        if (oldest_minute >= clock.now - HOUR - 60
                                and oldest_hour >= clock.now - DAY - HOUR):
                            break
                        await asyncio.sleep(0.05)
                # The site's one real probe adds a bucket at the real start time, also
                # pruned once old: a few rows beyond the targets' at most.
                assert minutes <= len(TARGETS) * 61 + 2, minutes
                assert hours <= len(TARGETS) * 26 + 2, hours
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    (used,) = conn.execute("SELECT page_count - freelist_count FROM "
                                           "pragma_page_count(), pragma_freelist_count()"
                                           ).fetchone()
                pages.append(used)
        finally:
            await monitor.stop()
            await store.close()
    # Freed pages are reused: after the first day the live size does not grow.
    assert max(pages[4:]) <= pages[3] * 1.2, pages
