"""The daemon: wires config, scheduler, probes, tracker, store, metrics and the server.

One tick of the pipeline reads top to bottom in `Monitor.tick`. This is the only module
that knows every other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.config import Config, ConfigError, load_config
from monitor.metrics import UPTIME_WINDOWS, Metrics, public_url
from monitor.model import Outage, ProbeResult, State, Target, Transition
from monitor.notifications import Notifications, check_notifications
from monitor.probes import run_probe
from monitor.probes.http import DnsChannel
from monitor.scheduler import Scheduler
from monitor.server import build_app
from monitor.store import Store, open_store
from monitor.timefmt import rfc3339
from monitor.tracker import TargetTracker

log = logging.getLogger("monitor")

Probe = Callable[[Target], Awaitable[ProbeResult]]
UPTIME_REFRESH = 60.0  # seconds between uptime-ratio refreshes from the store
UPTIME_FIRST = 5.0  # seconds after start of the first refresh


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Stable sharding by target name: adding a target never moves another."""
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(name.encode()) % count == index - 1


class Monitor:
    """The running monitor for one location. Holds run-time state, never the config's."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        registry: CollectorRegistry | None = None,
        probe: Probe = run_probe,
        shard: tuple[int, int] | None = None,
        uptime_refresh: float = UPTIME_REFRESH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.uptime_refresh = uptime_refresh
        self.location = config.location
        self.store = store
        self.registry = registry or CollectorRegistry()
        self.shard = shard
        self._probe = probe
        self._clock = clock
        self.metrics = Metrics(config.location, self.registry,
                               buckets=config.metrics.duration_buckets,
                               per_target_histogram=config.metrics.per_target_histogram,
                               store_errors=lambda: store.errors,
                               notification_queue=lambda: self.notifications.pending(),
                               clock=clock)
        self.notifications = self._notifications(config)
        self.trackers: dict[str, TargetTracker] = {}
        self.last: dict[str, ProbeResult] = {}
        self.scheduler = Scheduler(self.tick, on_lateness=self.metrics.lateness.observe,
                                   on_skipped=self._skipped, clock=clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._dns: DnsChannel | None = None

    def _notifications(self, config: Config) -> Notifications:
        def count(notifier: str, outcome: str) -> None:
            self.metrics.notifications.labels(self.location, notifier, outcome).inc()

        return Notifications(config, self.store, on_outcome=count, clock=self._clock)

    # --- life cycle ------------------------------------------------------------------------

    def targets(self, config: Config | None = None) -> list[Target]:
        return [t for t in (config or self.config).targets if in_shard(t.name, self.shard)]

    async def start(self) -> None:
        self._dns = DnsChannel()  # one DNS channel for the whole run, not one per probe
        targets = self.targets()
        await self.store.start_run(self.location, self._clock())
        states = await self.store.target_states(self.location)
        for t in targets:
            state, since = states.get(t.name, (State.UNKNOWN, None))
            self.trackers[t.name] = TargetTracker.resume(state, since, t.down_after, t.up_after)
        self.metrics.set_targets(targets)
        self.notifications.set_targets(targets)
        await self.notifications.start()
        open_outages = {o.target: o for o in await self.store.open_outages(self.location)}
        for name, tracker in self.trackers.items():
            self.metrics.set_state(name, tracker.state, tracker.since)
            if tracker.state is State.DOWN:  # the recorded start and cause, after a restart
                self.metrics.set_open_outage(name, open_outages.get(name))
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(self._clock())
        self.scheduler.start(targets)
        self._tasks.append(asyncio.create_task(self._refresh_uptime_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.scheduler.shutdown()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.notifications.stop()
        await self.store.end_run(self._clock())
        if self._dns is not None:
            await self._dns.close()
            self._dns = None

    async def apply(self, config: Config) -> None:
        """Switch to a new, already validated config. Unchanged targets keep their schedule."""
        for field in ("location", "server", "store"):
            if getattr(config, field) != getattr(self.config, field):
                log.warning("config: %s changed; it takes effect after a restart", field)
        config = replace(config, location=self.location, server=self.config.server,
                         store=self.config.store)
        targets = self.targets(config)
        added, removed, changed = self.scheduler.update(targets)
        for name in removed:
            self.trackers.pop(name, None)
            self.last.pop(name, None)
        for t in targets:
            tracker = self.trackers.get(t.name)
            if tracker is None:
                self.trackers[t.name] = TargetTracker(down_after=t.down_after, up_after=t.up_after)
            else:
                tracker.down_after, tracker.up_after = t.down_after, t.up_after
        self.metrics.set_targets(targets)
        if (config.notifiers, config.raw_maintenance) != (self.config.notifiers,
                                                          self.config.raw_maintenance):
            new = self._notifications(config)  # validated by the caller
            await self.notifications.stop()
            self.notifications = new
            await new.start()
        self.notifications.set_targets(targets)
        self.config = config
        log.info("config reloaded from %s: %d targets (%d added, %d removed, %d changed)",
                 config.source, len(targets), len(added), len(removed), len(changed))

    async def reload(self) -> tuple[bool, list[str]]:
        """Re-read the config file; a broken one is rejected and the old one keeps running."""
        try:
            config = load_config(self.config.source)
            check_notifications(config)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("config reload rejected: %s", line)
            self.metrics.reload_success.set(0)
            return False, list(exc.errors)
        await self.apply(config)
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(self._clock())
        return True, []

    # --- one tick of the pipeline ------------------------------------------------------------

    async def tick(self, target: Target) -> None:
        result = await self._probe(target)
        if target.name not in self.trackers:  # removed by a reload while probing
            return
        self.last[target.name] = result
        self.metrics.observe(result)
        self.store.record_result(self.location, result)
        transition = self.trackers[target.name].observe(result)
        if transition is not None:
            await self._on_transition(target, transition)

    async def _on_transition(self, target: Target, tr: Transition) -> None:
        if tr.state is State.DOWN:
            first = tr.first_failure or tr.result
            log.warning("%s DOWN from %s since %s: %s: %s (%d failed probes)", tr.target,
                        self.location, rfc3339(tr.at), first.failure, first.message,
                        sum(tr.failures.values()))
            self.metrics.outage_opened(tr.target)
        elif tr.state is State.UP:
            # A first confirmation after start is news, a recovery is worth a warning.
            level = logging.INFO if tr.previous is State.UNKNOWN else logging.WARNING
            log.log(level, "%s UP from %s since %s", tr.target, self.location, rfc3339(tr.at))
        maintenance = self.notifications.in_maintenance(tr.target, tr.at)
        outage = await self.store.apply_transition(self.location, tr, maintenance,
                                                   self.notifications.for_transition(target, tr))
        self.metrics.set_state(tr.target, tr.state, tr.at)  # with the outage, no await between
        self.metrics.set_open_outage(tr.target, outage if tr.state is State.DOWN else None)
        self.notifications.wake()

    def _skipped(self, reason: str) -> None:
        self.metrics.missed_runs.labels(self.location, reason).inc()

    async def _refresh_uptime_forever(self) -> None:
        # The first probes give the run some known time.
        await asyncio.sleep(min(UPTIME_FIRST, self.uptime_refresh))
        while True:
            await self.refresh_uptime()
            await asyncio.sleep(self.uptime_refresh)

    async def refresh_uptime(self) -> None:
        """Uptime ratios over known time, one store query per window for all targets."""
        now = self._clock()
        for window, seconds in UPTIME_WINDOWS.items():
            for report in await self.store.report(now - seconds, now, location=self.location):
                self.metrics.set_uptime(report.target, window, report.uptime)

    # --- the server's view ----------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def targets_json(self) -> list[dict[str, Any]]:
        out = []
        for t in self.targets():
            tracker = self.trackers.get(t.name)
            last = self.last.get(t.name)
            series = self.metrics.uptime_of(t.name)
            out.append({
                "name": t.name, "url": public_url(t.url), "kind": t.kind,
                "interval_seconds": t.interval, "labels": dict(t.labels),
                "state": (tracker.state if tracker else State.UNKNOWN).value,
                "state_since": rfc3339(tracker.since) if tracker else None,
                "last_result": None if last is None else {
                    "at": rfc3339(last.started_at), "ok": last.ok,
                    "failure": last.failure.value if last.failure else None,
                    "phase": last.phase, "message": last.message, "status": last.status,
                    "duration_seconds": round(last.duration, 6),
                    "phases": {k: round(v, 6) for k, v in last.phases.items()},
                },
                "uptime": series,
            })
        return out

    async def outages(self, *, target: str | None, since: float | None, until: float | None,
                      open: bool | None) -> list[Outage]:
        return await self.store.outages(target=target, location=self.location, since=since,
                                        until=until, open=open)


# --- the daemon process ----------------------------------------------------------------------

async def run_monitor(
    config: Config,
    *,
    listen: str | None = None,
    port: int | None = None,
    shard: tuple[int, int] | None = None,
    ready: Callable[[], None] | None = None,
    on_monitor: Callable[[Monitor], None] | None = None,
    uptime_refresh: float = UPTIME_REFRESH,
) -> None:
    """Run one monitor and its HTTP server until cancelled, then shut down cleanly."""
    store = open_store(config.store)
    await store.open()
    monitor = Monitor(config, store, shard=shard, uptime_refresh=uptime_refresh)
    host = listen or config.server.listen
    bind_port = config.server.port if port is None else port
    runner = web.AppRunner(build_app(monitor, monitor.registry, config.server.token,
                                     exposition=monitor.metrics.exposition),
                           access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, bind_port).start()
    except OSError as exc:
        await runner.cleanup()
        await store.close()
        raise SystemExit(f"monitor: cannot listen on {host}:{bind_port}: {exc.strerror}") from None
    try:
        await monitor.start()
        log.info("started: location=%s, %d targets, listening on http://%s:%d/ (store %s)",
                 monitor.location, len(monitor.targets()), host, bind_port, config.store.path)
        if on_monitor:
            on_monitor(monitor)
        if ready:
            ready()
        await asyncio.Event().wait()  # until cancelled
    finally:
        started = time.monotonic()
        await monitor.stop()
        await runner.cleanup()
        await store.close()
        log.info("stopped %s in %.1fs", monitor.location, time.monotonic() - started)


async def run_daemon(config: Config, **kwargs: Any) -> None:
    """`monitor run`: run until SIGTERM/SIGINT; SIGHUP reloads the config."""
    loop = asyncio.get_running_loop()
    holder: list[Monitor] = []
    task = asyncio.create_task(run_monitor(config, on_monitor=holder.append, **kwargs))
    reloads: set[asyncio.Task[Any]] = set()

    def on_hup() -> None:
        if holder:
            reload = loop.create_task(holder[0].reload())
            reloads.add(reload)
            reload.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
