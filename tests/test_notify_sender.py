"""The delivery loop against local receivers and an in-memory outbox (the real one is SQLite)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, replace

import pytest_asyncio
from receivers import Receiver, Reply

from monitor.notify.base import Message, Notifier
from monitor.notify.registry import build_notifier
from monitor.notify.sender import OutboxEntry, Sender, backoff

DOWN = Message(
    kind="down",
    key="7:down",
    target="rt",
    location="msk",
    url="https://rt.com/",
    cause="connect",
    error="connection refused",
    since=1_772_330_400.0,
    duration=None,
    outage_id=7,
)
UP = replace(DOWN, kind="up", key="7:up", duration=90.0)
TOKEN = "987654:BOT-token-never-logged"


@dataclass
class Row:
    notifier: str
    message: Message
    next_at: float = 0.0
    attempts: int = 0
    delivered: bool = False
    given_up: bool = False
    error: str = ""


class MemoryOutbox:
    """Test scaffolding with the semantics the SQLite outbox must have."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self._changed = asyncio.Condition()
        self.found_empty = asyncio.Event()  # a sender asked and there was nothing due

    def add(self, notifier: str, message: Message) -> int:
        entry_id = len(self.rows) + 1
        self.rows[entry_id] = Row(notifier, message)
        return entry_id

    async def due(self, now: float, limit: int, exclude: Collection[int] = ()) -> list[OutboxEntry]:
        found = [
            OutboxEntry(i, r.notifier, r.message, r.attempts)
            for i, r in sorted(self.rows.items())
            if not r.delivered and not r.given_up and r.next_at <= now and i not in exclude
        ]
        if not found:
            self.found_empty.set()
        return found[:limit]

    async def delivered(self, entry_id: int, now: float) -> None:
        await self._update(entry_id, delivered=True)

    async def retry(self, entry_id: int, next_attempt_at: float, error: str) -> None:
        row = self.rows[entry_id]
        await self._update(
            entry_id, next_at=next_attempt_at, attempts=row.attempts + 1, error=error
        )

    async def give_up(self, entry_id: int, error: str) -> None:
        await self._update(entry_id, given_up=True, error=error)

    async def _update(self, entry_id: int, **changes: object) -> None:
        async with self._changed:
            for name, value in changes.items():
                setattr(self.rows[entry_id], name, value)
            self._changed.notify_all()

    async def wait(self, done: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(done)

    def settled(self, *ids: int) -> Callable[[], bool]:
        return lambda: all(self.rows[i].delivered or self.rows[i].given_up for i in ids)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest_asyncio.fixture
async def other() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


class Running:
    def __init__(self, sender: Sender):
        self.sender = sender
        self.task = asyncio.create_task(sender.run())

    async def stop(self) -> None:
        await self.sender.stop(grace=0.5)
        await self.task


def start(outbox: MemoryOutbox, notifiers: dict[str, Notifier], **kwargs: object) -> Running:
    kwargs = {"base": 0.01, "cap": 0.05, **kwargs}
    return Running(Sender(outbox, notifiers, **kwargs))  # type: ignore[arg-type]


def webhook(receiver: Receiver, **settings: object) -> Notifier:
    return build_notifier("hook", "webhook", {"url": f"{receiver.url}/hook", **settings})


async def test_failing_receiver_gets_the_message_exactly_once_after_recovery(receiver):
    receiver.fail(500, times=3)
    outcomes: list[tuple[str, str]] = []
    outbox = MemoryOutbox()
    entry = outbox.add("hook", DOWN)
    running = start(
        outbox, {"hook": webhook(receiver)}, on_outcome=lambda n, o: outcomes.append((n, o))
    )
    await outbox.wait(outbox.settled(entry))
    await running.stop()

    assert outbox.rows[entry].delivered
    assert outbox.rows[entry].attempts == 3
    assert [r.status for r in receiver.received] == [500, 500, 500, 200]
    assert [r.json()["key"] for r in receiver.delivered] == ["7:down"]
    assert outcomes == [("hook", "retry")] * 3 + [("hook", "sent")]


async def test_retry_after_is_honoured(receiver):
    receiver.fail(429, headers={"Retry-After": "1"})
    outbox = MemoryOutbox()
    entry = outbox.add("hook", DOWN)
    running = start(outbox, {"hook": webhook(receiver)})
    await outbox.wait(outbox.settled(entry))
    await running.stop()

    first, second = receiver.received
    assert (first.status, second.status) == (429, 200)
    # Backoff alone would retry within 0.05 s.
    assert second.at - first.at >= 0.95


async def test_bad_request_is_given_up_at_once_and_logged_once(receiver, caplog):
    caplog.set_level(logging.INFO, logger="monitor.notify")
    receiver.fail(400, body="invalid_payload")
    outcomes: list[str] = []
    outbox = MemoryOutbox()
    entry = outbox.add("hook", DOWN)
    running = start(outbox, {"hook": webhook(receiver)}, on_outcome=lambda n, o: outcomes.append(o))
    await outbox.wait(outbox.settled(entry))
    await running.stop()

    assert outbox.rows[entry].given_up
    assert outbox.rows[entry].error == "webhook: HTTP 400 Bad Request: invalid_payload"
    assert len(receiver.received) == 1
    assert outcomes == ["failed"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "notification 7:down via hook given up: webhook: HTTP 400 Bad Request: invalid_payload"
    ]


async def test_hanging_channel_does_not_delay_another(receiver, other):
    receiver.default = Reply(hang=True)
    outbox = MemoryOutbox()
    # More stuck entries than one batch: the healthy channel must still get its turn.
    stuck = [outbox.add("slow", replace(DOWN, key=f"{i}:down", outage_id=i)) for i in range(5)]
    healthy = outbox.add("fast", DOWN)
    notifiers = {
        "slow": build_notifier("slow", "webhook", {"url": receiver.url, "timeout": 30}),
        "fast": build_notifier("fast", "webhook", {"url": other.url}),
    }
    started = time.monotonic()
    running = start(outbox, notifiers, concurrency=2, batch=2)
    await outbox.wait(outbox.settled(healthy))
    elapsed = time.monotonic() - started
    await receiver.wait_for(2)  # both slots of the slow channel are stuck
    await running.stop()

    assert elapsed < 2
    assert [r.json()["key"] for r in other.delivered] == ["7:down"]
    assert receiver.delivered == []
    assert not any(outbox.rows[i].delivered or outbox.rows[i].given_up for i in stuck)


async def test_recovery_waits_for_its_down_message_and_follows_it(receiver):
    receiver.fail(503, times=2)
    outbox = MemoryOutbox()
    down = outbox.add("hook", DOWN)
    running = start(outbox, {"hook": webhook(receiver)}, base=0.2, cap=0.2, rand=lambda: 1.0)
    await receiver.wait_for(1)  # the down message failed once and waits for its retry
    up = outbox.add("hook", UP)
    running.sender.wake()
    await outbox.wait(outbox.settled(down, up))
    await running.stop()

    assert [r.json()["kind"] for r in receiver.delivered] == ["down", "up"]
    assert [r.json()["kind"] for r in receiver.received] == ["down", "down", "down", "up"]


async def test_recovery_is_sent_when_its_down_message_was_given_up(receiver):
    receiver.fail(400)
    outbox = MemoryOutbox()
    down = outbox.add("hook", DOWN)
    up = outbox.add("hook", UP)
    running = start(outbox, {"hook": webhook(receiver)})
    await outbox.wait(outbox.settled(down, up))
    await running.stop()

    assert outbox.rows[down].given_up and outbox.rows[up].delivered
    assert [r.json()["kind"] for r in receiver.delivered] == ["up"]


async def test_restart_sends_what_is_pending_and_nothing_delivered(receiver):
    outbox = MemoryOutbox()
    first = outbox.add("hook", DOWN)
    running = start(outbox, {"hook": webhook(receiver)})
    await outbox.wait(outbox.settled(first))
    await running.stop()

    second = outbox.add("hook", UP)  # enqueued while no sender runs
    running = start(outbox, {"hook": webhook(receiver)})
    await outbox.wait(outbox.settled(second))
    await running.stop()

    assert [r.json()["key"] for r in receiver.received] == ["7:down", "7:up"]


async def test_unknown_notifier_is_given_up(receiver):
    outbox = MemoryOutbox()
    entry = outbox.add("gone", DOWN)
    running = start(outbox, {"hook": webhook(receiver)})
    await outbox.wait(outbox.settled(entry))
    await running.stop()
    assert outbox.rows[entry].given_up
    assert outbox.rows[entry].error == "notifier 'gone' is not configured"


async def test_wake_sends_new_entries_without_waiting_for_the_poll(receiver):
    outbox = MemoryOutbox()
    running = start(outbox, {"hook": webhook(receiver)}, poll=60)
    await asyncio.wait_for(outbox.found_empty.wait(), 5)  # now it waits for a wake or 60 s
    entry = outbox.add("hook", DOWN)
    running.sender.wake()
    async with asyncio.timeout(5):
        await outbox.wait(outbox.settled(entry))
    await running.stop()
    assert outbox.rows[entry].delivered


async def test_secrets_never_reach_logs_or_the_outbox(receiver, other, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.fail(500, body=f"upstream said: bad token {TOKEN}")
    receiver.fail(401, body='{"ok":false,"description":"Unauthorized"}')
    secret_path = "/hook/0123456789abcdef-SECRET-PATH"
    other.fail(404, body=f"no route {secret_path}")
    notifiers = {
        "tg": build_notifier(
            "tg", "telegram", {"token": TOKEN, "chat_id": 5, "api_url": receiver.url}
        ),
        "hook": build_notifier(
            "hook", "webhook", {"url": other.url + secret_path, "secret": "hmac-key"}
        ),
    }
    outbox = MemoryOutbox()
    tg = outbox.add("tg", DOWN)
    hook = outbox.add("hook", DOWN)
    running = start(outbox, notifiers)
    await outbox.wait(outbox.settled(tg, hook))
    await running.stop()

    assert outbox.rows[tg].given_up and outbox.rows[hook].given_up
    errors = [outbox.rows[tg].error, outbox.rows[hook].error]
    assert errors == [
        "telegram: HTTP 401 Unauthorized",
        "webhook: HTTP 404 Not Found: no route ***",
    ]
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "retrying" in logged and "given up" in logged
    for secret in (
        TOKEN,
        secret_path,
        "0123456789abcdef-SECRET-PATH",
        "hmac-key",
        other.url + secret_path,
    ):
        assert secret not in logged
        assert all(secret not in e for e in errors)


class BrokenOnce(MemoryOutbox):
    """Fails to record the first delivery, as a locked database would."""

    failed = False

    async def delivered(self, entry_id: int, now: float) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("database is locked")
        await super().delivered(entry_id, now)


async def test_a_failed_record_resends_later_not_at_once(receiver, caplog):
    outbox = BrokenOnce()
    entry = outbox.add("hook", DOWN)
    running = start(outbox, {"hook": webhook(receiver)}, poll=0.3)
    await outbox.wait(outbox.settled(entry))
    await running.stop()

    first, second = receiver.received  # at least once: the receiver dedups by key
    assert first.headers["X-Monitor-Key"] == second.headers["X-Monitor-Key"] == "7:down"
    assert second.at - first.at >= 0.25
    assert "recording notification 7:down failed" in caplog.text


def test_backoff_is_capped_full_jitter():
    assert backoff(0, 1.0, 300.0, lambda: 0.5) == 0.5
    assert backoff(3, 1.0, 300.0, lambda: 1.0) == 8.0
    assert backoff(20, 1.0, 300.0, lambda: 1.0) == 300.0
    assert backoff(1000, 1.0, 300.0, lambda: 0.0) == 0.0
