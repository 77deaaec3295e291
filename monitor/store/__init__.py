"""Outage history: the `Store` interface and its SQLite implementation.

Imports `monitor.model` and its own modules only. `monitor.app` makes a store with
`open_store(config.store)` and passes it in; its `outbox` feeds the notification sender.
The CLI reads with `SqliteReader` while the daemon runs or not.

The modules, one job each: `base` (the interface), `uptime` (known time), `sqlite`
(the store: outages, states, runs), `schema` (tables, migrations, file trouble), `writer`
(the store thread and batch writer), `queries` (every read; `reader` for the CLI),
`rollups`, `outbox`, `retention`, `files` (private file modes).
"""

from __future__ import annotations

from typing import Protocol

from monitor.store.base import (
    DaySummary,
    LatencyHour,
    Notification,
    Notifications,
    Outbox,
    OutboxRow,
    Retention,
    Store,
    StoreError,
    TargetHistory,
    TargetReport,
)
from monitor.store.outbox import SqliteOutbox
from monitor.store.reader import SqliteReader
from monitor.store.sqlite import SqliteStore

__all__ = [
    "DaySummary",
    "LatencyHour",
    "Notification",
    "Notifications",
    "Outbox",
    "OutboxRow",
    "Retention",
    "SqliteOutbox",
    "SqliteReader",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreSettings",
    "TargetHistory",
    "TargetReport",
    "open_store",
]


class StoreSettings(Protocol):
    """What the store needs from the configuration (`monitor.config.StoreConfig`)."""

    @property
    def path(self) -> str: ...
    @property
    def minute_retention(self) -> float | None: ...
    @property
    def hour_retention(self) -> float | None: ...
    @property
    def outage_retention(self) -> float | None: ...


def open_store(settings: StoreSettings) -> SqliteStore:
    """The store these settings describe (SQLite so far); `await store.open()` before use."""
    retention = Retention(
        minutes=settings.minute_retention,
        hours=settings.hour_retention,
        outages=settings.outage_retention,
    )
    return SqliteStore(settings.path, retention=retention)
