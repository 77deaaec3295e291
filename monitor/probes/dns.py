"""The DNS probe (`dns://server[:port]/name?type=A`): one query, judged by rcode and answers.

`dns:///name` (no server) asks the first name server of the system's resolv.conf. The
query goes over UDP, and again over TCP when the answer is truncated (dnspython's asyncio
functions on the event loop's own sockets: no thread, no cache). Recursion is asked for.

Judged: the response code must be one of `expect.rcode` (default NOERROR); with NOERROR
the answer must hold at least one record of the asked type (an empty answer is a name
without such a record); `body_contains`/`body_regex` are matched against the answer's
records, one a line, as their data reads in a zone file (`192.0.2.1`, `10 mx.example.`).

Phases: resolve (the server's own name, if it is given as one), processing (query →
response). Failure classes: dns (an unexpected rcode, an empty or malformed answer, the
server's name not found), connect (the server refused: ICMP port unreachable), timeout
(no response in time), content (answers that do not match).

Imports: stdlib, dnspython, monitor.model, monitor.probes.common, monitor.probes.resolve.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from monitor.model import Failure, ProbeResult, Target
from monitor.probes.common import Clock, describe_os_error, invalid_url, shared_resolver
from monitor.probes.resolve import RESOLV_CONF, Resolver

__all__ = ["DnsQuery", "parse_dns_url", "probe_dns", "rcode_names"]


@dataclass(frozen=True, slots=True)
class DnsQuery:
    server: str | None  # None: the system's first name server
    port: int
    name: str
    rdtype: str  # "A", "AAAA", "MX", ...


def rcode_names() -> tuple[str, ...]:
    return tuple(dns.rcode.to_text(r) for r in dns.rcode.Rcode)


def parse_dns_url(url: str) -> DnsQuery:
    """dns://[server[:port]]/name[?type=A]; raises ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("must be a dns://server[:port]/name?type=A URL") from None
    if parts.scheme != "dns" or any(c.isspace() for c in url):
        raise ValueError("must be a dns://server[:port]/name?type=A URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a dns:// URL takes no user or password")
    name = unquote(parts.path.lstrip("/"))
    if not name or "/" in name:
        raise ValueError("must name what to look up: dns://server/name?type=A")
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException:
        raise ValueError(f"{name!r} is not a valid DNS name") from None
    rdtype = "A"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "type":
            raise ValueError(f"unknown query parameter {key!r}; only type= is known")
        try:
            rdtype = dns.rdatatype.to_text(dns.rdatatype.from_text(value.upper()))
        except dns.exception.DNSException:
            raise ValueError(f"unknown record type {value!r}") from None
    if port == 0:
        raise ValueError("port must be 1 to 65535")
    return DnsQuery(parts.hostname or None, port or 53, name, rdtype)


def _system_server(resolv_conf: str) -> str:
    try:
        found = dns.resolver.Resolver(filename=resolv_conf).nameservers
    except (dns.resolver.NoResolverConfiguration, OSError):
        return "127.0.0.1"  # as glibc does without a resolv.conf
    return str(found[0]) if found else "127.0.0.1"


async def probe_dns(
    target: Target,
    *,
    clock: Callable[[], float] = time.time,
    resolver: Resolver | None = None,
    resolv_conf: str = RESOLV_CONF,
) -> ProbeResult:
    """Probe `target` (kind dns) once; never raises (but for cancellation)."""
    started_at = clock()
    try:
        query = parse_dns_url(target.url)
    except ValueError as exc:
        return invalid_url(target, started_at, exc)
    timer = Clock()
    failure: Failure | None = None
    message = ""
    phase: str | None = None
    deadline = asyncio.timeout(target.timeout)
    try:
        async with deadline:
            if query.server is None:
                server = _system_server(resolv_conf)
            else:
                server = (await (resolver or shared_resolver()).lookup(query.server))[0]
            timer.enter("processing")
            request = dns.message.make_query(query.name, query.rdtype)
            # A connected UDP socket: a closed port's ICMP "port unreachable" reaches the
            # probe as ConnectionRefusedError at once, instead of a timeout.
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            udp = await dns.asyncbackend.get_default_backend().make_socket(  # type: ignore[no-untyped-call]
                family, socket.SOCK_DGRAM,
                source=(target.source_address, 0) if target.source_address else None,
                destination=(server, query.port))
            try:
                response, _ = await dns.asyncquery.udp_with_fallback(
                    request, server, port=query.port, source=target.source_address,
                    timeout=target.timeout, udp_sock=udp)
            finally:
                await udp.close()
            timer.enter(None)
            failure, message = _judge(target, query, response)
    except TimeoutError:
        phase = timer.phase or "processing"
        if not deadline.expired():
            failure, message = Failure.TIMEOUT, "timed out"
        elif phase == "resolve":
            failure, message = Failure.DNS, "lookup of the DNS server's name timed out"
        else:
            failure = Failure.TIMEOUT
            message = f"no DNS response in {target.timeout:g}s"
    except dns.exception.Timeout:
        phase, failure = timer.phase, Failure.TIMEOUT
        message = f"no DNS response in {target.timeout:g}s"
    except OSError as exc:
        phase = timer.phase
        failure, message = describe_os_error(exc, "DNS server unreachable")
    except dns.exception.DNSException as exc:  # malformed, wrong id, truncated even over TCP
        phase, failure = timer.phase, Failure.DNS
        message = f"bad DNS response: {type(exc).__name__}"
    timer.enter(None)
    phases = timer.ordered()
    return ProbeResult(target=target.name, started_at=started_at, duration=sum(phases.values()),
                       ok=failure is None, failure=failure, message=message, phases=phases,
                       phase=phase)


def _judge(target: Target, query: DnsQuery, response: dns.message.Message
           ) -> tuple[Failure | None, str]:
    rcode = dns.rcode.to_text(response.rcode())
    if rcode not in target.expect_rcode:
        return Failure.DNS, f"DNS {rcode} for {query.name} {query.rdtype}, expected " + (
            " or ".join(target.expect_rcode))
    wanted = dns.rdatatype.from_text(query.rdtype)
    lines = sorted(rdata.to_text() for rrset in response.answer if rrset.rdtype == wanted
                   for rdata in rrset)  # an RRset has no order: sorted, messages are stable
    if rcode == "NOERROR" and not lines:
        return Failure.DNS, f"no {query.rdtype} record for {query.name} (empty answer)"
    text = "\n".join(lines)
    shown = ", ".join(lines[:5]) + (", ..." if len(lines) > 5 else "")
    if target.body_contains is not None and target.body_contains not in text:
        return Failure.CONTENT, f"answer does not contain {target.body_contains!r}: {shown}"
    if target.body_regex is not None and not re.search(target.body_regex, text, re.M):
        return Failure.CONTENT, f"answer does not match {target.body_regex!r}: {shown}"
    return None, ""
