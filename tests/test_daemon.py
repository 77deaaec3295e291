"""End to end: `monitor run` as a subprocess probing local servers, scraped over HTTP."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from daemon import Daemon, sample
from servers import HttpServer, SilentServer, closed_port


def write_config(path: Path, targets: str, extra: str = "") -> Path:
    path.write_text(f"""\
location: test-lab
store: {{path: monitor.db}}
defaults: {{interval: 1s, timeout: 500ms, down_after: 2}}
{extra}
targets:
{targets}""")
    return path


async def test_daemon_probes_local_targets_and_exposes_metrics(tmp_path: Path) -> None:
    async with HttpServer() as good, HttpServer() as bad:
        bad.status = 503
        refused = closed_port()
        config = write_config(tmp_path / "monitor.yaml", f"""\
  - name: good
    url: {good.url("/ok")}
    labels: {{team: web}}
  - name: bad
    url: {bad.url("/ok")}
  - name: refused
    url: http://127.0.0.1:{refused}/
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"bad DOWN from test-lab since .*http: HTTP 503")
            await daemon.wait_for_log(r"refused DOWN from test-lab since .*connect")
            text = await daemon.metrics()
            status, body = await daemon.get_json("/api/v1/targets")
    loc = {"location": "test-lab"}
    assert sample(text, "monitor_probe_success", target="good", **loc) == 1
    assert sample(text, "monitor_probe_success", target="bad", **loc) == 0
    assert sample(text, "monitor_http_status_code", target="bad", **loc) == 503
    assert sample(text, "monitor_probes_total", target="bad", result="http", **loc) >= 2
    assert sample(text, "monitor_probes_total", target="refused", result="connect", **loc) >= 2
    assert sample(text, "monitor_target_up", target="bad", **loc) == 0
    assert sample(text, "monitor_target_up", target="good", **loc) == 1
    assert sample(text, "monitor_target_info", target="good", team="web", kind="http") == 1
    assert sample(text, "monitor_outages_total", target="bad", **loc) == 1
    for phase in ("resolve", "connect", "tls", "processing", "transfer"):
        assert sample(text, "monitor_probe_phase_seconds", target="good", phase=phase) is not None
    assert sample(text, "monitor_scheduler_lateness_seconds_count", **loc) >= 3
    assert sample(text, "monitor_event_loop_lag_seconds_count", **loc) >= 1  # watched
    assert sample(text, "monitor_config_reload_success", **loc) == 1
    assert status == 200
    states = {t["name"]: t["state"] for t in body["targets"]}  # type: ignore[index]
    assert states == {"good": "up", "bad": "down", "refused": "down"}


async def test_reload_applies_a_good_config_and_rejects_a_broken_one(tmp_path: Path) -> None:
    async with HttpServer() as web:
        url = web.url("/ok")
        config = write_config(tmp_path / "monitor.yaml", f"""\
  - name: stays
    url: {url}
  - name: leaves
    url: {url}
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"leaves UP from test-lab since")
            mark = len(daemon.lines)
            write_config(config, f"""\
  - name: stays
    url: {url}
  - name: arrives
    url: {url}
""")
            daemon.send(signal.SIGHUP)
            await daemon.wait_for_log(r"config reloaded .*\(1 added, 1 removed", after=mark)
            await daemon.wait_for_log(r"arrives UP from test-lab since", after=mark)
            text = await daemon.metrics()
            assert sample(text, "monitor_probe_success", target="arrives") == 1
            assert 'target="leaves"' not in text

            config.write_text(config.read_text().replace("interval: 1s", "interval: soon"))
            status, body = await daemon.post("/-/reload")
            assert status == 400
            assert body["ok"] is False  # type: ignore[index]
            assert any("defaults.interval: must be a duration" in e
                       for e in body["errors"])  # type: ignore[index]
            assert "config reload rejected" in daemon.log()
            text = await daemon.metrics()
            assert sample(text, "monitor_config_reload_success") == 0
            # The old config keeps running: both targets are still probed and judged.
            mark = len(daemon.lines)
            web.status = 503
            await daemon.wait_for_log(r"stays DOWN from test-lab since .*HTTP 503", after=mark)
            await daemon.wait_for_log(r"arrives DOWN from test-lab since .*HTTP 503", after=mark)


async def test_sigterm_stops_within_the_timeout_cancelling_a_probe(tmp_path: Path) -> None:
    async with SilentServer() as silent:
        config = write_config(tmp_path / "monitor.yaml", f"""\
  - name: hangs
    url: {silent.url("/", scheme="http")}
    interval: 30s
    timeout: 20s
""")
        async with Daemon(config) as daemon:
            assert silent.connected is not None
            await asyncio.wait_for(silent.connected.wait(), 35)  # the probe is in flight
            started = time.monotonic()
            code = await daemon.stop(signal.SIGTERM, limit=25)
            elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 5, f"took {elapsed:.1f}s to stop with a probe in flight"
    assert "stopped" in daemon.log()
