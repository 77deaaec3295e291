"""The store interface: what the rest of the monitor may ask of an outage history.

Imports only `monitor.model`. A backend (SQLite now, PostgreSQL later) implements `Store`;
the interval arithmetic below is shared so every backend computes uptime the same way.

The outbox: notifications waiting to be delivered, written in the same transaction as the
outage change they announce. The store keeps their payloads as JSON objects and knows
nothing about messages or channels; `monitor.app` converts (`Message.to_dict`/`from_dict`).

Known time: a target's state is known while the monitor ran (its run periods) and after
the target's first confirmation. Uptime = (known time - downtime) / known time. Outages
flagged as maintenance count neither as up nor as down.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from monitor.model import Outage, OutageTime, ProbeResult, State, Transition

DAY = 86400.0


class StoreError(Exception):
    """A read from the store failed (writes never raise: they are queued and retried)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each level of history is kept, in seconds (None = forever)."""

    minutes: float | None = 14 * DAY
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

    errors: dict[str, int]  # failed write attempts by kind (locked, readonly, full, io, ...)
    dropped: int  # rollup buckets discarded because writes failed for too long

    @property
    def outbox(self) -> Outbox: ...  # read-only: a store may hold a subtype of Outbox

    async def open(self) -> None: ...

    async def check_writable(self) -> None:
        """Raise StoreError (naming the file and the fix) unless a write can commit now."""

    async def close(self) -> None:
        """Flush pending writes, end the current run and release the database."""

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

    async def outages(
        self,
        *,
        target: str | None = None,
        location: str | None = None,
        since: float | None = None,
        until: float | None = None,
        open: bool | None = None,
        limit: int = 1000,
    ) -> list[Outage]:
        """Outages overlapping [since, until], newest first."""

    async def outage_times(self, outages: Sequence[Outage], now: float) -> list[OutageTime]:
        """Known and unknown time of each outage as of `now`, from the run periods."""

    async def uptime(self, location: str, target: str, since: float, now: float) -> float | None:
        """Known-time uptime ratio over [since, now]; None when no time was known."""

    async def report(
        self, since: float, now: float, location: str | None = None
    ) -> list[TargetReport]: ...

    async def start_run(self, location: str, now: float) -> int:
        """Record that the monitor started; returns the run id."""

    async def end_run(self, now: float) -> None: ...

    async def prune(self, now: float) -> int:
        """Delete history older than the retention allows, in small transactions; returns
        the rows deleted. Raises StoreError if deleting fails."""


# Interval arithmetic on sorted, non-overlapping lists of (start, end) pairs.
Interval = tuple[float, float]


def union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in a:
        for b_start, b_end in b:
            if b_end <= start or b_start >= end:
                continue
            if b_start > start:
                out.append((start, b_start))
            start = max(start, b_end)
        if end > start:
            out.append((start, end))
    return out


def total(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def _span(outage: Outage, now: float) -> Interval:
    return (outage.started_at, outage.ended_at if outage.ended_at is not None else now)


def outage_time(outage: Outage, runs: Sequence[Interval], now: float) -> OutageTime:
    """Split an outage's span (until `now` while open) into known and unknown time;
    `runs` are the run periods of the outage's location."""
    start, end = _span(outage, now)
    known = total(intersect([(start, end)], union(runs)))
    return OutageTime(known=known, unknown=max(0.0, end - start - known))


def summarize(
    target: str,
    location: str,
    runs: Iterable[Interval],
    known_since: float | None,
    outages: Iterable[Outage],
    since: float,
    now: float,
) -> TargetReport:
    """Availability over [since, now] from run periods, first confirmation and outages."""
    outages = list(outages)
    known: list[Interval] = []
    if known_since is not None and max(since, known_since) < now:
        window = [(max(since, known_since), now)]
        maintenance = union(_span(o, now) for o in outages if o.maintenance)
        known = subtract(intersect(union(runs), window), maintenance)
    known_seconds = total(known)

    counted = [o for o in outages if not o.maintenance and o.started_at <= now]
    counted = [o for o in counted if o.ended_at is None or o.ended_at >= since]
    per_outage = [total(intersect([_span(o, now)], known)) for o in counted]
    downtime = total(intersect(union(_span(o, now) for o in counted), known))
    ended = [d for o, d in zip(counted, per_outage, strict=True) if o.ended_at is not None]
    return TargetReport(
        target=target,
        location=location,
        uptime=(known_seconds - downtime) / known_seconds if known_seconds > 0 else None,
        known_seconds=known_seconds,
        downtime_seconds=downtime,
        outages=len(counted),
        longest_seconds=max(per_outage, default=0.0),
        mttr_seconds=sum(ended) / len(ended) if ended else None,
    )
