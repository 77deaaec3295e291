"""The tracker turns results into transitions exactly as docs/design.md "Outage semantics" says."""

from __future__ import annotations

import pytest

from monitor.model import Failure, ProbeResult, State, Transition
from monitor.tracker import TargetTracker

T0 = 1_700_000_000.0
INTERVAL = 60.0
CODES = {
    "H": Failure.HTTP,
    "T": Failure.TIMEOUT,
    "C": Failure.CONNECT,
    "D": Failure.DNS,
    "E": None,  # a failure without a class counts as "error"
    "L": Failure.LOCAL,  # the monitor's own fault: no evidence about the target
}


def results(pattern: str) -> list[ProbeResult]:
    """One result per letter, one interval apart: S is a success, other letters failures."""
    return [
        ProbeResult(
            target="site",
            started_at=T0 + i * INTERVAL,
            duration=0.2,
            ok=code == "S",
            failure=None if code == "S" else CODES[code],
            message="" if code == "S" else f"failure {i}",
        )
        for i, code in enumerate(pattern)
    ]


def run(tracker: TargetTracker, pattern: str) -> list[Transition]:
    transitions = [tracker.observe(r) for r in results(pattern)]
    return [t for t in transitions if t is not None]


def summary(transitions: list[Transition]) -> list[tuple[str, int, dict[str, int]]]:
    """(new state, index of the probe the transition is dated by, failure counts)."""
    return [(t.state.value, int((t.at - T0) / INTERVAL), dict(t.failures)) for t in transitions]


@pytest.mark.parametrize(
    ("pattern", "down_after", "up_after", "expected"),
    [
        pytest.param("", 3, 1, [], id="nothing-yet"),
        pytest.param("SSS", 3, 1, [("up", 0, {})], id="first-success-confirms-up"),
        pytest.param("HH", 3, 1, [], id="two-failures-stay-unknown"),
        pytest.param("HHH", 3, 1, [("down", 0, {"http": 3})], id="unknown-to-down"),
        pytest.param("SHS", 3, 1, [("up", 0, {})], id="blip"),
        pytest.param("SHHSHHSH", 3, 1, [("up", 0, {})], id="repeated-blips"),
        pytest.param(
            "SHHHHS",
            3,
            1,
            [("up", 0, {}), ("down", 1, {"http": 3}), ("up", 5, {"http": 1})],
            id="outage-and-recovery",
        ),
        pytest.param(
            "STCHS",
            3,
            1,
            [("up", 0, {}), ("down", 1, {"timeout": 1, "connect": 1, "http": 1}), ("up", 4, {})],
            id="mixed-classes",
        ),
        pytest.param("SEEE", 3, 1, [("up", 0, {}), ("down", 1, {"error": 3})], id="no-class"),
        pytest.param(
            "SHSHSH",
            1,
            1,
            [
                ("up", 0, {}),
                ("down", 1, {"http": 1}),
                ("up", 2, {}),
                ("down", 3, {"http": 1}),
                ("up", 4, {}),
                ("down", 5, {"http": 1}),
            ],
            id="alternating-down-after-1",
        ),
        pytest.param("HSHSHS", 2, 1, [("up", 1, {})], id="alternating-down-after-2"),
        pytest.param("HSHSHS", 2, 2, [], id="alternating-never-confirms"),
        pytest.param("SSHSSS", 3, 3, [("up", 3, {})], id="unknown-to-up-needs-up-after"),
        pytest.param(
            "HHHSHSSH",
            3,
            2,
            [("down", 0, {"http": 3}), ("up", 5, {"http": 1})],
            id="up-after-2-interrupted-recovery",
        ),
        pytest.param("SHLLHLH", 3, 1, [("up", 0, {}), ("down", 1, {"http": 3})],
                     id="local-faults-neither-break-nor-extend-a-run"),
        pytest.param("LLLLL", 1, 1, [], id="local-faults-never-confirm"),
        pytest.param("HHHLLLS", 3, 1, [("down", 0, {"http": 3}), ("up", 6, {})],
                     id="local-faults-while-down-are-not-failures"),
        pytest.param(
            "HHHHDDS", 3, 1, [("down", 0, {"http": 3}), ("up", 6, {"http": 1, "dns": 2})], id="long"
        ),
    ],
)
def test_transitions(
    pattern: str, down_after: int, up_after: int, expected: list[tuple[str, int, dict[str, int]]]
) -> None:
    tracker = TargetTracker(down_after=down_after, up_after=up_after)
    assert summary(run(tracker, pattern)) == expected


def test_transition_details() -> None:
    tracker = TargetTracker(down_after=3, up_after=2)
    probes = results("SSHTHHSS")
    transitions = [t for t in map(tracker.observe, probes) if t is not None]
    up, down, back = transitions

    assert (up.previous, up.state, up.at, up.result) == (
        State.UNKNOWN,
        State.UP,
        probes[0].started_at,
        probes[1],
    )
    assert up.first_failure is None
    # Dated by the first failing probe, confirmed by the third.
    assert (down.previous, down.state, down.at) == (State.UP, State.DOWN, probes[2].started_at)
    assert down.first_failure == probes[2]
    assert down.result == probes[4]
    assert down.failures == {"http": 2, "timeout": 1}
    assert (back.previous, back.state, back.at, back.result) == (
        State.DOWN,
        State.UP,
        probes[6].started_at,
        probes[7],
    )
    assert back.failures == {"http": 1}  # the failure seen after → down
    assert (tracker.state, tracker.since) == (State.UP, probes[6].started_at)


def test_resume_down_recovers_with_failures_since_restart() -> None:
    tracker = TargetTracker.resume(State.DOWN, T0 - 3600, down_after=3, up_after=1)
    assert (tracker.state, tracker.since) == (State.DOWN, T0 - 3600)
    assert summary(run(tracker, "HHS")) == [("up", 2, {"http": 2})]
    assert run(tracker, "") == []


def test_resume_up_needs_a_full_run_to_go_down() -> None:
    tracker = TargetTracker.resume(State.UP, T0 - 3600, down_after=2, up_after=1)
    transitions = run(tracker, "SHSHH")
    assert [(t.previous, t.state) for t in transitions] == [(State.UP, State.DOWN)]
    assert summary(transitions) == [("down", 3, {"http": 2})]


def test_new_thresholds_keep_state_and_current_run() -> None:
    tracker = TargetTracker(down_after=5, up_after=1)
    assert summary(run(tracker, "SHH")) == [("up", 0, {})]
    tracker = tracker.with_thresholds(down_after=3, up_after=2)
    assert (tracker.state, tracker.since, tracker.down_after, tracker.up_after) == (
        State.UP,
        T0,
        3,
        2,
    )
    # The run of two failures goes on: one more reaches the new threshold, dated by its start.
    down = tracker.observe(results("SHHH")[3])
    assert down is not None
    assert (down.state, down.at, dict(down.failures)) == (State.DOWN, T0 + INTERVAL, {"http": 3})


def test_copy_does_not_share_counts() -> None:
    tracker = TargetTracker(down_after=3)
    run(tracker, "HH")
    copy = tracker.with_thresholds(3, 1)
    run(copy, "S")
    assert tracker.run_failures == {"http": 2}


@pytest.mark.parametrize(("down_after", "up_after"), [(0, 1), (1, 0), (-1, 1)])
def test_thresholds_must_be_positive(down_after: int, up_after: int) -> None:
    with pytest.raises(ValueError, match="thresholds must be at least 1"):
        TargetTracker(down_after=down_after, up_after=up_after)
