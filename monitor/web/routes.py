"""The routes of the pages and badges, and which paths `server.public_status` opens.

`/` lists targets (search `q`, `state`, grouping by a label with `group`, `page`), down
first; only the shown page's history is read, so 10,000 targets cost what 50 do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from monitor.model import OutageQuery
from monitor.store.base import HISTORY_WINDOWS, TargetHistory
from monitor.web import page
from monitor.web.badges import badge, etag, latency_colour, uptime_colour
from monitor.web.peers import Peers
from monitor.web.view import StatusView, TimedOutage, Unavailable

PER_PAGE = 50
LOG_PAGE = 50
MAX_PAGE = 10_000
ORDER = {"down": 0, "unknown": 1, "up": 2}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
BADGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"
RETRY = {"Retry-After": "60"}


def is_public(path: str) -> bool:
    """The paths `server.public_status: true` serves without the token."""
    return path == "/" or path.startswith(("/target/", "/badge/"))


def _int(value: str | None, default: int) -> int:
    try:
        return min(MAX_PAGE, max(1, int(value or default)))
    except ValueError:
        return default


def matches(t: Mapping[str, Any], q: str) -> bool:
    """Case-insensitive: in the name, the URL, or a `label=value` of the target."""
    if not q:
        return True
    labels = " ".join(f"{k}={v}" for k, v in (t.get("labels") or {}).items())
    return q in f"{t['name']} {t['url']} {labels}".lower()


def listing(targets: Sequence[Mapping[str, Any]], query: Mapping[str, str]
            ) -> tuple[page.Listing, list[Mapping[str, Any]]]:
    """The filter asked for, and the targets of the asked page, in display order."""
    q = query.get("q", "").strip().lower()[:200]
    state = query.get("state", "") if query.get("state") in ORDER else ""
    group = query.get("group", "")[:100]
    counts: dict[str, int] = {}
    labels: set[str] = set()
    for t in targets:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
        labels.update(t.get("labels") or {})
    if group not in labels:
        group = ""
    found = [t for t in targets if (not state or t["state"] == state) and matches(t, q)]

    def key(t: Mapping[str, Any]) -> tuple[str, int, str]:
        value = str((t.get("labels") or {}).get(group, "\uffff")) if group else ""
        return value, ORDER.get(t["state"], 1), str(t["name"])

    found.sort(key=key)
    pages = max(1, -(-len(found) // PER_PAGE))
    number = min(_int(query.get("page"), 1), pages)
    shown = found[(number - 1) * PER_PAGE:number * PER_PAGE]
    return page.Listing(q=q, state=state, group=group, page=number, per_page=PER_PAGE,
                        total=len(found), counts=counts, labels=sorted(labels)), shown


def add_status_routes(app: web.Application, view: StatusView, peers: Peers) -> None:
    routes = web.RouteTableDef()
    app.on_cleanup.append(lambda _: peers.close())

    async def history(names: Sequence[str]) -> tuple[Mapping[str, TargetHistory], str | None]:
        try:
            return await view.history(names), None
        except Unavailable as exc:
            return {}, str(exc)

    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        targets = view.targets_json()  # live state comes from memory
        chosen, shown = listing(targets, request.query)
        found, trouble = await history([str(t["name"]) for t in shown])
        recent: list[TimedOutage] = []
        if trouble is None:
            try:
                recent = await view.outages(OutageQuery(since=view.now() - 30 * 86400,
                                                        limit=20))
            except Unavailable as exc:
                trouble = str(exc)
        text = page.render_index(
            location=view.location, now=view.now(), offline=view.offline_json(),
            targets=shown, history=found, listing=chosen, peers=await peers.views(),
            recent=recent, trouble=trouble)
        return _html(text, trouble)

    @routes.get("/target/{name}")
    async def target(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        known = view.target_json(name)
        if known is None:
            return web.Response(text=f"no target named {name[:100]!r}\n", status=404,
                                headers=PAGE_HEADERS)
        number = _int(request.query.get("page"), 1)
        found, trouble = await history([name])
        outages: list[TimedOutage] = []
        if trouble is None:
            try:
                outages = await view.outages(OutageQuery(target=name, limit=number * LOG_PAGE + 1))
            except Unavailable as exc:
                trouble = str(exc)
        more = len(outages) > number * LOG_PAGE
        outages = outages[(number - 1) * LOG_PAGE:number * LOG_PAGE]
        views = await peers.views()
        matrix = page.location_matrix(view.location, [known], views) if views else ""
        text = page.render_target(
            location=view.location, now=view.now(), offline=view.offline_json(), target=known,
            history=found.get(name), outages=outages, page=number, more=more,
            probes=view.recent_results(name), peers=matrix, trouble=trouble)
        return _html(text, trouble)

    @routes.get("/badge/{name}/{kind}.svg")
    async def badge_svg(request: web.Request) -> web.Response:
        name, kind = request.match_info["name"], request.match_info["kind"]
        known = view.target_json(name)
        status = 200
        if known is None:
            status, body = 404, badge(name, "no such target", "unknown")
        elif kind == "status":
            body = badge(name, str(known["state"]), str(known["state"]))
        elif kind in ("uptime", "response"):
            window = request.query.get("window", "30d")
            if kind == "uptime" and window not in HISTORY_WINDOWS:
                status, body = 400, badge("window", f"use {', '.join(HISTORY_WINDOWS)}", "poor")
            else:
                body = await _history_badge(view, name, kind, window)
        else:
            status, body = 404, badge(kind, "use status, uptime or response", "unknown")
        tag = etag(body)
        headers = {"ETag": tag, "Cache-Control": "max-age=60", "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": BADGE_CSP}
        if status == 200 and tag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(text=body, status=status, content_type="image/svg+xml",
                            charset="utf-8", headers=headers)

    app.add_routes(routes)


async def _history_badge(view: StatusView, name: str, kind: str, window: str) -> str:
    try:
        h = (await view.history([name])).get(name)
    except Unavailable:
        return badge(kind, "unavailable", "unknown")
    if kind == "uptime":
        ratio = None if h is None else h.uptime.get(window)
        text = "no data" if ratio is None else page.percent(ratio)
        return badge(f"uptime {window}", text, uptime_colour(ratio))
    latest = None if h is None else next(
        (x.p50_ms for x in reversed(h.latency) if x.p50_ms is not None), None)
    text = "no data" if latest is None else f"{latest:.0f} ms"
    return badge("response", text, latency_colour(latest))


def _html(text: str, trouble: str | None) -> web.Response:
    headers = {**PAGE_HEADERS, **(RETRY if trouble else {})}
    response = web.Response(text=text, content_type="text/html",
                            status=503 if trouble else 200, headers=headers)
    response.enable_compression()  # 90 bars a target: the HTML shrinks about twentyfold
    return response
