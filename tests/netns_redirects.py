"""Run inside a fresh network namespace (`unshare --net`): redirects from a public-looking
target into private addresses. Prints one JSON object: case → result of the probe.

The namespace has lo up with 203.0.113.1/32 added: the "public" target listens there, the
"private" server on 127.0.0.1. A name server on 127.0.0.1 answers inside.test → 127.0.0.1
and public.test → 203.0.113.1; localhost comes from the hosts file.
Started by tests/test_probe_redirects.py; never on its own outside a namespace.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile_servers import DnsServer, RecordingServer

from monitor.model import Target
from monitor.probes.http import probe_http
from monitor.probes.resolve import Resolver

PUBLIC = "203.0.113.1"


def network() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{PUBLIC}/32", "dev", "lo"], check=True)


async def main() -> dict[str, object]:
    out: dict[str, object] = {}
    names = {"inside.test": "127.0.0.1", "public.test": PUBLIC}
    async with (RecordingServer(host=PUBLIC) as public, RecordingServer() as private,
                RecordingServer(host=PUBLIC) as other_public, DnsServer(names) as dns):
        resolver = Resolver([("127.0.0.1", dns.port)])
        cases = {
            "ip-literal": f"http://127.0.0.1:{private.port}/landed",
            "hosts-file": f"http://localhost:{private.port}/landed",
            "dns-name": f"http://inside.test:{private.port}/landed",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "mapped-v6": f"http://[::ffff:127.0.0.1]:{private.port}/landed",
            "public-name": f"http://public.test:{other_public.port}/landed",
        }
        for case, to in cases.items():
            for status in (302, 307):
                url = public.url(f"/redirect?status={status}&to={quote(to, safe='')}")
                result = await probe_http(
                    Target(name="t", url=url, timeout=2.0), resolver=resolver)
                out[f"{case}-{status}"] = {"failure": result.failure, "message": result.message,
                                           "status": result.status}
        # A target that is itself private may redirect to private addresses.
        url = private.url(f"/redirect?to={quote(f'http://localhost:{private.port}/x', safe='')}")
        result = await probe_http(Target(name="t", url=url, timeout=2.0), resolver=resolver)
        out["private-target"] = {"failure": result.failure, "message": result.message,
                                 "status": result.status}
        out["private-server-saw"] = [path for _, path, _, _ in private.seen]
        out["other-public-saw"] = [path for _, path, _, _ in other_public.seen]
    return out


if __name__ == "__main__":
    network()
    print(json.dumps(asyncio.run(main())))
