"""Through the daemon: the open outage's record (start, cause, first error) reaches /metrics,
also after a restart, and the known-time counter gives the record's uptime."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path

from daemon import Daemon, sample
from servers import HttpServer


def write_config(path: Path, url: str) -> Path:
    path.write_text(f"""\
location: lab
store: {{path: monitor.db}}
defaults: {{interval: 1s, timeout: 500ms, down_after: 3}}
targets:
  - name: site
    url: {url}
""")
    return path


async def open_outages(daemon: Daemon) -> list[dict[str, object]]:
    """The open outages of the API once the store has written them (polled, at most 10 s)."""
    for _ in range(100):
        _, body = await daemon.get_json("/api/v1/outages?open=true")
        if found := body["outages"]:  # type: ignore[index]
            return found  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("no open outage in the API")


async def metrics_once_up_is(daemon: Daemon, value: float) -> str:
    """/metrics once monitor_target_up shows the transition just logged (the log line comes
    before the store call; the metrics change with the record). Polled, at most 10 s."""
    for _ in range(100):
        text = await daemon.metrics()
        if sample(text, "monitor_target_up", target="site") == value:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"monitor_target_up never became {value}")


def first_error(text: str) -> str | None:
    found = re.search(r'^monitor_outage_info\{.*first_error="([^"]*)".*\} 1\.0$', text, re.M)
    return found.group(1) if found else None


async def test_open_outage_series_follow_the_record_across_a_restart(tmp_path: Path) -> None:
    async with HttpServer() as web:
        config = write_config(tmp_path / "monitor.yaml", web.url("/ok"))
        labels = {"target": "site", "location": "lab"}
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from lab since")
            web.status = 503
            await daemon.wait_for_log(r"site DOWN from lab since")
            text = await metrics_once_up_is(daemon, 0)
            (record,) = await open_outages(daemon)
        recorded = datetime.fromisoformat(str(record["started_at"])).timestamp()
        since = sample(text, "monitor_outage_open_since_timestamp_seconds", cause="http",
                       **labels)
        # The first failing probe, two probes before the confirmation; the API says seconds.
        assert since is not None and recorded <= since < recorded + 1
        assert first_error(text) == record["message"] and "503" in str(record["message"])
        # The state's own start is the outage's: "down since" in the dashboards' now table.
        assert sample(text, "monitor_target_state_since_timestamp_seconds", **labels) == since
        assert sample(text, "monitor_target_up", **labels) == 0
        downtime = sample(text, "monitor_downtime_seconds_total", **labels)
        known = sample(text, "monitor_known_seconds_total", **labels)
        assert downtime is not None and known is not None and 1.5 < downtime < known

        # Restarted while the outage is open: the series is back before any new probe
        # could confirm anything, with the recorded start from before the restart.
        async with Daemon(config) as daemon:
            text = await daemon.metrics()
            assert sample(text, "monitor_outage_open_since_timestamp_seconds", cause="http",
                          **labels) == since
            assert first_error(text) == record["message"]
            # Known time and downtime count this run only: the gap is unknown.
            restarted_known = sample(text, "monitor_known_seconds_total", **labels)
            assert restarted_known is not None and restarted_known < 1
            web.status = 200
            await daemon.wait_for_log(r"site UP from lab since")
            text = await metrics_once_up_is(daemon, 1)
        assert "monitor_outage_open_since_timestamp_seconds{" not in text
        assert "monitor_outage_info{" not in text
