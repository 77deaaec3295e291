"""SQLite store: the embedded default history (one file, WAL, one writer).

Imports `monitor.model` and `monitor.store.base` only.

How it writes: every change is queued in memory and written by ONE asyncio task in batches
(one transaction per batch, every `flush_interval` seconds, or at once when a caller awaits
`flush()`). Probe results are aggregated into per-minute buckets in memory, then upserted
into both the minute and the hour rollups. All blocking sqlite3 calls run in ONE dedicated
thread, which owns the write connection and the read connection; the event loop never waits
on the disk.

Every flush also records the current run's heartbeat (`runs.last_seen_at`, from the clock
passed in): after a crash the run ends there, and the time until the next start is unknown.

When writing fails (locked, read-only, full, ...), nothing is raised to the caller: the
error is counted in `errors` and logged once per kind, outage changes stay queued in order,
rollups stay queued up to `max_pending` buckets (the oldest are dropped beyond that), and
the next flush retries. A read-only or vanished file is reopened before the retry.

Outage and run ids are assigned in memory (one writer per file), so a caller gets the final
id at once even while the database is failing.

The notification outbox follows the same rule: the store keeps every pending entry in
memory (loaded at open) and serves `outbox.due()` from there, while inserts and state
changes go through the same queue as outage changes. So an entry enqueued with a transition
is written in that transition's transaction; an entry marked delivered is never handed out
again, even before that is written; entries enqueued while the database fails are delivered
anyway and written once it recovers; and a restart delivers exactly what was not marked
delivered or given up by a successful write. Keys known to memory (pending entries, entries
of open outages, everything enqueued in this run) are skipped at once; UNIQUE (notifier,
key) keeps the table to one row per key in any case, and an insert it ignores is dropped
from memory after the write.

Schema: `PRAGMA user_version` numbers the migrations applied; `MIGRATIONS` is append-only.
Rollups refer to a `series` row (target, location) instead of repeating the names in every
row, and keep latency in integer milliseconds: both halve the size of the biggest tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from monitor.model import Failure, Outage, ProbeResult, State, Transition
from monitor.store.base import (
    Interval,
    Notification,
    Notifications,
    OutboxRow,
    Retention,
    StoreError,
    TargetReport,
    summarize,
)

log = logging.getLogger("monitor.store")

T = TypeVar("T")

FAILURE_COLUMNS: dict[str, str] = {f.value: f"fail_{f.value}" for f in Failure}
ROLLUP_TABLES = ("rollup_minute", "rollup_hour")


def _rollup_table(name: str) -> str:
    return f"""CREATE TABLE {name} (
        series INTEGER NOT NULL,
        bucket INTEGER NOT NULL,      -- POSIX time the minute or hour starts
        probes INTEGER NOT NULL,
        fail_dns INTEGER NOT NULL DEFAULT 0,
        fail_connect INTEGER NOT NULL DEFAULT 0,
        fail_tls INTEGER NOT NULL DEFAULT 0,
        fail_timeout INTEGER NOT NULL DEFAULT 0,
        fail_http INTEGER NOT NULL DEFAULT 0,
        fail_content INTEGER NOT NULL DEFAULT 0,
        fail_error INTEGER NOT NULL DEFAULT 0,
        fail_local INTEGER NOT NULL DEFAULT 0,  -- the monitor's own faults (unknown)
        latency_sum_ms INTEGER NOT NULL DEFAULT 0,  -- over successful probes only
        latency_min_ms INTEGER,
        latency_max_ms INTEGER,
        PRIMARY KEY (series, bucket)
    ) WITHOUT ROWID"""


# Append-only: migration N (1-based) brings the schema from user_version N-1 to N.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            location TEXT NOT NULL,
            started_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,  -- heartbeat: a crashed run ends here
            ended_at REAL                -- NULL while running, or after a crash
        )""",
        "CREATE INDEX runs_location ON runs (location, started_at)",
        """CREATE TABLE outages (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL,
            location TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,               -- NULL while open
            cause TEXT NOT NULL,
            message TEXT NOT NULL,
            failed_probes INTEGER NOT NULL,
            counts TEXT NOT NULL,        -- JSON: failure class -> probes
            maintenance INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX outages_target ON outages (target, location, started_at)",
        "CREATE INDEX outages_started ON outages (started_at)",
        """CREATE TABLE target_state (
            target TEXT NOT NULL,
            location TEXT NOT NULL,
            state TEXT NOT NULL,
            since REAL,
            known_since REAL,            -- first confirmation: earlier time is unknown
            PRIMARY KEY (target, location)
        ) WITHOUT ROWID""",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL,
            location TEXT NOT NULL,
            UNIQUE (target, location)
        )""",
        _rollup_table("rollup_minute"),
        _rollup_table("rollup_hour"),
    ),
    (
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,      -- assigned in memory, increases with insertion
            key TEXT NOT NULL,           -- idempotency key: outage id + kind
            notifier TEXT NOT NULL,
            outage_id INTEGER,           -- orders the messages of one outage
            payload TEXT NOT NULL,       -- JSON object
            created_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            delivered_at REAL,
            given_up_at REAL,
            last_error TEXT,
            UNIQUE (notifier, key)
        )""",
        # Pending entries are read at every start: keep them findable without a scan.
        """CREATE INDEX outbox_pending ON outbox (id)
            WHERE delivered_at IS NULL AND given_up_at IS NULL""",
        "CREATE INDEX outbox_outage ON outbox (outage_id)",
    ),
)
OUTBOX_VERSION = 2  # the schema version that added the outbox

ERROR_KINDS = ("locked", "readonly", "full", "io", "other")
_KIND_BY_CODE = {
    sqlite3.SQLITE_BUSY: "locked",
    sqlite3.SQLITE_LOCKED: "locked",
    sqlite3.SQLITE_READONLY: "readonly",
    sqlite3.SQLITE_FULL: "full",
    sqlite3.SQLITE_IOERR: "io",
    sqlite3.SQLITE_CANTOPEN: "cantopen",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
    sqlite3.SQLITE_CONSTRAINT: "constraint",
}
# After these errors the write connection is useless (it stays read-only): open a new one.
_REOPEN_KINDS = {"readonly", "cantopen"}


def error_kind(error: sqlite3.Error) -> str:
    """A short, stable name for what went wrong, usable as a metric label."""
    code = getattr(error, "sqlite_errorcode", None)
    return "other" if code is None else _KIND_BY_CODE.get(code & 0xFF, "other")


@dataclass(slots=True)
class _Bucket:
    """Probe results of one target, location and minute, aggregated in memory."""

    probes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    latency_sum_ms: int = 0
    latency_min_ms: int | None = None
    latency_max_ms: int | None = None

    def add(self, result: ProbeResult) -> None:
        self.probes += 1
        if not result.ok:
            self.failures[(result.failure or Failure.ERROR).value] += 1
            return
        ms = round(result.duration * 1000)
        self.latency_sum_ms += ms
        self.latency_min_ms = ms if self.latency_min_ms is None else min(self.latency_min_ms, ms)
        self.latency_max_ms = ms if self.latency_max_ms is None else max(self.latency_max_ms, ms)

    def merge(self, other: _Bucket) -> None:
        self.probes += other.probes
        self.failures.update(other.failures)
        self.latency_sum_ms += other.latency_sum_ms
        for name, pick in (("latency_min_ms", min), ("latency_max_ms", max)):
            values = [v for v in (getattr(self, name), getattr(other, name)) if v is not None]
            setattr(self, name, pick(values) if values else None)

    def row(self, series: int, bucket: int) -> tuple[int | None, ...]:
        failures = (self.failures.get(cls, 0) for cls in FAILURE_COLUMNS)
        return (
            series,
            bucket,
            self.probes,
            *failures,
            self.latency_sum_ms,
            self.latency_min_ms,
            self.latency_max_ms,
        )


_FAIL_COLS = ", ".join(FAILURE_COLUMNS.values())
_FAIL_SUMS = ", ".join(f"{c} = {c} + excluded.{c}" for c in FAILURE_COLUMNS.values())


def upsert_sql(table: str) -> str:
    # min()/max() with several arguments return NULL if any is NULL: coalesce both ways.
    return f"""INSERT INTO {table} (series, bucket, probes, {_FAIL_COLS},
            latency_sum_ms, latency_min_ms, latency_max_ms)
        VALUES ({", ".join("?" * (6 + len(FAILURE_COLUMNS)))})
        ON CONFLICT (series, bucket) DO UPDATE SET
            probes = probes + excluded.probes, {_FAIL_SUMS},
            latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms,
            latency_min_ms = min(coalesce(latency_min_ms, excluded.latency_min_ms),
                                 coalesce(excluded.latency_min_ms, latency_min_ms)),
            latency_max_ms = max(coalesce(latency_max_ms, excluded.latency_max_ms),
                                 coalesce(excluded.latency_max_ms, latency_max_ms))"""


UPSERT = {table: upsert_sql(table) for table in ROLLUP_TABLES}


# Queued changes are functions run inside the batch transaction, in order.
_Change = Callable[[sqlite3.Connection], None]
_BucketKey = tuple[str, str, int]  # location, target, minute start


def _insert_outage(outage: Outage, db: sqlite3.Connection) -> None:
    db.execute(
        """INSERT INTO outages (id, target, location, started_at, ended_at, cause, message,
            failed_probes, counts, maintenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            outage.id,
            outage.target,
            outage.location,
            outage.started_at,
            outage.ended_at,
            outage.cause.value,
            outage.message,
            outage.failed_probes,
            json.dumps(dict(outage.counts), sort_keys=True),
            int(outage.maintenance),
        ),
    )


def _close_outage(outage: Outage, db: sqlite3.Connection) -> None:
    db.execute(
        "UPDATE outages SET ended_at = ?, failed_probes = ?, counts = ? WHERE id = ?",
        (
            outage.ended_at,
            outage.failed_probes,
            json.dumps(dict(outage.counts), sort_keys=True),
            outage.id,
        ),
    )


def _save_state(
    location: str, target: str, state: State, since: float, db: sqlite3.Connection
) -> None:
    db.execute(
        """INSERT INTO target_state (target, location, state, since, known_since)
        VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (target, location) DO UPDATE SET state = excluded.state,
            since = excluded.since, known_since = coalesce(known_since, excluded.known_since)""",
        (target, location, state.value, since, since),
    )


def _insert_outbox(
    rows: list[tuple[OutboxRow, str]], ignored: list[int], db: sqlite3.Connection
) -> None:
    """Insert new outbox rows (with their JSON payloads); note the ids of keys that exist."""
    for row, payload in rows:
        cursor = db.execute(
            """INSERT OR IGNORE INTO outbox (id, key, notifier, outage_id, payload, created_at,
                next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (
                row.id,
                row.key,
                row.notifier,
                row.outage_id,
                payload,
                row.created_at,
                row.next_attempt_at,
            ),
        )
        if cursor.rowcount == 0:
            ignored.append(row.id)


def _apply(changes: Iterable[_Change], db: sqlite3.Connection) -> None:
    for change in changes:
        change(db)


# --- reading, shared by the async store and the synchronous reader -----------------------

_OUTAGE_COLUMNS = ", ".join(
    (
        "id",
        "target",
        "location",
        "started_at",
        "ended_at",
        "cause",
        "message",
        "failed_probes",
        "counts",
        "maintenance",
    )
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


def select_outages(
    db: sqlite3.Connection,
    *,
    target: str | None = None,
    location: str | None = None,
    since: float | None = None,
    until: float | None = None,
    open: bool | None = None,
    limit: int | None = 1000,
) -> list[Outage]:
    """Outages overlapping [since, until], newest first."""
    where, args = ["1"], []
    for sql, value in (
        ("target = ?", target),
        ("location = ?", location),
        ("(ended_at IS NULL OR ended_at >= ?)", since),
        ("started_at <= ?", until),
    ):
        if value is not None:
            where.append(sql)
            args.append(value)
    if open is not None:
        where.append("ended_at IS NULL" if open else "ended_at IS NOT NULL")
    sql = f"SELECT {_OUTAGE_COLUMNS} FROM outages WHERE {' AND '.join(where)}"
    sql += " ORDER BY started_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [_outage(row) for row in db.execute(sql, args)]


def _where(**filters: str | None) -> str:
    """A WHERE clause testing the given columns for equality with named parameters."""
    tests = [f"{column} = :{column}" for column, value in filters.items() if value is not None]
    return f" WHERE {' AND '.join(tests)}" if tests else ""


def select_report(
    db: sqlite3.Connection,
    since: float,
    now: float,
    *,
    location: str | None = None,
    target: str | None = None,
    live_run: tuple[int, str, float] | None = None,
) -> list[TargetReport]:
    """Availability per (target, location) over [since, now]: one query per table, so ask
    for all targets at once rather than target by target.

    A run without an end ended at its last heartbeat (a crash), except `live_run` (id,
    location, start): the caller's own run, which lasts until `now`.
    """
    args = {"target": target, "location": location}
    by_target = _where(target=target, location=location)
    runs: dict[str, list[Interval]] = {}
    for id_, loc, started, seen, ended in db.execute(
        "SELECT id, location, started_at, last_seen_at, ended_at FROM runs"
        + _where(location=location),
        {"location": location},
    ):
        if live_run is None or id_ != live_run[0]:
            runs.setdefault(loc, []).append((started, ended if ended is not None else seen))
    if live_run is not None:  # added from memory: its row may not be written yet
        runs.setdefault(live_run[1], []).append((live_run[2], now))

    known_since = {
        (t, loc): known
        for t, loc, known in db.execute(
            "SELECT target, location, known_since FROM target_state" + by_target, args
        )
    }
    outages: dict[tuple[str, str], list[Outage]] = {}
    for outage in select_outages(
        db, target=target, location=location, since=since, until=now, limit=None
    ):
        outages.setdefault((outage.target, outage.location), []).append(outage)
    keys = set(known_since) | set(outages)
    keys |= set(db.execute("SELECT target, location FROM series" + by_target, args))
    return [
        summarize(
            t,
            loc,
            runs.get(loc, []),
            known_since.get((t, loc)),
            outages.get((t, loc), []),
            since,
            now,
        )
        for t, loc in sorted(keys)
    ]


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


def _ro_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


class SqliteReader:
    """Synchronous read-only access for the CLI, whether the daemon runs or not."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"no history at {self.path}")
        try:
            self._db = sqlite3.connect(
                _ro_uri(self.path), uri=True, isolation_level=None, timeout=busy_timeout
            )
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} was written by a newer version (schema {version})")
        self._empty = version == 0

    def __enter__(self) -> SqliteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self._db, *args, **kwargs)
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e

    def outages(
        self,
        *,
        target: str | None = None,
        location: str | None = None,
        since: float | None = None,
        until: float | None = None,
        open: bool | None = None,
        limit: int | None = 1000,
    ) -> list[Outage]:
        if self._empty:
            return []
        return self._read(
            select_outages,
            target=target,
            location=location,
            since=since,
            until=until,
            open=open,
            limit=limit,
        )

    def report(
        self, since: float, now: float, *, location: str | None = None
    ) -> list[TargetReport]:
        if self._empty:
            return []
        return self._read(select_report, since, now, location=location)


# --- the store ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Loaded:
    """What `open()` reads back from the file."""

    outages: list[Outage] = field(default_factory=list)  # open ones
    states: dict[tuple[str, str], tuple[State, float | None]] = field(default_factory=dict)
    next_outage: int = 1
    next_run: int = 1
    outbox: list[OutboxRow] = field(default_factory=list)  # pending entries, by id
    outbox_keys: set[tuple[str, str]] = field(default_factory=set)
    next_outbox: int = 1


class SqliteStore:
    """The `Store` on one SQLite file. Use from one event loop; one process per file."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention: Retention | None = None,
        flush_interval: float = 1.0,
        busy_timeout: float = 1.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self.flush_interval = flush_interval
        self.busy_timeout = busy_timeout
        self.max_pending = max_pending  # rollup buckets kept in memory while writes fail
        self._clock = clock  # for heartbeats and the end of the run at close
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.dropped = 0

        # Owned by the event loop.
        self._changes: list[_Change] = []
        self._rollups: dict[_BucketKey, _Bucket] = {}
        self._prune_at: float | None = None
        self._waiters: list[asyncio.Future[bool]] = []
        self._open_outages: dict[tuple[str, str], Outage] = {}  # (location, target)
        self._states: dict[tuple[str, str], tuple[State, float | None]] = {}
        self._next_outage_id = 1
        self._next_run_id = 1
        self._outbox: dict[int, OutboxRow] = {}  # pending entries by id, oldest first
        self._outbox_keys: set[tuple[str, str]] = set()  # (notifier, key) enqueue skips
        self._next_outbox_id = 1
        self._outbox_ignored: list[int] = []  # appended by the store thread during a batch
        self.outbox = SqliteOutbox(self)
        self._run: tuple[int, str, float] | None = None  # id, location, started_at
        self._failing: set[str] = set()  # error kinds logged since the last good write
        self._wake = asyncio.Event()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None

        # Owned by the store thread.
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str], int] = {}  # (target, location) -> id

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the file and load what the trackers resume from.

        A file that cannot be written yet is not an error (writes are retried); a file that
        cannot be read, or has a newer schema, raises StoreError.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {self.path.parent}: {e}") from e
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="monitor-store")
        try:
            try:
                await self._call(self._writer_db)
            except sqlite3.Error as e:
                self._note_failure(e)  # not fatal: the writer retries
            loaded = await self._call(self._load)
        except (sqlite3.Error, StoreError) as e:
            await self._call(self._close_connections)
            self._executor.shutdown()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot read {self.path}: {e}") from e
        self._open_outages = {(o.location, o.target): o for o in loaded.outages}
        self._states = loaded.states
        self._next_outage_id, self._next_run_id = loaded.next_outage, loaded.next_run
        self._outbox = {row.id: row for row in loaded.outbox}
        self._outbox_keys = loaded.outbox_keys
        self._next_outbox_id = loaded.next_outbox
        self._writer = asyncio.create_task(self._write_loop(), name="monitor-store-writer")

    async def close(self) -> None:
        """End the current run, write what is pending (one last try) and let go of the file."""
        if self._writer is None or self._closing:
            return
        if self._run is not None:
            await self.end_run(self._clock())
        self._closing = True
        self._wake.set()
        await self._writer
        if self._changes or self._rollups:
            log.error(
                "closing %s with %d changes (outages, outbox) and %d rollup buckets not written",
                self.path,
                len(self._changes),
                len(self._rollups),
            )
        await self._call(self._close_connections)
        assert self._executor is not None
        self._executor.shutdown()

    # --- writing -------------------------------------------------------------------------

    def record_result(self, location: str, result: ProbeResult) -> None:
        key = (location, result.target, int(result.started_at // 60) * 60)
        bucket = self._rollups.get(key)
        if bucket is None:
            self._make_room(1)
            bucket = self._rollups[key] = _Bucket()
        bucket.add(result)

    async def flush(self) -> bool:
        """Ask the writer to write everything pending now; True if that worked."""
        if self._writer is None or self._writer.done():
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return await waiter

    async def apply_transition(
        self,
        location: str,
        transition: Transition,
        maintenance: bool = False,
        notifications: Notifications | None = None,
    ) -> Outage | None:
        """Open or close an outage, save the state and enqueue the outage's notifications,
        in one transaction (see `Store`).

        `notifications` is called with the outage (its id is final) before anything
        changes, so if it raises, nothing does. Waits for one write attempt; the outage is
        returned whether or not it succeeded.
        """
        key = (location, transition.target)
        outage: Outage | None = None
        opened = False
        if transition.state is State.DOWN:
            outage = self._open_outages.get(key)  # already open (resumed): keep that one
            if outage is None:
                first = transition.first_failure or transition.result
                outage = Outage(
                    id=self._next_outage_id,
                    target=transition.target,
                    location=location,
                    started_at=transition.at,
                    ended_at=None,
                    cause=first.failure or Failure.ERROR,
                    message=first.message,
                    failed_probes=sum(transition.failures.values()),
                    counts=dict(transition.failures),
                    maintenance=maintenance,
                )
                opened = True
        elif transition.state is State.UP and key in self._open_outages:
            before = self._open_outages[key]
            outage = replace(
                before,
                ended_at=transition.at,
                failed_probes=before.failed_probes + sum(transition.failures.values()),
                counts=dict(Counter(before.counts) + Counter(transition.failures)),
            )
        rows: list[tuple[OutboxRow, str]] = []
        if outage is not None and notifications is not None:
            rows = self._new_outbox_rows(notifications(outage), outage.id)

        # Nothing has changed so far; from here on nothing can fail.
        changes: list[_Change] = []
        if opened:
            assert outage is not None
            self._next_outage_id += 1
            self._open_outages[key] = outage
            changes.append(partial(_insert_outage, outage))
        elif outage is not None and outage.ended_at is not None:
            del self._open_outages[key]
            changes.append(partial(_close_outage, outage))
        self._states[key] = (transition.state, transition.at)
        changes.append(
            partial(_save_state, location, transition.target, transition.state, transition.at)
        )
        if rows:
            changes.append(self._add_outbox_rows(rows))
        self._changes.append(partial(_apply, changes))
        await self.flush()
        return outage

    async def enqueue(self, notifications: Iterable[Notification]) -> int:
        """Add notifications to the outbox in one transaction; returns how many were new.

        Waits for one write attempt; the entries are due at once whether or not it worked.
        """
        rows = self._new_outbox_rows(notifications, None)
        if rows:
            self._changes.append(self._add_outbox_rows(rows))
            await self.flush()
        return len(rows)

    def _new_outbox_rows(
        self, notifications: Iterable[Notification], outage_id: int | None
    ) -> list[tuple[OutboxRow, str]]:
        """Rows (with their JSON payloads) for the notifications whose keys are new.

        Changes nothing, so a caller can still back out; raises if a payload is not JSON.
        """
        rows: list[tuple[OutboxRow, str]] = []
        seen: set[tuple[str, str]] = set()
        now = self._clock()
        for n in notifications:
            ident = (n.notifier, n.key)
            if ident in self._outbox_keys or ident in seen:
                continue
            seen.add(ident)
            # Serialised here, not in the writer: a bad payload must fail its caller, and
            # memory must hold what a restart would read back.
            payload = json.dumps(dict(n.payload), sort_keys=True, allow_nan=False)
            row = OutboxRow(
                id=self._next_outbox_id + len(rows),
                notifier=n.notifier,
                key=n.key,
                outage_id=n.outage_id if n.outage_id is not None else outage_id,
                payload=json.loads(payload),
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            rows.append((row, payload))
        return rows

    def _add_outbox_rows(self, rows: list[tuple[OutboxRow, str]]) -> _Change:
        """Make the rows pending in memory; returns the change that writes them."""
        for row, _ in rows:
            self._outbox[row.id] = row
            self._outbox_keys.add((row.notifier, row.key))
        self._next_outbox_id = rows[-1][0].id + 1
        return partial(_insert_outbox, rows, self._outbox_ignored)

    async def start_run(self, location: str, now: float) -> int:
        if self._run is not None:
            raise RuntimeError(f"run {self._run[0]} is still active")
        run_id = self._next_run_id
        self._next_run_id += 1
        self._run = (run_id, location, now)
        self._changes.append(
            partial(
                _execute,
                "INSERT INTO runs (id, location, started_at, last_seen_at) VALUES (?, ?, ?, ?)",
                (run_id, location, now, now),
            )
        )
        await self.flush()
        return run_id

    async def end_run(self, now: float) -> None:
        if self._run is None:
            return
        self._changes.append(
            partial(
                _execute,
                "UPDATE runs SET ended_at = ?, last_seen_at = ? WHERE id = ?",
                (now, now, self._run[0]),
            )
        )
        self._run = None
        await self.flush()

    async def prune(self, now: float) -> None:
        self._prune_at = now  # kept until written; a later prune replaces it
        await self.flush()

    # --- reading -------------------------------------------------------------------------

    async def open_outages(self, location: str) -> list[Outage]:
        return [o for (loc, _), o in self._open_outages.items() if loc == location]

    async def target_states(self, location: str) -> dict[str, tuple[State, float | None]]:
        return {t: state for (loc, t), state in self._states.items() if loc == location}

    async def outages(
        self,
        *,
        target: str | None = None,
        location: str | None = None,
        since: float | None = None,
        until: float | None = None,
        open: bool | None = None,
        limit: int = 1000,
    ) -> list[Outage]:
        return await self._read(
            select_outages,
            target=target,
            location=location,
            since=since,
            until=until,
            open=open,
            limit=limit,
        )

    async def uptime(self, location: str, target: str, since: float, now: float) -> float | None:
        reports = await self._read(
            select_report, since, now, location=location, target=target, live_run=self._run
        )
        return reports[0].uptime if reports else None

    async def report(
        self, since: float, now: float, location: str | None = None
    ) -> list[TargetReport]:
        return await self._read(select_report, since, now, location=location, live_run=self._run)

    # --- the writer task (event loop side) -----------------------------------------------

    async def _write_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self._write_batch()
        await self._write_batch()

    async def _write_batch(self) -> None:
        self._outbox_ignored.clear()
        waiters, self._waiters = self._waiters, []
        changes, self._changes = self._changes, []
        rollups, self._rollups = self._rollups, {}
        prune_at, self._prune_at = self._prune_at, None
        heartbeat = (self._run[0], self._clock()) if self._run is not None else None
        ok = False
        try:
            await self._call(self._write, changes, rollups, prune_at, heartbeat)
            ok = True
        except sqlite3.Error as e:
            self._note_failure(e)
            self._changes[:0] = changes  # keep the order of outage changes
            self._prune_at = self._prune_at or prune_at
            self._restore(rollups)
        except Exception:  # a bug: keep the writer alive, keep the data
            log.exception("unexpected error writing to %s", self.path)
            self.errors["other"] += 1
            self._changes[:0] = changes
            self._restore(rollups)
        if ok and self._failing:
            log.warning("writing to %s works again", self.path)
            self._failing.clear()
        if ok:
            self._drop_ignored_outbox()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(ok)

    def _drop_ignored_outbox(self) -> None:
        """Forget entries whose key the table already had (settled in an earlier run)."""
        for entry_id in self._outbox_ignored:
            row = self._outbox.pop(entry_id, None)
            if row is not None:
                log.warning(
                    "notification %s for %s was already in the outbox: not sent again",
                    row.key,
                    row.notifier,
                )
        self._outbox_ignored.clear()

    def _note_failure(self, error: sqlite3.Error) -> None:
        kind = error_kind(error)
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if kind not in self._failing:
            self._failing.add(kind)
            log.error(
                "cannot write to %s (%s): %s; keeping changes in memory and retrying",
                self.path,
                kind,
                error,
            )

    def _restore(self, failed: dict[_BucketKey, _Bucket]) -> None:
        """Put back the buckets of a failed write, older ones first, within `max_pending`."""
        for key, bucket in self._rollups.items():
            if key in failed:
                failed[key].merge(bucket)
            else:
                failed[key] = bucket
        self._rollups = failed
        self._make_room(0)

    def _make_room(self, wanted: int) -> None:
        excess = len(self._rollups) + wanted - self.max_pending
        if excess <= 0:
            return
        for key in list(self._rollups)[:excess]:  # insertion order: the oldest first
            del self._rollups[key]
        self.dropped += excess
        if "dropped" not in self._failing:
            self._failing.add("dropped")
            log.error(
                "more than %d rollup buckets waiting to be written: dropping the oldest",
                self.max_pending,
            )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await self._call(partial(self._read_sync, fn, *args, **kwargs))
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e

    # --- the store thread ----------------------------------------------------------------

    def _writer_db(self) -> sqlite3.Connection:
        if self._wdb is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL after bursts
                _migrate(db)
            except BaseException:
                db.close()
                raise
            self._wdb = db
        return self._wdb

    def _reader_db(self) -> sqlite3.Connection:
        if self._rdb is None:
            self._rdb = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
            self._rdb.execute("PRAGMA query_only = 1")
        return self._rdb

    def _read_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        db = self._reader_db()
        with db:  # one read transaction: a consistent snapshot
            db.execute("BEGIN")
            return fn(db, *args, **kwargs)

    def _load(self) -> _Loaded:
        if not self.path.exists():  # never written (for example a read-only directory)
            return _Loaded()
        db = self._reader_db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} was written by a newer version (schema {version})")
        if version == 0:
            return _Loaded()
        loaded = _Loaded(outages=select_outages(db, open=True, limit=None))
        loaded.states = {
            (loc, t): (State(state), since)
            for t, loc, state, since in db.execute(
                "SELECT target, location, state, since FROM target_state"
            )
        }
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

    def _write(
        self,
        changes: list[_Change],
        rollups: dict[_BucketKey, _Bucket],
        prune_at: float | None,
        heartbeat: tuple[int, float] | None,
    ) -> None:
        try:
            db = self._writer_db()
            db.execute("BEGIN IMMEDIATE")
            new_series: dict[tuple[str, str], int] = {}
            try:
                for change in changes:
                    change(db)
                self._write_rollups(db, rollups, new_series)
                if heartbeat is not None:
                    db.execute(
                        "UPDATE runs SET last_seen_at = ? WHERE id = ? AND ended_at IS NULL",
                        (heartbeat[1], heartbeat[0]),
                    )
                if prune_at is not None:
                    prune_history(db, self.retention, prune_at)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may already have rolled back (disk full)
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            if error_kind(e) in _REOPEN_KINDS and self._wdb is not None:
                self._wdb.close()
                self._wdb = None
            raise
        if prune_at is not None:
            self._series.clear()  # series may have been deleted: look them up again
        else:
            self._series.update(new_series)

    def _write_rollups(
        self,
        db: sqlite3.Connection,
        rollups: dict[_BucketKey, _Bucket],
        new_series: dict[tuple[str, str], int],
    ) -> None:
        if not rollups:
            return
        hours: dict[_BucketKey, _Bucket] = {}
        for (location, target, minute), bucket in rollups.items():
            hour = hours.setdefault((location, target, minute - minute % 3600), _Bucket())
            hour.merge(bucket)
        ids = {
            (location, target): self._series_id(db, target, location, new_series)
            for location, target, _ in hours
        }
        for table, buckets in (("rollup_minute", rollups), ("rollup_hour", hours)):
            rows = [bucket.row(ids[key[:2]], key[2]) for key, bucket in buckets.items()]
            db.executemany(UPSERT[table], rows)

    def _series_id(
        self,
        db: sqlite3.Connection,
        target: str,
        location: str,
        new_series: dict[tuple[str, str], int],
    ) -> int:
        key = (target, location)
        found = self._series.get(key) or new_series.get(key)
        if found is None:  # only remembered once the transaction commits
            db.execute("INSERT OR IGNORE INTO series (target, location) VALUES (?, ?)", key)
            (found,) = db.execute(
                "SELECT id FROM series WHERE target = ? AND location = ?", key
            ).fetchone()
            new_series[key] = found
        return found

    def _close_connections(self) -> None:
        for db in (self._wdb, self._rdb):
            if db is not None:
                db.close()
        self._wdb = self._rdb = None


class SqliteOutbox:
    """The store's outbox (`store.outbox`): the `Outbox` the sender takes entries from.

    A view of the store's own memory and write queue (same module, one event loop). Reads
    are served from memory, which every call below updates before it awaits anything; the
    writes follow through the store's queue, in order, and each call waits for one write
    attempt so that a delivery is on disk before the sender moves on. Never raises on
    store errors (the writes stay queued).
    """

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def due(self, now: float, limit: int, exclude: Collection[int] = ()) -> list[OutboxRow]:
        found: list[OutboxRow] = []
        seen: set[tuple[str, int]] = set()  # (notifier, outage) with an older pending entry
        for row in self._store._outbox.values():  # insertion order: by id
            if len(found) >= limit:
                break
            if row.outage_id is not None:
                group = (row.notifier, row.outage_id)
                if group in seen:
                    continue
                seen.add(group)
            if row.next_attempt_at <= now and row.id not in exclude:
                found.append(row)
        return found

    async def delivered(self, entry_id: int, now: float) -> None:
        await self._settle(entry_id, "UPDATE outbox SET delivered_at = ? WHERE id = ?", now)

    async def retry(self, entry_id: int, next_attempt_at: float, error: str) -> None:
        store = self._store
        row = store._outbox.get(entry_id)
        if row is None:
            return
        store._outbox[entry_id] = replace(
            row, attempts=row.attempts + 1, next_attempt_at=next_attempt_at
        )
        store._changes.append(
            partial(
                _execute,
                """UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,
                    last_error = ? WHERE id = ?""",
                (next_attempt_at, error, entry_id),
            )
        )
        await store.flush()

    async def give_up(self, entry_id: int, error: str) -> None:
        await self._settle(
            entry_id,
            "UPDATE outbox SET given_up_at = ?, last_error = ? WHERE id = ?",
            self._store._clock(),
            error,
        )

    def pending(self) -> int:
        return len(self._store._outbox)

    async def _settle(self, entry_id: int, sql: str, *args: Any) -> None:
        store = self._store
        if store._outbox.pop(entry_id, None) is None:
            return  # already settled (or never known): nothing to change
        store._changes.append(partial(_execute, sql, (*args, entry_id)))
        await store.flush()


def _execute(sql: str, args: tuple[Any, ...], db: sqlite3.Connection) -> None:
    db.execute(sql, args)


def _migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations this file lacks, each in its own transaction."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"database written by a newer version (schema {version})")
            if version == len(MIGRATIONS):
                db.execute("COMMIT")
                return
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise


def prune_history(db: sqlite3.Connection, retention: Retention, now: float) -> None:
    """Delete what `retention` no longer keeps (inside the caller's transaction)."""
    for table, keep in (("rollup_minute", retention.minutes), ("rollup_hour", retention.hours)):
        if keep is not None:
            # Through the primary key, one series at a time: no full scan of a big table.
            db.execute(
                f"DELETE FROM {table} WHERE series IN (SELECT id FROM series) AND bucket < ?",
                (now - keep,),
            )
    if retention.outages is not None:
        db.execute("DELETE FROM outages WHERE ended_at < ?", (now - retention.outages,))
    if retention.outages is not None:
        # Settled entries, kept as long as outages are; those of open outages stay (their
        # keys stop a repeated down from being sent again).
        db.execute(
            """DELETE FROM outbox WHERE (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)
                AND created_at < ?
                AND (outage_id IS NULL
                     OR outage_id NOT IN (SELECT id FROM outages WHERE ended_at IS NULL))""",
            (now - retention.outages,),
        )
    db.execute(
        """DELETE FROM series WHERE
            NOT EXISTS (SELECT 1 FROM rollup_minute WHERE series = series.id)
            AND NOT EXISTS (SELECT 1 FROM rollup_hour WHERE series = series.id)"""
    )
