"""compose.yaml and compose.demo.yaml: no lifecycle API, no default password, loopback ports.

Docker is not needed: the services' commands run here as they are written, with only
addresses and paths rewritten (Debian's prometheus, `monitor run`, `monitor demo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from daemon import Daemon, free_port
from servers import closed_port
from test_demo_prometheus import free_ports
from test_server_security import bundled_config

ROOT = Path(__file__).resolve().parent.parent
FILES = ("compose.yaml", "compose.demo.yaml")
# What a <form method=post action=http://127.0.0.1:9090/-/quit> on another site sends.
CROSS_SITE_FORM = {"Content-Type": "application/x-www-form-urlencoded",
                   "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site",
                   "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return data


def commands() -> list[tuple[str, str, list[str]]]:
    return [(name, service, spec["command"]) for name in FILES
            for service, spec in compose(name)["services"].items() if "command" in spec]


def test_no_service_enables_a_lifecycle_or_admin_api() -> None:
    assert commands()  # the files were read
    for name, service, command in commands():
        for flag in ("--web.enable-lifecycle", "--web.enable-admin-api"):
            assert flag not in command, f"{name}: {service}"


def test_grafana_admin_password_comes_from_a_secret_file_not_in_the_repository() -> None:
    spec = compose()
    grafana = spec["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env and "GF_SECURITY_ADMIN_USER" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert grafana["secrets"] == ["grafana_admin_password"]
    source = spec["secrets"]["grafana_admin_password"]["file"]
    assert source == "./secrets/grafana_admin_password"
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(["git", "ls-files", "secrets"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    assert tracked == ""
    for name in FILES:
        text = (ROOT / name).read_text()
        assert not re.search(r"ADMIN_PASSWORD\s*[:=]\s*(?!/run/secrets/)", text), name
        assert "admin/admin" not in text


def test_every_published_port_binds_to_loopback() -> None:
    for name in FILES:
        for service, spec in compose(name)["services"].items():
            for port in spec.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name}: {service}: {port}"


# --- the commands, run ---------------------------------------------------------------------


def require_prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is required in CI: install Debian's `prometheus` package")
        pytest.skip("prometheus not installed (Debian: apt-get install prometheus)")
    return path


def local_prometheus_dir(tmp_path: Path) -> Path:
    """dashboards/prometheus as shipped, every scrape and alerting address a closed local port."""
    copy = tmp_path / "etc-prometheus"
    shutil.copytree(ROOT / "dashboards" / "prometheus", copy)
    for path in copy.glob("prometheus*.yml"):
        path.write_text(re.sub(r'"[a-z]+:\d+"', lambda _: f'"127.0.0.1:{closed_port()}"',
                               path.read_text()))
    return copy


@contextlib.asynccontextmanager
async def running(argv: list[str], cwd: Path, *ready: str) -> AsyncIterator[None]:
    """A process started with `argv`, once each `ready` pattern has matched a line."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(60):
            while not all(any(re.search(r, line) for line in lines) for r in ready):
                raw = await proc.stdout.readline()
                assert raw, f"{argv[0]} exited:\n" + "\n".join(lines)
                lines.append(raw.decode(errors="replace").rstrip())
        drain = asyncio.create_task(proc.stdout.read())  # the pipe never fills
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain


@pytest.mark.parametrize("name", FILES)
async def test_prometheus_as_composed_refuses_quit_and_reload_over_http(
        tmp_path: Path, name: str) -> None:
    binary = require_prometheus()
    etc = local_prometheus_dir(tmp_path)
    command = compose(name)["services"]["prometheus"]["command"]
    port = free_port()
    argv = [binary, *(a.replace("/etc/prometheus", str(etc))
                      .replace("=/prometheus", f"={tmp_path / 'tsdb'}") for a in command),
            f"--web.listen-address=127.0.0.1:{port}"]
    async with running(argv, tmp_path, r"Server is ready to receive web requests"), \
            aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{port}"
        for path in ("/-/quit", "/-/reload"):
            async with session.post(base + path, headers=CROSS_SITE_FORM, data=b"x=y") as r:
                assert r.status == 403, path
                assert "Lifecycle API is not enabled" in await r.text()
        async with session.get(base + "/-/healthy") as r:
            assert r.status == 200  # still running


async def test_the_composed_monitor_answers_prometheus_and_nobody_else(tmp_path: Path) -> None:
    command = compose()["services"]["monitor"]["command"]
    config = bundled_config(tmp_path)
    args = [str(config) if a == "/etc/monitor/monitor.yaml" else a for a in command]
    assert args[:3] == ["run", "--config", str(config)]
    async with Daemon(config, args=tuple(args[3:]), env={"MONITOR_TOKEN": ""}) as daemon:
        assert "INSECURE: listening on 0.0.0.0 without a token" in daemon.log()
        async with aiohttp.ClientSession() as session:
            for host, status in ((f"monitor:{daemon.port}", 200),
                                 (f"evil.example:{daemon.port}", 421)):
                async with session.get(f"{daemon.base}/metrics", headers={"Host": host}) as r:
                    assert r.status == status, host


async def test_the_composed_demo_answers_prometheus_on_both_ports(tmp_path: Path) -> None:
    command = compose("compose.demo.yaml")["services"]["monitor"]["command"]
    args = [str(tmp_path / "demo") if a == "/var/lib/monitor/demo" else a for a in command]
    port = free_ports(2)
    argv = [sys.executable, "-m", "monitor", *args, "--port", str(port), "--cycle", "60s"]
    async with running(argv, tmp_path, r"started: location=demo-a", r"started: location=demo-b"), \
            aiohttp.ClientSession() as session:
        for p in (port, port + 1):
            for host, status in ((f"monitor:{p}", 200), (f"evil.example:{p}", 421)):
                async with session.get(f"http://127.0.0.1:{p}/metrics",
                                       headers={"Host": host}) as r:
                    assert r.status == status, (p, host)
