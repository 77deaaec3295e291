"""The daemon's HTTP server under attack: DNS rebinding, cross-site reloads, bad headers.

Every test runs `monitor run` as a subprocess and talks to it over 127.0.0.1 with a real
client sending the exact headers a browser (or an attacker) would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from daemon import Daemon, free_port
from servers import closed_port

ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, *names: str, server: str = "") -> Path:
    refused = closed_port()  # probes stay on loopback and fail fast
    targets = "".join(f"  - {{name: {n}, url: 'http://127.0.0.1:{refused}/'}}\n" for n in names)
    path.write_text(f"location: sec-lab\nstore: {{path: monitor.db}}\n{server}\n"
                    f"defaults: {{interval: 60s, timeout: 1s}}\ntargets:\n{targets}")
    return path


async def send(daemon: Daemon, method: str, path: str, headers: dict[str, str],
               data: bytes | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, \
            s.request(method, f"{daemon.base}{path}", headers=headers, data=data) as r:
        return r.status, await r.text()


async def target_names(daemon: Daemon) -> set[str]:
    status, body = await daemon.get_json("/api/v1/targets")
    assert status == 200
    return {t["name"] for t in body["targets"]}  # type: ignore[index]


def reloads(daemon: Daemon, after: int) -> int:
    return sum("config reloaded from" in line for line in daemon.lines[after:])


# --- Host allow-list (DNS rebinding) -----------------------------------------------------------


async def test_host_allow_list_serves_local_names_and_refuses_others_with_421(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "monitor.yaml", "a",
                          server="server: {allowed_hosts: [status.example.org]}")
    async with Daemon(config, args=("--allow-host", "monitor")) as daemon:
        port = daemon.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "LocalHost.",
                     f"[::1]:{port}", f"10.20.30.40:{port}",  # an IP literal cannot rebind
                     f"status.example.org:{port}",  # server.allowed_hosts
                     f"monitor:{port}"):  # --allow-host, as Prometheus in compose sends it
            for path in ("/api/v1/targets", "/healthz", "/metrics", "/"):
                status, _ = await send(daemon, "GET", path, {"Host": host})
                assert status == 200, (host, path)

        for host in (f"evil.example:{port}", "monitor.evil.example", f"127.0.0.1.nip.io:{port}",
                     "a:b:c", "[::1"):
            for path in ("/api/v1/targets", "/healthz", "/metrics", "/"):
                status, text = await send(daemon, "GET", path, {"Host": host})
                assert status == 421, (host, path)
                assert "server.allowed_hosts" in json.loads(text)["error"]
        status, text = await send(daemon, "GET", "/", {"Host": f"evil.example:{port}"})
        assert json.loads(text)["error"] == (
            f"Host 'evil.example:{port}' is not a name of this monitor; add it to "
            "server.allowed_hosts (this check blocks DNS rebinding)")
        # One warning per refused name, not one per request.
        warnings = [line for line in daemon.lines if "refused a request for Host" in line]
        assert sum(f"'evil.example:{port}'" in line for line in warnings) == 1


async def test_a_rebound_page_cannot_reload_even_as_same_origin(tmp_path: Path) -> None:
    """After rebinding, the attacker's page *is* same-origin: only the Host check stops it."""
    config = write_config(tmp_path / "monitor.yaml", "a")
    async with Daemon(config) as daemon:
        write_config(config, "a", "arrives")
        mark = len(daemon.lines)
        evil = f"rebind.evil.example:{daemon.port}"
        status, _ = await send(daemon, "POST", "/-/reload", {
            "Host": evil, "Origin": f"http://{evil}", "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Mode": "cors", "Content-Type": "application/json",
            "X-Monitor-Reload": "1"}, b"{}")
        assert status == 421
        assert await target_names(daemon) == {"a"}
        assert reloads(daemon, mark) == 0


# --- reload only from deliberate clients (CSRF) ---------------------------------------------

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Upgrade-Insecure-Requests": "1",
}


async def test_cross_site_form_posts_do_not_reload_and_scripts_do(tmp_path: Path) -> None:
    config = write_config(tmp_path / "monitor.yaml", "a")
    async with Daemon(config) as daemon:
        write_config(config, "a", "arrives")  # a reload would add this target
        mark = len(daemon.lines)
        local = f"127.0.0.1:{daemon.port}"
        # <form method=post enctype=text/plain action=http://127.0.0.1:9321/-/reload> on
        # https://evil.example, submitted by a current browser ...
        form = {**BROWSER, "Host": local, "Content-Type": "text/plain",
                "Origin": "https://evil.example", "Referer": "https://evil.example/",
                "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1"}
        attempts = [
            form,
            # ... as an urlencoded form,
            {**form, "Content-Type": "application/x-www-form-urlencoded"},
            # ... by an old browser without Sec-Fetch-* (Origin only),
            {**BROWSER, "Host": local, "Content-Type": "text/plain",
             "Origin": "https://evil.example"},
            # ... by a browser that sends neither (the simple-request rule alone),
            {**BROWSER, "Host": local, "Content-Type": "text/plain"},
            # ... from a sandboxed frame (Origin: null), a sibling site, a no-cors fetch.
            {**BROWSER, "Host": local, "Content-Type": "text/plain", "Origin": "null"},
            {**form, "Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost"},
            {**form, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"},
            # A cross-origin fetch that sets the custom header is preflighted (and would
            # fail it); if a broken client sends it anyway, Origin still refuses it.
            {**form, "X-Monitor-Reload": "1", "Sec-Fetch-Mode": "cors"},
            {**BROWSER, "Host": local, "Origin": f"http://127.0.0.1:{daemon.port + 1}",
             "X-Monitor-Reload": "1"},
        ]
        for headers in attempts:
            status, text = await send(daemon, "POST", "/-/reload", headers, b"x=y\r\n")
            assert status == 403, headers
            assert json.loads(text)["ok"] is False
        assert reloads(daemon, mark) == 0
        assert await target_names(daemon) == {"a"}
        status, text = await send(daemon, "POST", "/-/reload",
                                  {"Host": local, "Content-Type": "text/plain"}, b"x")
        assert json.loads(text)["errors"] == [
            "send the header 'X-Monitor-Reload: 1' (or a JSON Content-Type), e.g. curl -X POST "
            "-H 'X-Monitor-Reload: 1' http://HOST:PORT/-/reload; a plain form post is refused "
            "so that no web page can trigger a reload"]
        assert "reload refused from 127.0.0.1: send the header" in daemon.log()

        # What a script, curl or the status page itself may send.
        for headers, body in [
            ({"X-Monitor-Reload": "1"}, None),
            ({"Content-Type": "application/json"}, b"{}"),
            ({"X-Monitor-Reload": "1", "Origin": f"http://{local}",
              "Sec-Fetch-Site": "same-origin"}, None),
            ({"X-Monitor-Reload": "1", "Sec-Fetch-Site": "none"}, None),  # typed in the bar
        ]:
            status, text = await send(daemon, "POST", "/-/reload", headers, body)
            assert (status, json.loads(text)) == (200, {"ok": True, "errors": []}), headers
        assert await target_names(daemon) == {"a", "arrives"}


async def test_ten_parallel_reloads_share_runs_and_all_succeed(tmp_path: Path) -> None:
    # Big enough that one reload takes far longer than ten requests take to arrive (with
    # 200 targets, a reload on uvloop could end before the last request was read).
    config = write_config(tmp_path / "monitor.yaml", *(f"t{i}" for i in range(5000)))
    async with Daemon(config) as daemon:
        write_config(config, *(f"t{i}" for i in range(5001)))
        mark = len(daemon.lines)
        answers = await asyncio.gather(
            *(send(daemon, "POST", "/-/reload", {"X-Monitor-Reload": "1"}) for _ in range(10)),
            send(daemon, "GET", "/healthz", {}))
        assert answers[-1] == (200, "ok\n")
        for status, text in answers[:-1]:
            assert (status, json.loads(text)) == (200, {"ok": True, "errors": []})
        # One run, plus at most one queued behind it for the calls that came during it.
        assert 1 <= reloads(daemon, mark) <= 2
        assert "t5000" in await target_names(daemon)


async def test_a_reload_waiting_on_its_config_file_does_not_stall_healthz(
        tmp_path: Path) -> None:
    """The config is a FIFO: the reload's read blocks until the test writes the file."""
    text = write_config(tmp_path / "plain.yaml", "a").read_text()
    fifo = tmp_path / "monitor.yaml"
    os.mkfifo(fifo)
    loop = asyncio.get_running_loop()
    daemon = Daemon(fifo)
    writer = loop.run_in_executor(None, fifo.write_text, text)  # the first load at start
    async with daemon:
        await writer
        # Opening the write end returns once the reload has opened the file to read it.
        opened = loop.run_in_executor(None, os.open, fifo, os.O_WRONLY)
        reload = asyncio.create_task(
            send(daemon, "POST", "/-/reload", {"X-Monitor-Reload": "1"}))
        fd = await asyncio.wait_for(opened, 30)
        try:  # the reload now waits in read() until the file is written and closed
            async with asyncio.timeout(10):
                assert await send(daemon, "GET", "/healthz", {}) == (200, "ok\n")
        finally:
            os.write(fd, text.encode())
            os.close(fd)
        assert (await reload)[0] == 200


# --- Authorization -------------------------------------------------------------------------


async def raw_request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()  # Connection: close
    finally:
        writer.close()


async def test_non_utf8_authorization_gets_401_not_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path / "monitor.yaml", "a", server="server: {token: s3cret}")
    async with Daemon(config) as daemon:
        for value in (b"Bearer \xff\xfe\xfd", b"Bearer s3cret\xc3", b"\xe9\xe9"):
            answer = await raw_request(daemon.port, b"GET /api/v1/targets HTTP/1.1\r\n"
                                       b"Host: 127.0.0.1\r\nAuthorization: " + value +
                                       b"\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert b"a bearer token is required" in answer
        ok = await raw_request(daemon.port, b"GET /api/v1/targets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"Authorization: Bearer s3cret\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ")
        assert "Traceback" not in daemon.log()
        assert "Error handling request" not in daemon.log()


# --- listening beyond loopback needs a token -------------------------------------------------


async def run_to_exit(*args: str, env: dict[str, str] | None = None,
                      cwd: Path | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", *args, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=cwd)
    try:
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_public_listen_without_token_is_refused_unless_explicitly_allowed(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "monitor.yaml", "a")
    for listen in ("0.0.0.0", "::", "monitor.example.org"):
        code, err = await run_to_exit("run", "--config", str(config), "--listen", listen,
                                      "--port", str(free_port()), cwd=tmp_path)
        assert code == 2, err
        assert f"monitor: refusing to listen on {listen} without a token" in err
        assert "--insecure-no-token" in err
    assert not (tmp_path / "monitor.db").exists()  # refused before anything was opened

    async with Daemon(config, args=("--listen", "0.0.0.0", "--insecure-no-token")) as daemon:
        assert await target_names(daemon) == {"a"}
        assert re.search(r"WARNING monitor: INSECURE: listening on 0\.0\.0\.0 without a token",
                         daemon.log())
    allowed = write_config(tmp_path / "allowed.yaml", "a", server=(
        "server: {listen: 0.0.0.0, allow_public_without_token: true}"))
    async with Daemon(allowed) as daemon:
        assert "INSECURE: listening on 0.0.0.0" in daemon.log()


def docker_instruction(name: str) -> list[str]:
    """The JSON argument list of a Dockerfile instruction (CMD, ENTRYPOINT)."""
    text = (ROOT / "Dockerfile").read_text()
    found = re.findall(rf"^{name} (\[.*\])$", text, flags=re.M)
    assert len(found) == 1, name
    value: list[str] = json.loads(found[0])
    return value


def bundled_config(tmp_path: Path) -> Path:
    """config/monitor.yaml as shipped, its targets pointed at a closed local port."""
    text = (ROOT / "config" / "monitor.yaml").read_text()
    text = re.sub(r"(url: )\S+", rf"\g<1>http://127.0.0.1:{closed_port()}/", text)
    path = tmp_path / "monitor.yaml"
    path.write_text(text)
    return path


async def test_docker_image_command_runs_with_a_token_from_the_environment(
        tmp_path: Path) -> None:
    assert docker_instruction("ENTRYPOINT") == ["monitor"]
    cmd = docker_instruction("CMD")
    config = bundled_config(tmp_path)
    args = [str(config) if a == "/etc/monitor/monitor.yaml" else a for a in cmd]
    assert args[0] == "run" and "0.0.0.0" in args

    code, err = await run_to_exit(*args, "--port", str(free_port()), cwd=tmp_path,
                                  env={"MONITOR_TOKEN": ""})
    assert code == 2 and "refusing to listen on 0.0.0.0 without a token" in err

    daemon = Daemon(config, args=tuple(args[3:]), env={"MONITOR_TOKEN": "from-env"})
    async with daemon:
        status, _ = await daemon.get_json("/api/v1/targets")
        assert status == 401
        status, text = await send(daemon, "GET", "/api/v1/targets",
                                  {"Authorization": "Bearer from-env"})
        assert status == 200 and "rt.com" in text
        # The image's HEALTHCHECK needs no token.
        check = re.search(r'CMD \["python", "-c", (".*")\]', (ROOT / "Dockerfile").read_text())
        assert check is not None
        code = json.loads(check.group(1)).replace(":9321/", f":{daemon.port}/")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


def test_server_options_are_validated_with_file_and_line() -> None:
    from monitor.config import ConfigError, parse_config

    text = ("targets: [{name: a, url: 'http://x/'}]\nserver:\n"
            "  allowed_hosts: [ok.example, 'https://monitor.example:9321', '*']\n"
            "  allow_public_without_token: maybe\n  token: ''\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    assert caught.value.errors == [
        "c.yaml:3: server.allowed_hosts[1]: 'https://monitor.example:9321' is not a host name; "
        "write the name alone (monitor.example.com), without scheme or port",
        "c.yaml:4: server.allow_public_without_token: must be true or false, got 'maybe'",
        "c.yaml:5: server.token: must not be empty",
    ]
    server = parse_config("targets: [{name: a, url: 'http://x/'}]\nserver:\n"
                          "  allowed_hosts: [Status.Example, '[::1]', '*']\n"
                          "  token: ${T:-}\n", "c.yaml", environ={}).server
    assert server.allowed_hosts == ("status.example", "::1", "*")
    assert server.token is None and server.allow_public_without_token is False


async def test_allow_host_flag_refuses_a_url_with_the_reason(tmp_path: Path) -> None:
    code, err = await run_to_exit("run", "--config", str(write_config(tmp_path / "c.yaml", "a")),
                                  "--allow-host", "https://monitor.example:9321")
    assert code == 2
    assert ("argument --allow-host: 'https://monitor.example:9321' is not a host name; write "
            "the name alone (monitor.example.com), without scheme or port") in err
