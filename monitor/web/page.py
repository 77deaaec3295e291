"""The HTML of `/` and `/target/NAME`: whole documents, inline CSS and SVG, no script.

They refresh themselves every 60 s (a meta refresh: no JavaScript needed) and read without
colour: states are words with a symbol, bars differ in shape and pattern (see `svg`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from monitor.model import PHASES, ProbeResult
from monitor.store.base import HISTORY_WINDOWS, TargetHistory
from monitor.timefmt import human_duration
from monitor.web import svg
from monitor.web.peers import PeerView
from monitor.web.view import TimedOutage

SYMBOLS = {"up": "▲", "down": "▼", "unknown": "?"}
CERT_WARN_DAYS = 14


@dataclass(frozen=True, slots=True)
class Listing:
    """Which targets `/` shows: the filter the reader chose, and the page of the result."""

    q: str = ""
    state: str = ""  # up, down, unknown or "" (all)
    group: str = ""  # a label name to group by, or ""
    page: int = 1
    per_page: int = 50
    total: int = 0  # targets matching the filter
    counts: Mapping[str, int] = field(default_factory=dict)  # state -> targets (unfiltered)
    labels: Sequence[str] = ()  # label names seen, for the group menu

    def url(self, **changes: Any) -> str:
        values = {"q": self.q, "state": self.state, "group": self.group, "page": self.page}
        values.update(changes)
        query = {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}
        return "/" + ("?" + urlencode(query) if query else "")


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.2f}%" if ratio < 0.9999 else \
        f"{ratio * 100:.3f}%"


def state_tag(state: str) -> str:
    return (f'<span class="state {escape(state)}">{SYMBOLS.get(state, "?")} '
            f"{escape(state.upper())}</span>")


def cert_text(target: Mapping[str, Any], now: float) -> str:
    expires = (target.get("last_result") or {}).get("cert_expires_at")
    if not isinstance(expires, str):
        return ""
    days = (datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() - now) / 86400
    kind = "bad" if days < CERT_WARN_DAYS else "ok"
    text = "certificate expired" if days < 0 else f"certificate: {days:.0f} days left"
    return f' · <span class="cert {kind}">{text}</span>'


def _when(rfc3339: str, now: float) -> str:
    """`2026-11-30 01:22 UTC (5h 30m)` from the API's RFC 3339 time."""
    at = datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    return f"{svg.hm(at)} UTC ({human_duration(max(0.0, now - at))})"


def cause_text(target: Mapping[str, Any]) -> str:
    last = target.get("last_result") or {}
    if not last or last.get("ok", True):
        return ""
    text = f"{last.get('failure')}: {last.get('message')}"
    return text if target["state"] == "down" else f"last probe failed: {text}"


def verdict(states: Mapping[str, str]) -> str:
    """`down everywhere`, `blocked from X`, `up everywhere`, or "" when too little is known."""
    down = [loc for loc, s in states.items() if s == "down"]
    up = [loc for loc, s in states.items() if s == "up"]
    if down and not up:
        return "down everywhere" if len(down) > 1 else f"down from {down[0]}"
    if down:
        return "blocked from " + ", ".join(down)
    return "up everywhere" if up and len(up) == len(states) else ""


def target_card(t: Mapping[str, Any], h: TargetHistory | None, now: float, *,
                heading: str = "h2", peers: str = "") -> str:
    name, state = str(t["name"]), str(t["state"])
    since = t.get("state_since")
    cause = cause_text(t)
    meta = [f"since {_when(since, now)}" if since else "not confirmed yet"]
    if cause:
        meta.append(f'<span class="cause">{escape(cause)}</span>')
    uptime = "".join(
        f'<span class="w"><span class="muted">{w}</span> '
        f"<b>{percent(None if h is None else h.uptime.get(w))}</b></span>"
        for w in HISTORY_WINDOWS)
    if h is None:
        history = '<p class="muted">no history yet</p>'
        latency = ""
    else:
        history = (
            f'<div class="strip">{svg.day_strip(h.days, h.outages, now)}'
            f'<div class="axis"><span>{len(h.days)} days ago</span><span>today</span></div></div>'
            f'<div class="strip">{svg.timeline(h.outages, now, h.known_day)}'
            '<div class="axis"><span>24 h ago</span><span>12 h</span><span>now</span></div>'
            "</div>")
        latest = next((x for x in reversed(h.latency) if x.p50_ms is not None), None)
        figures = "" if latest is None or latest.p95_ms is None or latest.p50_ms is None else (
            f"last hour: p50 {latest.p50_ms:.0f} ms, p95 {latest.p95_ms:.0f} ms")
        legend = f"{figures} (solid: p50, dashed: p95)" if figures else ""
        latency = (f'<div class="latency-box"><span class="muted">latency 24 h</span>'
                   f'{svg.latency_chart(h.latency)}<span class="legend">{legend}</span></div>')
    return (
        f'<article class="target st-{escape(state)}" id="t-{escape(name)}" '
        f'data-target="{escape(name)}">'
        f'<{heading}><a href="/target/{quote(name)}">{escape(name)}</a> {state_tag(state)}'
        f"</{heading}>"
        f'<p class="meta">{" · ".join(meta)}{cert_text(t, now)}</p>'
        f'<p class="url">{escape(str(t["url"]))}</p>{peers}'
        f'{history}<p class="uptime"><span class="muted">uptime</span> {uptime}</p>'
        f"{latency}</article>")


def location_matrix(location: str, targets: Sequence[Mapping[str, Any]],
                    peers: Sequence[PeerView]) -> str:
    """Target × location: each cell the state seen from there; the last column says
    whether a target is down everywhere or blocked from some places only."""
    heads = [location] + [p.location or p.url for p in peers]
    rows = []
    for t in targets:
        name = str(t["name"])
        states = {location: str(t["state"])}
        cells = [f"<td>{state_tag(str(t['state']))}</td>"]
        for p in peers:
            if p.error is not None or p.location is None:
                cells.append(f'<td class="muted" title="{escape(p.error or "")}">no answer</td>')
                continue
            s = p.states.get(name)
            if s is None:
                cells.append('<td class="muted">not probed</td>')
                continue
            states[p.location] = s
            cells.append(f"<td>{state_tag(s)}</td>")
        text = verdict(states)
        kind = "bad" if "down" in text or "blocked" in text else ""
        rows.append(f'<tr data-target="{escape(name)}"><th scope="row">{escape(name)}</th>'
                    f'{"".join(cells)}<td class="verdict {kind}">{escape(text)}</td></tr>')
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in heads)
    return (f'<section><h2>Seen from each location</h2><div class="scroll">'
            f'<table class="matrix"><thead><tr><th>target</th>{head}<th>verdict</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div></section>')


def outage_rows(outages: Sequence[TimedOutage], *, with_target: bool) -> str:
    rows = []
    for o, t in outages:
        duration = human_duration(t.known) + (
            "" if t.unknown < 1 else f" (+{human_duration(t.unknown)} unknown)")
        target = (f'<td data-label="target"><a href="/target/{quote(o.target)}">'
                  f"{escape(o.target)}</a></td>" if with_target else "")
        rows.append(
            f'<tr class="{"down" if o.open else ""}" data-outage="{o.id}">{target}'
            f'<td data-label="started">{svg.hm(o.started_at)}</td>'
            f'<td data-label="ended">{"ongoing" if o.ended_at is None else svg.hm(o.ended_at)}'
            f'</td><td data-label="duration">{duration}</td>'
            f'<td data-label="cause">{escape(o.cause.value)}'
            f"{' (maintenance)' if o.maintenance else ''}</td>"
            f'<td class="msg" data-label="first error">{escape(o.message)}</td></tr>')
    columns = ("target " if with_target else "") + "started ended duration cause first error"
    head = "".join(f"<th>{c}</th>" for c in columns.replace("first error", "first_error")
                   .split()).replace("first_error", "first error")
    span = 6 if with_target else 5
    body = "".join(rows) or f'<tr><td colspan="{span}">none</td></tr>'
    return f'<div class="scroll"><table class="log"><tr>{head}</tr>{body}</table></div>'


def render_index(*, location: str, now: float, offline: Mapping[str, Any] | None,
                 targets: Sequence[Mapping[str, Any]], history: Mapping[str, TargetHistory],
                 listing: Listing, peers: Sequence[PeerView], recent: Sequence[TimedOutage],
                 trouble: str | None = None) -> str:
    counts = listing.counts
    summary = " · ".join(f'<a href="{escape(listing.url(state=s, page=1))}">{state_tag(s)} '
                         f"{counts.get(s, 0)}</a>" for s in ("down", "unknown", "up"))
    peer_cells = {}
    if peers:
        for t in targets:
            name = str(t["name"])
            states = {location: str(t["state"])}
            states.update((p.location, p.states[name]) for p in peers
                          if p.location and name in p.states)
            text = verdict(states)
            if text and text != "up everywhere":
                peer_cells[name] = f'<p class="verdict">{escape(text)}</p>'
    cards, group = [], None
    for t in targets:
        if listing.group:
            value = dict(t.get("labels") or {}).get(listing.group, "(none)")
            if value != group:
                group = value
                cards.append(f'<h2 class="group">{escape(listing.group)} = {escape(value)}</h2>')
        cards.append(target_card(t, history.get(str(t["name"])), now,
                                 heading="h3" if listing.group else "h2",
                                 peers=peer_cells.get(str(t["name"]), "")))
    pages = max(1, -(-listing.total // listing.per_page))
    nav = ""
    if pages > 1:
        prev = (f'<a href="{escape(listing.url(page=listing.page - 1))}" rel="prev">← previous</a>'
                if listing.page > 1 else "")
        nxt = (f'<a href="{escape(listing.url(page=listing.page + 1))}" rel="next">next →</a>'
               if listing.page < pages else "")
        nav = (f'<nav class="pages">{prev} <span>page {listing.page} of {pages} '
               f"({listing.total} targets)</span> {nxt}</nav>")
    options = "".join(f'<option value="{s}"{" selected" if s == listing.state else ""}>'
                     f"{s or 'any state'}</option>" for s in ("", "down", "unknown", "up"))
    groups = "".join(f'<option value="{escape(g)}"{" selected" if g == listing.group else ""}>'
                     f"{escape(g) if g else 'no grouping'}</option>"
                     for g in ("", *listing.labels))
    form = (f'<form class="filter" method="get" action="/" role="search">'
            f'<input type="search" name="q" value="{escape(listing.q)}" '
            f'placeholder="name, URL or label=value" aria-label="search targets">'
            f'<select name="state" aria-label="state">{options}</select>'
            f'<select name="group" aria-label="group by label">{groups}</select>'
            f"<button>show</button></form>")
    matrix = location_matrix(location, targets, peers) if peers else ""
    shown = "".join(cards) or '<p class="muted">no target matches</p>'
    body = (f"<header><h1>Status from {escape(location)}</h1>"
            f'<p class="summary">{summary} · updated {svg.hm(now)} UTC</p>{form}</header>'
            f"{_banners(offline, trouble)}{nav}<main>{shown}</main>{nav}{matrix}"
            f"<section><h2>Outages in the last 30 days</h2>"
            f"{outage_rows(recent, with_target=True)}</section>{_footer()}")
    return _document(f"Status — {location}", body)


def render_target(*, location: str, now: float, offline: Mapping[str, Any] | None,
                  target: Mapping[str, Any], history: TargetHistory | None,
                  outages: Sequence[TimedOutage], page: int, more: bool,
                  probes: Sequence[ProbeResult], peers: str = "",
                  trouble: str | None = None) -> str:
    name = str(target["name"])
    base = f"/target/{quote(name)}"
    links = []
    if page > 1:
        links.append(f'<a href="{base}?page={page - 1}" rel="prev">← newer</a>')
    if more:
        links.append(f'<a href="{base}?page={page + 1}" rel="next">older →</a>')
    nav = f'<nav class="pages">{" ".join(links)} <span>page {page}</span></nav>'
    body = (f'<header><p><a href="/">← all targets</a></p></header>'
            f"{_banners(offline, trouble)}"
            f"{target_card(target, history, now, heading='h1', peers=peers)}"
            f'<section><h2>Outage log</h2>{outage_rows(outages, with_target=False)}{nav}'
            f"</section><section><h2>Recent probes</h2>{probe_table(probes)}</section>"
            f"{_footer()}")
    return _document(f"{name} — status from {location}", body)


def probe_table(probes: Sequence[ProbeResult]) -> str:
    if not probes:
        return '<p class="muted">no probe yet</p>'
    scale = max(p.duration for p in probes) or 1.0
    rows = []
    for p in reversed(probes):  # newest first
        result = "ok" if p.ok else f"{p.failure}" + (f" (in {p.phase})" if p.phase else "")
        phases = ", ".join(f"{k} {v * 1000:.1f}" for k, v in p.phases.items() if v)
        rows.append(
            f'<tr class="{"" if p.ok else "down"}"><td data-label="time">'
            f"{svg.hm(p.started_at)[11:]}:{int(p.started_at) % 60:02d}</td>"
            f'<td data-label="result">{escape(result)}</td>'
            f'<td data-label="status">{"" if p.status is None else p.status}</td>'
            f'<td data-label="took">{p.duration * 1000:.0f} ms</td>'
            f'<td class="ph-cell" data-label="phases">{svg.phases_bar(p.phases, scale)}'
            f'<span class="ph-text">{escape(phases)}{" ms" if phases else ""}</span>'
            f'{"" if p.ok else f"<br>{escape(p.message)}"}</td></tr>')
    keys = "".join(f'<span class="key"><svg viewBox="0 0 10 10" class="sw">'
                   f'<rect class="ph ph{i}" width="10" height="10"/></svg> {n}</span> '
                   for i, n in enumerate(PHASES))
    return (f'<p class="legend">{keys}</p><div class="scroll"><table class="log probes">'
            f"<tr><th>time (UTC)</th><th>result</th><th>status</th><th>took</th>"
            f'<th>phases (ms)</th></tr>{"".join(rows)}</table></div>')


def _banners(offline: Mapping[str, Any] | None, trouble: str | None) -> str:
    out = ""
    if offline is not None:
        out += (f'<p class="banner">This monitor is offline since '
                f"{escape(str(offline.get('since') or ''))}: "
                f"{escape(str(offline.get('evidence')))}. Results count as unknown until it "
                "is back.</p>")
    if trouble is not None:
        out += (f'<p class="banner">The outage history is unavailable: {escape(trouble)}. '
                "Probing goes on; see the daemon's log.</p>")
    return out


def _footer() -> str:
    return ('<footer><p class="legend">Days: <svg viewBox="0 0 10 10" class="sw">'
            '<rect class="bar ok" width="10" height="10"/></svg> no downtime '
            '<svg viewBox="0 0 10 10" class="sw"><rect class="bar minor" width="10" '
            'height="10"/></svg> some downtime <svg viewBox="0 0 10 10" class="sw">'
            '<rect class="bar bad" width="10" height="10"/></svg> over 5% down '
            '<svg viewBox="0 0 10 10" class="sw"><rect class="bar nodata" y="7" width="10" '
            'height="3"/></svg> no data. 24 hours: a dotted line where the monitor did not '
            "run (unknown, not up). Times in UTC. Hover a bar for its outages.</p>"
            "</footer>")


def _document(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="refresh" content="60"><meta name="color-scheme" '
            f'content="light dark"><title>{escape(title)}</title><style>{CSS}</style>'
            f"</head><body>{svg.DEFS}{body}</body></html>")


CSS = """
:root { --fg:#1b1b1b; --bg:#fff; --muted:#666; --line:#ddd; --card:#fafafa;
  --up:#2e7d32; --down:#c62828; --unknown:#757575; --warn:#a86a00; --nodata:#bbb; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e8e8e8; --bg:#121212; --muted:#aaa; --line:#333; --card:#1c1c1c;
    --up:#66bb6a; --down:#ef5350; --unknown:#9e9e9e; --warn:#ffb74d; --nodata:#555; } }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1em;
  max-width: 70em; color: var(--fg); background: var(--bg); }
a { color: inherit; }
h1 { font-size: 1.4em; margin: .2em 0; } h2 { font-size: 1.15em; margin: 1.2em 0 .4em; }
.summary, .meta, .url, .muted, .axis, .legend { color: var(--muted); }
.url, .msg, .cause { overflow-wrap: anywhere; }
.state { font-weight: 600; white-space: nowrap; padding: 0 .35em; border-radius: 3px;
  color: var(--bg); }
.state.up { background: var(--up); } .state.down { background: var(--down); }
.state.unknown { background: var(--unknown); }
.filter { display: flex; flex-wrap: wrap; gap: .4em; margin: .6em 0; }
.filter input { flex: 1 1 12em; min-width: 0; }
.filter input, .filter select, .filter button { font: inherit; padding: .3em; }
.target { border: 1px solid var(--line); border-left: 6px solid var(--unknown);
  background: var(--card); border-radius: 4px; padding: .6em .8em; margin: .8em 0; }
.target.st-up { border-left-color: var(--up); }
.target.st-down { border-left: 6px double var(--down); }
.target h2, .target h3, .target h1 { margin: 0; font-size: 1.1em; }
.target p { margin: .2em 0; }
.strip { margin: .4em 0; }
svg.days, svg.timeline { display: block; width: 100%; height: 22px; }
svg.timeline { height: 16px; }
.axis { display: flex; justify-content: space-between; font-size: .75em; }
.bar.ok { fill: var(--up); } .bar.nodata { fill: var(--nodata); }
.bar.minor { fill: url(#hatch); } .bar.bad { fill: url(#cross); }
.p-bg { fill: var(--warn); } .p-bg.bad { fill: var(--down); } .p-line { fill: var(--bg); }
.span.up { fill: var(--up); } .span.down { fill: var(--down); }
.axis-line { stroke: var(--line); }
.span.maint { fill: var(--unknown); } .tick { fill: var(--fg); }
.unknown-line { stroke: var(--nodata); stroke-width: 1.5; stroke-dasharray: 3 3; }
svg.defs { position: absolute; }
p.uptime { display: flex; flex-wrap: wrap; gap: .1em 1em; }
.w { white-space: nowrap; }
.latency-box { display: flex; flex-wrap: wrap; align-items: center; gap: .2em .8em; }
svg.latency { width: 240px; max-width: 100%; height: 40px; }
polyline { fill: none; stroke-width: 1.5; }
.p50_ms { stroke: var(--fg); } .p95_ms { stroke: var(--muted); stroke-dasharray: 4 3; }
circle.p50_ms { fill: var(--fg); } circle.p95_ms { fill: var(--muted); stroke: none; }
.summary a { text-decoration: none; }
.verdict.bad, p.verdict { font-weight: 600; } p.verdict::before { content: "⚑ "; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; width: 100%; }
td, th { padding: .3em .5em; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
tr.down td:first-child { border-left: 4px solid var(--down); }
.banner { padding: .6em; border: 2px dashed var(--down); }
.pages { margin: .6em 0; display: flex; gap: 1em; flex-wrap: wrap; }
.cert.bad { color: var(--down); font-weight: 600; }
svg.phases { width: 200px; max-width: 100%; height: 10px; display: block; }
svg.sw { width: .9em; height: .9em; vertical-align: middle; }
.ph0 { fill: #5c6bc0; } .ph1 { fill: #26a69a; } .ph2 { fill: #ab47bc; }
.ph3 { fill: #ffa726; } .ph4 { fill: #8d6e63; }
.ph-text { font-size: .8em; color: var(--muted); }
footer { margin-top: 2em; font-size: .85em; }
@media (max-width: 40em) { body { padding: .5em; } td, th { padding: .25em .3em; }
  /* the outage log as one block per outage, each value named */
  table.log, table.log tbody, table.log tr, table.log td { display: block; }
  table.log tr:first-child { display: none; }
  table.log tr { border-bottom: 1px solid var(--line); padding: .3em 0; }
  table.log td { border: 0; padding: .05em .3em; }
  table.log td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); } }
"""
