"""SQLite store: the embedded default history (one file, WAL, one writer).

Imports `monitor.model` and `monitor.store.*` only. This module keeps what the store knows
of outages, target states and run periods, and composes the parts that do the rest:

- `schema`: the tables, their migrations, and what is wrong with a file;
- `writer`: the store thread and the batch writer (queue, retries, error accounting);
- `queries`: every read, shared with the CLI's `SqliteReader` (`reader`);
- `rollups`: probe results counted per minute and hour;
- `outbox`: notifications waiting to be delivered;
- `retention`: deleting old history in bounded steps.

Writes never raise: outage changes are queued to the writer and kept in memory, so a
caller gets the final outage (ids are assigned here, one writer per file) even while the
database is failing, and the writer retries. `apply_transition`, `start_run`, `end_run`
and `enqueue` wait for one write attempt.

Reads are consistent with writes: every read answers as if everything applied before it
had been written (see `queries`): the file's snapshot with the store's unwritten changes
laid over it. `open_outages` and `target_states` answer from memory, which is the same.

An open outage's probe counts follow `record_result` in memory (`_live`); the next batch
updates its row, so they stay current without a transaction per probe.

Every batch also records the current run's heartbeat (`runs.last_seen_at`, from the clock
passed in): after a crash the run ends there, and the time until the next start is unknown.

At open, a damaged or truncated file raises StoreError with a one-line message that names
the file and the fix; `check_writable` does the same for a file that cannot be written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from monitor.model import Failure, Outage, OutageQuery, OutageTime, ProbeResult, State, Transition
from monitor.store.base import (
    Notification,
    Notifications,
    Retention,
    StoreError,
    TargetHistory,
    TargetReport,
)
from monitor.store.files import make_private_dirs
from monitor.store.outbox import SqliteOutbox
from monitor.store.queries import (
    Loaded,
    RunPeriod,
    Unwritten,
    load,
    select_history,
    select_outage_times,
    select_outages,
    select_report,
    select_uptime_inputs,
    uptime_ratios,
)
from monitor.store.retention import PRUNE_BATCH, PruneCursor, prune_step
from monitor.store.rollups import Rollups
from monitor.store.schema import trouble
from monitor.store.writer import Work, Writer, execute

log = logging.getLogger("monitor.store")

T = TypeVar("T")
UPTIME_SLICE = 2000  # targets whose uptime is computed between two turns of the event loop

OutageKey = tuple[str, str]  # location, target


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
        self._clock = clock  # for heartbeats, the end of the run at close, the outbox
        self._writer = Writer(self.path, flush_interval=flush_interval, busy_timeout=busy_timeout)
        minutes = self.retention.minutes
        self._rollups = Rollups(max_pending, minutes=minutes is None or minutes > 0)
        self.outbox = SqliteOutbox(self._writer, clock)

        # Owned by the event loop.
        self._open_outages: dict[OutageKey, Outage] = {}
        # Failures of open outages since they were confirmed or loaded (see `_current`),
        # and the outages whose counts changed since the last write.
        self._live: dict[OutageKey, Counter[str]] = {}
        self._dirty: set[OutageKey] = set()
        self._closed: dict[int, Outage] = {}  # closed, the close not written yet
        # By the state's value: tuples of strings and floats are out of the GC's sight.
        self._states: dict[OutageKey, tuple[str, float | None]] = {}
        self._known_since: dict[tuple[str, str], float] = {}  # (target, location)
        self._next_outage_id = 1
        self._next_run_id = 1
        self._run: tuple[int, str, float] | None = None  # id, location, started_at
        self._ended: dict[int, RunPeriod] = {}  # runs whose end is not written yet

    @property
    def errors(self) -> dict[str, int]:
        """Failed write attempts by kind (locked, readonly, full, io, ...)."""
        return self._writer.errors

    @property
    def dropped(self) -> int:
        """Rollup buckets discarded because writes failed for too long."""
        return self._rollups.dropped

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
        await self._writer.open()
        try:
            # Never written (a read-only directory, for example): nothing to load.
            exists = await self._writer.call(self.path.exists)
            loaded = await self._writer.read(load, self.path) if exists else Loaded()
        except (sqlite3.Error, StoreError) as e:
            await self._writer.shutdown()
            if isinstance(e, StoreError):
                raise
            raise StoreError(trouble(self.path, e, "read")) from e
        self._open_outages = {(o.location, o.target): o for o in loaded.outages}
        self._states = loaded.states
        self._known_since = loaded.known_since
        self._next_outage_id, self._next_run_id = loaded.next_outage, loaded.next_run
        self.outbox.load(loaded.outbox, loaded.outbox_keys, loaded.next_outbox)
        for source in (self._take_counts, self._rollups.take, self._heartbeat):
            self._writer.add_source(source)
        self._writer.start()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def check_writable(self) -> None:
        """Raise StoreError, naming the file and the fix, unless a write can commit now."""
        try:
            await self._writer.transaction(_write_probe)
        except sqlite3.Error as e:
            raise StoreError(trouble(self.path, e, "write")) from e

    async def close(self) -> None:
        """End the current run, write what is pending (one last try) and let go of the file.

        Safe in any state: before `open`, after a failed one, or a second time."""
        if not self._writer.running:
            return
        if self._run is not None:
            await self.end_run(self._clock())
        changes = await self._writer.stop()
        if changes or self._rollups.pending():
            log.error(
                "closing %s with %d changes (outages, outbox) and %d rollup buckets not written",
                self.path,
                changes,
                self._rollups.pending(),
            )
        await self._writer.shutdown()

    # --- writing -------------------------------------------------------------------------

    def record_result(self, location: str, result: ProbeResult) -> None:
        self._rollups.add(location, result)
        if not result.ok and not result.unknown:
            # An open outage's counts stay current; written with the next batch.
            outage = (location, result.target)
            if outage in self._open_outages:
                live = self._live.setdefault(outage, Counter())
                live[(result.failure or Failure.ERROR).value] += 1
                self._dirty.add(outage)

    def _current(self, key: OutageKey) -> Outage:
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
        return await self._writer.flush()

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
        rows = []
        if outage is not None and notifications is not None:
            rows = self.outbox.prepare(notifications(outage), outage.id)

        # Nothing has changed so far; from here on nothing can fail. Everything below is
        # submitted before the next await: one batch, one transaction.
        if opened:
            assert outage is not None
            self._next_outage_id += 1
            self._open_outages[key] = outage
            self._writer.submit(Work(partial(_insert_outage, outage)))
        elif outage is not None and outage.ended_at is not None:
            del self._open_outages[key]
            self._live.pop(key, None)
            self._dirty.discard(key)
            self._closed[outage.id] = outage
            self._writer.submit(Work(
                partial(_close_outage, outage),
                committed=partial(self._closed.pop, outage.id, None),
            ))
        elif outage is not None:  # a repeated down: the live count becomes the base
            self._open_outages[key] = outage
            self._live.pop(key, None)
        self._states[key] = (transition.state.value, transition.at)
        self._known_since.setdefault((transition.target, location), transition.at)
        self._writer.submit(Work(
            partial(_save_state, location, transition.target, transition.state, transition.at)
        ))
        if rows:
            self._writer.submit(self.outbox.add(rows))
        await self._writer.flush()
        return outage

    async def enqueue(self, notifications: Iterable[Notification]) -> int:
        """Add notifications to the outbox in one transaction; returns how many were new.

        Waits for one write attempt; the entries are due at once whether or not it worked.
        """
        return await self.outbox.enqueue(notifications)

    async def start_run(self, location: str, now: float) -> int:
        if self._run is not None:
            raise RuntimeError(f"run {self._run[0]} is still active")
        run_id = self._next_run_id
        self._next_run_id += 1
        self._run = (run_id, location, now)
        self._writer.submit(Work(execute(
            "INSERT INTO runs (id, location, started_at, last_seen_at) VALUES (?, ?, ?, ?)",
            (run_id, location, now, now),
        )))
        await self._writer.flush()
        return run_id

    async def end_run(self, now: float) -> None:
        if self._run is None:
            return
        run_id, location, started = self._run
        self._run = None
        self._ended[run_id] = RunPeriod(location, started, now)
        self._writer.submit(Work(
            execute("UPDATE runs SET ended_at = ?, last_seen_at = ? WHERE id = ?",
                    (now, now, run_id)),
            committed=partial(self._ended.pop, run_id, None),
        ))
        await self._writer.flush()

    async def prune(self, now: float) -> int:
        """Delete what the retention no longer keeps; returns the rows deleted.

        At most `prune_batch` rows per transaction, each its own call to the store thread,
        so the writer's batches go in between and probing never waits for a long delete.
        Raises StoreError if a delete fails (counted and logged like any write error)."""
        cursor = PruneCursor()
        deleted = 0
        while not cursor.done:
            try:
                deleted += await self._writer.transaction(partial(self._prune_step, now, cursor))
            except sqlite3.Error as e:
                self._writer.note_failure(e)
                raise StoreError(f"cannot delete old history from {self.path}: {e}") from e
        return deleted

    def _prune_step(self, now: float, cursor: PruneCursor, db: sqlite3.Connection) -> int:
        """In the store thread, between batches."""
        deleted = prune_step(
            db, retention=self.retention, now=now, cursor=cursor, budget=self.prune_batch
        )
        if cursor.series_deleted:
            self._rollups.series_ids.clear()  # look them up again: some are gone
        return deleted

    # --- the writer's sources (asked at the start of every batch) ------------------------

    def _take_counts(self) -> Work | None:
        dirty, self._dirty = self._dirty, set()
        counts = [self._current(key) for key in dirty if key in self._open_outages]
        if not counts:
            return None
        return Work(partial(_update_counts, counts), failed=lambda: self._dirty.update(dirty))

    def _heartbeat(self) -> Work | None:
        if self._run is None:
            return None
        return Work(execute(
            "UPDATE runs SET last_seen_at = ? WHERE id = ? AND ended_at IS NULL",
            (self._clock(), self._run[0]),
        ))

    # --- reading -------------------------------------------------------------------------

    def _unwritten(self) -> Unwritten:
        """What reads lay over the file (see `queries`): a snapshot of memory, taken on
        the event loop before the read goes to the store thread."""
        outages = dict(self._closed)
        outages.update((o.id, o) for o in map(self._current, self._open_outages))
        runs = dict(self._ended)
        if self._run is not None:
            runs[self._run[0]] = RunPeriod(self._run[1], self._run[2], None)
        return Unwritten(
            outages=outages,
            runs=runs,
            known_since=dict(self._known_since),
            series=self._rollups.pending_series(),
        )

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await self._writer.read(fn, *args, unwritten=self._unwritten(), **kwargs)
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e

    async def open_outages(self, location: str) -> list[Outage]:
        return [self._current(key) for key in self._open_outages if key[0] == location]

    async def target_states(self, location: str) -> dict[str, tuple[State, float | None]]:
        return {t: (State(state), since) for (loc, t), (state, since) in self._states.items()
                if loc == location}

    async def outages(self, query: OutageQuery | None = None) -> list[Outage]:
        """The outages `query` asks for (default: the latest 1000), newest first."""
        return await self._read(select_outages, query or OutageQuery())

    async def outage_times(self, outages: Sequence[Outage], now: float) -> list[OutageTime]:
        if not outages:
            return []
        return await self._read(select_outage_times, outages, now)

    async def uptime(self, location: str, target: str, since: float, now: float) -> float | None:
        reports = await self._read(select_report, since, now, location=location, target=target)
        return reports[0].uptime if reports else None

    async def report(
        self, since: float, now: float, location: str | None = None
    ) -> list[TargetReport]:
        return await self._read(select_report, since, now, location=location)

    async def uptimes(
        self, location: str, windows: Mapping[str, float], now: float
    ) -> dict[str, dict[str, float | None]]:
        """The rows are read in the store thread; the arithmetic runs here, a slice of
        targets at a time between turns of the event loop. Python work in the store thread
        would hold the GIL for seconds at 100,000 targets, and the event loop, which
        releases it at every system call, would get it back only every 5 ms meanwhile."""
        since = min(windows.values(), default=now)
        found = await self._read(select_uptime_inputs, since, now, location=location)
        out: dict[str, dict[str, float | None]] = {window: {} for window in windows}
        keys = sorted(found.keys)
        for i in range(0, len(keys), UPTIME_SLICE):
            for window, ratios in uptime_ratios(
                    found, location, windows, now, keys[i : i + UPTIME_SLICE]).items():
                out[window].update(ratios)
            await asyncio.sleep(0)
        return out

    async def history(
        self, location: str, now: float, targets: Collection[str] | None = None
    ) -> dict[str, TargetHistory]:
        return await self._read(select_history, location, now, targets=targets)


# --- the changes this module queues (run in the store thread, inside a batch) ------------


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


def _write_probe(db: sqlite3.Connection) -> None:
    """A write that changes nothing once committed, but needs the file to be writable."""
    db.execute("INSERT INTO runs (id, location, started_at, last_seen_at) VALUES (0, '', 0, 0)")
    db.execute("DELETE FROM runs WHERE id = 0")
