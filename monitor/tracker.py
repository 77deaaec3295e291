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

from collections import Counter
from dataclasses import dataclass, field

from monitor.model import Failure, ProbeResult, State, Transition


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
    # The current run: consecutive results with the same outcome.
    run_first: ProbeResult | None = None
    run_length: int = 0
    run_failures: Counter[str] = field(default_factory=Counter)
    # Failures seen while down, after the → down transition (reported by the → up transition).
    down_failures: Counter[str] = field(default_factory=Counter)

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
            run_first=self.run_first,
            run_length=self.run_length,
            run_failures=Counter(self.run_failures),
            down_failures=Counter(self.down_failures),
        )

    def observe(self, result: ProbeResult) -> Transition | None:
        """Account for one result; return the transition it confirms, if any."""
        if result.unknown:  # the monitor's own fault: no evidence either way, the run goes on
            return None
        if self.run_first is None or self.run_first.ok != result.ok:
            self.run_first = result
            self.run_length = 0
            self.run_failures = Counter()
        self.run_length += 1
        if not result.ok:
            self.run_failures[failure_class(result)] += 1
            if self.state is State.DOWN:
                self.down_failures[failure_class(result)] += 1

        new = State.UP if result.ok else State.DOWN
        needed = self.up_after if result.ok else self.down_after
        if new is self.state or self.run_length < needed:
            return None

        transition = Transition(
            target=result.target,
            previous=self.state,
            state=new,
            at=self.run_first.started_at,
            result=result,
            first_failure=None if result.ok else self.run_first,
            failures=dict(self.down_failures if result.ok else self.run_failures),
        )
        self.state = new
        self.since = transition.at
        self.down_failures = Counter()
        return transition
