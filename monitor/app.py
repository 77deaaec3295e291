"""The daemon: wires config, scheduler, probes, tracker, store, metrics and the server.

One tick of the pipeline reads top to bottom in `Monitor.tick`. This is the only module
that knows every other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.config import Config, ConfigError, load_config
from monitor.connectivity import Change, Connectivity
from monitor.limits import (
    AcceptErrors,
    BadRequests,
    probe_slots,
    raise_nofile_limit,
    serve,
    server_slots,
)
from monitor.metrics import RENDER_EVERY, UPTIME_WINDOWS, Metrics, public_url
from monitor.model import (
    Failure,
    Outage,
    OutageQuery,
    OutageTime,
    ProbeResult,
    State,
    Target,
    Transition,
)
from monitor.notifications import Notifications
from monitor.probes import run_probe
from monitor.probes.http import DnsChannel
from monitor.proxies import ProxyLog
from monitor.scheduler import STALL, Scheduler
from monitor.server import HostPolicy, Unavailable, build_app
from monitor.store import Store, StoreError, TargetHistory, open_store
from monitor.tasks import background, cancel, guarded_loop
from monitor.timefmt import human_duration, rfc3339
from monitor.tracker import TargetTracker
from monitor.web.view import RecentResults
from monitor.workers import ProbeWorkers

log = logging.getLogger("monitor")

Probe = Callable[[Target], Awaitable[ProbeResult]]
UPTIME_REFRESH = 60.0  # seconds between uptime-ratio refreshes from the store
UPTIME_FIRST = 5.0  # seconds after start of the first refresh
PRUNE_INTERVAL = 3600.0  # seconds between retention passes
PRUNE_FIRST = 60.0  # seconds after start of the first pass (start-up stays quick)


class StartupError(Exception):
    """The daemon cannot start: one line naming the cause and the fix (exit status 2)."""


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
        prune_interval: float = PRUNE_INTERVAL,
        clock: Callable[[], float] = time.time,
        max_in_flight: int | None = None,
    ) -> None:
        self.config = config
        self.uptime_refresh = uptime_refresh
        self.prune_interval = prune_interval
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
        self.proxies = ProxyLog()  # a dead proxy's results are unknown: the log says so
        self.recent = RecentResults()  # the latest result, and the phases on /target/NAME
        self.scheduler = Scheduler(self.tick, on_lateness=self.metrics.lateness.observe,
                                   on_skipped=self._skipped,
                                   on_loop_lag=self.metrics.loop_lag.observe, clock=clock,
                                   max_in_flight=max_in_flight)
        self.metrics.in_flight.set_function(lambda: self.scheduler.in_flight)
        self.connectivity = Connectivity(config.connectivity, on_change=self._connectivity,
                                         clock=clock)
        self._run_started = 0.0  # start of the store's current run period
        self._offline_at = 0.0  # start of the latest offline period
        self._stack: contextlib.AsyncExitStack | None = None  # what start() started
        self._reload_lock = asyncio.Lock()  # one reload at a time (SIGHUP and POST race)

    def _notifications(self, config: Config) -> Notifications:
        def count(notifier: str, outcome: str) -> None:
            self.metrics.notifications.labels(self.location, notifier, outcome).inc()

        return Notifications(config, self.store, on_outcome=count, clock=self._clock)

    # --- life cycle ------------------------------------------------------------------------

    def targets(self, config: Config | None = None) -> list[Target]:
        return [t for t in (config or self.config).targets if in_shard(t.name, self.shard)]

    async def __aenter__(self) -> Monitor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Resume the targets' states, start notifications, probes and background loops.

        Each part is undone by stop() in reverse order; if a part fails to start, the parts
        already started are stopped before the error is raised."""
        if self._stack is not None:
            raise RuntimeError("monitor already started")
        stack = self._stack = contextlib.AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        dns = DnsChannel()  # the probes' shared setup, built once, not in the first probes
        stack.push_async_callback(dns.close)
        targets = self.targets()
        started = self._run_started = self._clock()
        await self.store.start_run(self.location, started)
        stack.push_async_callback(self._end_run)
        states = await self.store.target_states(self.location)
        for t in targets:
            state, since = states.get(t.name, (State.UNKNOWN, None))
            self.trackers[t.name] = TargetTracker.resume(state, since, t.down_after, t.up_after)
        self.metrics.set_targets(targets)
        self.notifications.set_targets(targets)
        # Whichever Notifications is current at stop (a reload replaces it).
        stack.push_async_callback(lambda: self.notifications.stop())
        await self.notifications.start()
        open_outages = {o.target: o for o in await self.store.open_outages(self.location)}
        for name, tracker in self.trackers.items():
            self.metrics.set_state(name, tracker.state, tracker.since)
            if tracker.state is State.DOWN:  # the recorded start and cause, after a restart
                self.metrics.set_open_outage(name, open_outages.get(name))
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(self._clock())
        # Probes ask connectivity for a verdict: it starts before and stops after them.
        stack.push_async_callback(self.connectivity.stop)
        self.connectivity.start()
        stack.push_async_callback(self.scheduler.shutdown)
        self.scheduler.start(targets)
        # The first refresh waits for the first probes to give the run some known time.
        await stack.enter_async_context(background(guarded_loop(
            "uptime refresh", self.refresh_uptime, self.uptime_refresh,
            first=min(UPTIME_FIRST, self.uptime_refresh), quiet=(StoreError,)),
            "monitor-uptime-refresh"))
        await stack.enter_async_context(background(guarded_loop(
            "metrics rendering", self.metrics.render_probed, RENDER_EVERY),
            "monitor-metrics-render"))
        await stack.enter_async_context(background(guarded_loop(
            "retention", self.prune, self.prune_interval,
            first=min(PRUNE_FIRST, self.prune_interval), quiet=(StoreError,)),
            "monitor-retention"))

    async def stop(self) -> None:
        """Stop what start() started, in reverse order. Safe in any state: never started,
        half started, stopped twice. An error is logged, not raised: the caller goes on to
        close the store."""
        async with self._reload_lock:  # a reload in flight would start what we stop
            stack, self._stack = self._stack, None
            if stack is None:
                return
            try:
                await stack.aclose()
            except Exception:
                log.exception("stopping the monitor for %s failed", self.location)

    async def _end_run(self) -> None:
        await self.store.end_run(self._clock())

    async def apply(self, config: Config) -> None:
        """Switch to a new, already validated config. Unchanged targets keep their schedule."""
        for field in ("location", "server", "store", "limits"):
            if getattr(config, field) != getattr(self.config, field):
                log.warning("config: %s changed; it takes effect after a restart", field)
        config = replace(config, location=self.location, server=self.config.server,
                         store=self.config.store, limits=self.config.limits)
        targets = self.targets(config)
        added, removed, changed = self.scheduler.update(targets)
        for name in removed:
            self.trackers.pop(name, None)
        self.recent.forget(removed)
        for target in self.config.targets:
            if target.name in removed:
                self.connectivity.forget(target.url)
        for t in targets:
            tracker = self.trackers.get(t.name)
            if tracker is None:
                self.trackers[t.name] = TargetTracker(down_after=t.down_after, up_after=t.up_after)
            else:
                self.trackers[t.name] = tracker.with_thresholds(t.down_after, t.up_after)
        self.metrics.set_targets(targets)
        if (config.notifiers, config.maintenance) != (self.config.notifiers,
                                                      self.config.maintenance):
            new = self._notifications(config)  # validated by the caller
            await self.notifications.stop()
            self.notifications = new
            await new.start()
        self.notifications.set_targets(targets)
        self.config = config
        self.connectivity.settings = config.connectivity
        self.connectivity.start()
        log.info("config reloaded from %s: %d targets (%d added, %d removed, %d changed)",
                 config.source, len(targets), len(added), len(removed), len(changed))

    async def reload(self) -> tuple[bool, list[str]]:
        """Re-read the config file; a broken one is rejected and the old one keeps running.

        One reload at a time: a second one (SIGHUP during POST /-/reload) waits, then reads
        the file again. Parsing runs in a thread: a big config takes seconds, and the event
        loop must keep probing meanwhile."""
        async with self._reload_lock:
            if self._stack is None:
                return False, ["the monitor is not running"]
            try:
                config = await asyncio.to_thread(load_config, self.config.source)
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
        result = await self.connectivity.judge(result, target)  # `local` while offline
        result = self._stall_judged(result, target)
        if target.name not in self.trackers:  # removed by a reload while probing
            return
        self.proxies.observe(result)
        self.recent.add(result)
        self.metrics.observe(result)
        self.store.record_result(self.location, result)
        transition = self.trackers[target.name].observe(result)
        if transition is not None:
            await self._on_transition(target, transition)

    async def _on_transition(self, target: Target, tr: Transition) -> None:
        maintenance = self.notifications.in_maintenance(tr.target, tr.at)
        spent = await self._closing_time(tr) if tr.state is State.UP else None
        outage = await self.store.apply_transition(
            self.location, tr, maintenance, self.notifications.for_transition(target, tr, spent))
        # The state and the outage change together, no await between: a scrape sees both.
        # Known time and downtime never count from before the current run period.
        self.metrics.set_state(tr.target, tr.state, tr.at)
        self.metrics.set_open_outage(tr.target, outage if tr.state is State.DOWN else None)
        # Logged once the store has the outage (or has queued it, if writing fails), so
        # whoever reads the line finds the outage by its id.
        ident = "" if outage is None else f" (outage {outage.id})"
        if tr.state is State.DOWN:
            first = tr.first_failure or tr.result
            log.warning("%s DOWN from %s since %s%s: %s: %s (%d failed probes)", tr.target,
                        self.location, rfc3339(tr.at), ident, first.failure, first.message,
                        sum(tr.failures.values()))
            self.metrics.outage_opened(tr.target)
        elif tr.state is State.UP:
            # A first confirmation after start is news, a recovery is worth a warning.
            level = logging.INFO if tr.previous is State.UNKNOWN else logging.WARNING
            log.log(level, "%s UP from %s since %s%s", tr.target, self.location,
                    rfc3339(tr.at), ident)
        self.notifications.wake()

    async def _closing_time(self, tr: Transition) -> OutageTime | None:
        """Known and unknown time of the outage this recovery closes (for the "up" message:
        time the monitor was stopped or offline is not downtime it saw); None if none is
        open or the store cannot say."""
        try:
            for outage in await self.store.open_outages(self.location):
                if outage.target == tr.target:
                    closed = replace(outage, ended_at=tr.at)
                    return (await self.store.outage_times([closed], tr.at))[0]
        except StoreError as exc:
            log.error("%s: the outage's known time is not available: %s", tr.target, exc)
        return None

    async def run_period_ended(self, now: float) -> None:
        """The monitor stops knowing (it went offline): the time from `now` is unknown, so
        the store ends the run period; known time and downtime stop counting."""
        await self.store.end_run(now)
        self.metrics.pause(now)

    async def run_period_started(self, now: float) -> None:
        """The monitor knows again (back online): a new run period; known time and the
        downtime of targets still down count again from `now`."""
        self._run_started = now
        await self.store.start_run(self.location, now)
        self.metrics.resume(now)

    def _stall_judged(self, result: ProbeResult, target: Target) -> ProbeResult:
        """A timeout during which the event loop stood still is the monitor's fault."""
        if result.failure is not Failure.TIMEOUT:
            return result
        stalled = self.scheduler.stalled(result.started_at, result.started_at + result.duration)
        if stalled < max(STALL, target.timeout / 10):
            return result
        return replace(result, failure=Failure.LOCAL,
                       message=f"monitor overloaded: its event loop stalled {stalled:.1f}s "
                               f"during the probe ({result.message})")

    async def _connectivity(self, change: Change) -> None:
        """Offline time is not known time: it ends the store's run, coming back starts one."""
        if change.offline:
            at = self._offline_at = max(change.at, self._run_started)
            self.metrics.offline.set(1)
            log.warning("monitor OFFLINE from %s since %s: %s; results count as unknown "
                        "until it is back", self.location, rfc3339(at), change.evidence)
            await self.run_period_ended(at)
        else:
            self.metrics.offline.set(0)
            log.warning("monitor back ONLINE from %s since %s after %s offline: %s",
                        self.location, rfc3339(change.at),
                        human_duration(change.at - self._offline_at), change.evidence)
            await self.run_period_started(change.at)

    def _skipped(self, reason: str) -> None:
        self.metrics.missed_runs.labels(self.location, reason).inc()

    async def prune(self) -> None:
        """Delete the history the retention settings no longer keep (small transactions)."""
        deleted = await self.store.prune(self._clock())
        if deleted:
            log.info("retention: deleted %d old rows from %s", deleted,
                     self.config.store.path)

    async def refresh_uptime(self) -> None:
        """Uptime ratios over known time: one store read for every window and target."""
        now = self._clock()
        windows = {window: now - seconds for window, seconds in UPTIME_WINDOWS.items()}
        ratios = await self.store.uptimes(self.location, windows, now)
        for window, by_target in ratios.items():
            for i, (target, ratio) in enumerate(by_target.items(), 1):
                self.metrics.set_uptime(target, window, ratio)
                if i % 5000 == 0:  # 100,000 targets: never one long block of the loop
                    await asyncio.sleep(0)

    # --- the server's view ----------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def offline_json(self) -> dict[str, Any] | None:
        """None while online; else since when the monitor is offline, and why."""
        status = self.connectivity.status()
        if status is None:
            return None
        since = status["since"]
        return {"since": rfc3339(since) if isinstance(since, float) else None,
                "evidence": status["evidence"]}

    def targets_json(self) -> list[dict[str, Any]]:
        return [self._target_json(t) for t in self.targets()]

    def target_json(self, name: str) -> dict[str, Any] | None:
        """One target of `targets_json`, or None (a badge must not build them all)."""
        found = next((t for t in self.config.targets if t.name == name), None)
        return None if found is None or name not in self.trackers else self._target_json(found)

    def _target_json(self, t: Target) -> dict[str, Any]:
        tracker = self.trackers.get(t.name)
        last = self.recent.latest(t.name)
        series = self.metrics.uptime_of(t.name)
        return {
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
                "cert_expires_at": rfc3339(last.cert_expiry),
            },
            "uptime": series,
        }

    async def outages(self, query: OutageQuery) -> list[tuple[Outage, OutageTime]]:
        try:
            found = await self.store.outages(replace(query, location=self.location))
            times = await self.store.outage_times(found, self._clock())
            return list(zip(found, times, strict=True))
        except StoreError as exc:
            raise Unavailable(str(exc)) from exc

    async def history(self, names: Collection[str]) -> Mapping[str, TargetHistory]:
        try:
            return await self.store.history(self.location, self._clock(), names)
        except StoreError as exc:
            raise Unavailable(str(exc)) from exc

    def recent_results(self, name: str) -> list[ProbeResult]:
        return self.recent.of(name)


# --- the daemon process ----------------------------------------------------------------------

@contextlib.asynccontextmanager
async def running_monitor(
    config: Config,
    *,
    listen: str | None = None,
    port: int | None = None,
    shard: tuple[int, int] | None = None,
    uptime_refresh: float = UPTIME_REFRESH,
    prune_interval: float = PRUNE_INTERVAL,
) -> AsyncIterator[Monitor]:
    """One monitor and its HTTP server, started, for the duration of the `async with`.

    Every part is entered on one exit stack, so whatever exits the block (cancellation, an
    error, a part failing to start) stops exactly the parts that started, in reverse order:
    no task keeps running and the store is closed.

    Raises StartupError (one line: the cause and the fix) if the store is damaged or cannot
    be written, or the port cannot be bound."""
    stopping: float | None = None  # when shutdown began, once the monitor had started

    def stopped() -> None:
        if stopping is not None:
            log.info("stopped %s in %.1fs", config.location, time.monotonic() - stopping)

    async with contextlib.AsyncExitStack() as stack:
        stack.callback(stopped)  # first in, last out: once everything is closed
        store = open_store(config.store)
        stack.push_async_callback(store.close)  # safe on a store that did not open
        try:
            await store.open()
            await store.check_writable()
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        nofile = raise_nofile_limit()
        connections = server_slots(config.limits.server_connections, nofile)
        in_flight = probe_slots(config.limits.max_probes_in_flight, nofile, connections)
        loop = asyncio.get_running_loop()
        stack.callback(loop.set_exception_handler, loop.get_exception_handler())
        loop.set_exception_handler(AcceptErrors())
        # Anyone who can connect could otherwise write a traceback per malformed request.
        bad_requests, server_log = BadRequests(), logging.getLogger("aiohttp.server")
        server_log.addFilter(bad_requests)
        stack.callback(server_log.removeFilter, bad_requests)
        options: dict[str, Any] = {}
        if config.limits.probe_workers:
            workers = await stack.enter_async_context(ProbeWorkers(config.limits.probe_workers))
            options["probe"] = workers.probe
        monitor = Monitor(config, store, shard=shard, uptime_refresh=uptime_refresh,
                          prune_interval=prune_interval, max_in_flight=in_flight, **options)
        host = listen or config.server.listen
        bind_port = config.server.port if port is None else port
        # The keep-alive timeout runs from the moment a connection opens: it is the header
        # read timeout too (aiohttp closes a connection still waiting for a whole request).
        runner = web.AppRunner(build_app(monitor, monitor.registry, config.server.token,
                                         exposition=monitor.metrics.exposition,
                                         hosts=HostPolicy(host, config.server.allowed_hosts),
                                         public_status=config.server.public_status,
                                         peers=config.server.peers),
                               access_log=None, handle_signals=False,
                               keepalive_timeout=config.limits.server_header_timeout)
        stack.push_async_callback(runner.cleanup)  # safe before setup() too
        await runner.setup()
        try:
            listener = await serve(runner, host, bind_port, connections)
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{bind_port}: {exc.strerror}") from None
        stack.callback(listener.close)
        log.info("limits: %d descriptors, %d probes in flight, %d server connections",
                 nofile, in_flight, connections)
        await stack.enter_async_context(monitor)
        # On the way out, refuse new requests before the monitor stops (closing twice is fine).
        stack.callback(listener.close)
        log.info("started: location=%s, %d targets, listening on http://%s:%d/ (store %s)",
                 monitor.location, len(monitor.targets()), host, bind_port, config.store.path)
        # What start-up built (config, targets, trackers, metric series) lives for the run:
        # out of the collector's full passes, which would walk it again and again (at
        # 100,000 targets, millions of objects several times a minute).
        gc.freeze()
        try:
            yield monitor
        finally:
            stopping = time.monotonic()


async def run_monitor(
    config: Config,
    *,
    ready: Callable[[], None] | None = None,
    on_monitor: Callable[[Monitor], None] | None = None,
    **kwargs: Any,
) -> None:
    """Run one monitor and its HTTP server until cancelled, then shut down cleanly.

    `kwargs` are running_monitor's; raises its StartupError."""
    async with running_monitor(config, **kwargs) as monitor:
        if on_monitor:
            on_monitor(monitor)
        if ready:
            ready()
        await asyncio.Event().wait()  # until cancelled


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
        await cancel(*reloads)  # a reload still reading the file when the daemon stopped
