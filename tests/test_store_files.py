"""The history is private: database, -wal and -shm 0600 and new directories 0700, whatever
the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import Daemon
from servers import HttpServer

from monitor.store import SqliteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)  # files would be 0666 and directories 0777 if we followed it
    try:
        yield
    finally:
        os.umask(old)


async def test_store_creates_private_files_and_directories(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "data" / "deep" / "monitor.db"
    store = SqliteStore(path, flush_interval=60.0)
    await store.open()
    try:
        await store.start_run("lab", 1000.0)
        assert await store.flush()
        files = {p.name: mode(p) for p in path.parent.iterdir()}
    finally:
        await store.close()
    assert files == {"monitor.db": 0o600, "monitor.db-wal": 0o600, "monitor.db-shm": 0o600}
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "deep") == 0o700


async def test_existing_directory_and_file_keep_their_modes(
    tmp_path: Path, permissive_umask: None
) -> None:
    # A directory the operator made (say, shared with a backup group) is theirs.
    tmp_path.joinpath("shared").mkdir(mode=0o750)
    path = tmp_path / "shared" / "monitor.db"
    store = SqliteStore(path, flush_interval=60.0)
    await store.open()
    await store.close()
    assert mode(tmp_path / "shared") == 0o750
    assert mode(path) == 0o600


async def test_daemon_history_is_private(tmp_path: Path, permissive_umask: None) -> None:
    async with HttpServer() as web:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: test-lab
store: {{path: history/monitor.db}}
defaults: {{interval: 1s, timeout: 500ms}}
targets:
  - {{name: a, url: "{web.url("/ok")}"}}
""")
        async with Daemon(config) as daemon:
            await daemon.wait_for_log(r"a UP from test-lab since")
            history = tmp_path / "history"
            files = {p.name: mode(p) for p in history.iterdir()}
    assert mode(history) == 0o700
    assert files == {"monitor.db": 0o600, "monitor.db-wal": 0o600, "monitor.db-shm": 0o600}
