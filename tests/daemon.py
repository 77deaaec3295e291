"""Run `monitor run` as a real subprocess and follow its log, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self, TypeVar

import aiohttp

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`python -m monitor run` on a config file; every log line is kept and can be awaited."""

    def __init__(self, config: Path, *, port: int | None = None, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> None:
        self.config = config
        self.wrap = wrap  # a command to run it under, like ("prlimit", "--nofile=256:256")
        self.port = port or free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.wrap, sys.executable, "-m", "monitor", "run", "--config", str(self.config),
            "--port", str(self.port), *self.args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=self.env,
            cwd=self.config.parent)
        self._reader = asyncio.create_task(self._read())
        await self.wait_for_log(r"started: ")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        async with self._changed:
            self.lines.append("<exit>")
            self._changed.notify_all()

    async def wait_for_log(self, pattern: str, *, after: int = 0, limit: float = 30) -> str:
        """The first log line from index `after` on that matches `pattern`."""
        regex = re.compile(pattern)

        def found() -> str | None:
            for line in self.lines[after:]:
                if regex.search(line):
                    return line
                if line == "<exit>":
                    raise AssertionError(f"daemon exited before {pattern!r}:\n" + self.log())
            return None

        async with asyncio.timeout(limit), self._changed:
            while (line := found()) is None:
                await self._changed.wait()
        return line

    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_metrics(self, ready: Callable[[str], bool], *, limit: float = 30) -> str:
        """The first /metrics exposition for which `ready(text)` holds (polled)."""

        async def check() -> str | None:
            text = await self.metrics()
            return text if ready(text) else None

        return await until(check, limit=limit, what=f"metrics never ready:\n{self.log()}")

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base}/metrics") as r:
            assert r.status == 200
            return await r.text()

    async def get_text(self, path: str) -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base}{path}") as r:
            assert r.status == 200
            return await r.text()

    async def get_json(self, path: str) -> tuple[int, object]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base}{path}") as r:
            return r.status, await r.json()

    async def post(self, path: str) -> tuple[int, object]:
        """POST as a script would: with the header that marks a deliberate reload."""
        async with aiohttp.ClientSession() as s, \
                s.post(f"{self.base}{path}", headers={"X-Monitor-Reload": "1"}) as r:
            return r.status, await r.json()

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, limit: float = 30) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(limit):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._reader:
            await self._reader
        return code

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def until(check: Callable[[], Awaitable[T | None]], *, limit: float = 30,
                what: str = "condition") -> T:
    """Poll `check` until it returns a value (not None); fail with `what` after `limit` s.

    For state visible only through an API or /metrics, where no event can be awaited.
    """
    try:
        async with asyncio.timeout(limit):
            # No event to await: the state is only visible from outside the process.
            while (value := await check()) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {limit} s: {what}") from None
    return value


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name{labels...}` in an exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', head))
        if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None
