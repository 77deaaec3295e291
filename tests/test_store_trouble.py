"""Store trouble through the daemon: `monitor run` refuses a damaged, truncated or
unwritable history with one clear line (exit status 2), and a history that fails while
running gives 503 pages, logged and retried background loops, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from daemon import Daemon, free_port
from servers import HttpServer

from monitor.app import guarded_loop
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


async def test_a_history_damaged_while_running_gives_503_and_a_clean_stop(
        tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    async with HttpServer() as site:
        daemon = Daemon(config_for(tmp_path, db, site.url("/ok")))
        await daemon.start()
        try:
            await daemon.wait_for_log(r"site UP from lab")
            for file in (db, db.with_name("history.db-wal")):  # a disk error, a bad restore
                with file.open("r+b") as f:
                    f.write(b"\xff" * file.stat().st_size)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{daemon.base}/api/v1/outages") as r:
                    assert r.status == 503
                    assert r.headers["Retry-After"] == "60"
                    body = await r.json()
                async with http.get(f"{daemon.base}/") as r:
                    assert r.status == 503
                    page = await r.text()
            assert body["error"].startswith("the outage history is unavailable: cannot read")
            assert "The outage history is unavailable" in page
            assert 'data-target="site"' in page  # live state still shown from memory
            # The uptime refresh fails, says so, and keeps going; probing goes on.
            await daemon.wait_for_log(r"uptime refresh failed: cannot read .*; retrying")
            mark = len(daemon.lines)
            site.status = 503
            await daemon.wait_for_log(r"site DOWN from lab", after=mark)
        finally:
            code = await daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.log()
    assert "Traceback" not in daemon.log()
    assert "stopped lab" in daemon.log()


async def test_a_background_loop_logs_a_failing_kind_once_and_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[Exception | None] = [OSError("disk"), OSError("disk"), ValueError("bad"),
                                        None, OSError("again")]
    calls = 0
    done = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls >= len(outcomes):
            done.set()
        error = outcomes[min(calls, len(outcomes)) - 1]
        if error is not None:
            raise error

    task = asyncio.create_task(guarded_loop("chore", step, 0.0))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    messages = [r.getMessage() for r in caplog.records if r.name == "monitor"]
    assert messages[:4] == [
        "chore failed: disk; retrying every 0s",
        "chore failed: bad; retrying every 0s",
        "chore works again",
        "chore failed: again; retrying every 0s",
    ]


async def test_the_history_commands_name_a_damaged_file_and_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    await make_history(db)
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    for command in ("outages", "report"):
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "monitor", command, "--db", str(db)],
            capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"monitor {command}: {db} is damaged (truncated: ")
        assert "Traceback" not in result.stderr
