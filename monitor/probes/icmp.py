"""The ICMP probe (`icmp://host`): `packets` echo requests, judged by the share lost.

Echo goes through icmplib (pure Python, asyncio, no thread), first over an unprivileged
ICMP datagram socket (Linux allows it to the groups in net.ipv4.ping_group_range), else
over a raw socket (root or CAP_NET_RAW). When neither is allowed the result is `local`
(the monitor's own fault, so unknown) with a message saying what to change.

Requests go one after another, 0.2 s apart; each waits for its reply at most the time
left shared evenly among the packets still to send, so the probe ends within `timeout`.
A request the kernel refuses to send (no route, a blackhole route) counts as lost.

Phases: resolve (the host name), processing (the mean round-trip time of the answered
packets). The duration is their sum: the response time a user of ping reads. `rtt` and
`loss` are set on the result; the message of a success says them too.

Failure classes: dns (the name), connect (more than `max_loss` of the packets lost:
nothing, or too little, came back), local (no ICMP socket allowed).

Imports: stdlib, icmplib, monitor.model, monitor.probes.common, monitor.probes.resolve.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable

import icmplib  # type: ignore[import-untyped]  # no type hints shipped

from monitor.model import Failure, ProbeResult, Target
from monitor.probes.common import (
    Clock,
    describe_os_error,
    endpoint,
    invalid_url,
    no_path,
    shared_resolver,
)
from monitor.probes.resolve import Resolver

__all__ = ["GAP", "parse_icmp_url", "probe_icmp"]

GAP = 0.2  # seconds between two echo requests of one probe
_MIN_WAIT = 0.05  # a reply is waited for at least this long
# Echo identifiers, distinct between concurrent probes (raw sockets see every reply).
_IDS = itertools.count(random.randrange(1, 0xFFFF))
# Which socket works: None until known (the first probe tries unprivileged, then raw).
_privileged: bool | None = None

NO_SOCKET = ("ICMP not permitted: allow this group in net.ipv4.ping_group_range "
             "(sysctl), or run the monitor as root or with CAP_NET_RAW")


def parse_icmp_url(url: str) -> str:
    """icmp://host; the host. Raises ValueError saying what is wrong."""
    address, parts = endpoint(url, "icmp", port="none")
    no_path(parts, "icmp")
    return address.host


async def probe_icmp(
    target: Target, *, clock: Callable[[], float] = time.time, resolver: Resolver | None = None
) -> ProbeResult:
    """Probe `target` (kind icmp) once; never raises (but for cancellation)."""
    started_at = clock()
    try:
        host = parse_icmp_url(target.url)
    except ValueError as exc:
        return invalid_url(target, started_at, exc)
    timer = Clock()
    begun = time.perf_counter()
    failure: Failure | None = None
    message = ""
    phase: str | None = None
    echoes = _Echoes()
    try:
        async with asyncio.timeout(target.timeout):
            address = (await (resolver or shared_resolver()).lookup(host))[0]
        timer.enter("processing")
        end = begun + target.timeout
        # The waits end by `end`; this deadline only guards against a stuck send.
        async with asyncio.timeout(max(0.0, end - time.perf_counter()) + 0.5):
            await _echo(target, address, end, echoes)
    except TimeoutError:
        phase = timer.phase or "resolve"
        if phase == "resolve":
            failure, message = Failure.DNS, f"DNS lookup timed out after {target.timeout:g}s"
    except icmplib.SocketPermissionError:
        phase, failure, message = timer.phase, Failure.LOCAL, NO_SOCKET
    except icmplib.SocketAddressError:
        phase, failure = timer.phase, Failure.ERROR
        message = "source_address is not an address of this machine"
    except OSError as exc:
        phase = timer.phase
        failure, message = describe_os_error(exc)
    timer.enter(None)
    phases = timer.ordered()
    rtts, sent = echoes.rtts, echoes.sent
    rtt = sum(rtts) / len(rtts) if rtts else None
    loss = None
    if failure is None:
        loss = 1.0 - len(rtts) / target.packets
        phases["processing"] = rtt or 0.0
        summary = f"{len(rtts)}/{target.packets} replies, loss {loss:.0%}" + (
            f", rtt {rtt * 1000:.2f} ms" if rtt is not None else "")
        if sent < target.packets:
            summary += f"; {target.packets - sent} could not be sent (no route?)"
        if loss > target.max_loss + 1e-9:
            phase = "processing"
            failure, message = Failure.CONNECT, f"packet loss over {target.max_loss:.0%}: {summary}"
        else:
            message = summary
    return ProbeResult(target=target.name, started_at=started_at,
                       duration=sum(phases.values()), ok=failure is None, failure=failure,
                       message=message, phases=phases, phase=phase, rtt=rtt, loss=loss)


class _Echoes:
    """How many requests went out, and the round-trip times of the replies so far."""

    __slots__ = ("rtts", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.rtts: list[float] = []


async def _echo(target: Target, address: str, end: float, echoes: _Echoes) -> None:
    """Send the echo requests one after another, noting what comes back in `echoes`."""
    global _privileged
    family = icmplib.ICMPv6Socket if ":" in address else icmplib.ICMPv4Socket
    modes = [False, True] if _privileged is None else [_privileged]
    for privileged in modes:
        try:
            sock = icmplib.AsyncSocket(family(target.source_address, privileged))
        except icmplib.SocketPermissionError:
            if privileged is modes[-1]:
                raise
            continue
        _privileged = privileged
        break
    ident = next(_IDS) % 0xFFFF + 1
    with sock:
        for sequence in range(target.packets):
            if sequence:
                await asyncio.sleep(GAP)
            left = target.packets - sequence
            wait = max(_MIN_WAIT, (end - time.perf_counter() - GAP * (left - 1)) / left - 0.01)
            request = icmplib.ICMPRequest(address, ident, sequence, payload_size=56)
            try:
                sock.send(request)
            except icmplib.ICMPSocketError:  # EINVAL/ENETUNREACH: no route, a blackhole
                continue
            echoes.sent += 1
            try:
                reply = await sock.receive(request, wait)
                reply.raise_for_status()
            except icmplib.ICMPLibError:  # timed out, or unreachable from a router
                continue
            echoes.rtts.append(reply.time - request.time)
