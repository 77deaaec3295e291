"""Shared pieces of the benchmarks: a loopback nginx, a `monitor run` subprocess, and CPU and
memory readings of other processes from /proc.

Everything here binds to 127.0.0.1 and writes only below the directory it is given.
Imports the standard library and aiohttp only (the monitor runs in its own process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (e.g. a daemon's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its living descendants (children that exited are in cstime)."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def tree_status_kib(pid: int, key: str) -> int:
    """A /proc/PID/status memory figure summed over a process and its descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, KeyError):
            total += proc_status_kib(p, key)
    return total


def proc_status_kib(pid: int, key: str) -> int:
    """A memory figure (VmHWM, VmRSS, ...) of a process in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def time_wait_sockets() -> int:
    """TCP sockets of this network namespace in TIME_WAIT (state 06 in /proc/net/tcp*)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                next(table, None)
                count += sum(1 for line in table if line.split(None, 4)[3] == "06")
        except OSError:
            pass
    return count


async def drain_time_wait(below: int = 2000, limit: float = 90.0) -> int:
    """Wait (at most `limit` s) until fewer than `below` sockets are in TIME_WAIT.

    Every probe leaves one for 60 s; with all of them towards one loopback address and
    port, thousands of them make each new connect() search longer for a free local port.
    Contenders measured one after the other start from the same state this way.
    """
    for _ in range(int(limit)):  # polled: the kernel tells no one when they expire
        count = time_wait_sockets()
        if count < below:
            break
        await asyncio.sleep(1)
    return count


class Nginx:
    """nginx bound to 127.0.0.1 on a free port; every path answers 200 "ok"."""

    def __init__(self, workdir: Path, *, workers: int = 1, log_requests: bool = False,
                 addresses: int = 1) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise SystemExit("nginx not found: apt-get install -y nginx-light")
        self.binary = binary
        self.dir = workdir / "nginx"
        self.port = free_port()
        self.workers = workers
        self.log_requests = log_requests  # "$msec $uri" lines in access.log
        # Listens on 127.0.0.1 ... 127.0.0.N (same port): as many destinations, so that the
        # TIME_WAIT sockets of many probes do not all compete for one address's local ports.
        self.addresses = addresses
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bases(self) -> list[str]:
        return [f"http://127.0.0.{i}:{self.port}" for i in range(1, self.addresses + 1)]

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        access_log = "access_log off;"
        if self.log_requests:
            access_log = (f"log_format t '$msec $uri'; "
                          f"access_log {d}/access.log t buffer=256k flush=1s;")
        listens = " ".join(f"listen 127.0.0.{i}:{self.port} backlog=8192;"
                           for i in range(1, self.addresses + 1))
        (d / "nginx.conf").write_text(f"""
worker_processes {self.workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    {access_log}
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    keepalive_requests 100000;
    server {{
        {listens}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
""")
        self.proc = subprocess.Popen([self.binary, "-p", str(d), "-c", str(d / "nginx.conf")],
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(d / 'error.log').read_text()}")

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(p) for p in children.split()]

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return sum(cpu_seconds(p) for p in [self.proc.pid, *self.worker_pids()])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_monitor_config(path: Path, *, targets: int, interval: float, base_url: str | list[str],
                         port: int, histogram: bool = True, timeout: float = 10.0,
                         workers: int = 0) -> None:
    """A config of `targets` targets on paths /t/0 ... of one server (of its addresses in
    turn, given several base URLs), written fast."""
    bases = [base_url] if isinstance(base_url, str) else base_url
    lines = [
        "location: bench",
        f"server: {{listen: 127.0.0.1, port: {port}}}",
        f"store: {{path: {path.parent / 'monitor.db'}}}",
        f"metrics: {{per_target_histogram: {'true' if histogram else 'false'}}}",
        f"limits: {{probe_workers: {workers}}}",
        f"defaults: {{interval: {interval:g}s, timeout: {min(timeout, interval):g}s}}",
        "targets:",
    ]
    lines += [f"  - {{name: t{i}, url: '{bases[i % len(bases)]}/t/{i}'}}" for i in range(targets)]
    path.write_text("\n".join(lines) + "\n")


class MonitorProcess:
    """`python -m monitor run` (or bench/launch.py with options) with its log followed."""

    def __init__(self, config: Path, port: int, *, uvloop: bool = False, hold_dns: bool = False,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.port = port
        self.uvloop = uvloop
        self.hold_dns = hold_dns
        self.extra_args = extra_args
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.started_at = 0.0  # monotonic, when the process was spawned
        self.ready_at: float | None = None  # monotonic, when "started:" was logged
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bases(self) -> list[str]:
        return [f"http://127.0.0.{i}:{self.port}" for i in range(1, self.addresses + 1)]

    async def start(self, limit: float = 300) -> float:
        """Spawn it and wait for its "started:" line; returns the start-up time in seconds."""
        argv = ["run", "--config", str(self.config), "--port", str(self.port),
                "--log-level", "info", *self.extra_args]
        if self.uvloop or self.hold_dns:  # options `monitor run` may not have yet
            options = ["--uvloop"] * self.uvloop + ["--hold-dns"] * self.hold_dns
            cmd = [sys.executable, str(ROOT / "bench" / "launch.py"), *options, "--", *argv]
        else:
            cmd = [sys.executable, "-m", "monitor", *argv]
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            cwd=ROOT)
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(limit):
            await self._ready.wait()
        assert self.ready_at is not None
        return self.ready_at - self.started_at

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if "started: " in line and self.ready_at is None:
                self.ready_at = time.monotonic()
                self._ready.set()
        self._ready.set()  # exited: let start() see it

    async def scrape(self, session: aiohttp.ClientSession) -> tuple[bytes, float]:
        """GET /metrics; returns the body and the seconds it took."""
        began = time.perf_counter()
        async with session.get(f"{self.base}/metrics") as response:
            body = await response.read()
        return body, time.perf_counter() - began

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(60):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    def errors(self, context: int = 0) -> list[str]:
        """Lines logged at ERROR and tracebacks, each with `context` lines after it."""
        out: list[str] = []
        for i, line in enumerate(self.lines):
            if " ERROR " in line or "Traceback" in line:
                out += self.lines[i : i + 1 + context]
        return out


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric name whose labels include `labels`."""
    total = 0.0
    for m in _SAMPLE_RE.finditer(text):
        if m.group(1) != name:
            continue
        label_text = m.group(2) or ""
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(m.group(3))
    return total


def metric_samples(text: str, name: str) -> list[tuple[str, float]]:
    return [(m.group(2) or "", float(m.group(3))) for m in _SAMPLE_RE.finditer(text)
            if m.group(1) == name]
