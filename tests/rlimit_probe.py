"""Run as a subprocess: probe a healthy local server while this process has no descriptor
left, then again with descriptors back. Prints a JSON list of [failure, message, ok].
Started by tests/test_probe_lenient.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import HttpServer

from monitor.model import Target
from monitor.probes.http import DnsChannel, probe_http


async def main() -> list[list[object]]:
    DnsChannel()  # the shared setup exists before descriptors run out, as in the daemon
    results = []
    async with HttpServer() as server:
        fillers: list[int] = []
        try:
            for _ in range(10_000):  # bounded: the limit below is 128
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        for host in ("127.0.0.1", "localhost"):
            result = await probe_http(Target(name="t", url=server.url("/ok", host=host)))
            results.append([result.failure, result.message, result.ok])
        for fd in fillers:
            os.close(fd)
        result = await probe_http(Target(name="t", url=server.url("/ok")))
        results.append([result.failure, result.message, result.ok])
    return results


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    print(json.dumps(asyncio.run(main())))
