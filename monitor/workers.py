"""Probe worker processes: the probes run in N child processes, everything else stays here.

One Python process has one core: with 100,000 targets it saturated at about 1,100 probes
a second in bench/scale.py. With `limits.probe_workers: N` the daemon starts N children
(`python -m monitor.workers`), each on its own event loop with the probes' shared setup
(`DnsChannel`); the scheduler, connectivity, trackers, store, metrics and the HTTP server
stay in the daemon, so there is still one config, one `/metrics`, one history and one
status page.

The daemon sends (id, Target) over a socket pair to the least busy worker and awaits the
(id, ProbeResult) it sends back; both ends are our own processes, so pickle is the
encoding. Frames written in one turn of the event loop go out in one write. A worker that
exits (killed, out of memory) fails its probes in flight as `local` (the monitor's fault,
not the sites') and is started again. Closing the socket ends a worker: it cancels its
probes and exits; a worker whose daemon is gone sees the same end of file.

Imports stdlib, monitor.model, monitor.probes, monitor.limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from typing import Any

from monitor.limits import raise_nofile_limit
from monitor.model import Failure, ProbeResult, Target

log = logging.getLogger("monitor.workers")

_HEADER = struct.Struct("!I")  # length of the pickle that follows
STOP_GRACE = 5.0  # seconds a worker gets to exit once its socket is closed


def _frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


async def _read(reader: asyncio.StreamReader) -> Any:
    """One message, or raises IncompleteReadError at the end of the stream."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))


class _Batcher:
    """Frames written during one turn of the event loop, sent in one write."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []

    def send(self, message: object) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(_frame(message))

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if not self._writer.is_closing():
            self._writer.write(b"".join(frames))


class _Worker:
    """The daemon's end of one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.batcher: _Batcher | None = None
        self.pending: dict[int, tuple[asyncio.Future[ProbeResult], Target]] = {}
        self.reader_task: asyncio.Task[None] | None = None
        # The Target last sent for each name: a worker keeps them, so a target is pickled
        # once per worker and after each change (reload), not with every probe.
        self.sent: dict[str, Target] = {}


class ProbeWorkers:
    """N probe worker processes behind one `probe(target)`; an async context manager.

    `stop()` is safe in any state.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers = [_Worker(i) for i in range(count)]
        self._ids = itertools.count()
        self._stopping = False
        self.restarts = 0

    async def __aenter__(self) -> ProbeWorkers:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None]

    async def start(self) -> None:
        for worker in self._workers:
            await self._spawn(worker)
        log.info("%d probe worker processes started (pids %s)", self.count,
                 ", ".join(map(str, self.pids)))

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "monitor.workers", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader, worker.writer = await asyncio.open_connection(sock=ours, limit=2**24)
        worker.batcher = _Batcher(worker.writer)
        worker.sent = {}
        worker.reader_task = asyncio.get_running_loop().create_task(
            self._read_results(worker, reader), name=f"monitor-probe-worker-{worker.index}")

    async def probe(self, target: Target) -> ProbeResult:
        """Probe `target` in the least busy worker; never raises but for cancellation."""
        running = [w for w in self._workers if w.batcher is not None]
        if not running or self._stopping:
            return _local(target, "probe workers are not running")
        worker = min(running, key=lambda w: len(w.pending))
        assert worker.batcher is not None
        ident = next(self._ids)
        future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        worker.pending[ident] = (future, target)
        if worker.sent.get(target.name) is target:
            worker.batcher.send((ident, target.name))
        else:
            worker.sent[target.name] = target
            worker.batcher.send((ident, target))
        try:
            return await future
        finally:
            worker.pending.pop(ident, None)  # cancelled: its late answer is dropped

    async def _read_results(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                ident, values = await _read(reader)
                entry = worker.pending.pop(ident, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(ProbeResult.from_values(values))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        await self._worker_ended(worker)

    async def _worker_ended(self, worker: _Worker) -> None:
        pending, worker.pending = worker.pending, {}
        for future, target in pending.values():
            if not future.done():
                future.set_result(_local(target, "its probe worker process exited"))
        if self._stopping:
            return
        code = await worker.process.wait() if worker.process is not None else None
        log.error("probe worker %d exited (status %s): starting it again", worker.index, code)
        self.restarts += 1
        if worker.writer is not None:
            worker.writer.close()
        worker.batcher = None
        await asyncio.sleep(min(5.0, 0.1 * self.restarts))  # a crash loop stays slow
        if not self._stopping:
            try:
                await self._spawn(worker)
            except OSError as exc:  # probes go to the other workers, or come back `local`
                log.error("probe worker %d cannot be started again: %s", worker.index, exc)
                return
            pid = worker.process.pid if worker.process is not None else None
            log.warning("probe worker %d started again (pid %s)", worker.index, pid)

    async def stop(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.writer is not None:
                worker.writer.close()  # the worker sees the end of its input and exits
            worker.batcher = None
        for worker in self._workers:
            process, worker.process = worker.process, None
            if process is not None and process.returncode is None:
                try:
                    async with asyncio.timeout(STOP_GRACE):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
            task, worker.reader_task = worker.reader_task, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for future, target in worker.pending.values():
                if not future.done():
                    future.set_result(_local(target, "probe workers stopped"))
            worker.pending.clear()


def _local(target: Target, why: str) -> ProbeResult:
    return ProbeResult(target=target.name, started_at=time.time(), duration=0.0, ok=False,
                       failure=Failure.LOCAL, message=f"monitor: {why}")


# --- the worker process --------------------------------------------------------------------

async def serve(sock: socket.socket) -> None:
    """Probe every target received on `sock` and send its result back, until end of file."""
    from monitor.probes import run_probe  # the worker's import, not the daemon's
    from monitor.probes.http import DnsChannel

    reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
    batcher = _Batcher(writer)
    channel = DnsChannel()
    running: set[asyncio.Task[None]] = set()
    targets: dict[str, Target] = {}  # as last sent by the daemon

    async def one(ident: int, target: Target) -> None:
        batcher.send((ident, (await run_probe(target)).values()))  # a tuple: cheap to pickle

    try:
        while True:
            ident, sent = await _read(reader)
            if isinstance(sent, Target):
                target = targets[sent.name] = sent
            else:
                target = targets[sent]
            task = asyncio.get_running_loop().create_task(one(ident, target))
            running.add(task)
            task.add_done_callback(running.discard)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the daemon closed its end, or is gone
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.wait(running)
        await channel.close()
        writer.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the daemon's to handle
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s %(levelname)s "
                        f"monitor.workers[{os.getpid()}] %(name)s: %(message)s")
    raise_nofile_limit()
    sock = socket.socket(fileno=int(argv[0]))
    try:  # the daemon's event loop: uvloop when installed
        run = importlib.import_module("uvloop").run
    except ImportError:
        run = asyncio.run
    run(serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
