"""Run inside `unshare --net --mount`: the daemon's probes ask a delayed name server anew
every time. The test's name server listens on 127.0.0.1:53 and a resolv.conf naming it is
bind-mounted over /etc/resolv.conf (in this mount namespace only). Prints one JSON object.
Started by tests/test_probe_dns.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon import Daemon, sample, until
from hostile_servers import DnsServer
from servers import HttpServer

DELAY = 0.15


def namespace(tmp: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)


async def ok_probes(daemon: Daemon) -> float:
    return sample(await daemon.metrics(), "monitor_probes_total", target="site",
                  result="ok") or 0.0


async def main(tmp: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    async with (DnsServer({"site.test": "127.0.0.1"}, delay=DELAY, port=53) as dns,
                HttpServer() as web):
        config = tmp / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: site
    url: {web.url("/ok", host="site.test")}
    interval: 1s
    timeout: 900ms
    down_after: 1
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from lab")
            mark = len(daemon.lines)
            first = await ok_probes(daemon)
            queries = dns.queries

            async def three_more() -> int | None:
                n = await ok_probes(daemon)
                return n if n >= first + 3 else None

            await until(three_more, what="three more ok probes")
            text = await daemon.metrics()
            out["probes"] = await ok_probes(daemon) - first
            out["queries"] = dns.queries - queries
            out["resolve"] = sample(text, "monitor_probe_phase_seconds", target="site",
                                    phase="resolve")
            dns.answering = False
            out["down"] = await daemon.wait_for_log(r"site DOWN from lab", after=mark, limit=20)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as name:
        namespace(Path(name))
        print(json.dumps(asyncio.run(main(Path(name)))))
