"""The tcp probe against real servers on 127.0.0.1: accept, refuse, hang, greet, echo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, sample
from kind_servers import LineServer, Zone, refusing_port
from servers import SilentServer

from monitor.model import Failure, Target
from monitor.probes import run_probe
from monitor.probes.resolve import Resolver
from monitor.probes.tcp import probe_tcp

TESTS = Path(__file__).resolve().parent


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, kind="tcp", **{"timeout": 2.0, **options})


async def test_a_port_that_accepts_is_up_with_resolve_and_connect_phases() -> None:
    async with LineServer("silent") as server:
        result = await run_probe(target(f"tcp://127.0.0.1:{server.port}"))
    assert result.ok, result.message
    assert result.failure is None and result.message == ""
    assert server.connections == 1
    assert {"resolve", "connect"} <= set(result.phases)
    assert result.duration == sum(result.phases.values())


async def test_a_refused_port_is_connect_in_the_connect_phase() -> None:
    sock, port = refusing_port()
    with sock:
        result = await run_probe(target(f"tcp://127.0.0.1:{port}"))
    assert (result.ok, result.failure, result.phase) == (False, Failure.CONNECT, "connect")
    assert result.message == "cannot connect: Connection refused"


async def test_a_greeting_is_matched_by_substring_and_regex() -> None:
    async with LineServer("banner", banner=b"220 mail.test ESMTP ready\r\n") as server:
        url = f"tcp://127.0.0.1:{server.port}"
        contains = await run_probe(target(url, body_contains="ESMTP"))
        regex = await run_probe(target(url, body_regex=r"^220 \S+ ESMTP"))
        wrong = await run_probe(target(url, body_contains="SSH-2.0"))
    assert contains.ok and regex.ok, (contains.message, regex.message)
    assert "processing" in contains.phases
    # The server keeps the connection open: the probe waits for more until its deadline,
    # then says what it got.
    assert (wrong.failure, wrong.phase) == (Failure.CONTENT, "processing")
    assert wrong.message == "reply does not contain 'SSH-2.0' (27 bytes, after 2s)"


async def test_body_is_sent_and_the_reply_judged() -> None:
    async with LineServer("echo") as server:
        result = await run_probe(target(f"tcp://127.0.0.1:{server.port}", body="PING\r\n",
                                        body_regex=r"^PING\r\n$"))
    assert result.ok, result.message
    assert bytes(server.received) == b"PING\r\n"


async def test_a_server_that_closes_without_the_reply_is_content() -> None:
    async with LineServer("close", banner=b"bye") as server:
        result = await run_probe(target(f"tcp://127.0.0.1:{server.port}", body_contains="hello"))
    assert (result.failure, result.phase) == (Failure.CONTENT, None)
    assert result.message == "reply does not contain 'hello' (3 bytes, before the server closed)"


async def test_a_server_that_never_answers_times_out_in_processing() -> None:
    async with SilentServer() as server:
        result = await run_probe(target(f"tcp://127.0.0.1:{server.port}", timeout=0.5,
                                        body_contains="220"))
    assert (result.failure, result.phase) == (Failure.TIMEOUT, "processing")
    assert result.message == "timed out after 0.5s during processing"


async def test_a_reply_is_read_up_to_max_body_only() -> None:
    async with LineServer("banner", banner=b"x" * 100_000) as server:
        result = await run_probe(target(f"tcp://127.0.0.1:{server.port}", body_contains="y",
                                        max_body_bytes=1000))
    assert result.failure is Failure.CONTENT
    assert result.message == "reply does not contain 'y' (1000 bytes, in the first 1000 bytes)"


async def test_an_unknown_name_is_dns() -> None:
    async with Zone({("known.test", "A"): ["127.0.0.1"]}) as zone:
        resolver = Resolver([("127.0.0.1", zone.port)])
        result = await probe_tcp(target("tcp://nosuch.test:25"), resolver=resolver)
    assert (result.failure, result.phase) == (Failure.DNS, "resolve")
    assert result.message == "DNS lookup failed: no such name"


async def test_a_name_is_resolved_then_connected() -> None:
    async with Zone({("svc.test", "A"): ["127.0.0.1"]}) as zone, LineServer("silent") as server:
        resolver = Resolver([("127.0.0.1", zone.port)])
        result = await probe_tcp(target(f"tcp://svc.test:{server.port}"), resolver=resolver)
    assert result.ok, result.message
    assert ("svc.test", "A") in zone.queries
    assert server.connections == 1


async def test_a_bad_url_is_an_error_result_not_an_exception() -> None:
    result = await run_probe(target("tcp://127.0.0.1"))
    assert (result.ok, result.failure) == (False, Failure.ERROR)
    # URLs never appear in messages (the sanitizer), not even the example of the form.
    assert result.message == "invalid URL: must give a port: <url>"


async def test_the_daemon_records_a_tcp_outage_with_its_cause(tmp_path: Path) -> None:
    server = LineServer("silent")
    await server.__aenter__()
    port = server.port
    config = tmp_path / "monitor.yaml"
    config.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: db
    url: tcp://127.0.0.1:{port}
    interval: 1s
    timeout: 900ms
    down_after: 1
""")
    try:
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"db UP from lab")
            metrics = await daemon.metrics()
            await server.__aexit__(None, None, None)  # the port now refuses connections
            down = await daemon.wait_for_log(r"db DOWN from lab")
            status, body = await daemon.get_json("/api/v1/outages?target=db")
    finally:
        await server.__aexit__(None, None, None)
    assert "connect: cannot connect: Connection refused" in down
    assert status == 200
    (outage,) = body["outages"]  # type: ignore[index]
    assert (outage["cause"], outage["message"]) == ("connect", "cannot connect: Connection refused")
    assert sample(metrics, "monitor_target_info", target="db", kind="tcp") == 1
    assert (sample(metrics, "monitor_probe_phase_seconds", target="db", phase="connect")
            or 0) > 0


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("iptables") is None
                    or os.geteuid() != 0, reason="needs root, unshare and iptables")
def test_a_port_that_drops_syns_times_out_in_connect() -> None:
    proc = subprocess.run(["unshare", "--net", sys.executable, str(TESTS / "netns_tcp.py")],
                          capture_output=True, text=True, timeout=60, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for kind in ("tcp", "tls"):
        assert out[kind] == {"failure": "timeout", "phase": "connect",
                             "message": "timed out after 0.5s during connect"}
