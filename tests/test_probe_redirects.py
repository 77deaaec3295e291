"""The redirect policy: what crosses an origin, which hops are followed, where none may go."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from daemon import Daemon
from hostile_servers import RecordingServer

from monitor.config import ConfigError, parse_config
from monitor.model import Failure, Target
from monitor.probes.http import probe_http

TESTS = Path(__file__).resolve().parent


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, timeout=2.0, **options)


def secret_post(url: str, **options: Any) -> Target:
    return target(url.replace("http://", "http://user:pa55word@"), method="POST",
                  headers=(("X-Api-Key", "key-SECRET"),), body="secret=body-SECRET", **options)


def redirect(server: RecordingServer, to: str, status: int) -> str:
    return server.url(f"/redirect?status={status}&to={quote(to, safe='')}")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_cross_origin_hop_gets_neither_headers_nor_body(status: int) -> None:
    # Another port of 127.0.0.1 is another origin.
    async with RecordingServer() as first, RecordingServer() as other:
        result = await probe_http(secret_post(redirect(first, other.url("/landed"), status)))

    assert result.ok, result.message
    [(_, _, sent_headers, sent_body)] = first.seen
    assert sent_headers["X-Api-Key"] == "key-SECRET" and sent_body == b"secret=body-SECRET"
    assert sent_headers["Authorization"].startswith("Basic ")
    [(method, path, headers, body)] = other.seen
    assert path == "/landed"
    assert method == ("POST" if status in (307, 308) else "GET")
    assert "X-Api-Key" not in headers and "Authorization" not in headers
    assert body == b""


@pytest.mark.parametrize("status", [302, 307])
async def test_same_origin_hop_keeps_headers_and_307_keeps_the_body(status: int) -> None:
    async with RecordingServer() as server:
        result = await probe_http(secret_post(redirect(server, "/landed", status)))

    assert result.ok, result.message
    [_, (method, path, headers, body)] = server.seen
    assert path == "/landed" and headers["X-Api-Key"] == "key-SECRET"
    assert "Authorization" in headers
    assert (method, body) == (("POST", b"secret=body-SECRET") if status == 307 else ("GET", b""))


async def test_headers_stay_dropped_after_leaving_the_origin() -> None:
    async with RecordingServer() as first, RecordingServer() as other:
        back = first.url("/back")
        result = await probe_http(
            secret_post(redirect(first, redirect(other, back, 307), 307)))

    assert result.ok, result.message
    assert [path for _, path, _, _ in first.seen] == ["/redirect", "/back"]
    assert "X-Api-Key" not in first.seen[1][2] and first.seen[1][3] == b""


async def test_same_origin_policy_judges_a_redirect_elsewhere() -> None:
    async with RecordingServer() as first, RecordingServer() as other:
        inside = await probe_http(
            target(redirect(first, "/landed", 302), redirects="same-origin"))
        outside = await probe_http(
            target(redirect(first, other.url("/landed"), 302), redirects="same-origin"))

    assert (inside.ok, inside.status) == (True, 200)
    assert (outside.ok, outside.status) == (True, 302)
    assert other.seen == []


async def test_none_policy_and_follow_redirects_false_judge_the_first_response() -> None:
    async with RecordingServer() as server:
        url = redirect(server, "/landed", 302)
        none = await probe_http(target(url, redirects="none"))
        old = await probe_http(target(url, follow_redirects=False))
        zero = await probe_http(target(url, max_redirects=0))

    assert (none.status, old.status, zero.status) == (302, 302, 302)
    assert (none.ok, old.ok, zero.ok) == (True, True, True)
    assert [path for _, path, _, _ in server.seen] == ["/redirect"] * 3


async def test_redirect_to_a_non_http_location_is_http() -> None:
    async with RecordingServer() as server:
        result = await probe_http(target(redirect(server, "file:///etc/passwd", 302)))

    assert (result.failure, result.message) == (
        Failure.HTTP, "redirect to an invalid or non-HTTP location")


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs root and unshare for a network namespace")
def test_redirects_into_private_addresses_are_refused_on_the_resolved_address() -> None:
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(TESTS / "netns_redirects.py")],
        capture_output=True, text=True, timeout=60, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    refused = {"failure": "http", "message": "redirect to a private address refused",
               "status": None}
    for case in ("ip-literal", "hosts-file", "dns-name", "metadata", "mapped-v6"):
        for status in (302, 307):
            assert {**out[f"{case}-{status}"], "status": None} == refused, (case, out)
    assert out["private-server-saw"] == ["/redirect", "/x"]  # only the private target's own
    for status in (302, 307):
        assert out[f"public-name-{status}"] == {"failure": None, "message": "", "status": 200}
    assert out["other-public-saw"] == ["/landed", "/landed"]
    assert out["private-target"] == {"failure": None, "message": "", "status": 200}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("same-origin", None),
     ("sometimes", "c.yaml:1: targets[0].redirects: must be one of follow, same-origin, none, "
                   "got 'sometimes'")],
)
def test_redirects_option_is_validated(value: str, expected: str | None) -> None:
    text = f"targets: [{{name: a, url: 'http://x/', redirects: {value}}}]\n"
    if expected is None:
        config = parse_config(text, "c.yaml", {})
        assert config.targets[0].redirects == value
    else:
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "c.yaml", {})
        assert caught.value.errors == [expected]


async def test_the_daemon_sends_nothing_of_the_target_past_its_origin(tmp_path: Path) -> None:
    async with RecordingServer() as first, RecordingServer() as other:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: site
    url: "{redirect(first, other.url("/landed"), 307)}"
    method: POST
    headers: {{X-Api-Key: key-SECRET}}
    body: secret=body-SECRET
    interval: 1s
    timeout: 900ms
  - name: strict
    url: "{redirect(first, other.url("/strict"), 302)}"
    redirects: same-origin
    expect: {{status: 200}}
    interval: 1s
    timeout: 900ms
    down_after: 1
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"site UP from lab")
            await daemon.wait_for_log(r"strict DOWN from lab .*http: HTTP 302, expected 200")

    landed = [(m, h, b) for m, p, h, b in other.seen if p == "/landed"]
    assert landed, other.seen
    for method, headers, body in landed:
        assert (method, body, "X-Api-Key" in headers) == ("POST", b"", False)
    assert all(path != "/strict" for _, path, _, _ in other.seen)
