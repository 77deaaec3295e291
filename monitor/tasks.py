"""Background tasks that cannot leak and loops that cannot die.

- `guarded_loop`: every periodic loop of the daemon (uptime refresh, retention, reminders,
  connectivity rounds, the stall watch, the demo's flapping port) runs its step through it.
  A failing step is logged once per kind of error and retried at the next interval; a
  success after failures is logged too. Only cancellation ends the loop.
- `cancel`: stops tasks and waits for them, whatever state they are in.
- `background`: an async context manager around one task, cancelled and awaited on exit.

Imports the standard library only (every layer may use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("monitor")


async def guarded_loop(name: str, step: Callable[[], Awaitable[object]],
                       interval: float | Callable[[], float], first: float = 0.0, *,
                       quiet: tuple[type[BaseException], ...] = (),
                       logger: logging.Logger = log) -> None:
    """Run `step` every `interval` seconds (a callable: read anew each time) until cancelled.

    Errors of a `quiet` type are expected (the store's, say) and logged without traceback.
    """
    await asyncio.sleep(first)
    failing: set[str] = set()
    while True:
        wait = interval() if callable(interval) else interval
        try:
            await step()
        except Exception as exc:  # a background loop must outlive any error
            kind = type(exc).__name__
            if kind not in failing:
                failing.add(kind)
                logger.error("%s failed: %s; retrying every %gs", name, exc or kind, wait,
                             exc_info=not isinstance(exc, quiet))
        else:
            if failing:
                logger.warning("%s works again", name)
                failing.clear()
        await asyncio.sleep(wait)


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks and wait until they have ended. Safe for None, finished and already
    cancelled tasks; an error a task ended with is logged, not raised (shutdown goes on)."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)  # never raises what a task raised; our own cancel passes
    for task in live:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task %s had failed: %s", task.get_name(), error, exc_info=error)


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, object], name: str) -> AsyncIterator[
        asyncio.Task[object]]:
    """Run `coro` as a task for the duration of the `async with` block."""
    task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        await cancel(task)
