"""The TLS probe (`tls://host[:port]`, port 443 by default): connect, handshake, judge the
certificate; then, like tcp, optionally send `body` and expect a reply.

The chain is verified against the system's CAs and the host name (`verify_tls: false`
checks neither, but still reads the expiry). `cert_expiry` is set from the server's
certificate on every completed handshake, so the expiry metric is set as for https.
`min_days_left` (this kind and https alike) is judged by `expiry_failure()`, which
`monitor.probes.run_probe` applies after every probe.

Failure classes: as tcp, plus tls (handshake failed, chain or name not verified, or the
certificate expires within `min_days_left`).

Imports: stdlib, monitor.model, monitor.probes.common, monitor.probes.http (the DER expiry
reader), monitor.probes.resolve, monitor.probes.tcp.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable

from monitor.model import Failure, ProbeResult, Target
from monitor.probes.common import Endpoint, endpoint, invalid_url, no_path
from monitor.probes.http import cert_expiry
from monitor.probes.resolve import Resolver
from monitor.probes.tcp import TlsSetup, probe_stream

__all__ = ["expiry_failure", "new_tls_context", "parse_tls_url", "probe_tls"]

DAY = 86400.0


def parse_tls_url(url: str) -> Endpoint:
    """tls://host[:port]; raises ValueError saying what is wrong."""
    address, parts = endpoint(url, "tls", port="443")
    no_path(parts, "tls")
    return address


def new_tls_context(*, verify: bool = True) -> ssl.SSLContext:
    """A client context: system CAs and host name checked, or nothing checked."""
    context = ssl.create_default_context()  # TLS ≥ 1.2 with Python's defaults
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def _shared_context(verify: bool) -> ssl.SSLContext:
    return new_tls_context(verify=verify)


async def probe_tls(
    target: Target,
    *,
    clock: Callable[[], float] = time.time,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver | None = None,
) -> ProbeResult:
    """Probe `target` (kind tls) once; never raises (but for cancellation).

    ssl_context replaces the verifying context (e.g. to trust a private CA) when
    `target.verify_tls` is on.
    """
    try:
        address = parse_tls_url(target.url)
    except ValueError as exc:
        return invalid_url(target, clock(), exc)
    verifying = ssl_context or _shared_context(True)
    context = verifying if target.verify_tls else _shared_context(False)
    # An IP literal is checked against the certificate's IP entries (and sent as no SNI).
    setup = TlsSetup(context, address.host, cert_expiry)
    return await probe_stream(target, address, setup, clock=clock, resolver=resolver)


def expiry_failure(target: Target, result: ProbeResult, now: float) -> tuple[Failure, str] | None:
    """A tls failure when a successful probe's certificate expires within min_days_left."""
    if target.min_days_left is None or not result.ok or result.cert_expiry is None:
        return None
    left = (result.cert_expiry - now) / DAY
    if left >= target.min_days_left:
        return None
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result.cert_expiry))
    if left < 0:
        return Failure.TLS, f"certificate expired {-left:.1f} days ago ({when})"
    return Failure.TLS, (f"certificate expires in {left:.1f} days ({when}), "
                         f"less than min_days_left {target.min_days_left:g}")
