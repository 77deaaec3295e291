"""Prometheus metrics: the contract in DESIGN.md, rendered by one custom collector.

Per-target state lives in plain objects updated on every probe and turned into metric
families only when Prometheus scrapes. That keeps the per-probe cost to a few attribute
writes and makes removing a target's series a dictionary delete.

Imports prometheus_client and monitor.model only.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from monitor.model import PHASES, Failure, ProbeResult, State, Target

RESULTS: tuple[str, ...] = ("ok", *(f.value for f in Failure))
UPTIME_WINDOWS: dict[str, float] = {"1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0,
                                    "365d": 365 * 86400.0}
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def public_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to show as a label."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Series:
    """Run-time metric state of one target."""

    __slots__ = ("buckets", "cert_expiry", "count", "down_since", "downtime", "info",
                 "outages", "phases", "probes", "status", "success", "sum", "up", "uptime")

    def __init__(self, info: tuple[tuple[str, str], ...], n_buckets: int) -> None:
        self.info = info
        self.success: float | None = None
        self.buckets = [0] * n_buckets  # non-cumulative counts; +Inf is `count`
        self.sum = 0.0
        self.count = 0
        self.phases: dict[str, float] = {}
        self.probes = dict.fromkeys(RESULTS, 0)
        self.status = 0
        self.cert_expiry: float | None = None
        self.up: float | None = None
        self.down_since: float | None = None
        self.downtime = 0.0
        self.outages = 0
        self.uptime: dict[str, float] = {}


class Metrics:
    """All of the monitor's metrics, registered on the given registry."""

    def __init__(
        self,
        location: str,
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        per_target_histogram: bool = True,
        store_errors: Callable[[], Mapping[str, int]] = dict,
        notification_queue: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.location = location
        self._buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self.per_target_histogram = per_target_histogram
        self._clock = clock
        self._store_errors = store_errors  # read at scrape time: the store counts them
        self._notification_queue = notification_queue
        self._series: dict[str, _Series] = {}
        registry.register(self)
        self.lateness = Histogram(
            "monitor_scheduler_lateness_seconds", "How late probes start against their schedule.",
            ["location"], buckets=LATENESS_BUCKETS, registry=registry,
        ).labels(location)
        self.missed_runs = Counter(
            "monitor_scheduler_missed_runs", "Scheduled probe runs skipped (missed, coalesced "
            "or still running).", ["location", "reason"], registry=registry,
        )
        self.reload_success = Gauge(
            "monitor_config_reload_success", "1 if the last configuration load worked.",
            ["location"], registry=registry,
        ).labels(location)
        self.reload_timestamp = Gauge(
            "monitor_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.", ["location"],
            registry=registry,
        ).labels(location)
        self.notifications = Counter(
            "monitor_notifications", "Notification delivery attempts by outcome.",
            ["location", "notifier", "outcome"], registry=registry,
        )

    # --- updates -------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Declare the monitored targets: new ones get series, removed ones lose theirs."""
        wanted = {t.name: t for t in targets}
        for name in list(self._series):
            if name not in wanted:
                del self._series[name]
        for name, target in wanted.items():
            info = (("url", public_url(target.url)), ("kind", target.kind), *target.labels)
            series = self._series.get(name)
            if series is None:
                self._series[name] = _Series(info, len(self._buckets))
            else:
                series.info = info

    def observe(self, result: ProbeResult) -> None:
        series = self._series.get(result.target)
        if series is None:  # target removed while its probe ran
            return
        series.success = 1.0 if result.ok else 0.0
        series.probes["ok" if result.ok else (result.failure or Failure.ERROR).value] += 1
        series.status = result.status or 0
        series.phases = dict(result.phases)
        if result.cert_expiry is not None:
            series.cert_expiry = result.cert_expiry
        if self.per_target_histogram:
            i = bisect.bisect_left(self._buckets, result.duration)  # first bucket with le >= d
            if i < len(self._buckets):
                series.buckets[i] += 1
            series.sum += result.duration
            series.count += 1

    def set_state(self, target: str, state: State, since: float | None) -> None:
        """The tracker's confirmed state; `since` is when it began (for downtime)."""
        series = self._series.get(target)
        if series is None:
            return
        now = self._clock()
        if series.down_since is not None:  # close the running downtime
            series.downtime += max(0.0, now - series.down_since)
            series.down_since = None
        if state is State.UNKNOWN:
            series.up = None
        elif state is State.UP:
            series.up = 1.0
        else:
            series.up = 0.0
            # Downtime counts from the confirmed start, which lies before the confirmation.
            series.down_since = min(now, since) if since is not None else now

    def outage_opened(self, target: str) -> None:
        if (series := self._series.get(target)) is not None:
            series.outages += 1

    def set_uptime(self, target: str, window: str, ratio: float | None) -> None:
        if (series := self._series.get(target)) is None:
            return
        if ratio is None:
            series.uptime.pop(window, None)
        else:
            series.uptime[window] = ratio

    def uptime_of(self, target: str) -> dict[str, float]:
        series = self._series.get(target)
        return dict(series.uptime) if series else {}

    # --- exposition ------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the configured targets; skip the registry's check

    def collect(self) -> Iterable[Metric]:
        loc = self.location
        now = self._clock()
        # One info family whose label set is the union of every target's own label keys.
        extra = sorted({k for s in self._series.values() for k, _ in s.info} - {"url", "kind"})
        info = GaugeMetricFamily("monitor_target_info", "What is monitored.",
                                 labels=["target", "location", "url", "kind", *extra])
        success = GaugeMetricFamily("monitor_probe_success", "1 if the last probe succeeded.",
                                    labels=["target", "location"])
        phase = GaugeMetricFamily("monitor_probe_phase_seconds",
                                  "Last probe's time by phase.",
                                  labels=["target", "location", "phase"])
        probes = CounterMetricFamily("monitor_probes", "Probes by outcome: ok or failure class.",
                                     labels=["target", "location", "result"])
        status = GaugeMetricFamily("monitor_http_status_code", "Last HTTP status (0 if none).",
                                   labels=["target", "location"])
        cert = GaugeMetricFamily("monitor_tls_cert_expiry_timestamp_seconds",
                                 "When the server certificate expires (POSIX time).",
                                 labels=["target", "location"])
        up = GaugeMetricFamily("monitor_target_up",
                               "Confirmed state: 1 up, 0 down (absent while unknown).",
                               labels=["target", "location"])
        outages = CounterMetricFamily("monitor_outages", "Outages opened.",
                                      labels=["target", "location"])
        downtime = CounterMetricFamily("monitor_downtime_seconds", "Confirmed downtime.",
                                       labels=["target", "location"])
        uptime = GaugeMetricFamily("monitor_uptime_ratio",
                                   "Uptime over a window, counting known time only.",
                                   labels=["target", "location", "window"])
        duration = HistogramMetricFamily("monitor_probe_duration_seconds", "Probe duration.",
                                         labels=["target", "location"])
        bucket_names = [_le(b) for b in self._buckets]
        for name, s in self._series.items():
            values = dict(s.info)
            info.add_metric([name, loc, values["url"], values["kind"],
                             *(values.get(k, "") for k in extra)], 1.0)
            outages.add_metric([name, loc], s.outages)
            running = max(0.0, now - s.down_since) if s.down_since is not None else 0.0
            downtime.add_metric([name, loc], s.downtime + running)
            if s.up is not None:
                up.add_metric([name, loc], s.up)
            for window, ratio in s.uptime.items():
                uptime.add_metric([name, loc, window], ratio)
            if s.success is None:  # not probed yet
                continue
            success.add_metric([name, loc], s.success)
            status.add_metric([name, loc], s.status)
            for result, n in s.probes.items():
                probes.add_metric([name, loc, result], n)
            for p in PHASES:
                if p in s.phases:
                    phase.add_metric([name, loc, p], s.phases[p])
            if s.cert_expiry is not None:
                cert.add_metric([name, loc], s.cert_expiry)
            if self.per_target_histogram:
                cumulative, acc = [], 0
                for le, n in zip(bucket_names, s.buckets, strict=True):
                    acc += n
                    cumulative.append((le, acc))
                cumulative.append(("+Inf", s.count))
                duration.add_metric([name, loc], cumulative, s.sum)
        store_errors = CounterMetricFamily("monitor_store_errors",
                                           "History writes that failed, by kind of error.",
                                           labels=["location", "kind"])
        for kind, n in self._store_errors().items():
            store_errors.add_metric([loc, kind], n)
        queue = GaugeMetricFamily("monitor_notification_queue",
                                  "Notifications waiting to be delivered.", labels=["location"])
        queue.add_metric([loc], self._notification_queue())
        for family in (store_errors, queue, info, success, duration, phase, probes, status,
                       cert, up, outages, downtime, uptime):
            if family.samples:  # an empty family would still print HELP and TYPE
                yield family


def _le(bound: float) -> str:
    return repr(float(bound))
