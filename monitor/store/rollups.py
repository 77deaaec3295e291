"""Rollups: probe results counted per target, location and hour (and minute, if per-minute
rollups are on), written per hour (and per minute).

Imports `monitor.model` and `monitor.store.{schema,writer}` only. Results are counted in
memory (`Rollups.add`, on the event loop) and handed to the writer with every batch
(`Rollups.take`, a writer source); the upserts add them to what the file already has.

While writing fails, the buckets of a failed batch come back (merged with newer counts of
the same minute) and wait for the next one, up to `max_pending` buckets: beyond that the
oldest are dropped and counted in `dropped`.
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass, field

from monitor.model import Failure, ProbeResult
from monitor.store.schema import (
    FAILURE_COLUMNS,
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    ROLLUP_TABLES,
)
from monitor.store.writer import Work

log = logging.getLogger("monitor.store")

BucketKey = tuple[str, str, int]  # location, target, minute (or hour) start
SeriesKey = tuple[str, str]  # target, location: a `series` row


@dataclass(slots=True)
class Bucket:
    """Probe results of one target, location and minute, aggregated in memory."""

    probes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    latency_sum_ms: int = 0
    latency_min_ms: int | None = None
    latency_max_ms: int | None = None
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_COLUMNS))

    def add(self, result: ProbeResult) -> None:
        self.probes += 1
        if not result.ok:
            self.failures[(result.failure or Failure.ERROR).value] += 1
            return
        ms = round(result.duration * 1000)
        self.latency_sum_ms += ms
        self.latency_min_ms = ms if self.latency_min_ms is None else min(self.latency_min_ms, ms)
        self.latency_max_ms = ms if self.latency_max_ms is None else max(self.latency_max_ms, ms)
        self.latency_counts[bisect.bisect_left(LATENCY_BOUNDS_MS, ms)] += 1

    def merge(self, other: Bucket) -> None:
        self.probes += other.probes
        self.failures.update(other.failures)
        self.latency_sum_ms += other.latency_sum_ms
        lows = [v for v in (self.latency_min_ms, other.latency_min_ms) if v is not None]
        highs = [v for v in (self.latency_max_ms, other.latency_max_ms) if v is not None]
        self.latency_min_ms = min(lows) if lows else None
        self.latency_max_ms = max(highs) if highs else None
        for i, count in enumerate(other.latency_counts):
            self.latency_counts[i] += count

    def row(self, series: int, bucket: int, histogram: bool) -> tuple[int | None, ...]:
        failures = (self.failures.get(cls, 0) for cls in FAILURE_COLUMNS)
        counts = self.latency_counts if histogram else ()
        return (
            series,
            bucket,
            self.probes,
            *failures,
            self.latency_sum_ms,
            self.latency_min_ms,
            self.latency_max_ms,
            *counts,
        )


_FAIL_COLS = ", ".join(FAILURE_COLUMNS.values())
_FAIL_SUMS = ", ".join(f"{c} = {c} + excluded.{c}" for c in FAILURE_COLUMNS.values())
HISTOGRAM_TABLES = ("rollup_hour",)  # the tables with the latency histogram


def upsert_sql(table: str) -> str:
    histogram = LATENCY_COLUMNS if table in HISTOGRAM_TABLES else ()
    lat_cols = "".join(f", {c}" for c in histogram)
    lat_sums = "".join(f",\n            {c} = {c} + excluded.{c}" for c in histogram)
    # min()/max() with several arguments return NULL if any is NULL: coalesce both ways.
    return f"""INSERT INTO {table} (series, bucket, probes, {_FAIL_COLS},
            latency_sum_ms, latency_min_ms, latency_max_ms{lat_cols})
        VALUES ({", ".join("?" * (6 + len(FAILURE_COLUMNS) + len(histogram)))})
        ON CONFLICT (series, bucket) DO UPDATE SET
            probes = probes + excluded.probes, {_FAIL_SUMS},
            latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms,
            latency_min_ms = min(coalesce(latency_min_ms, excluded.latency_min_ms),
                                 coalesce(excluded.latency_min_ms, latency_min_ms)),
            latency_max_ms = max(coalesce(latency_max_ms, excluded.latency_max_ms),
                                 coalesce(excluded.latency_max_ms, latency_max_ms)){lat_sums}"""


UPSERT = {table: upsert_sql(table) for table in ROLLUP_TABLES}


class Rollups:
    """Pending rollup buckets (event loop) and the series ids known to be written (store
    thread: filled inside a batch, emptied when a batch fails or retention deletes series).
    """

    def __init__(self, max_pending: int, *, minutes: bool = False) -> None:
        self.max_pending = max_pending  # buckets kept in memory while writes fail
        self.minutes = minutes  # per-minute rollups are written (else buckets are hours)
        self._width = 60 if minutes else 3600
        self.dropped = 0  # buckets discarded because writes failed for too long
        self._buckets: dict[BucketKey, Bucket] = {}
        self._dropping = False  # logged since the last good write
        self.series_ids: dict[SeriesKey, int] = {}

    def add(self, location: str, result: ProbeResult) -> None:
        key = (location, result.target, int(result.started_at // self._width) * self._width)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(1)
            bucket = self._buckets[key] = Bucket()
        bucket.add(result)

    def pending(self) -> int:
        """Buckets not written yet."""
        return len(self._buckets)

    def pending_series(self) -> set[SeriesKey]:
        """(target, location) of the buckets not written yet."""
        return {(target, location) for location, target, _ in self._buckets}

    def take(self) -> Work | None:
        """The writer source: everything pending, given back if the batch fails."""
        if not self._buckets:
            return None
        taken, self._buckets = self._buckets, {}

        minutes = self.minutes

        def write(db: sqlite3.Connection) -> None:
            write_rollups(db, taken, self.series_ids, minutes=minutes)

        return Work(write, committed=self._written, failed=lambda: self._restore(taken))

    def _written(self) -> None:
        self._dropping = False

    def _restore(self, failed: dict[BucketKey, Bucket]) -> None:
        """Put back the buckets of a failed write, older ones first, within `max_pending`."""
        self.series_ids.clear()  # ids inserted by the rolled-back batch are gone
        for key, bucket in self._buckets.items():
            if key in failed:
                failed[key].merge(bucket)
            else:
                failed[key] = bucket
        self._buckets = failed
        self._make_room(0)

    def _make_room(self, wanted: int) -> None:
        excess = len(self._buckets) + wanted - self.max_pending
        if excess <= 0:
            return
        for key in list(self._buckets)[:excess]:  # insertion order: the oldest first
            del self._buckets[key]
        self.dropped += excess
        if not self._dropping:
            self._dropping = True
            log.error(
                "more than %d rollup buckets waiting to be written: dropping the oldest",
                self.max_pending,
            )


def write_rollups(
    db: sqlite3.Connection,
    buckets: dict[BucketKey, Bucket],
    series_ids: dict[SeriesKey, int],
    *,
    minutes: bool = True,
) -> None:
    """Upsert minute buckets and the hours they add up to, or (minutes=False) hour buckets
    only, inside the caller's transaction.

    New series ids go into `series_ids` at once: the owner empties it if the transaction
    does not commit.
    """
    tables: tuple[tuple[str, dict[BucketKey, Bucket]], ...]
    if minutes:
        hours: dict[BucketKey, Bucket] = {}
        for (location, target, minute), bucket in buckets.items():
            hours.setdefault((location, target, minute - minute % 3600), Bucket()).merge(bucket)
        tables = (("rollup_minute", buckets), ("rollup_hour", hours))
    else:
        hours, tables = buckets, (("rollup_hour", buckets),)
    ids = {(loc, t): _series_id(db, t, loc, series_ids) for loc, t, _ in hours}
    for table, buckets in tables:
        histogram = table in HISTOGRAM_TABLES
        rows = [bucket.row(ids[key[:2]], key[2], histogram) for key, bucket in buckets.items()]
        db.executemany(UPSERT[table], rows)


def _series_id(
    db: sqlite3.Connection, target: str, location: str, known: dict[SeriesKey, int]
) -> int:
    key = (target, location)
    found = known.get(key)
    if found is None:
        db.execute("INSERT OR IGNORE INTO series (target, location) VALUES (?, ?)", key)
        (found,) = db.execute(
            "SELECT id FROM series WHERE target = ? AND location = ?", key
        ).fetchone()
        known[key] = found
    return found
