"""Store trouble through the daemon: `monitor run` refuses a damaged, truncated or
unwritable history with one clear line (exit status 2), and a history that fails while
running gives 503 pages, logged and retried background loops, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import free_port

from monitor.model import Failure, ProbeResult, State, Transition
from monitor.store import SqliteStore

T0 = 1_699_999_200.0


def config_for(tmp: Path, db: Path, url: str = "http://127.0.0.1:9/") -> Path:
    path = tmp / "monitor.yaml"
    path.write_text(f"""\
location: lab
store: {{path: "{db}"}}
targets:
  - name: site
    url: {url}
    interval: 1s
    timeout: 500ms
    down_after: 2
""")
    return path


async def make_history(path: Path, series: int = 2000) -> None:
    """A real history file with an outage and enough rollups to span many pages."""
    store = SqliteStore(path, flush_interval=60, clock=lambda: T0)
    await store.open()
    try:
        await store.start_run("lab", T0)
        for i in range(series):
            store.record_result("lab", ProbeResult(f"site-{i}", T0, 0.1, True, status=200))
        failed = ProbeResult("site", T0, 0.1, False, Failure.HTTP, "HTTP 503", 503)
        await store.apply_transition(
            "lab", Transition("site", State.UP, State.DOWN, T0, failed, failed, {"http": 2}))
        assert await store.flush()
    finally:
        await store.close()  # the last connection checkpoints the WAL into the file


async def monitor_run(config: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "monitor", "run", "--config", str(config),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False, cwd=config.parent)


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_a_damaged_history_stops_start_up_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    await make_history(db)
    with db.open("r+b") as f:  # the header overwritten: what a bad copy or a disk error does
        f.write(b"this is not a database at all.." * 4)
    line = one_clear_line(await monitor_run(config_for(tmp_path, db)))
    assert line.startswith(f"monitor: {db} is damaged")
    assert f"mv {db} {db}.damaged" in line and "backup" in line


async def test_a_truncated_history_stops_start_up_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    await make_history(db)
    size = db.stat().st_size
    assert size > 100_000
    with db.open("r+b") as f:
        f.truncate(size // 2)
    line = one_clear_line(await monitor_run(config_for(tmp_path, db)))
    assert line.startswith(f"monitor: {db} is damaged (truncated: {size // 2} of {size} bytes)")
    assert "move it aside" in line


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    """A real small filesystem (remounted read-only by the tests), or a skip where mounting
    is not permitted."""
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-file"])
async def test_an_unwritable_history_stops_start_up_with_one_line(
        tmp_path: Path, existing: bool) -> None:
    with tmpfs(tmp_path / "ro") as directory:
        db = directory / "history.db"
        if existing:
            await make_history(db, series=10)
        remount(directory, "ro")  # read-only even for root
        try:
            line = one_clear_line(await monitor_run(config_for(tmp_path, db)))
        finally:
            remount(directory, "rw")
    # A new file cannot be created; an existing one (WAL) cannot even be read without -shm.
    assert line.startswith((f"monitor: cannot write {db} (", f"monitor: cannot read {db} ("))
    assert "make the file and its directory writable" in line
    assert "or set store.path" in line
