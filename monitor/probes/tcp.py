"""The TCP probe (`tcp://host:port`): connect; optionally send `body` and judge the reply.

Phases: resolve (the host name, as for HTTP: hosts file then DNS, no cache), connect (TCP),
tls (the tls kind only, see monitor.probes.tls), processing (sending `body` and reading the
reply until `body_contains`/`body_regex` match). Without an expectation the probe ends once
connected (and `body`, if any, written): a port that accepts is up.

Failure classes: dns (the name), connect (refused, unreachable, reset), timeout (no
connection or no reply in time; `phase` says which), content (a reply came but did not
match: the server closed, the reply passed `max_body`, or time ran out after some bytes).

Imports: stdlib, monitor.model, monitor.probes.common, monitor.probes.resolve.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.model import Failure, ProbeResult, Target
from monitor.probes.common import (
    Clock,
    Endpoint,
    describe_os_error,
    endpoint,
    invalid_url,
    no_path,
    shared_resolver,
    ssl_reason,
)
from monitor.probes.resolve import Resolver

__all__ = ["TlsSetup", "parse_tcp_url", "probe_stream", "probe_tcp"]

_CHUNK = 65536


def parse_tcp_url(url: str) -> Endpoint:
    """tcp://host:port; raises ValueError saying what is wrong."""
    address, parts = endpoint(url, "tcp")
    no_path(parts, "tcp")
    return address


@dataclass(frozen=True, slots=True)
class TlsSetup:
    """How the tls kind wraps the connection (monitor.probes.tls builds it)."""

    context: ssl.SSLContext
    server_name: str | None
    # Reads notAfter from the handshake's SSLObject (verified or not).
    expiry: Callable[[ssl.SSLObject | None], float | None]


class _Exchange:
    """What a probe learnt on the way: the reply so far and the certificate's expiry."""

    __slots__ = ("cert_expiry", "reply")

    def __init__(self) -> None:
        self.reply = bytearray()
        self.cert_expiry: float | None = None


async def probe_tcp(
    target: Target, *, clock: Callable[[], float] = time.time, resolver: Resolver | None = None
) -> ProbeResult:
    """Probe `target` (kind tcp) once; never raises (but for cancellation)."""
    try:
        address = parse_tcp_url(target.url)
    except ValueError as exc:
        return invalid_url(target, clock(), str(exc))
    return await probe_stream(target, address, None, clock=clock, resolver=resolver)


async def probe_stream(
    target: Target,
    address: Endpoint,
    tls: TlsSetup | None,
    *,
    clock: Callable[[], float] = time.time,
    resolver: Resolver | None = None,
) -> ProbeResult:
    """Connect to `address`, wrap in TLS if asked, then send and expect: tcp and tls alike."""
    started_at = clock()
    timer = Clock()
    exchange = _Exchange()
    failure: Failure | None = None
    message = ""
    phase: str | None = None
    writer: asyncio.StreamWriter | None = None
    deadline = asyncio.timeout(target.timeout)
    try:
        async with deadline:
            reader, writer = await _connect(target, address, timer, resolver)
            if tls is not None:
                timer.enter("tls")
                await writer.start_tls(tls.context, server_hostname=tls.server_name)
                exchange.cert_expiry = tls.expiry(writer.get_extra_info("ssl_object"))
            timer.enter("processing")
            failure, message = await _converse(target, reader, writer, exchange)
    except TimeoutError:
        phase = timer.phase or "processing"
        if not deadline.expired():
            failure, message = Failure.TIMEOUT, "timed out"
        elif phase == "resolve":
            failure, message = Failure.DNS, f"DNS lookup timed out after {target.timeout:g}s"
        elif phase == "processing" and exchange.reply and _expects(target):
            failure, message = Failure.CONTENT, _mismatch(target, exchange, "after " + (
                f"{target.timeout:g}s"))
        else:
            failure = Failure.TIMEOUT
            message = f"timed out after {target.timeout:g}s during {phase}"
    except ssl.SSLCertVerificationError as exc:
        failure, phase = Failure.TLS, "tls"
        message = f"certificate verify failed: {ssl_reason(exc)}"
    except ssl.SSLError as exc:
        failure, phase = Failure.TLS, "tls"
        message = f"TLS handshake failed: {ssl_reason(exc)}"
    except OSError as exc:
        phase = timer.phase
        failure, message = describe_os_error(
            exc, "cannot connect" if phase in ("resolve", "connect") else "connection error")
        if phase == "tls" and failure is Failure.CONNECT:  # closed mid-handshake
            failure, message = Failure.TLS, "TLS handshake failed: " + message.partition(": ")[2]
    finally:
        if writer is not None:
            writer.transport.abort()  # no lingering close: a hostile peer costs nothing more
    timer.enter(None)
    phases = timer.ordered()
    return ProbeResult(
        target=target.name,
        started_at=started_at,
        duration=sum(phases.values()),
        ok=failure is None,
        failure=failure,
        message=message,
        phases=phases,
        phase=phase,
        cert_expiry=exchange.cert_expiry,
    )


async def _connect(
    target: Target, address: Endpoint, timer: Clock, resolver: Resolver | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The first address of the host that accepts; the first address's error otherwise."""
    addresses = await (resolver or shared_resolver()).lookup(address.host)
    timer.enter("connect")
    local = (target.source_address, 0) if target.source_address else None
    first: OSError | None = None
    for ip in addresses:
        try:
            return await asyncio.open_connection(ip, address.port, local_addr=local,
                                                 limit=_CHUNK)
        except OSError as exc:
            first = first or exc
    raise first or OSError("no address")


def _expects(target: Target) -> bool:
    return target.body_contains is not None or target.body_regex is not None


async def _converse(
    target: Target,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    exchange: _Exchange,
) -> tuple[Failure | None, str]:
    if target.body:
        writer.write(target.body.encode())
        await writer.drain()
    if not _expects(target):
        return None, ""
    while len(exchange.reply) < target.max_body_bytes:
        chunk = await reader.read(min(_CHUNK, target.max_body_bytes - len(exchange.reply)))
        if not chunk:
            return Failure.CONTENT, _mismatch(target, exchange, "before the server closed")
        exchange.reply += chunk
        if _matches(target, bytes(exchange.reply)):
            return None, ""
    return Failure.CONTENT, _mismatch(target, exchange,
                                      f"in the first {target.max_body_bytes} bytes")


def _matches(target: Target, reply: bytes) -> bool:
    text = reply.decode("utf-8", errors="replace")
    if target.body_contains is not None and target.body_contains not in text:
        return False
    return target.body_regex is None or re.search(target.body_regex, text) is not None


def _mismatch(target: Target, exchange: _Exchange, when: str) -> str:
    got = f"{len(exchange.reply)} bytes"
    if target.body_contains is not None and target.body_contains not in exchange.reply.decode(
            "utf-8", errors="replace"):
        return f"reply does not contain {target.body_contains!r} ({got}, {when})"
    return f"reply does not match {target.body_regex!r} ({got}, {when})"


