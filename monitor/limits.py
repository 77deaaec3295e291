"""What the daemon may use of the machine: descriptors, and connections to its own server.

Descriptors are shared by probes, the store, DNS and the daemon's HTTP server. Running out
of them makes healthy sites look down ("Too many open files"), so:
- the soft RLIMIT_NOFILE is raised to the hard limit at start;
- the HTTP server holds at most `server_connections` of them: at the cap, a new connection
  replaces the oldest one that has not sent a byte, or is refused with a 503;
- aiohttp's keep-alive timeout, armed from the moment a connection opens, closes idle
  connections and requests whose headers are not complete within `server_header_timeout`;
- the rest, less a small reserve, is for probes (`probe_slots`).
Accept errors ("out of system resource") are counted and logged once a minute at most.

Imports aiohttp and the standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

log = logging.getLogger("monitor.limits")

RESERVE = 64  # descriptors kept for the store, DNS, logs and the listening socket
MAX_SERVER_CONNECTIONS = 256
LOG_EVERY = 60.0  # seconds between two log lines about refused or failed connections
_BODY = b"too many connections; retry\n"
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("descriptor limit stays %d: cannot raise it to %d: %s", soft, wanted, exc)
            return soft
        log.info("descriptor limit raised from %d to %d (the hard limit)", soft, wanted)
        return wanted
    log.info("descriptor limit: %d", soft)
    return soft


def server_slots(configured: int | None, nofile: int) -> int:
    return configured or max(4, min(MAX_SERVER_CONNECTIONS, nofile // 8))


def probe_slots(configured: int | None, nofile: int, server: int) -> int:
    """Probes in flight: each holds about two descriptors (its socket, and DNS)."""
    return configured or max(1, (nofile - server - RESERVE) // 2)


class _Every:
    """Counts events and says so in one log line at most every LOG_EVERY seconds."""

    def __init__(self, message: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.message = message
        self.count = 0  # since the last line
        self.total = 0
        self._clock = clock
        self._logged = float("-inf")

    def __call__(self, detail: str = "") -> None:
        self.count += 1
        self.total += 1
        now = self._clock()
        if now - self._logged >= LOG_EVERY:
            log.warning(self.message, self.count, detail)
            self.count, self._logged = 0, now


class _Guard(asyncio.Protocol):
    """Admits a connection against the cap, then hands every event to aiohttp's handler."""

    def __init__(self, gate: ConnectionGate) -> None:
        self.gate = gate
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.spoke = False  # has sent at least one byte

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's TCPTransport is not a subclass of asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if not self.gate.admit(self):
            self.transport.write(_REFUSED)
            self.transport.close()
            return
        self.inner = self.gate.factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.spoke = True
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.release(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)


class ConnectionGate:
    """At most `limit` connections to the server at once (see the module docstring)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int) -> None:
        self.factory = factory
        self.limit = limit
        self.open: dict[_Guard, None] = {}  # insertion order: oldest first
        self.evicted = 0
        self._refused = _Every("server: %d connections refused at the connection cap%s")

    def admit(self, guard: _Guard) -> bool:
        if len(self.open) >= self.limit:
            silent = next((g for g in self.open if not g.spoke), None)
            if silent is None:
                self._refused(f" of {self.limit}, every one busy")
                return False
            self.release(silent)
            self.evicted += 1
            assert silent.transport is not None
            silent.transport.close()
        self.open[guard] = None
        return True

    def release(self, guard: _Guard) -> None:
        self.open.pop(guard, None)


class AcceptErrors:
    """A loop exception handler that turns the accept loop's error flood into a count."""

    def __init__(self) -> None:
        self._counter = _Every("server: %d connections not accepted: out of descriptors%s")

    @property
    def total(self) -> int:
        return self._counter.total

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            self._counter(f" ({context.get('exception')})")
            return
        loop.default_exception_handler(context)


class BadRequests(logging.Filter):
    """A filter for aiohttp's server logger: a malformed request (one traceback each, from
    whoever can connect) becomes a count, said in one line at most every LOG_EVERY seconds.

    The client already got its 400; everything else the logger says passes unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._counter = _Every("server: %d malformed requests refused with 400%s")

    @property
    def total(self) -> int:
        return self._counter.total

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, BadHttpMessage):
            return True
        reason = " ".join(str(error.message).split())[:120]
        self._counter(f" (last: {reason!r})")
        return False


async def serve(runner: web.AppRunner, host: str, port: int, limit: int) -> asyncio.Server:
    """Listen for the runner's app with the connection cap; close the result before cleanup."""
    server = runner.server
    assert server is not None, "call runner.setup() first"
    gate = ConnectionGate(server, limit)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Guard(gate), host, port, reuse_address=True)
