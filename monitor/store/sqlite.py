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

An open outage's probe counts follow `record_result` in memory (`_live`); the next batch
updates its row, so they stay current without a transaction per probe.

Retention (`prune`) runs in steps of at most `prune_batch` rows, each its own transaction
and its own call to the store thread, so the writer's batches go in between.

At open, a damaged or truncated file raises StoreError with a one-line message that names
the file and the fix; `check_writable` does the same for a file that cannot be written.

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
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from monitor.model import Failure, Outage, OutageTime, ProbeResult, State, Transition
from monitor.store.base import (
    Interval,
    Notification,
    Notifications,
    OutboxRow,
    Retention,
    StoreError,
    TargetReport,
    outage_time,
    summarize,
)
from monitor.store.files import create_private_file, make_private_dirs

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
    # The failure class `local` (the monitor's own fault): counted, never an outage.
    tuple(
        f"ALTER TABLE {table} ADD COLUMN fail_local INTEGER NOT NULL DEFAULT 0"
        for table in ROLLUP_TABLES
    ),
)
OUTBOX_VERSION = 2  # the schema version that added the outbox

PRUNE_BATCH = 2000  # rows per retention transaction: a few milliseconds of writer time
PRUNE_SERIES = 500  # series visited per retention transaction, whatever it deletes

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


def _update_counts(outages: list[Outage], db: sqlite3.Connection) -> None:
    db.executemany(
        "UPDATE outages SET failed_probes = ?, counts = ? WHERE id = ? AND ended_at IS NULL",
        [(o.failed_probes, json.dumps(dict(o.counts), sort_keys=True), o.id) for o in outages],
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


def select_runs(
    db: sqlite3.Connection,
    now: float,
    *,
    location: str | None = None,
    live_run: tuple[int, str, float] | None = None,
) -> dict[str, list[Interval]]:
    """Run periods by location. A run without an end ended at its last heartbeat (a crash),
    except `live_run` (id, location, start): the caller's own run, which lasts until `now`.
    """
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
    return runs


def select_outage_times(
    db: sqlite3.Connection,
    outages: Sequence[Outage],
    now: float,
    live_run: tuple[int, str, float] | None = None,
) -> list[OutageTime]:
    locations = {o.location for o in outages}
    only = next(iter(locations)) if len(locations) == 1 else None
    runs = select_runs(db, now, location=only, live_run=live_run) if outages else {}
    return [outage_time(o, runs.get(o.location, []), now) for o in outages]


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

    Run periods as `select_runs` reads them.
    """
    args = {"target": target, "location": location}
    by_target = _where(target=target, location=location)
    runs = select_runs(db, now, location=location, live_run=live_run)

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


def _write_probe(db: sqlite3.Connection) -> None:
    """A write that changes nothing once committed, but needs the file to be writable."""
    db.execute("INSERT INTO runs (id, location, started_at, last_seen_at) VALUES (0, '', 0, 0)")
    db.execute("DELETE FROM runs WHERE id = 0")


def damaged(path: Path, why: str) -> str:
    return (
        f"{path} is damaged ({why}): move it aside to start a new history "
        f"(mv {path} {path}.damaged, with its -wal and -shm files), or restore it from a backup"
    )


def trouble(path: Path, error: sqlite3.Error, doing: str) -> str:
    """What went wrong with the file, and what to do about it, in one line."""
    kind = error_kind(error)
    if kind == "corrupt":
        return damaged(path, str(error))
    if kind in ("readonly", "cantopen"):
        return (
            f"cannot {doing} {path} ({kind}: {error}): make the file and its directory "
            f"writable for this user (also {path.name}-wal and -shm if they exist), "
            "or set store.path to a writable place"
        )
    return f"cannot {doing} {path} ({kind}: {error})"


def _read_trouble(path: Path, error: sqlite3.Error) -> str:
    if error_kind(error) == "corrupt":
        return damaged(path, str(error))
    return f"cannot read {path}: {error}"


def newer(path: Path, version: int) -> str:
    return (
        f"{path} was written by a newer version of monitor (schema {version}): "
        "upgrade monitor, or set store.path to another file"
    )


def check_size(path: Path) -> None:
    """Raise StoreError if the file is shorter than its header says (a truncated copy).

    SQLite would only notice when it reads a missing page, maybe days later. The header's
    page count is valid when its "version-valid-for" number equals the change counter. With
    a non-empty -wal file the check is skipped: a checkpoint cut short by a crash can leave
    the file short, and SQLite completes it from the WAL.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return
    try:
        with path.open("rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except FileNotFoundError:
        return  # a new database
    except OSError as e:
        raise StoreError(f"cannot read {path} ({e.strerror})") from e
    if size == 0:
        return  # an empty file is a new database
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise StoreError(damaged(path, "not an SQLite database"))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[92:96] == header[24:28] and size < pages * page_size:
        raise StoreError(damaged(path, f"truncated: {size} of {pages * page_size} bytes"))


def _ro_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


class SqliteReader:
    """Synchronous read-only access for the CLI, whether the daemon runs or not."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"no history at {self.path}")
        check_size(self.path)
        try:
            self._db = sqlite3.connect(
                _ro_uri(self.path), uri=True, isolation_level=None, timeout=busy_timeout
            )
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(_read_trouble(self.path, e)) from e
        if version > len(MIGRATIONS):
            raise StoreError(newer(self.path, version))
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
            raise StoreError(_read_trouble(self.path, e)) from e

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

    def outage_times(self, outages: Sequence[Outage], now: float) -> list[OutageTime]:
        """Known and unknown time of each outage as of `now` (see `Store.outage_times`)."""
        return self._read(select_outage_times, outages, now)

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
        prune_batch: int = PRUNE_BATCH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.prune_batch = prune_batch  # rows deleted per retention transaction
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
        self._waiters: list[asyncio.Future[bool]] = []
        self._open_outages: dict[tuple[str, str], Outage] = {}  # (location, target)
        # Failures of open outages since they were confirmed or loaded (see `_current`),
        # and the outages whose counts changed since the last write.
        self._live: dict[tuple[str, str], Counter[str]] = {}
        self._dirty: set[tuple[str, str]] = set()
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

        A file that cannot be written yet is not an error here (writes are retried; the
        daemon calls `check_writable` to refuse to start). A file that cannot be read, is
        damaged or truncated, or has a newer schema, raises StoreError with a message that
        names the file and the fix.
        """
        try:
            make_private_dirs(self.path.parent)  # 0700 if we create it, whatever the umask
        except OSError as e:
            raise StoreError(
                f"cannot create the directory {self.path.parent} ({e.strerror}): create it, "
                "or set store.path to a writable place"
            ) from e
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="monitor-store")
        try:
            await self._call(check_size, self.path)
            try:
                await self._call(self._writer_db)
            except sqlite3.Error as e:
                if error_kind(e) == "corrupt":
                    raise
                # Not fatal: counted now, logged by the first write that fails the same way.
                kind = error_kind(e)
                self.errors[kind] = self.errors.get(kind, 0) + 1
            loaded = await self._call(self._load)
        except (sqlite3.Error, StoreError) as e:
            await self._call(self._close_connections)
            self._executor.shutdown()
            self._executor = None
            if isinstance(e, StoreError):
                raise
            raise StoreError(trouble(self.path, e, "read")) from e
        self._open_outages = {(o.location, o.target): o for o in loaded.outages}
        self._states = loaded.states
        self._next_outage_id, self._next_run_id = loaded.next_outage, loaded.next_run
        self._outbox = {row.id: row for row in loaded.outbox}
        self._outbox_keys = loaded.outbox_keys
        self._next_outbox_id = loaded.next_outbox
        self._writer = asyncio.create_task(self._write_loop(), name="monitor-store-writer")

    async def check_writable(self) -> None:
        """Raise StoreError, naming the file and the fix, unless a write can commit now."""
        try:
            await self._call(self._transaction, _write_probe)
        except sqlite3.Error as e:
            raise StoreError(trouble(self.path, e, "write")) from e

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
        if not result.ok and not result.unknown:
            # An open outage's counts stay current; written with the next batch.
            outage = (location, result.target)
            if outage in self._open_outages:
                live = self._live.setdefault(outage, Counter())
                live[(result.failure or Failure.ERROR).value] += 1
                self._dirty.add(outage)

    def _current(self, key: tuple[str, str]) -> Outage:
        """The open outage of `key` with the failures recorded since its confirmation."""
        outage = self._open_outages[key]
        live = self._live.get(key)
        if not live:
            return outage
        return replace(
            outage,
            failed_probes=outage.failed_probes + sum(live.values()),
            counts=dict(Counter(outage.counts) + live),
        )

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
            # Already open (a tracker that started afresh): keep that one; its recorded
            # failures already include this run's.
            outage = self._current(key) if key in self._open_outages else None
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
            # The failures while down are the transition's: add them to those at
            # confirmation (the live count saw the same ones).
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
            self._live.pop(key, None)
            self._dirty.discard(key)
            changes.append(partial(_close_outage, outage))
        elif outage is not None:  # a repeated down: the live count becomes the base
            self._open_outages[key] = outage
            self._live.pop(key, None)
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

    async def prune(self, now: float) -> int:
        """Delete what the retention no longer keeps; returns the rows deleted.

        At most `prune_batch` rows per transaction, each its own call to the store thread,
        so the writer's batches go in between and probing never waits for a long delete.
        Raises StoreError if a delete fails (counted and logged like any write error)."""
        cursor = PruneCursor()
        deleted = 0
        while not cursor.done:
            try:
                deleted += await self._call(self._prune_step, now, cursor)
            except sqlite3.Error as e:
                self._note_failure(e)
                raise StoreError(f"cannot delete old history from {self.path}: {e}") from e
        return deleted

    # --- reading -------------------------------------------------------------------------

    async def open_outages(self, location: str) -> list[Outage]:
        return [self._current(key) for key in self._open_outages if key[0] == location]

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

    async def outage_times(self, outages: Sequence[Outage], now: float) -> list[OutageTime]:
        if not outages:
            return []
        return await self._read(select_outage_times, outages, now, live_run=self._run)

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
        queued, self._changes = self._changes, []
        changes = queued
        rollups, self._rollups = self._rollups, {}
        heartbeat = (self._run[0], self._clock()) if self._run is not None else None
        dirty, self._dirty = self._dirty, set()
        counts = [self._current(key) for key in dirty if key in self._open_outages]
        if counts:
            changes = [*changes, partial(_update_counts, counts)]
        if not (changes or rollups or heartbeat):  # nothing to write: touch nothing
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)
            return
        ok = False
        try:
            await self._call(self._write, changes, rollups, heartbeat)
            ok = True
        except sqlite3.Error as e:
            self._note_failure(e)
            self._changes[:0] = queued  # keep the order of outage changes
            self._dirty |= dirty
            self._restore(rollups)
        except Exception:  # a bug: keep the writer alive, keep the data
            log.exception("unexpected error writing to %s", self.path)
            self.errors["other"] += 1
            self._changes[:0] = queued
            self._dirty |= dirty
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
            create_private_file(self.path)  # 0600: SQLite gives -wal and -shm the same mode
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL after bursts
                _migrate(db, self.path)
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
        check_size(self.path)
        db = self._reader_db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(newer(self.path, version))
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

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction on the writer connection."""
        try:
            db = self._writer_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
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
        return out

    def _write(
        self,
        changes: list[_Change],
        rollups: dict[_BucketKey, _Bucket],
        heartbeat: tuple[int, float] | None,
    ) -> None:
        new_series: dict[tuple[str, str], int] = {}

        def write(db: sqlite3.Connection) -> None:
            for change in changes:
                change(db)
            self._write_rollups(db, rollups, new_series)
            if heartbeat is not None:
                db.execute(
                    "UPDATE runs SET last_seen_at = ? WHERE id = ? AND ended_at IS NULL",
                    (heartbeat[1], heartbeat[0]),
                )

        self._transaction(write)
        self._series.update(new_series)  # remembered once committed

    def _prune_step(self, now: float, cursor: PruneCursor) -> int:
        deleted = self._transaction(
            partial(
                prune_step,
                retention=self.retention,
                now=now,
                cursor=cursor,
                budget=self.prune_batch,
            )
        )
        if cursor.series_deleted:
            self._series.clear()  # series may have been deleted: look them up again
        return deleted

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


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations this file lacks, each in its own transaction."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(newer(path, version))
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


def prune_history(db: sqlite3.Connection, retention: Retention, now: float) -> int:
    """A whole retention pass inside the caller's transaction (for tools; the store prunes
    in small transactions); returns the rows deleted."""
    cursor = PruneCursor()
    deleted = 0
    while not cursor.done:
        deleted += prune_step(db, retention=retention, now=now, cursor=cursor, budget=PRUNE_BATCH)
    return deleted


@dataclass(slots=True)
class PruneCursor:
    """Where a retention pass is: its stage and, in the rollup stages, the last series done."""

    stage: int = 0
    series: int = 0
    series_deleted: bool = False  # set by the step that deleted series rows

    @property
    def done(self) -> bool:
        return self.stage >= len(_PRUNE_STAGES)

    def next_stage(self) -> None:
        self.stage += 1
        self.series = 0


def prune_step(
    db: sqlite3.Connection,
    *,
    retention: Retention,
    now: float,
    cursor: PruneCursor,
    budget: int,
) -> int:
    """One bounded piece of a retention pass (inside the caller's transaction): deletes at
    most `budget` rows, moves `cursor` on, and returns the rows deleted."""
    cursor.series_deleted = False
    return _PRUNE_STAGES[cursor.stage](db, retention, now, cursor, budget)


def _prune_rollups(table: str, keep: str) -> Callable[..., int]:
    """The stage deleting rows of `table` older than the retention's field `keep`."""

    def step(
        db: sqlite3.Connection,
        retention: Retention,
        now: float,
        cursor: PruneCursor,
        budget: int,
    ) -> int:
        seconds: float | None = getattr(retention, keep)
        if seconds is None:
            cursor.next_stage()
            return 0
        cutoff = now - seconds
        ids = [
            row[0]
            for row in db.execute(
                "SELECT id FROM series WHERE id > ? ORDER BY id LIMIT ?",
                (cursor.series, PRUNE_SERIES),
            )
        ]
        deleted = 0
        for series in ids:
            # Through the primary key (series, bucket): never a scan of the big table.
            deleted += db.execute(
                f"""DELETE FROM {table} WHERE series = ? AND bucket IN (SELECT bucket FROM
                    {table} WHERE series = ? AND bucket < ? ORDER BY bucket LIMIT ?)""",
                (series, series, cutoff, budget - deleted),
            ).rowcount
            if deleted >= budget:
                return deleted  # this series may have more: the next step starts with it
            cursor.series = series
        if len(ids) < PRUNE_SERIES:
            cursor.next_stage()
        return deleted

    return step


def _prune_outages(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Closed outages older than the retention; open ones are always kept."""
    if retention.outages is None:
        cursor.next_stage()
        return 0
    cutoff = now - retention.outages
    deleted = db.execute(
        """DELETE FROM outages WHERE id IN (SELECT id FROM outages
            WHERE started_at < ? AND ended_at < ? LIMIT ?)""",
        (cutoff, cutoff, budget),
    ).rowcount
    if deleted < budget:
        cursor.next_stage()
    return deleted


def _prune_outbox(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Settled entries, kept as long as outages are; those of open outages stay (their keys
    stop a repeated down from being sent again)."""
    if retention.outages is None:
        cursor.next_stage()
        return 0
    deleted = db.execute(
        """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
            WHERE (delivered_at IS NOT NULL OR given_up_at IS NOT NULL) AND created_at < ?
            AND (outage_id IS NULL
                 OR outage_id NOT IN (SELECT id FROM outages WHERE ended_at IS NULL))
            LIMIT ?)""",
        (now - retention.outages, budget),
    ).rowcount
    if deleted < budget:
        cursor.next_stage()
    return deleted


def _prune_series(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Series left without rollups (a target that is gone); one probe brings it back."""
    deleted = db.execute(
        """DELETE FROM series WHERE id IN (SELECT id FROM series WHERE
            NOT EXISTS (SELECT 1 FROM rollup_minute WHERE series = series.id)
            AND NOT EXISTS (SELECT 1 FROM rollup_hour WHERE series = series.id) LIMIT ?)""",
        (budget,),
    ).rowcount
    cursor.series_deleted = deleted > 0
    if deleted < budget:
        cursor.next_stage()
    return deleted


def _prune_runs(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Run periods older than all kept history, unless an open outage still needs them
    (its known time comes from them)."""
    keeps = (retention.minutes, retention.hours, retention.outages)
    cursor.next_stage()
    if any(keep is None for keep in keeps):
        return 0
    cutoff = now - max(k for k in keeps if k is not None)
    return db.execute(
        """DELETE FROM runs WHERE id IN (SELECT id FROM runs
            WHERE coalesce(ended_at, last_seen_at) < ?
            AND coalesce(ended_at, last_seen_at) <
                (SELECT coalesce(min(started_at), ?) FROM outages WHERE ended_at IS NULL)
            LIMIT ?)""",
        (cutoff, cutoff, budget),
    ).rowcount


_PRUNE_STAGES: tuple[Callable[..., int], ...] = (
    _prune_rollups("rollup_minute", "minutes"),
    _prune_rollups("rollup_hour", "hours"),
    _prune_outages,
    _prune_outbox,
    _prune_series,
    _prune_runs,
)
