"""Probe worker processes (limits.probe_workers): probes run in children of `monitor run`,
results come back to the one daemon's trackers, history and /metrics (docs/design.md)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from daemon import Daemon, sample
from servers import HttpServer, closed_port


def write_config(path: Path, targets: str, workers: int = 2) -> Path:
    path.write_text(f"""\
location: test-lab
store: {{path: monitor.db}}
limits: {{probe_workers: {workers}}}
defaults: {{interval: 1s, timeout: 500ms, down_after: 2}}
targets:
{targets}""")
    return path


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_the_daemon_probes_through_its_worker_processes(tmp_path: Path) -> None:
    async with HttpServer() as good, HttpServer() as bad:
        bad.status = 503
        refused = closed_port()
        config = write_config(tmp_path / "monitor.yaml", f"""\
  - {{name: good, url: "{good.url("/ok")}"}}
  - {{name: bad, url: "{bad.url("/ok")}"}}
  - {{name: refused, url: "http://127.0.0.1:{refused}/"}}
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"2 probe worker processes started")
            await daemon.wait_for_log(r"bad DOWN from test-lab since .*http: HTTP 503")
            await daemon.wait_for_log(r"refused DOWN from test-lab since .*connect")
            await daemon.wait_for_log(r"good UP from test-lab")
            text = await daemon.metrics()
            assert daemon.proc is not None
            workers = children(daemon.proc.pid)
            # Each probe is still a cold visit, from a worker, not from the daemon.
            connections = good.connections
            assert connections >= 2 and good.last_peer == "127.0.0.1"
        assert not any(alive(pid) for pid in workers)  # stopped with the daemon
    loc = {"location": "test-lab"}
    assert len(workers) == 2
    assert sample(text, "monitor_probe_success", target="good", **loc) == 1
    assert sample(text, "monitor_http_status_code", target="bad", **loc) == 503
    assert sample(text, "monitor_probes_total", target="refused", result="connect", **loc) >= 2


async def test_a_worker_that_dies_is_replaced_and_never_blamed_on_a_site(
        tmp_path: Path) -> None:
    async with HttpServer() as site:
        config = write_config(tmp_path / "monitor.yaml", f"""\
  - {{name: site, url: "{site.url("/ok")}"}}
""", workers=1)
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from test-lab")
            assert daemon.proc is not None
            (pid,) = children(daemon.proc.pid)
            os.kill(pid, signal.SIGKILL)
            await daemon.wait_for_log(r"probe worker 0 exited .*: starting it again")
            mark = len(daemon.lines)
            await daemon.wait_for_log(r"probe worker 0 started again \(pid \d+\)")
            after = sample(await daemon.metrics(), "monitor_probes_total", target="site",
                           result="ok") or 0
            # The replacement probes: ok results keep coming.
            await daemon.wait_for_metrics(lambda text: (sample(
                text, "monitor_probes_total", target="site", result="ok") or 0) >= after + 2)
            (new,) = children(daemon.proc.pid)
    assert new != pid
    said = daemon.lines[mark:]
    assert not [line for line in daemon.lines if "site DOWN" in line]  # the monitor's fault
    assert not [line for line in said if "exited" in line]  # replaced once, not looping
