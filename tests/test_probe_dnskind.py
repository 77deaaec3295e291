"""The dns probe kind against a real name server on 127.0.0.1: NOERROR, NXDOMAIN,
SERVFAIL, a slow one, a dead one; rcode and answer expectations; no thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, sample
from kind_servers import Zone

from monitor.model import Failure, Target
from monitor.probes import run_probe
from monitor.probes.dns import parse_dns_url, probe_dns

RECORDS = {
    ("www.test", "A"): ["192.0.2.10", "192.0.2.11"],
    ("www.test", "MX"): ["10 mx1.test.", "20 mx2.test."],
    ("txt.test", "TXT"): ['"v=spf1 -all"'],
}


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, kind="dns", **{"timeout": 2.0, **options})


@pytest.fixture
async def zone() -> Any:
    async with Zone(RECORDS, rcodes={"broken.test": "SERVFAIL"}, slow=frozenset({"slow.test"}),
                    delay=5.0) as server:
        yield server


async def test_noerror_with_answers_passes_and_the_answers_can_be_matched(zone: Zone) -> None:
    base = f"dns://127.0.0.1:{zone.port}"
    threads = set(threading.enumerate())
    plain = await run_probe(target(f"{base}/www.test?type=A"))
    contains = await run_probe(target(f"{base}/www.test?type=A", body_contains="192.0.2.11"))
    regex = await run_probe(target(f"{base}/www.test?type=MX", body_regex=r"^20 mx2\.test\.$"))
    txt = await run_probe(target(f"{base}/txt.test?type=txt", body_contains="v=spf1"))
    assert set(threading.enumerate()) <= threads  # dnspython's asyncio: no thread started
    for result in (plain, contains, regex, txt):
        assert result.ok, result.message
        assert "processing" in result.phases
    assert zone.queries == [("www.test", "A"), ("www.test", "A"), ("www.test", "MX"),
                            ("txt.test", "TXT")]


async def test_answers_that_do_not_match_are_content(zone: Zone) -> None:
    result = await run_probe(target(f"dns://127.0.0.1:{zone.port}/www.test",
                                    body_contains="203.0.113.1"))
    assert result.failure is Failure.CONTENT
    assert result.message == ("answer does not contain '203.0.113.1': 192.0.2.10, "
                              "192.0.2.11")


async def test_nxdomain_and_servfail_are_dns_failures(zone: Zone) -> None:
    base = f"dns://127.0.0.1:{zone.port}"
    missing = await run_probe(target(f"{base}/nosuch.test"))
    broken = await run_probe(target(f"{base}/broken.test?type=AAAA"))
    assert missing.failure is Failure.DNS
    assert missing.message == "DNS NXDOMAIN for nosuch.test A, expected NOERROR"
    assert broken.failure is Failure.DNS
    assert broken.message == "DNS SERVFAIL for broken.test AAAA, expected NOERROR"


async def test_an_expected_nxdomain_passes(zone: Zone) -> None:
    base = f"dns://127.0.0.1:{zone.port}"
    gone = await run_probe(target(f"{base}/nosuch.test", expect_rcode=("NXDOMAIN",)))
    there = await run_probe(target(f"{base}/www.test", expect_rcode=("NXDOMAIN",)))
    assert gone.ok, gone.message
    assert there.failure is Failure.DNS
    assert there.message == "DNS NOERROR for www.test A, expected NXDOMAIN"


async def test_noerror_without_a_record_of_the_type_fails(zone: Zone) -> None:
    result = await run_probe(target(f"dns://127.0.0.1:{zone.port}/www.test?type=AAAA"))
    assert result.failure is Failure.DNS
    assert result.message == "no AAAA record for www.test (empty answer)"


async def test_a_slow_server_times_out_in_processing(zone: Zone) -> None:
    result = await run_probe(target(f"dns://127.0.0.1:{zone.port}/slow.test", timeout=0.5))
    assert (result.failure, result.phase) == (Failure.TIMEOUT, "processing")
    assert result.message == "no DNS response in 0.5s"


async def test_a_port_without_a_server_is_connect() -> None:
    # UDP to a closed port: the kernel's ICMP port unreachable refuses the next read.
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await run_probe(target(f"dns://127.0.0.1:{port}/www.test", timeout=1.0))
    assert (result.failure, result.phase) == (Failure.CONNECT, "processing")
    assert result.message == "DNS server unreachable: Connection refused"


async def test_no_server_in_the_url_asks_resolv_conf_first_server(zone: Zone, tmp_path: Path
                                                                  ) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    # The system's server is asked on port 53; the zone listens elsewhere, so give the port.
    result = await probe_dns(target(f"dns://:{zone.port}/www.test"), resolv_conf=str(conf))
    assert result.ok, result.message
    assert zone.queries == [("www.test", "A")]


@pytest.mark.parametrize(("url", "error"), [
    ("dns://127.0.0.1/", "must name what to look up: dns://server/name?type=A"),
    ("dns://127.0.0.1/x.test?type=BOGUS", "unknown record type 'BOGUS'"),
    ("dns://127.0.0.1/x.test?kind=A", "unknown query parameter 'kind'; only type= is known"),
    ("dns://127.0.0.1:0/x.test", "port must be 1 to 65535"),
])
def test_bad_urls_say_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_dns_url(url)
    assert str(caught.value) == error


def test_a_url_without_server_or_type_defaults_to_the_system_and_a() -> None:
    query = parse_dns_url("dns:///example.test")
    assert (query.server, query.port, query.name, query.rdtype) == (None, 53, "example.test",
                                                                    "A")


async def test_the_daemon_records_a_dns_outage_with_its_rcode(zone: Zone, tmp_path: Path
                                                              ) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: www-a
    url: dns://127.0.0.1:{zone.port}/www.test?type=A
    interval: 1s
    timeout: 900ms
    down_after: 1
    expect:
      body_contains: 192.0.2.10
""")
    async with Daemon(config) as daemon:
        await daemon.wait_for_log(r"www-a UP from lab")
        zone.rcodes["www.test"] = "SERVFAIL"
        down = await daemon.wait_for_log(r"www-a DOWN from lab")
        status, body = await daemon.get_json("/api/v1/outages?target=www-a")
        metrics = await daemon.metrics()
    assert "dns: DNS SERVFAIL for www.test A, expected NOERROR" in down
    assert status == 200
    (outage,) = body["outages"]  # type: ignore[index]
    assert (outage["cause"], outage["message"]) == (
        "dns", "DNS SERVFAIL for www.test A, expected NOERROR")
    # The record type is part of what is monitored: kept in the url label.
    assert sample(metrics, "monitor_target_info", target="www-a", kind="dns",
                  url=f"dns://127.0.0.1:{zone.port}/www.test?type=A") == 1
    assert (sample(metrics, "monitor_probe_phase_seconds", target="www-a",
                   phase="processing") or 0) > 0
