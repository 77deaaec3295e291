"""Reading the history: every query of the SQLite backend, shared by the daemon's store
(`SqliteStore`, async, in its store thread) and the CLI's read-only `SqliteReader`.

Imports `monitor.model` and `monitor.store.{base,schema,uptime}` only. Each function takes an
open connection inside the caller's read transaction.

Reads are consistent with writes (the one rule): a read answers as if every change the
store accepted before it had been written. The daemon's store passes what it holds in
memory and may not have written yet (`Unwritten`: outages it opened, closed or counted
into, run periods, first confirmations, probed series), and the functions here lay it over
what the file says. That is the only place disk and memory meet, so the API, the status
page and the uptime metrics agree with each other whether or not the writer has caught up
or the disk is failing. The CLI reads the file alone (`Unwritten()`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.model import Failure, Outage, OutageQuery, OutageTime, State
from monitor.store.base import (
    DAY,
    HISTORY_DAYS,
    HISTORY_WINDOWS,
    DaySummary,
    LatencyHour,
    OutboxRow,
    TargetHistory,
    TargetReport,
)
from monitor.store.schema import (
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    OUTBOX_VERSION,
    check_size,
    version_of,
)
from monitor.store.uptime import (
    Interval,
    intersect,
    outage_time,
    subtract,
    summarize,
    total,
    union,
)


@dataclass(frozen=True, slots=True)
class RunPeriod:
    location: str
    started_at: float
    ended_at: float | None  # None: the live run, lasting until the read's `now`


@dataclass(frozen=True, slots=True)
class Unwritten:
    """What the store knows that the file may not show yet (a snapshot taken on the event
    loop when the read is asked for). Entries replace the file's rows of the same id."""

    outages: Mapping[int, Outage] = field(default_factory=dict)  # open ones, and closed unwritten
    runs: Mapping[int, RunPeriod] = field(default_factory=dict)  # the live run, ended unwritten
    known_since: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (target, loc)
    series: Set[tuple[str, str]] = frozenset()  # (target, location) with unwritten rollups


NOTHING = Unwritten()

_OUTAGE_COLUMNS = (
    "id, target, location, started_at, ended_at, cause, message, failed_probes, counts, "
    "maintenance"
)


def _outage(row: tuple[Any, ...]) -> Outage:
    id_, target, location, started, ended, cause, message, failed, counts, maint = row
    return Outage(
        id=id_,
        target=target,
        location=location,
        started_at=started,
        ended_at=ended,
        cause=Failure(cause),
        message=message,
        failed_probes=failed,
        counts=json.loads(counts),
        maintenance=bool(maint),
    )


def _outage_where(query: OutageQuery) -> tuple[str, list[Any]]:
    """The filters of `query` in SQL: the same tests as `OutageQuery.matches`."""
    where, args = ["1"], []
    for sql, value in (
        ("target = ?", query.target),
        ("location = ?", query.location),
        ("(ended_at IS NULL OR ended_at >= ?)", query.since),
        ("started_at <= ?", query.until),
    ):
        if value is not None:
            where.append(sql)
            args.append(value)
    if query.open is not None:
        where.append("ended_at IS NULL" if query.open else "ended_at IS NOT NULL")
    return " AND ".join(where), args


def _newest_first(outage: Outage) -> tuple[float, int]:
    return (-outage.started_at, -outage.id)


def select_outages(
    db: sqlite3.Connection,
    query: OutageQuery,
    unwritten: Unwritten = NOTHING,
    *,
    targets: Collection[str] | None = None,
) -> list[Outage]:
    """The outages `query` asks for, newest first; only of `targets` when given."""
    where, args = _outage_where(query)
    if targets is not None:
        where += f" AND target IN ({', '.join('?' * len(targets))})"
        args += list(targets)
    sql = f"SELECT {_OUTAGE_COLUMNS} FROM outages WHERE {where} ORDER BY started_at DESC, id DESC"
    if query.limit is not None:
        # Each unwritten outage can push at most one row of the file out of the answer.
        sql += " LIMIT ?"
        args.append(query.limit + len(unwritten.outages))
    found = [_outage(row) for row in db.execute(sql, args)]
    if unwritten.outages:
        found = [o for o in found if o.id not in unwritten.outages]
        found += [
            o
            for o in unwritten.outages.values()
            if query.matches(o) and (targets is None or o.target in targets)
        ]
        found.sort(key=_newest_first)
    return found if query.limit is None else found[: query.limit]


def _where(**filters: str | None) -> str:
    """A WHERE clause testing the given columns for equality with named parameters."""
    tests = [f"{column} = :{column}" for column, value in filters.items() if value is not None]
    return f" WHERE {' AND '.join(tests)}" if tests else ""


def select_runs(
    db: sqlite3.Connection,
    now: float,
    *,
    location: str | None = None,
    unwritten: Unwritten = NOTHING,
) -> dict[str, list[Interval]]:
    """Run periods by location. A run without an end ended at its last heartbeat (a crash),
    unless `unwritten` knows better (the live run lasts until `now`)."""
    runs: dict[str, list[Interval]] = {}
    for id_, loc, started, seen, ended in db.execute(
        "SELECT id, location, started_at, last_seen_at, ended_at FROM runs"
        + _where(location=location),
        {"location": location},
    ):
        if id_ not in unwritten.runs:
            runs.setdefault(loc, []).append((started, ended if ended is not None else seen))
    for run in unwritten.runs.values():
        if location is None or run.location == location:
            end = run.ended_at if run.ended_at is not None else now
            runs.setdefault(run.location, []).append((run.started_at, end))
    return runs


def select_outage_times(
    db: sqlite3.Connection,
    outages: Sequence[Outage],
    now: float,
    unwritten: Unwritten = NOTHING,
) -> list[OutageTime]:
    """Known and unknown time of each outage as of `now`, from the run periods."""
    locations = {o.location for o in outages}
    only = next(iter(locations)) if len(locations) == 1 else None
    runs = select_runs(db, now, location=only, unwritten=unwritten) if outages else {}
    return [outage_time(o, runs.get(o.location, []), now) for o in outages]


@dataclass(slots=True)
class ReportInputs:
    """The rows a report is computed from, for the targets and locations asked for."""

    runs: dict[str, list[Interval]]  # by location
    known_since: dict[tuple[str, str], float | None]
    outages: dict[tuple[str, str], list[Outage]]  # overlapping [since, now]
    keys: set[tuple[str, str]]  # every (target, location) the history knows


def _report_inputs(db: sqlite3.Connection, since: float, now: float, *, location: str | None,
                   target: str | None, unwritten: Unwritten) -> ReportInputs:
    args = {"target": target, "location": location}
    by_target = _where(target=target, location=location)

    def wanted(key: tuple[str, str]) -> bool:
        return (target is None or key[0] == target) and (location is None or key[1] == location)

    runs = select_runs(db, now, location=location, unwritten=unwritten)
    known_since: dict[tuple[str, str], float | None] = {
        (t, loc): known
        for t, loc, known in db.execute(
            "SELECT target, location, known_since FROM target_state" + by_target, args
        )
    }
    for key, known in unwritten.known_since.items():
        if wanted(key) and known_since.get(key) is None:
            known_since[key] = known
    outages: dict[tuple[str, str], list[Outage]] = {}
    query = OutageQuery(target=target, location=location, since=since, until=now, limit=None)
    for outage in select_outages(db, query, unwritten):
        outages.setdefault((outage.target, outage.location), []).append(outage)
    keys = set(known_since) | set(outages) | {k for k in unwritten.series if wanted(k)}
    keys |= set(db.execute("SELECT target, location FROM series" + by_target, args))
    return ReportInputs(runs, known_since, outages, keys)


def select_report(
    db: sqlite3.Connection,
    since: float,
    now: float,
    *,
    location: str | None = None,
    target: str | None = None,
    unwritten: Unwritten = NOTHING,
) -> list[TargetReport]:
    """Availability per (target, location) over [since, now]: one query per table, so ask
    for all targets at once rather than target by target."""
    found = _report_inputs(db, since, now, location=location, target=target,
                           unwritten=unwritten)
    return [
        summarize(t, loc, found.runs.get(loc, []), found.known_since.get((t, loc)),
                  found.outages.get((t, loc), []), since, now)
        for t, loc in sorted(found.keys)
    ]


def select_uptime_inputs(
    db: sqlite3.Connection,
    since: float,
    now: float,
    *,
    location: str,
    unwritten: Unwritten = NOTHING,
) -> ReportInputs:
    """What `uptime_ratios` needs for `location` over windows starting at `since` or later:
    read in the store thread; the arithmetic is left to the caller's own pace."""
    return _report_inputs(db, since, now, location=location, target=None, unwritten=unwritten)


def uptime_ratios(
    found: ReportInputs, location: str, windows: Mapping[str, float], now: float,
    keys: Sequence[tuple[str, str]],
) -> dict[str, dict[str, float | None]]:
    """The uptime `select_report` gives each of `keys` for every window (name → its start):
    window → target → ratio (None when no time was known).

    A target without an outage in a window needs no interval arithmetic: its uptime is 1 if
    any of the window was known, else None; only targets with outages go through
    `summarize`. Plain dicts of floats: the garbage collector does not track them."""
    out: dict[str, dict[str, float | None]] = {window: {} for window in windows}
    runs = union(found.runs.get(location, []))
    for key in keys:
        known_since = found.known_since.get(key)
        overlapping = found.outages.get(key, ())
        for window, since in windows.items():
            outages = [o for o in overlapping if o.ended_at is None or o.ended_at >= since]
            ratio: float | None
            if outages:
                ratio = summarize(key[0], location, runs, known_since, outages, since,
                                  now).uptime
            elif known_since is None or max(since, known_since) >= now:
                ratio = None
            else:
                ratio = 1.0 if _overlaps(runs, max(since, known_since), now) else None
            out[window][key[0]] = ratio
    return out


def _overlaps(runs: Sequence[Interval], start: float, end: float) -> bool:
    """Whether sorted, disjoint `runs` share any time with [start, end] (latest first)."""
    for run_start, run_end in reversed(runs):
        if run_end <= start:
            return False
        if min(run_end, end) > max(run_start, start):
            return True
    return False


def select_history(
    db: sqlite3.Connection,
    location: str,
    now: float,
    *,
    targets: Collection[str] | None = None,
    unwritten: Unwritten = NOTHING,
) -> dict[str, TargetHistory]:
    """The status page's history of `targets` (default: all) from `location`: one query per
    table, then interval arithmetic per target (see `TargetHistory`)."""
    today = now - now % DAY
    first = today - (HISTORY_DAYS - 1) * DAY
    since = min(first, now - max(HISTORY_WINDOWS.values()))
    days = [(first + i * DAY, min(first + (i + 1) * DAY, now)) for i in range(HISTORY_DAYS)]
    wanted = None if targets is None else set(targets)
    runs = union(select_runs(db, now, location=location, unwritten=unwritten).get(location, []))
    # Ask SQLite for the wanted targets only: a page shows 50 of maybe 10,000.
    only, names_args = "", []
    if wanted is not None:
        only = f" AND target IN ({', '.join('?' * len(wanted))})"
        names_args = sorted(wanted)
    known_since: dict[str, float] = {
        t: known
        for t, known in db.execute(
            "SELECT target, known_since FROM target_state WHERE location = ? "
            "AND known_since IS NOT NULL" + only,
            [location, *names_args],
        )
    }
    for (t, loc), at in unwritten.known_since.items():
        if loc == location and t not in known_since:
            known_since[t] = at
    outages: dict[str, list[Outage]] = {}
    query = OutageQuery(location=location, since=since, until=now, limit=None)
    for outage in select_outages(db, query, unwritten, targets=wanted):
        outages.setdefault(outage.target, []).append(outage)
    names = set(known_since) | set(outages) if wanted is None else wanted
    latency = select_latency(db, location, now, targets=wanted)
    # Known time per day is the same for every target confirmed before the window.
    shared = [total(intersect(runs, [day])) for day in days]
    history = {}
    for name in sorted(names):
        found = outages.get(name, [])
        known = known_since.get(name)
        if found or known is None or known > first:
            summaries = _days(days, runs, known, found, now)
        else:
            summaries = [DaySummary(d[0], k, 0.0) for d, k in zip(days, shared, strict=True)]
        uptime = {
            window: summarize(name, location, runs, known, found, now - seconds, now).uptime
            for window, seconds in HISTORY_WINDOWS.items()
        }
        history[name] = TargetHistory(
            target=name,
            days=tuple(summaries),
            outages=tuple(found),
            uptime=uptime,
            latency=latency.get(name, ()),
            known_day=tuple(intersect(_known(runs, known, found, now), [(now - DAY, now)])),
        )
    return history


def _known(
    runs: Sequence[Interval], known_since: float | None, outages: Sequence[Outage], now: float
) -> list[Interval]:
    """Known time: the runs after the first confirmation, maintenance excluded."""
    if known_since is None:
        return []
    spans = [(o.started_at, o.ended_at if o.ended_at is not None else now) for o in outages]
    maintenance = union(s for s, o in zip(spans, outages, strict=True) if o.maintenance)
    return subtract(intersect(runs, [(known_since, now)]), maintenance)


def _days(
    days: Sequence[Interval],
    runs: Sequence[Interval],
    known_since: float | None,
    outages: Sequence[Outage],
    now: float,
) -> list[DaySummary]:
    if known_since is None:
        return [DaySummary(start, 0.0, 0.0) for start, _ in days]
    spans = [(o.started_at, o.ended_at if o.ended_at is not None else now) for o in outages]
    known = _known(runs, known_since, outages, now)
    down = intersect(union(s for s, o in zip(spans, outages, strict=True)
                           if not o.maintenance), known)
    return [
        DaySummary(day[0], total(intersect(known, [day])), total(intersect(down, [day])))
        for day in days
    ]


def select_latency(
    db: sqlite3.Connection,
    location: str,
    now: float,
    *,
    targets: Collection[str] | None = None,
) -> dict[str, tuple[LatencyHour, ...]]:
    """Per target, 24 hours (oldest first) of the median and 95th percentile latency of
    successful probes, from the hourly rollups' latency histograms."""
    hour0 = now - now % 3600 - 23 * 3600
    where, args = "s.location = ? AND h.bucket >= ?", [location, hour0]
    if targets is not None:
        where += f" AND s.target IN ({', '.join('?' * len(targets))})"
        args += list(targets)
    sql = f"""SELECT s.target, h.bucket, h.latency_min_ms, h.latency_max_ms,
            {", ".join("h." + c for c in LATENCY_COLUMNS)}
        FROM rollup_hour h JOIN series s ON s.id = h.series WHERE {where}"""
    found: dict[str, dict[float, LatencyHour]] = {}
    for target, hour, low, high, *counts in db.execute(sql, args):
        found.setdefault(target, {})[hour] = LatencyHour(
            hour, quantile(0.5, counts, low, high), quantile(0.95, counts, low, high))
    return {
        target: tuple(
            hours.get(hour0 + i * 3600, LatencyHour(hour0 + i * 3600, None, None))
            for i in range(24)
        )
        for target, hours in found.items()
    }


def quantile(q: float, counts: Sequence[int], low: int | None, high: int | None) -> float | None:
    """The q-quantile of a latency histogram (`LATENCY_BOUNDS_MS` buckets), interpolated
    linearly inside its bucket as Prometheus' histogram_quantile does, and kept within the
    smallest and largest latency seen (`low`, `high`). None for an empty histogram."""
    total = sum(counts)
    if total == 0 or low is None or high is None:
        return None
    rank, below = q * total, 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            lower = LATENCY_BOUNDS_MS[i - 1] if i else 0
            upper = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else high
            value = lower + (upper - lower) * (rank - below) / count
            return float(min(max(value, low), high))
        below += count
    return float(high)


def select_pending_outbox(db: sqlite3.Connection) -> list[OutboxRow]:
    """Outbox entries neither delivered nor given up, by id."""
    return [
        OutboxRow(
            id=id_,
            notifier=notifier,
            key=key,
            outage_id=outage_id,
            payload=json.loads(payload),
            attempts=attempts,
            next_attempt_at=next_at,
            created_at=created,
        )
        for id_, notifier, key, outage_id, payload, attempts, next_at, created in db.execute(
            """SELECT id, notifier, key, outage_id, payload, attempts, next_attempt_at,
                created_at FROM outbox WHERE delivered_at IS NULL AND given_up_at IS NULL
                ORDER BY id"""
        )
    ]


# --- what the daemon's store resumes from ------------------------------------------------


@dataclass(slots=True)
class Loaded:
    """What `SqliteStore.open()` reads back from the file."""

    outages: list[Outage] = field(default_factory=list)  # open ones
    # A state as its value: a tuple of a str and a float stays out of the GC's full passes.
    states: dict[tuple[str, str], tuple[str, float | None]] = field(default_factory=dict)
    known_since: dict[tuple[str, str], float] = field(default_factory=dict)  # (target, loc)
    next_outage: int = 1
    next_run: int = 1
    outbox: list[OutboxRow] = field(default_factory=list)  # pending entries, by id
    outbox_keys: set[tuple[str, str]] = field(default_factory=set)
    next_outbox: int = 1


def load(db: sqlite3.Connection, path: Path) -> Loaded:
    """Open outages, target states, the next free ids and the pending outbox."""
    check_size(path)
    version = version_of(db, path)
    if version == 0:
        return Loaded()
    loaded = Loaded(outages=select_outages(db, OutageQuery(open=True, limit=None)))
    for t, loc, state, since, known in db.execute(
        "SELECT target, location, state, since, known_since FROM target_state"
    ):
        loaded.states[(loc, t)] = (State(state).value, since)
        if known is not None:
            loaded.known_since[(t, loc)] = known
    (max_outage,) = db.execute("SELECT coalesce(max(id), 0) FROM outages").fetchone()
    (max_run,) = db.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()
    loaded.next_run = max_run + 1
    if version >= OUTBOX_VERSION:  # else not migrated yet (read-only file): empty
        loaded.outbox = select_pending_outbox(db)
        loaded.outbox_keys = {(row.notifier, row.key) for row in loaded.outbox}
        # Keys an open outage may produce again (a repeated down, its reminders).
        loaded.outbox_keys.update(
            db.execute(
                """SELECT notifier, key FROM outbox WHERE outage_id IN
                    (SELECT id FROM outages WHERE ended_at IS NULL)"""
            )
        )
        # An outage id still named in the outbox is never reused, even if its outage
        # was pruned: its new messages would collide with the old keys.
        max_outage, max_outbox = db.execute(
            "SELECT max(?, coalesce(max(outage_id), 0)), coalesce(max(id), 0) FROM outbox",
            (max_outage,),
        ).fetchone()
        loaded.next_outbox = max_outbox + 1
    loaded.next_outage = max_outage + 1
    return loaded

