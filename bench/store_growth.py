"""How big the SQLite history grows: bytes per target per day, and the steady-state size.

Simulates N targets probed once a minute for a number of hours into a temporary file with
the store's own schema, one transaction per simulated hour holding a row per target and
hour (and, with per-minute rollups on, a row per target and minute), then measures each
table with SQLite's `dbstat` and runs one hourly retention pass. By default the store's
default retention (per-minute rollups off); `--minutes 14d` measures them switched on.
Uptime never reads rollups (it comes from outages and run periods), so either way it is exact.

    .venv/bin/python bench/store_growth.py [--targets 10000] [--hours 24] [--minutes 14d]

Imports `monitor.store` (the schema, upserts and retention); writes only to a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from monitor.model import Failure
from monitor.store import Retention, SqliteStore
from monitor.store.retention import prune_history
from monitor.store.schema import FAILURE_COLUMNS
from monitor.timefmt import parse_duration

DAY = 86400
START = 1_767_225_600  # 2026-01-01T00:00:00Z
LOCATION = "bench"


def simulate(path: Path, targets: int, hours: int, failure_rate: float, minutes: bool) -> float:
    """Write the rollups of `hours` hours; return the seconds it took."""
    asyncio.run(_create(path))
    db = sqlite3.connect(path, isolation_level=None)
    # Speed only, the pages are laid out the same: no journal, no fsync, a big cache.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")
    db.executemany(
        "INSERT INTO series (id, target, location) VALUES (?, ?, ?)",
        ((i, f"target-{i:05d}.example", LOCATION) for i in range(1, targets + 1)),
    )
    # One row per target and minute, made by SQLite itself (Python would be the bottleneck):
    # a failure (here always `http`) in `failure_rate` of the probes, otherwise a latency of
    # 50-1050 ms. Hour rows get the same kind of values.
    failures = ", ".join("fail" if c == Failure.HTTP else "0" for c in FAILURE_COLUMNS)
    rows = f"""SELECT id, :bucket, :probes, {failures},
            CASE WHEN fail THEN 0 ELSE :probes * ms END,
            CASE WHEN fail THEN NULL ELSE ms / 2 END,
            CASE WHEN fail THEN NULL ELSE ms * 3 END
        FROM (SELECT id, abs(random()) % 1000000 < {int(failure_rate * 1e6)} AS fail,
                     50 + abs(random()) % 1000 AS ms FROM series ORDER BY id)"""
    columns = f"series, bucket, probes, {', '.join(FAILURE_COLUMNS.values())}, "
    columns += "latency_sum_ms, latency_min_ms, latency_max_ms"
    began = time.perf_counter()
    for hour in range(hours):
        db.execute("BEGIN")
        for minute in range(60 if minutes else 0):
            bucket = START + hour * 3600 + minute * 60
            db.execute(f"INSERT INTO rollup_minute ({columns}) {rows}", (bucket, 1))
        # The store upserts hour rows at every flush; their final values land in the same
        # places, so writing them once an hour gives the same file.
        db.execute(f"INSERT INTO rollup_hour ({columns}) {rows}", (START + hour * 3600, 60))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - began
    db.close()
    return elapsed


async def _create(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.close()


def table_bytes(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Bytes of the pages of each table with its indexes, and how many of them are unused."""
    sizes: dict[str, tuple[int, int]] = {}
    for name, table, size, unused in db.execute(
        "SELECT name, (SELECT tbl_name FROM sqlite_schema s WHERE s.name = d.name), "
        "sum(pgsize), sum(unused) FROM dbstat d GROUP BY name"
    ):
        old_size, old_unused = sizes.get(table or name, (0, 0))
        sizes[table or name] = (old_size + size, old_unused + unused)
    return sizes


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=24, help="simulated hours (24 = one day)")
    parser.add_argument("--failure-rate", type=float, default=0.01)
    parser.add_argument("--minutes", type=parse_duration, default=Retention().minutes,
                        help="store.retention.minutes (default: the store's, 0 = off)")
    args = parser.parse_args()
    retention = Retention(minutes=args.minutes)
    assert retention.minutes is not None and retention.hours is not None
    days = args.hours / 24

    with tempfile.TemporaryDirectory(prefix="store-growth-") as tmp:
        path = Path(tmp) / "history.db"
        elapsed = simulate(path, args.targets, args.hours, args.failure_rate,
                           retention.minutes > 0)
        db = sqlite3.connect(path, isolation_level=None)
        sizes = table_bytes(db)
        minute = sizes["rollup_minute"][0] / args.targets / days
        hour = sizes["rollup_hour"][0] / args.targets / days
        rows = db.execute("SELECT count(*) FROM rollup_minute").fetchone()[0]
        hour_rows = db.execute("SELECT count(*) FROM rollup_hour").fetchone()[0]

        # One hourly retention pass once the oldest data is due: deletes one hour of minutes.
        now = START + retention.minutes + 3600
        began = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        prune_history(db, retention, now)
        db.execute("COMMIT")
        prune_seconds = time.perf_counter() - began
        left = db.execute("SELECT count(*) FROM rollup_minute").fetchone()[0]
        db.close()

    minute_total = minute * retention.minutes / DAY * args.targets
    hour_total = hour * retention.hours / DAY * args.targets
    print(f"simulated {args.targets:,} targets x {args.hours} h at one probe a minute")
    print(f"  wrote {rows:,} minute rows and {hour_rows:,} hour rows in {elapsed:.1f} s")
    for table, per_day in (("minute", minute), ("hour", hour)):
        size, unused = sizes[f"rollup_{table}"]
        if table == "minute" and not rows:
            print("  minute rollups: off (store.retention.minutes: 0)")
            continue
        print(
            f"  {table} rollups: {per_day:,.0f} bytes per target per day"
            f" ({per_day / (24 if table == 'hour' else 1440):.1f} per row,"
            f" pages {1 - unused / size:.0%} full)"
        )
    print(f"  series table: {human(sizes['series'][0])}")
    print(f"  hourly retention pass: deleted {rows - left:,} minute rows in {prune_seconds:.2f} s")
    print(f"growth: {minute + hour:,.0f} bytes per target per day of rollups")
    print(
        f"steady state with this retention "
        f"({retention.minutes / DAY:.0f} d of minutes, {retention.hours / DAY:.0f} d of hours):"
    )
    print(f"  minutes {human(minute_total)} + hours {human(hour_total)}", end="")
    print(f" = {human(minute_total + hour_total)} for {args.targets:,} targets", end="")
    print(f" ({human((minute_total + hour_total) / args.targets)} per target)")


if __name__ == "__main__":
    main()
