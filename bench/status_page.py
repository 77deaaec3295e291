"""How long `monitor run` takes to answer the status page with 1,000 and 10,000 targets.

    .venv/bin/python bench/status_page.py [--targets 1000,10000] [--requests 20]

For each size: a history file is written through the store's own interface (90 days of
one run, two outages per target at random times, 24 h of latency rollups at one probe
every 10 minutes), then `monitor run` starts on it with that many targets (probing a
closed loopback port once an hour, so probing costs nearly nothing) and the benchmark
times GET requests over loopback, one at a time, after one warm-up each:

- `/` (the first 50 targets, down first, with their history), `/?page=N` (the last page),
  `/?q=...` (a search), `/target/NAME`, `/badge/NAME/uptime.svg`;
- honest baselines from the same daemon in the same run: `/api/v1/targets` (the live
  state of every target as JSON: what the old bare table was built from) and `/healthz`
  (the HTTP round trip alone);
- in this process: the old bare table (one row per target, no history) rendered from that
  JSON, and the new page's HTML for all targets at once (no paging), from the store's
  history of all of them: what paging saves.

Prints median and 95th percentile milliseconds. Nothing passes or fails on a time.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MonitorProcess, free_port, write_monitor_config
from monitor.model import Failure, ProbeResult, State, Transition
from monitor.store import SqliteReader, SqliteStore
from monitor.web import page
from monitor.web.routes import listing

DAY = 86400.0


async def write_history(path: Path, count: int, now: float) -> None:
    rng = random.Random(7)
    since = now - 90 * DAY
    clock = [since]
    async with SqliteStore(path, clock=lambda: clock[0]) as store:
        await store.start_run("bench", since)
        for i in range(count):
            ok = ProbeResult(f"t{i}", since, 0.01, True)
            await store.apply_transition("bench", Transition(f"t{i}", State.UNKNOWN, State.UP,
                                                             since, ok))
        events = sorted((rng.uniform(since, now - 3600), f"t{rng.randrange(count)}")
                        for _ in range(2 * count))
        down: set[str] = set()
        for start, name in events:
            if name in down:
                continue
            clock[0] = start
            bad = ProbeResult(name, start, 1.0, False, Failure.CONNECT, "connection refused")
            await store.apply_transition("bench", Transition(
                name, State.UP, State.DOWN, start, bad, first_failure=bad, failures={"connect": 3}))
            end = start + rng.uniform(60, 3600)
            await store.apply_transition("bench", Transition(
                name, State.DOWN, State.UP, end, ProbeResult(name, end, 0.01, True)))
        for m in range(0, 1440, 10):
            at = now - m * 60
            for i in range(count):
                store.record_result("bench", ProbeResult(f"t{i}", at, rng.uniform(0.01, 0.3),
                                                         True))
            if m % 100 == 0:
                await store.flush()
        clock[0] = now
        await store.end_run(now)


def old_table(targets: list[dict[str, Any]]) -> str:
    """The status page before issue 10: one row per target, no history (as it was)."""
    rows = []
    for t in targets:
        last = t.get("last_result") or {}
        detail = "" if last.get("ok", True) else f"{last.get('failure')}: {last.get('message')}"
        ratio = (t.get("uptime") or {}).get("30d")
        rows.append(
            f"<tr class='{escape(t['state'])}'><td>{escape(t['name'])}</td>"
            f"<td>{escape(t['url'])}</td><td class='state'>{escape(t['state'].upper())}</td>"
            f"<td>{escape(t.get('state_since') or '')}</td>"
            f"<td>{'' if ratio is None else f'{ratio * 100:.3f}%'}</td>"
            f"<td>{escape(detail)}</td></tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def figures(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms"


async def timed(session: aiohttp.ClientSession, url: str, n: int) -> tuple[list[float], int]:
    times, size = [], 0
    for i in range(n + 1):
        began = time.perf_counter()
        async with session.get(url) as r:
            body = await r.read()
            assert r.status == 200, (url, r.status)
        if i:  # the first one warms up
            times.append(time.perf_counter() - began)
        size = len(body)
    return times, size


def in_process(fn: Any, n: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(n):
        began = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - began)
    return times, size


async def one_size(count: int, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        now = time.time()
        began = time.perf_counter()
        await write_history(work / "monitor.db", count, now)
        print(f"\n{count:,} targets (history written in {time.perf_counter() - began:.0f} s)")
        port = free_port()
        write_monitor_config(work / "monitor.yaml", targets=count, interval=3600,
                             base_url="http://127.0.0.1:9", port=port, timeout=1)
        daemon = MonitorProcess(work / "monitor.yaml", port)
        await daemon.start()
        try:
            base = daemon.base
            last = -(-count // 50)
            async with aiohttp.ClientSession(auto_decompress=False) as s:  # size on the wire
                for label, path in (
                        ("/", "/"),
                        (f"/?page={last}", f"/?page={last}"),
                        ("/?q=t1234 (search)", "/?q=t1234"),
                        ("/target/t7", "/target/t7"),
                        ("/badge/t7/uptime.svg", "/badge/t7/uptime.svg"),
                        ("/api/v1/targets (baseline)", "/api/v1/targets"),
                        ("/healthz (round trip)", "/healthz")):
                    times, size = await timed(s, base + path, n)
                    print(f"  GET {label:28} {figures(times)}   {size / 1024:8.0f} KiB")
                async with s.get(base + "/api/v1/targets") as r:
                    targets = json.loads(gzip.decompress(body) if (body := await r.read())
                                         [:2] == b"\x1f\x8b" else body)["targets"]
        finally:
            await daemon.stop()
        times, size = in_process(lambda: old_table(targets), n)
        print(f"  old bare table, all targets   {figures(times)}   {size / 1024:8.0f} KiB"
              "  (in process)")
        with SqliteReader(work / "monitor.db") as reader:
            chosen, _ = listing(targets, {})
            unpaged = page.Listing(per_page=count, total=count, counts=chosen.counts)

            def everything() -> str:
                found = reader.history("bench", now, [t["name"] for t in targets])
                return page.render_index(location="bench", now=now, offline=None,
                                         targets=targets, history=found, listing=unpaged,
                                         peers=[], recent=[])

            times, size = in_process(everything, max(1, n // 5) if count <= 1000 else 1)
        print(f"  new page, all targets, no paging {figures(times)}   {size / 1024:8.0f} KiB"
              "  (in process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="1000,10000")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    for count in (int(c) for c in args.targets.split(",")):
        asyncio.run(one_size(count, args.requests))


if __name__ == "__main__":
    main()
