"""`SqliteReader`: synchronous, read-only access to a history file for the CLI
(`monitor outages`, `monitor report`), whether the daemon runs or not.

Imports `monitor.model` and `monitor.store.{base,schema,queries}` only: it asks the same
queries as the daemon's store, on the file alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from monitor.model import Outage, OutageQuery, OutageTime
from monitor.store.base import StoreError, TargetHistory, TargetReport
from monitor.store.queries import (
    select_history,
    select_outage_times,
    select_outages,
    select_report,
)
from monitor.store.schema import check_size, read_trouble, version_of

T = TypeVar("T")


def _ro_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


class SqliteReader:
    """Read-only queries on one history file; a context manager that closes it."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"no history at {self.path}")
        check_size(self.path)
        try:
            self._db = sqlite3.connect(
                _ro_uri(self.path), uri=True, isolation_level=None, timeout=busy_timeout
            )
            version = version_of(self._db, self.path)
        except sqlite3.Error as e:
            raise StoreError(read_trouble(self.path, e)) from e
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
            raise StoreError(read_trouble(self.path, e)) from e

    def outages(self, query: OutageQuery | None = None) -> list[Outage]:
        """The outages `query` asks for (default: the latest 1000), newest first."""
        if self._empty:
            return []
        return self._read(select_outages, query or OutageQuery())

    def outage_times(self, outages: Sequence[Outage], now: float) -> list[OutageTime]:
        """Known and unknown time of each outage as of `now` (see `Store.outage_times`)."""
        return self._read(select_outage_times, outages, now)

    def report(
        self, since: float, now: float, *, location: str | None = None
    ) -> list[TargetReport]:
        if self._empty:
            return []
        return self._read(select_report, since, now, location=location)

    def history(
        self, location: str, now: float, targets: Collection[str] | None = None
    ) -> dict[str, TargetHistory]:
        """See `Store.history`."""
        if self._empty:
            return {}
        return self._read(select_history, location, now, targets=targets)
