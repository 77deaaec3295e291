"""The daemon's own HTTP server cannot starve the probes of descriptors.

The daemon runs with a low descriptor limit (prlimit 256:256, so it cannot raise it) and
the test opens many idle connections to its port, as in issue 11 (1,100 against 1,024).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
from pathlib import Path

import pytest
from daemon import Daemon, sample, until
from servers import HttpServer

from monitor.limits import AcceptErrors

LIMIT = 256
FLOOD = 600  # idle connections: more than the daemon has descriptors


def config_for(tmp: Path, url: str, header_timeout: str = "2s") -> Path:
    path = tmp / "monitor.yaml"
    path.write_text(f"""\
location: lab
store: {{path: history.db}}
limits: {{server_header_timeout: {header_timeout}}}
targets:
  - {{name: site, url: "{url}", interval: 1s, timeout: 1s, down_after: 2}}
""")
    return path


async def ok_probes(daemon: Daemon) -> float:
    return sample(await daemon.metrics(), "monitor_probes_total", target="site",
                  result="ok") or 0


async def open_idle(port: int, count: int) -> list[tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]]:
    conns = []
    for start in range(0, count, 50):  # in batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
              for _ in range(start, min(count, start + 50))), return_exceptions=True)
        conns += [c for c in batch if not isinstance(c, BaseException)]
    return conns


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
async def test_idle_connections_to_the_daemon_never_make_a_healthy_site_down(
        tmp_path: Path) -> None:
    async with HttpServer() as site:
        daemon = Daemon(config_for(tmp_path, site.url("/ok")),
                        wrap=("prlimit", f"--nofile={LIMIT}:{LIMIT}"))
        async with daemon:
            limits = await daemon.wait_for_log(r"limits: \d+ descriptors")
            await daemon.wait_for_log(r"site UP from lab")
            before = await ok_probes(daemon)
            conns = await open_idle(daemon.port, FLOOD)
            try:
                # /metrics answers at once: a new connection replaces an idle one.
                during = await ok_probes(daemon)

                async def three_more() -> int | None:
                    n = await ok_probes(daemon)
                    return n if n >= during + 3 else None

                after = await until(three_more, what="three more ok probes")
                # Every idle connection is closed by the daemon (evicted or timed out).
                async with asyncio.timeout(30):
                    tails = await asyncio.gather(*(r.read() for r, _ in conns))
                status, targets = await daemon.get_json("/api/v1/targets")
            finally:
                for _, writer in conns:
                    writer.close()
    log = daemon.log()
    assert len(conns) >= FLOOD - 50  # the flood really happened
    assert after >= during + 3 > before, log
    assert " DOWN " not in log and "Too many open files" not in log
    assert all(tail in (b"", ) or tail.startswith(b"HTTP/1.1 503") for tail in tails)
    assert status == 200 and targets["targets"][0]["state"] == "up"  # type: ignore[index]
    assert len(daemon.lines) < 30, log  # no line per connection
    assert f"limits: {LIMIT} descriptors" in limits and "32 server connections" in limits


async def test_half_sent_and_idle_requests_are_closed_after_the_header_timeout(
        tmp_path: Path) -> None:
    async with HttpServer() as site, Daemon(config_for(tmp_path, site.url("/ok"),
                                                       header_timeout="1s")) as daemon:
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", daemon.port)
        half_reader, half = await asyncio.open_connection("127.0.0.1", daemon.port)
        half.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await half.drain()
        try:
            async with asyncio.timeout(20):  # the default would be an hour
                assert await idle_reader.read() == b""
                assert await half_reader.read() == b""
        finally:
            for writer in (idle, half):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        assert "monitor_probes_total" in await daemon.metrics()  # whole requests still work


async def test_accept_errors_are_counted_not_logged_one_by_one(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    handler = AcceptErrors()
    error = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):  # what asyncio's accept loop reports while out of descriptors
            handler(loop, {"message": "socket.accept() out of system resource",
                           "exception": error})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["server: 1 connections not accepted: out of descriptors "
                     "([Errno 24] Too many open files)"]
    assert handler.total == 1000


MALFORMED = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"BLAH\x00\x01 / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: \x00\r\n\r\n",
)


async def test_malformed_requests_get_400_and_one_log_line_not_a_traceback_each(
        tmp_path: Path) -> None:
    async with HttpServer() as site, Daemon(config_for(tmp_path, site.url("/ok"))) as daemon:
        await daemon.wait_for_log(r"site UP from lab")
        before = len(daemon.lines)
        for payload in MALFORMED * 20:
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            writer.write(payload)
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.0 400")
            writer.close()
            await writer.wait_closed()
        await daemon.wait_for_log(r"server: 1 malformed requests refused with 400", after=before)
        assert await daemon.get_text("/healthz") == "ok\n"  # the daemon still answers
    said = daemon.lines[before:]
    assert not [line for line in said if "Traceback" in line or "aiohttp.server" in line]
    assert len([line for line in said if "malformed requests" in line]) == 1  # not 60
