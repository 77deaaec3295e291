"""The monitor's one HTTP server: metrics, health, reload, the JSON API and the status page.

It never accepts targets from requests (no SSRF): it only reads what the daemon knows.
The daemon hands it a `View`; this module imports aiohttp, prometheus_client and
monitor.model only.

Safe to expose: every request must name this monitor in its Host header (DNS rebinding),
POST /-/reload refuses what a browser form or a cross-site page can send (CSRF), and a
bearer token, when set, guards everything but /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from monitor.model import Outage, OutageQuery, OutageTime
from monitor.timefmt import human_duration, parse_duration, rfc3339
from monitor.web.peers import Peers
from monitor.web.routes import add_status_routes, is_public
from monitor.web.view import StatusView
from monitor.web.view import Unavailable as Unavailable  # raised by the daemon's view

log = logging.getLogger("monitor.server")


def parse_time(text: str, now: float) -> float:
    """RFC 3339 time, POSIX seconds, or a look-back duration like `7d` (meaning now − 7d)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use RFC 3339 (2022-02-26T12:00:00Z), POSIX seconds, "
            "or a look-back like 7d") from None


def outage_json(o: Outage, t: OutageTime) -> dict[str, Any]:
    """`duration_seconds` is known time (the monitor saw it down); `unknown_seconds` is the
    time within the outage when the monitor was not running or was offline."""
    return {
        "id": o.id, "target": o.target, "location": o.location,
        "started_at": rfc3339(o.started_at), "ended_at": rfc3339(o.ended_at),
        "duration_seconds": round(t.known, 3), "unknown_seconds": round(t.unknown, 3),
        "cause": o.cause.value, "message": o.message, "failed_probes": o.failed_probes,
        "counts": dict(o.counts), "maintenance": o.maintenance,
    }


def duration_text(t: OutageTime) -> str:
    """`3m 53s`, or `3m 53s (+14m unknown)` when the monitor did not see all of it."""
    text = human_duration(t.known)
    return text if t.unknown < 1 else f"{text} (+{human_duration(t.unknown)} unknown)"


class View(StatusView, Protocol):
    """What the server may ask of the daemon: what the pages may (`StatusView`: its live
    state and history), and a reload."""

    async def reload(self) -> tuple[bool, list[str]]: ...


def build_app(view: View, registry: CollectorRegistry, token: str | None = None, *,
              exposition: Callable[[], AsyncIterator[bytes]] | None = None,
              hosts: HostPolicy | None = None, public_status: bool = False,
              peers: Sequence[str] = ()) -> web.Application:
    """`exposition` renders /metrics in pieces (Metrics.exposition); default: the registry.

    `hosts` decides which Host headers are served; default: loopback names only.
    `public_status` serves the status pages and badges without the token; `peers` are
    other monitors' base URLs, asked for their targets' states (with the same token).
    """
    policy = hosts or HostPolicy("127.0.0.1")
    middlewares = [_host_check(policy)] + ([_auth(token, public_status)] if token else [])
    app = web.Application(middlewares=middlewares)
    routes = web.RouteTableDef()
    reload_once = SingleFlight(view.reload)
    app.on_cleanup.append(lambda _: reload_once.cancel())

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.StreamResponse:
        if exposition is None:
            body = generate_latest(registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await response.prepare(request)
        async for chunk in exposition():
            await response.write(chunk)
        await response.write_eof()
        return response

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    @routes.post("/-/reload")
    async def reload(request: web.Request) -> web.Response:
        refusal = reload_refusal(request)
        if refusal is not None:
            log.warning("reload refused from %s: %s", request.remote, refusal)
            return web.json_response({"ok": False, "errors": [refusal]}, status=403)
        ok, errors = await reload_once()
        return web.json_response({"ok": ok, "errors": errors}, status=200 if ok else 400)

    @routes.get("/api/v1/targets")
    async def targets(request: web.Request) -> web.Response:
        return _json({"location": view.location, "offline": view.offline_json(),
                      "targets": view.targets_json()})

    @routes.get("/api/v1/outages")
    async def outages(request: web.Request) -> web.Response:
        now = view.now()
        try:
            query = _outage_query(request.query, now)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        try:
            found = await view.outages(query)
        except Unavailable as exc:
            return _json({"error": f"the outage history is unavailable: {exc}"}, status=503,
                         headers=RETRY)
        return _json({"outages": [outage_json(o, t) for o, t in found]})

    app.add_routes(routes)
    add_status_routes(app, view, Peers(peers, token))  # /, /target/NAME, /badge/...
    return app


_OUTAGE_PARAMS = {"target", "since", "until", "open"}


def _outage_query(query: Mapping[str, str], now: float) -> OutageQuery:
    unknown = sorted(set(query) - _OUTAGE_PARAMS)
    if unknown:
        allowed = ", ".join(sorted(_OUTAGE_PARAMS))
        raise ValueError(f"unknown parameter {unknown[0]!r}; use {allowed}")
    since = parse_time(query["since"], now) if "since" in query else None
    until = parse_time(query["until"], now) if "until" in query else None
    is_open = None
    if "open" in query:
        value = query["open"].lower()
        if value not in ("true", "false"):
            raise ValueError(f"open must be true or false, got {query['open']!r}")
        is_open = value == "true"
    if since is not None and until is not None and since > until:
        raise ValueError("since must not be after until")
    return OutageQuery(target=query.get("target") or None, since=since, until=until,
                       open=is_open)


RETRY = {"Retry-After": "60"}  # store trouble: worth asking again in a minute


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
          ) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2) + "\n", status=status,
                        content_type="application/json", headers=headers)



LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
RELOAD_HEADER = "X-Monitor-Reload"


def host_name(value: str) -> str | None:
    """The name in a Host header without its port, lower-case; None if it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        name, bracket, port = value[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        return name
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():  # also an unbracketed IPv6 address
        return None
    return name.removesuffix(".") or None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(listen: str) -> bool:
    """Whether binding `listen` keeps the server on this machine."""
    if listen.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(listen.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything, or "" (every interface)


class HostPolicy:
    """Which Host headers the server answers: its DNS-rebinding defence.

    A rebinding page reaches us under the attacker's domain name, so the name is what
    matters: local names, the listen address and `allowed` are served, and so is any IP
    literal (a browser that sends one has connected to that very address). "*" allows all.
    """

    def __init__(self, listen: str, allowed: Collection[str] = ()) -> None:
        names = {*LOCAL_NAMES, listen.strip("[]").lower(), *(a.lower() for a in allowed)}
        self.any = "*" in names
        self.names = frozenset(n.removesuffix(".") for n in names if n and n != "*")

    def allows(self, header: str | None) -> bool:
        if header is None or self.any:  # no Host at all: not a browser (they always send it)
            return True
        name = host_name(header)
        return name is not None and (name in self.names or is_ip(name))


def _host_check(policy: HostPolicy) -> Middleware:
    """421 for a Host header that does not name this monitor, before anything else runs."""
    warned: set[str] = set()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Host")
        if policy.allows(header):
            return await handler(request)
        shown = repr((header or "")[:100])
        if len(warned) < 100 and shown not in warned:  # once per name, bounded
            warned.add(shown)
            log.warning("refused a request for Host %s from %s; if that is a name of this "
                        "monitor, add it to server.allowed_hosts", shown, request.remote)
        return web.json_response(
            {"error": f"Host {shown} is not a name of this monitor; add it to "
                      "server.allowed_hosts (this check blocks DNS rebinding)"}, status=421)

    return middleware


def reload_refusal(request: web.Request) -> str | None:
    """Why a reload request may come from a browser on another site, or None.

    A form or a no-CORS fetch can only send simple requests, so a JSON Content-Type or the
    custom header proves a deliberate client; Origin and Sec-Fetch-Site name the page.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(origin, request.headers.get("Host", "")):
        return f"cross-origin request refused (Origin: {origin[:100]!r})"
    if request.headers.get(RELOAD_HEADER) != "1" and request.content_type != "application/json":
        return (f"send the header '{RELOAD_HEADER}: 1' (or a JSON Content-Type), e.g. "
                f"curl -X POST -H '{RELOAD_HEADER}: 1' http://HOST:PORT/-/reload; "
                "a plain form post is refused so that no web page can trigger a reload")
    return None


def _same_origin(origin: str, host: str) -> bool:
    try:
        url = URL(origin)
    except ValueError:
        return False
    name = host_name(host)
    if not url.host or name is None or url.host.lower().strip("[]") != name:
        return False  # also Origin: null (sandboxed frames, file: pages)
    _, colon, port = host.rpartition(":")
    return not (colon and port.isdigit() and "]" not in port and url.port != int(port))


class SingleFlight:
    """Concurrent calls share runs: at most one running and one queued behind it.

    A call made while a run is in progress waits for the next run, which starts after it,
    so every caller gets a result that reflects the state at or after its call.
    """

    def __init__(self, run: Callable[[], Awaitable[tuple[bool, list[str]]]]) -> None:
        self._run = run
        self._current: asyncio.Task[tuple[bool, list[str]]] | None = None
        self._next: asyncio.Task[tuple[bool, list[str]]] | None = None

    async def __call__(self) -> tuple[bool, list[str]]:
        if self._next is not None:  # queued, not started: it will see this call's state
            task = self._next
        elif self._current is None or self._current.done():
            task = self._current = asyncio.create_task(self._start(None))
        else:
            task = self._next = asyncio.create_task(self._start(self._current))
        return await asyncio.shield(task)  # a client that leaves does not cancel the run

    async def _start(self, after: asyncio.Task[tuple[bool, list[str]]] | None
                     ) -> tuple[bool, list[str]]:
        if after is not None:
            await asyncio.wait([after])
            self._current, self._next = self._next, None
        return await self._run()

    async def cancel(self) -> None:
        for task in (self._next, self._current):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _auth(token: str, public_status: bool = False) -> Middleware:
    """Bearer token on everything but /healthz (so container health checks need no secret),
    and but the status pages and badges when `public_status`."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz" and not (public_status and is_public(request.path)):
            # Header bytes that are not UTF-8 arrive as surrogates: compare them, never fail.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return web.json_response({"error": "a bearer token is required"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return middleware
