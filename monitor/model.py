"""Plain, immutable data types shared by every layer.

This module imports nothing from the package: every other module may import it.
Times are POSIX timestamps (float seconds, UTC); durations are float seconds.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Failure(enum.StrEnum):
    """Why a probe failed. The value is the `reason`/`result` label and the outage cause."""

    DNS = "dns"  # no such name, resolver failure
    CONNECT = "connect"  # refused, unreachable, reset before a response
    TLS = "tls"  # handshake or certificate
    TIMEOUT = "timeout"  # the probe deadline passed; `ProbeResult.phase` says where
    HTTP = "http"  # status not expected, redirect loop, malformed response
    CONTENT = "content"  # body expectation failed
    ERROR = "error"  # anything else
    # The monitor's own fault, not the target's: offline, out of descriptors, overloaded.
    # Such a result is *unknown*: it never opens, extends or closes an outage.
    LOCAL = "local"
    # The proxy a target is probed through failed (down, refused us, bad credentials): as
    # for LOCAL, the result says nothing of the target and is *unknown*.
    PROXY = "proxy"


class State(enum.StrEnum):
    """Confirmed state of a target."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


# Phases as the blackbox exporter names them, in the order a request passes through them.
PHASES: tuple[str, ...] = ("resolve", "connect", "tls", "processing", "transfer")


@dataclass(frozen=True, slots=True)
class StatusRange:
    """An inclusive range of accepted HTTP status codes."""

    low: int
    high: int

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and self.low <= status <= self.high


# How a target may follow redirects: config validates against these, the probe obeys them.
MAX_REDIRECTS = 10  # hard cap whatever the target asks for
REDIRECT_POLICIES = ("follow", "same-origin", "none")


@dataclass(frozen=True, slots=True)
class Target:
    """What to probe and how to judge it. Built by `monitor.config`; never mutated."""

    name: str  # unique, [a-z0-9_.-]+, safe as a label value
    url: str
    kind: str = "http"
    interval: float = 60.0
    timeout: float = 10.0
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None  # request body
    expect_status: tuple[StatusRange, ...] = (StatusRange(200, 399),)
    body_contains: str | None = None
    body_regex: str | None = None
    follow_redirects: bool = True  # False is the same as redirects="none"
    redirects: str = "follow"  # one of REDIRECT_POLICIES (see monitor.probes.http)
    max_redirects: int = MAX_REDIRECTS
    verify_tls: bool = True
    max_body_bytes: int = 1024 * 1024  # decompressed bytes read at most
    down_after: int = 3
    up_after: int = 1
    labels: tuple[tuple[str, str], ...] = ()
    notifiers: tuple[str, ...] = ()
    source_address: str | None = None  # local address to probe from (a vantage point's IP)
    # Kinds other than http (monitor.probes.<kind>); `body` is what tcp/tls send, and
    # body_contains/body_regex judge a tcp/tls reply or the answers of a dns query.
    min_days_left: float | None = None  # tls, https: fail when the certificate expires sooner
    expect_rcode: tuple[str, ...] = ("NOERROR",)  # dns: accepted response codes
    packets: int = 3  # icmp: echo requests per probe
    max_loss: float = 0.5  # icmp: the share of packets that may be lost (0..1) and still pass
    proxy: str | None = None  # http: http://[user:pass@]host:port or socks5://...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe. A probe never raises: every failure is described here."""

    target: str
    started_at: float  # POSIX time the probe started
    duration: float  # seconds, start to verdict
    ok: bool
    failure: Failure | None = None
    message: str = ""  # one line, no credentials
    status: int | None = None  # final HTTP status, if a response arrived
    phases: Mapping[str, float] = field(default_factory=dict)  # seconds by phase name
    phase: str | None = None  # the phase a failure happened in (always set for timeouts)
    cert_expiry: float | None = None  # POSIX time the server certificate expires
    truncated: bool = False  # body reading stopped at max_body_bytes
    rtt: float | None = None  # icmp: mean round-trip time of the answered packets, seconds
    loss: float | None = None  # icmp: share of packets unanswered (0..1)

    @property
    def unknown(self) -> bool:
        """True when the monitor itself was at fault: the result says nothing of the target."""
        return self.failure is Failure.LOCAL or self.failure is Failure.PROXY

    def values(self) -> PackedResult:
        """The result as one flat tuple of numbers and strings: cheap to pickle, and, unlike
        the object, out of the garbage collector's sight once a pass has looked at it (such a
        tuple is untracked; one holding a dict never is, one holding tuples only after
        several passes). What the daemon keeps per target for long is kept this way: at
        100,000 targets, result objects made every full collection walk millions of objects
        (docs/design.md, "Memory and the garbage collector").

        The fields in declaration order, the failure as its value, the phases last as name,
        seconds, name, seconds..."""
        return (self.target, self.started_at, self.duration, self.ok,
                None if self.failure is None else self.failure.value, self.message,
                self.status, self.phase, self.cert_expiry, self.truncated, self.rtt, self.loss,
                *itertools.chain.from_iterable(self.phases.items()))

    @classmethod
    def from_values(cls, values: PackedResult) -> ProbeResult:
        (target, started_at, duration, ok, failure, message, status, phase, cert_expiry,
         truncated, rtt, loss, *phases) = values
        return cls(target, started_at, duration, ok, None if failure is None else Failure(failure),
                   message, status, dict(zip(phases[::2], phases[1::2], strict=True)), phase,
                   cert_expiry, truncated, rtt, loss)


PackedResult = tuple[Any, ...]  # `ProbeResult.values()`


@dataclass(frozen=True, slots=True)
class Transition:
    """A confirmed change of state, emitted by the tracker."""

    target: str
    previous: State
    state: State
    at: float  # start of the *first* probe of the confirming run
    result: ProbeResult  # the probe that confirmed it
    first_failure: ProbeResult | None = None  # for → down: the first failing probe of the run
    failures: Mapping[str, int] = field(default_factory=dict)  # class → count in the run


@dataclass(frozen=True, slots=True)
class Outage:
    """A period during which a target was confirmed down from one location."""

    id: int
    target: str
    location: str
    started_at: float
    ended_at: float | None  # None while open
    cause: Failure
    message: str
    failed_probes: int
    counts: Mapping[str, int] = field(default_factory=dict)  # failure class → probes
    maintenance: bool = False

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def duration(self, now: float) -> float:
        return (self.ended_at if self.ended_at is not None else now) - self.started_at


@dataclass(frozen=True, slots=True)
class OutageTime:
    """How an outage's time splits, as of a given moment.

    `known`: seconds inside the monitor's run periods, when it saw the target down (the
    outage's honest duration). `unknown`: seconds outside them, when the monitor was not
    running or was offline; the target may have been up or down.
    """

    known: float
    unknown: float


@dataclass(frozen=True, slots=True)
class OutageQuery:
    """Which outages to list: the filters of the API, the CLI and the store, declared once.

    An outage matches when it overlaps [since, until] (an open one lasts until now) and
    every filter given (None: any) holds. Results come newest first, at most `limit`.
    """

    target: str | None = None
    location: str | None = None
    since: float | None = None
    until: float | None = None
    open: bool | None = None  # True: only open outages; False: only closed ones
    limit: int | None = 1000  # None: all

    def matches(self, outage: Outage) -> bool:
        """The filters (not the limit) applied to one outage; the store's SQL says the same."""
        return (
            (self.target is None or outage.target == self.target)
            and (self.location is None or outage.location == self.location)
            and (self.since is None or outage.ended_at is None or outage.ended_at >= self.since)
            and (self.until is None or outage.started_at <= self.until)
            and (self.open is None or (outage.ended_at is None) == self.open)
        )
