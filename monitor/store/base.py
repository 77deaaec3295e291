"""The store interface: what the rest of the monitor may ask of an outage history.

Imports only `monitor.model`. A backend (SQLite now, PostgreSQL later) implements `Store`;
`monitor.store.uptime` holds the arithmetic every backend computes uptime with.

Reads are consistent with writes: a read answers as if every change the store accepted
before it (`apply_transition`, `record_result`, runs) had been written, whether or not the
writes have reached the disk yet.

The outbox: notifications waiting to be delivered, written in the same transaction as the
outage change they announce. The store keeps their payloads as JSON objects and knows
nothing about messages or channels; `monitor.app` converts (`Message.to_dict`/`from_dict`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from monitor.model import Outage, OutageQuery, OutageTime, ProbeResult, State, Transition

DAY = 86400.0


class StoreError(Exception):
    """A read from the store failed (writes never raise: they are queued and retried)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each level of history is kept, in seconds (None = forever).

    Per-minute rollups are off by default (minutes = 0: not written, old ones pruned): 1,440
    rows per target and day are most of a history's size, and uptime does not need them
    (it comes from outages and run periods). Hourly rollups are always written.
    """

    minutes: float | None = 0.0
    hours: float | None = 400 * DAY
    outages: float | None = None  # closed outages; open ones are always kept


@dataclass(frozen=True, slots=True)
class TargetReport:
    """Availability of one target from one location over a window (known time only)."""

    target: str
    location: str
    uptime: float | None  # None when no time in the window was known
    known_seconds: float
    downtime_seconds: float
    outages: int  # outages overlapping the window (maintenance excluded)
    longest_seconds: float  # longest downtime of one outage within the window
    mttr_seconds: float | None  # mean downtime of the outages that ended; None if none did


@dataclass(frozen=True, slots=True)
class Notification:
    """A message to put in the outbox for one notifier.

    `key` is the idempotency key (outage id + kind): one row per (notifier, key), ever, so
    enqueuing it again is a no-op. `payload` must be a JSON object. `outage_id` orders the
    messages of one outage (see `Outbox.due`); `apply_transition` fills it in.
    """

    notifier: str
    key: str
    payload: Mapping[str, Any]
    outage_id: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A pending outbox entry as `Outbox.due` returns it (treat `payload` as read-only)."""

    id: int  # increases with insertion order
    notifier: str
    key: str
    outage_id: int | None
    payload: Mapping[str, Any]
    attempts: int  # delivery attempts made so far
    next_attempt_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class DaySummary:
    """One UTC day of a target's history (known time only; the last day ends at `now`)."""

    start: float  # POSIX time the day starts (00:00 UTC)
    known_seconds: float
    downtime_seconds: float  # maintenance excluded


@dataclass(frozen=True, slots=True)
class LatencyHour:
    """Latency of successful probes in one hour: the median and 95th percentile, from the
    hourly rollup's latency histogram (interpolated within a bucket, kept within the
    hour's fastest and slowest probe)."""

    start: float
    p50_ms: float | None  # None: no successful probe in the hour
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class TargetHistory:
    """What the status page shows of one target's past, from one location."""

    target: str
    days: tuple[DaySummary, ...]  # oldest first; the last one is today
    outages: tuple[Outage, ...]  # overlapping the days, newest first
    uptime: Mapping[str, float | None]  # window name (HISTORY_WINDOWS) -> ratio
    latency: tuple[LatencyHour, ...]  # the last 24 hours, oldest first
    # When the last 24 hours were known (the monitor ran, after the first confirmation,
    # outside maintenance): (start, end) pairs, oldest first. The rest is unknown, not up.
    known_day: tuple[tuple[float, float], ...] = ()


HISTORY_DAYS = 90
HISTORY_WINDOWS: Mapping[str, float] = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY,
                                         "90d": 90 * DAY}


# Builds the notifications of an outage once the store has given it its id.
Notifications = Callable[[Outage], Iterable[Notification]]


class Outbox(Protocol):
    """The persisted queue of notifications, as the sender (through the app) uses it."""

    async def due(self, now: float, limit: int, exclude: Collection[int] = ()) -> list[OutboxRow]:
        """Pending entries (neither delivered nor given up) whose next attempt time has
        come and whose id is not in `exclude`, by id, at most `limit`. An entry is held back
        while an older pending entry exists for the same notifier and outage, so an "up"
        never overtakes its "down", across restarts too."""

    async def delivered(self, entry_id: int, now: float) -> None: ...

    async def retry(self, entry_id: int, next_attempt_at: float, error: str) -> None:
        """Count one more attempt and wait until `next_attempt_at`."""

    async def give_up(self, entry_id: int, error: str) -> None: ...

    def pending(self) -> int:
        """Entries neither delivered nor given up (the `monitor_notification_queue` gauge)."""


class Store(Protocol):
    """Outage history, rollups and run periods of one or more monitor locations."""

    @property
    def outbox(self) -> Outbox:
        """The notifications waiting to be delivered."""

    @property
    def errors(self) -> dict[str, int]:
        """Failed write attempts by kind (locked, readonly, full, io, ...)."""

    @property
    def dropped(self) -> int:
        """Rollup buckets discarded because writes failed for too long."""

    async def open(self) -> None: ...

    async def __aenter__(self) -> Self:
        """`open()`; `async with store:` closes it however the block ends."""

    async def __aexit__(self, *exc: object) -> None: ...

    async def check_writable(self) -> None:
        """Raise StoreError (naming the file and the fix) unless a write can commit now."""

    async def close(self) -> None:
        """Flush pending writes, end the current run and release the database. Safe in any
        state (before `open`, after a failed one, twice)."""

    def record_result(self, location: str, result: ProbeResult) -> None:
        """Count a result into its minute bucket in memory (written with the next flush)."""

    async def flush(self) -> bool:
        """Write everything pending now; True if it was written."""

    async def apply_transition(
        self,
        location: str,
        transition: Transition,
        maintenance: bool = False,
        notifications: Notifications | None = None,
    ) -> Outage | None:
        """Open (→ down) or close (→ up) an outage and save the target's state, atomically.

        Returns the outage opened or closed. Never raises on store errors: the write stays
        queued and the outage (with its final id) is returned from memory.

        When there is an outage (also one already open, on a repeated → down) and
        `notifications` is given, it is called with that outage and its notifications are
        enqueued in the same transaction. If it raises, nothing at all changes.
        """

    async def enqueue(self, notifications: Iterable[Notification]) -> int:
        """Add notifications (reminders, for example) to the outbox in one transaction;
        returns how many were new (known keys are skipped)."""

    async def open_outages(self, location: str) -> list[Outage]: ...

    async def target_states(self, location: str) -> dict[str, tuple[State, float | None]]: ...

    async def outages(self, query: OutageQuery | None = None) -> list[Outage]:
        """The outages `query` asks for (default: the latest 1000), newest first."""

    async def outage_times(self, outages: Sequence[Outage], now: float) -> list[OutageTime]:
        """Known and unknown time of each outage as of `now`, from the run periods."""

    async def uptime(self, location: str, target: str, since: float, now: float) -> float | None:
        """Known-time uptime ratio over [since, now]; None when no time was known."""

    async def report(
        self, since: float, now: float, location: str | None = None
    ) -> list[TargetReport]: ...

    async def uptimes(
        self, location: str, windows: Mapping[str, float], now: float
    ) -> dict[str, dict[str, float | None]]:
        """The uptime `report` gives each target of `location` over [start, now] for every
        window (name → start): window → target → ratio (None when no time was known)."""

    async def history(
        self, location: str, now: float, targets: Collection[str] | None = None
    ) -> dict[str, TargetHistory]:
        """Per-day downtime over HISTORY_DAYS, outages, uptime over HISTORY_WINDOWS and
        hourly latency over 24 h of `targets` (default: all) from `location`. Latency of
        the current minute shows once its rollup is written."""

    async def start_run(self, location: str, now: float) -> int:
        """Record that the monitor started; returns the run id."""

    async def end_run(self, now: float) -> None: ...

    async def prune(self, now: float) -> int:
        """Delete history older than the retention allows, in small transactions; returns
        the rows deleted. Raises StoreError if deleting fails."""
