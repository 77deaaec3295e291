"""The outbox: notifications waiting to be delivered, kept in memory and in the file.

Imports `monitor.store.{base,writer}` only; it talks to the file only through the
writer's public interface (`Writer.submit` and `Writer.flush`).

Every pending entry is in memory (loaded at open) and `due()` is served from there, while
inserts and state changes go through the writer's queue like outage changes. So an entry
enqueued with a transition is written in that transition's transaction; an entry marked
delivered is never handed out again, even before that is written; entries enqueued while
the database fails are delivered anyway and written once it recovers; and a restart
delivers exactly what was not marked delivered or given up by a successful write.

Keys known to memory (pending entries, entries of open outages, everything enqueued in
this run) are skipped at once; UNIQUE (notifier, key) keeps the table to one row per key in
any case, and an insert it ignores is dropped from memory after the write.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from typing import Any

from monitor.store.base import Notification, OutboxRow
from monitor.store.writer import Work, Writer, execute

log = logging.getLogger("monitor.store")

NewRows = list[tuple[OutboxRow, str]]  # entries with their JSON payloads


class SqliteOutbox:
    """The `Outbox` the sender takes entries from (`store.outbox`), and the entries the
    store enqueues with its outage changes (`prepare`, then `add`).

    Reads are served from memory, which every call updates before it awaits anything; the
    writes follow through the writer's queue, in order, and each call below waits for one
    write attempt so that a delivery is on disk before the sender moves on. Never raises
    on store errors (the writes stay queued).
    """

    def __init__(self, writer: Writer, clock: Callable[[], float]) -> None:
        self._writer = writer
        self._clock = clock
        self._rows: dict[int, OutboxRow] = {}  # pending entries by id, oldest first
        self._keys: set[tuple[str, str]] = set()  # (notifier, key) that enqueue skips
        self._next_id = 1

    def load(self, pending: Iterable[OutboxRow], keys: Iterable[tuple[str, str]],
             next_id: int) -> None:
        """Resume from what `open` read back: pending rows by id, the keys of pending
        entries and of open outages, and the next free id."""
        self._rows = {row.id: row for row in pending}
        self._keys = set(keys)
        self._next_id = next_id

    # --- enqueuing -----------------------------------------------------------------------

    def prepare(self, notifications: Iterable[Notification], outage_id: int | None) -> NewRows:
        """Rows (with their JSON payloads) for the notifications whose keys are new.

        Changes nothing, so a caller can still back out; raises if a payload is not JSON.
        """
        rows: NewRows = []
        seen: set[tuple[str, str]] = set()
        now = self._clock()
        for n in notifications:
            ident = (n.notifier, n.key)
            if ident in self._keys or ident in seen:
                continue
            seen.add(ident)
            # Serialised here, not in the writer: a bad payload must fail its caller, and
            # memory must hold what a restart would read back.
            payload = json.dumps(dict(n.payload), sort_keys=True, allow_nan=False)
            row = OutboxRow(
                id=self._next_id + len(rows),
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

    def add(self, rows: NewRows) -> Work:
        """Make the rows pending in memory; returns the work that writes them (for the
        caller to submit, alone or with the change they belong to)."""
        for row, _ in rows:
            self._rows[row.id] = row
            self._keys.add((row.notifier, row.key))
        if rows:
            self._next_id = rows[-1][0].id + 1
        ignored: list[int] = []  # filled by the store thread during the batch

        def insert(db: sqlite3.Connection) -> None:
            ignored.clear()  # a failed attempt's findings were rolled back with it
            for row, payload in rows:
                cursor = db.execute(
                    """INSERT OR IGNORE INTO outbox (id, key, notifier, outage_id, payload,
                        created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (row.id, row.key, row.notifier, row.outage_id, payload, row.created_at,
                     row.next_attempt_at),
                )
                if cursor.rowcount == 0:
                    ignored.append(row.id)

        return Work(insert, committed=lambda: self._drop_ignored(ignored))

    async def enqueue(self, notifications: Iterable[Notification]) -> int:
        """Add notifications in one transaction; returns how many were new. Waits for one
        write attempt; the entries are due at once whether or not it worked."""
        rows = self.prepare(notifications, None)
        if rows:
            self._writer.submit(self.add(rows))
            await self._writer.flush()
        return len(rows)

    def _drop_ignored(self, ignored: list[int]) -> None:
        """Forget entries whose key the table already had (settled in an earlier run)."""
        for entry_id in ignored:
            row = self._rows.pop(entry_id, None)
            if row is not None:
                log.warning(
                    "notification %s for %s was already in the outbox: not sent again",
                    row.key,
                    row.notifier,
                )

    # --- the Outbox interface ------------------------------------------------------------

    async def due(self, now: float, limit: int, exclude: Collection[int] = ()) -> list[OutboxRow]:
        found: list[OutboxRow] = []
        seen: set[tuple[str, int]] = set()  # (notifier, outage) with an older pending entry
        for row in self._rows.values():  # insertion order: by id
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
        row = self._rows.get(entry_id)
        if row is None:
            return
        self._rows[entry_id] = replace(
            row, attempts=row.attempts + 1, next_attempt_at=next_attempt_at
        )
        self._writer.submit(Work(execute(
            """UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,
                last_error = ? WHERE id = ?""",
            (next_attempt_at, error, entry_id),
        )))
        await self._writer.flush()

    async def give_up(self, entry_id: int, error: str) -> None:
        await self._settle(
            entry_id,
            "UPDATE outbox SET given_up_at = ?, last_error = ? WHERE id = ?",
            self._clock(),
            error,
        )

    def pending(self) -> int:
        return len(self._rows)

    async def _settle(self, entry_id: int, sql: str, *args: Any) -> None:
        if self._rows.pop(entry_id, None) is None:
            return  # already settled (or never known): nothing to change
        self._writer.submit(Work(execute(sql, (*args, entry_id))))
        await self._writer.flush()
