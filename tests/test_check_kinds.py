"""`monitor check` with every kind's URL and --proxy, against real local servers; `monitor
init` with them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from kind_servers import ConnectProxy, LineServer, Zone, refusing_port
from servers import HttpServer

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"url", "up", "failure", "phase", "message", "status", "duration_seconds", "phases",
        "cert_expires_at", "kind", "rtt_seconds", "loss"}


async def monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "monitor", *args], capture_output=True,
        text=True, timeout=60, check=False, cwd=ROOT)


async def test_check_takes_tcp_tls_dns_and_icmp_urls_with_the_same_json_fields() -> None:
    sock, closed = refusing_port()
    async with LineServer("banner", banner=b"220 ready\r\n") as tcp, \
            Zone({("www.test", "A"): ["192.0.2.1"]}) as zone:
        with sock:
            dns_url = f"dns://127.0.0.1:{zone.port}/www.test?type=A"
            done = await monitor("check", "--json", "--timeout", "2s", "--contains", "220",
                                 f"tcp://127.0.0.1:{tcp.port}", dns_url,
                                 f"tls://127.0.0.1:{closed}", "icmp://127.0.0.1")
    assert done.returncode == 1, done.stderr  # the tls port is closed
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(set(row) == KEYS for row in rows)
    tcp_row, dns_row, tls_row, icmp_row = rows
    assert (tcp_row["kind"], tcp_row["up"]) == ("tcp", True)
    assert (dns_row["kind"], dns_row["url"]) == ("dns", dns_url)
    # --contains judges the answer of a dns probe: 220 is not in 192.0.2.1.
    assert (dns_row["up"], dns_row["failure"]) == (False, "content")
    assert (tls_row["failure"], tls_row["phase"]) == ("connect", "connect")
    assert icmp_row["kind"] == "icmp"
    if icmp_row["up"]:  # root, or a group in ping_group_range
        assert icmp_row["loss"] == 0.0 and icmp_row["rtt_seconds"] > 0
    else:
        assert icmp_row["failure"] == "local"


async def test_check_through_a_proxy_and_bad_urls() -> None:
    async with HttpServer() as web, ConnectProxy("u", "pass-1234") as proxy:
        through = await monitor("check", "--proxy", f"http://u:pass-1234@127.0.0.1:{proxy.port}",
                                web.url("/ok"))
        refused = await monitor("check", "--proxy", f"http://u:wrong@127.0.0.1:{proxy.port}",
                                web.url("/ok"))
    assert through.returncode == 0, through.stdout
    assert proxy.tunnels == [("127.0.0.1", web.port)]
    assert refused.returncode == 1
    assert "proxy: the proxy refused the credentials" in refused.stdout
    bad = await monitor("check", "tcp://127.0.0.1")
    assert (bad.returncode, bad.stderr) == (
        2, "monitor check: tcp://127.0.0.1: must give a port: tcp://host:port\n")
    no_proxy = await monitor("check", "--proxy", "ftp://x:1", "https://example.invalid/")
    assert (no_proxy.returncode, no_proxy.stderr) == (
        2, "monitor check: --proxy: must be a proxy URL like http://host:3128 or "
           "socks5://host:1080\n")


async def test_init_takes_every_kinds_url_and_writes_a_config_that_loads(tmp_path: Path
                                                                         ) -> None:
    from monitor.config import load_config

    config = tmp_path / "monitor.yaml"
    made = await monitor("init", "--config", str(config), "example.org", "tcp://db.test:5432",
                         "dns://9.9.9.9/example.org?type=MX", "icmp://192.0.2.1")
    assert made.returncode == 0, made.stderr
    targets = load_config(config).targets
    assert [(t.name, t.kind, t.url) for t in targets] == [
        ("example.org", "http", "https://example.org/"),
        ("db.test", "tcp", "tcp://db.test:5432"),
        ("example.org-2", "dns", "dns://9.9.9.9/example.org?type=MX"),
        ("192.0.2.1", "icmp", "icmp://192.0.2.1"),
    ]
