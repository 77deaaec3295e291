"""Tells the log when a target's proxy stops working, and when it works again.

A `proxy` result is unknown (no outage opens), so without this a dead proxy would only show
in metrics (`monitor_probes_total{result="local"}`) and on the status page. One line per
change, per target, not per probe. The daemon calls `observe()` with every result.

Imports: stdlib, monitor.model.
"""

from __future__ import annotations

import logging

from monitor.model import Failure, ProbeResult

__all__ = ["ProxyLog"]

log = logging.getLogger("monitor")


class ProxyLog:
    """Remembers which targets' proxies are failing; logs each change once."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def observe(self, result: ProbeResult) -> None:
        failed = result.failure is Failure.PROXY
        if failed == (result.target in self.failing):
            return
        if failed:
            self.failing.add(result.target)
            log.warning("%s: its proxy failed (%s); results are unknown until it works",
                        result.target, result.message)
        elif result.failure is not Failure.LOCAL:  # offline says nothing of the proxy
            self.failing.discard(result.target)
            log.warning("%s: its proxy works again", result.target)
