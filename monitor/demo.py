"""`monitor demo`: the February 2022 outages, replayed on loopback in a few minutes.

Local target servers play, in a loop of `cycle` seconds, the kinds of trouble the reports
described; two monitors (locations `demo-a` from 127.0.0.1 and `demo-b` from 127.0.0.2)
watch them, so "down everywhere" and "blocked from one place" can both be seen. Nothing
leaves the machine. The TLS site uses a self-signed certificate shipped for the demo only
(`demo_data/`), so that the TLS phase and expiry panels have data. The uptime ratios are
refreshed every probe interval rather than once a minute, so that they move within a loop.

| target  | plays                                   | when (fraction of the cycle) |
|---------|-----------------------------------------|------------------------------|
| rt      | times out under load                    | 0.15 – 0.45                  |
| duma    | answers 503                             | 0.25 – 0.55                  |
| mil     | refuses connections                     | 0.35 – 0.65                  |
| kremlin | gets slower until it times out          | slower all along, times out after ~0.6 |
| gazprom | healthy throughout, over TLS            | —                            |
| geo     | refuses the second vantage point only   | always, from demo-b          |

Sits above the daemon: imports monitor.app (to run the monitors), config, model and tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from aiohttp import web

from monitor.config import Config, MetricsConfig, ServerConfig, StoreConfig
from monitor.model import Target
from monitor.tasks import background, guarded_loop

log = logging.getLogger("monitor.demo")

INTERVAL = 2.0
TIMEOUT = 1.5
BLOCKED_SOURCE = "127.0.0.2"
LOCATIONS = (("demo-a", "127.0.0.1"), ("demo-b", BLOCKED_SOURCE))
# Loopback answers in about a millisecond; the timeout is 1.5 s.
DEMO_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # fractions of the cycle
    end: float

    def __contains__(self, phase: float) -> bool:
        return self.start <= phase < self.end


RT_OVERLOAD = Window(0.15, 0.45)
DUMA_503 = Window(0.25, 0.55)
MIL_REFUSED = Window(0.35, 0.65)


class Scenario:
    """The replay clock: where in the cycle we are."""

    def __init__(self, cycle: float, clock: Callable[[], float] = time.time) -> None:
        self.cycle = cycle
        self.clock = clock
        self.t0 = clock()

    def phase(self) -> float:
        return ((self.clock() - self.t0) % self.cycle) / self.cycle


def target_app(scenario: Scenario) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/rt")
    async def rt(request: web.Request) -> web.Response:
        if scenario.phase() in RT_OVERLOAD:
            await asyncio.sleep(TIMEOUT * 3)  # overloaded: no answer within the timeout
        return web.Response(text="RT: news")

    @routes.get("/duma")
    async def duma(request: web.Request) -> web.Response:
        if scenario.phase() in DUMA_503:
            return web.Response(status=503, text="Service Unavailable")
        return web.Response(text="State Duma")

    @routes.get("/mil")
    async def mil(request: web.Request) -> web.Response:
        return web.Response(text="Ministry of Defence")  # its trouble is the port (Flapper)

    @routes.get("/kremlin")
    async def kremlin(request: web.Request) -> web.Response:
        # Latency grows through the cycle and passes the timeout at 60 % of it.
        await asyncio.sleep(TIMEOUT * scenario.phase() / 0.6)
        return web.Response(text="President of Russia")

    @routes.get("/gazprom")
    async def gazprom(request: web.Request) -> web.Response:
        return web.Response(text="Gazprom")

    @routes.get("/geo")
    async def geo(request: web.Request) -> web.Response:
        if request.remote == BLOCKED_SOURCE:  # geo-blocked: drop the connection
            assert request.transport is not None
            request.transport.abort()
        return web.Response(text="geo-fenced site")

    app = web.Application()
    app.add_routes(routes)
    return app


class Flapper:
    """A port that accepts HTTP connections or refuses them, following the scenario."""

    def __init__(self, runner: web.AppRunner, port: int, scenario: Scenario) -> None:
        self.runner, self.port, self.scenario = runner, port, scenario
        self.site: web.TCPSite | None = None

    async def step(self) -> None:
        refusing = self.scenario.phase() in MIL_REFUSED
        if refusing and self.site is not None:
            site, self.site = self.site, None
            await site.stop()
        elif not refusing and self.site is None:
            site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
            await site.start()
            self.site = site


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_tls_context() -> ssl.SSLContext:
    files = resources.files("monitor") / "demo_data"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with resources.as_file(files / "localhost.crt") as crt, \
            resources.as_file(files / "localhost.key") as key:
        context.load_cert_chain(crt, key)
    return context


def demo_targets(port: int, mil_port: int, tls_port: int) -> tuple[Target, ...]:
    base = f"http://127.0.0.1:{port}"

    def target(name: str, url: str, scenario: str, verify_tls: bool = True) -> Target:
        return Target(name, url, interval=INTERVAL, timeout=TIMEOUT, down_after=2,
                      labels=(("scenario", scenario),), verify_tls=verify_tls)

    return (
        target("rt", f"{base}/rt", "timeout under load"),
        target("duma", f"{base}/duma", "503"),
        target("mil", f"http://127.0.0.1:{mil_port}/mil", "refused"),
        target("kremlin", f"{base}/kremlin", "slower then timeout"),
        target("gazprom", f"https://127.0.0.1:{tls_port}/gazprom", "healthy", verify_tls=False),
        target("geo", f"{base}/geo", "blocked from demo-b"),
    )


async def run_demo(*, port: int = 9321, cycle: float = 180.0, data_dir: str | None = None,
                   listen: str = "127.0.0.1", ready: Callable[[], None] | None = None,
                   allowed_hosts: tuple[str, ...] = ()) -> None:
    """Run target servers and two monitors (ports `port` and `port + 1`) until cancelled.

    `listen` is the monitors' address only (in a container: 0.0.0.0, so that a Prometheus
    beside it can scrape them); the target servers always stay on 127.0.0.1.
    `allowed_hosts`: Host names the monitors answer besides local ones (a compose service).
    """
    from monitor.app import running_monitor  # the demo sits above the daemon

    scenario = Scenario(cycle)
    target_port, mil_port, tls_port = free_port(), free_port(), free_port()
    targets = demo_targets(target_port, mil_port, tls_port)
    # Every part on one exit stack: whatever ends the demo (Ctrl-C, a monitor's port
    # already taken) stops exactly what started, in reverse order.
    async with contextlib.AsyncExitStack() as stack:
        runner = web.AppRunner(target_app(scenario), access_log=None, handle_signals=False)
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", target_port).start()
        await web.TCPSite(runner, "127.0.0.1", tls_port, ssl_context=demo_tls_context()).start()
        mil_runner = web.AppRunner(target_app(scenario), access_log=None, handle_signals=False)
        stack.push_async_callback(mil_runner.cleanup)
        await mil_runner.setup()
        flapper = Flapper(mil_runner, mil_port, scenario)
        await stack.enter_async_context(background(
            guarded_loop("demo: the mil port", flapper.step, 0.1, logger=log), "demo-flapper"))
        data = Path(data_dir or stack.enter_context(tempfile.TemporaryDirectory()))
        configs = [
            Config(source="<demo>", location=location,
                   server=ServerConfig(listen=listen, port=port + i,
                                       allowed_hosts=allowed_hosts,
                                       # each monitor's page shows the other's view too
                                       peers=(f"http://127.0.0.1:{port + 1 - i}",)),
                   store=StoreConfig(path=str(data / f"{location}.db")),
                   metrics=MetricsConfig(duration_buckets=DEMO_BUCKETS),
                   targets=tuple(replace(t, source_address=source) for t in targets))
            for i, (location, source) in enumerate(LOCATIONS)]
        log.info("demo: targets on 127.0.0.1:%d (mil on :%d, gazprom https on :%d), "
                 "cycle %.0fs; monitors %s", target_port, mil_port, tls_port, cycle,
                 ", ".join(f"{c.location} on http://{listen}:{c.server.port}/" for c in configs))
        for c in configs:
            # Uptime ratios every probe interval: the daemon's once a minute is slow for a loop.
            await stack.enter_async_context(running_monitor(c, uptime_refresh=INTERVAL))
        if ready:
            ready()
        await asyncio.Event().wait()  # until cancelled
