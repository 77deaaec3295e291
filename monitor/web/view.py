"""What the status page may ask of the daemon, and the recent probes it keeps for it."""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from monitor.model import PHASES, Failure, Outage, OutageQuery, OutageTime, ProbeResult
from monitor.store.base import TargetHistory

TimedOutage = tuple[Outage, OutageTime]
RECENT_PROBES = 20  # per target, for the phases on /target/NAME


class Unavailable(Exception):
    """The daemon cannot answer from its history right now (the store cannot be read)."""


class StatusView(Protocol):
    """The daemon as the pages see it (`monitor.app.Monitor`)."""

    location: str

    def now(self) -> float: ...
    def targets_json(self) -> list[dict[str, Any]]: ...
    def target_json(self, name: str) -> dict[str, Any] | None:
        """One target as `targets_json` shows it; None if this monitor does not probe it."""
    def offline_json(self) -> dict[str, Any] | None: ...
    async def outages(self, query: OutageQuery) -> list[TimedOutage]:
        """This monitor's outages `query` asks for, newest first, each with its known and
        unknown time as of now. Raises Unavailable when the history cannot be read."""
    async def history(self, names: Collection[str]) -> Mapping[str, TargetHistory]:
        """The history of the named targets from this location (`Store.history`).
        Raises Unavailable when it cannot be read."""
    def recent_results(self, name: str) -> Sequence[ProbeResult]:
        """The latest probes of a target, oldest first (at most RECENT_PROBES)."""


class RecentResults:
    """The last `keep` results per target, in memory, packed.

    Each target's results sit in one `bytearray` ring of fixed-size records, written in
    place; messages, which most results do not have, in a tuple beside it. Neither is seen
    by the garbage collector (no references), and a record takes 54 bytes where a result
    object with its phases takes about 600: at 100,000 targets the rings are 108 MB and no
    full collection walks them (docs/design.md, "Memory and the garbage collector").
    Durations and phases are kept as 32-bit floats (about 7 digits: well below the
    microsecond for any probe shorter than a minute).
    """

    def __init__(self, keep: int = RECENT_PROBES) -> None:
        if not 1 <= keep <= 127:  # the ring's count byte goes up to 2 × keep - 1
            raise ValueError(f"keep must be 1..127, not {keep}")
        self.keep = keep
        self._rings: dict[str, bytearray] = {}  # byte 0: results written so far, capped
        self._messages: dict[str, tuple[str, ...]] = {}  # by slot, when any is not empty

    def add(self, result: ProbeResult) -> None:
        ring = self._rings.get(result.target)
        if ring is None:
            ring = self._rings[result.target] = bytearray(1 + self.keep * _RECORD.size)
        written = ring[0]
        slot = written % self.keep
        _RECORD.pack_into(ring, 1 + slot * _RECORD.size, *_record(result))
        # Counts past `keep` only to know the oldest slot: wraps at a multiple of keep.
        ring[0] = written + 1 if written + 1 < 2 * self.keep else self.keep
        messages = self._messages.get(result.target)
        if messages is None and not result.message:
            return
        updated = list(messages or ("",) * self.keep)
        updated[slot] = result.message
        if any(updated):
            self._messages[result.target] = tuple(updated)
        else:
            del self._messages[result.target]

    def of(self, name: str) -> list[ProbeResult]:
        """The target's results, oldest first."""
        ring = self._rings.get(name)
        if ring is None:
            return []
        written = ring[0]
        slots = (range(written) if written <= self.keep
                 else [(written + i) % self.keep for i in range(self.keep)])
        return [self._at(name, ring, slot) for slot in slots]

    def latest(self, name: str) -> ProbeResult | None:
        ring = self._rings.get(name)
        if ring is None:
            return None
        return self._at(name, ring, (ring[0] - 1) % self.keep)

    def _at(self, name: str, ring: bytearray, slot: int) -> ProbeResult:
        messages = self._messages.get(name)
        return _result(name, _RECORD.unpack_from(ring, 1 + slot * _RECORD.size),
                       messages[slot] if messages else "")

    def forget(self, names: Collection[str]) -> None:
        for name in names:
            self._rings.pop(name, None)
            self._messages.pop(name, None)


# started_at, duration, ok, failure, status, phase, truncated, cert_expiry, rtt, loss, phases
_RECORD = struct.Struct(f"<df?BHB?dff{len(PHASES)}f")
_FAILURES = (None, *Failure)  # index 0: none
_PHASE_CODES = {name: i for i, name in enumerate(PHASES, start=1)}
_NAN = math.nan


def _record(r: ProbeResult) -> tuple[Any, ...]:
    return (r.started_at, r.duration, r.ok, 0 if r.failure is None else _FAILURES.index(r.failure),
            r.status or 0, _PHASE_CODES.get(r.phase, 0) if r.phase else 0, r.truncated,
            _NAN if r.cert_expiry is None else r.cert_expiry, _NAN if r.rtt is None else r.rtt,
            _NAN if r.loss is None else r.loss, *(r.phases.get(p, _NAN) for p in PHASES))


def _result(name: str, fields: tuple[Any, ...], message: str) -> ProbeResult:
    (started_at, duration, ok, failure, status, phase, truncated, cert_expiry, rtt, loss,
     *phases) = fields
    return ProbeResult(
        target=name, started_at=started_at, duration=duration, ok=ok,
        failure=_FAILURES[failure], message=message, status=status or None,
        phases={p: v for p, v in zip(PHASES, phases, strict=True) if v == v},  # NaN: absent
        phase=PHASES[phase - 1] if phase else None, truncated=truncated,
        cert_expiry=None if cert_expiry != cert_expiry else cert_expiry,
        rtt=None if rtt != rtt else rtt, loss=None if loss != loss else loss)
