"""Outage lists and availability reports as text tables, CSV or JSON (for the CLI).

Pure formatting: imports monitor.model, monitor.store.base, monitor.timefmt and
monitor.server's outage_json and duration_text only.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from monitor.model import Outage, OutageTime
from monitor.server import duration_text, outage_json
from monitor.store.base import TargetReport
from monitor.timefmt import human_duration, rfc3339


def duration_cell(seconds: float | None) -> str:
    return "-" if seconds is None else human_duration(seconds)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def format_outages(outages: Sequence[tuple[Outage, OutageTime]], fmt: str) -> str:
    """DURATION / duration_seconds is known time; the time the monitor was not running (or
    was offline) during an outage is shown apart, as unknown."""
    records = [outage_json(o, t) for o, t in outages]
    if fmt == "json":
        return json.dumps(records, indent=2)
    columns = ["id", "target", "location", "started_at", "ended_at", "duration_seconds",
               "unknown_seconds", "cause", "failed_probes", "message"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    if not outages:
        return "no outages"
    rows = [[str(o.id), o.target, o.location, rfc3339(o.started_at) or "",
             rfc3339(o.ended_at) or "ongoing", duration_text(t),
             o.cause.value + (" (maintenance)" if o.maintenance else ""),
             str(o.failed_probes), o.message] for o, t in outages]
    return table(["ID", "TARGET", "LOCATION", "STARTED", "ENDED", "DURATION", "CAUSE",
                  "PROBES", "FIRST ERROR"], rows)


def format_report(reports: Sequence[TargetReport], fmt: str) -> str:
    records = [{"target": r.target, "location": r.location,
                "uptime_percent": None if r.uptime is None else round(r.uptime * 100, 4),
                "outages": r.outages, "downtime_seconds": round(r.downtime_seconds, 1),
                "longest_seconds": round(r.longest_seconds, 1),
                "mttr_seconds": None if r.mttr_seconds is None else round(r.mttr_seconds, 1),
                "known_seconds": round(r.known_seconds, 1)} for r in reports]
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["target"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    if not reports:
        return "no history in this window"
    rows = [[r.target, r.location, "-" if r.uptime is None else f"{r.uptime * 100:.3f}%",
             str(r.outages), duration_cell(r.downtime_seconds),
             duration_cell(r.longest_seconds), duration_cell(r.mttr_seconds),
             duration_cell(r.known_seconds)] for r in reports]
    return table(["TARGET", "LOCATION", "UPTIME", "OUTAGES", "DOWNTIME", "LONGEST", "MTTR",
                  "KNOWN TIME"], rows)
