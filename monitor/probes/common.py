"""What the tcp, tls, dns and icmp probes share: their URLs, the phase clock, name lookups
and the words for socket errors.

Phases keep the names of `monitor.model.PHASES` so that metrics and dashboards show every
kind the same way: resolve (the target's name, or the DNS server's), connect (TCP),
tls (handshake), processing (waiting for the answer: a TCP reply, a DNS response, an ICMP
echo). They are contiguous segments of one monotonic clock and add up to the duration.

Imports: stdlib, monitor.model, monitor.probes.resolve.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from monitor.model import PHASES, Failure, ProbeResult, Target
from monitor.probes.resolve import LOCAL_ERRNOS, Resolver

_SPACE = re.compile(r"\s")  # white space in a URL (one regex: 100,000 URLs at start)

__all__ = ["Clock", "Endpoint", "describe_os_error", "endpoint", "invalid_url", "shared_resolver",
           "ssl_reason"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Host and port of a URL; `port` is None when the kind has none (icmp)."""

    host: str  # a name or an IP literal, without brackets
    port: int | None


def endpoint(url: str, scheme: str, *, port: str = "required") -> tuple[Endpoint, SplitResult]:
    """Host and port of `scheme://host[:port]`; raises ValueError saying what is wrong.

    port: "required", "none" (icmp), or a default port number as text ("443").
    """
    try:
        parts = urlsplit(url)
        given = parts.port
    except ValueError:
        raise ValueError(f"must be a URL like {scheme}://host:port with a valid port") from None
    if parts.scheme != scheme or not parts.hostname or _SPACE.search(url) is not None:
        raise ValueError(f"must be a URL like {scheme}://host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{scheme}:// URLs take no user or password")
    if port == "none":
        if given is not None:
            raise ValueError(f"{scheme}:// URLs take no port")
        return Endpoint(parts.hostname, None), parts
    if given is None and port == "required":
        raise ValueError(f"must give a port: {scheme}://host:port")
    if given == 0:
        raise ValueError("port must be 1 to 65535")
    return Endpoint(parts.hostname, given if given is not None else int(port)), parts


def no_path(parts: SplitResult, scheme: str) -> None:
    """A tcp/tls/icmp URL is host and port only."""
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{scheme}:// URLs have no path, query or fragment")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.cache
def invalid_url(target: Target, started_at: float, reason: object) -> ProbeResult:
    """The result of a probe whose URL cannot be used: failed at once, class error."""
    return ProbeResult(target=target.name, started_at=started_at, duration=0.0, ok=False,
                       failure=Failure.ERROR, message=f"invalid URL: {reason}")


def shared_resolver() -> Resolver:
    """The resolver of these probes (resolv.conf read once; answers are never kept)."""
    return Resolver()


class Clock:
    """A probe's phase clock: the current phase, and seconds spent in each so far."""

    __slots__ = ("phase", "phases", "since")

    def __init__(self, phase: str = "resolve") -> None:
        self.phases: dict[str, float] = {}
        self.phase: str | None = phase
        self.since = time.perf_counter()

    def enter(self, phase: str | None) -> None:
        """Close the current phase and start `phase` (None: the clock stops)."""
        now = time.perf_counter()
        if self.phase is not None:
            self.phases[self.phase] = self.phases.get(self.phase, 0.0) + now - self.since
        self.phase = phase
        self.since = now

    def ordered(self) -> dict[str, float]:
        return {p: self.phases[p] for p in PHASES if p in self.phases}


def describe_os_error(error: OSError, doing: str = "cannot connect") -> tuple[Failure, str]:
    """Failure class and message for a socket error; the monitor's own shortages are LOCAL."""
    if error.errno in LOCAL_ERRNOS:
        return Failure.LOCAL, f"monitor out of resources: {_reason(error)}"
    if isinstance(error, socket.gaierror):
        return Failure.DNS, f"DNS lookup failed: {error.strerror or 'no such name'}"
    return Failure.CONNECT, f"{doing}: {_reason(error)}"


def _reason(error: OSError) -> str:
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", without the address
    if isinstance(error, ConnectionResetError):
        return os.strerror(errno.ECONNRESET)
    return str(error.strerror or "") or type(error).__name__


def ssl_reason(error: BaseException) -> str:
    """"[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" → "wrong version number"."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    text = str(getattr(error, "strerror", None) or getattr(error, "reason", None) or error)
    text = re.sub(r"^\[[A-Z0-9_: ]+\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or type(error).__name__
