"""Probes: one function per target kind, each turning a Target into a ProbeResult.

A probe never raises (except asyncio.CancelledError): every failure is a ProbeResult.
Imports: stdlib, the probe modules of this package, monitor.model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping

from monitor.model import Failure, ProbeResult, Target
from monitor.probes.http import probe_http
from monitor.probes.sanitize import clean, target_secrets

__all__ = ["PROBES", "Probe", "probe_http", "run_probe"]

Probe = Callable[[Target], Awaitable[ProbeResult]]

# Target.kind → probe. Add a kind here and in monitor.config's validation.
PROBES: Mapping[str, Probe] = {"http": probe_http}


async def run_probe(target: Target) -> ProbeResult:
    """Run the probe for `target.kind`; an unknown kind is a failed result, not an error.

    Every message leaves through `sanitize.clean()`, whichever probe wrote it.
    """
    probe = PROBES.get(target.kind)
    if probe is None:
        result = ProbeResult(
            target=target.name,
            started_at=time.time(),
            duration=0.0,
            ok=False,
            failure=Failure.ERROR,
            message=f"unknown probe kind {target.kind!r}",
        )
    else:
        result = await probe(target)
    if not result.message:  # most results: nothing to clean
        return result
    message = clean(result.message, target_secrets(target.url, target.headers, target.body))
    return result if message == result.message else dataclasses.replace(result, message=message)
