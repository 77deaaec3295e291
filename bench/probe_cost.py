"""Per-probe CPU cost, side by side, against one loopback nginx.

One run measures, one after the other at the same probe rate on the same target:
  (a) the floor: aiohttp with ONE ClientSession whose connector never keeps a connection
      (force_close, no DNS cache): every GET is still a cold visit (new TCP connection, and a
      TLS handshake on https), in its own process;
  (a') aiohttp with a new ClientSession and connector per GET (what a naive prober does),
      in its own process;
  (b) the Prometheus blackbox exporter (Debian's prometheus-blackbox-exporter) driven by
      /probe?target=...&module=http_2xx requests at that rate; only the exporter's CPU counts;
  (c) `monitor run`: the whole pipeline (scheduler, probe, tracker, store, metrics) on
      N = rate × interval targets at paths of the same server;
  (c') with --also uvloop|hold-dns|uvloop,hold-dns, the same daemon started by bench/launch.py
      with those options (repeatable).
CPU is user + system time of the measured process (all threads) from /proc/PID/stat, over
a window that starts after a warm-up. Prints CPU-ms per probe and the ratio to the floor (a).

    .venv/bin/python bench/probe_cost.py [--rate 200] [--seconds 30] [--interval 5]
        [--also uvloop,hold-dns]

Needs nginx-light and prometheus-blackbox-exporter (apt-get install -y ...). Loopback only.
Imports bench.common (stdlib, aiohttp); the monitor runs in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    MonitorProcess,
    Nginx,
    cpu_seconds,
    drain_time_wait,
    free_port,
    metric_sum,
    tree_cpu_seconds,
    write_monitor_config,
)

WARMUP = 3.0  # seconds before a measurement window opens
FLOOR = "a aiohttp, one session, fresh connection per GET (floor)"
NAIVE = "a' aiohttp, new session per GET"
BLACKBOX = "b blackbox_exporter"


async def paced(rate: float, seconds: float, one: Callable[[], Awaitable[bool]]) -> tuple[int, int]:
    """Start `one()` `rate` times a second for `seconds` (open loop); returns (done, ok)."""
    tasks: set[asyncio.Task[bool]] = set()
    results = [0, 0]

    def done(task: asyncio.Task[bool]) -> None:
        tasks.discard(task)
        results[0] += 1
        if not task.cancelled() and task.exception() is None and task.result():
            results[1] += 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(done)
    if tasks:
        await asyncio.wait(tasks)
    return results[0], results[1]


# --- (a) and (a') raw aiohttp, in a child process ------------------------------------------

def cold_connector() -> aiohttp.TCPConnector:
    """A connector that opens a new connection for every request and asks DNS every time."""
    return aiohttp.TCPConnector(force_close=True, use_dns_cache=False, limit=0)


async def raw_child(url: str, rate: float, seconds: float, mode: str, warmup: float) -> None:
    shared = aiohttp.ClientSession(connector=cold_connector()) if mode == "one" else None

    async def one() -> bool:
        if shared is not None:
            async with shared.get(url) as response:
                await response.read()
                return response.status == 200
        async with aiohttp.ClientSession(connector=cold_connector()) as session, \
                session.get(url) as response:
            await response.read()
            return response.status == 200

    await paced(rate, warmup, one)
    cpu0 = cpu_seconds(os.getpid())
    wall0 = time.monotonic()
    done, ok = await paced(rate, seconds, one)
    cpu = cpu_seconds(os.getpid()) - cpu0
    if shared is not None:
        await shared.close()
    print(json.dumps({"probes": done, "ok": ok, "cpu": cpu, "wall": time.monotonic() - wall0}))


def event_loop() -> str:
    """The event loop `monitor run` picks: uvloop if it is installed, else asyncio's."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_raw(url: str, rate: float, seconds: float, mode: str,
            warmup: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--raw-child", url, str(rate), str(seconds),
                          mode, event_loop(), str(warmup)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- (b) the blackbox exporter ------------------------------------------------------------

def start_blackbox(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("prometheus-blackbox-exporter")
    if binary is None:
        raise SystemExit("apt-get install -y prometheus-blackbox-exporter")
    config = workdir / "blackbox.yml"
    config.write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n"
                      "    http:\n      preferred_ip_protocol: ip4\n")
    return subprocess.Popen([binary, f"--config.file={config}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run_blackbox(workdir: Path, url: str, rate: float, seconds: float,
                       warmup: float) -> dict[str, float]:
    port = free_port()
    proc = start_blackbox(workdir, port)
    probe_url = f"http://127.0.0.1:{port}/probe"
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as session:
            for _ in range(100):  # wait until it listens
                try:
                    async with session.get(f"http://127.0.0.1:{port}/-/healthy") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)

            async def one() -> bool:
                params = {"target": url, "module": "http_2xx"}
                async with session.get(probe_url, params=params) as response:
                    body = await response.text()
                return "\nprobe_success 1" in body

            await paced(rate, warmup, one)
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            done, ok = await paced(rate, seconds, one)
            cpu = cpu_seconds(proc.pid) - cpu0
            return {"probes": done, "ok": ok, "cpu": cpu, "wall": time.monotonic() - wall0}
    finally:
        proc.terminate()
        proc.wait()


# --- (c) monitor run ----------------------------------------------------------------------

async def run_monitor(workdir: Path, base_url: str, rate: float, seconds: float,
                      interval: float, options: frozenset[str],
                      workers: int = 0) -> dict[str, float]:
    targets = round(rate * interval)
    run_dir = workdir / ("monitor-" + "-".join(sorted(options)) + f"-w{workers}")
    run_dir.mkdir()
    config = run_dir / "monitor.yaml"
    port = free_port()
    write_monitor_config(config, targets=targets, interval=interval, base_url=base_url,
                         port=port, timeout=5, workers=workers)
    daemon = MonitorProcess(config, port, uvloop="uvloop" in options,
                            hold_dns="hold-dns" in options)
    try:
        startup = await daemon.start()
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(interval + WARMUP)  # first runs are spread over one interval
            text = (await daemon.scrape(session))[0].decode()
            probes0 = metric_sum(text, "monitor_probes_total")
            ok0 = metric_sum(text, "monitor_probes_total", result="ok")
            # The daemon and its probe workers, if any.
            cpu0, wall0 = tree_cpu_seconds(daemon.pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall = tree_cpu_seconds(daemon.pid) - cpu0, time.monotonic() - wall0
            text = (await daemon.scrape(session))[0].decode()  # after the CPU reading
            probes = metric_sum(text, "monitor_probes_total") - probes0
            ok = metric_sum(text, "monitor_probes_total", result="ok") - ok0
        errors = daemon.errors()
        if errors:
            print("monitor logged errors:", *errors[:5], sep="\n  ", file=sys.stderr)
        return {"probes": probes, "ok": ok, "cpu": cpu, "wall": wall, "targets": targets,
                "startup": startup}
    finally:
        await daemon.stop()


# --- the run ------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-probe-cost-") as tmp, \
            Nginx(Path(tmp)) as nginx:
        workdir = Path(tmp)
        url = f"{nginx.base}/t/0"
        rows: dict[str, dict[str, float]] = {}
        warmup = args.interval + WARMUP  # every contender warms up as long as the monitor
        contenders: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
            (FLOOR, lambda: asyncio.to_thread(run_raw, url, args.rate, args.seconds, "one",
                                              warmup)),
            (NAIVE, lambda: asyncio.to_thread(run_raw, url, args.rate, args.seconds, "new",
                                              warmup)),
            ("c monitor", lambda: run_monitor(workdir, nginx.base, args.rate, args.seconds,
                                              args.interval, frozenset())),
        ]
        if args.workers:
            contenders.append((f"c monitor, {args.workers} probe workers",
                               lambda: run_monitor(workdir, nginx.base, args.rate, args.seconds,
                                                   args.interval, frozenset(), args.workers)))
        if shutil.which("prometheus-blackbox-exporter"):
            contenders.append((BLACKBOX, lambda: run_blackbox(workdir, url, args.rate,
                                                              args.seconds, warmup)))
        else:
            print("  no prometheus-blackbox-exporter: (b) not measured", file=sys.stderr)
        for also in args.also:
            options = frozenset(also.split(","))
            contenders.append((f"c' monitor +{also}",
                               lambda o=options: run_monitor(workdir, nginx.base, args.rate,  # type: ignore[misc]
                                                             args.seconds, args.interval, o)))
        for name, run in contenders:
            waiting = await drain_time_wait()
            print(f"  {name}: starting with {waiting} sockets in TIME_WAIT", file=sys.stderr)
            server0 = nginx.cpu_seconds()
            row = await run()
            row["nginx_cpu"] = nginx.cpu_seconds() - server0
            rows[name] = row
            print(f"  {name}: {row['probes']:.0f} probes ({row['ok']:.0f} ok) in "
                  f"{row['wall']:.1f}s, {row['cpu']:.2f} CPU-s", file=sys.stderr, flush=True)

    print(f"\nprobe cost at {args.rate:g} probes/s, {args.seconds:g}s windows, loopback nginx, "
          f"{os.cpu_count()} CPUs, event loop {event_loop()} (the monitor's and a's)")
    print("| contender | probes | ok | probes/s | CPU-s | CPU-ms per probe | vs floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    per_probe = {name: 1000 * row["cpu"] / max(row["probes"], 1) for name, row in rows.items()}
    for name, row in rows.items():
        print(f"| {name} | {row['probes']:.0f} | {row['ok']:.0f} | "
              f"{row['probes'] / row['wall']:.0f} | {row['cpu']:.2f} | "
              f"{per_probe[name]:.3f} | {per_probe[name] / per_probe[FLOOR]:.2f} |")
    m = rows["c monitor"]
    print(f"monitor: {m['targets']:.0f} targets every {args.interval:g}s, "
          f"start-up {m['startup']:.2f}s")


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--raw-child":
        # The event loop `monitor run` uses: uvloop when installed (monitor[fast]).
        loop_run = asyncio.run
        if sys.argv[6] == "uvloop":
            import uvloop
            loop_run = uvloop.run
        loop_run(raw_child(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5],
                           float(sys.argv[7])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200, help="probes per second (200)")
    parser.add_argument("--seconds", type=float, default=30, help="measured window (30)")
    parser.add_argument("--interval", type=float, default=5,
                        help="monitor's probe interval; targets = rate × interval (5)")
    parser.add_argument("--workers", type=int, default=0,
                        help="also run the monitor with limits.probe_workers: N")
    parser.add_argument("--also", action="append", default=[], metavar="OPTIONS",
                        help="also run the monitor with launch.py options: uvloop, hold-dns or "
                             "both (uvloop,hold-dns); repeatable")
    asyncio.run(main(parser.parse_args()))
