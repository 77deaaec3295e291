"""The writer: one thread that owns the SQLite connections, and one task that writes what
the rest of the store queues, in batches.

Imports `monitor.store.{base,files,schema}` only; the other modules hand it `Work`.

How it writes: every change is a function run inside a write transaction. `submit` queues
one; sources (`add_source`: rollups, live outage counts, the run's heartbeat) are asked for
theirs at the start of every batch. One asyncio task writes a batch (one transaction) every
`flush_interval` seconds, or at once when a caller awaits `flush()`. All blocking sqlite3
calls run in ONE dedicated thread, which owns the write connection and the read
connection; the event loop never waits on the disk.

When writing fails (locked, read-only, full, ...), nothing is raised to the caller: the
error is counted in `errors` and logged once per kind until a write works again. Submitted
work stays queued, in order, and is retried with the next batch; the work of a source is
handed back through its `failed` callback. A read-only or vanished file is reopened before
the retry. `committed` callbacks run on the event loop once their batch is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from monitor.store.base import StoreError
from monitor.store.files import create_private_file
from monitor.store.schema import ERROR_KINDS, check_size, error_kind, migrate, trouble

log = logging.getLogger("monitor.store")

T = TypeVar("T")

# A change to the file: run inside the batch transaction, in order.
Change = Callable[[sqlite3.Connection], None]

# After these errors the write connection is useless (it stays read-only): open a new one.
_REOPEN_KINDS = {"readonly", "cantopen"}


@dataclass(frozen=True, slots=True)
class Work:
    """One change and what to do, on the event loop, once its batch committed or failed.

    Submitted work is retried until written, so only a source's work uses `failed`."""

    change: Change
    committed: Callable[[], object] | None = None
    failed: Callable[[], object] | None = None


# Asked at the start of every batch for what it wants written (None: nothing).
Source = Callable[[], Work | None]


class Writer:
    """The store thread, its connections and the batch writer of one SQLite file."""

    def __init__(self, path: Path, *, flush_interval: float, busy_timeout: float) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.busy_timeout = busy_timeout
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)

        # Owned by the event loop.
        self._queue: list[Work] = []
        self._sources: list[Source] = []
        self._waiters: list[asyncio.Future[bool]] = []
        self._failing: set[str] = set()  # error kinds logged since the last good write
        self._wake = asyncio.Event()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

        # Owned by the store thread.
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Start the thread and open (create, migrate) the file.

        A file that cannot be written yet is not an error here: it is counted, and logged
        by the first write that fails the same way. A damaged or truncated file, or one
        with a newer schema, raises StoreError naming the file and the fix.
        """
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="monitor-store")
        try:
            await self.call(check_size, self.path)
            try:
                await self.call(self._writer_db)
            except sqlite3.Error as e:
                if error_kind(e) == "corrupt":
                    raise
                kind = error_kind(e)
                self.errors[kind] = self.errors.get(kind, 0) + 1
        except (sqlite3.Error, StoreError) as e:
            await self.shutdown()
            if isinstance(e, StoreError):
                raise
            raise StoreError(trouble(self.path, e, "read")) from e

    @property
    def running(self) -> bool:
        """Started and not stopping: batches are being written."""
        return self._task is not None and not self._closing

    def start(self) -> None:
        """Start writing batches (after `open`, once the sources are added)."""
        self._task = asyncio.create_task(self._write_loop(), name="monitor-store-writer")

    async def stop(self) -> int:
        """Write one last batch and stop the task; returns the submitted changes left."""
        if self._task is None or self._closing:
            return len(self._queue)
        self._closing = True
        self._wake.set()
        await self._task
        return len(self._queue)

    async def shutdown(self) -> None:
        """Close the connections and end the thread (after `stop`). Safe in any state."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(executor, self._close_connections)
        executor.shutdown()

    # --- what the rest of the store uses -------------------------------------------------

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def submit(self, work: Work) -> None:
        """Queue a change for the next batch, after every change submitted before it."""
        self._queue.append(work)

    async def flush(self) -> bool:
        """Ask for a batch now and wait for it; True if everything pending was written."""
        if self._task is None or self._task.done():
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return await waiter

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the store thread."""
        if self._executor is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(db, *args, **kwargs)` in one read transaction (a consistent snapshot) on the
        read connection; raises sqlite3.Error."""
        return await self.call(partial(self._read, fn, *args, **kwargs))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` in one write transaction now, outside the batches; raises sqlite3.Error
        (the caller decides whether it counts as a write failure: `note_failure`)."""
        return await self.call(self._transaction, fn)

    def note_failure(self, error: sqlite3.Error) -> None:
        """Count a failed write, and log its kind once until a write works again."""
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

    # --- the batch task (event loop side) ------------------------------------------------

    async def _write_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self._write_batch()
        await self._write_batch()

    async def _write_batch(self) -> None:
        waiters, self._waiters = self._waiters, []
        queued, self._queue = self._queue, []
        taken = [work for source in self._sources if (work := source()) is not None]
        ok = True
        if queued or taken:  # else nothing to write: touch nothing
            ok = await self._write_all(queued, taken)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(ok)

    async def _write_all(self, queued: list[Work], taken: list[Work]) -> bool:
        try:
            await self.call(self._transaction, partial(_apply, [*queued, *taken]))
        except Exception as e:
            if isinstance(e, sqlite3.Error):
                self.note_failure(e)
            else:  # a bug: keep the writer alive, keep the data
                log.exception("unexpected error writing to %s", self.path)
                self.errors["other"] += 1
            self._queue[:0] = queued  # keep the order of submitted changes
            for work in taken:
                if work.failed is not None:
                    work.failed()
            return False
        if self._failing:
            log.warning("writing to %s works again", self.path)
            self._failing.clear()
        for work in (*queued, *taken):
            if work.committed is not None:
                work.committed()
        return True

    # --- the store thread ----------------------------------------------------------------

    def _writer_db(self) -> sqlite3.Connection:
        if self._wdb is None:
            create_private_file(self.path)  # 0600: SQLite gives -wal and -shm the same mode
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("PRAGMA journal_size_limit = 67108864")  # trim the WAL after bursts
                migrate(db, self.path)
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

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        db = self._reader_db()
        with db:  # one read transaction: a consistent snapshot
            db.execute("BEGIN")
            return fn(db, *args, **kwargs)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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

    def _close_connections(self) -> None:
        for db in (self._wdb, self._rdb):
            if db is not None:
                db.close()
        self._wdb = self._rdb = None


def _apply(works: list[Work], db: sqlite3.Connection) -> None:
    for work in works:
        work.change(db)


def execute(sql: str, args: tuple[Any, ...]) -> Change:
    """A change running one statement."""

    def change(db: sqlite3.Connection) -> None:
        db.execute(sql, args)

    return change
