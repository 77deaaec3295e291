"""The status pages and badges through the daemon (`monitor run`): the access switch, the
badge headers, escaping, search and paging, and the location matrix of the demo."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from daemon import Daemon, free_port
from history import Past, write_history
from servers import HttpServer, SilentServer

from monitor.config import ConfigError, parse_config
from monitor.demo import run_demo
from monitor.model import Failure

TOKEN = "s3cret-token-for-tests"


def config(tmp_path: Path, targets: str, server: str = "") -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(f"""\
location: lab
server: {{{server}}}
store: {{path: monitor.db}}
defaults: {{interval: 1s, timeout: 500ms}}
targets:
{targets}""")
    return path


async def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET"
                ) -> tuple[int, Mapping[str, str], str]:
    async with aiohttp.ClientSession() as s, s.request(method, url, headers=headers) as r:
        return r.status, r.headers.copy(), await r.text()


async def test_public_status_opens_pages_and_badges_but_not_the_api(
        tmp_path: Path, http_server: HttpServer) -> None:
    target = f"  - {{name: site, url: '{http_server.url('/ok')}'}}\n"
    path = config(tmp_path, target, f"token: {TOKEN}, public_status: true")
    async with Daemon(path) as daemon:
        for public in ("/", "/target/site", "/badge/site/status.svg",
                       "/badge/site/uptime.svg?window=7d", "/badge/site/response.svg"):
            status, _, _ = await fetch(daemon.base + public)
            assert status == 200, public
        for private in ("/api/v1/targets", "/api/v1/outages", "/metrics"):
            status, headers, _ = await fetch(daemon.base + private)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", private
        status, _, _ = await fetch(daemon.base + "/-/reload", {"X-Monitor-Reload": "1"}, "POST")
        assert status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await fetch(daemon.base + "/api/v1/targets", auth))[0] == 200


async def test_by_default_a_token_guards_the_status_page_too(
        tmp_path: Path, http_server: HttpServer) -> None:
    target = f"  - {{name: site, url: '{http_server.url('/ok')}'}}\n"
    async with Daemon(config(tmp_path, target, f"token: {TOKEN}")) as daemon:
        for path in ("/", "/target/site", "/badge/site/status.svg"):
            assert (await fetch(daemon.base + path))[0] == 401, path
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await fetch(daemon.base + "/", auth))[0] == 200


async def test_badges_are_cacheable_and_safe_to_embed(
        tmp_path: Path, http_server: HttpServer) -> None:
    target = f"  - {{name: site, url: '{http_server.url('/ok')}'}}\n"
    async with Daemon(config(tmp_path, target)) as daemon:
        await daemon.wait_for_log(r"site UP from lab")
        status, headers, body = await fetch(daemon.base + "/badge/site/status.svg")
        assert status == 200 and headers["Content-Type"] == "image/svg+xml; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "max-age=60" and headers["ETag"].startswith('"')
        assert body.startswith("<svg") and ">site</text>" in body and ">up</text>" in body
        assert "<script" not in body.lower() and "href" not in body
        again = await fetch(daemon.base + "/badge/site/status.svg",
                            {"If-None-Match": headers["ETag"]})
        assert again[0] == 304 and again[2] == "" and again[1]["ETag"] == headers["ETag"]
        _, _, uptime = await fetch(daemon.base + "/badge/site/uptime.svg?window=24h")
        assert ">uptime 24h</text>" in uptime
        assert (await fetch(daemon.base + "/badge/site/uptime.svg?window=2y"))[0] == 400
        assert (await fetch(daemon.base + "/badge/nosuch/status.svg"))[0] == 404
        assert (await fetch(daemon.base + "/badge/site/other.svg"))[0] == 404


async def test_pages_escape_what_sites_say_and_page_the_outage_log(
        tmp_path: Path, http_server: HttpServer) -> None:
    now = time.time()
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    outages = [Past("site", now - 7200 - i * 600, now - 7200 - i * 600 + 60, Failure.HTTP,
                    hostile if i == 0 else f"HTTP 50{i % 10}") for i in range(60)]
    await write_history(tmp_path / "monitor.db", "lab", ["site"], since=now - 2 * 86400,
                        until=now - 1, outages=outages)
    target = f"  - {{name: site, url: '{http_server.url('/ok')}'}}\n"
    async with Daemon(config(tmp_path, target)) as daemon:
        index = await daemon.get_text("/")
        first = await daemon.get_text("/target/site")
        second = await daemon.get_text("/target/site?page=2")
        missing = await fetch(daemon.base + "/target/nosuch")
    for page in (index, first):
        assert "<script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<img" not in page
    ids_first = re.findall(r'<tr class="[^"]*" data-outage="(\d+)"', first)
    ids_second = re.findall(r'<tr class="[^"]*" data-outage="(\d+)"', second)
    assert len(ids_first) == 50 and len(ids_second) == 10
    assert not set(ids_first) & set(ids_second)
    assert 'rel="next"' in first and 'rel="prev"' in second and 'rel="next"' not in second
    assert missing[0] == 404


async def test_search_state_filter_grouping_and_paging_of_many_targets(
        tmp_path: Path, refused_port: int) -> None:
    # One refused probe each within the hour: all stay unknown (down_after 3), so the
    # order is by name alone.
    targets = "".join(
        f"  - {{name: t{i:03d}, url: 'http://127.0.0.1:{refused_port}/', interval: 1h, "
        f"labels: {{team: {'blue' if i % 2 else 'red'}}}}}\n" for i in range(120))
    async with Daemon(config(tmp_path, targets)) as daemon:
        shown = await daemon.get_text("/")
        page3 = await daemon.get_text("/?page=3")
        found = await daemon.get_text("/?q=T04")
        grouped = await daemon.get_text("/?group=team&q=team%3Dred")
        nothing_down = await daemon.get_text("/?state=down")

    def names(page: str) -> list[str]:
        return re.findall(r'<article class="target [^"]*" id="t-[^"]*" data-target="([^"]+)"',
                          page)

    assert names(shown) == [f"t{i:03d}" for i in range(50)]
    assert names(page3) == [f"t{i:03d}" for i in range(100, 120)]
    assert "page 1 of 3 (120 targets)" in shown
    assert names(found) == [f"t{i:03d}" for i in range(40, 50)]
    assert names(grouped) == [f"t{i:03d}" for i in range(0, 100, 2)]
    assert "team = red" in grouped and "team = blue" not in grouped
    assert names(nothing_down) == [] and "no target matches" in nothing_down


def test_peers_must_be_urls_and_errors_name_the_line() -> None:
    text = "server:\n  peers:\n    - http://b.example:9321\n    - ftp://c\n    - 3\n" \
           "targets: [{name: a, url: 'http://127.0.0.1/'}]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "m.yaml")
    assert caught.value.errors[0].startswith("m.yaml:4: server.peers[1]: must be an http")
    assert caught.value.errors[1].startswith("m.yaml:5: server.peers[2]:")
    good = parse_config("server: {public_status: true, peers: ['http://b:1/']}\n"
                        "targets: [{name: a, url: 'http://127.0.0.1/'}]\n", "m.yaml")
    assert good.server.public_status and good.server.peers == ("http://b:1",)
    assert not parse_config("targets: [{name: a, url: 'http://127.0.0.1/'}]\n",
                            "m.yaml").server.public_status


async def test_the_demo_tells_blocked_from_one_place_from_down_everywhere(
        tmp_path: Path) -> None:
    """demo-b cannot reach geo (the demo drops its connections): demo-a's page, asking
    demo-b as its peer, says geo is blocked from demo-b while the others are up."""
    port = free_port()
    ready = asyncio.Event()
    demo = asyncio.create_task(run_demo(port=port, cycle=3600, data_dir=str(tmp_path),
                                        ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with aiohttp.ClientSession() as s:
            async with asyncio.timeout(30):
                while True:  # until demo-b has confirmed geo down and demo-a gazprom up
                    async with s.get(f"http://127.0.0.1:{port + 1}/api/v1/targets") as r:
                        b = {t["name"]: t["state"] for t in (await r.json())["targets"]}
                    async with s.get(f"http://127.0.0.1:{port}/api/v1/targets") as r:
                        a = {t["name"]: t["state"] for t in (await r.json())["targets"]}
                    if b.get("geo") == "down" and a.get("geo") == a.get("gazprom") == "up":
                        break
                    await asyncio.sleep(0.2)
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                page = await r.text()
    finally:
        demo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await demo
    row = re.search(r'<tr data-target="geo">(.*?)</tr>', page)
    assert row is not None and "blocked from demo-b" in row.group(1), page
    assert "▲ UP" in row.group(1) and "▼ DOWN" in row.group(1)
    # Every row up from both places says so (whichever targets a loaded machine let be up).
    both_up = [r for r in re.findall(r'<tr data-target="\w+">(.*?)</tr>', page)
               if r.count("▲ UP") == 2]
    assert both_up and all("up everywhere" in r for r in both_up), page
    assert '<th scope="col">demo-a</th><th scope="col">demo-b</th>' in page


async def test_an_https_target_shows_its_certificate_days_and_probe_phases(
        tmp_path: Path, https_server: HttpServer) -> None:
    target = f"  - {{name: tls, url: '{https_server.url('/ok')}', verify_tls: false}}\n"
    async with Daemon(config(tmp_path, target)) as daemon:
        await daemon.wait_for_log(r"tls UP from lab")
        _, api = await daemon.get_json("/api/v1/targets")
        index = await daemon.get_text("/")
        detail = await daemon.get_text("/target/tls")
    expires = api["targets"][0]["last_result"]["cert_expires_at"]  # type: ignore[index]
    days = (datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
            - time.time()) / 86400
    shown = re.search(r"certificate: (\d+) days left", index)
    assert shown is not None and abs(int(shown.group(1)) - days) <= 1
    # The recent probes of /target/NAME: each phase a titled rect of the stacked bar.
    phases = re.findall(r'<rect class="ph ph\d" [^>]*><title>(\w+) [\d.]+ ms</title>', detail)
    assert {"connect", "tls", "processing"} <= set(phases)
    assert "<th>phases (ms)</th>" in detail


async def test_a_peer_that_hangs_or_refuses_costs_its_timeout_and_shows_as_no_answer(
        tmp_path: Path, http_server: HttpServer, silent_server: SilentServer,
        refused_port: int) -> None:
    target = f"  - {{name: site, url: '{http_server.url('/ok')}'}}\n"
    peers = f"peers: ['{silent_server.url('', scheme='http')}', 'http://127.0.0.1:{refused_port}']"
    async with Daemon(config(tmp_path, target, peers)) as daemon:
        page = await daemon.get_text("/")  # answers although one peer never does
        await daemon.wait_for_log(r"peer http://127\.0\.0\.1:\d+: no answer within the timeout")
        await daemon.wait_for_log(rf"peer http://127\.0\.0\.1:{refused_port}: .*unknown")
    row = re.search(r'<tr data-target="site">(.*?)</tr>', page)
    assert row is not None and row.group(1).count(">no answer</td>") == 2
    assert 'title="no answer within the timeout"' in row.group(1)
