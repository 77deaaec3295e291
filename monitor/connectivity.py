"""Is the monitor itself online? Tells the machine's network outage from the sites'.

A failure of class dns, connect or timeout may be this machine's network, not the site.
The rule (README, "Offline detection"):
- With `connectivity.checks` (TCP host:port endpoints): a network-level failure counts
  against its site only once a check round that started after that probe failed reached at
  least one endpoint. When a round reaches none, the monitor is offline; rounds repeat every
  `interval` (and after a success while offline), and the first round that reaches an
  endpoint brings it back. Rounds start at most once a second, shared by every waiting probe.
- Without checks, if `failing_share` is set (it is off by default: from inside, a real
  outage of most sites at once looks the same): the monitor is offline while at least that
  share of the distinct hosts probed recently, and at least `min_hosts` of them, failed
  their latest probe at network level; the next result that breaks the rule brings it back.
- Neither: every result counts against its site.

While offline every result is rewritten to class `local` ("monitor offline: <class>: ..."),
which the tracker skips: nothing opens, extends or closes an outage. The owner learns of
each change through `on_change` (the app ends and starts the store's run there).

Imports the standard library, monitor.model and monitor.tasks only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlsplit

from monitor.model import Failure, ProbeResult, Target
from monitor.tasks import cancel, guarded_loop

log = logging.getLogger("monitor.connectivity")

NETWORK_FAILURES = frozenset({Failure.DNS, Failure.CONNECT, Failure.TIMEOUT})
MIN_ROUND_GAP = 1.0  # seconds between the starts of two check rounds (spares the anchors)


class Settings(Protocol):
    """What this module needs from the configuration (`monitor.config.ConnectivityConfig`)."""

    @property
    def checks(self) -> tuple[str, ...]: ...
    @property
    def interval(self) -> float: ...
    @property
    def timeout(self) -> float: ...
    @property
    def failing_share(self) -> float | None: ...
    @property
    def min_hosts(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Change:
    """The monitor went offline (`offline`) or came back, at `at`, because of `evidence`."""

    offline: bool
    at: float
    evidence: str


def as_local(result: ProbeResult) -> ProbeResult:
    """The result rewritten as unknown: the monitor was offline when it ran."""
    was = "ok" if result.ok else (result.failure or Failure.ERROR).value
    detail = f": {result.message}" if result.message else ""
    return replace(result, ok=False, failure=Failure.LOCAL,
                   message=f"monitor offline: {was}{detail}")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


async def check_endpoint(endpoint: str, limit: float) -> str | None:
    """None if a TCP connection to `endpoint` opens within `limit` seconds, else why not."""
    host, port = split_endpoint(endpoint)
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"{endpoint}: no answer in {limit:g}s"
    except OSError as exc:
        return f"{endpoint}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


class Connectivity:
    """Decides whether each result says something about its site, or the monitor is offline."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_change: Callable[[Change], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._on_change = on_change
        self._clock = clock
        self.offline = False
        self.since: float | None = None  # when the current offline period began
        self.evidence = ""
        self._lock = asyncio.Lock()  # one change at a time, in order
        self._round: asyncio.Task[bool] | None = None
        self._round_started = float("-inf")
        self._last: tuple[float, bool] | None = None  # last finished round: start, reached
        self._earliest_failure: float | None = None  # oldest probe waiting on the round
        self._latest: dict[str, tuple[float, bool, float]] = {}  # host → at, network failure, ttl
        self._loop_task: asyncio.Task[None] | None = None

    # --- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Connectivity:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the periodic check rounds if there are checks (after a reload that added
        some too); a round while there are none does nothing."""
        if self.settings.checks and (self._loop_task is None or self._loop_task.done()):
            self._loop_task = asyncio.create_task(guarded_loop(
                "connectivity check round", self._check_round, lambda: self.settings.interval,
                logger=log), name="monitor-connectivity")

    async def stop(self) -> None:
        """Stop the rounds. Safe in any state: never started, or stopped twice."""
        tasks = self._loop_task, self._round
        self._loop_task = self._round = None
        await cancel(*tasks)

    def status(self) -> dict[str, object] | None:
        """For the API and the status page: None while online."""
        if not self.offline:
            return None
        return {"since": self.since, "evidence": self.evidence}

    # --- the verdict on one result -------------------------------------------------------

    async def judge(self, result: ProbeResult, target: Target) -> ProbeResult:
        """The result as the pipeline must count it: rewritten to `local` while offline."""
        network = not result.ok and result.failure in NETWORK_FAILURES
        if self.settings.checks:
            if self.offline:
                if result.ok:  # evidence the network is back: check now
                    self._kick()
                return as_local(result)
            # The check must come after the failure: a round that only preceded it proves
            # nothing about the network at the time the probe failed.
            ended = result.started_at + result.duration
            if network and not await self._reached_after(ended, began=result.started_at):
                return as_local(result)
            return result
        if self.settings.failing_share is None:
            return result
        return await self._judge_by_share(result, target, network)

    async def _judge_by_share(self, result: ProbeResult, target: Target,
                              network: bool) -> ProbeResult:
        host = urlsplit(target.url).hostname or target.url
        now = self._clock()
        # A host's latest result counts for two of its target's intervals (and its timeout).
        self._latest[host] = (now, network, 2 * target.interval + target.timeout)
        fresh = [failed for at, failed, ttl in self._latest.values() if now - at <= ttl]
        failing = sum(fresh)
        share = self.settings.failing_share or 1.0
        offline = failing >= self.settings.min_hosts and failing >= share * len(fresh)
        if offline != self.offline:
            outcome = "ok" if result.ok else result.failure
            evidence = (f"{failing} of {len(fresh)} hosts failing with dns, connect or timeout"
                        if offline else f"{host} answered ({outcome})")
            await self._change(offline, result.started_at if offline else now, evidence)
        return as_local(result) if self.offline else result

    def forget(self, url: str) -> None:
        """A target was removed: its host's latest result no longer counts."""
        self._latest.pop(urlsplit(url).hostname or url, None)

    # --- check rounds ---------------------------------------------------------------------

    async def _check_round(self) -> None:
        if self.settings.checks:  # removed by a reload: the loop idles
            await self._reached_after(self._clock())

    def _kick(self) -> None:
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._run_round())

    async def _reached_after(self, started: float, began: float | None = None) -> bool:
        """Whether a check round that began at or after `started` reached an endpoint.

        `began`: when the failed probe that asks began; an offline period starts there.
        """
        began = started if began is None else began
        if self._earliest_failure is None or began < self._earliest_failure:
            self._earliest_failure = began
        for _ in range(3):  # a running round may predate `started`; the next one cannot
            if self._last is not None and self._last[0] >= started:
                return self._last[1]
            self._kick()
            assert self._round is not None
            await asyncio.shield(self._round)
        return self._last[1] if self._last is not None else True

    async def _run_round(self) -> bool:
        wait = self._round_started + MIN_ROUND_GAP - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        started = self._round_started = self._clock()
        earliest, self._earliest_failure = self._earliest_failure, None
        checks: Sequence[str] = self.settings.checks
        if not checks:  # removed by a reload: the failing-share rule decides from now on
            self._last = (started, True)
            if self.offline:
                await self._change(False, started, "connectivity checks removed")
            return True
        timeout = self.settings.timeout
        problems = await asyncio.gather(*(check_endpoint(c, timeout) for c in checks))
        reached = [c for c, p in zip(checks, problems, strict=True) if p is None]
        self._last = (started, bool(reached))
        if not reached and not self.offline:
            evidence = "no connectivity check answered: " + "; ".join(p for p in problems if p)
            at = min(started, earliest) if earliest is not None else started
            await self._change(True, at, evidence)
        elif reached and self.offline:
            await self._change(False, started, f"{reached[0]} answered")
        return bool(reached)

    async def _change(self, offline: bool, at: float, evidence: str) -> None:
        async with self._lock:
            if offline == self.offline:
                return
            self.offline, self.evidence = offline, evidence
            self.since = at if offline else None
            try:
                await self._on_change(Change(offline, at, evidence))
            except Exception:  # e.g. the store: the verdict stands, the error is logged
                log.exception("recording that the monitor went %s failed",
                              "offline" if offline else "online")
