"""The HTTP(S) probe: one cold request to a target, judged and timed by phase.

Every probe is a first visit: its own DNS lookup (aiodns through aiohttp's AsyncResolver when
installed, no DNS cache), its own TCP connection and TLS handshake (fresh connector, closed
after the request, no TLS session reuse). The probe never raises (except CancelledError when
its task is cancelled); every outcome, including a timeout, is a `ProbeResult`.

Phases are contiguous segments of one monotonic clock, so they add up to the duration:
resolve (DNS), connect (TCP), tls (handshake), processing (connection ready → response
headers), transfer (headers → body read). With redirects each phase is summed over the hops.
aiohttp's trace signals mark every boundary but one: TCP connected vs. TLS started. That one
comes from `_TimedSSLContext.wrap_bio`, which asyncio calls as soon as the TCP socket is
connected; it finds the probe's timer through a context variable.

DNS caveat: aiodns shares one c-ares channel per event loop, and c-ares (≥ 1.23) caches
answers up to their TTL with no switch in pycares, as a caching stub resolver would. c-ares
runs its own event thread; this module starts no thread and never uses the executor.
The channel closes when the last resolver using it does; a daemon keeps it open with a
`DnsChannel` for its whole run, else probes that do not overlap would each build and destroy
a channel and its thread (~0.4 ms of CPU per probe, a fifth of the pipeline's cost).

Imports: stdlib, aiohttp (aiodns only through aiohttp's AsyncResolver), monitor.model.
"""

from __future__ import annotations

import asyncio
import calendar
import contextvars
import functools
import os
import re
import socket
import ssl
import time
from collections.abc import Callable

import aiohttp

from monitor.model import PHASES, Failure, ProbeResult, StatusRange, Target

__all__ = ["MAX_REDIRECTS", "DnsChannel", "new_ssl_context", "probe_http"]

MAX_REDIRECTS = 10  # hard cap whatever the target asks for
MAX_LINE_SIZE = 8190  # status line and each header field, bytes
MAX_HEADERS = 128
_MESSAGE_LIMIT = 300  # characters in ProbeResult.message

# The deadline is ours (asyncio.timeout); aiohttp's own timeouts stay off.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None)


class _Visit:
    """Run-time state of one probe: the phase clock, and what the response told us."""

    __slots__ = ("phase", "phases", "since", "ssl_object", "status", "truncated")

    def __init__(self) -> None:
        self.phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        # Setting up before the first connection is counted as connect: it is tiny, and
        # resolve must stay 0.0 for IP literals.
        self.phase: str | None = "connect"
        self.since = time.perf_counter()
        self.ssl_object: ssl.SSLObject | None = None  # of the latest TLS connection
        self.status: int | None = None
        self.truncated = False

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
    """One context of each kind per process, built on first use."""
    return new_ssl_context(verify=verify)


def _entering(phase: str, *, new_connection: bool = False) -> Callable[..., object]:
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
    config.on_request_redirect.append(_entering("transfer"))  # headers of a redirect
    config.on_request_end.append(_entering("transfer"))  # headers of the final response
    return config


def _resolver() -> aiohttp.abc.AbstractResolver | None:
    """aiodns when installed (no thread pool); None lets aiohttp pick its default."""
    try:
        return aiohttp.AsyncResolver()
    except RuntimeError:  # aiodns missing
        return None


class DnsChannel:
    """Keeps the running event loop's shared DNS channel open until `close()`.

    Open one when the daemon starts and close it when it stops. Probes still get their own
    resolver each (cheap while the channel is open); answers are cached up to their TTL by
    c-ares either way.
    """

    def __init__(self) -> None:
        self._resolver = _resolver()  # needs the running loop

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


async def probe_http(
    target: Target,
    *,
    clock: Callable[[], float] = time.time,
    ssl_context: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Probe `target` once and judge the answer; never raises (but for cancellation).

    clock gives `started_at` (POSIX time); durations come from the monotonic clock.
    ssl_context replaces the verifying context (system CAs) when `target.verify_tls` is on,
    e.g. to trust a private CA. Build it with `new_ssl_context()`: with another SSLContext
    the tls phase is counted in connect and `cert_expiry` stays None.
    """
    started_at = clock()
    visit = _Visit()
    start = visit.since
    token = _VISIT.set(visit)
    failure: Failure | None = None
    message = ""
    phase: str | None = None  # where a failure happened
    deadline = asyncio.timeout(target.timeout)
    try:
        async with deadline:
            failure, message = await _visit(target, visit, ssl_context)
    except TimeoutError:
        if deadline.expired():
            phase = visit.phase or "transfer"
            failure = Failure.TIMEOUT
            message = f"timed out after {target.timeout:g}s during {phase}"
        else:  # raised by something inside, not our deadline
            failure, message = Failure.TIMEOUT, "timed out"
            phase = visit.phase
    except asyncio.CancelledError:  # our task was cancelled (shutdown): not a probe outcome
        raise
    except Exception as exc:
        failure, message = _classify(exc)
        phase = visit.phase
    finally:
        _VISIT.reset(token)
    visit.enter(None)
    duration = time.perf_counter() - start
    return ProbeResult(
        target=target.name,
        started_at=started_at,
        duration=duration,
        ok=failure is None,
        failure=failure,
        message=_clean(message, target.url),
        status=visit.status,
        phases=visit.phases,
        phase=phase,
        cert_expiry=_cert_expiry(visit.ssl_object),
        truncated=visit.truncated,
    )


async def _visit(
    target: Target, visit: _Visit, ssl_context: ssl.SSLContext | None
) -> tuple[Failure | None, str]:
    """Send the request, read the body (capped), judge it. Exceptions go to the caller."""
    if not target.verify_tls:
        context = _shared_ssl_context(False)
    else:
        context = ssl_context or _shared_ssl_context(True)
    max_redirects = min(target.max_redirects, MAX_REDIRECTS)
    want_body = target.body_contains is not None or target.body_regex is not None
    # A resolver we pass in is ours to close. AsyncResolver instances share one aiodns
    # channel per event loop, which closes when the last of them does.
    resolver = _resolver()
    try:
        connector = aiohttp.TCPConnector(
            force_close=True,
            use_dns_cache=False,
            resolver=resolver,
            ssl=context,
            local_addr=(target.source_address, 0) if target.source_address else None,
        )
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=_NO_CLIENT_TIMEOUT,
                trace_configs=[_trace_config()],
                trust_env=False,  # no proxies from the environment, no netrc (threads)
                max_line_size=MAX_LINE_SIZE,
                max_field_size=MAX_LINE_SIZE,
                max_headers=MAX_HEADERS,
            ) as session,
            session.request(
                target.method,
                target.url,
                headers=target.headers or None,
                data=target.body,
                allow_redirects=target.follow_redirects and max_redirects > 0,
                # aiohttp stops at the Nth redirect response; we follow N redirects.
                max_redirects=max_redirects + 1,
            ) as response,
        ):
            visit.status = response.status
            charset = response.charset
            body = await _read_body(response, target.max_body_bytes, want_body, visit)
            visit.enter(None)
    except aiohttp.TooManyRedirects:
        return Failure.HTTP, f"too many redirects ({max_redirects})"
    finally:
        if resolver is not None:
            await resolver.close()

    status = visit.status
    if not any(status in accepted for accepted in target.expect_status):
        return Failure.HTTP, f"HTTP {status}, expected {_ranges(target.expect_status)}"
    if want_body:
        text = _decode(body, charset)
        where = f" (in the first {len(body)} bytes)" if visit.truncated else ""
        if target.body_contains is not None and target.body_contains not in text:
            return Failure.CONTENT, f"body does not contain {target.body_contains!r}{where}"
        if target.body_regex is not None and not _compiled(target.body_regex).search(text):
            return Failure.CONTENT, f"body does not match {target.body_regex!r}{where}"
    return None, ""


async def _read_body(
    response: aiohttp.ClientResponse, limit: int, keep: bool, visit: _Visit
) -> bytes:
    """Read the decompressed body up to `limit` bytes; keep it only if it will be judged."""
    kept = bytearray()
    size = 0
    while chunk := await response.content.readany():
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
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # unknown charset in Content-Type
        return body.decode("utf-8", errors="replace")


def _ranges(ranges: tuple[StatusRange, ...]) -> str:
    return ", ".join(f"{r.low}" if r.low == r.high else f"{r.low}-{r.high}" for r in ranges)


def _classify(exc: Exception) -> tuple[Failure, str]:
    """Failure class and one-line message for an exception raised by a request.

    Messages are built from the parts of the exception, never from str() of aiohttp's
    exceptions, which carry the URL (credentials, query strings).
    """
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
        return Failure.CONNECT, f"cannot connect: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure.CONNECT, "server disconnected before a complete response"
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return Failure.TLS, "certificate fingerprint mismatch"
    if isinstance(exc, aiohttp.ClientResponseError):  # malformed or oversized response
        # "Got more than 8190 bytes when reading: b'bbbb...'." → drop the echoed bytes
        return Failure.HTTP, "bad response: " + re.sub(r":\s*b?['\"].*$", "", str(exc.message))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure.HTTP, f"bad response body: {exc}"
    if isinstance(exc, aiohttp.RedirectClientError):
        return Failure.HTTP, "redirect to an invalid or non-HTTP location"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return Failure.ERROR, "invalid URL"
    if isinstance(exc, ssl.SSLError):
        return Failure.TLS, f"TLS error: {_ssl_reason(exc)}"
    if isinstance(exc, OSError):  # reset, broken pipe, unreachable
        return Failure.CONNECT, f"connection error: {_os_reason(exc)}"
    return Failure.ERROR, f"{type(exc).__name__}: {exc}"


def _os_reason(error: OSError) -> str:
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)  # "Connection refused", without the address
    return str(error.strerror or "") or str(error) or type(error).__name__


def _ssl_reason(error: BaseException) -> str:
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" → "wrong version number"
    text = str(getattr(error, "strerror", None) or error)
    text = re.sub(r"^\[[A-Z0-9_: ]+\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or type(error).__name__


_URL_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def _clean(message: str, url: str) -> str:
    """One line, no URLs (they may carry credentials or secret query values), bounded."""
    message = _URL_RE.sub("<url>", " ".join(message.split()))
    secret = _password(url)
    if secret:
        message = message.replace(secret, "***")
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "…"
    return message


def _password(url: str) -> str | None:
    """The password in http://user:password@host/..., if any."""
    authority = url.partition("://")[2].partition("/")[0]
    userinfo, at, _ = authority.rpartition("@")
    if not at:
        return None
    return userinfo.partition(":")[2] or None


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
