"""The notification outbox in the SQLite store, on real files: written with the transition
in one transaction, one row per key, ordered per outage, kept across restarts, and driven
by the real sender against a local receiver."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from receivers import Receiver
from test_store import HERE, T0, Clock, down, first_up, opened, query, unprivileged_dir, up

from monitor.model import Outage
from monitor.notify.base import Message
from monitor.notify.registry import build_notifier
from monitor.notify.sender import OutboxEntry, Sender
from monitor.store import Notification, Outbox, Retention, SqliteStore
from monitor.store.schema import MIGRATIONS


def notes(*notifiers: str, kind: str = "down") -> Any:
    """A `notifications` callback: one message of `kind` per notifier, keyed by outage."""

    def build(outage: Outage) -> list[Notification]:
        key = f"{outage.id}:{kind}"
        payload = {"kind": kind, "key": key, "target": outage.target}
        return [Notification(n, key, payload) for n in notifiers]

    return build


def pending_keys(path: Path) -> list[tuple[str, str]]:
    return query(
        path,
        """SELECT notifier, key FROM outbox
            WHERE delivered_at IS NULL AND given_up_at IS NULL ORDER BY id""",
    )


async def due_keys(outbox: Outbox, now: float, exclude: Collection[int] = ()) -> list[str]:
    return [f"{r.notifier}/{r.key}" for r in await outbox.due(now, 100, exclude)]


# --- one transaction ---------------------------------------------------------------------


async def test_outage_and_its_notifications_are_written_together(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        assert await store.flush()
        # A trigger makes every outbox insert fail, as a failing disk would mid-transaction.
        query(
            path,
            """CREATE TRIGGER refuse BEFORE INSERT ON outbox
                BEGIN SELECT RAISE(ABORT, 'refused'); END""",
        )
        outage = await store.apply_transition(HERE, down("site", T0), notifications=notes("a"))
        assert outage is not None and outage.id == 1
        assert store.errors["constraint"] == 1
        # Neither the outage nor its message is in the file ...
        assert query(path, "SELECT count(*) FROM outages") == [(0,)]
        assert query(path, "SELECT count(*) FROM target_state") == [(0,)]
        assert query(path, "SELECT count(*) FROM outbox") == [(0,)]
        # ... but the message is due all the same (from memory), with the outage's id.
        [row] = await store.outbox.due(T0, 10)
        assert (row.notifier, row.key, row.outage_id) == ("a", "1:down", 1)
        assert row.payload == {"kind": "down", "key": "1:down", "target": "site"}

        query(path, "DROP TRIGGER refuse")
        assert await store.flush()
        assert query(path, "SELECT id, ended_at FROM outages") == [(1, None)]
        assert query(path, "SELECT id, notifier, key, outage_id, attempts FROM outbox") == [
            (row.id, "a", "1:down", 1, 0)
        ]


async def test_a_failing_callback_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"

    def broken(outage: Outage) -> list[Notification]:
        raise ValueError("template bug")

    async with opened(path) as store:
        with pytest.raises(ValueError, match="template bug"):
            await store.apply_transition(HERE, down("site", T0), notifications=broken)
        assert await store.open_outages(HERE) == []
        assert await store.target_states(HERE) == {}
        assert store.outbox.pending() == 0
        # A payload that is not JSON fails its caller too, before anything changes.
        with pytest.raises(TypeError):
            await store.enqueue([Notification("a", "x", {"at": object()})])
        assert store.outbox.pending() == 0

        # The id was not used up.
        outage = await store.apply_transition(HERE, down("site", T0), notifications=notes("a"))
        assert outage is not None and outage.id == 1
    assert query(path, "SELECT id FROM outages") == [(1,)]
    assert pending_keys(path) == [("a", "1:down")]


async def test_down_and_up_enqueue_their_messages(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        # No outage, no messages: the callback is not even called.
        assert await store.apply_transition(HERE, first_up("site", T0), notifications=None) is None
        await store.apply_transition(HERE, down("site", T0 + 60), notifications=notes("a", "b"))
        closed = await store.apply_transition(
            HERE, up("site", T0 + 600), notifications=notes("a", "b", kind="up")
        )
        assert closed is not None and closed.ended_at == T0 + 600
        assert store.outbox.pending() == 4
    assert pending_keys(path) == [("a", "1:down"), ("b", "1:down"), ("a", "1:up"), ("b", "1:up")]
    assert query(path, "SELECT DISTINCT outage_id, created_at, next_attempt_at FROM outbox") == [
        (1, T0, T0)  # the store's clock
    ]


# --- one row per key ---------------------------------------------------------------------


async def test_the_same_key_is_stored_and_sent_once(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        await store.apply_transition(HERE, down("site", T0), notifications=notes("a"))
        # Confirmed down again (the outage is still open): same key, nothing new.
        await store.apply_transition(HERE, down("site", T0 + 60), notifications=notes("a"))
        reminder = Notification("a", "1:reminder:1", {"n": 1}, outage_id=1)
        assert await store.enqueue([reminder, reminder]) == 1
        assert await store.enqueue([reminder]) == 0
        [first] = await store.outbox.due(T0, 10)  # the reminder waits behind the down
        await store.outbox.delivered(first.id, T0 + 1)

    async with opened(path, busy_timeout=0.05) as store:
        # After a restart the open outage is confirmed down again and re-enqueues its
        # messages: the delivered one is not sent again, the pending one is not doubled,
        # and memory knows that without the database (locked here).
        other = sqlite3.connect(path, isolation_level=None)
        with contextlib.closing(other):
            other.execute("BEGIN EXCLUSIVE")
            await store.apply_transition(HERE, down("site", T0 + 120), notifications=notes("a"))
            assert await store.enqueue([reminder]) == 0
            assert await due_keys(store.outbox, T0 + 120) == ["a/1:reminder:1"]
            assert store.outbox.pending() == 1
            other.execute("ROLLBACK")
    assert query(path, "SELECT key, delivered_at FROM outbox ORDER BY id") == [
        ("1:down", T0 + 1),
        ("1:reminder:1", None),
    ]


async def test_a_key_settled_in_an_earlier_run_is_not_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    old = Notification("a", "old", {"n": 1})
    async with opened(path) as store:
        await store.enqueue([old])
        [row] = await store.outbox.due(T0, 10)
        await store.outbox.delivered(row.id, T0)

    async with opened(path) as store:
        # Memory does not know this key (no open outage holds it); the table does.
        assert await store.enqueue([old]) == 1
        assert await store.outbox.due(T0, 10) == []
        assert store.outbox.pending() == 0
    assert query(path, "SELECT key, delivered_at FROM outbox") == [("old", T0)]


# --- due: order, holding back, settling ---------------------------------------------------


async def test_due_is_by_id_and_holds_back_behind_older_entries(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        outbox = store.outbox
        await store.apply_transition(HERE, down("one", T0), notifications=notes("a", "b"))
        await store.apply_transition(HERE, down("two", T0), notifications=notes("a"))
        await store.apply_transition(HERE, up("one", T0 + 60), notifications=notes("a", kind="up"))
        await store.enqueue([Notification("a", "free", {})])  # no outage: never held back
        ids = {f"{r.notifier}/{r.key}": r.id for r in await outbox.due(T0, 100)}
        assert list(ids) == ["a/1:down", "b/1:down", "a/2:down", "a/free"]
        assert await due_keys(outbox, T0, exclude=[ids["b/1:down"]]) == [
            "a/1:down",
            "a/2:down",
            "a/free",
        ]
        assert await due_keys(outbox, T0, exclude=[ids["a/1:down"]]) == [
            "b/1:down",  # a/1:up still waits: a/1:down is in flight
            "a/2:down",
            "a/free",
        ]
        assert len(await outbox.due(T0, 2)) == 2

        # Waiting for a retry holds the recovery back too.
        await outbox.retry(ids["a/1:down"], T0 + 30, "HTTP 503")
        assert await due_keys(outbox, T0 + 10) == ["b/1:down", "a/2:down", "a/free"]
        assert await due_keys(outbox, T0 + 30) == ["a/1:down", "b/1:down", "a/2:down", "a/free"]

    async with opened(path) as store:  # the same after a restart
        outbox = store.outbox
        assert await due_keys(outbox, T0 + 10) == ["b/1:down", "a/2:down", "a/free"]
        await outbox.delivered(ids["a/1:down"], T0 + 31)
        assert await due_keys(outbox, T0 + 31) == ["b/1:down", "a/2:down", "a/1:up", "a/free"]


async def test_settled_entries_never_come_back(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        outbox = store.outbox
        await store.apply_transition(HERE, down("site", T0), notifications=notes("a", "b", "c"))
        a, b, c = await outbox.due(T0, 10)
        assert outbox.pending() == 3
        await outbox.delivered(a.id, T0 + 1)
        await outbox.give_up(b.id, "HTTP 400 Bad Request")
        assert outbox.pending() == 1
        assert [r.id for r in await outbox.due(T0 + 1, 10)] == [c.id]
        # Settling twice, or an unknown id, changes nothing.
        await outbox.delivered(b.id, T0 + 2)
        await outbox.retry(a.id, T0 + 2, "late")
        await outbox.give_up(999, "unknown")

    async with opened(path) as store:
        assert [r.id for r in await store.outbox.due(T0 + 5, 10)] == [c.id]
        assert store.outbox.pending() == 1
    assert query(
        path, "SELECT notifier, attempts, delivered_at, given_up_at, last_error FROM outbox"
    ) == [
        ("a", 0, T0 + 1, None, None),
        ("b", 0, None, T0, "HTTP 400 Bad Request"),  # given up at the store's clock
        ("c", 0, None, None, None),
    ]


async def test_retry_counts_attempts_and_waits(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path) as store:
        await store.enqueue([Notification("a", "k", {"n": 1})])
        [row] = await store.outbox.due(T0, 10)
        await store.outbox.retry(row.id, T0 + 30, "HTTP 500")
        await store.outbox.retry(row.id, T0 + 90, "timeout")
        assert await store.outbox.due(T0 + 89, 10) == []
        [again] = await store.outbox.due(T0 + 90, 10)
        assert (again.id, again.attempts, again.next_attempt_at) == (row.id, 2, T0 + 90)
        assert store.outbox.pending() == 1

    async with opened(path) as store:
        assert await store.outbox.due(T0 + 89, 10) == []
        assert await store.outbox.due(T0 + 90, 10) == [again]
    assert query(path, "SELECT attempts, next_attempt_at, last_error FROM outbox") == [
        (2, T0 + 90, "timeout")
    ]


# --- store failures and retention ---------------------------------------------------------


async def test_the_outbox_works_while_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with opened(path, busy_timeout=0.05) as store:
        outbox = store.outbox
        other = sqlite3.connect(path, isolation_level=None)
        with contextlib.closing(other):
            other.execute("BEGIN EXCLUSIVE")
            await store.apply_transition(HERE, down("site", T0), notifications=notes("a"))
            await store.enqueue([Notification("a", "1:reminder:1", {}, outage_id=1)])
            [down_row] = await outbox.due(T0, 10)
            await outbox.delivered(down_row.id, T0 + 1)
            [reminder] = await outbox.due(T0 + 1, 10)
            await outbox.retry(reminder.id, T0 + 60, "HTTP 502")
            assert await outbox.due(T0 + 59, 10) == []
            assert store.errors["locked"] >= 4
            other.execute("ROLLBACK")

        assert await store.flush()
        assert query(path, "SELECT key, attempts, delivered_at FROM outbox ORDER BY id") == [
            ("1:down", 0, T0 + 1),
            ("1:reminder:1", 1, None),
        ]
        assert query(path, "SELECT id FROM outages") == [(1,)]


async def test_a_read_only_file_from_before_the_outbox(tmp_path: Path) -> None:
    with unprivileged_dir() as directory:
        path = directory / "h.db"
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            for statement in MIGRATIONS[0]:  # the schema as the previous version left it
                db.execute(statement)
            db.execute("PRAGMA user_version = 1")
        path.chmod(0o444)

        async with opened(path) as store:  # cannot migrate yet: not an error
            assert store.errors["readonly"] == 1
            assert store.outbox.pending() == 0
            await store.apply_transition(HERE, down("site", T0), notifications=notes("a"))
            assert [r.key for r in await store.outbox.due(T0, 10)] == ["1:down"]
            path.chmod(0o644)
            assert await store.flush()
        assert query(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
        assert pending_keys(path) == [("a", "1:down")]


async def test_retention_keeps_pending_entries_and_those_of_open_outages(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    day = 86400.0
    clock = Clock(T0)
    async with opened(path, clock=clock, retention=Retention(outages=day)) as store:
        outbox = store.outbox
        await store.apply_transition(HERE, down("open", T0), notifications=notes("a"))
        await store.apply_transition(HERE, down("closed", T0), notifications=notes("a", "b"))
        await store.apply_transition(HERE, up("closed", T0 + 60))
        open_a, closed_a, _ = await outbox.due(T0, 10)
        await outbox.delivered(closed_a.id, T0)
        await outbox.delivered(open_a.id, T0)
        await store.enqueue([Notification("a", "plain", {})])
        [plain] = [r for r in await outbox.due(T0, 10) if r.key == "plain"]
        await outbox.give_up(plain.id, "HTTP 404")

        await store.prune(T0 + 2 * day)
        assert query(path, "SELECT id FROM outages") == [(1,)]
        assert query(path, "SELECT notifier, key FROM outbox ORDER BY id") == [
            ("a", "1:down"),  # its outage is open
            ("b", "2:down"),  # still pending
        ]

    async with opened(path, clock=clock) as store:
        # Outage 2 is gone, but a pending message still names it: its id is not reused.
        outage = await store.apply_transition(HERE, down("closed", T0 + 3 * day))
        assert outage is not None and outage.id == 3


# --- the real sender through an adapter (the one app.py uses) ----------------------------


class MessageOutbox:
    """`notify.sender.Outbox` over the store's outbox: payloads are `Message.to_dict()`."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def due(self, now: float, limit: int, exclude: Collection[int] = ()) -> list[OutboxEntry]:
        rows = await self._outbox.due(now, limit, exclude)
        return [
            OutboxEntry(r.id, r.notifier, Message.from_dict(r.payload), r.attempts) for r in rows
        ]

    async def delivered(self, entry_id: int, now: float) -> None:
        await self._outbox.delivered(entry_id, now)

    async def retry(self, entry_id: int, next_attempt_at: float, error: str) -> None:
        await self._outbox.retry(entry_id, next_attempt_at, error)

    async def give_up(self, entry_id: int, error: str) -> None:
        await self._outbox.give_up(entry_id, error)


def to_notifications(notifiers: Collection[str], message: Message) -> list[Notification]:
    payload = message.to_dict()
    return [Notification(n, message.key, payload, message.outage_id) for n in notifiers]


def outage_message(outage: Outage, kind: str, url: str) -> Message:
    return Message(
        kind=kind,
        key=f"{outage.id}:{kind}",
        target=outage.target,
        location=outage.location,
        url=url,
        cause=outage.cause.value,
        error=outage.message,
        since=outage.started_at,
        duration=None if outage.ended_at is None else outage.ended_at - outage.started_at,
        outage_id=outage.id,
    )


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


async def deliver_until(store: SqliteStore, receiver: Receiver, count: int) -> None:
    """Run a sender until the receiver has accepted `count` messages, then stop it."""
    notifiers = {"hook": build_notifier("hook", "webhook", {"url": f"{receiver.url}/hook"})}
    sender = Sender(MessageOutbox(store.outbox), notifiers, base=0.01, cap=0.05)
    task = asyncio.create_task(sender.run())
    try:
        await receiver.wait_delivered(count)
    finally:
        await sender.stop()  # lets the send in flight record its delivery
        await task


async def test_sender_delivers_down_then_up_once_across_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "h.db"
    url = "https://site.example/"

    def messages(kind: str) -> Any:
        return lambda o: to_notifications(["hook"], outage_message(o, kind, url))

    receiver.fail(503, times=2)  # the down message fails twice; the up must wait for it
    async with opened(path) as store:
        await store.apply_transition(HERE, down("site", T0), notifications=messages("down"))
        await store.apply_transition(HERE, up("site", T0 + 90), notifications=messages("up"))
        await deliver_until(store, receiver, 2)
        assert store.outbox.pending() == 0
        # Enqueued while no sender runs, then the daemon stops.
        [outage] = await store.outages()
        reminder = outage_message(outage, "reminder", url)
        await store.enqueue(to_notifications(["hook"], reminder))

    async with opened(path) as store:
        assert store.outbox.pending() == 1
        await deliver_until(store, receiver, 3)
        assert store.outbox.pending() == 0

    assert [r.status for r in receiver.received] == [503, 503, 200, 200, 200]
    assert [r.json()["key"] for r in receiver.delivered] == ["1:down", "1:up", "1:reminder"]
    assert receiver.delivered[1].json()["duration"] == 90.0
    assert query(
        path, "SELECT key, attempts, delivered_at IS NOT NULL FROM outbox ORDER BY id"
    ) == [("1:down", 2, 1), ("1:up", 0, 1), ("1:reminder", 0, 1)]
