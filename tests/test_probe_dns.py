"""DNS per probe: no cache whatever the TTL, a dead resolver shows at once, no threads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import DnsServer
from servers import HttpServer

from monitor.model import Failure, Target
from monitor.probes.http import probe_http
from monitor.probes.resolve import Resolver, is_public

DELAY = 0.15  # the name server's answer delay; TTL is 300 s
TESTS = Path(__file__).resolve().parent


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, **{"timeout": 1.0, **options})


async def test_every_probe_asks_the_name_server_whatever_the_ttl(http_server: HttpServer) -> None:
    threads = set(threading.enumerate())
    async with DnsServer({"site.test": "127.0.0.1"}, delay=DELAY) as dns:
        resolver = Resolver([("127.0.0.1", dns.port)])
        url = http_server.url("/ok", host="site.test")
        first = await probe_http(target(url), resolver=resolver)
        second = await probe_http(target(url), resolver=resolver)

    assert first.ok and second.ok, (first.message, second.message)
    assert dns.queries == 4  # A and AAAA for each probe: nothing was cached
    for result in (first, second):
        assert result.phases["resolve"] >= DELAY  # the delay is in resolve, not elsewhere
        assert result.phases["connect"] < DELAY
    assert set(threading.enumerate()) <= threads  # no thread started for a lookup


async def test_a_resolver_that_stops_answering_is_dns_on_the_next_probe(
    http_server: HttpServer,
) -> None:
    async with DnsServer({"site.test": "127.0.0.1"}) as dns:
        resolver = Resolver([("127.0.0.1", dns.port)])
        url = http_server.url("/ok", host="site.test")
        before = await probe_http(target(url), resolver=resolver)
        dns.answering = False
        after = await probe_http(target(url, timeout=0.5), resolver=resolver)

    assert before.ok, before.message
    assert (after.failure, after.phase) == (Failure.DNS, "resolve")
    assert after.message == "DNS lookup timed out after 0.5s"
    assert http_server.requests == 1


async def test_unknown_name_and_dead_resolver_are_dns(http_server: HttpServer) -> None:
    async with DnsServer({}) as dns:
        resolver = Resolver([("127.0.0.1", dns.port)])
        unknown = await probe_http(target(http_server.url("/ok", host="nope.test")),
                                   resolver=resolver)
    closed = await probe_http(target(http_server.url("/ok", host="nope.test"), timeout=0.5),
                              resolver=resolver)  # nothing listens on that port any more

    assert (unknown.failure, unknown.message) == (Failure.DNS, "DNS lookup failed: no such name")
    assert closed.failure == Failure.DNS
    assert closed.message == "DNS lookup timed out after 0.5s"


async def test_hosts_file_comes_first_and_is_reread(http_server: HttpServer,
                                                    tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 web.example # comment\n")
    async with DnsServer({}) as dns:
        resolver = Resolver([("127.0.0.1", dns.port)], hosts_file=str(hosts))
        url = http_server.url("/ok", host="web.example")
        listed = await probe_http(target(url), resolver=resolver)
        hosts.write_text("# emptied\n")
        gone = await probe_http(target(url), resolver=resolver)

    assert listed.ok, listed.message
    assert listed.phases["resolve"] > 0
    assert gone.failure == Failure.DNS
    assert dns.queries == 2  # only the second probe asked the name server


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("203.0.113.1", True), ("2001:db8::1", True),
    ("127.0.0.2", False), ("10.1.2.3", False), ("172.31.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.100.100.200", False), ("0.0.0.0", False),
    ("::1", False), ("fe80::1%eth0", False), ("fd00:ec2::254", False),
    ("::ffff:10.0.0.1", False),
])  # fmt: skip
def test_address_policy(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs root and unshare for network and mount namespaces")
def test_the_daemon_resolves_anew_on_every_probe_and_sees_a_dns_outage_at_once() -> None:
    # The daemon uses the system resolver: inside the namespaces, resolv.conf names the
    # test's delayed name server (TTL 300).
    proc = subprocess.run(
        ["unshare", "--net", "--mount", sys.executable, str(TESTS / "netns_daemon_dns.py")],
        capture_output=True, text=True, timeout=120, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    assert out["probes"] >= 3
    assert out["queries"] >= 2 * out["probes"]  # A and AAAA, every probe
    assert out["resolve"] >= DELAY  # the last probe waited for the name server too
    assert "dns: DNS lookup timed out after 0.9s" in out["down"]
