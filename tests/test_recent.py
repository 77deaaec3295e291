"""What the daemon keeps per target between probes: packed, exact enough, out of the GC's sight.

At 100,000 targets every object the daemon keeps per target is walked by each full garbage
collection; these tests pin down that the recent results and the tracker's run keep none.
"""

from __future__ import annotations

import gc

import pytest

from monitor.model import PHASES, Failure, ProbeResult, State
from monitor.tracker import TargetTracker
from monitor.web.view import RecentResults


def result(i: int, ok: bool = True, message: str = "", **fields: object) -> ProbeResult:
    return ProbeResult(target="site", started_at=1_700_000_000.25 + 60 * i,
                       duration=0.0125 + i / 1000, ok=ok,
                       failure=None if ok else Failure.TIMEOUT, message=message,
                       phases={"resolve": 0.001, "connect": 0.002 + i / 10_000}, **fields)  # type: ignore[arg-type]


def close(a: ProbeResult, b: ProbeResult) -> bool:
    """Equal but for 32-bit floats in durations and phases."""
    assert a.phases.keys() == b.phases.keys()
    return (a.target, a.started_at, a.ok, a.failure, a.message, a.status, a.phase,
            a.cert_expiry, a.truncated) == (b.target, b.started_at, b.ok, b.failure, b.message,
                                             b.status, b.phase, b.cert_expiry, b.truncated) \
        and a.duration == pytest.approx(b.duration, rel=1e-6) \
        and all(a.phases[k] == pytest.approx(b.phases[k], rel=1e-6) for k in a.phases)


def test_the_ring_keeps_the_last_results_oldest_first_across_wrapping() -> None:
    recent = RecentResults(keep=5)
    assert recent.of("site") == [] and recent.latest("site") is None
    sent = [result(i) for i in range(23)]  # wraps several times, and past the count's cap
    for n, r in enumerate(sent, start=1):
        recent.add(r)
        kept = recent.of("site")
        assert len(kept) == min(n, 5)
        assert [k.started_at for k in kept] == [s.started_at for s in sent[max(0, n - 5):n]]
        latest = recent.latest("site")
        assert latest is not None and close(latest, r)


def test_every_field_survives_packing() -> None:
    recent = RecentResults(keep=3)
    full = ProbeResult(target="site", started_at=1_700_000_123.456789, duration=2.5, ok=False,
                       failure=Failure.HTTP, message="HTTP 503", status=503,
                       phases={p: 0.001 * (i + 1) for i, p in enumerate(PHASES)},
                       phase="transfer", cert_expiry=1_800_000_000.5, truncated=True,
                       rtt=0.0042, loss=0.25)
    bare = ProbeResult(target="site", started_at=1_700_000_200.0, duration=0.0, ok=True)
    for r in (full, bare):
        recent.add(r)
    got_full, got_bare = recent.of("site")
    assert close(got_full, full)
    assert got_full.rtt == pytest.approx(0.0042) and got_full.loss == 0.25
    assert got_bare == bare  # every absent field comes back absent, not 0


def test_messages_stay_with_their_result_and_vanish_when_no_longer_kept() -> None:
    recent = RecentResults(keep=3)
    recent.add(result(0, ok=False, message="timed out after 10s"))
    recent.add(result(1))
    recent.add(result(2, ok=False, message="connection refused"))
    messages = [r.message for r in recent.of("site")]
    assert messages == ["timed out after 10s", "", "connection refused"]
    for i in range(3, 6):
        recent.add(result(i))
    assert [r.message for r in recent.of("site")] == ["", "", ""]
    assert recent._messages == {}  # nothing kept for results that say nothing


def test_forgotten_targets_keep_nothing() -> None:
    recent = RecentResults()
    recent.add(result(0, ok=False, message="x"))
    recent.forget(["site"])
    assert recent.of("site") == [] and recent.latest("site") is None


def test_what_is_kept_per_target_is_out_of_the_collectors_sight() -> None:
    recent = RecentResults()
    tracker = TargetTracker(down_after=3)
    for i in range(30):
        r = result(i, ok=i % 7 != 0, message="" if i % 7 else "timed out")
        recent.add(r)
        tracker.observe(r)
    tracker.observe(result(31, ok=False, message="refused"))  # a failing run is going on
    assert tracker.state is State.UP and tracker.run_first_failure is not None
    gc.collect()  # a pass untracks tuples and dicts that hold only numbers and strings
    kept = [*recent._rings.values(), *recent._messages.values(),
            tracker.run_first_failure, tracker.run_failures, tracker.down_failures]
    assert [gc.is_tracked(k) for k in kept] == [False] * len(kept)


def test_packed_values_rebuild_the_same_result() -> None:
    r = result(3, ok=False, message="m", status=502, phase="connect", rtt=0.1)
    assert ProbeResult.from_values(r.values()) == r
