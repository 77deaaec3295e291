"""Run periods within one process (the monitor offline, then back): the time between is
unknown for outages, uptime and the downtime counter alike."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from daemon import sample
from prometheus_client import generate_latest
from servers import HttpServer

from monitor.app import Monitor
from monitor.config import load_config
from monitor.model import OutageQuery, State
from monitor.store import open_store


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_time_between_run_periods_is_unknown(tmp_path: Path) -> None:
    async with HttpServer() as site:
        site.status = 503
        config_path = tmp_path / "monitor.yaml"
        config_path.write_text(f"""\
location: lab
store: {{path: "{tmp_path / 'history.db'}"}}
targets:
  - {{name: site, url: "{site.url('/ok')}", interval: 1s, timeout: 500ms, down_after: 2}}
""")
        config = load_config(str(config_path))
        store = open_store(config.store)
        await store.open()
        clock = Clock(time.time())
        monitor = Monitor(config, store, clock=clock)
        await monitor.start()

        def counter(name: str) -> float:
            value = sample(generate_latest(monitor.registry).decode(), name, target="site")
            assert value is not None
            return value

        def downtime() -> float:
            return counter("monitor_downtime_seconds_total")

        def known() -> float:
            return counter("monitor_known_seconds_total")

        try:
            async with asyncio.timeout(30):  # real probes confirm the outage
                while monitor.trackers["site"].state is not State.DOWN:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            (outage,) = await store.open_outages("lab")
            clock.now = max(clock.now, outage.started_at) + 100
            seen, seen_known = downtime(), known()
            assert seen >= 100 and seen_known >= 100

            await monitor.run_period_ended(clock.now)  # offline: nothing is known
            clock.now += 500
            assert downtime() == seen
            assert known() == seen_known
            await monitor.run_period_started(clock.now)  # back online, still down
            clock.now += 50
            assert downtime() == pytest.approx(seen + 50)
            assert known() == pytest.approx(seen_known + 50)

            ((found, times),) = await monitor.outages(OutageQuery(target="site", open=True))
            assert found.id == outage.id
            assert times.unknown == pytest.approx(500)
            assert times.known == pytest.approx(clock.now - outage.started_at - 500)
            (report,) = await store.report(outage.started_at, clock.now, location="lab")
            assert report.downtime_seconds == pytest.approx(times.known)
        finally:
            await monitor.stop()
            await store.close()
