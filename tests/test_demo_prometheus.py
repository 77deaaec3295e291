"""Integration proof of the dashboards and rules: `monitor demo` scraped by a real Prometheus.

Starts `python -m monitor demo` and Debian's `prometheus` on loopback, with the shipped
recording rules and the shipped alerting rules (the `for:` of the two alerts it watches
shortened, see `alert_rules_copy`), waits until the demo's outages have happened, then runs
every PromQL expression of every dashboard panel through Prometheus's HTTP API and checks
that the "down from every location" and "unreachable from some locations" alerts fire for
the right targets. About a minute. Without `prometheus` it skips, except in CI (CI set):
then it fails.

Imports the standard library, aiohttp, PyYAML, pytest and the test helpers; the monitor
runs in a subprocess, so nothing from the monitor package.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import promql
import pytest
import yaml

pytestmark = pytest.mark.integration

CYCLE = 60  # seconds: every scenario window of the demo passes within the first loop
WAIT_LIMIT = 120.0  # seconds to wait for the outages
LOCATIONS = ("demo-a", "demo-b")  # demo-b probes from 127.0.0.2, which geo refuses
OUTAGE_TARGETS = frozenset({"rt", "duma", "mil", "kremlin"})  # down from every location
# The alerts this test expects to fire; their `for` is shortened to SHORT_FOR (see
# alert_rules_copy): longer than the skew between two locations confirming the same state
# (one probe interval, 2 s, plus one scrape, 1 s), shorter than the demo's outages (> 10 s).
WATCHED_ALERTS = ("TargetDownEverywhere", "TargetBlockedSomewhere")
SHORT_FOR = "5s"


# --- processes ------------------------------------------------------------------------------


class Process:
    """A subprocess whose stderr and stdout lines are kept and can be awaited."""

    def __init__(self, name: str, argv: list[str], cwd: Path) -> None:
        self.name, self.argv, self.cwd = name, argv, cwd
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:  # read to the end, so the pipe never fills
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()
        async with self._changed:
            self.lines.append("<exit>")
            self._changed.notify_all()

    async def wait_for_log(self, pattern: str, *, limit: float = 30) -> str:
        """The first line matching `pattern`; fails if the process exits first."""
        regex = re.compile(pattern)

        def found() -> str | None:
            for line in self.lines:
                if regex.search(line):
                    return line
                if line == "<exit>":
                    raise AssertionError(f"{self.name} exited before {pattern!r}:\n{self.log()}")
            return None

        try:
            async with asyncio.timeout(limit), self._changed:
                while (line := found()) is None:
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {pattern!r} within {limit}s:\n{self.log()}") from None
        return line

    def log(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    async def stop(self, limit: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(limit):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader


def require_prometheus() -> str:
    """Path of prometheus. Skips if it is missing, unless in CI (CI set): then fails."""
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is required in CI: install Debian's `prometheus` package")
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    return path


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As servers do: connections in TIME-WAIT do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """A port P with P .. P + count - 1 free: the demo's two monitors listen on P and P + 1.

    Picked below Linux's ephemeral range (32768 up), so that outgoing connections of
    other tests on the machine (probes, benchmarks) cannot be holding them.
    """
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if all(port_is_free(p) for p in range(port, port + count)):
            return port
    raise AssertionError(f"no {count} consecutive free ports on 127.0.0.1")


def alert_rules_copy(tmp_path: Path) -> Path:
    """The shipped alerting rules, with SHORT_FOR as the `for` of WATCHED_ALERTS that have one.

    The shipped `for`s (minutes) would outlast the test. Only those change: expressions,
    labels, annotations and the other alerts are the shipped ones, and the waiting itself is
    covered by the promtool unit tests (alerts.test.yml).
    """
    rules = yaml.safe_load((promql.PROMETHEUS_DIR / "alerts.rules.yml").read_text("utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in WATCHED_ALERTS and "for" in rule:
                rule["for"] = SHORT_FOR
    path = tmp_path / "alerts.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def prometheus_config(tmp_path: Path, monitor_ports: tuple[int, int]) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(promql.PROMETHEUS_DIR / "recording.rules.yml"),
                       str(alert_rules_copy(tmp_path))],
        "scrape_configs": [{
            "job_name": "monitor",  # the job name the shipped alerts expect
            "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in monitor_ports]}],
        }],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# --- Prometheus's HTTP API ------------------------------------------------------------------


class PrometheusAPI:
    def __init__(self, session: aiohttp.ClientSession, port: int, process: Process) -> None:
        self.session, self.base = session, f"http://127.0.0.1:{port}/api/v1"
        self.process = process

    async def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            async with self.session.get(f"{self.base}/{path}", params=params) as r:
                body = await r.json()
        except aiohttp.ClientError as exc:
            raise AssertionError(f"{exc}\n--- prometheus log:\n{self.process.log()}") from None
        assert body["status"] == "success", f"{params['query']!r}: {body}"
        return body["data"]["result"]

    async def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        return await self._get("query", {"query": expr, "time": f"{at:.3f}"})

    async def query_range(self, expr: str, start: float, end: float,
                          step: float) -> list[dict[str, Any]]:
        return await self._get("query_range", {"query": expr, "start": f"{start:.3f}",
                                               "end": f"{end:.3f}", "step": f"{step}"})

    async def values(self, expr: str, at: float, *labels: str) -> dict[tuple[str, ...], float]:
        """An instant vector as {label values: value}."""
        return {tuple(s["metric"].get(k, "") for k in labels): float(s["value"][1])
                for s in await self.query(expr, at)}


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one finite value, instant or range: something Grafana would draw."""
    points = [s["value"] for s in result if "value" in s]
    points += [p for s in result for p in s.get("values", [])]
    return any(math.isfinite(float(value)) for _, value in points)


@dataclass
class Seen:
    """What Prometheus shows at one moment `at`, and over the run up to it."""

    at: float
    min_up: dict[tuple[str, ...], float]  # (target, location) -> lowest monitor_target_up
    fired: set[tuple[str, ...]]  # (alertname, target, location) that fired during the run
    firing: set[tuple[str, ...]]  # the same, firing at `at`
    down_everywhere: dict[tuple[str, ...], float]  # target -> locations down, at `at`
    min_scraped: dict[tuple[str, ...], float]  # instance -> lowest up{job="monitor"}

    def missing(self) -> list[str]:
        """What has not happened yet; empty when the outages are all there."""
        out = [f"{t} down from {loc}" for t in sorted(OUTAGE_TARGETS) for loc in LOCATIONS
               if self.min_up.get((t, loc)) != 0]
        if self.min_up.get(("geo", "demo-b")) != 0:
            out.append("geo down from demo-b")
        if ("TargetBlockedSomewhere", "geo", "demo-b") not in self.firing:
            out.append("TargetBlockedSomewhere firing for geo at demo-b")
        if not self.down_everywhere:
            out.append("a target down from every location now")
        if not any(a == "TargetDownEverywhere" for a, _, _ in self.firing):
            out.append("TargetDownEverywhere firing now")
        return out


async def look(api: PrometheusAPI) -> Seen:
    # A moment a little in the past: every scrape and rule evaluation up to it has been
    # written, so querying it again later gives the same answers.
    at = time.time() - 3
    alert_labels = ("alertname", "target", "location")
    return Seen(
        at=at,
        min_up=await api.values("min_over_time(monitor_target_up[10m])", at,
                                "target", "location"),
        fired=set(await api.values('max_over_time(ALERTS{alertstate="firing"}[10m])', at,
                                   *alert_labels)),
        firing=set(await api.values('ALERTS{alertstate="firing"}', at, *alert_labels)),
        down_everywhere=await api.values("monitor:target_up:down_everywhere", at, "target"),
        min_scraped=await api.values('min_over_time(up{job="monitor"}[10m])', at, "instance"),
    )


async def wait_for_outages(api: PrometheusAPI, demo: Process, prometheus: Process) -> Seen:
    """Poll once a second, at most WAIT_LIMIT seconds, until Seen.missing() is empty."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        seen = await look(api)
        if not (missing := seen.missing()):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {WAIT_LIMIT:.0f}s still waiting for: {', '.join(missing)}\n"
                f"seen: {seen}\n--- demo log:\n{demo.log()}\n"
                f"--- prometheus log:\n{prometheus.log(20)}")
        await asyncio.sleep(1)


# --- the test -------------------------------------------------------------------------------


async def test_dashboards_and_alerts_on_the_demo(tmp_path: Path) -> None:
    prometheus_bin = require_prometheus()
    port = free_ports(2)
    (tmp_path / "demo").mkdir()
    demo = Process("monitor demo", [
        sys.executable, "-m", "monitor", "demo", "--port", str(port), "--cycle", f"{CYCLE}s",
        "--data", str(tmp_path / "demo")], cwd=promql.ROOT)
    prometheus: Process | None = None
    try:
        await demo.start()
        await demo.wait_for_log(r"demo: targets on")
        for location in LOCATIONS:
            await demo.wait_for_log(rf"started: location={location},")
        prometheus_port = free_ports(1)
        prometheus = Process("prometheus", [
            prometheus_bin, f"--config.file={prometheus_config(tmp_path, (port, port + 1))}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}"], cwd=tmp_path)
        await prometheus.start()
        await prometheus.wait_for_log(r"Server is ready to receive web requests")

        async with aiohttp.ClientSession() as session:
            api = PrometheusAPI(session, prometheus_port, prometheus)
            seen = await wait_for_outages(api, demo, prometheus)

            # Every panel and annotation query, instant and over the last two minutes.
            empty = []
            for uid, title, expr in promql.dashboard_queries():
                if not has_data(await api.query(expr, seen.at)):
                    empty.append(f"{uid} / {title} (instant): {expr}")
                if not has_data(await api.query_range(expr, seen.at - 120, seen.at, 2)):
                    empty.append(f"{uid} / {title} (range): {expr}")
            assert not empty, "queries without data:\n" + "\n".join(empty)

        # The demo played its parts: outages from everywhere, geo blocked from demo-b only,
        # gazprom healthy throughout.
        assert seen.min_up[("geo", "demo-a")] == 1
        assert seen.min_up[("gazprom", "demo-a")] == seen.min_up[("gazprom", "demo-b")] == 1

        # Down from every location: firing now for an outage target, never for the others.
        down_now = {t for a, t, _ in seen.firing if a == "TargetDownEverywhere"}
        assert down_now and down_now <= OUTAGE_TARGETS, seen.firing
        ever_down = {t for a, t, _ in seen.fired if a == "TargetDownEverywhere"}
        assert ever_down <= OUTAGE_TARGETS, seen.fired

        # Unreachable from some locations: geo from demo-b, never gazprom, never from demo-a.
        blocked_now = {(t, loc) for a, t, loc in seen.firing if a == "TargetBlockedSomewhere"}
        assert ("geo", "demo-b") in blocked_now
        ever_blocked = {(t, loc) for a, t, loc in seen.fired if a == "TargetBlockedSomewhere"}
        never = {("gazprom", "demo-a"), ("gazprom", "demo-b"), ("geo", "demo-a")}
        assert not never & ever_blocked, seen.fired

        # Both monitors were scraped all along: the alerts above judged two locations.
        assert seen.min_scraped == {(f"127.0.0.1:{p}",): 1 for p in (port, port + 1)}
    finally:
        if prometheus is not None:
            await prometheus.stop()
        await demo.stop()
