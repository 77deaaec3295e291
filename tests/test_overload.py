"""Overload: a tiny cap on probes in flight and slow real sites; nobody is blamed for it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from aiohttp import web
from daemon import Daemon, sample

from monitor.config import ConfigError, parse_config

CAP = 2
SLOW = ("slow-a", "slow-b", "slow-c")
FAST = ("fast-a", "fast-b")


class SlowSite:
    """Answers /slow after `delay` seconds and /ok at once; records the most at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.now = 0
        self.most = 0
        self.port = 0
        self.asked = asyncio.Event()  # a /slow request arrived
        self._runner: web.AppRunner | None = None

    async def _slow(self, request: web.Request) -> web.Response:
        self.asked.set()
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay)  # a slow site: the delay under test
        finally:
            self.now -= 1
        return web.Response(text="slow but fine")

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def __aenter__(self) -> SlowSite:
        app = web.Application()
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/ok", self._ok)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_full_in_flight_cap_skips_runs_and_blames_no_site(tmp_path: Path) -> None:
    async with SlowSite(delay=2.5) as site:
        base = f"http://127.0.0.1:{site.port}"
        targets = "\n".join(
            [f"  - {{name: {n}, url: '{base}/slow', timeout: 5s, interval: 5s}}" for n in SLOW]
            + [f"  - {{name: {n}, url: '{base}/ok'}}" for n in FAST])
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: history.db}}
limits: {{max_probes_in_flight: {CAP}}}
defaults: {{interval: 1s, timeout: 1s, down_after: 2}}
targets:
{targets}
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"scheduler overloaded: \d+ probes in flight")

            def skipped_and_slow_done(text: str) -> bool:
                skipped = sample(text, "monitor_scheduler_missed_runs_total",
                                 reason="overloaded") or 0
                return skipped >= 5 and all(
                    sample(text, "monitor_probes_total", target=n, result="ok") for n in SLOW)

            text = await daemon.wait_for_metrics(skipped_and_slow_done)
            status, body = await daemon.get_json("/api/v1/targets")
    log = daemon.log()
    assert site.most <= CAP, log  # the cap held at the site itself
    assert (sample(text, "monitor_scheduler_missed_runs_total", reason="overloaded")
            or 0) >= 5, text
    in_flight = sample(text, "monitor_probes_in_flight")
    assert in_flight is not None and in_flight <= CAP
    assert sample(text, "monitor_scheduler_lateness_seconds_count") is not None
    # Nothing is the sites' fault: no timeout, no DOWN; the slow sites answered in time.
    for name in (*SLOW, *FAST):
        for failure in ("timeout", "connect", "local"):
            assert (sample(text, "monitor_probes_total", target=name, result=failure)
                    or 0) == 0, (name, failure)
    assert " DOWN " not in log
    states = {t["name"]: t["state"] for t in body["targets"]}  # type: ignore[index]
    assert status == 200 and "down" not in states.values()
    assert all(states[n] == "up" for n in SLOW)
    assert log.count("scheduler overloaded") == 1  # one line per episode


async def test_a_timeout_while_the_monitor_itself_stood_still_is_not_the_sites(
        tmp_path: Path) -> None:
    async with SlowSite(delay=1.0) as site:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - {{name: site, url: 'http://127.0.0.1:{site.port}/slow', interval: 3s, timeout: 2s,
      down_after: 1}}
""")
        async with Daemon(config) as daemon:
            await asyncio.wait_for(site.asked.wait(), 30)
            # The whole daemon stands still (like a starved CPU or a paused VM) for longer
            # than the probe's timeout, while the site answers after 1 s.
            daemon.send(signal.SIGSTOP)
            try:
                # The stall under test (longer than the 2 s timeout), not a synchronisation.
                await asyncio.sleep(3)
            finally:
                daemon.send(signal.SIGCONT)
            text = await daemon.wait_for_metrics(
                lambda t: bool(sample(t, "monitor_probes_total", target="site", result="ok")))
            status, body = await daemon.get_json("/api/v1/targets")
    log = daemon.log()
    assert status == 200
    assert (sample(text, "monitor_probes_total", target="site", result="timeout") or 0) == 0, log
    assert sample(text, "monitor_probes_total", target="site", result="local") == 1, log
    assert " DOWN " not in log
    assert "event loop stalled for" in log
    assert body["targets"][0]["state"] == "up"  # type: ignore[index]


@pytest.mark.parametrize(("text", "message"), [
    ("limits: {max_probes_in_flight: 0}",
     "limits.max_probes_in_flight: must be a whole number of at least 1 or 'auto', got 0"),
    ("limits: {server_header_timeout: 0s}",
     "limits.server_header_timeout: must be longer than 0s, got '0s'"),
    ("connectivity: {checks: [example.org]}",
     "connectivity.checks[0]: must be host:port (like 1.1.1.1:443 or [2606:4700::1111]:443), "
     "got 'example.org'"),
    ("connectivity: {failing_share: 1.5}",
     "connectivity.failing_share: must be more than 0 and at most 1, or off, got 1.5"),
    ("connectivity: {checks: 1.1.1.1:443}",
     "connectivity.checks: must be a list of host:port endpoints, got a string"),
])
def test_limits_and_connectivity_errors_say_where(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{text}\ntargets: [{{name: a, url: 'http://127.0.0.1/'}}]\n", "m.yaml")
    assert caught.value.errors == [f"m.yaml:1: {message}"]


def test_limits_and_connectivity_defaults() -> None:
    config = parse_config("limits: {max_probes_in_flight: auto, server_connections: 64}\n"
                          "connectivity: {checks: ['[::1]:443', '127.0.0.1:53']}\n"
                          "targets: [{name: a, url: 'http://127.0.0.1/'}]\n", "m.yaml")
    assert config.limits.max_probes_in_flight is None
    assert config.limits.server_connections == 64
    assert config.limits.server_header_timeout == 5.0
    assert config.connectivity.checks == ("[::1]:443", "127.0.0.1:53")
    assert config.connectivity.interval == 30.0
    assert config.connectivity.failing_share is None  # off unless set
