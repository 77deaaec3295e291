"""Tracker: turns one target's probe results into confirmed state changes.

A pure state machine, one per target: no I/O and no clock of its own (all times come from
the results). Imports only `monitor.model`.

Rules (docs/design.md, "Outage semantics"):
- The state is `unknown` until the first confirmation.
- `down_after` consecutive failures confirm `down`; `up_after` consecutive successes confirm
  `up`. A shorter run of failures between successes (a blip) changes nothing.
- A transition is dated by the start of the *first* probe of the confirming run, so an outage
  starts at its first failing probe and ends at the first successful probe of the recovery.
- A result of class `local` (the monitor's own fault) is no evidence: it is skipped and
  neither starts, extends nor breaks a run.
- `Transition.failures` counts failures by class: for → down, the failures of the confirming
  run; for → up, the failures observed while down (after the → down transition). The store
  adds the second to the first when it closes the outage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.model import Failure, PackedResult, ProbeResult, State, Transition


def failure_class(result: ProbeResult) -> str:
    """The failure class of a failed result (a failure without a class counts as `error`)."""
    return (result.failure or Failure.ERROR).value


@dataclass
class TargetTracker:
    """Mutable run-time state of one target. Feed it results in the order the probes ran."""

    down_after: int = 3
    up_after: int = 1
    state: State = State.UNKNOWN
    since: float | None = None  # when the current state began (a transition's `at`)
    # The current run: consecutive results with the same outcome. Kept as plain values (a
    # float, a bool, a tuple, dicts of counts) rather than result objects: a tracker lives as
    # long as its target, and plain values stay out of the garbage collector's full passes.
    run_ok: bool | None = None  # None: no run yet
    run_started: float = 0.0  # start of the run's first probe
    run_first_failure: PackedResult | None = None  # a failing run's first result
    run_length: int = 0
    run_failures: dict[str, int] = field(default_factory=dict)
    # Failures seen while down, after the → down transition (reported by the → up transition).
    down_failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError(
                f"thresholds must be at least 1 (down_after={self.down_after}, "
                f"up_after={self.up_after})"
            )

    @classmethod
    def resume(
        cls, state: State, since: float | None, down_after: int = 3, up_after: int = 1
    ) -> TargetTracker:
        """A tracker continuing from a state saved before a restart (runs start afresh)."""
        return cls(down_after=down_after, up_after=up_after, state=state, since=since)

    def with_thresholds(self, down_after: int, up_after: int) -> TargetTracker:
        """A copy with new thresholds (config reload) that keeps the state and current run."""
        return TargetTracker(
            down_after=down_after,
            up_after=up_after,
            state=self.state,
            since=self.since,
            run_ok=self.run_ok,
            run_started=self.run_started,
            run_first_failure=self.run_first_failure,
            run_length=self.run_length,
            run_failures=dict(self.run_failures),
            down_failures=dict(self.down_failures),
        )

    def observe(self, result: ProbeResult) -> Transition | None:
        """Account for one result; return the transition it confirms, if any."""
        if result.unknown:  # the monitor's own fault: no evidence either way, the run goes on
            return None
        if self.run_ok is not result.ok:
            self.run_ok = result.ok
            self.run_started = result.started_at
            self.run_first_failure = None if result.ok else result.values()
            self.run_length = 0
            self.run_failures = {}
        self.run_length += 1
        if not result.ok:
            cls = failure_class(result)
            self.run_failures[cls] = self.run_failures.get(cls, 0) + 1
            if self.state is State.DOWN:
                self.down_failures[cls] = self.down_failures.get(cls, 0) + 1

        new = State.UP if result.ok else State.DOWN
        needed = self.up_after if result.ok else self.down_after
        if new is self.state or self.run_length < needed:
            return None

        transition = Transition(
            target=result.target,
            previous=self.state,
            state=new,
            at=self.run_started,
            result=result,
            first_failure=(None if self.run_first_failure is None
                           else ProbeResult.from_values(self.run_first_failure)),
            failures=dict(self.down_failures if result.ok else self.run_failures),
        )
        self.state = new
        self.since = transition.at
        self.down_failures = {}
        return transition
