"""Probes: one function per target kind, each turning a Target into a ProbeResult.

A probe never raises (except asyncio.CancelledError): every failure is a ProbeResult.
Kinds: http (http:// and https:// URLs), tcp, tls, dns, icmp: one module each. A URL's
scheme names its kind (`kind_of()`); `check_url()` is the one URL check of config and CLI.
Imports: stdlib, the probe modules of this package, monitor.model.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from monitor.model import Failure, ProbeResult, Target
from monitor.probes.dns import parse_dns_url, probe_dns
from monitor.probes.http import probe_http
from monitor.probes.icmp import parse_icmp_url, probe_icmp
from monitor.probes.proxy import parse_proxy_url
from monitor.probes.sanitize import clean, target_secrets
from monitor.probes.tcp import parse_tcp_url, probe_tcp
from monitor.probes.tls import expiry_failure, parse_tls_url, probe_tls

_SPACE = re.compile(r"\s")  # white space in a URL (one regex: 100,000 URLs at start)

__all__ = ["KINDS", "PROBES", "Probe", "check_url", "kind_of", "parse_proxy_url", "probe_http",
           "run_probe", "secrets_of"]

Probe = Callable[[Target], Awaitable[ProbeResult]]

# Target.kind → probe. Add a kind here; config and `monitor check` follow KINDS.
PROBES: Mapping[str, Probe] = {
    "http": probe_http,
    "tcp": probe_tcp,
    "tls": probe_tls,
    "dns": probe_dns,
    "icmp": probe_icmp,
}
KINDS = tuple(PROBES)
# URL scheme → kind.
SCHEMES: Mapping[str, str] = {"http": "http", "https": "http", "tcp": "tcp", "tls": "tls",
                              "dns": "dns", "icmp": "icmp"}


def kind_of(url: str) -> str | None:
    """The kind a URL's scheme names, None for an unknown scheme."""
    scheme, sep, _ = url.partition("://")
    return SCHEMES.get(scheme.lower()) if sep else None


def _http_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a host") from None
    if not parts.hostname or _SPACE.search(url) is not None:
        raise ValueError("must be an http:// or https:// URL with a host")


_CHECKS: Mapping[str, Callable[[str], object]] = {
    "http": _http_url, "tcp": parse_tcp_url, "tls": parse_tls_url, "dns": parse_dns_url,
    "icmp": parse_icmp_url,
}


def check_url(url: str) -> str:
    """The kind of `url`, after checking the URL is complete for it; else ValueError."""
    kind = kind_of(url)
    if kind is None:
        raise ValueError("must be an http://, https://, tcp://, tls://, dns:// or icmp:// URL")
    _CHECKS[kind](url)
    return kind


def secrets_of(target: Target) -> tuple[str, ...]:
    """Everything of a target a message must not show: its request's secrets and the proxy's."""
    url = target.url
    if target.kind == "dns":  # ?type=AAAA is no secret, and masking it garbles messages
        url = url.partition("?")[0]
    secrets = target_secrets(url, target.headers, target.body)
    if target.proxy:
        secrets += target_secrets(target.proxy)
    return secrets


async def run_probe(target: Target, *, clock: Callable[[], float] = time.time) -> ProbeResult:
    """Run the probe for `target.kind`; an unknown kind is a failed result, not an error.

    A certificate expiring within `min_days_left` fails a successful probe (tls, https).
    Every message leaves through `sanitize.clean()`, whichever probe wrote it.
    """
    probe = PROBES.get(target.kind)
    if probe is None:
        result = ProbeResult(
            target=target.name,
            started_at=clock(),
            duration=0.0,
            ok=False,
            failure=Failure.ERROR,
            message=f"unknown probe kind {target.kind!r}",
        )
    else:
        result = await probe(target)
    expired = expiry_failure(target, result, clock())
    if expired is not None:
        result = dataclasses.replace(result, ok=False, failure=expired[0], message=expired[1],
                                     phase="tls")
    if not result.message:  # most results: nothing to clean
        return result
    message = clean(result.message, secrets_of(target))
    return result if message == result.message else dataclasses.replace(result, message=message)
