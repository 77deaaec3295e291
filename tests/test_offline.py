"""Offline detection end to end: the network goes away inside a namespace of the test's own.

The test re-runs this file under `unshare --net` (a fresh network namespace with only `lo`).
Inside, two sites listen on 127.0.0.2 and 127.0.0.3, the connectivity check on 127.0.0.9,
and the daemon and a webhook receiver on 127.0.0.1. An iptables DROP then takes the sites
and the check address away while the sites themselves keep running; later it is lifted.
The scenario prints what it saw as JSON; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from daemon import Daemon, sample
from receivers import Receiver
from servers import closed_port

from monitor.config import ConnectivityConfig
from monitor.connectivity import Change, Connectivity
from monitor.model import Failure, ProbeResult, Target

SITES = {"alpha": "127.0.0.2", "beta": "127.0.0.3"}
CHECK = "127.0.0.9"
AWAY = [*SITES.values(), CHECK]  # what the DROP takes away; 127.0.0.1 stays


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True,
                          timeout=30).stdout


def iptables(action: str) -> None:
    for address in AWAY:
        run("iptables", action, "OUTPUT", "-d", address, "-j", "DROP")


async def site(host: str) -> web.AppRunner:
    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/", fine)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, host, 8080).start()
    return runner


async def count(daemon: Daemon, result: str, at_least: int) -> str:
    """Poll /metrics (bounded) until every site has `at_least` probes of class `result`."""
    return await daemon.wait_for_metrics(
        lambda text: all((sample(text, "monitor_probes_total", target=name, result=result) or 0)
                         >= at_least for name in SITES))


async def scenario(tmp: Path) -> dict[str, Any]:
    run("ip", "link", "set", "lo", "up")
    sites = [await site(host) for host in SITES.values()]
    check = await asyncio.start_server(lambda r, w: w.close(), CHECK, 9)
    receiver = await Receiver().start()
    config = tmp / "monitor.yaml"
    targets = "\n".join(f"  - {{name: {name}, url: 'http://{host}:8080/'}}"
                        for name, host in SITES.items())
    config.write_text(f"""\
location: lab
store: {{path: history.db}}
connectivity:
  checks: ["{CHECK}:9"]
  interval: 1s
  timeout: 500ms
notifiers:
  hook: {{type: webhook, url: "{receiver.url}/hook"}}
defaults: {{interval: 1s, timeout: 1s, down_after: 2, notifiers: [hook]}}
targets:
{targets}
""")
    facts: dict[str, Any] = {}
    try:
        async with Daemon(config) as daemon:
            started = time.time()
            for name in SITES:
                await daemon.wait_for_log(rf"{name} UP from lab")
            await count(daemon, "ok", 2)
            mark = len(daemon.lines)
            iptables("-A")
            away = time.time()
            facts["offline_line"] = await daemon.wait_for_log(r"monitor OFFLINE", after=mark)
            facts["offline_metrics"] = await count(daemon, "local", 3)
            facts["offline_page"] = await daemon.get_text("/")
            facts["offline_api"] = (await daemon.get_json("/api/v1/targets"))[1]
            iptables("-D")
            back = time.time()
            facts["online_line"] = await daemon.wait_for_log(r"monitor back ONLINE", after=mark)
            ok = sample(facts["offline_metrics"], "monitor_probes_total", target="alpha",
                        result="ok") or 0
            facts["online_metrics"] = await count(daemon, "ok", int(ok) + 2)
            facts["outages"] = (await daemon.get_json("/api/v1/outages"))[1]
            facts["online_api"] = (await daemon.get_json("/api/v1/targets"))[1]
        stopped = time.time()
        facts["log"] = daemon.log()
        facts["wall"] = {"started": started, "away": away, "back": back, "stopped": stopped}
        facts["report"] = json.loads(run(
            sys.executable, "-m", "monitor", "report", "--db", str(tmp / "history.db"),
            "--since", str(started - 60), "--format", "json"))
        facts["notifications"] = [r.text for r in receiver.received]
    finally:
        await receiver.close()
        check.close()
        for runner in sites:
            await runner.cleanup()
    return facts


def unshare_works() -> bool:
    if not (shutil.which("unshare") and shutil.which("iptables") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


# --- the rule, in process, against real sockets on 127.0.0.1 ------------------------------


def result(name: str, ok: bool, failure: Failure | None = None) -> ProbeResult:
    return ProbeResult(target=name, started_at=time.time(), duration=0.1, ok=ok,
                       failure=failure, message="" if ok else "no route")


async def test_checks_decide_and_a_success_brings_the_monitor_back() -> None:
    changes: list[Change] = []

    async def record(change: Change) -> None:
        changes.append(change)

    port = closed_port()
    settings = ConnectivityConfig(checks=(f"127.0.0.1:{port}",), interval=60, timeout=1)
    conn = Connectivity(settings, on_change=record)
    site = Target(name="a", url="http://127.0.0.1:9/")
    try:
        judged = await conn.judge(result("a", False, Failure.CONNECT), site)
        assert judged.failure is Failure.LOCAL
        assert judged.message == "monitor offline: connect: no route"
        assert [c.offline for c in changes] == [True]
        assert changes[0].evidence.startswith(f"no connectivity check answered: 127.0.0.1:{port}:")
        # An http failure, or a success, while offline is unknown too.
        assert (await conn.judge(result("a", False, Failure.HTTP), site)).unknown
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        try:
            assert (await conn.judge(result("a", True), site)).unknown  # and checks at once
            assert conn._round is not None
            await conn._round
            assert [c.offline for c in changes] == [True, False]
            assert changes[1].evidence == f"127.0.0.1:{port} answered"
            # Online, with a check that answers: a failure is the site's.
            judged = await conn.judge(result("a", False, Failure.TIMEOUT), site)
            assert judged.failure is Failure.TIMEOUT and len(changes) == 2
        finally:
            listener.close()
    finally:
        await conn.stop()


async def test_without_checks_most_hosts_failing_at_once_means_offline() -> None:
    changes: list[Change] = []

    async def record(change: Change) -> None:
        changes.append(change)

    conn = Connectivity(ConnectivityConfig(failing_share=0.75, min_hosts=3), on_change=record)
    sites = [Target(name=f"s{i}", url=f"http://host{i}.example/") for i in range(4)]
    for target in sites:
        assert not (await conn.judge(result(target.name, True), target)).unknown
    # Two of four hosts failing is their own trouble; a third makes 3 of 4: offline.
    for target in sites[:2]:
        judged = await conn.judge(result(target.name, False, Failure.DNS), target)
        assert judged.failure is Failure.DNS
    judged = await conn.judge(result("s2", False, Failure.TIMEOUT), sites[2])
    assert judged.unknown and [c.offline for c in changes] == [True]
    assert changes[0].evidence == "3 of 4 hosts failing with dns, connect or timeout"
    # An http failure is no network trouble: s0 answering again brings the monitor back.
    judged = await conn.judge(result("s0", False, Failure.HTTP), sites[0])
    assert judged.failure is Failure.HTTP and [c.offline for c in changes] == [True, False]


async def test_by_default_every_site_failing_at_once_is_still_the_sites_fault() -> None:
    changes: list[Change] = []

    async def record(change: Change) -> None:
        changes.append(change)

    conn = Connectivity(ConnectivityConfig(), on_change=record)  # no checks, share off
    sites = [Target(name=f"s{i}", url=f"http://host{i}.example/") for i in range(5)]
    for target in sites:
        judged = await conn.judge(result(target.name, False, Failure.TIMEOUT), target)
        assert judged.failure is Failure.TIMEOUT
    assert changes == [] and not conn.offline


@pytest.mark.skipif(not unshare_works(), reason="needs root, unshare, ip and iptables")
async def test_the_network_going_away_is_the_monitors_fault_not_the_sites(
        tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--net", sys.executable, __file__, str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(150):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    facts = json.loads(out)
    log = facts["log"]

    # Nothing blamed on the sites: no outage, no DOWN, no notification, no timeout counted.
    assert facts["outages"] == {"outages": []}, log
    assert " DOWN " not in log
    assert facts["notifications"] == []
    for name in SITES:
        for text in (facts["offline_metrics"], facts["online_metrics"]):
            assert (sample(text, "monitor_probes_total", target=name, result="timeout")
                    or 0) == 0, log
        assert sample(facts["offline_metrics"], "monitor_probes_total", target=name,
                      result="local") >= 3
    # ... and the sites stayed up all along.
    assert {t["name"]: t["state"] for t in facts["online_api"]["targets"]} == {
        "alpha": "up", "beta": "up"}

    # The log, the metric, the page and the API say the monitor was offline, with evidence.
    assert f"no connectivity check answered: {CHECK}:9: no answer in 0.5s" in \
        facts["offline_line"]
    assert re.search(rf" offline: {CHECK}:9 answered$", facts["online_line"])
    assert sample(facts["offline_metrics"], "monitor_offline") == 1
    assert sample(facts["online_metrics"], "monitor_offline") == 0
    assert "This monitor is offline since" in facts["offline_page"]
    offline = facts["offline_api"]["offline"]
    assert offline["evidence"].startswith("no connectivity check answered")
    assert facts["online_api"]["offline"] is None
    last = {t["name"]: t["last_result"] for t in facts["offline_api"]["targets"]}
    assert last["alpha"]["failure"] == "local"
    assert last["alpha"]["message"].startswith("monitor offline: ")

    # Known time excludes the offline period: the report knows less than the wall clock.
    wall = facts["wall"]
    went = ts(offline["since"])
    came = ts(re.search(r" since (\S+Z) after ", facts["online_line"]).group(1))  # type: ignore[union-attr]
    assert wall["away"] - 1 <= went <= came <= wall["back"] + 3
    gap = came - went
    assert gap >= 2  # three local probes per site, one a second
    assert {row["target"] for row in facts["report"]} == set(SITES)
    for row in facts["report"]:
        assert row["outages"] == 0 and row["uptime_percent"] == 100
        assert row["known_seconds"] <= wall["stopped"] - wall["started"] - gap + 2, row


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(sys.argv[1])))))
