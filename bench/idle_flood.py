"""Issue 11's case: idle connections to the daemon's own port, at the usual descriptor limit.

Runs `monitor run` under `prlimit --nofile=LIMIT:LIMIT` with one healthy loopback target
probed every second, opens CONNECTIONS idle connections to the daemon's port and holds them
for HOLD seconds, then reports: the target's probe outcomes during the flood, whether it went
DOWN, how long /metrics took (or that it timed out), the daemon's log size and lines.

    python bench/idle_flood.py [--limit 1024] [--connections 1100] [--hold 15]

Everything binds to 127.0.0.1 and writes below a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="fine")


async def probes(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics",
                                                   timeout=aiohttp.ClientTimeout(5)) as r:
        text = await r.text()
    found = re.findall(r'monitor_probes_total\{[^}]*result="(\w+)"[^}]*\} (\S+)', text)
    return {result: float(value) for result, value in found}


async def scrape_seconds(port: int) -> str:
    started = time.monotonic()
    try:
        await probes(port)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"failed ({type(exc).__name__}) after {time.monotonic() - started:.1f}s"
    return f"{(time.monotonic() - started) * 1000:.0f} ms"


async def main(limit: int, connections: int, hold: float) -> None:
    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", site_port).start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "monitor.yaml"
        config.write_text(f"""\
location: bench
store: {{path: {tmp}/history.db}}
targets:
  - {{name: site, url: "http://127.0.0.1:{site_port}/", interval: 1s, timeout: 1s,
      down_after: 2}}
""")
        log_path = Path(tmp) / "monitor.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                "prlimit", f"--nofile={limit}:{limit}", sys.executable, "-m", "monitor", "run",
                "--config", str(config), "--port", str(port), stderr=log, cwd=tmp)
            try:
                for _ in range(100):  # bounded wait for the first ok probe
                    with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError):
                        if (await probes(port)).get("ok"):
                            break
                    await asyncio.sleep(0.1)
                before = await probes(port)
                conns = []
                for _ in range(connections):
                    try:
                        conns.append(await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", port), 2))
                    except (OSError, TimeoutError):
                        break
                during = await scrape_seconds(port)
                await asyncio.sleep(hold)
                after_scrape = await scrape_seconds(port)
                for _, writer in conns:
                    writer.close()
                after: dict[str, float] = {}
                for _ in range(50):  # the flood is over: /metrics must answer again
                    with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError):
                        after = await probes(port)
                        break
                    await asyncio.sleep(0.2)
            finally:
                proc.terminate()
                await proc.wait()
        text = log_path.read_text(errors="replace")
    await runner.cleanup()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print(f"limit {limit}, {len(conns)} idle connections held {hold:g}s")
    print(f"  /metrics right after the flood: {during}; after holding: {after_scrape}")
    print(f"  probes of the healthy site meanwhile: {delta}")
    print(f"  DOWN lines: {text.count(' DOWN ')}; log: {len(text.splitlines())} lines, "
          f"{len(text.encode())} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1024)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--hold", type=float, default=15.0)
    args = parser.parse_args()
    asyncio.run(main(args.limit, args.connections, args.hold))
