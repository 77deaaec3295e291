"""/metrics rendering cost: prometheus_client's generate_latest versus Metrics.exposition().

Builds a `Metrics` for N targets, each probed once (with a few failures, states, uptime
ratios and certificate expiries so that every family has samples), then renders the text
format both ways in this process and prints the time, the size, and for exposition() the
longest stretch it kept the event loop busy between two yields. With --check (default for
N <= 10,000) both texts are parsed and must hold exactly the same samples.

    .venv/bin/python bench/metrics_exposition.py [--targets 1000,10000,100000] [--no-histogram]

In-process, no network. Imports monitor.metrics, monitor.model and prometheus_client.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import UPTIME_WINDOWS, Metrics
from monitor.model import PHASES, Failure, ProbeResult, State, Target


def build(n: int, histogram: bool) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics("bench", registry, per_target_histogram=histogram,
                      store_errors=lambda: {"locked": 2}, clock=lambda: 2_000_000_000.0)
    targets = [Target(f"t{i}", f"https://site-{i}.example/path?q=1",
                      labels=(("team", f"team-{i % 7}"),) if i % 3 == 0 else ())
               for i in range(n)]
    metrics.set_targets(targets)
    phases = dict.fromkeys(PHASES, 0.002)
    failures = list(Failure)
    for i, t in enumerate(targets):
        if i % 50 == 0:
            failure = failures[i // 50 % len(failures)]
            result = ProbeResult(t.name, 1.7e9, 0.5, False, failure, "x", phases=phases)
        else:
            result = ProbeResult(t.name, 1.7e9, 0.01 * (i % 300), True, status=200,
                                 phases=phases, cert_expiry=1.8e9 if i % 2 else None)
        metrics.observe(result)
        metrics.set_state(t.name, State.DOWN if i % 50 == 0 else State.UP, 1.7e9)
        for window in UPTIME_WINDOWS:
            metrics.set_uptime(t.name, window, 0.999)
    metrics.lateness.observe(0.01)
    metrics.reload_success.set(1)
    return metrics, registry


async def render(metrics: Metrics) -> tuple[bytes, float, float]:
    """exposition() joined; total seconds and the longest stretch between two yields."""
    chunks: list[bytes] = []
    longest = 0.0
    began = last = time.perf_counter()
    async for chunk in metrics.exposition():
        chunks.append(chunk)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    return b"".join(chunks), time.perf_counter() - began, longest


def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 10_000, 100_000])
    parser.add_argument("--no-histogram", dest="histogram", action="store_false")
    parser.add_argument("--check", action="store_true", help="compare the samples at every N")
    args = parser.parse_args()
    print(f"per-target histogram {'on' if args.histogram else 'off'}")
    print("| targets | samples | size | generate_latest | exposition() | again, 1 % touched "
          "| longest loop block | same samples |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in args.targets:
        metrics, registry = build(n, args.histogram)
        began = time.perf_counter()
        reference = generate_latest(registry)
        slow = time.perf_counter() - began
        text, fast, longest = asyncio.run(render(metrics))
        # A later scrape: the static families' text of untouched chunks is reused. Between
        # two scrapes some targets change state or uptime: here 1 % of them, spread out.
        for i in range(0, n, 100):
            metrics.set_uptime(f"t{i}", "1d", 0.5)
        _, again, longest_again = asyncio.run(render(metrics))
        longest = max(longest, longest_again)
        same = "not checked"
        if args.check or n <= 10_000:
            same = "yes" if samples(text.decode()) == samples(reference.decode()) else "NO"
        lines = text.count(b"\n") - text.count(b"\n#")
        print(f"| {n:,} | {lines:,} | {len(text) / 2**20:.1f} MiB | {slow:.2f} s | {fast:.2f} s "
              f"| {again:.2f} s | {longest * 1000:.0f} ms | {same} |", flush=True)


if __name__ == "__main__":
    main()
