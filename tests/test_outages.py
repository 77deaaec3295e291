"""Outage periods end to end: the daemon as a subprocess, a local target the test switches."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from daemon import Daemon, sample, until
from servers import HttpServer

INTERVAL = 1.0
SLACK = 0.5  # scheduling and probe time on a busy 2-core machine


def config_for(tmp: Path, url: str, down_after: int = 2, name: str = "site") -> Path:
    path = tmp / "monitor.yaml"
    path.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: {name}
    url: {url}
    interval: 1s
    timeout: 500ms
    down_after: {down_after}
""")
    return path


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def cli(*args: str) -> str:
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "monitor", *args], capture_output=True,
        text=True, timeout=30, check=True)
    return out.stdout


async def outages(daemon: Daemon, query: str = "") -> list[dict[str, object]]:
    status, body = await daemon.get_json(f"/api/v1/outages{query}")
    assert status == 200, body
    return body["outages"]  # type: ignore[index, no-any-return]


async def test_a_503_period_becomes_exactly_one_outage(tmp_path: Path) -> None:
    async with HttpServer() as web_server:
        config = config_for(tmp_path, web_server.url("/ok"))
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from lab")
            mark = len(daemon.lines)
            failed_at = time.time()
            web_server.status = 503
            await daemon.wait_for_log(r"site DOWN from lab since .*http: HTTP 503")
            # Let the outage last a known while, as the daemon counts it: the counter
            # grows while the site is down (it never would if it only moved on recovery).
            await daemon.wait_for_metrics(lambda t: (sample(
                t, "monitor_downtime_seconds_total", target="site") or 0) >= 1.5)
            recovered_at = time.time()
            web_server.status = 200
            await daemon.wait_for_log(r"site UP from lab since", after=mark)
            found = await outages(daemon)
            text = await daemon.metrics()
            page = await daemon.get_text("/")
    assert len(found) == 1, found
    assert "<h1>Status from lab</h1>" in page and "Outages in the last 30 days" in page
    assert "HTTP 503, expected 200-399" in page
    outage = found[0]
    assert outage["cause"] == "http"
    assert outage["message"] == "HTTP 503, expected 200-399"
    assert outage["target"] == "site" and outage["location"] == "lab"
    started, ended = ts(str(outage["started_at"])), ts(str(outage["ended_at"]))
    # RFC 3339 has whole seconds: allow one second of rounding on top of one interval.
    assert failed_at - 1 <= started <= failed_at + INTERVAL + SLACK + 1
    assert recovered_at - 1 <= ended <= recovered_at + INTERVAL + SLACK + 1
    assert outage["failed_probes"] >= 2  # type: ignore[operator]
    assert sample(text, "monitor_outages_total", target="site") == 1
    downtime = sample(text, "monitor_downtime_seconds_total", target="site")
    assert downtime is not None and 1.0 <= downtime <= recovered_at - failed_at + 3

    # The CLI reads the same history from the file, daemon stopped.
    db = str(tmp_path / "history.db")
    listed = await cli("outages", "--db", db, "--format", "json")
    assert [o["id"] for o in json.loads(listed)] == [outage["id"]]
    (row,) = json.loads(await cli("report", "--db", db, "--format", "json"))
    assert row["target"] == "site" and row["outages"] == 1
    assert 0 < row["uptime_percent"] < 100


async def test_one_failure_in_four_never_becomes_an_outage(tmp_path: Path) -> None:
    seen = 0
    twelve = asyncio.Event()

    async def flaky(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        if seen >= 12:
            twelve.set()
        return web.Response(status=503 if seen % 4 == 0 else 200)

    app = web.Application()
    app.router.add_get("/", flaky)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = config_for(tmp_path, f"http://127.0.0.1:{port}/", down_after=3)
        async with Daemon(config) as daemon:
            await asyncio.wait_for(twelve.wait(), 30)
            text = await daemon.metrics()
            found = await outages(daemon)
    finally:
        await runner.cleanup()
    assert found == []
    assert "DOWN" not in daemon.log()
    assert sample(text, "monitor_probes_total", target="site", result="http") >= 2
    assert sample(text, "monitor_target_up", target="site") == 1


async def test_an_outage_open_at_sigterm_is_still_one_outage_after_restart(
        tmp_path: Path) -> None:
    async with HttpServer() as web_server:
        config = config_for(tmp_path, web_server.url("/ok"))
        web_server.status = 503
        async with Daemon(config) as daemon:
            # Logged once the store has it: the id in the line is the stored outage's.
            line = await daemon.wait_for_log(r"site DOWN from lab since .* \(outage \d+\)")
            (before,) = await outages(daemon, "?open=true")
            assert f"(outage {before['id']})" in line
            confirmed = before["failed_probes"]

            # Its counts follow the probes while it is open (as monitor_probes_total does).
            async def more_failures() -> dict[str, Any] | None:
                (o,) = await outages(daemon, "?open=true")
                return o if o["failed_probes"] > confirmed + 1 else None

            grown = await until(more_failures)
            assert grown["counts"] == {"http": grown["failed_probes"]}
        stopped = time.time()
        # The scenario, not a synchronisation: 2 s in which no monitor runs (unknown time).
        await asyncio.sleep(2)
        async with Daemon(config) as daemon:
            restarted = time.time()
            # Resumed down: the same outage; its duration counts only the time it was seen.
            (still,) = await outages(daemon, "?open=true")
            assert still["id"] == before["id"]
            assert still["failed_probes"] >= grown["failed_probes"]
            assert still["unknown_seconds"] >= restarted - stopped - 1
            age = time.time() - ts(str(still["started_at"]))
            assert still["duration_seconds"] <= age - still["unknown_seconds"] + 1
            # The downtime counter starts with this run: no jump by the outage's age.
            downtime = sample(await daemon.metrics(), "monitor_downtime_seconds_total",
                              target="site")
            assert downtime is not None and downtime <= time.time() - restarted + 0.5
            page = await daemon.get_text("/")
            assert "unknown)" in page  # e.g. "4s (+2s unknown)"
            mark = len(daemon.lines)
            web_server.status = 200
            await daemon.wait_for_log(rf"site UP from lab since .* \(outage {before['id']}\)",
                                      after=mark)
            found = await outages(daemon)
            assert "site DOWN" not in "\n".join(daemon.lines[mark:])
    assert len(found) == 1
    assert found[0]["id"] == before["id"] and found[0]["ended_at"] is not None
    assert found[0]["unknown_seconds"] == still["unknown_seconds"]
    listed = json.loads(await cli("outages", "--db", str(tmp_path / "history.db"),
                                  "--format", "json"))
    assert listed[0]["duration_seconds"] == found[0]["duration_seconds"]
    assert listed[0]["unknown_seconds"] == found[0]["unknown_seconds"]
    table = await cli("outages", "--db", str(tmp_path / "history.db"))
    assert "unknown)" in table


async def test_a_locked_database_does_not_stop_probing_or_invent_outages(
        tmp_path: Path) -> None:
    async with HttpServer() as web_server:
        config = config_for(tmp_path, web_server.url("/ok"))
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from lab")
            blocker = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
            try:
                blocker.execute("BEGIN EXCLUSIVE")
                await daemon.wait_for_log(r"locked")  # logged once, then counted
                before = sample(await daemon.metrics(), "monitor_probes_total",
                                target="site", result="ok")
                # Probing goes on while the store cannot write: a failure is still seen.
                mark = len(daemon.lines)
                web_server.status = 503
                await daemon.wait_for_log(r"site DOWN from lab", after=mark)
                text = await daemon.metrics()
                assert sample(text, "monitor_probes_total", target="site",
                              result="ok") >= (before or 0)
                assert sample(text, "monitor_store_errors_total", kind="locked") >= 1
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            web_server.status = 200
            mark = len(daemon.lines)
            await daemon.wait_for_log(r"site UP from lab since", after=mark)
            await daemon.stop(signal.SIGTERM)
    # Once the lock is gone everything pending is written: exactly the one real outage.
    with sqlite3.connect(tmp_path / "history.db") as db:
        rows = db.execute("SELECT cause, ended_at IS NOT NULL FROM outages").fetchall()
    assert rows == [("http", 1)]


async def test_bad_outage_queries_get_400_with_a_message(tmp_path: Path) -> None:
    async with HttpServer() as web_server, \
            Daemon(config_for(tmp_path, web_server.url("/ok"))) as daemon:
        for query, needle in (("?since=yesterday", "not a time"),
                              ("?open=maybe", "open must be true or false"),
                              ("?colour=red", "unknown parameter 'colour'"),
                              ("?since=1d&until=2d", "since must not be after until")):
            status, body = await daemon.get_json(f"/api/v1/outages{query}")
            assert status == 400, (query, body)
            assert needle in body["error"], (query, body)  # type: ignore[index]
        status, body = await daemon.get_json(
            "/api/v1/outages?since=2022-02-24T00:00:00Z&open=false&target=site")
        assert status == 200 and body == {"outages": []}
