"""Run inside `unshare --net`: the icmp probe with real loss, a blackhole route, and the
socket modes (raw as root, datagram as a user in ping_group_range, neither: a clear error).
Then the daemon probing 127.0.0.1 over ICMP until every echo request is dropped.

Everything happens in this network namespace: its own lo, routes, iptables rules and
net.ipv4.ping_group_range (per namespace). Prints one JSON object. Started by
tests/test_probe_icmp.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import Daemon

from monitor.model import ProbeResult, Target
from monitor.probes import run_probe

DROP_EVERY_SECOND = ["INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-m", "statistic",
                     "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DROP"]
DROP_ALL = ["INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP"]
AS_NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
PROBE_ONCE = """
import asyncio, json, sys
from monitor.model import Target
from monitor.probes import run_probe
r = asyncio.run(run_probe(Target(name="t", url="icmp://127.0.0.1", kind="icmp", timeout=2)))
print(json.dumps({"failure": r.failure and r.failure.value, "message": r.message}))
"""


def run(*command: str) -> None:
    subprocess.run(command, check=True)


def summary(result: ProbeResult) -> dict[str, Any]:
    return {"ok": result.ok, "failure": result.failure and result.failure.value,
            "message": result.message, "loss": result.loss, "rtt": result.rtt,
            "phases": dict(result.phases), "phase": result.phase}


def icmp(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, kind="icmp", **{"timeout": 2.0, **options})


def as_nobody() -> dict[str, Any]:
    proc = subprocess.run([*AS_NOBODY, sys.executable, "-c", PROBE_ONCE], capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


async def daemon(tmp: Path) -> dict[str, Any]:
    config = tmp / "monitor.yaml"
    config.write_text("""\
location: lab
store: {path: history.db}
targets:
  - name: lo-ping
    url: icmp://127.0.0.1
    interval: 1s
    timeout: 900ms
    packets: 2
    down_after: 1
""")
    async with Daemon(config) as process:
        up = await process.wait_for_log(r"lo-ping UP from lab")
        phases_up = [line for line in (await process.metrics()).splitlines()
                     if line.startswith("monitor_probe_phase_seconds{")]
        run("iptables", "-A", *DROP_ALL)
        down = await process.wait_for_log(r"lo-ping DOWN from lab")
        status, outages = await process.get_json("/api/v1/outages?target=lo-ping")
        metrics = await process.metrics()
    return {"up": up, "down": down, "phases_up": phases_up, "status": status, "outages": outages,
            "info": [line for line in metrics.splitlines()
                     if line.startswith("monitor_target_info{")],
            "phases": [line for line in metrics.splitlines()
                       if line.startswith("monitor_probe_phase_seconds{")]}


async def main(tmp: Path) -> dict[str, Any]:
    run("ip", "link", "set", "lo", "up")
    run("ip", "route", "add", "blackhole", "203.0.113.0/24")
    out: dict[str, Any] = {}
    out["root"] = summary(await run_probe(icmp("icmp://127.0.0.1")))
    out["blackhole"] = summary(await run_probe(icmp("icmp://203.0.113.5")))
    run("iptables", "-A", *DROP_EVERY_SECOND)
    # The rule drops requests 0, 2, 4, 6... of the namespace: first 2 of 3, then 2 of 4.
    out["two_of_three"] = summary(await run_probe(icmp("icmp://127.0.0.1", packets=3)))
    out["two_of_four"] = summary(await run_probe(icmp("icmp://127.0.0.1", packets=4)))
    run("iptables", "-D", *DROP_EVERY_SECOND)
    run("sysctl", "-q", "-w", "net.ipv4.ping_group_range=1 0")  # nobody may not
    out["nobody_refused"] = as_nobody()
    run("sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647")
    out["nobody_allowed"] = as_nobody()
    out["daemon"] = await daemon(tmp)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(asyncio.run(main(Path(directory)))))
