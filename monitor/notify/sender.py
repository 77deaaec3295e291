"""Delivery: one task that takes due entries from the persisted outbox and sends them.

The outbox (SQLite, written in the same transaction as the transition) is the source of
truth; this loop only moves entries along: delivered, retry later, or given up. So a
crash loses nothing (an entry is delivered again after restart unless it was marked
delivered) and re-sends only what was in flight when it happened (at most once more,
with the same idempotency key).

- Each notifier has its own small pool (`concurrency` sends at a time): a slow or dead
  channel fills only its own pool and never delays the others.
- Per notifier, messages of one outage go out in order: a recovery never overtakes its
  down message. It waits while that one is in flight or waiting to be retried, and is
  sent once it is delivered or given up, so it is never dropped because the down failed.
- Temporary errors retry with capped, fully jittered exponential backoff, at least as
  long as the receiver's Retry-After; permanent errors are given up at once, logged once.

Imports: stdlib, aiohttp, monitor.notify.base.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from monitor.notify.base import Message, Notifier, NotifyError, redact

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0  # a receiver asking for more is not taken literally


@dataclass(frozen=True)
class OutboxEntry:
    id: int  # increases with insertion order
    notifier: str
    message: Message
    attempts: int  # delivery attempts made so far


class Outbox(Protocol):
    """The persisted queue of messages; implemented over SQLite by the store.

    `due` returns entries that are neither delivered nor given up, whose next attempt time
    has come, and whose id is not in `exclude` (entries this sender already holds), oldest
    first (by id), at most `limit`. For exact down-before-up ordering across restarts it
    should also hold back an entry while an older pending entry exists for the same
    notifier and outage (the sender enforces this for everything it knows of itself).
    `retry` counts one more attempt and sets the next attempt time.
    """

    async def due(
        self, now: float, limit: int, exclude: Collection[int] = ()
    ) -> list[OutboxEntry]: ...
    async def delivered(self, entry_id: int, now: float) -> None: ...
    async def retry(self, entry_id: int, next_attempt_at: float, error: str) -> None: ...
    async def give_up(self, entry_id: int, error: str) -> None: ...


def backoff(attempts: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempts))."""
    return rand() * min(cap, base * 2.0 ** min(attempts, 60))


def _outage(entry: OutboxEntry) -> int | None:
    return entry.message.outage_id


@dataclass
class _Lane:
    """One notifier's pool: entries waiting to go, and the outages being sent right now."""

    notifier: Notifier
    waiting: list[OutboxEntry] = field(default_factory=list)  # sorted by id
    busy: set[int | None] = field(default_factory=set)  # outage ids in flight
    running: int = 0


class Sender:
    """Delivers outbox entries; `run()` is the task, `wake()` says new entries were added."""

    def __init__(
        self,
        outbox: Outbox,
        notifiers: Mapping[str, Notifier],
        *,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[str, str], None] | None = None,
        session: aiohttp.ClientSession | None = None,
        base: float = 1.0,
        cap: float = 300.0,
        concurrency: int = 4,
        batch: int = 100,
        poll: float = 10.0,
        send_timeout: float = 120.0,
        rand: Callable[[], float] = random.random,
    ):
        self._outbox = outbox
        self._notifiers = dict(notifiers)
        self._clock = clock
        self._on_outcome = on_outcome
        self._session = session
        self._own_session = session is None
        self._base, self._cap, self._rand = base, cap, rand
        self._concurrency = concurrency
        self._batch = batch
        self._poll = poll  # also finds entries another process (or an earlier run) scheduled
        self._send_timeout = send_timeout  # last resort if a channel's own timeouts fail
        self._lanes: dict[str, _Lane] = {}
        self._held: set[int] = set()  # ids waiting or in flight here
        self._retrying: dict[tuple[str, int], set[int]] = {}  # (notifier, outage) → entry ids
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._grace = 5.0

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        self._running = True
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            while not self._stopping:
                self._wakeup.clear()
                try:
                    entries = await self._outbox.due(self._clock(), self._batch, set(self._held))
                except Exception:
                    log.exception("reading the notification outbox failed")
                    entries = []
                for entry in entries:
                    self._take(entry)
                if len(entries) >= self._batch:
                    continue  # a full batch: there may be more due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll)
        except asyncio.CancelledError:
            self._grace = 0.0  # cancelled from outside: do not linger
            raise
        finally:
            await self._shutdown()
            self._stopped.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking entries; sends in flight get `grace` seconds, then are cancelled.

        A cancelled send stays pending in the outbox and goes out after the next start.
        """
        self._grace = grace
        self._stopping = True
        self.wake()
        if self._running:
            await self._stopped.wait()

    async def _shutdown(self) -> None:
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._tasks and self._grace > 0:
            await asyncio.wait(set(self._tasks), timeout=self._grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _take(self, entry: OutboxEntry) -> None:
        if entry.id in self._held:
            return
        notifier = self._notifiers.get(entry.notifier)
        if notifier is None:
            self._held.add(entry.id)
            self._start(self._give_up_unknown(entry))
            return
        lane = self._lanes.get(entry.notifier)
        if lane is None:
            lane = self._lanes[entry.notifier] = _Lane(notifier)
        self._held.add(entry.id)
        lane.waiting.append(entry)
        lane.waiting.sort(key=lambda e: e.id)
        self._pump(lane)

    def _blocked(self, lane: _Lane, entry: OutboxEntry) -> bool:
        outage = _outage(entry)
        if outage is None:
            return False
        if outage in lane.busy:
            return True
        retrying = self._retrying.get((entry.notifier, outage), ())
        return any(other < entry.id for other in retrying)

    def _pump(self, lane: _Lane) -> None:
        """Start as many waiting entries as the lane's pool allows, oldest first."""
        if self._stopping:
            return
        for entry in list(lane.waiting):
            if lane.running >= self._concurrency:
                break
            if self._blocked(lane, entry):
                continue
            lane.waiting.remove(entry)
            lane.running += 1
            if _outage(entry) is not None:
                lane.busy.add(_outage(entry))
            self._start(self._deliver(lane, entry))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_up_unknown(self, entry: OutboxEntry) -> None:
        error = f"notifier {entry.notifier!r} is not configured"
        try:
            await self._outbox.give_up(entry.id, error)
        except Exception:
            log.exception("recording notification %s failed", entry.message.key)
            self._release_later(entry.id, self._poll)
            return
        self._held.discard(entry.id)
        log.error("notification %s dropped: %s", entry.message.key, error)
        self._outcome(entry.notifier, "failed")

    async def _deliver(self, lane: _Lane, entry: OutboxEntry) -> None:
        release = True
        try:
            await self._attempt(lane.notifier, entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # the outbox failed: the entry stays pending and comes back
            log.exception("recording notification %s failed", entry.message.key)
            # Not at once: that would hammer a broken store, and the receiver with it.
            release = False
            self._release_later(entry.id, self._poll)
        finally:
            lane.running -= 1
            lane.busy.discard(_outage(entry))
            if release:
                self._held.discard(entry.id)
            self._pump(lane)
            self.wake()  # entries held back behind this one may be due now

    async def _attempt(self, notifier: Notifier, entry: OutboxEntry) -> None:
        assert self._session is not None
        key = entry.message.key
        try:
            async with asyncio.timeout(self._send_timeout):
                await notifier.send(entry.message, self._session)
        except NotifyError as e:
            error, permanent, retry_after = str(e), e.permanent, e.retry_after
        except TimeoutError:
            error, permanent, retry_after = f"no answer within {self._send_timeout:g}s", False, None
        except Exception as e:  # a bug in a channel must not stop delivery to the others
            error, permanent, retry_after = f"unexpected {type(e).__name__}: {e}", False, None
        else:
            await self._outbox.delivered(entry.id, self._clock())
            self._forget_retry(entry)
            log.info("notification %s sent via %s", key, entry.notifier)
            self._outcome(entry.notifier, "sent")
            return

        error = redact(error, notifier.secrets)
        if permanent:
            await self._outbox.give_up(entry.id, error)
            self._forget_retry(entry)
            log.error("notification %s via %s given up: %s", key, entry.notifier, error)
            self._outcome(entry.notifier, "failed")
            return
        delay = backoff(entry.attempts, self._base, self._cap, self._rand)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        await self._outbox.retry(entry.id, self._clock() + delay, error)
        if (outage := _outage(entry)) is not None:
            self._retrying.setdefault((entry.notifier, outage), set()).add(entry.id)
        log.warning(
            "notification %s via %s failed (attempt %d), retrying in %.1fs: %s",
            key, entry.notifier, entry.attempts + 1, delay, error,
        )  # fmt: skip
        self._outcome(entry.notifier, "retry")
        # A hair late, so that the entry is surely due when we look again.
        self._later(delay + 0.01)

    def _forget_retry(self, entry: OutboxEntry) -> None:
        outage = _outage(entry)
        if outage is None:
            return
        ids = self._retrying.get((entry.notifier, outage))
        if ids is not None:
            ids.discard(entry.id)
            if not ids:
                del self._retrying[(entry.notifier, outage)]

    def _later(self, delay: float) -> None:
        self._release_later(None, delay)

    def _release_later(self, entry_id: int | None, delay: float) -> None:
        """After `delay`, stop holding `entry_id` (if any) and look at the outbox again."""

        def fire() -> None:
            self._timers.discard(timer)
            if entry_id is not None:
                self._held.discard(entry_id)
            self.wake()

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def _outcome(self, notifier: str, outcome: str) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(notifier, outcome)
            except Exception:
                log.exception("counting a notification outcome failed")
