"""Prometheus metrics: the contract in docs/design.md, rendered by one custom collector.

Per-target state lives in plain objects updated on every probe and turned into metric
families only when Prometheus scrapes. That keeps the per-probe cost to a few attribute
writes and makes removing a target's series a dictionary delete.

One family table (`Metrics.families`: name, type, help and a generator of samples) feeds
two renderings, which therefore cannot disagree: `collect()` for the registry (tests,
`get_sample_value`, `generate_latest`, `describe()`), and `exposition()` for /metrics, which
writes the text format by hand from label strings cached per target (`Labels.text`) and
yields to the event loop between chunks of targets. prometheus_client's generate_latest
costs ~6 µs a sample (2.6 s for 10,000 targets with their histograms, the event loop blocked
throughout); the hand-written text well under 1 µs.

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
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase
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
RENDER_EVERY = 2.0  # seconds between two renderings of the probed targets' lines
# What changes a static family's samples (Family.static): a probe's answer, the confirmed
# state and outages, the uptime refresh, the target list (which starts afresh).
STATIC_GROUPS = ("probe", "state", "uptime", "info")

# Name: type, help of the families collected at scrape time, in the order they are rendered.
FAMILIES: dict[str, tuple[str, str]] = {
    "monitor_store_errors": ("counter", "History writes that failed, by kind of error."),
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


def _escape(value: str) -> str:
    """A label value in the text format."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


class Labels:
    """Label pairs, with their text-format rendering (`,name="value"` each) made once;
    `first`: the labels that open a sample's label set (no leading comma)."""

    __slots__ = ("pairs", "text")

    def __init__(self, *pairs: tuple[str, str], first: bool = False) -> None:
        self.pairs = pairs
        text = "".join(f',{k}="{_escape(v)}"' for k, v in pairs)
        self.text = text[1:] if first else text


NONE = Labels()
_PHASE = {p: Labels(("phase", p)) for p in PHASES}
_RESULT = {r: Labels(("result", r)) for r in RESULTS}
_WINDOW = {w: Labels(("window", w)) for w in UPTIME_WINDOWS}
_INF = Labels(("le", "+Inf"))
# One sample: suffix of the family's sample name, the labels of its target (or location),
# its own labels, and the value.
Sample = tuple[str, Labels, Labels, float]


class Family:
    """A metric family: what a scrape shows, and the generator of its samples."""

    __slots__ = ("help", "kind", "name", "per_probe", "per_target", "sample_name", "samples",
                 "static")

    def __init__(self, name: str,
                 samples: Callable[[Sequence[_Series], float], Iterator[Sample]], *,
                 per_target: bool = True, static: str | None = None,
                 per_probe: bool = False) -> None:
        self.name = name
        self.kind, self.help = FAMILIES[name]
        self.sample_name = f"{name}_total" if self.kind == "counter" else name
        self.samples = samples  # (series, now) → samples; ignores series unless per_target
        self.per_target = per_target
        # Static: its samples change only through the setters that mark their series'
        # chunk as touched for this group (`Metrics._touch`), not with every probe or with
        # the clock, so a scrape reuses the text of an untouched chunk.
        self.static = static
        # Per probe: its samples of a target change only when the target is probed: they
        # are rendered once after that (`Metrics.render_probed`, or the next scrape if it
        # comes first), and a scrape joins the lines kept for every target.
        self.per_probe = per_probe

    def empty(self) -> Metric:
        return Metric(self.name, self.help, self.kind)

    def header(self) -> str:
        return f"# HELP {self.sample_name} {self.help}\n# TYPE {self.sample_name} {self.kind}\n"


# A URL that `public_url` returns unchanged: lower-case scheme and host, a port without a
# leading zero, no user info, query or fragment. Most are; at 100,000 targets the shortcut
# saves half a second of start-up.
_PLAIN_URL = re.compile(r"(?!dns:)[a-z][a-z0-9+.-]*://[a-z0-9.-]+(?::[1-9][0-9]{0,3})?(?:/[^?#@]*)?")


def public_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to show as a label."""
    if _PLAIN_URL.fullmatch(url):
        return url
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

    __slots__ = ("buckets", "cert_expiry", "chunk", "count", "down_since", "down_until",
                 "downtime", "info", "info_labels", "key", "known", "known_from", "open",
                 "outages", "paused", "phases", "probe_texts", "probes", "since", "status",
                 "success", "sum", "up", "uptime")

    def __init__(self, key: Labels, info: tuple[tuple[str, str], ...], n_buckets: int) -> None:
        self.key = key  # target and location: the labels every per-target sample has
        self.chunk = 0  # which chunk of the exposition it is rendered in (set_targets)
        # The per-probe families' lines, in order, as the last scrape rendered them; None
        # once a probe changed them (the next scrape renders them again).
        self.probe_texts: tuple[bytes, ...] | None = None
        self.info = info
        self.info_labels = NONE  # the info sample's other labels, set by Metrics.set_targets
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
        # The open outage: (recorded start, its cause label, its cause and first error).
        self.open: tuple[float, Labels, Labels] | None = None
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
        # The text of the static families by (family, chunk), rendered for the series
        # layout `_layout` (set_targets changes it); `_dirty`: chunks touched since the
        # last scrape began. At 100,000 targets this halves what a scrape renders.
        self._layout = 0
        self._texts: dict[tuple[str, int], tuple[int, bytes]] = {}
        self._dirty: dict[str, set[int]] = {group: set() for group in STATIC_GROUPS}
        self._stale: set[_Series] = set()  # per-probe lines to render again (render_probed)
        self._info_extra: list[str] = []  # the info family's target-defined label names
        # The few process-wide metrics live in a registry of their own, which collect()
        # includes and exposition() renders with prometheus_client.
        own = self._own = CollectorRegistry()
        lateness = Histogram(
            "monitor_scheduler_lateness_seconds", "How late probes start against their schedule.",
            ["location"], buckets=LATENESS_BUCKETS, registry=own)
        loop_lag = Histogram(
            "monitor_event_loop_lag_seconds", "How much later than asked the event loop "
            "ran the scheduler's watch (every 0.1 s): its longest blocks.",
            ["location"], buckets=LATENESS_BUCKETS, registry=own)
        self.missed_runs = Counter(
            "monitor_scheduler_missed_runs", "Scheduled probe runs skipped (missed, coalesced, "
            "still running or overloaded).", ["location", "reason"], registry=own)
        reload_success = Gauge(
            "monitor_config_reload_success", "1 if the last configuration load worked.",
            ["location"], registry=own)
        reload_timestamp = Gauge(
            "monitor_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.", ["location"],
            registry=own)
        queue = Gauge("monitor_notification_queue", "Notifications waiting in the outbox.",
                      ["location"], registry=own)
        self.notifications = Counter(
            "monitor_notifications", "Notification delivery attempts by outcome.",
            ["location", "notifier", "outcome"], registry=own)
        offline = Gauge(
            "monitor_offline", "1 while the monitor's own network is down (results unknown).",
            ["location"], registry=own)
        in_flight = Gauge("monitor_probes_in_flight", "Probes running now.", ["location"],
                          registry=own)
        self._own_metrics: tuple[MetricWrapperBase, ...] = (
            lateness, loop_lag, self.missed_runs, reload_success, reload_timestamp, queue,
            self.notifications, offline, in_flight)
        self.lateness = lateness.labels(location)
        self.loop_lag = loop_lag.labels(location)
        self.reload_success = reload_success.labels(location)
        self.reload_timestamp = reload_timestamp.labels(location)
        queue.labels(location).set_function(lambda: float(self._notification_queue()))
        self.offline = offline.labels(location)
        self.offline.set(0)
        self.in_flight = in_flight.labels(location)
        self.families = self._families()
        self._per_probe = tuple(f for f in self.families if f.per_probe)
        registry.register(self)  # after the families exist: it calls describe()

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
                key = Labels(("target", name), ("location", self.location), first=True)
                self._series[name] = _Series(key, info, len(self._buckets))
            else:
                series.info = info
        # One info family whose label set is the union of every target's own label keys.
        self._info_extra = extra = sorted(
            {k for s in self._series.values() for k, _ in s.info} - {"url", "kind"})
        for i, series in enumerate(self._series.values()):
            values = dict(series.info)
            series.info_labels = Labels(*((k, values.get(k, "")) for k in ("url", "kind", *extra)))
            series.chunk = i // EXPOSITION_CHUNK
        self._layout += 1
        self._texts.clear()

    def _probe_texts(self, series: _Series, now: float) -> tuple[bytes, ...]:
        """The per-probe families' lines of `series`, rendered again only if a probe
        changed them since: once per scrape at most, and once per probe at most."""
        if series.probe_texts is None:
            series.probe_texts = tuple(_render(f, (series,), now) for f in self._per_probe)
        return series.probe_texts

    def _touch(self, series: _Series, group: str) -> None:
        """A sample of `series` in the static families of `group` changed: their text for
        its chunk is rendered anew."""
        self._dirty[group].add(series.chunk)

    def observe(self, result: ProbeResult) -> None:
        series = self._series.get(result.target)
        if series is None:  # target removed while its probe ran
            return
        if result.unknown:  # the monitor's own fault says nothing of the target: count only
            series.probes[Failure.LOCAL.value] += 1
            self._stale_texts(series)
            return
        success, status = (1.0 if result.ok else 0.0), result.status or 0
        cert = series.cert_expiry if result.cert_expiry is None else result.cert_expiry
        if (success, status, cert) != (series.success, series.status, series.cert_expiry):
            self._touch(series, "probe")
        series.success = success
        if series.down_since is not None:
            if not result.ok:  # still down: the downtime runs on, the gap included
                series.down_until = None
            elif series.down_until is None:  # perhaps the first probe of the recovery
                series.down_until = max(result.started_at, self._rendered)
        series.probes["ok" if result.ok else (result.failure or Failure.ERROR).value] += 1
        series.status = status
        series.phases = dict(result.phases)
        series.cert_expiry = cert
        if self.per_target_histogram:
            i = bisect.bisect_left(self._buckets, result.duration)  # first bucket with le >= d
            if i < len(self._buckets):
                series.buckets[i] += 1
            series.sum += result.duration
            series.count += 1
        self._stale_texts(series)

    def _stale_texts(self, series: _Series) -> None:
        series.probe_texts = None
        self._stale.add(series)

    async def render_probed(self, chunk: int = EXPOSITION_CHUNK) -> None:
        """Render the per-probe lines of the targets probed since the last call (the daemon
        calls it every RENDER_EVERY seconds), a chunk at a time between turns of the event
        loop: a scrape then finds them ready, whatever its interval."""
        stale, self._stale = list(self._stale), set()
        now = self._clock()
        for i in range(0, len(stale), chunk):
            for series in stale[i : i + chunk]:
                self._probe_texts(series, now)
            await asyncio.sleep(0)

    def set_state(self, target: str, state: State, since: float | None) -> None:
        """The tracker's confirmed state; `since` is when it began (for downtime).

        Known time and downtime count, as the record does, from the confirmed start (the
        first probe of the confirming run, before the confirmation), but never from before
        this run. A counter never goes back, so a period ends when it is confirmed over.
        """
        series = self._series.get(target)
        if series is None:
            return
        self._touch(series, "state")
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
        self._touch(series, "state")
        if outage is None or outage.ended_at is not None:
            series.open = None
            return
        error = _UNPRINTABLE.sub(" ", outage.message).strip()[:FIRST_ERROR_MAX]
        cause = outage.cause.value
        series.open = (outage.started_at, Labels(("cause", cause)),
                       Labels(("cause", cause), ("first_error", error)))
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
            self._touch(series, "state")

    def set_uptime(self, target: str, window: str, ratio: float | None) -> None:
        if (series := self._series.get(target)) is None:
            return
        if series.uptime.get(window) == ratio:
            return
        self._touch(series, "uptime")
        if ratio is None:
            series.uptime.pop(window, None)
        else:
            series.uptime[window] = ratio

    def uptime_of(self, target: str) -> dict[str, float]:
        series = self._series.get(target)
        return dict(series.uptime) if series else {}

    # --- exposition ------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """Every family collect() may give, without samples (for the registry's name check)."""
        for metric in self._own_metrics:
            yield from metric.describe()
        for fam in self.families:
            yield fam.empty()

    def collect(self) -> Iterable[Metric]:
        """The families with samples, as prometheus_client metric families."""
        yield from self._own.collect()
        series = list(self._series.values())
        now = self._rendered = self._clock()
        for fam in self.families:
            metric = fam.empty()
            for suffix, key, own, value in fam.samples(series, now):
                metric.add_sample(fam.sample_name + suffix, dict(key.pairs + own.pairs), value)
            if metric.samples:  # an empty family would still print HELP and TYPE
                yield metric

    async def exposition(self, chunk: int = EXPOSITION_CHUNK) -> AsyncIterator[bytes]:
        """The Prometheus text format (0.0.4) of every sample collect() gives, in pieces.

        Yields to the event loop every `chunk` targets, so a scrape of 100,000 targets does
        not hold probes back; a target removed meanwhile is still rendered from the snapshot.
        """
        yield generate_latest(self._own)
        series = list(self._series.values())
        now = self._rendered = self._clock()
        layout, dirty = self._layout, self._dirty
        self._dirty = {group: set() for group in STATIC_GROUPS}
        reuse = chunk == EXPOSITION_CHUNK  # the chunks the series know they are in
        for fam in self.families:
            started = False
            step = chunk if fam.per_target else max(1, len(series))
            for i in range(0, max(1, len(series)), step):
                key = (fam.name, i // step)
                kept = self._texts.get(key) if fam.static and reuse else None
                if (kept is not None and kept[0] == layout and fam.static
                        and key[1] not in dirty[fam.static]):
                    text = kept[1]
                elif fam.per_probe:
                    k = self._per_probe.index(fam)
                    text = b"".join([self._probe_texts(s, now)[k] for s in series[i : i + step]])
                else:
                    text = _render(fam, series[i : i + step], now)
                    if fam.static and reuse and layout == self._layout:
                        self._texts[key] = (layout, text)
                if text:
                    if not started:
                        text = fam.header().encode() + text
                        started = True
                    yield text
                if fam.per_target:
                    await asyncio.sleep(0)

    def _families(self) -> tuple[Family, ...]:
        """The family table: each family's samples, in FAMILIES' order. Per-target families
        skip a target with no probe result about it yet (`success` None) where a value would
        say nothing (status, phases, the histogram)."""
        location = Labels(("location", self.location), first=True)

        def store_errors(_: Sequence[_Series], now: float) -> Iterator[Sample]:
            for kind, n in self._store_errors().items():
                yield "", location, Labels(("kind", kind)), n

        def info(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                yield "", s.key, s.info_labels, 1.0

        def gauge(value: Callable[[_Series, float], float | None],
                  ) -> Callable[[Sequence[_Series], float], Iterator[Sample]]:
            def samples(series: Sequence[_Series], now: float) -> Iterator[Sample]:
                for s in series:
                    if (v := value(s, now)) is not None:
                        yield "", s.key, NONE, v
            return samples

        les = [Labels(("le", _le(b))) for b in self._buckets]

        def duration(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                if s.success is None:
                    continue
                acc = 0
                for le, n in zip(les, s.buckets, strict=True):
                    acc += n
                    yield "_bucket", s.key, le, acc
                yield "_bucket", s.key, _INF, s.count
                yield "_count", s.key, NONE, s.count
                yield "_sum", s.key, NONE, s.sum

        def phases(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                if s.success is not None:
                    for p in PHASES:
                        if p in s.phases:
                            yield "", s.key, _PHASE[p], s.phases[p]

        def probes(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                if s.success is not None or s.probes[Failure.LOCAL.value]:
                    for r, n in s.probes.items():
                        yield "", s.key, _RESULT[r], n

        def open_since(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                if s.open is not None:
                    yield "", s.key, s.open[1], s.open[0]

        def outage_info(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                if s.open is not None:
                    yield "", s.key, s.open[2], 1.0

        def uptime(series: Sequence[_Series], now: float) -> Iterator[Sample]:
            for s in series:
                for w, r in s.uptime.items():
                    yield "", s.key, _WINDOW.get(w) or Labels(("window", w)), r

        families = [
            Family("monitor_store_errors", store_errors, per_target=False),
            Family("monitor_target_info", info, static="info"),
            Family("monitor_probe_success", gauge(lambda s, now: s.success), static="probe"),
            Family("monitor_probe_duration_seconds", duration, per_probe=True),
            Family("monitor_probe_phase_seconds", phases, per_probe=True),
            Family("monitor_probes", probes, per_probe=True),
            Family("monitor_http_status_code",
                   gauge(lambda s, now: None if s.success is None else s.status), static="probe"),
            Family("monitor_tls_cert_expiry_timestamp_seconds",
                   gauge(lambda s, now: None if s.success is None else s.cert_expiry),
                   static="probe"),
            Family("monitor_target_up", gauge(lambda s, now: s.up), static="state"),
            Family("monitor_target_state_since_timestamp_seconds",
                   gauge(lambda s, now: None if s.up is None else s.since), static="state"),
            Family("monitor_outages", gauge(lambda s, now: s.outages), static="state"),
            Family("monitor_downtime_seconds", gauge(
                lambda s, now: _running(s.downtime, s.down_since, now, s.down_until))),
            Family("monitor_known_seconds",
                   gauge(lambda s, now: _running(s.known, s.known_from, now))),
            Family("monitor_outage_open_since_timestamp_seconds", open_since, static="state"),
            Family("monitor_outage_info", outage_info, static="state"),
            Family("monitor_uptime_ratio", uptime, static="uptime"),
        ]
        if not self.per_target_histogram:
            families = [f for f in families if f.name != "monitor_probe_duration_seconds"]
        assert [f.name for f in families] == [n for n in FAMILIES if n in {
            f.name for f in families}], "the table follows FAMILIES' order"
        return tuple(families)


def _render(fam: Family, series: Sequence[_Series], now: float) -> bytes:
    """The text-format lines of `fam`'s samples of `series` (no HELP and TYPE)."""
    name = fam.sample_name
    return "".join([f"{name}{suffix}{{{labels.text}{own.text}}} {_num(value)}\n"
                    for suffix, labels, own, value in fam.samples(series, now)]).encode()


def _running(total: float, since: float | None, now: float, until: float | None = None) -> float:
    """A counter of seconds: what has been counted plus the period still running (up to
    `until`, when set, at the latest)."""
    end = now if until is None else min(now, until)
    return total + (max(0.0, end - since) if since is not None else 0.0)


_go_float: Callable[[float], str] = floatToGoString  # typed: the library's is not


def _num(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's float format), with shortcuts for
    the common cases: below 1e6 Go's format and Python's repr() agree."""
    if type(value) is int:
        if -1_000_000 < value < 1_000_000:
            return f"{value}.0"
    elif type(value) is float and -1e6 < value < 1e6:  # False for NaN
        return repr(value)
    return _go_float(value)


def _le(bound: float) -> str:
    return repr(float(bound))
