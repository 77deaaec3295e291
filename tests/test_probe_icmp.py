"""The icmp probe: echo to 127.0.0.1 here, and in a network namespace of its own real
loss (iptables drops every second request), a blackhole route, the socket modes, and the
daemon recording the outage (tests/netns_icmp.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.model import Failure, Target
from monitor.probes import run_probe
from monitor.probes.icmp import NO_SOCKET, parse_icmp_url

TESTS = Path(__file__).resolve().parent


def can_ping() -> bool:
    if os.geteuid() == 0:
        return True
    low, high = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
    return int(low) <= os.getegid() <= int(high)


@pytest.mark.skipif(not can_ping(), reason="needs root or this group in ping_group_range")
async def test_echo_to_loopback_reports_rtt_and_no_loss() -> None:
    result = await run_probe(Target(name="t", url="icmp://127.0.0.1", kind="icmp", timeout=2,
                                    packets=3))
    assert result.ok, result.message
    assert result.loss == 0.0
    assert result.rtt is not None and result.rtt > 0
    assert set(result.phases) == {"resolve", "processing"}
    assert result.phases["processing"] == result.rtt
    assert result.message.startswith("3/3 replies, loss 0%, rtt ")


@pytest.mark.parametrize(("url", "error"), [
    ("icmp://127.0.0.1:7", "icmp:// URLs take no port"),
    ("icmp://127.0.0.1/path", "icmp:// URLs have no path, query or fragment"),
    ("icmp://", "must be a URL like icmp://host"),
])
def test_bad_urls_say_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_icmp_url(url)
    assert str(caught.value) == error


@pytest.fixture(scope="module")
def namespace() -> dict[str, Any]:
    if shutil.which("unshare") is None or shutil.which("iptables") is None or os.geteuid():
        pytest.skip("needs root, unshare and iptables for a network namespace")
    proc = subprocess.run(["unshare", "--net", sys.executable, str(TESTS / "netns_icmp.py")],
                          capture_output=True, text=True, timeout=150, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_loss_over_max_loss_fails_as_connect_and_at_it_passes(namespace: dict[str, Any]
                                                              ) -> None:
    failed, passed = namespace["two_of_three"], namespace["two_of_four"]
    assert (failed["ok"], failed["failure"], failed["phase"]) == (False, "connect", "processing")
    assert failed["loss"] == pytest.approx(2 / 3)
    assert failed["message"].startswith("packet loss over 50%: 1/3 replies, loss 67%, rtt ")
    assert passed["ok"] and passed["loss"] == 0.5  # 50% is not over max_loss 50%
    assert passed["message"].startswith("2/4 replies, loss 50%, rtt ")


def test_a_blackhole_route_loses_everything(namespace: dict[str, Any]) -> None:
    result = namespace["blackhole"]
    assert (result["failure"], result["loss"], result["rtt"]) == ("connect", 1.0, None)
    assert result["message"] == ("packet loss over 50%: 0/3 replies, loss 100%; 3 could not "
                                 "be sent (no route?)")


def test_root_uses_raw_sockets_and_a_user_needs_ping_group_range(namespace: dict[str, Any]
                                                                 ) -> None:
    assert namespace["root"]["ok"], namespace["root"]["message"]
    # Not root, not in ping_group_range: unknown (the monitor's fault), saying what to do.
    assert namespace["nobody_refused"] == {"failure": Failure.LOCAL.value,
                                           "message": NO_SOCKET}
    # In ping_group_range: unprivileged ICMP datagram sockets work.
    allowed = namespace["nobody_allowed"]
    assert allowed["failure"] is None
    assert allowed["message"].startswith("3/3 replies, loss 0%")


def test_the_daemon_records_an_icmp_outage_with_its_cause(namespace: dict[str, Any]) -> None:
    daemon = namespace["daemon"]
    assert "lo-ping DOWN from lab" in daemon["down"]
    assert "connect: packet loss over 50%: 0/2 replies, loss 100%" in daemon["down"]
    (outage,) = daemon["outages"]["outages"]
    assert (outage["cause"], outage["ended_at"]) == ("connect", None)
    assert outage["message"] == "packet loss over 50%: 0/2 replies, loss 100%"
    assert daemon["info"] == ['monitor_target_info{target="lo-ping",location="lab",'
                              'url="icmp://127.0.0.1",kind="icmp"} 1.0']
    assert {line.split('phase="')[1].split('"')[0] for line in daemon["phases_up"]} == {
        "resolve", "processing"}
