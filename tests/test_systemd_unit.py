"""deploy/systemd/monitor.service: systemd accepts it, it is locked down, and its command runs."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import Daemon, free_port
from servers import closed_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "monitor.service"
BINARY = "/opt/monitor/bin/monitor"
CONFIG = "/etc/monitor/monitor.yaml"

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)")


def directives() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, values in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def local_unit(tmp_path: Path) -> Path:
    """The unit as shipped, its binary path pointed at this checkout's `monitor`."""
    monitor = Path(sys.executable).parent / "monitor"  # the venv's entry point
    assert monitor.exists()
    path = tmp_path / "monitor.service"
    path.write_text(UNIT.read_text().replace(BINARY, str(monitor)))
    return path


@needs_systemd
def test_systemd_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(local_unit(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no unknown or misspelt directive


@needs_systemd
def test_systemd_rates_the_unit_well_locked_down(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local_unit(tmp_path))],
        capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for monitor\.service: ([\d.]+)", result.stdout)
    assert level is not None, result.stdout + result.stderr
    # 0 is a unit that can do nothing, 10 an unconfined root process; below 2 reads "OK".
    assert float(level.group(1)) <= 2.0, result.stdout


def test_the_unit_keeps_the_hardening_it_promises() -> None:
    d = directives()
    single = {k: v[-1] for k, v in d.items()}
    for key, value in {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "", "StateDirectory": "monitor",
        "StateDirectoryMode": "0700", "UMask": "0077", "RestrictSUIDSGID": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "LockPersonality": "yes",
        "SystemCallArchitectures": "native", "WorkingDirectory": "/var/lib/monitor",
    }.items():
        assert single.get(key) == value, key
    assert d["SystemCallFilter"][0] == "@system-service"
    assert set(single["RestrictAddressFamilies"].split()) <= {
        "AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert "ReadWritePaths" not in d  # writable: the state directory only


async def test_the_units_command_runs_the_daemon_and_reloads_on_its_signal(
        tmp_path: Path) -> None:
    d = directives()
    command = d["ExecStart"][0].split()
    assert command[0] == BINARY
    args = command[1:]
    assert args == ["run", "--config", CONFIG]  # listens where the config says: 127.0.0.1
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    config = tmp_path / "monitor.yaml"  # in /var/lib/monitor, the working directory
    config.write_text(f"store: {{path: data/monitor.db}}\ndefaults: {{interval: 60s}}\n"
                      f"targets: [{{name: a, url: 'http://127.0.0.1:{closed_port()}/'}}]\n")
    async with Daemon(config, port=free_port()) as daemon:
        status, _ = await daemon.get_json("/api/v1/targets")
        assert status == 200
        mark = len(daemon.lines)
        daemon.send(signal.SIGHUP)
        await daemon.wait_for_log(r"config reloaded from", after=mark)
        assert (tmp_path / "data" / "monitor.db").exists()
