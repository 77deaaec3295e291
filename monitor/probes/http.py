"""The HTTP(S) probe: one cold request to a target, judged and timed by phase.

Every probe is a first visit: its own DNS lookup (`monitor.probes.resolve`: hosts file, then
DNS, no cache, no thread), its own TCP connection and TLS handshake (a connection of its
own, closed after the request, no TLS session reuse), its own cookies. Probes of one daemon
share one ClientSession (`DnsChannel`) whose connector keeps nothing between requests.
The probe never raises (except CancelledError when its task is cancelled); every outcome,
including a timeout, is a `ProbeResult`.

Phases are contiguous segments of one monotonic clock, so they add up to the duration:
resolve (DNS), connect (TCP), tls (handshake), processing (connection ready → response
headers), transfer (headers → body read). With redirects each phase is summed over the hops.
Setup (SSL contexts, resolver, session) happens before the clock starts and belongs to no
phase. aiohttp's trace signals mark every boundary but one: TCP connected vs. TLS started.
That one comes from `_TimedSSLContext.wrap_bio`, which asyncio calls as soon as the TCP
socket is connected; it finds the probe's timer through a context variable.

Redirects are followed here, hop by hop, not by aiohttp (`Target.redirects`):
- `follow` follows any http(s) redirect, `same-origin` only those within the target's origin
  (a redirect elsewhere is judged as the response), `none` judges the first response;
- once a hop leaves the target's origin (scheme, host, port; http→https on the same host
  counts as the same origin), the configured headers, URL credentials and the body are no
  longer sent, whatever the status (307/308 included);
- a hop whose host resolves only to loopback, link-local, private or metadata addresses is
  refused unless the target itself resolved to such an address. The check runs on the
  addresses the connection will use (the resolver returns only allowed ones), so a DNS name
  pointing inside cannot slip through.

Through a proxy (`Target.proxy`) the connections go through `monitor.probes.proxy`'s
connector, whose errors are classified there first (class `proxy` for the proxy's own).

Messages go through `monitor.probes.sanitize.clean()`: no URL, no credential, no echo.

Imports: stdlib, aiohttp, yarl, monitor.model, monitor.probes.common, monitor.probes.proxy,
monitor.probes.resolve, monitor.probes.sanitize.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import contextvars
import errno
import functools
import os
import re
import socket
import ssl
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiohttp.abc
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from monitor.model import (
    MAX_REDIRECTS,
    PHASES,
    REDIRECT_POLICIES,
    Failure,
    ProbeResult,
    StatusRange,
    Target,
)
from monitor.probes.common import shared_resolver
from monitor.probes.proxy import classify_proxy_error, parse_proxy_url, proxy_connector
from monitor.probes.resolve import LOCAL_ERRNOS, Resolver, is_public
from monitor.probes.sanitize import clean, target_secrets

__all__ = [
    "MAX_HEADERS",
    "MAX_INFORMATIONAL",
    "MAX_REDIRECTS",
    "REDIRECT_POLICIES",
    "DnsChannel",
    "cert_expiry",
    "new_ssl_context",
    "probe_http",
]

MAX_LINE_SIZE = 8190  # status line and each header field, bytes
# curl and the blackbox exporter (Go) have no count limit, only a size one; thousands of
# headers are accepted, and memory stays bounded by MAX_HEADERS × MAX_LINE_SIZE.
MAX_HEADERS = 2000
MAX_INFORMATIONAL = 10  # 1xx responses before the final one; more is a hostile flood
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)

# The deadline is ours (asyncio.timeout); aiohttp's own timeouts stay off.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None)


class RedirectRefused(Exception):
    """A redirect led to an address the policy forbids (raised by the probe's resolver)."""


class _Visit:
    """Run-time state of one probe: the phase clock, and what the response told us."""

    __slots__ = ("notes", "phase", "phases", "since", "ssl_object", "status", "truncated")

    def __init__(self) -> None:
        self.phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        # The request starts by connecting; resolve stays 0.0 for IP literals.
        self.phase: str | None = "connect"
        self.since = time.perf_counter()
        self.ssl_object: ssl.SSLObject | None = None  # of the latest TLS connection
        self.status: int | None = None
        self.truncated = False
        self.notes: list[str] = []  # said in the message of a successful probe

    def enter(self, phase: str | None) -> None:
        """Close the current phase and start `phase` (None: the clock stops)."""
        now = time.perf_counter()
        if self.phase is not None:
            self.phases[self.phase] += now - self.since
        self.phase = phase
        self.since = now


_VISIT: contextvars.ContextVar[_Visit | None] = contextvars.ContextVar(
    "monitor_probe_visit", default=None
)


class _TimedSSLContext(ssl.SSLContext):
    """An SSLContext that tells the running probe when its TLS handshake starts.

    asyncio's SSLProtocol calls wrap_bio() right after the TCP connection is made, in the
    task that called create_connection(), i.e. the probe's own task: the context variable
    set by the probe is visible here.
    """

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        visit = _VISIT.get()
        if visit is not None:
            visit.enter("tls")
        ssl_object = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if visit is not None:
            visit.ssl_object = ssl_object
        return ssl_object


def new_ssl_context(*, verify: bool = True) -> ssl.SSLContext:
    """A client SSL context whose handshakes the probe can time.

    verify=True checks the chain against the system CAs and the host name; add your own CA
    with `load_verify_locations()` (or trustme's `configure_trust()`) and pass the context to
    `probe_http(ssl_context=...)`. Building one costs milliseconds: build it once.
    """
    context = _TimedSSLContext(ssl.PROTOCOL_TLS_CLIENT)  # TLS ≥ 1.2, no compression
    context.options |= ssl.OP_NO_COMPRESSION
    if verify:
        context.load_default_certs()  # check_hostname and CERT_REQUIRED are already on
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


@functools.cache
def _shared_ssl_context(verify: bool) -> ssl.SSLContext:
    """One context of each kind per process, built on first use (outside the phases)."""
    return new_ssl_context(verify=verify)


@functools.cache
def _shared_resolver() -> Resolver:
    """The process's resolver (resolv.conf read once; answers are never kept)."""
    return Resolver()


def _entering(
    phase: str, *, new_connection: bool = False
) -> Callable[[aiohttp.ClientSession, SimpleNamespace, object], Awaitable[None]]:
    """A trace callback that moves the running probe's clock to `phase`."""

    async def callback(session: object, context: object, params: object) -> None:
        visit = _VISIT.get()
        if visit is not None:
            if new_connection:
                visit.ssl_object = None  # a plain-http hop must not report an older cert
            visit.enter(phase)

    return callback


@functools.cache
def _trace_config() -> aiohttp.TraceConfig:
    """The phase boundaries aiohttp reports, shared by every probe (callbacks are stateless)."""
    config = aiohttp.TraceConfig()
    config.on_connection_create_start.append(_entering("connect", new_connection=True))
    config.on_dns_resolvehost_start.append(_entering("resolve"))
    config.on_dns_resolvehost_end.append(_entering("connect"))
    # TCP connected → tls comes from _TimedSSLContext.wrap_bio.
    config.on_connection_create_end.append(_entering("processing"))
    config.on_request_end.append(_entering("transfer"))  # headers of each hop's response
    return config


class DnsChannel:
    """What the probes of one event loop share while the daemon runs: one ClientSession.

    Kept under its old name for the daemon. The session's connector keeps no connection
    (force_close), caches no DNS answer and reuses no TLS session, so each probe is still a
    cold visit: its own lookup, TCP connection and handshake. Sharing it saves building a
    session, connector and resolver per probe, which cost more than the request itself.
    Probes run without one (e.g. a single `probe_http()` call) get a session of their own.
    Several channels on one loop share one pool; `close()` is safe in any state.
    """

    def __init__(self) -> None:
        _shared_resolver()
        shared_resolver()  # the other kinds' (monitor.probes.common)
        _shared_ssl_context(True)
        _shared_ssl_context(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: nothing to share, probes use their own sessions
        pool = _POOLS.get(self._loop)
        if pool is None:
            pool = _POOLS[self._loop] = _Pool()
        pool.users += 1

    async def close(self) -> None:
        loop, self._loop = self._loop, None
        pool = _POOLS.get(loop) if loop is not None else None
        if pool is None:
            return
        pool.users -= 1
        if pool.users <= 0:
            del _POOLS[loop]  # type: ignore[arg-type]
            await pool.close()


class _Pool:
    """The shared sessions of one event loop, one per source address."""

    def __init__(self) -> None:
        self.users = 0
        self.sessions: dict[str | None, aiohttp.ClientSession] = {}

    def session(self, source_address: str | None) -> aiohttp.ClientSession:
        session = self.sessions.get(source_address)
        if session is None or session.closed:
            session = self.sessions[source_address] = _new_session(source_address)
        return session

    async def close(self) -> None:
        sessions, self.sessions = self.sessions, {}
        for session in sessions.values():
            await session.close()


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = (
    weakref.WeakKeyDictionary()
)


class TooManyInformational(Exception):
    """The server sent more than MAX_INFORMATIONAL 1xx responses before a final one."""


class _Response(aiohttp.ClientResponse):
    """aiohttp's response, but reading at most MAX_INFORMATIONAL 1xx responses.

    aiohttp skips 1xx responses in a loop with no bound: a server flooding "100 Continue"
    would keep the probe parsing until its deadline. Counting them at the connection's
    read() ends such a probe at once, as `http`.
    """

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        if protocol is None:
            return await super().start(connection)
        read = protocol.read
        seen = 0

        async def counting_read() -> Any:
            nonlocal seen
            message, payload = await read()
            if 100 <= message.code <= 199 and message.code != 101:
                seen += 1
                if seen > MAX_INFORMATIONAL:
                    raise TooManyInformational
            return message, payload

        protocol.read = counting_read  # type: ignore[method-assign]
        try:
            return await super().start(connection)
        finally:
            del protocol.read


_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = MAX_HEADERS * (MAX_LINE_SIZE + 2)  # past this the parser fails the head anyway
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*(?=\r\n|$)", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.I)


class _FramedHandler(ResponseHandler):
    """aiohttp's connection protocol, minus the bytes a server sends after its response.

    aiohttp parses whatever follows a Content-Length body as the next response and fails
    the whole request on it; curl and the blackbox exporter ignore such bytes. This handler
    follows the framing of length-delimited responses (1xx heads included) and passes on
    nothing past the end of the final body. Chunked and read-until-close responses are
    left to aiohttp as they are.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = bytearray()  # the response head being read
        self._left: int | None = None  # body bytes still to come; None while in a head
        self._framing = True  # False: pass everything on (chunked, until close, odd heads)
        self._done = False  # the final body is complete: drop the rest

    def data_received(self, data: bytes) -> None:
        if not data or not self._framing:
            super().data_received(data)
            return
        if self._done:
            return
        passed = bytearray()
        view = memoryview(data)
        while view and self._framing and not self._done:
            if self._left is None:  # in a head
                start = max(0, len(self._head) - 3)
                self._head += view
                end = self._head.find(_HEAD_END, start)
                if end < 0:
                    passed += view
                    self._framing = len(self._head) <= _MAX_HEAD
                    break
                used = len(view) - (len(self._head) - end - 4)
                passed += view[:used]
                view = view[used:]
                self._start_body(bytes(self._head[: end + 2]))
                self._head = bytearray()
                continue
            take = view[: self._left]
            passed += take
            view = view[len(take) :]
            self._left -= len(take)
            self._done = self._left == 0
        if not self._framing:
            passed += view  # from here on aiohttp sees everything
        if passed:
            super().data_received(bytes(passed))

    def _start_body(self, head: bytes) -> None:
        """Set the framing after a complete head: a 1xx, a body of known length, or else."""
        status_line = head.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if 100 <= status <= 199 and status != 101:
            return  # another head follows
        if status in (204, 304) or getattr(self, "_skip_payload", False):  # HEAD: no body
            self._done = True
            return
        lengths = _CONTENT_LENGTH.findall(head)
        if _CHUNKED.search(head) or len(set(lengths)) != 1:
            self._framing = False  # chunked, until close, or conflicting: aiohttp decides
            return
        self._left = int(lengths[0])
        self._done = self._left == 0


class _ProbeResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver for one probe: fresh lookups, and the redirect address policy.

    Until `confine()`, every address is allowed and the first lookup tells whether the target
    itself is inside (loopback, private...). After it, only public addresses are returned,
    unless the target was inside; a host with none left is refused.
    """

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self.target_inside: bool | None = None  # None until the first hop is known
        self.confined = False

    def note_first(self, addresses: list[str]) -> None:
        if self.target_inside is None:
            self.target_inside = not all(_is_public(a) for a in addresses)

    def allowed(self, addresses: list[str]) -> list[str]:
        if not self.confined or self.target_inside:
            return addresses
        return [a for a in addresses if _is_public(a)]

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        addresses = await self._resolver.lookup(host)
        if family in (socket.AF_INET, socket.AF_INET6):
            addresses = [a for a in addresses if (":" in a) == (family == socket.AF_INET6)]
            if not addresses:
                raise socket.gaierror(socket.EAI_NODATA, "no address of the wanted family")
        self.note_first(addresses)
        allowed = self.allowed(addresses)
        if not allowed:
            raise RedirectRefused
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in allowed
        ]

    async def close(self) -> None:
        return None


# An address's class never changes; parsing it is a good part of a fast probe's own cost.
_is_public = functools.lru_cache(maxsize=65536)(is_public)

_PROBE_RESOLVER: contextvars.ContextVar[_ProbeResolver | None] = contextvars.ContextVar(
    "monitor_probe_resolver", default=None
)


class _RoutingResolver(aiohttp.abc.AbstractResolver):
    """A shared connector's resolver: asks the running probe's own `_ProbeResolver`.

    aiohttp resolves (without its DNS cache) in the task that sends the request, i.e. the
    probe's task, where the context variable is set.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        probe = _PROBE_RESOLVER.get()
        if probe is None:  # not from a probe: no policy to apply, refuse
            raise RedirectRefused
        return await probe.resolve(host, port, family)

    async def close(self) -> None:
        return None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


async def probe_http(
    target: Target,
    *,
    clock: Callable[[], float] = time.time,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver | None = None,
) -> ProbeResult:
    """Probe `target` once and judge the answer; never raises (but for cancellation).

    clock gives `started_at` (POSIX time); durations come from the monotonic clock.
    ssl_context replaces the verifying context (system CAs) when `target.verify_tls` is on,
    e.g. to trust a private CA. Build it with `new_ssl_context()`: with another SSLContext
    the tls phase is counted in connect and `cert_expiry` stays None.
    resolver replaces the process's resolver (e.g. one asking a given name server).
    """
    started_at = clock()
    failure: Failure | None = None
    message = ""
    phase: str | None = None  # where a failure happened
    pool = _POOLS.get(asyncio.get_running_loop())
    own: aiohttp.ClientSession | None = None  # a session for this probe alone, closed after
    session: aiohttp.ClientSession | None = None
    try:
        context = _ssl_context(target, ssl_context)
        probe_resolver = _ProbeResolver(resolver or _shared_resolver())
        if target.proxy is not None:
            # A session of its own, through the proxy; the proxy's name is looked up here,
            # before the clock starts. The proxy resolves the target's name.
            connector = await proxy_connector(
                parse_proxy_url(target.proxy), resolver or _shared_resolver(), target.timeout,
                **_connector_options(target, context))
            session = own = _new_session(target.source_address, connector)
        elif pool is not None:
            session = pool.session(target.source_address)
        else:
            session = own = _new_session(target.source_address)
    except Exception as exc:  # setup failed: the monitor's fault or an unusable option
        failure, message = _classify_via(exc, target)
    visit = _Visit()  # the clock starts here: setup belongs to no phase
    token = _VISIT.set(visit)
    resolver_token = _PROBE_RESOLVER.set(probe_resolver if session is not None else None)
    try:
        if session is not None:
            async with contextlib.AsyncExitStack() if own is None else own:
                deadline = asyncio.timeout(target.timeout)
                try:
                    async with deadline:
                        failure, message = await _visit(
                            target, visit, session, probe_resolver, context)
                except TimeoutError:
                    phase = visit.phase or "transfer"
                    if not deadline.expired():  # raised by something inside, not our deadline
                        failure, message = Failure.TIMEOUT, "timed out"
                    elif phase == "resolve":  # the name servers are the ones not answering
                        failure = Failure.DNS
                        message = f"DNS lookup timed out after {target.timeout:g}s"
                    else:
                        failure = Failure.TIMEOUT
                        message = f"timed out after {target.timeout:g}s during {phase}"
                except Exception as exc:
                    failure, message = _classify_via(exc, target)
                    phase = visit.phase
                    if phase == "tls" and failure is Failure.CONNECT:
                        # Reset or closed mid-handshake: a TLS version or cipher mismatch.
                        failure = Failure.TLS
                        message = "TLS handshake failed: " + message.partition(": ")[2]
                visit.enter(None)  # closing the session is no phase either
    finally:
        _PROBE_RESOLVER.reset(resolver_token)
        _VISIT.reset(token)
    visit.enter(None)
    duration = sum(visit.phases.values())
    if failure is None and visit.notes:
        message = "; ".join(visit.notes)
    return ProbeResult(
        target=target.name,
        started_at=started_at,
        duration=duration,
        ok=failure is None,
        failure=failure,
        # Most results have no message: nothing to clean (the secrets cost a URL parse).
        message=clean(message, target_secrets(target.url, target.headers, target.body))
        if message
        else "",
        status=visit.status,
        phases=visit.phases,
        phase=phase,
        cert_expiry=_cert_expiry(visit.ssl_object),
        truncated=visit.truncated,
    )


def _framed_handler(loop: asyncio.AbstractEventLoop) -> ResponseHandler:
    return _FramedHandler(loop=loop)


def _connector_options(target: Target, context: ssl.SSLContext) -> dict[str, Any]:
    """A proxy connector's options: as cold as the shared session's connector."""
    return {
        "force_close": True,
        "use_dns_cache": False,
        "ssl": context,
        "local_addr": (target.source_address, 0) if target.source_address else None,
    }


def _classify_via(exc: BaseException, target: Target) -> tuple[Failure, str]:
    """_classify(), but a proxy's errors first (monitor.probes.proxy)."""
    if target.proxy is None:
        return _classify(exc)
    try:
        found = classify_proxy_error(exc, parse_proxy_url(target.proxy))
    except ValueError:
        return Failure.ERROR, "invalid proxy URL"
    if found is not None:
        return found
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(
            exc.os_error, ssl.SSLError):
        return Failure.CONNECT, f"cannot connect (via proxy): {_os_reason(exc.os_error)}"
    return _classify(exc)


def _new_session(
    source_address: str | None, connector: aiohttp.TCPConnector | None = None
) -> aiohttp.ClientSession:
    """A session whose every request is a cold visit (see DnsChannel); TLS is per request.
    `connector`: a proxy's, for one probe's own session."""
    if connector is None:
        connector = aiohttp.TCPConnector(
            force_close=True,
            use_dns_cache=False,
            limit=0,  # the scheduler bounds concurrency, not the connector
            resolver=_RoutingResolver(),
            local_addr=(source_address, 0) if source_address else None,
        )
    if isinstance(getattr(connector, "_factory", None), functools.partial):
        # aiohttp builds each connection's protocol with this factory (not public API: if
        # it goes, bytes after a body fail the probe again, which a test shows).
        connector._factory = functools.partial(_framed_handler, asyncio.get_running_loop())
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # shared: each probe keeps its own cookies
        timeout=_NO_CLIENT_TIMEOUT,
        trace_configs=[_trace_config()],
        trust_env=False,  # no proxies from the environment, no netrc (threads)
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_LINE_SIZE,
        max_headers=MAX_HEADERS,
        auto_decompress=False,  # _Decoder: what we cannot decode is left as it is
        response_class=_Response,
    )


def _ssl_context(target: Target, ssl_context: ssl.SSLContext | None) -> ssl.SSLContext:
    if not target.verify_tls:
        return _shared_ssl_context(False)
    return ssl_context or _shared_ssl_context(True)


def _same_origin(origin: URL, url: URL) -> bool:
    """Same scheme, host and port; an http→https upgrade of the same host counts as same."""
    if (url.host or "").lower() != (origin.host or "").lower():
        return False
    if (url.scheme, url.port) == (origin.scheme, origin.port):
        return True
    return (origin.scheme, origin.port, url.scheme, url.port) == ("http", 80, "https", 443)


async def _visit(
    target: Target,
    visit: _Visit,
    session: aiohttp.ClientSession,
    resolver: _ProbeResolver,
    context: ssl.SSLContext,
) -> tuple[Failure | None, str]:
    """Send the request hop by hop, read the body (capped), judge it."""
    max_redirects = min(target.max_redirects, MAX_REDIRECTS) if target.follow_redirects else 0
    policy = target.redirects if max_redirects > 0 else "none"  # 0 redirects: judge the 3xx
    want_body = target.body_contains is not None or target.body_regex is not None
    try:
        origin = URL(target.url)
        auth = aiohttp.BasicAuth.from_url(origin)
        url = origin.with_user(None) if origin.user is not None else origin
    except ValueError:
        raise aiohttp.InvalidURL("target URL") from None
    headers = dict(target.headers)
    if not any(k.lower() == "accept-encoding" for k in headers):
        headers["Accept-Encoding"] = "gzip, deflate"  # what _Decoder decodes
    if auth is not None and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = auth.encode()
    method, data = target.method, target.body
    foreign = False  # left the target's origin: nothing of the target's is sent any more
    jar: aiohttp.CookieJar | None = None  # cookies set by earlier hops (the session has none)
    if url.host is not None and _is_ip(url.host):
        resolver.note_first([url.host])
    for hop in range(max_redirects + 1):
        if hop == 1:
            resolver.confined = True
        if hop and url.host is not None and _is_ip(url.host) and not resolver.allowed([url.host]):
            raise RedirectRefused
        async with session.request(
            method,
            url,
            headers=None if foreign else headers,
            data=None if foreign else data,
            cookies=None if jar is None else jar.filter_cookies(url),
            allow_redirects=False,
            ssl=context,
        ) as response:
            visit.status = response.status
            location = response.headers.get("Location")
            if response.status in _REDIRECT_STATUSES and location is not None and policy != "none":
                next_url = _redirect_target(url, location)
                if policy == "follow" or _same_origin(origin, next_url):
                    if hop == max_redirects:
                        return Failure.HTTP, f"too many redirects ({max_redirects})"
                    foreign = foreign or not _same_origin(origin, next_url)
                    if response.cookies:
                        jar = jar or aiohttp.CookieJar(unsafe=True)  # IP hosts too
                        jar.update_cookies(response.cookies, response.url)
                    if response.status == 303 or (
                        response.status in (301, 302) and method == "POST"
                    ):
                        method = "GET" if method != "HEAD" else method
                        data = None
                    url = next_url
                    continue
            charset = response.charset
            body = await _read_body(response, target.max_body_bytes, want_body, visit)
            visit.enter(None)
            break
    status = visit.status
    if not any(status in accepted for accepted in target.expect_status):
        return Failure.HTTP, f"HTTP {status}, expected {_ranges(target.expect_status)}"
    if want_body:
        text = _decode(body, charset)
        where = f" (in the first {len(body)} bytes)" if visit.truncated else ""
        where += "".join(f"; {note}" for note in visit.notes)
        if target.body_contains is not None and target.body_contains not in text:
            return Failure.CONTENT, f"body does not contain {target.body_contains!r}{where}"
        if target.body_regex is not None and not _compiled(target.body_regex).search(text):
            return Failure.CONTENT, f"body does not match {target.body_regex!r}{where}"
    return None, ""


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _redirect_target(url: URL, location: str) -> URL:
    """The absolute URL a Location points to; raises RedirectClientError if unusable."""
    try:
        next_url = url.join(URL(location)).with_fragment(None)
    except ValueError:
        raise aiohttp.InvalidUrlRedirectClientError(location, "is not a valid URL") from None
    if next_url.scheme not in ("http", "https") or not next_url.host:
        raise aiohttp.NonHttpUrlRedirectClientError(location)
    return next_url


class _Decoder:
    """Undoes gzip or deflate, never more than `limit` + 1 bytes at a time (bombs).

    Any other Content-Encoding (br, zstd, chains...) is left undecoded, as curl without
    --compressed and the blackbox exporter do; `undecoded` names it for the result.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.undecoded: str | None = None
        self._zlib: Any = None
        self._started = False
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            self.undecoded = re.sub(r"[^A-Za-z0-9_., -]", "?", encoding)[:40]

    def decode(self, chunk: bytes, size: int) -> bytes:
        if self.undecoded is not None or self.encoding in ("", "identity"):
            return chunk
        if not self._started:
            self._started = True
            if self.encoding == "deflate":  # zlib-wrapped, or raw as some servers send it
                wrapped = len(chunk) >= 2 and chunk[0] & 0x0F == 8 and \
                    ((chunk[0] << 8) | chunk[1]) % 31 == 0
                wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            else:
                wbits = 16 + zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(wbits)
        try:
            return bytes(self._zlib.decompress(chunk, self.limit - size + 1))
        except zlib.error:
            raise aiohttp.ClientPayloadError(f"{self.encoding} data is corrupt") from None


async def _read_body(
    response: aiohttp.ClientResponse, limit: int, keep: bool, visit: _Visit
) -> bytes:
    """Read the decoded body up to `limit` bytes; keep it only if it will be judged."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    decoder = _Decoder(encoding, limit)
    if decoder.undecoded is not None:
        visit.notes.append(f"body left undecoded (Content-Encoding: {decoder.undecoded})")
    kept = bytearray()
    size = 0
    while raw := await response.content.readany():
        chunk = decoder.decode(raw, size)
        size += len(chunk)
        if keep:
            kept += chunk
        if size >= limit:
            # Stop here whatever the server still has to send; memory stays bounded.
            visit.truncated = size > limit or not response.content.at_eof()
            del kept[limit:]
            break
    return bytes(kept)


def _decode(body: bytes, charset: str | None) -> str:
    """Text for the content checks; a charset Python cannot decode with falls back to UTF-8."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except (LookupError, UnicodeError, ValueError):  # unknown, idna, not a text encoding
        return body.decode("utf-8", errors="replace")


def _ranges(ranges: tuple[StatusRange, ...]) -> str:
    return ", ".join(f"{r.low}" if r.low == r.high else f"{r.low}-{r.high}" for r in ranges)


def _classify(exc: BaseException) -> tuple[Failure, str]:
    """Failure class and one-line message for an exception raised by a request.

    Messages are built from the parts of the exception, never from str() of aiohttp's
    exceptions, which carry the URL (credentials, query strings) and echo the server's bytes.
    """
    os_error = _os_error(exc)
    if os_error is not None and os_error.errno in LOCAL_ERRNOS:
        return Failure.LOCAL, f"monitor out of resources: {_os_reason(os_error)}"
    if isinstance(exc, RedirectRefused):
        return Failure.HTTP, "redirect to a private address refused"
    if isinstance(exc, TooManyInformational):
        return Failure.HTTP, f"more than {MAX_INFORMATIONAL} informational (1xx) responses"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or _ssl_reason(error)
        return Failure.TLS, f"certificate verify failed: {reason}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return Failure.TLS, f"TLS handshake failed: {_ssl_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or (
        isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror)
    ):
        return Failure.DNS, f"DNS lookup failed: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ssl.SSLError):
            return Failure.TLS, f"TLS handshake failed: {_ssl_reason(exc.os_error)}"
        return Failure.CONNECT, f"cannot connect: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure.CONNECT, "server disconnected before a complete response"
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return Failure.TLS, "certificate fingerprint mismatch"
    if isinstance(exc, aiohttp.ClientResponseError):  # malformed or oversized response
        return Failure.HTTP, "bad response: " + _summary(exc.message)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure.HTTP, "bad response body: " + _summary(str(exc))
    if isinstance(exc, aiohttp.RedirectClientError):
        return Failure.HTTP, "redirect to an invalid or non-HTTP location"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return Failure.ERROR, "invalid URL"
    if isinstance(exc, ssl.SSLError):
        return Failure.TLS, f"TLS error: {_ssl_reason(exc)}"
    if isinstance(exc, OSError):  # reset, broken pipe, unreachable
        return Failure.CONNECT, f"connection error: {_os_reason(exc)}"
    return Failure.ERROR, type(exc).__name__  # str() may hold anything: not shown


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError under an aiohttp exception, or the exception itself."""
    inner = getattr(exc, "os_error", None)
    if isinstance(inner, OSError):
        return inner
    return exc if isinstance(exc, OSError) else None


def _summary(text: str) -> str:
    """aiohttp's own words from a parser error, without the server's bytes it echoes.

    "Bad status line:\\n  Expected HTTP/...:\\n\\n  b'<echo>'" → "Bad status line";
    "Got more than 8190 bytes when reading: b'<echo>'." → "Got more than 8190 bytes when
    reading". Only the first line up to the first quote is kept.
    """
    first = str(text).strip().split("\n", 1)[0]
    first = re.split(r"""\s*:?\s*b?['"]""", first, maxsplit=1)[0]
    return first.rstrip(" :.") or "malformed"


def _os_reason(error: OSError) -> str:
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", without the address
    if isinstance(error, ConnectionResetError):  # asyncio raises it without an errno
        return os.strerror(errno.ECONNRESET)
    return str(error.strerror or "") or type(error).__name__


def _ssl_reason(error: BaseException) -> str:
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" → "wrong version number"
    text = str(getattr(error, "strerror", None) or error)
    text = re.sub(r"^\[[A-Z0-9_: ]+\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or type(error).__name__


def _cert_expiry(ssl_object: ssl.SSLObject | None) -> float | None:
    """notAfter of the server certificate, as POSIX time; None if there was no handshake."""
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
        if cert and "notAfter" in cert:  # verified: Python parsed it for us
            return float(ssl.cert_time_to_seconds(str(cert["notAfter"])))
        der = ssl_object.getpeercert(binary_form=True)  # not verified: only the raw bytes
    except (ValueError, ssl.SSLError):  # handshake not completed
        return None
    return _der_not_after(der) if der else None


cert_expiry = _cert_expiry  # for monitor.probes.tls


def _der_not_after(der: bytes) -> float | None:
    """notAfter from a DER X.509 certificate (tbsCertificate → validity → notAfter)."""

    def element(pos: int) -> tuple[int, int, int]:  # tag, content start, content end
        tag, length = der[pos], der[pos + 1]
        start = pos + 2
        if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
            count = length & 0x7F
            length = int.from_bytes(der[start : start + count], "big")
            start += count
        return tag, start, start + length

    try:
        _, pos, _ = element(0)  # Certificate
        _, pos, _ = element(pos)  # tbsCertificate
        tag, _, end = element(pos)
        if tag == 0xA0:  # [0] version, optional
            pos = end
        for _ in range(3):  # serialNumber, signature, issuer
            _, _, pos = element(pos)
        _, pos, _ = element(pos)  # validity
        _, _, pos = element(pos)  # notBefore
        tag, start, end = element(pos)  # notAfter
        text = der[start:end].decode("ascii")
        if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
            return None
        parsed = time.strptime(text[:14], "%Y%m%d%H%M%S")
        return float(calendar.timegm(parsed))
    except (IndexError, ValueError):
        return None
