"""Probing http(s) targets through a proxy: HTTP CONNECT or SOCKS5 (`Target.proxy`).

`http://[user:pass@]host:port` is an HTTP proxy asked to CONNECT (for http:// targets too:
every request goes through a tunnel, so the proxy cannot answer from a cache);
`socks5://[user:pass@]host:port` (or `socks5h://`, the same) is a SOCKS5 proxy. The
target's name is resolved by the proxy, where the probe is meant to look from; so the
resolve phase stays 0 and the connect phase spans the proxy and the tunnel. The proxy's
own name is looked up by the monitor (`monitor.probes.resolve`: no thread) before the
probe's clock starts. aiohttp-socks (on python-socks) speaks both protocols.

A failure of the proxy is told apart from a failure of the target:
- class `proxy` (unknown: no outage opens, see `Failure.PROXY`), messages that name the
  proxy ("cannot connect to the proxy: ...", "the proxy refused the credentials"):
  the proxy cannot be reached, refuses the credentials or the request, or breaks the
  protocol;
- class `connect`, message "cannot connect (via proxy): ...": the proxy says it could not
  reach the target (SOCKS5 refused or unreachable replies, HTTP 502/503/504 to CONNECT);
- everything after the tunnel (TLS, HTTP, content) is judged as without a proxy.

Imports: stdlib, aiohttp, aiohttp-socks, python-socks, monitor.model, monitor.probes.resolve.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp_socks
import python_socks

from monitor.model import Failure
from monitor.probes.resolve import LOCAL_ERRNOS, Resolver

__all__ = ["PROXY_SCHEMES", "ProxySpec", "classify_proxy_error", "parse_proxy_url",
           "proxy_connector"]

PROXY_SCHEMES = ("http", "socks5", "socks5h")
# SOCKS5 replies that speak of the target (RFC 1928): network/host unreachable, refused,
# TTL expired. Others (general failure, not allowed by ruleset...) are the proxy's.
_SOCKS_TARGET = {3: "Network is unreachable", 4: "No route to host",
                 5: "Connection refused", 6: "TTL expired"}
_HTTP_TARGET = (502, 503, 504)  # the proxy's gateway errors: it could not reach the target


@dataclass(frozen=True, slots=True)
class ProxySpec:
    scheme: str  # "http" or "socks5"
    host: str
    port: int
    username: str | None
    password: str | None


def parse_proxy_url(url: str) -> ProxySpec:
    """http://[user:pass@]host:port or socks5://...; raises ValueError saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("must be a proxy URL like http://host:3128 or socks5://host:1080"
                         ) from None
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError("must be a proxy URL like http://host:3128 or socks5://host:1080")
    if not port:
        raise ValueError("must give the proxy's port, e.g. http://host:3128")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a proxy URL has no path or query")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxySpec("socks5" if parts.scheme.startswith("socks5") else "http",
                     parts.hostname, port, username, password)


async def proxy_connector(spec: ProxySpec, resolver: Resolver, limit: float, **kwargs: Any
                          ) -> aiohttp_socks.ProxyConnector:
    """A connector whose connections go through the proxy (its name looked up here, within
    `limit` seconds)."""
    try:
        async with asyncio.timeout(limit):
            address = (await resolver.lookup(spec.host))[0]
    except TimeoutError:
        raise ProxyUnreachable(f"DNS lookup of the proxy timed out after {limit:g}s"
                               ) from None
    except OSError as exc:
        raise ProxyUnreachable(f"DNS lookup of the proxy failed: {_reason(exc)}"
                               ) from None
    kind = python_socks.ProxyType.SOCKS5 if spec.scheme == "socks5" else \
        python_socks.ProxyType.HTTP
    return aiohttp_socks.ProxyConnector(
        host=address, port=spec.port, proxy_type=kind, username=spec.username,
        password=spec.password, rdns=True, **kwargs)


class ProxyUnreachable(Exception):
    """The proxy's name could not be looked up; the message is the result's."""


def classify_proxy_error(exc: BaseException, spec: ProxySpec) -> tuple[Failure, str] | None:
    """Class and message for an error raised through a proxy connector; None if not one."""
    if isinstance(exc, ProxyUnreachable):
        return Failure.PROXY, str(exc)
    if isinstance(exc, aiohttp_socks.ProxyConnectionError):
        inner = exc.__cause__
        if isinstance(inner, OSError) and inner.errno in LOCAL_ERRNOS:
            return Failure.LOCAL, f"monitor out of resources: {_reason(inner)}"
        reason = _reason(inner) if isinstance(inner, OSError) else "connection failed"
        return Failure.PROXY, f"cannot connect to the proxy: {reason}"
    if isinstance(exc, aiohttp_socks.ProxyTimeoutError):
        return Failure.TIMEOUT, "timed out during connect (through the proxy)"
    if isinstance(exc, aiohttp_socks.ProxyError):
        code = exc.error_code
        if spec.scheme == "socks5" and code in _SOCKS_TARGET:
            return Failure.CONNECT, f"cannot connect (via proxy): {_SOCKS_TARGET[code]}"
        if spec.scheme == "http" and code in _HTTP_TARGET:
            return Failure.CONNECT, f"cannot connect (via proxy): the proxy answered {code}"
        text = _proxy_words(str(exc))
        if code == 407 or "auth" in text.lower():
            return Failure.PROXY, "the proxy refused the credentials"
        return Failure.PROXY, f"the proxy refused: {text}"
    return None


def _proxy_words(text: str) -> str:
    """python-socks' own words for a proxy's reply, short and without addresses."""
    first = text.strip().split("\n", 1)[0][:120]
    return first or "protocol error"


def _reason(error: BaseException | None) -> str:
    if isinstance(error, socket.gaierror):
        return str(error.strerror or "no such name")
    if isinstance(error, ssl.SSLError):
        return "TLS error"
    if isinstance(error, OSError) and isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)
    return type(error).__name__ if error is not None else "error"
