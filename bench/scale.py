"""Scale: one `monitor run` process watching N targets (10,000 and 100,000 by default).

All targets are paths /t/0 ... /t/N-1 of one loopback nginx (one location answers 200), every
`--interval` seconds (60 s: 100,000 targets ≈ 1,667 probes/s). After a ramp-up of one interval
plus a few seconds, a window of `--duration` seconds is measured:

- lateness: from nginx's access log ($msec per request, millisecond resolution): per target,
  how far each request arrives behind a perfectly regular schedule anchored at that target's
  earliest run (so it includes the connect time); plus the daemon's own
  monitor_scheduler_lateness_seconds histogram (bucket bounds only);
- missed runs: monitor_scheduler_missed_runs_total over ramp-up and window, and runs skipped
  in the window according to the access log (requests counted against N × duration / interval);
- CPU of the monitor (and of nginx, which shares the 2 cores) from /proc/PID/stat;
- peak RSS (VmHWM), start-up time (spawn → the "started:" log line);
- /metrics: scraped every `--scrape-every` s (15) from the start; the scrapes at the window's
  start, in it and after it are timed (median and longest, size in bytes);
- database growth: after a clean stop, SQLite's dbstat bytes of the minute and hour rollups
  per row, times 1,440 minute rows and 24 hour rows = bytes per target per day.

    .venv/bin/python bench/scale.py [--targets 10000,100000] [--interval 60] [--duration 300]
        [--no-histogram] [--uvloop] [--hold-dns] [--shard I/N]

Needs nginx-light. Loopback only; everything is written to a temp dir and removed.
Imports bench.common (stdlib, aiohttp); scrapes with curl; the monitor runs in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    MonitorProcess,
    Nginx,
    free_port,
    metric_samples,
    metric_sum,
    process_tree,
    tree_cpu_seconds,
    tree_status_kib,
    write_monitor_config,
)

RAMP_EXTRA = 5.0  # seconds after the first interval before the window opens
ON_TIME = 1.0  # a run is on time if its request reaches nginx at most this late


def lateness_from_log(log: Path, interval: float, since: float, until: float) -> tuple[
        list[float], int, int]:
    """Per-request lateness (s) in [since, until), requests in it, and runs skipped in it."""
    times: dict[str, list[float]] = {}
    with log.open() as f:
        for line in f:
            msec, _, uri = line.rstrip("\n").partition(" ")
            times.setdefault(uri, []).append(float(msec))
    late: list[float] = []
    count = skipped = 0
    for ts in times.values():
        ts.sort()
        first = ts[0]
        # Run k of this target is due at base + k × interval; base is its earliest run.
        ks = [round((t - first) / interval) for t in ts]
        base = min(t - k * interval for t, k in zip(ts, ks, strict=True))
        previous = None
        for t, k in zip(ts, ks, strict=True):
            if since <= t < until:
                late.append(t - base - k * interval)
                count += 1
                if previous is not None and k - previous > 1:
                    skipped += k - previous - 1
            previous = k
    return late, count, skipped


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def histogram_highest(before: str, after: str, name: str) -> str:
    """The bucket holding the window's largest observation ("<= 0.05s")."""
    def buckets(text: str) -> dict[float, float]:
        return {float(labels.split('le="')[1].split('"')[0]): value
                for labels, value in metric_samples(text, name + "_bucket")}

    b0, b1 = buckets(before), buckets(after)
    total = b1.get(float("inf"), 0.0) - b0.get(float("inf"), 0.0)
    for le in sorted(b1):
        if b1[le] - b0.get(le, 0.0) >= total:
            return f"<= {le:g}s"
    return "n/a"


def histogram_quantile(before: str, after: str, name: str, q: float) -> str:
    """The bucket bound under which a fraction q of the window's observations fall."""
    def buckets(text: str) -> dict[float, float]:
        out = {}
        for labels, value in metric_samples(text, name + "_bucket"):
            le = labels.split('le="')[1].split('"')[0]
            out[float(le)] = value
        return out

    b0, b1 = buckets(before), buckets(after)
    counts = sorted((le, b1[le] - b0.get(le, 0.0)) for le in b1)
    total = counts[-1][1] if counts else 0
    if not total:
        return "n/a"
    for le, n in counts:
        if n >= q * total:
            return f"<= {le:g}s"
    return "n/a"


def rollup_sizes(db_path: Path, targets: int) -> dict[str, float]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    out: dict[str, float] = {}
    for table in ("rollup_minute", "rollup_hour"):
        (size,) = db.execute("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (table,)).fetchone()
        (rows,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        out[f"{table}_bytes"] = size or 0
        out[f"{table}_rows"] = rows
    db.close()
    out["file_bytes"] = db_path.stat().st_size
    minute_row = out["rollup_minute_bytes"] / max(out["rollup_minute_rows"], 1)
    hour_row = out["rollup_hour_bytes"] / max(out["rollup_hour_rows"], 1)
    # Per-minute rollups are off by default: then only the hour rows grow.
    out["per_target_day"] = (minute_row * 1440 if out["rollup_minute_rows"] else 0) \
        + hour_row * 24
    out["minute_row"], out["hour_row"] = minute_row, hour_row
    return out


async def scrape(daemon: MonitorProcess, tmp: Path) -> tuple[bytes, float]:
    """GET /metrics with curl, as fast a client as Prometheus: the time is the daemon's, not
    a Python client's reading 190 MiB (aiohttp took about twice curl's time here)."""
    out = tmp / "scrape.txt"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "120", "-o", str(out), "-w", "%{time_total}",
        f"{daemon.base}/metrics", stdout=asyncio.subprocess.PIPE)
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}) scraping {daemon.base}/metrics")
    return out.read_bytes(), float(stdout)


async def run_one(n: int, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-scale-{n}-") as tmp, \
            Nginx(Path(tmp), log_requests=True, addresses=args.addresses) as nginx:
        run_dir = Path(tmp) / "monitor"
        run_dir.mkdir()
        config = run_dir / "monitor.yaml"
        port = free_port()
        write_monitor_config(config, targets=n, interval=args.interval, base_url=nginx.bases(),
                             port=port, histogram=args.histogram, timeout=10,
                             workers=args.workers)
        extra = ("--shard", args.shard) if args.shard else ()
        daemon = MonitorProcess(config, port, uvloop=args.uvloop, hold_dns=args.hold_dns,
                                extra_args=extra)
        r: dict[str, object] = {"targets": n}
        try:
            r["startup"] = await daemon.start()
            print(f"[{n}] started in {r['startup']:.1f}s; ramping up "
                  f"{args.interval + RAMP_EXTRA:g}s", file=sys.stderr, flush=True)
            # Scraped from the start every --scrape-every seconds, as Prometheus would,
            # through the ramp-up and the window: the probes' lateness and CPU include
            # what scrapes cost. Counter deltas run from the first scrape (they include
            # the ramp-up); the window opens with a scrape (the lag histogram's baseline),
            # and the scrapes from there on are timed.
            before = (await scrape(daemon, Path(tmp)))[0].decode()
            ramp_end = time.monotonic() + args.interval + RAMP_EXTRA
            while (left := ramp_end - time.monotonic()) > 0:
                await asyncio.sleep(min(left, args.scrape_every))
                if ramp_end - time.monotonic() > 1:
                    await scrape(daemon, Path(tmp))
            opened, first = await scrape(daemon, Path(tmp))
            scrapes = [(first, len(opened))]
            since = time.time()
            cpu0, nginx0 = tree_cpu_seconds(daemon.pid), nginx.cpu_seconds()
            print(f"[{n}] measuring {args.duration:g}s", file=sys.stderr, flush=True)
            end = time.monotonic() + args.duration
            while (left := end - time.monotonic()) > 0:
                await asyncio.sleep(min(left, args.scrape_every))
                if end - time.monotonic() > 0:
                    body, seconds = await scrape(daemon, Path(tmp))
                    scrapes.append((seconds, len(body)))
            cpu, ngx = tree_cpu_seconds(daemon.pid) - cpu0, nginx.cpu_seconds() - nginx0
            until = time.time()
            body, seconds = await scrape(daemon, Path(tmp))
            scrapes.append((seconds, len(body)))
            after = body.decode()
            r["hwm_mib"] = tree_status_kib(daemon.pid, "VmHWM") / 1024
            r["rss_mib"] = tree_status_kib(daemon.pid, "VmRSS") / 1024
            r["processes"] = len(process_tree(daemon.pid))
        finally:
            await daemon.stop()
        await asyncio.sleep(1.5)  # nginx flushes its log buffer every second
        late, requests, skipped = lateness_from_log(nginx.access_log, args.interval, since,
                                                     until)
        missed = {
            reason: metric_sum(after, "monitor_scheduler_missed_runs_total", reason=reason)
            - metric_sum(before, "monitor_scheduler_missed_runs_total", reason=reason)
            for reason in ("missed", "coalesced", "still_running")
        }
        probes = metric_sum(after, "monitor_probes_total") - metric_sum(before,
                                                                         "monitor_probes_total")
        ok = metric_sum(after, "monitor_probes_total", result="ok") - metric_sum(
            before, "monitor_probes_total", result="ok")
        expected = n * (until - since) / args.interval
        r.update(
            on_time_pct=100 * sum(1 for x in late if x <= ON_TIME) / max(expected, 1),
            loop_lag=histogram_highest(opened.decode(), after, "monitor_event_loop_lag_seconds"),
            window=until - since, cpu=cpu, nginx_cpu=ngx, requests=requests,
            expected=expected, log_skipped=skipped,
            probes=probes, ok=ok, missed=missed,
            late_p50=quantile(late, 0.5), late_p99=quantile(late, 0.99),
            late_max=max(late) if late else float("nan"),
            hist_p50=histogram_quantile(before, after, "monitor_scheduler_lateness_seconds", 0.5),
            hist_p99=histogram_quantile(before, after, "monitor_scheduler_lateness_seconds",
                                        0.99),
            scrape_s=statistics.median(s for s, _ in scrapes), scrape_bytes=scrapes[-1][1],
            scrape_max=max(s for s, _ in scrapes), scrape_n=len(scrapes),
            db=rollup_sizes(run_dir / "monitor.db", n),
            errors=daemon.errors(context=30)[:40],
        )
        return r


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    print(f"\nscale: interval {args.interval:g}s, window {args.duration:g}s after "
          f"{args.interval + RAMP_EXTRA:g}s ramp-up, per-target histogram "
          f"{'on' if args.histogram else 'off'}, {'uvloop' if args.uvloop else 'asyncio'}"
          f"{', DNS channel held' if args.hold_dns else ''}, "
          f"{args.workers} probe workers, "
          f"{os.cpu_count()} CPUs shared with nginx")
    print("| figure | " + " | ".join(f"{r['targets']:,} targets" for r in rows) + " |")
    print("|---|" + "---:|" * len(rows))

    def line(name: str, fmt: str, key: str) -> None:
        print(f"| {name} | " + " | ".join(fmt.format(r[key]) for r in rows) + " |")

    for r in rows:
        w = float(r["window"])  # type: ignore[arg-type]
        r["rate"] = float(r["requests"]) / w  # type: ignore[arg-type]
        r["cpu_pct"] = 100 * float(r["cpu"]) / w  # type: ignore[arg-type]
        r["nginx_pct"] = 100 * float(r["nginx_cpu"]) / w  # type: ignore[arg-type]
        # Over the window's requests: the counters' deltas also hold the ramp-up.
        r["cpu_per_k"] = 1000 * float(r["cpu"]) / max(float(r["requests"]), 1)  # type: ignore[arg-type]
        r["missed_total"] = sum(r["missed"].values())  # type: ignore[attr-defined]
        r["ok_pct"] = 100 * float(r["ok"]) / max(float(r["probes"]), 1)  # type: ignore[arg-type]
        db = r["db"]
        r["db_day"] = db["per_target_day"]  # type: ignore[index]
        r["late_p50_ms"] = 1000 * float(r["late_p50"])  # type: ignore[arg-type]
        r["late_p99_ms"] = 1000 * float(r["late_p99"])  # type: ignore[arg-type]
        r["late_max_ms"] = 1000 * float(r["late_max"])  # type: ignore[arg-type]
        r["scrape_mib"] = int(r["scrape_bytes"]) / 2**20  # type: ignore[call-overload]
    line("start-up (spawn → started:)", "{:.1f} s", "startup")
    line("probes/s (nginx log)", "{:,.0f}", "rate")
    line("requests in window / expected", "{:,.0f}", "requests")
    line("expected", "{:,.0f}", "expected")
    line("probes ok (%)", "{:.2f}", "ok_pct")
    line(f"runs on time (request ≤ {ON_TIME:g} s late, % of expected)", "{:.2f} %",
         "on_time_pct")
    line("lateness p50 (nginx log)", "{:.0f} ms", "late_p50_ms")
    line("lateness p99 (nginx log)", "{:.0f} ms", "late_p99_ms")
    line("lateness max (nginx log)", "{:.0f} ms", "late_max_ms")
    line("lateness p50 (histogram)", "{}", "hist_p50")
    line("lateness p99 (histogram)", "{}", "hist_p99")
    line("missed+coalesced+still_running", "{:.0f}", "missed_total")
    line("runs skipped (nginx log)", "{}", "log_skipped")
    line("monitor processes", "{}", "processes")
    line("monitor CPU (% of one core, all processes)", "{:.0f} %", "cpu_pct")
    line("monitor CPU-s per 1,000 probes", "{:.3f}", "cpu_per_k")
    line("nginx CPU (% of one core)", "{:.0f} %", "nginx_pct")
    line("peak RSS (VmHWM, all processes)", "{:.0f} MiB", "hwm_mib")
    line("longest event-loop block (lag histogram)", "{}", "loop_lag")
    line("/metrics scrapes in and after the window", "{}", "scrape_n")
    line("/metrics scrape, median", "{:.2f} s", "scrape_s")
    line("/metrics scrape, longest", "{:.2f} s", "scrape_max")
    line("/metrics size", "{:.1f} MiB", "scrape_mib")
    line("DB bytes per target per day", "{:,.0f}", "db_day")
    for r in rows:
        if r["errors"]:
            print(f"[{r['targets']}] errors logged:", *r["errors"], sep="\n  ")  # type: ignore[misc]
        print(f"[{r['targets']}] missed by reason: {r['missed']}; db: "
              f"{ {k: round(v, 1) for k, v in r['db'].items()} }")  # type: ignore[attr-defined]


async def main(args: argparse.Namespace) -> None:
    rows = []
    for n in args.targets:
        rows.append(await run_one(n, args))
    report(rows, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10_000, 100_000], help="comma-separated (10000,100000)")
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=300.0,
                        help="measured seconds after the ramp-up (300)")
    parser.add_argument("--no-histogram", dest="histogram", action="store_false",
                        help="metrics: {per_target_histogram: false}")
    parser.add_argument("--uvloop", action="store_true", help="run the monitor on uvloop")
    parser.add_argument("--scrape-every", type=float, default=15.0,
                        help="seconds between two /metrics scrapes in the window (15)")
    parser.add_argument("--hold-dns", action="store_true",
                        help="keep the DNS channel open for the run (bench/launch.py)")
    parser.add_argument("--shard", help="pass --shard I/N to the monitor")
    parser.add_argument("--workers", type=int, default=0,
                        help="limits.probe_workers: probe worker processes (0)")
    parser.add_argument("--addresses", type=int, default=32,
                        help="nginx listens on 127.0.0.1 ... 127.0.0.N, targets spread over "
                             "them (32): real targets are many hosts, not one address")
    asyncio.run(main(parser.parse_args()))
