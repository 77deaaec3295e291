"""Integration proof of the rules, Alertmanager config and dashboards: `monitor demo` watched
by a real Prometheus and a real Alertmanager, paging a loopback webhook receiver.

Runs the SHIPPED files unchanged: prometheus.demo.yml (addresses and rule file paths
rewritten), recording.rules.yml and alerts.rules.yml as they are, and alertmanager.yml
(the webhook URL rewritten to the receiver). The demo plays one loop of CYCLE seconds:
rt, duma and mil go down and come back, kremlin goes down and stays down, geo is refused
to demo-b only. The test then checks, against the monitors' own record (their SQLite files):

- every outage recorded at both locations paged TargetDownEverywhere within 60 s of its
  recorded start (the first failing probe), with the record's start and cause in the page;
- geo paged only as TargetBlockedSomewhere, at demo-b, and never as an outage;
- stopping the demo (both monitors gone) resolves nothing: kremlin's outage and geo's
  block stay firing in Prometheus, kremlin's stays active in Alertmanager, and no
  "resolved" reaches the receiver;
- every dashboard query returns data;
- the dashboards' uptime equals `monitor report` for the same window within 0.1 pp.

About three and a half minutes, most of it waiting for TargetBlockedSomewhere's `for: 2m`.
Without prometheus or alertmanager it skips, except in CI (CI set): then it fails.

Imports the standard library, aiohttp, PyYAML, pytest and the test helpers; the monitor
runs in a subprocess, so nothing from the monitor package.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import promql
import pytest
import yaml
from receivers import Receiver

pytestmark = pytest.mark.integration

# One loop of the demo, long enough that every scenario plays once before geo's block
# has paged (2 min `for` + 30 s group_wait) and kremlin's outage (from 60 % of the loop to
# its end) is still open when the demo is stopped.
CYCLE = 240
LOCATIONS = ("demo-a", "demo-b")  # demo-b probes from 127.0.0.2, which geo refuses
OUTAGE_TARGETS = ("rt", "duma", "mil", "kremlin")  # down from every location
STILL_DOWN = "kremlin"  # down when the demo is stopped
PAGE_LIMIT = 60.0  # seconds from an outage's recorded start to its page
WAIT_LIMIT = 300.0  # seconds to wait for every page
AFTER_STOP = 25.0  # seconds to watch that nothing resolves once the demo is gone
UPTIME_TOLERANCE = 0.1  # percentage points
UPTIME_PANEL = ("monitor-overview", "Uptime over the dashboard range (as the record counts it)")


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


def require(binary: str, package: str) -> str:
    """Path of `binary`. Skips if it is missing, unless in CI (CI set): then fails."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is required in CI: install Debian's `{package}` package")
        pytest.skip(f"{binary} not installed (Debian: apt-get install {package})")
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


def shipped_prometheus_config(tmp_path: Path, monitor_ports: tuple[int, int],
                              alertmanager_port: int, prometheus_port: int) -> Path:
    """prometheus.demo.yml as shipped, with only addresses and rule file paths rewritten."""
    config = yaml.safe_load((promql.PROMETHEUS_DIR / "prometheus.demo.yml").read_text("utf-8"))
    config["rule_files"] = [str(promql.PROMETHEUS_DIR / f) for f in config["rule_files"]]
    (manager,) = config["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    manager["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["monitor"]["static_configs"] == [{"targets": ["monitor:9321", "monitor:9322"]}]
    jobs["monitor"]["static_configs"] = [
        {"targets": [f"127.0.0.1:{p}" for p in monitor_ports]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def shipped_alertmanager_config(tmp_path: Path, webhook: str) -> Path:
    """alertmanager.yml as shipped, with only the webhook's address rewritten."""
    config = yaml.safe_load((promql.PROMETHEUS_DIR / "alertmanager.yml").read_text("utf-8"))
    hooks = [hook for receiver in config["receivers"]
             for hook in receiver.get("webhook_configs", [])]
    assert hooks
    for hook in hooks:
        hook["url"] = webhook
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


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


@dataclass(frozen=True)
class Page:
    """One alert in one webhook notification from Alertmanager."""

    at: float  # wall-clock time of arrival
    status: str  # firing or resolved
    labels: dict[str, str]
    annotations: dict[str, str]


class Pages:
    """What the loopback receiver got, alert by alert."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.offset = time.time() - time.monotonic()  # Received.at is monotonic

    def all(self) -> list[Page]:
        return [Page(r.at + self.offset, alert["status"], alert["labels"],
                     alert.get("annotations", {}))
                for r in self.receiver.received for alert in r.json()["alerts"]]

    def first(self, status: str, alertname: str, **labels: str) -> Page | None:
        for page in self.all():
            if page.status == status and page.labels.get("alertname") == alertname \
                    and all(page.labels.get(k) == v for k, v in labels.items()):
                return page
        return None


@dataclass(frozen=True)
class Outage:
    target: str
    location: str
    started_at: float
    ended_at: float | None
    cause: str


def recorded_outages(data: Path) -> list[Outage]:
    """Every outage in the demo's two history files (read after the demo stopped)."""
    found = []
    for location in LOCATIONS:
        with sqlite3.connect(f"file:{data / location}.db?mode=ro", uri=True) as db:
            found += [Outage(*row) for row in db.execute(
                "SELECT target, location, started_at, ended_at, cause FROM outages")]
    return found


def monitor_report(data: Path, location: str, since: float, until: float) -> dict[str, float]:
    """`monitor report` over [since, until]: target -> uptime percent."""
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "report", "--db", str(data / f"{location}.db"),
         "--since", repr(since), "--until", repr(until), "--location", location,
         "--format", "json"], capture_output=True, text=True, timeout=60, check=True,
        cwd=promql.ROOT)
    return {r["target"]: r["uptime_percent"] for r in json.loads(out.stdout)
            if r["uptime_percent"] is not None}


def readable(ts: float) -> str:
    """A POSIX time as Prometheus's humanizeTimestamp writes it: to the millisecond
    (truncated), trailing zeros dropped, as Go's time.Time.String()."""
    ms = int(ts * 1e9) // 1_000_000
    text = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    fraction = f"{ms % 1000:03d}".rstrip("0")
    return f"{text}{'.' + fraction if fraction else ''} +0000 UTC"


async def wait_for_pages(pages: Pages, api: PrometheusAPI, demo: Process,
                         prometheus: Process) -> None:
    """Poll once a second, at most WAIT_LIMIT seconds, until every page has arrived and
    the outage that stays open is firing."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        missing = [t for t in OUTAGE_TARGETS
                   if not pages.first("firing", "TargetDownEverywhere", target=t)]
        if not pages.first("firing", "TargetBlockedSomewhere", target="geo"):
            missing.append("TargetBlockedSomewhere for geo")
        firing = await api.values('ALERTS{alertstate="firing"}', time.time(),
                                  "alertname", "target")
        if ("TargetDownEverywhere", STILL_DOWN) not in firing:
            missing.append(f"{STILL_DOWN} firing now")
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {WAIT_LIMIT:.0f}s still waiting for: {', '.join(missing)}\n"
                f"pages: {pages.all()}\n--- demo log:\n{demo.log()}\n"
                f"--- prometheus log:\n{prometheus.log(20)}")
        await asyncio.sleep(1)


async def scrape_times(api: PrometheusAPI, location: str, at: float) -> list[float]:
    """Timestamps of the scrapes of one monitor that Prometheus stored up to `at`."""
    result = await api.query(f'monitor_known_seconds_total{{location="{location}",'
                             f'target="gazprom"}}[10m]', at)
    (series,) = result
    return [float(t) for t, _ in series["values"]]


# --- the test -------------------------------------------------------------------------------


@pytest.mark.timeout(480)  # about 3.5 minutes of it is the demo's loop and the alerts' waits
async def test_the_demo_pages_for_every_recorded_outage(tmp_path: Path) -> None:
    prometheus_bin = require("prometheus", "prometheus")
    alertmanager_bin = require("prometheus-alertmanager", "prometheus-alertmanager")
    data = tmp_path / "demo"
    data.mkdir()
    port = free_ports(2)
    prometheus_port, alertmanager_port = free_ports(1), free_ports(1)
    receiver = await Receiver().start()
    pages = Pages(receiver)
    alertmanager = Process("alertmanager", [
        alertmanager_bin,
        f"--config.file={shipped_alertmanager_config(tmp_path, receiver.url + '/page')}",
        f"--storage.path={tmp_path / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{alertmanager_port}",
        "--cluster.listen-address="], cwd=tmp_path)  # no gossip port: loopback only
    demo = Process("monitor demo", [
        sys.executable, "-m", "monitor", "demo", "--port", str(port), "--cycle", f"{CYCLE}s",
        "--data", str(data)], cwd=promql.ROOT)
    prometheus_config = shipped_prometheus_config(tmp_path, (port, port + 1),
                                                  alertmanager_port, prometheus_port)
    prometheus = Process("prometheus", [
        prometheus_bin, f"--config.file={prometheus_config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}"], cwd=tmp_path)
    try:
        await alertmanager.start()
        await alertmanager.wait_for_log(r"Listening")
        await demo.start()
        for location in LOCATIONS:
            await demo.wait_for_log(rf"started: location={location},")
        await prometheus.start()
        await prometheus.wait_for_log(r"Server is ready to receive web requests")

        async with aiohttp.ClientSession() as session:
            api = PrometheusAPI(session, prometheus_port, prometheus)
            await wait_for_pages(pages, api, demo, prometheus)
            # Every panel and annotation query, instant and over the last two minutes,
            # while the monitors run.
            at = time.time() - 6  # every scrape and evaluation up to it is written
            empty = []
            for uid, title, expr in promql.dashboard_queries():
                if not has_data(await api.query(expr, at)):
                    empty.append(f"{uid} / {title} (instant): {expr}")
                if not has_data(await api.query_range(expr, at - 120, at, 5)):
                    empty.append(f"{uid} / {title} (range): {expr}")
            assert not empty, "queries without data:\n" + "\n".join(empty)

            # The monitors go away with kremlin's outage open.
            await demo.stop()
            stopped = time.time()
            watched = 0
            while time.time() < stopped + AFTER_STOP:
                firing = await api.values('ALERTS{alertstate="firing"}', time.time(),
                                          "alertname", "target")
                assert ("TargetDownEverywhere", STILL_DOWN) in firing, firing
                assert ("TargetBlockedSomewhere", "geo") in firing, firing
                async with session.get(
                        f"http://127.0.0.1:{alertmanager_port}/api/v2/alerts",
                        params={"filter": f'target="{STILL_DOWN}"'}) as r:
                    active = [a for a in await r.json()
                              if a["labels"]["alertname"] == "TargetDownEverywhere"]
                assert [a["status"]["state"] for a in active] == ["active"], active
                watched += 1
                await asyncio.sleep(2)
            # Prometheus did fail to scrape both monitors: the hold was what kept it.
            now = time.time()
            scraped = await api.values('up{job="monitor"}', now - 1, "instance")
            assert set(scraped.values()) == {0.0}, scraped
            assert watched >= 5

            # Uptime as the dashboards compute it, over a window between two scrapes of
            # each monitor, against `monitor report` for the same window.
            uptime: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
            for location in LOCATIONS:
                times = [t for t in await scrape_times(api, location, stopped) if t < stopped]
                since, until = times[2], times[-1]  # after the first confirmations
                (panel_expr,) = [e for uid, title, e in promql.raw_dashboard_queries()
                                 if (uid, title) == UPTIME_PANEL]
                expr = promql.substitute(panel_expr, {
                    **promql.VARIABLE_VALUES, "location": location,
                    "__range": f"{round((until - since) * 1000)}ms"})
                shown = {t: v * 100 for t, v in
                         (await api.values(expr, until, "target")).items()}
                # For comparison only: the state gauge's average, which the overview used.
                averaged = await api.values(
                    f'avg_over_time(monitor_target_up{{location="{location}"}}'
                    f'[{round((until - since) * 1000)}ms])', until, "target")
                print(f"{location}: avg_over_time(monitor_target_up) would show "
                      + ", ".join(f"{t[0]} {v * 100:.2f}%" for t, v in sorted(averaged.items())))
                uptime[location] = ({k[0]: v for k, v in shown.items()},
                                    monitor_report(data, location, since, until))
    finally:
        await prometheus.stop()
        await demo.stop()
        await alertmanager.stop()
        await receiver.close()

    # --- against the record -----------------------------------------------------------------
    outages = recorded_outages(data)
    print(f"\n{len(outages)} outages recorded")
    for target in OUTAGE_TARGETS:
        # One loop plays each scenario once: one outage per location (a second one would
        # be a flapping demo, and Alertmanager may merge a quick repeat into one page).
        mine = [o for o in outages if o.target == target]
        seen = {o.location: o for o in mine}
        assert len(mine) == len(seen) == len(LOCATIONS), f"{target}: {mine}"
        start = min(o.started_at for o in seen.values())
        page = pages.first("firing", "TargetDownEverywhere", target=target)
        assert page is not None
        latency = page.at - start
        print(f"{target}: paged {latency:.1f}s after its recorded start "
              f"({', '.join(f'{o.location} {o.cause}' for o in seen.values())})")
        assert 0 < latency <= PAGE_LIMIT, (target, latency)
        # The page carries the record: its start, and each location's cause.
        assert page.annotations["started"] == readable(start), page.annotations
        for o in seen.values():
            assert f"{o.location}: {o.cause} since {readable(o.started_at)}" \
                in page.annotations["cause"], page.annotations
        assert page.annotations["first_error"], page.annotations
        assert page.annotations["dashboard"].endswith(f"var-target={target}")
    assert all(o.ended_at is None for o in outages if o.target == STILL_DOWN)

    # geo: blocked from demo-b only; it pages as that and never as an outage.
    blocked = pages.first("firing", "TargetBlockedSomewhere", target="geo")
    assert blocked is not None and blocked.labels["location"] == "demo-b"
    assert {o.location for o in outages if o.target == "geo"} == {"demo-b"}
    assert not [p for p in pages.all() if p.labels.get("alertname") == "TargetDownEverywhere"
                and p.labels.get("target") in ("geo", "gazprom")]
    assert not [p for p in pages.all() if p.labels.get("alertname") == "TargetBlockedSomewhere"
                and p.labels.get("target") != "geo"]
    # Nothing open was resolved: the monitors went away, the outage and block did not end.
    assert not pages.first("resolved", "TargetDownEverywhere", target=STILL_DOWN)
    assert not pages.first("resolved", "TargetBlockedSomewhere", target="geo")

    for location, (shown, recorded) in uptime.items():
        assert set(shown) == set(recorded) >= set(OUTAGE_TARGETS), (shown, recorded)
        for target, percent in sorted(recorded.items()):
            print(f"uptime {target}@{location}: dashboard {shown[target]:.4f}% "
                  f"record {percent:.4f}% (diff {abs(shown[target] - percent):.4f} pp)")
            assert abs(shown[target] - percent) <= UPTIME_TOLERANCE, (location, target)
        assert min(recorded.values()) < 90  # the window held outages: a real comparison
