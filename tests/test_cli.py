"""The command line: check, validate, help texts, and the history commands' formats."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import HttpServer, closed_port

from monitor.model import Failure, Outage, OutageTime
from monitor.reports import format_outages
from monitor.timefmt import human_duration

ROOT = Path(__file__).resolve().parent.parent


async def monitor(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "monitor", *args], capture_output=True,
        text=True, timeout=60, check=False, cwd=cwd)


async def test_check_prints_verdict_and_phases_and_sets_the_exit_code() -> None:
    async with HttpServer() as web:
        up = await monitor("check", web.url("/ok"))
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith("UP ")
        for phase in ("resolve=", "connect=", "tls=", "processing=", "transfer="):
            assert phase in up.stdout
        down = await monitor("check", "--json", web.url("/ok"), web.url("/status/500"),
                             f"http://127.0.0.1:{closed_port()}/")
    assert down.returncode == 1
    results = [json.loads(line) for line in down.stdout.splitlines()]
    assert [(r["up"], r["failure"], r["status"]) for r in results] == [
        (True, None, 200), (False, "http", 500), (False, "connect", None)]
    assert set(results[0]["phases"]) == {"resolve", "connect", "tls", "processing", "transfer"}


async def test_validate_lists_every_error_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - name: a\n    url: http://127.0.0.1/\n    timeout: ten\n"
                   "  - name: b\n    url: ftp://127.0.0.1/\n")
    result = await monitor("validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{bad}:4: targets[0].timeout: must be a duration like 10s, got 'ten'" in lines
    assert any(line.startswith(f"{bad}:6: targets[1].url:") for line in lines)
    good = await monitor("validate", "config/monitor.yaml")
    assert good.returncode == 0 and "5 targets" in good.stdout


async def test_the_example_config_is_valid_including_notifiers_and_maintenance(
        tmp_path: Path) -> None:
    env = {**os.environ, "SLACK_WEBHOOK_URL": "https://hooks.slack.test/services/T/B/X",
           "MONITOR_TOKEN": "t0ken"}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "monitor", "validate", "config/example.yaml"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("notifiers:\n  ops: {type: slack}\ntargets:\n"
                      "  - {name: a, url: 'http://127.0.0.1/', notifiers: [ops]}\n")
    bad = await monitor("validate", str(broken))
    assert bad.returncode == 1
    assert f"{broken}:2: notifiers.ops.url: required" in bad.stdout


async def test_run_refuses_a_broken_config_naming_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - name: a\n    url: http://127.0.0.1/\n    intervall: 1s\n")
    result = await monitor("run", "--config", str(bad))
    assert result.returncode == 2
    assert (f"{bad}:4: targets[0].intervall: unknown key; did you mean 'interval'?"
            in result.stderr)


@pytest.mark.parametrize("command", ["run", "check", "validate", "outages", "report", "demo"])
async def test_every_command_has_help_with_an_example(command: str) -> None:
    result = await monitor(command, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout and f"monitor {command}" in result.stdout


def test_outage_table_and_csv() -> None:
    outage = Outage(7, "rt.com", "eu", 1645700000.0, 1645700750.0, Failure.TIMEOUT,
                    "timed out after 10s during connect", 12, {"timeout": 12})
    seen = [(outage, OutageTime(known=750.0, unknown=0.0))]
    text = format_outages(seen, "table")
    assert "2022-02-24T10:53:20Z" in text and "12m 30s" in text and "timeout" in text
    assert "unknown" not in text
    csv_text = format_outages(seen, "csv").splitlines()
    assert csv_text[0].startswith(
        "id,target,location,started_at,ended_at,duration_seconds,unknown_seconds")
    assert csv_text[1].startswith(
        "7,rt.com,eu,2022-02-24T10:53:20Z,2022-02-24T11:05:50Z,750.0,0.0")
    # Part of it while the monitor was stopped: the duration is what it saw, the rest is
    # shown apart.
    gap = [(outage, OutageTime(known=233.0, unknown=517.0))]
    assert "3m 53s (+8m 37s unknown)" in format_outages(gap, "table")
    assert human_duration(3 * 86400 + 4 * 3600 + 5) == "3d 4h"
    assert human_duration(0.2) == "0s"
