"""Retention: deleting the history the settings no longer keep, in bounded steps.

Imports `monitor.store.base` only. Each `prune_step` runs inside the caller's write
transaction and deletes at most `budget` rows, so the store runs one step per transaction
and the writer's batches go in between; `prune_history` runs a whole pass at once (tools).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from monitor.store.base import Retention

PRUNE_BATCH = 2000  # rows per retention transaction: a few milliseconds of writer time
PRUNE_SERIES = 500  # series visited per retention transaction, whatever it deletes


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


# One stage of a pass: (db, retention, now, cursor, budget) -> rows deleted.
Stage = Callable[[sqlite3.Connection, Retention, float, PruneCursor, int], int]


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


def _prune_rollups(table: str, keep: str) -> Stage:
    """The stage deleting rows of `table` older than the retention's field `keep`."""

    def step(
        db: sqlite3.Connection,
        retention: Retention,
        now: float,
        cursor: PruneCursor,
        budget: int,
    ) -> int:
        seconds: float | None = getattr(retention, keep)
        if seconds is None or (
            cursor.series == 0 and db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
        ):  # kept forever, or an empty table (per-minute rollups off): no series to visit
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


def _delete_batch(db: sqlite3.Connection, cursor: PruneCursor, budget: int, sql: str,
                  args: tuple[object, ...]) -> int:
    """Run one bounded DELETE; a stage is done once a batch comes back short."""
    deleted: int = db.execute(sql, args).rowcount
    if deleted < budget:
        cursor.next_stage()
    return deleted


def _prune_outages(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Closed outages older than the retention; open ones are always kept."""
    if retention.outages is None:
        cursor.next_stage()
        return 0
    cutoff = now - retention.outages
    return _delete_batch(
        db, cursor, budget,
        """DELETE FROM outages WHERE id IN (SELECT id FROM outages
            WHERE started_at < ? AND ended_at < ? LIMIT ?)""",
        (cutoff, cutoff, budget),
    )


def _prune_outbox(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Settled entries, kept as long as outages are; those of open outages stay (their keys
    stop a repeated down from being sent again)."""
    if retention.outages is None:
        cursor.next_stage()
        return 0
    return _delete_batch(
        db, cursor, budget,
        """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
            WHERE (delivered_at IS NOT NULL OR given_up_at IS NOT NULL) AND created_at < ?
            AND (outage_id IS NULL
                 OR outage_id NOT IN (SELECT id FROM outages WHERE ended_at IS NULL))
            LIMIT ?)""",
        (now - retention.outages, budget),
    )


def _prune_series(
    db: sqlite3.Connection, retention: Retention, now: float, cursor: PruneCursor, budget: int
) -> int:
    """Series left without rollups (a target that is gone); one probe brings it back."""
    deleted = _delete_batch(
        db, cursor, budget,
        """DELETE FROM series WHERE id IN (SELECT id FROM series WHERE
            NOT EXISTS (SELECT 1 FROM rollup_minute WHERE series = series.id)
            AND NOT EXISTS (SELECT 1 FROM rollup_hour WHERE series = series.id) LIMIT ?)""",
        (budget,),
    )
    cursor.series_deleted = deleted > 0
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


_PRUNE_STAGES: tuple[Stage, ...] = (
    _prune_rollups("rollup_minute", "minutes"),
    _prune_rollups("rollup_hour", "hours"),
    _prune_outages,
    _prune_outbox,
    _prune_series,
    _prune_runs,
)
