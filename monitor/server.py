"""The monitor's one HTTP server: metrics, health, reload, the JSON API and the status page.

It never accepts targets from requests (no SSRF): it only reads what the daemon knows.
The daemon hands it a `View`; this module imports aiohttp, prometheus_client and
monitor.model only.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from monitor.config import parse_duration
from monitor.model import Outage
from monitor.timefmt import human_duration, rfc3339

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


def outage_json(o: Outage, now: float) -> dict[str, Any]:
    return {
        "id": o.id, "target": o.target, "location": o.location,
        "started_at": rfc3339(o.started_at), "ended_at": rfc3339(o.ended_at),
        "duration_seconds": round(o.duration(now), 3), "cause": o.cause.value,
        "message": o.message, "failed_probes": o.failed_probes, "counts": dict(o.counts),
        "maintenance": o.maintenance,
    }


class View(Protocol):
    """What the server may ask of the daemon."""

    location: str

    def now(self) -> float: ...
    def targets_json(self) -> list[dict[str, Any]]: ...
    def offline_json(self) -> dict[str, Any] | None: ...
    async def outages(self, *, target: str | None, since: float | None, until: float | None,
                      open: bool | None) -> list[Outage]: ...
    async def reload(self) -> tuple[bool, list[str]]: ...


def build_app(view: View, registry: CollectorRegistry, token: str | None = None, *,
              exposition: Callable[[], AsyncIterator[bytes]] | None = None) -> web.Application:
    """`exposition` renders /metrics in pieces (Metrics.exposition); default: the registry."""
    app = web.Application(middlewares=[_auth(token)] if token else [])
    routes = web.RouteTableDef()

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
        ok, errors = await view.reload()
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
        found = await view.outages(**query)
        return _json({"outages": [outage_json(o, now) for o in found]})

    @routes.get("/")
    async def status_page(request: web.Request) -> web.Response:
        recent = await view.outages(target=None, since=view.now() - 30 * 86400, until=None,
                                    open=None)
        return web.Response(text=render_status_page(view, recent[:20]),
                            content_type="text/html")

    app.add_routes(routes)
    return app


_OUTAGE_PARAMS = {"target", "since", "until", "open"}


def _outage_query(query: Mapping[str, str], now: float) -> dict[str, Any]:
    unknown = sorted(set(query) - _OUTAGE_PARAMS)
    if unknown:
        allowed = ", ".join(sorted(_OUTAGE_PARAMS))
        raise ValueError(f"unknown parameter {unknown[0]!r}; use {allowed}")
    result: dict[str, Any] = {"target": query.get("target") or None, "since": None,
                              "until": None, "open": None}
    for key in ("since", "until"):
        if key in query:
            result[key] = parse_time(query[key], now)
    if "open" in query:
        value = query["open"].lower()
        if value not in ("true", "false"):
            raise ValueError(f"open must be true or false, got {query['open']!r}")
        result["open"] = value == "true"
    if result["since"] is not None and result["until"] is not None \
            and result["since"] > result["until"]:
        raise ValueError("since must not be after until")
    return result


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1) + "\n", status=status,
                        content_type="application/json")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _auth(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Bearer token on everything but /healthz (so container health checks need no secret)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response({"error": "a bearer token is required"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return middleware


def render_status_page(view: View, outages: list[Outage]) -> str:
    rows = []
    for t in view.targets_json():
        state = t["state"]
        last = t.get("last_result") or {}
        detail = "" if last.get("ok", True) else f"{last.get('failure')}: {last.get('message')}"
        ratio = (t.get("uptime") or {}).get("30d")
        rows.append(
            f"<tr class='{escape(state)}'><td>{escape(t['name'])}</td>"
            f"<td>{escape(t['url'])}</td><td class='state'>{escape(state.upper())}</td>"
            f"<td>{escape(t.get('state_since') or '')}</td>"
            f"<td>{'' if ratio is None else f'{ratio * 100:.3f}%'}</td>"
            f"<td>{escape(detail)}</td></tr>")
    now = view.now()
    outage_rows = [
        f"<tr class='{'down' if o.open else ''}'><td>{escape(o.target)}</td>"
        f"<td>{rfc3339(o.started_at)}</td><td>{rfc3339(o.ended_at) or 'ongoing'}</td>"
        f"<td>{human_duration(o.duration(now))}</td><td>{escape(o.cause.value)}"
        f"{' (maintenance)' if o.maintenance else ''}</td><td>{escape(o.message)}</td></tr>"
        for o in outages]
    offline = view.offline_json()
    banner = "" if offline is None else (
        f"<p class='offline'>This monitor is offline since {escape(offline['since'] or '')}: "
        f"{escape(offline['evidence'])}. Results count as unknown until it is back.</p>")
    return _PAGE.format(location=escape(view.location), rows="\n".join(rows), banner=banner,
                        outages="\n".join(outage_rows) or "<tr><td colspan=6>none</td></tr>",
                        now=rfc3339(now))


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>monitor — {location}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ padding: .4em .8em; border-bottom: 1px solid #ddd; text-align: left; }}
td:not(:last-child) {{ white-space: nowrap; }}
tr.up .state {{ color: #fff; background: #2e7d32; }}
tr.down .state {{ color: #fff; background: #c62828; }}
tr.unknown .state {{ color: #fff; background: #757575; }}
h2 {{ margin-top: 2em; font-size: 1.1em; }}
.offline {{ padding: .6em; color: #fff; background: #e65100; }}
</style></head><body>
<h1>Status from {location}</h1>
{banner}
<p>{now} · <a href="/api/v1/targets">targets JSON</a> · <a href="/api/v1/outages">outages JSON</a>
 · <a href="/metrics">metrics</a></p>
<table><tr><th>target</th><th>url</th><th>state</th><th>since</th><th>uptime 30d</th>
<th>last error</th></tr>
{rows}
</table>
<h2>Outages in the last 30 days</h2>
<table><tr><th>target</th><th>started</th><th>ended</th><th>duration</th><th>cause</th>
<th>first error</th></tr>
{outages}
</table></body></html>
"""
