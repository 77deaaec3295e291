"""Write a real history file through the store's own interface, for status page tests:
outages hours or days in the past, at times the test chooses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from monitor.model import Failure, ProbeResult, State, Transition
from monitor.store import SqliteStore


@dataclass(frozen=True)
class Past:
    """One outage to record: [start, end) of `target`, failing with `cause`."""

    target: str
    start: float
    end: float
    cause: Failure = Failure.CONNECT
    message: str = "cannot connect: Connection refused"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def probe(target: str, at: float, ms: float = 10.0, failure: Failure | None = None,
          message: str = "") -> ProbeResult:
    return ProbeResult(target=target, started_at=at, duration=ms / 1000, ok=failure is None,
                       failure=failure, message=message)


async def write_history(path: Path, location: str, targets: Sequence[str], *, since: float,
                        until: float, outages: Iterable[Past] = (),
                        latency: Iterable[ProbeResult] = ()) -> None:
    """One run of the monitor from `since` to `until`: every target confirmed up at
    `since`, then the outages, then the probe results (for the latency rollups)."""
    clock = Clock(since)
    async with SqliteStore(path, clock=clock) as store:
        await store.start_run(location, since)
        for name in targets:
            await store.apply_transition(location, Transition(
                name, State.UNKNOWN, State.UP, since, probe(name, since)))
        for o in sorted(outages, key=lambda o: o.start):
            clock.now = o.start
            failed = probe(o.target, o.start, failure=o.cause, message=o.message)
            await store.apply_transition(location, Transition(
                o.target, State.UP, State.DOWN, o.start, failed, first_failure=failed,
                failures={o.cause.value: 3}))
            clock.now = o.end
            await store.apply_transition(location, Transition(
                o.target, State.DOWN, State.UP, o.end, probe(o.target, o.end)))
        for result in latency:
            store.record_result(location, result)
        clock.now = until
        await store.end_run(until)
