"""Prometheus metrics: the contract in DESIGN.md, rendered by one custom collector.

Per-target state lives in plain objects updated on every probe and turned into metric
families only when Prometheus scrapes. That keeps the per-probe cost to a few attribute
writes and makes removing a target's series a dictionary delete.

Two renderings of the same samples: `collect()` for the registry (tests, `get_sample_value`,
`generate_latest`), and `exposition()` for /metrics, which writes the text format by hand
from label strings cached per target and yields to the event loop between chunks of targets.
prometheus_client's generate_latest costs ~15 µs a sample (5 s for 10,000 targets with their
histograms, the event loop blocked throughout); the hand-written text ~0.5 µs.

Imports prometheus_client and monitor.model only.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from monitor.model import PHASES, Failure, Outage, ProbeResult, State, Target

# An unknown result (the monitor's own fault, or its proxy's) counts as `local`.
RESULTS: tuple[str, ...] = ("ok", *(f.value for f in Failure if f is not Failure.PROXY))
UPTIME_WINDOWS: dict[str, float] = {"1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0,
                                    "365d": 365 * 86400.0}
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FIRST_ERROR_MAX = 120  # characters of an outage's first error kept in its info label
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
EXPOSITION_CHUNK = 1000  # targets rendered between two yields to the event loop

# name, type, help of the per-target families, in the order both renderings emit them.
FAMILIES: dict[str, tuple[str, str]] = {
    "monitor_target_info": ("gauge", "What is monitored."),
    "monitor_probe_success": ("gauge", "1 if the last probe succeeded."),
    "monitor_probe_duration_seconds": ("histogram", "Probe duration."),
    "monitor_probe_phase_seconds": ("gauge", "Last probe's time by phase."),
    "monitor_probes": ("counter", "Probes by outcome: ok or failure class."),
    "monitor_http_status_code": ("gauge", "Last HTTP status (0 if none)."),
    "monitor_tls_cert_expiry_timestamp_seconds": (
        "gauge", "When the server certificate expires (POSIX time)."),
    "monitor_target_up": ("gauge", "Confirmed state: 1 up, 0 down (absent while unknown)."),
    "monitor_target_state_since_timestamp_seconds": (
        "gauge", "When the confirmed state began (the first probe of its run)."),
    "monitor_outages": ("counter", "Outages opened."),
    "monitor_downtime_seconds": ("counter", "Confirmed downtime."),
    "monitor_known_seconds": (
        "counter", "Time with a confirmed state while the monitor ran (uptime's denominator)."),
    "monitor_outage_open_since_timestamp_seconds": (
        "gauge", "While an outage is open: its recorded start, the first failing probe."),
    "monitor_outage_info": (
        "gauge", "While an outage is open: its cause and first error (1)."),
    "monitor_uptime_ratio": ("gauge", "Uptime over a window, counting known time only."),
}


def public_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to show as a label."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    # A dns target's ?type= says what is monitored and is no secret.
    query = parts.query if parts.scheme == "dns" and re.fullmatch(r"type=\w+", parts.query) else ""
    if not netloc:  # dns:///name (the system's server): urlunsplit would drop the slashes
        return f"{parts.scheme}://{parts.path}" + (f"?{query}" if query else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _Series:
    """Run-time metric state of one target."""

    __slots__ = ("buckets", "cert_expiry", "count", "down_since", "down_until", "downtime",
                 "info",
                 "info_labels", "key", "known", "known_from", "open", "outages", "paused",
                 "phases", "probes", "since", "status", "success", "sum", "up", "uptime")

    def __init__(self, key: str, info: tuple[tuple[str, str], ...], n_buckets: int) -> None:
        self.key = key  # 'target="…",location="…"', the labels every per-target sample has
        self.info = info
        self.info_labels = ""  # the info sample's other labels, set by Metrics.set_targets
        self.success: float | None = None
        self.buckets = [0] * n_buckets  # non-cumulative counts; +Inf is `count`
        self.sum = 0.0
        self.count = 0
        self.phases: dict[str, float] = {}
        self.probes = dict.fromkeys(RESULTS, 0)
        self.status = 0
        self.cert_expiry: float | None = None
        self.up: float | None = None
        self.since: float | None = None  # when the confirmed state began
        self.down_since: float | None = None
        # While down: where the running downtime stops if the probes since then succeed
        # (the record ends an outage at the first successful probe of the recovery).
        self.down_until: float | None = None
        self.downtime = 0.0
        self.known_from: float | None = None  # start of the running known time
        self.known = 0.0
        # While the monitor is offline: (known time was counting, downtime was counting).
        self.paused: tuple[bool, bool] | None = None
        # The open outage: (recorded start, cause, first error), or None.
        self.open: tuple[float, str, str] | None = None
        self.outages = 0
        self.uptime: dict[str, float] = {}


class Metrics:
    """All of the monitor's metrics, registered on the given registry."""

    def __init__(
        self,
        location: str,
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS,
        per_target_histogram: bool = True,
        store_errors: Callable[[], Mapping[str, int]] = dict,
        notification_queue: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.location = location
        self._buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self.per_target_histogram = per_target_histogram
        self._clock = clock
        self._rendered = 0.0  # when a scrape last read the counters (they never go back)
        # Known time and downtime count from here at the earliest: before this run the
        # monitor did not watch, and the record counts that gap as unknown.
        self.started = clock()
        self._store_errors = store_errors  # read at scrape time: the store counts them
        self._notification_queue = notification_queue
        self._series: dict[str, _Series] = {}
        self._info_extra: list[str] = []  # the info family's target-defined label names
        # The few process-wide metrics live in a registry of their own, which collect()
        # includes and exposition() renders with prometheus_client.
        own = self._own = CollectorRegistry()
        registry.register(self)
        self.lateness = Histogram(
            "monitor_scheduler_lateness_seconds", "How late probes start against their schedule.",
            ["location"], buckets=LATENESS_BUCKETS, registry=own,
        ).labels(location)
        self.missed_runs = Counter(
            "monitor_scheduler_missed_runs", "Scheduled probe runs skipped (missed, coalesced, "
            "still running or overloaded).", ["location", "reason"], registry=own,
        )
        self.reload_success = Gauge(
            "monitor_config_reload_success", "1 if the last configuration load worked.",
            ["location"], registry=own,
        ).labels(location)
        self.reload_timestamp = Gauge(
            "monitor_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.", ["location"],
            registry=own,
        ).labels(location)
        Gauge("monitor_notification_queue", "Notifications waiting in the outbox.",
              ["location"], registry=own).labels(location).set_function(
            lambda: float(self._notification_queue()))
        self.notifications = Counter(
            "monitor_notifications", "Notification delivery attempts by outcome.",
            ["location", "notifier", "outcome"], registry=own,
        )
        self.offline = Gauge(
            "monitor_offline", "1 while the monitor's own network is down (results unknown).",
            ["location"], registry=own,
        ).labels(location)
        self.offline.set(0)
        self.in_flight = Gauge(
            "monitor_probes_in_flight", "Probes running now.", ["location"], registry=own,
        ).labels(location)

    # --- updates -------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Declare the monitored targets: new ones get series, removed ones lose theirs."""
        wanted = {t.name: t for t in targets}
        for name in list(self._series):
            if name not in wanted:
                del self._series[name]
        loc = _escape(self.location)
        for name, target in wanted.items():
            info = (("url", public_url(target.url)), ("kind", target.kind), *target.labels)
            series = self._series.get(name)
            if series is None:
                key = f'target="{_escape(name)}",location="{loc}"'
                self._series[name] = _Series(key, info, len(self._buckets))
            else:
                series.info = info
        # One info family whose label set is the union of every target's own label keys.
        self._info_extra = extra = sorted(
            {k for s in self._series.values() for k, _ in s.info} - {"url", "kind"})
        for series in self._series.values():
            values = dict(series.info)
            series.info_labels = "".join(
                f',{k}="{_escape(values.get(k, ""))}"' for k in ("url", "kind", *extra))

    def observe(self, result: ProbeResult) -> None:
        series = self._series.get(result.target)
        if series is None:  # target removed while its probe ran
            return
        if result.unknown:  # the monitor's own fault says nothing of the target: count only
            series.probes[Failure.LOCAL.value] += 1
            return
        series.success = 1.0 if result.ok else 0.0
        if series.down_since is not None:
            if not result.ok:  # still down: the downtime runs on, the gap included
                series.down_until = None
            elif series.down_until is None:  # perhaps the first probe of the recovery
                series.down_until = max(result.started_at, self._rendered)
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
        """The tracker's confirmed state; `since` is when it began (for downtime).

        Known time and downtime count, as the record does, from the confirmed start (the
        first probe of the confirming run, before the confirmation), but never from before
        this run. A counter never goes back, so a period ends when it is confirmed over.
        """
        series = self._series.get(target)
        if series is None:
            return
        now = self._clock()
        start = min(now, max(since if since is not None else now, self.started))
        if series.down_since is not None:  # close the running downtime
            series.downtime += _running(0.0, series.down_since, now, series.down_until)
            series.down_since = series.down_until = None
        if state is State.UNKNOWN:
            if series.known_from is not None:
                series.known += max(0.0, now - series.known_from)
                series.known_from = None
            series.up = None
            series.since = None
            return
        series.since = since
        if series.known_from is None:
            series.known_from = start
        if state is State.UP:
            series.up = 1.0
        else:
            series.up = 0.0
            series.down_since = start

    def set_open_outage(self, target: str, outage: Outage | None) -> None:
        """The target's open outage from the record (None: none open).

        Gives the recorded start, cause and first error to Prometheus. An outage in a
        maintenance window counts neither as up nor as down, as in the record: its
        downtime is dropped and known time stops from now on. Call it right after
        `set_state`, with no await between, so that no scrape has shown that downtime.
        """
        series = self._series.get(target)
        if series is None:
            return
        if outage is None or outage.ended_at is not None:
            series.open = None
            return
        error = _UNPRINTABLE.sub(" ", outage.message).strip()[:FIRST_ERROR_MAX]
        series.open = (outage.started_at, outage.cause.value, error)
        if outage.maintenance:
            now = self._clock()
            series.down_since = None
            if series.known_from is not None:
                series.known += max(0.0, now - series.known_from)
                series.known_from = None

    def pause(self, now: float) -> None:
        """The monitor stops knowing (offline): known time and downtime stop counting."""
        for series in self._series.values():
            series.paused = (series.known_from is not None, series.down_since is not None)
            if series.down_since is not None:
                series.downtime += _running(0.0, series.down_since, now, series.down_until)
                series.down_since = series.down_until = None
            if series.known_from is not None:
                series.known += max(0.0, now - series.known_from)
                series.known_from = None

    def resume(self, now: float) -> None:
        """The monitor knows again (a new run period): what counted before the pause counts
        again from `now`, and nothing counts from before it."""
        self.started = max(self.started, now)
        for series in self._series.values():
            if series.paused is None:
                continue
            known, down = series.paused
            series.paused = None
            if known and series.known_from is None:
                series.known_from = now
            if down and series.down_since is None:
                series.down_since = now

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
        yield from self._own.collect()
        loc = self.location
        now = self._rendered = self._clock()
        extra = self._info_extra

        def family(kind: type[Metric], name: str, *labels: str) -> Metric:
            return kind(name, FAMILIES[name][1], labels=["target", "location", *labels])

        info = family(GaugeMetricFamily, "monitor_target_info", "url", "kind", *extra)
        success = family(GaugeMetricFamily, "monitor_probe_success")
        phase = family(GaugeMetricFamily, "monitor_probe_phase_seconds", "phase")
        probes = family(CounterMetricFamily, "monitor_probes", "result")
        status = family(GaugeMetricFamily, "monitor_http_status_code")
        cert = family(GaugeMetricFamily, "monitor_tls_cert_expiry_timestamp_seconds")
        up = family(GaugeMetricFamily, "monitor_target_up")
        state_since = family(GaugeMetricFamily, "monitor_target_state_since_timestamp_seconds")
        outages = family(CounterMetricFamily, "monitor_outages")
        downtime = family(CounterMetricFamily, "monitor_downtime_seconds")
        known = family(CounterMetricFamily, "monitor_known_seconds")
        open_since = family(GaugeMetricFamily, "monitor_outage_open_since_timestamp_seconds",
                            "cause")
        outage_info = family(GaugeMetricFamily, "monitor_outage_info", "cause", "first_error")
        uptime = family(GaugeMetricFamily, "monitor_uptime_ratio", "window")
        duration = family(HistogramMetricFamily, "monitor_probe_duration_seconds")
        bucket_names = [_le(b) for b in self._buckets]
        for name, s in self._series.items():
            values = dict(s.info)
            info.add_metric([name, loc, values["url"], values["kind"],
                             *(values.get(k, "") for k in extra)], 1.0)
            outages.add_metric([name, loc], s.outages)
            downtime.add_metric([name, loc],
                                _running(s.downtime, s.down_since, now, s.down_until))
            known.add_metric([name, loc], _running(s.known, s.known_from, now))
            if s.open is not None:
                since, cause, error = s.open
                open_since.add_metric([name, loc, cause], since)
                outage_info.add_metric([name, loc, cause, error], 1.0)
            if s.up is not None:
                up.add_metric([name, loc], s.up)
                if s.since is not None:
                    state_since.add_metric([name, loc], s.since)
            for window, ratio in s.uptime.items():
                uptime.add_metric([name, loc, window], ratio)
            if s.success is not None or s.probes[Failure.LOCAL.value]:
                for result, n in s.probes.items():
                    probes.add_metric([name, loc, result], n)
            if s.success is None:  # no probe result about the target yet
                continue
            success.add_metric([name, loc], s.success)
            status.add_metric([name, loc], s.status)
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
        for fam in (store_errors, info, success, duration, phase, probes, status, cert, up,
                    state_since, outages, downtime, known, open_since, outage_info, uptime):
            if fam.samples:  # an empty family would still print HELP and TYPE
                yield fam

    async def exposition(self, chunk: int = EXPOSITION_CHUNK) -> AsyncIterator[bytes]:
        """The Prometheus text format (0.0.4) of every sample collect() gives, in pieces.

        Yields to the event loop every `chunk` targets, so a scrape of 100,000 targets does
        not hold probes back; a target removed meanwhile is still rendered from the snapshot.
        """
        yield generate_latest(self._own)
        errors = [(f'location="{_escape(self.location)}",kind="{_escape(kind)}"', n)
                  for kind, n in self._store_errors().items()]
        if errors:
            yield _header("monitor_store_errors", "counter",
                          "History writes that failed, by kind of error.").encode()
            yield "".join(f"monitor_store_errors_total{{{labels}}} {_num(n)}\n"
                          for labels, n in errors).encode()
        series = list(self._series.values())
        now = self._rendered = self._clock()
        for name, render in self._renderers(now):
            started = False
            for i in range(0, len(series), chunk):
                lines: list[str] = []
                for s in series[i : i + chunk]:
                    render(s, lines)
                if lines:
                    if not started:
                        kind, help_text = FAMILIES[name]
                        lines.insert(0, _header(name, kind, help_text))
                        started = True
                    yield "".join(lines).encode()
                await asyncio.sleep(0)

    def _renderers(self, now: float) -> Iterator[tuple[str, Callable[[_Series, list[str]], None]]]:
        """(family name, function appending one target's lines), in collect()'s order."""
        probed = "monitor_probe_"

        def info(s: _Series, out: list[str]) -> None:
            out.append(f"monitor_target_info{{{s.key}{s.info_labels}}} 1.0\n")

        def gauge(name: str, value: Callable[[_Series], float | None]) -> Callable[..., None]:
            def render(s: _Series, out: list[str]) -> None:
                v = value(s)
                if v is not None:
                    out.append(f"{name}{{{s.key}}} {_num(v)}\n")
            return render

        def phases(s: _Series, out: list[str]) -> None:
            if s.success is not None:
                out.extend(f'{probed}phase_seconds{{{s.key},phase="{p}"}} {_num(s.phases[p])}\n'
                           for p in PHASES if p in s.phases)

        def probes(s: _Series, out: list[str]) -> None:
            if s.success is not None or s.probes[Failure.LOCAL.value]:
                out.extend(f'monitor_probes_total{{{s.key},result="{r}"}} {_num(n)}\n'
                           for r, n in s.probes.items())

        def uptime(s: _Series, out: list[str]) -> None:
            out.extend(f'monitor_uptime_ratio{{{s.key},window="{w}"}} {_num(r)}\n'
                       for w, r in s.uptime.items())

        les = [f',le="{_le(b)}"}} ' for b in self._buckets]
        name = "monitor_probe_duration_seconds"

        def histogram(s: _Series, out: list[str]) -> None:
            if s.success is None:
                return
            acc = 0
            for le, n in zip(les, s.buckets, strict=True):
                acc += n
                out.append(f"{name}_bucket{{{s.key}{le}{_num(acc)}\n")
            out.append(f'{name}_bucket{{{s.key},le="+Inf"}} {_num(s.count)}\n'
                       f"{name}_count{{{s.key}}} {_num(s.count)}\n"
                       f"{name}_sum{{{s.key}}} {_num(s.sum)}\n")

        def open_since(s: _Series, out: list[str]) -> None:
            if s.open is not None:
                out.append(f'monitor_outage_open_since_timestamp_seconds{{{s.key},'
                           f'cause="{s.open[1]}"}} {_num(s.open[0])}\n')

        def outage_info(s: _Series, out: list[str]) -> None:
            if s.open is not None:
                out.append(f'monitor_outage_info{{{s.key},cause="{s.open[1]}",'
                           f'first_error="{_escape(s.open[2])}"}} 1.0\n')

        yield "monitor_target_info", info
        yield "monitor_probe_success", gauge("monitor_probe_success", lambda s: s.success)
        if self.per_target_histogram:
            yield name, histogram
        yield "monitor_probe_phase_seconds", phases
        yield "monitor_probes", probes
        yield "monitor_http_status_code", gauge(
            "monitor_http_status_code", lambda s: None if s.success is None else s.status)
        yield "monitor_tls_cert_expiry_timestamp_seconds", gauge(
            "monitor_tls_cert_expiry_timestamp_seconds",
            lambda s: None if s.success is None else s.cert_expiry)
        yield "monitor_target_up", gauge("monitor_target_up", lambda s: s.up)
        yield "monitor_target_state_since_timestamp_seconds", gauge(
            "monitor_target_state_since_timestamp_seconds",
            lambda s: None if s.up is None else s.since)
        yield "monitor_outages", gauge("monitor_outages_total", lambda s: s.outages)
        yield "monitor_downtime_seconds", gauge(
            "monitor_downtime_seconds_total",
            lambda s: _running(s.downtime, s.down_since, now, s.down_until))
        yield "monitor_known_seconds", gauge(
            "monitor_known_seconds_total", lambda s: _running(s.known, s.known_from, now))
        yield "monitor_outage_open_since_timestamp_seconds", open_since
        yield "monitor_outage_info", outage_info
        yield "monitor_uptime_ratio", uptime


def _running(total: float, since: float | None, now: float, until: float | None = None) -> float:
    """A counter of seconds: what has been counted plus the period still running (up to
    `until`, when set, at the latest)."""
    end = now if until is None else min(now, until)
    return total + (max(0.0, end - since) if since is not None else 0.0)


def _header(name: str, kind: str, help_text: str) -> str:
    full = f"{name}_total" if kind == "counter" else name
    return f"# HELP {full} {help_text}\n# TYPE {full} {kind}\n"


def _num(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's float format)."""
    if value == 0:
        return "0.0"
    if value == 1:
        return "1.0"
    return floatToGoString(value)


def _escape(value: str) -> str:
    """A label value in the text format."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _le(bound: float) -> str:
    return repr(float(bound))
