"""Known time and uptime: interval arithmetic shared by every backend, so all of them
compute availability the same way.

Imports only `monitor.model` and `monitor.store.base`.

Known time: a target's state is known while the monitor ran (its run periods) and after
the target's first confirmation. Uptime = (known time - downtime) / known time. Outages
flagged as maintenance count neither as up nor as down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from monitor.model import Outage, OutageTime
from monitor.store.base import TargetReport

# Interval arithmetic on sorted, non-overlapping lists of (start, end) pairs.
Interval = tuple[float, float]


def union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in a:
        for b_start, b_end in b:
            if b_end <= start or b_start >= end:
                continue
            if b_start > start:
                out.append((start, b_start))
            start = max(start, b_end)
        if end > start:
            out.append((start, end))
    return out


def total(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def _span(outage: Outage, now: float) -> Interval:
    return (outage.started_at, outage.ended_at if outage.ended_at is not None else now)


def outage_time(outage: Outage, runs: Sequence[Interval], now: float) -> OutageTime:
    """Split an outage's span (until `now` while open) into known and unknown time;
    `runs` are the run periods of the outage's location."""
    start, end = _span(outage, now)
    known = total(intersect([(start, end)], union(runs)))
    return OutageTime(known=known, unknown=max(0.0, end - start - known))


def summarize(
    target: str,
    location: str,
    runs: Iterable[Interval],
    known_since: float | None,
    outages: Iterable[Outage],
    since: float,
    now: float,
) -> TargetReport:
    """Availability over [since, now] from run periods, first confirmation and outages."""
    outages = list(outages)
    known: list[Interval] = []
    if known_since is not None and max(since, known_since) < now:
        window = [(max(since, known_since), now)]
        maintenance = union(_span(o, now) for o in outages if o.maintenance)
        known = subtract(intersect(union(runs), window), maintenance)
    known_seconds = total(known)

    counted = [o for o in outages if not o.maintenance and o.started_at <= now]
    counted = [o for o in counted if o.ended_at is None or o.ended_at >= since]
    per_outage = [total(intersect([_span(o, now)], known)) for o in counted]
    downtime = total(intersect(union(_span(o, now) for o in counted), known))
    ended = [d for o, d in zip(counted, per_outage, strict=True) if o.ended_at is not None]
    return TargetReport(
        target=target,
        location=location,
        uptime=(known_seconds - downtime) / known_seconds if known_seconds > 0 else None,
        known_seconds=known_seconds,
        downtime_seconds=downtime,
        outages=len(counted),
        longest_seconds=max(per_outage, default=0.0),
        mttr_seconds=sum(ended) / len(ended) if ended else None,
    )
