"""Run inside `unshare --net`: a port whose SYNs are dropped (a firewall that blackholes it),
so the tcp and tls probes hang in connect until their deadline. Prints one JSON object.
Started by tests/test_probe_tcp.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor.model import Target
from monitor.probes import run_probe

PORT = 9  # nothing listens: without the rule the connection would be refused at once


def setup() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["iptables", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", str(PORT),
                    "-j", "DROP"], check=True)


async def main() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("tcp", "tls"):
        result = await run_probe(Target(name="t", url=f"{kind}://127.0.0.1:{PORT}", kind=kind,
                                        timeout=0.5))
        out[kind] = {"failure": result.failure and result.failure.value,
                     "phase": result.phase, "message": result.message}
    return out


if __name__ == "__main__":
    setup()
    print(json.dumps(asyncio.run(main())))
