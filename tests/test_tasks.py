"""The one guarded loop every background loop runs through, and tasks that cannot leak."""

from __future__ import annotations

import asyncio
import logging

import pytest

from monitor.tasks import background, cancel, guarded_loop


async def test_guarded_loop_outlives_errors_logs_each_kind_once_and_the_recovery(
        caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[Exception | None] = [OSError("disk full"), OSError("disk full"),
                                        ValueError("bad"), None, None]
    steps = 0
    done = asyncio.Event()

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps == len(outcomes):
            done.set()
        if steps <= len(outcomes) and (error := outcomes[steps - 1]) is not None:
            raise error

    caplog.set_level(logging.INFO, logger="monitor")
    task = asyncio.create_task(guarded_loop("uptime refresh", step, 0.001, quiet=(OSError,)))
    async with asyncio.timeout(10):
        await done.wait()
    await cancel(task)
    assert task.cancelled()
    lines = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert lines == [
        ("ERROR", "uptime refresh failed: disk full; retrying every 0.001s", False),  # quiet
        ("ERROR", "uptime refresh failed: bad; retrying every 0.001s", True),
        ("WARNING", "uptime refresh works again", False),
    ]


async def test_cancel_is_safe_for_any_task_and_background_never_leaks() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    await asyncio.wait([failed])
    await cancel(None, failed)  # a finished task, and none at all: logged, not raised
    await cancel(failed)

    running: asyncio.Task[object] | None = None
    with pytest.raises(KeyError):
        async with background(asyncio.Event().wait(), "waits") as running:
            raise KeyError("the block fails")
    assert running is not None and running.cancelled()
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()
