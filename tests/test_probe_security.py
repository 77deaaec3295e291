"""No secret and no echo leaves a probe: hostile servers that echo the request every way."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from daemon import Daemon, until
from hostile_servers import ECHO_MODES, EchoServer

from monitor.model import Failure, Target
from monitor.probes import run_probe
from monitor.probes.http import probe_http
from monitor.probes.sanitize import MAX_MESSAGE, clean, display_url, target_secrets

USER = "alice-user"
PASSWORD = "p@ss/wörd:SECRET1"  # needs percent-encoding in a URL
TOKEN = "tok SECRET2!"  # a query value with a space
API_KEY = "key-SECRET3"
BEARER = "bearer-SECRET5"
BODY_VALUE = "body-SECRET4"


def hostile_url(port: int, path: str = "/x") -> str:
    return (f"http://{quote(USER)}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}{path}"
            f"?token={quote_plus(TOKEN)}&page=1")


def secret_target(url: str, **options: Any) -> Target:
    return Target(
        name="t", url=url, timeout=2.0, method="POST",
        headers=(("X-Api-Key", API_KEY), ("X-Auth", f"Bearer {BEARER}")),
        body=f"secret={BODY_VALUE}&x=1", **options)


def forbidden() -> list[str]:
    """Every form a secret may take in an echo."""
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    basic_latin1 = base64.b64encode(f"{USER}:{PASSWORD}".encode("latin-1")).decode()
    forms = [USER, basic, basic_latin1, basic.rstrip("="), "://"]
    for secret in (PASSWORD, TOKEN, API_KEY, BEARER, BODY_VALUE):
        forms += [secret, quote(secret, safe=""), quote_plus(secret),
                  repr(secret.encode())[2:-1]]
    forms += ["SECRET"]  # any piece of any of them
    return forms


def assert_clean(message: str) -> None:
    for form in forbidden():
        assert form.lower() not in message.lower(), (form, message)
    assert message.isprintable() and "\n" not in message
    assert len(message) <= MAX_MESSAGE


@pytest.mark.parametrize("mode", ECHO_MODES)
async def test_echoed_secrets_never_reach_the_message(mode: str) -> None:
    async with EchoServer(mode) as server:
        result = await probe_http(secret_target(hostile_url(server.port), expect_status=()))

    assert server.requests, "the server saw no request"
    echoed = server.requests[0]
    assert b"SECRET2" in echoed and API_KEY.encode() in echoed  # the secrets were sent
    assert not result.ok
    assert result.message
    assert_clean(result.message)


async def test_parser_errors_keep_only_aiohttps_words() -> None:
    async with EchoServer("bad-status") as server:
        result = await probe_http(secret_target(hostile_url(server.port)))

    assert (result.failure, result.message) == (Failure.HTTP, "bad response: Bad status line")


def test_clean_masks_every_encoding_and_joins_lines() -> None:
    secrets = target_secrets(hostile_url(8080), (("X-Api-Key", API_KEY),), f"s={BODY_VALUE}")
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    raw = (f"Bad thing:\n  b'GET /x?token={quote_plus(TOKEN)} HTTP/1.1\\r\\n"
           f"Authorization: Basic {basic}\\r\\nX-Api-Key: {API_KEY.upper()}'\n"
           f"user {PASSWORD} at https://{USER}@example.com/ body={BODY_VALUE}\x1b[31m")

    message = clean(raw, secrets)

    assert_clean(message)
    assert message.startswith("Bad thing: b'GET /x?token=*** HTTP/1.1")
    assert "<url>" in message


def test_clean_bounds_the_length() -> None:
    assert len(clean("x" * 10_000)) == MAX_MESSAGE
    assert clean("x" * 10_000).endswith("…")


async def test_run_probe_cleans_whatever_the_probe_says() -> None:
    # An unknown kind is answered by run_probe itself: its message goes through clean too.
    result = await run_probe(Target(name="t", url="http://127.0.0.1:1/", kind="ftp\nx"))

    assert result.message == "unknown probe kind 'ftp\\nx'"


def outage_config(tmp: Path, url: str) -> Path:
    path = tmp / "monitor.yaml"
    path.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: hostile
    url: "{url}"
    method: POST
    headers: {{X-Api-Key: "{API_KEY}", X-Auth: "Bearer {BEARER}"}}
    body: "secret={BODY_VALUE}&x=1"
    interval: 1s
    timeout: 500ms
    down_after: 1
""")
    return path


async def test_the_daemon_stores_and_logs_no_secret(tmp_path: Path) -> None:
    async with EchoServer("bad-status") as server:
        config = outage_config(tmp_path, hostile_url(server.port))
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"hostile DOWN from lab")

            async def stored() -> list[Any] | None:
                status, body = await daemon.get_json("/api/v1/outages")
                assert status == 200
                return body["outages"] or None  # type: ignore[index, no-any-return]

            found = await until(stored, what="the outage in /api/v1/outages")
            page = await daemon.get_text("/")
            _, targets = await daemon.get_json("/api/v1/targets")

    assert server.requests and API_KEY.encode() in server.requests[0]
    assert len(found) == 1, found
    assert found[0]["message"] == "bad response: Bad status line"
    assert_clean(found[0]["message"])
    for text in (daemon.log(), page, str(targets)):
        for secret in ("SECRET", base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):
            assert secret not in text


def test_display_url_masks_credentials_and_query_values() -> None:
    assert display_url(hostile_url(8080)) == "http://***@127.0.0.1:8080/x?token=***&page=***"
    assert display_url("https://example.com/") == "https://example.com/"


async def test_check_prints_urls_without_credentials() -> None:
    async with EchoServer("bad-status") as server:
        url = hostile_url(server.port)
        runs = [await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "monitor", "check", *flags, url],
            capture_output=True, text=True, timeout=60, check=False) for flags in ([], ["--json"])]

    line, as_json = (run.stdout for run in runs)
    assert line.startswith(f"DOWN http://***@127.0.0.1:{server.port}/x?token=***&page=*** ")
    assert json.loads(as_json)["url"] == f"http://***@127.0.0.1:{server.port}/x?token=***&page=***"
    for run in runs:
        assert run.returncode == 1
        for secret in ("SECRET", USER, quote(PASSWORD, safe="")):
            assert secret not in run.stdout + run.stderr
