"""Name resolution for probes: a fresh lookup every time, no cache, no thread.

`Resolver.lookup()` answers from the hosts file first (as getaddrinfo, curl and the blackbox
exporter do), else asks the name servers for A and AAAA at once, with the search domains of
resolv.conf. It keeps no answer between calls: a probe measures the resolver as it is now,
and a resolver outage shows on the next probe, not when a TTL ends. dnspython's asyncio
resolver does the talking (pure Python on the event loop's own sockets; no cache unless
one is set, and none is).

Build a Resolver once (the daemon does at start), not in a probe's timed phases. It reads
resolv.conf and the hosts file again whenever they change (a VPN, a DHCP lease), as glibc
does, at the cost of two stat() calls per lookup.

`is_public()` is the address policy for redirects: loopback, link-local, private, shared
(CGNAT) and unspecified addresses are not public, nor are cloud metadata addresses (all of
them inside those ranges).

Imports: stdlib, dnspython.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.nameserver
import dns.rdatatype
import dns.resolver

__all__ = ["HOSTS_FILE", "LOCAL_ERRNOS", "Resolver", "is_public"]

HOSTS_FILE = "/etc/hosts"
RESOLV_CONF = "/etc/resolv.conf"
# The monitor's own resources ran out: no answer about the name at all.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Not public: where a redirect must not lead unless the target itself is there.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network": connecting to 0.0.0.0 reaches this machine
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT); Alibaba's metadata 100.100.100.200
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local; the metadata address 169.254.169.254
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local; AWS's IPv6 metadata fd00:ec2::254
        "fe80::/10",
    )
)


def is_public(address: str) -> bool:
    """False for loopback, link-local, private, CGNAT, unspecified and metadata addresses."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return not any(ip in net for net in _NOT_PUBLIC if net.version == ip.version)


class Resolver:
    """Looks host names up anew on every call (hosts file, then DNS); keeps no answers.

    nameservers: ("address", port) pairs to ask instead of resolv.conf's (tests, or a
    monitor that must use its own resolver). timeout bounds one lookup; a probe's own
    deadline usually ends it first.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        *,
        hosts_file: str = HOSTS_FILE,
        resolv_conf: str = RESOLV_CONF,
        timeout: float = 30.0,
    ) -> None:
        self._dns = dns.asyncresolver.Resolver(configure=False)
        self._dns.cache = None  # the point of this class
        self._dns.lifetime = timeout
        self._dns.retry_servfail = False
        self._resolv_conf = resolv_conf if nameservers is None else None
        self._resolv_stamp: tuple[float, int] | None = None
        if nameservers is not None:
            self._dns.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers
            ]
        self._read_resolv_conf()
        self._hosts_file = hosts_file
        self._hosts: dict[str, list[str]] = {}
        self._hosts_stamp: tuple[float, int] | None = None
        self._read_hosts()

    async def lookup(self, host: str) -> list[str]:
        """The addresses of `host`, IPv4 first. Raises socket.gaierror when there are none."""
        host = host.rstrip(".").lower()
        if dns.inet.is_address(host):
            return [host]
        self._read_hosts()
        self._read_resolv_conf()
        if host in self._hosts:
            return list(self._hosts[host])
        answers = await asyncio.gather(
            self._query(host, dns.rdatatype.A),
            self._query(host, dns.rdatatype.AAAA),
            return_exceptions=True,
        )
        addresses: list[str] = []
        errors: list[BaseException] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                errors.append(answer)
            else:
                addresses += answer
        if addresses:
            return addresses
        for error in errors:
            if not isinstance(error, Exception):
                raise error  # cancellation
            if (local := _local_error(error)) is not None:
                raise local  # the monitor's own fault (no descriptor, no buffer), not DNS
        raise _gaierror(errors)

    async def _query(self, host: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        answer = await self._dns.resolve(host, rdtype, search=True, raise_on_no_answer=False)
        return [rdata.address for rdata in answer] if answer.rrset is not None else []

    def _read_resolv_conf(self) -> None:
        """Re-read resolv.conf (name servers, search, ndots) when it changed."""
        if self._resolv_conf is None:
            return
        stamp = _stamp(self._resolv_conf)
        if stamp == self._resolv_stamp:
            return
        self._resolv_stamp = stamp
        try:
            self._dns.read_resolv_conf(self._resolv_conf)
        except (dns.resolver.NoResolverConfiguration, OSError):
            # No usable resolv.conf: the local name server, as glibc does.
            self._dns.nameservers = ["127.0.0.1"]

    def _read_hosts(self) -> None:
        """Re-read the hosts file when its modification time or size changed."""
        stamp = _stamp(self._hosts_file)
        if stamp == self._hosts_stamp:
            return
        if stamp is None:
            self._hosts, self._hosts_stamp = {}, None
            return
        hosts: dict[str, list[str]] = {}
        try:
            with open(self._hosts_file, encoding="utf-8", errors="replace") as file:
                for line in file:
                    fields = line.partition("#")[0].split()
                    if len(fields) < 2 or not dns.inet.is_address(fields[0]):
                        continue
                    for name in fields[1:]:
                        hosts.setdefault(name.lower().rstrip("."), []).append(fields[0])
        except OSError:
            return
        for addresses in hosts.values():  # IPv4 first, as for DNS answers
            addresses.sort(key=lambda a: ":" in a)
        self._hosts, self._hosts_stamp = hosts, stamp


def _stamp(path: str) -> tuple[float, int] | None:
    """Modification time and size of a file, None if it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime, status.st_size)


def _local_error(error: BaseException) -> OSError | None:
    """An EMFILE/ENFILE/ENOBUFS/ENOMEM behind a failed lookup, if that is what it was."""
    found: list[object] = [error]
    if isinstance(error, dns.resolver.NoNameservers):
        found += [entry[3] for entry in error.kwargs.get("errors", ()) if len(entry) > 3]
    for item in found:
        if isinstance(item, OSError) and item.errno in LOCAL_ERRNOS:
            return item
    return None


def _gaierror(errors: list[BaseException]) -> socket.gaierror:
    """The one OSError aiohttp turns into a DNS failure, with a short reason."""
    if not errors or any(isinstance(e, dns.resolver.NXDOMAIN) for e in errors):
        if errors:
            return socket.gaierror(socket.EAI_NONAME, "no such name")
        return socket.gaierror(socket.EAI_NODATA, "no address for this name")
    error = errors[0]
    if isinstance(error, dns.resolver.NoNameservers):
        return socket.gaierror(socket.EAI_AGAIN, "no name server answered")
    if isinstance(error, dns.exception.Timeout):
        return socket.gaierror(socket.EAI_AGAIN, "name servers did not answer in time")
    if isinstance(error, OSError):
        return socket.gaierror(socket.EAI_SYSTEM, os.strerror(error.errno or 0) or "error")
    return socket.gaierror(socket.EAI_FAIL, type(error).__name__)
