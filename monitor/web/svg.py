"""Inline SVG pieces of the pages: the 90-day strip, the 24-hour timeline, the latency chart
and the phases of one probe. Each is a string; every text in it is escaped.

Colour is never the only signal: bars differ in shape too (no data is a short bar, a day
with downtime is hatched, a bad day cross-hatched), and every mark has a <title>.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

from monitor.model import PHASES, Outage
from monitor.store.base import DAY, DaySummary, LatencyHour
from monitor.timefmt import human_duration

BAD_DAY = 0.05  # a day with more downtime than this share of its known time is "bad"
TIMELINE_UNITS = 1000.0  # the timeline's viewBox width: 24 h

# Patterns referenced by the bars (url(#...)); the page includes them once.
DEFS = """<svg class="defs" width="0" height="0" aria-hidden="true" focusable="false"><defs>
<pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse"
 patternTransform="rotate(45)"><rect class="p-bg" width="4" height="4"/>
<rect class="p-line" width="1.6" height="4"/></pattern>
<pattern id="cross" width="4" height="4" patternUnits="userSpaceOnUse"
 patternTransform="rotate(45)"><rect class="p-bg bad" width="4" height="4"/>
<rect class="p-line" width="1.4" height="4"/><rect class="p-line" width="4" height="1.4"/>
</pattern></defs></svg>"""


def hm(t: float) -> str:
    """`2026-11-29 14:05` in UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def day_name(t: float) -> str:
    return hm(t)[:10]


def outage_line(o: Outage, now: float) -> str:
    end = "ongoing" if o.ended_at is None else hm(o.ended_at)[11:] + " UTC"
    note = " (maintenance)" if o.maintenance else ""
    return f"{hm(o.started_at)[11:]} – {end}: {o.cause.value}{note}, {o.message}"


def day_class(day: DaySummary) -> str:
    if day.known_seconds <= 0:
        return "nodata"
    if day.downtime_seconds <= 0:
        return "ok"
    return "bad" if day.downtime_seconds > BAD_DAY * day.known_seconds else "minor"


def day_strip(days: Sequence[DaySummary], outages: Sequence[Outage], now: float) -> str:
    """One bar per day, oldest left; each bar's title lists the day's outages."""
    by_day: dict[int, list[Outage]] = {}
    first = days[0].start if days else now
    for o in outages:
        end = o.ended_at if o.ended_at is not None else now
        for i in range(max(0, int((o.started_at - first) // DAY)),
                       min(len(days), int((end - first) // DAY) + 1)):
            by_day.setdefault(i, []).append(o)
    bars = []
    for i, day in enumerate(days):
        kind = day_class(day)
        lines = [f"{day_name(day.start)}: " + (
            "no data" if kind == "nodata" else
            f"{human_duration(day.downtime_seconds)} down" if day.downtime_seconds > 0 else
            "no downtime")]
        lines += [outage_line(o, now) for o in sorted(by_day.get(i, []),
                                                       key=lambda o: o.started_at)]
        y, h = (7.0, 3.0) if kind == "nodata" else (0.0, 10.0)
        bars.append(
            f'<rect class="bar {kind}" x="{i * 10 + 1}" y="{y}" width="8" height="{h}" '
            f'data-day="{day_name(day.start)}" data-down="{day.downtime_seconds:.0f}">'
            f"<title>{escape(chr(10).join(lines))}</title></rect>")
    down_days = sum(1 for d in days if d.downtime_seconds > 0)
    label = f"{len(days)} days, {down_days} with downtime"
    return (f'<svg class="days" viewBox="0 0 {len(days) * 10} 10" preserveAspectRatio="none" '
            f'role="img" aria-label="{label}">{"".join(bars)}</svg>')


def timeline(outages: Sequence[Outage], now: float, known: Sequence[tuple[float, float]],
             span: float = DAY) -> str:
    """The last `span` seconds to scale: a thin band where the state was known (a dotted
    line where it was not: the monitor did not run), and outages drawn where they were as
    full-height blocks (at least 3 units of 1000 wide, so that a short one stays visible)."""
    start = now - span
    scale = TIMELINE_UNITS / span
    band = "".join(
        f'<rect class="span up" x="{(a - start) * scale:.2f}" y="3.5" '
        f'width="{(b - a) * scale:.2f}" height="3"><title>known: {escape(hm(a))} – '
        f"{escape(hm(b))} UTC</title></rect>"
        for a, b in known if b > start)
    marks = []
    for o in outages:
        end = o.ended_at if o.ended_at is not None else now
        if end < start or o.started_at > now:
            continue
        x0 = max(0.0, (o.started_at - start) / span * TIMELINE_UNITS)
        x1 = min(TIMELINE_UNITS, (end - start) / span * TIMELINE_UNITS)
        kind = "maint" if o.maintenance else "down"
        width = max(3.0, x1 - x0)
        x0 = min(x0, TIMELINE_UNITS - width)  # a short one just now stays inside
        marks.append(
            f'<rect class="span {kind}" x="{x0:.2f}" y="0" width="{width:.2f}" '
            f'height="10" data-outage="{o.id}"><title>{escape(hm(o.started_at))} UTC – '
            f"{escape(outage_line(o, now).split(' – ', 1)[1])}</title></rect>")
    ticks = "".join(f'<rect class="tick" x="{i * TIMELINE_UNITS / 4 - 0.5:.1f}" y="8" '
                    f'width="1" height="2"/>' for i in range(1, 4))
    return (f'<svg class="timeline" viewBox="0 0 {TIMELINE_UNITS:.0f} 10" '
            f'preserveAspectRatio="none" role="img" data-start="{start:.3f}" '
            f'data-end="{now:.3f}" aria-label="last 24 hours: {len(marks)} outages">'
            f'<line class="unknown-line" x1="0" y1="5" x2="{TIMELINE_UNITS:.0f}" y2="5"/>'
            f"{band}"
            f"{ticks}{''.join(marks)}</svg>")


def latency_chart(hours: Sequence[LatencyHour]) -> str:
    """p50 (solid) and p95 (dashed) per hour over 24 h; empty hours leave gaps."""
    values = [h.p95_ms for h in hours if h.p95_ms is not None]
    if not values:
        return '<span class="muted">no latency data yet</span>'
    top = max(values) or 1.0
    width, height = 240, 40

    def line(pick: str) -> str:
        segments: list[list[str]] = [[]]
        for i, h in enumerate(hours):
            value = getattr(h, pick)
            if value is None:
                segments.append([])
                continue
            x = i * width / max(1, len(hours) - 1)
            segments[-1].append(f"{x:.1f},{height - 2 - value / top * (height - 4):.1f}")
        # A lone hour between gaps is drawn as a dot so that it shows (p50 the bigger).
        return "".join(
            f'<polyline class="{pick}" points="{" ".join(s)}"/>' if len(s) > 1 else
            f'<circle class="{pick} dot" cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" '
            f'r="{2.5 if pick == "p50_ms" else 1.8}"/>'
            for s in segments if s)

    title = "; ".join(f"{hm(h.start)[11:]} p50 {h.p50_ms:.0f} ms, p95 {h.p95_ms:.0f} ms"
                      for h in hours if h.p50_ms is not None and h.p95_ms is not None)
    return (f'<svg class="latency" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="latency over 24 hours, up to {top:.0f} ms">'
            f'<title>{escape(title)}</title><line class="axis-line" x1="0" y1="{height - 1}" '
            f'x2="{width}" y2="{height - 1}"/>{line("p95_ms")}{line("p50_ms")}</svg>')



def phases_bar(phases: Mapping[str, float], scale: float) -> str:
    """The phases of one probe as a stacked bar, `scale` seconds wide."""
    x, parts = 0.0, []
    for i, name in enumerate(PHASES):
        seconds = phases.get(name)
        if not seconds:
            continue
        w = seconds / scale * 200 if scale > 0 else 0
        parts.append(f'<rect class="ph ph{i}" x="{x:.2f}" y="0" width="{max(w, 0.5):.2f}" '
                     f'height="10"><title>{name} {seconds * 1000:.1f} ms</title></rect>')
        x += w
    return ('<svg class="phases" viewBox="0 0 200 10" preserveAspectRatio="none">'
            f'{"".join(parts)}</svg>')
