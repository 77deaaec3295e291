"""The SQLite file itself: its tables, their migrations, and what is wrong with it.

Imports `monitor.model` and `monitor.store.base` only. Every other module of the SQLite
backend reads the layout from here; nothing else creates or alters tables.

`PRAGMA user_version` numbers the migrations applied; `MIGRATIONS` is append-only.
Rollups refer to a `series` row (target, location) instead of repeating the names in every
row, and keep latency in integer milliseconds: both halve the size of the biggest tables.

The messages below name the file and the fix in one line: the daemon and the CLI print
them as they are.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from monitor.model import Failure
from monitor.store.base import StoreError

FAILURE_COLUMNS: dict[str, str] = {f.value: f"fail_{f.value}" for f in Failure}
# Latency of successful probes as a histogram (hourly rollups only): counts per bucket (not
# cumulative), upper bounds in milliseconds, the last one open. Hourly percentiles come from
# it, so they need no per-minute rollups (off by default).
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LATENCY_COLUMNS: tuple[str, ...] = (
    *(f"lat_le_{bound}ms" for bound in LATENCY_BOUNDS_MS), "lat_le_inf")
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
    # The failure class `proxy` (a target's proxy failed): counted, never an outage.
    tuple(
        f"ALTER TABLE {table} ADD COLUMN fail_proxy INTEGER NOT NULL DEFAULT 0"
        for table in ROLLUP_TABLES
    ),
    # A latency histogram per hour: hourly percentiles without per-minute rows (which do
    # not carry it: they are the biggest table when they are on).
    tuple(
        f"ALTER TABLE rollup_hour ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
        for column in LATENCY_COLUMNS
    ),
)
OUTBOX_VERSION = 2  # the schema version that added the outbox


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations this file lacks, each in its own transaction."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
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


def version_of(db: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; raises StoreError if a newer monitor wrote it."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(newer(path, version))
    return version


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


# --- what went wrong ----------------------------------------------------------------------

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


def error_kind(error: sqlite3.Error) -> str:
    """A short, stable name for what went wrong, usable as a metric label."""
    code: int | None = getattr(error, "sqlite_errorcode", None)
    return "other" if code is None else _KIND_BY_CODE.get(code & 0xFF, "other")


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


def read_trouble(path: Path, error: sqlite3.Error) -> str:
    if error_kind(error) == "corrupt":
        return damaged(path, str(error))
    return f"cannot read {path}: {error}"


def newer(path: Path, version: int) -> str:
    return (
        f"{path} was written by a newer version of monitor (schema {version}): "
        "upgrade monitor, or set store.path to another file"
    )
