"""A lifecycle that cannot leak: whatever ends or interrupts start-up, no task keeps running
and every store is closed; stop() is safe in any state. Faults are provoked for real (a
port already taken, a store path that cannot exist), nothing of ours is patched."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor.app import Monitor, StartupError, running_monitor
from monitor.config import (
    Config,
    ConnectivityConfig,
    MetricsConfig,
    ServerConfig,
    StoreConfig,
)
from monitor.connectivity import Connectivity
from monitor.demo import run_demo
from monitor.model import Target
from monitor.notifications import Notifications
from monitor.scheduler import Scheduler
from monitor.store import open_store


@contextmanager
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def config(tmp_path: Path, port: int, db: str = "history.db") -> Config:
    return Config(source="<test>", location="lab",
                  server=ServerConfig(listen="127.0.0.1", port=port),
                  store=StoreConfig(path=str(tmp_path / db)), metrics=MetricsConfig(),
                  targets=(Target("site", "http://127.0.0.1:9/", interval=1.0, timeout=0.5),))


def others() -> set[asyncio.Task[object]]:
    """Tasks still running besides the test's own."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def closed_cleanly(db: Path) -> bool:
    """SQLite removes the -wal file when the last connection to the file closes."""
    return db.exists() and not Path(f"{db}-wal").exists()


def runs(db: Path) -> list[tuple[float, float | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT started_at, ended_at FROM runs").fetchall()


async def test_busy_port_after_the_store_opened_leaves_nothing_running(tmp_path: Path) -> None:
    before = others()
    with busy_port() as port, pytest.raises(StartupError, match=f"on 127.0.0.1:{port}"):
        async with running_monitor(config(tmp_path, port)):
            pytest.fail("started on a port already taken")
    assert others() == before
    assert closed_cleanly(tmp_path / "history.db")
    store = open_store(config(tmp_path, port).store)  # and it opens again
    await store.open()
    await store.check_writable()
    await store.close()


async def test_store_that_cannot_be_created_is_one_line_and_leaves_nothing(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    before = others()
    with pytest.raises(StartupError) as caught:
        async with running_monitor(config(tmp_path, 0, db="file/history.db")):
            pytest.fail("started without a store")
    assert "\n" not in str(caught.value)
    assert str(tmp_path / "file") in str(caught.value)
    assert others() == before


async def test_demo_whose_second_monitor_cannot_listen_stops_the_first(tmp_path: Path) -> None:
    """The half-started case: demo-a runs (its store, scheduler, server, loops) when demo-b
    fails on a port already taken; everything demo-a started is stopped again."""
    before = others()
    with busy_port() as taken, pytest.raises(StartupError, match=f"on 127.0.0.1:{taken}"):
        await run_demo(port=taken - 1, data_dir=str(tmp_path))
    assert others() == before
    db = tmp_path / "demo-a.db"
    assert closed_cleanly(db)
    [(started, ended)] = runs(db)  # demo-a did start, and its run was ended
    assert ended is not None and ended >= started
    assert not (tmp_path / "demo-b.db-wal").exists()


def test_demo_on_a_busy_port_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    with busy_port() as port:
        done = subprocess.run([sys.executable, "-m", "monitor", "demo", "--port", str(port),
                               "--data", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("monitor demo:")]
    assert errors == [f"monitor demo: cannot listen on 127.0.0.1:{port}: "
                      f"error while attempting to bind on address ('127.0.0.1', {port}): "
                      "address already in use"]
    assert done.stderr.splitlines()[-1] == errors[0]


async def test_stop_is_safe_before_start_and_twice(tmp_path: Path) -> None:
    cfg = config(tmp_path, 0)
    store = open_store(cfg.store)
    await store.open()
    with_store = others()  # the store's own writer
    try:
        never = Monitor(cfg, store)
        await never.stop()  # never started
        await never.notifications.stop()
        await never.scheduler.shutdown()
        await never.connectivity.stop()
        await Notifications(cfg, store).stop()
        await Scheduler(lambda _: asyncio.sleep(0)).shutdown()
        checks = ConnectivityConfig(checks=("127.0.0.1:9",), interval=60.0)
        connectivity = Connectivity(checks, on_change=lambda _: asyncio.sleep(0))
        await connectivity.stop()
        async with connectivity:
            assert others() - with_store  # its check rounds run
        await connectivity.stop()
        assert others() == with_store

        async with Monitor(cfg, store) as monitor:
            assert others() - with_store  # it runs tasks while started
        await monitor.stop()  # stopped twice
        assert others() == with_store
    finally:
        await store.close()
    assert not others()
    [(started, ended)] = runs(tmp_path / "history.db")
    assert ended is not None and ended >= started
