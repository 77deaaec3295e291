"""Notifications for the daemon: transitions → outbox rows → the sender → channels.

Glue between the store's outbox (rows with JSON payloads) and `monitor.notify` (messages
and channels). It knows both; only `monitor.app` and `monitor.cli` import it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable

import aiohttp

from monitor.config import Config
from monitor.metrics import public_url
from monitor.model import Outage, OutageTime, State, Target, Transition
from monitor.notify.base import Message, Notifier, NotifyError, redact
from monitor.notify.maintenance import Window, in_maintenance
from monitor.notify.messages import notify_test_message
from monitor.notify.registry import build_notifier
from monitor.notify.sender import OutboxEntry, Sender
from monitor.store import Notification, Store, StoreError
from monitor.store.base import Outbox
from monitor.tasks import cancel, guarded_loop
from monitor.timefmt import parse_duration

log = logging.getLogger("monitor.notify")
REMINDER_CHECK = 30.0  # seconds between looks for outages that need a reminder


def build_all(config: Config) -> tuple[dict[str, Notifier], dict[str, float], list[Window]]:
    """Notifiers, their reminder periods (`repeat`), and maintenance windows of a config.

    load_config has built every notifier once to validate it: this cannot fail.
    """
    notifiers: dict[str, Notifier] = {}
    repeats: dict[str, float] = {}
    for n in config.notifiers:
        settings = dict(n.settings)
        repeat = settings.pop("repeat", None)
        if repeat is not None:
            repeats[n.name] = parse_duration(repeat)
        notifiers[n.name] = build_notifier(n.name, n.type, settings)
    return notifiers, repeats, list(config.maintenance)


def outage_message(outage: Outage, kind: str, url: str, *, key: str | None = None,
                   spent: OutageTime | None = None) -> Message:
    """The message of an outage; `key` defaults to `{outage id}:{kind}` (idempotency).

    "up" and "reminder" give the outage's known time as its duration, and the time the
    monitor did not watch apart, as the history counts them (`spent`, from the store's run
    periods); without `spent` the duration is unknown."""
    duration: float | None = None
    unknown: float | None = None
    if kind in ("up", "reminder") and spent is not None:
        duration, unknown = spent.known, spent.unknown
    return Message(kind=kind, key=key or f"{outage.id}:{kind}", target=outage.target,
                   location=outage.location, url=url, cause=outage.cause.value,
                   error=outage.message, since=outage.started_at, duration=duration,
                   outage_id=outage.id, unknown=unknown)


class MessageOutbox:
    """`notify.sender.Outbox` over the store's outbox: payloads are `Message.to_dict()`."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def due(self, now: float, limit: int, exclude: Collection[int] = ()) -> list[OutboxEntry]:
        rows = await self._outbox.due(now, limit, exclude)
        return [OutboxEntry(r.id, r.notifier, Message.from_dict(r.payload), r.attempts)
                for r in rows]

    async def delivered(self, entry_id: int, now: float) -> None:
        await self._outbox.delivered(entry_id, now)

    async def retry(self, entry_id: int, next_attempt_at: float, error: str) -> None:
        await self._outbox.retry(entry_id, next_attempt_at, error)

    async def give_up(self, entry_id: int, error: str) -> None:
        await self._outbox.give_up(entry_id, error)


class Notifications:
    """Enqueues down/up/reminder messages with the outage changes and runs the sender."""

    def __init__(self, config: Config, store: Store, *,
                 on_outcome: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.notifiers, self.repeats, self.windows = build_all(config)
        self._store = store
        self._clock = clock
        self._sender = Sender(MessageOutbox(store.outbox), self.notifiers, clock=clock,
                              on_outcome=on_outcome)
        self._sending: asyncio.Task[None] | None = None
        self._reminding: asyncio.Task[None] | None = None
        self._location = config.location
        self._targets: dict[str, Target] = {}

    def set_targets(self, targets: Iterable[Target]) -> None:
        self._targets = {t.name: t for t in targets}

    def pending(self) -> int:
        return self._store.outbox.pending()

    async def __aenter__(self) -> Notifications:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the sender and the reminders (once: a second start does nothing)."""
        if self._sending is not None:
            return
        self._sending = asyncio.create_task(self._sender.run(), name="monitor-sender")
        self._reminding = asyncio.create_task(guarded_loop(
            "reminders", self.remind, REMINDER_CHECK, first=REMINDER_CHECK,
            quiet=(StoreError,), logger=log), name="monitor-reminders")
        self._sender.wake()  # deliver what a previous run left undelivered

    async def stop(self) -> None:
        """Stop the reminders, then let the sender finish what is in flight (its grace
        period). Safe in any state: never started, or stopped twice."""
        reminding, self._reminding = self._reminding, None
        await cancel(reminding)
        await self._sender.stop()
        sending, self._sending = self._sending, None
        await cancel(sending)  # it has ended by now (or never ran): this only reaps it

    def in_maintenance(self, target: str, at: float) -> bool:
        return in_maintenance(self.windows, target, at)

    def for_transition(self, target: Target, tr: Transition, spent: OutageTime | None = None,
                       ) -> Callable[[Outage], list[Notification]]:
        """The outbox rows `store.apply_transition` writes with the outage change; `spent`:
        the known and unknown time of the outage a recovery closes."""
        kind = "down" if tr.state is State.DOWN else "up"
        url = public_url(target.url)

        def rows(outage: Outage) -> list[Notification]:
            if outage.maintenance or not target.notifiers:
                return []
            payload = outage_message(outage, kind, url, spent=spent).to_dict()
            return [Notification(n, payload["key"], payload, outage.id) for n in target.notifiers]

        return rows

    def wake(self) -> None:
        self._sender.wake()

    async def remind(self) -> None:
        """Enqueue a reminder per notifier with `repeat` for each outage down that long."""
        if not self.repeats:
            return
        now = self._clock()
        due: list[tuple[Outage, Target, str, int]] = []
        for outage in await self._store.open_outages(self._location):
            target = self._targets.get(outage.target)
            if target is None or outage.maintenance or self.in_maintenance(target.name, now):
                continue
            for name in target.notifiers:
                period = self.repeats.get(name)
                if period is None or now - outage.started_at < period:
                    continue
                n = math.floor((now - outage.started_at) / period)  # the n-th reminder
                due.append((outage, target, name, n))
        if not due:
            return
        times = await self._store.outage_times([outage for outage, *_ in due], now)
        rows = []
        for (outage, target, name, n), spent in zip(due, times, strict=True):
            payload = outage_message(outage, "reminder", public_url(target.url),
                                     key=f"{outage.id}:reminder:{n}", spent=spent).to_dict()
            rows.append(Notification(name, payload["key"], payload, outage.id))
        if rows and await self._store.enqueue(rows):
            self._sender.wake()


async def send_test(notifier: Notifier, location: str) -> str | None:
    """Send one test message; None on success, else the error (secrets removed)."""
    message = notify_test_message(location, time.time(), notifier.name)
    async with aiohttp.ClientSession() as session:
        try:
            await notifier.send(message, session)
        except NotifyError as exc:
            kind = "permanent" if exc.permanent else "temporary"
            return f"{redact(str(exc), notifier.secrets)} ({kind})"
        except Exception as exc:  # a channel bug must still be reported, not crash the CLI
            return redact(f"{type(exc).__name__}: {exc}", notifier.secrets)
    return None

