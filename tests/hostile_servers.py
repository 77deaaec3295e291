"""Hostile and odd servers on 127.0.0.1 for probe tests (raw sockets where HTTP must break).

- `EchoServer`: reads a request (head and Content-Length body) and echoes all of it back in
  the way `mode` says: in a malformed status line, a bad header, a bad chunk, a Location...
- `RecordingServer`: aiohttp server that keeps every request (path, headers, body) and
  redirects on /redirect?status=N&to=URL.
- `RawServer`: answers every request with fixed bytes (lenient-parsing cases, 1xx floods).
- `DnsServer`: UDP DNS server answering A records from a table after a delay, TTL 300;
  `answering = False` makes it drop every query.

Imports: stdlib, aiohttp, dnspython. Never monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Self
from urllib.parse import unquote_to_bytes

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiohttp import web

HOST = "127.0.0.1"

ECHO_MODES = (
    "bad-status",  # XTTP/1.1 200 <echo>
    "bad-code",  # HTTP/1.1 2<echo>
    "reason",  # HTTP/1.1 500 <echo> (a valid status line with the echo as reason)
    "header",  # a header name with a control byte, then the echo
    "content-length",  # Content-Length: <echo>
    "long-header",  # one header longer than the line limit, made of echoes
    "chunk",  # a chunked body whose chunk size is the echo
    "location",  # 302 to a closed port, the echo in the Location path and query
    "decoded-location",  # the same, percent-decoded echo
    "body",  # 500 with the echo as body
    "raw-crlf",  # the raw echo (with its CRLFs) right after a bad status line
)


class _Base:
    host = HOST
    port = 0

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"


class EchoServer(_Base):
    """Echoes each request (request line, headers, body) back inside a hostile response."""

    def __init__(self, mode: str, *, host: str = HOST) -> None:
        assert mode in ECHO_MODES, mode
        self.mode = mode
        self.host = host
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            request = head + body
            self.requests.append(request)
            writer.write(self._answer(request))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _answer(self, request: bytes) -> bytes:
        flat = request.replace(b"\r\n", b" ")
        decoded = unquote_to_bytes(flat)
        closed = f"http://{self.host}:1"
        answers: dict[str, Callable[[], bytes]] = {
            "bad-status": lambda: b"XTTP/1.1 200 " + flat + b"\r\n\r\n",
            "bad-code": lambda: b"HTTP/1.1 2" + flat + b"\r\n\r\n",
            "reason": lambda: b"HTTP/1.1 500 " + flat + b"\r\nContent-Length: 0\r\n\r\n",
            "header": lambda: b"HTTP/1.1 200 OK\r\nX\x01: " + flat + b"\r\n\r\n",
            "content-length": lambda: b"HTTP/1.1 200 OK\r\nContent-Length: " + flat + b"\r\n\r\n",
            "long-header": lambda: b"HTTP/1.1 200 OK\r\nX: " + flat * 200 + b"\r\n\r\n",
            "chunk": lambda: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              + flat + b"\r\n"),
            "location": lambda: (b"HTTP/1.1 302 Found\r\nLocation: " + closed.encode() + b"/"
                                 + flat.replace(b" ", b"%20") + b"\r\nContent-Length: 0\r\n\r\n"),
            "decoded-location": lambda: (b"HTTP/1.1 302 Found\r\nLocation: " + closed.encode()
                                         + b"/" + decoded.replace(b" ", b"_")
                                         + b"\r\nContent-Length: 0\r\n\r\n"),
            "body": lambda: (b"HTTP/1.1 500 Oops\r\nContent-Length: "
                             + str(len(request)).encode() + b"\r\n\r\n" + request),
            "raw-crlf": lambda: b"HTTP/1.1 200 \x00" + request,
        }
        return answers[self.mode]()


class RawServer(_Base):
    """Answers every connection with `response` bytes (after reading the request head).

    flood: bytes repeated after `response` until the client goes away or `flood_limit`
    repetitions (a 1xx flood); `sent` counts them.
    """

    def __init__(self, response: bytes, *, flood: bytes = b"", flood_limit: int = 1_000_000,
                 ssl_context: object = None) -> None:
        self.response = response
        self.flood = flood
        self.flood_limit = flood_limit
        self.ssl_context = ssl_context
        self.sent = 0
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, 0, ssl=self.ssl_context)  # type: ignore[arg-type]
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.response)
            await writer.drain()
            for _ in range(self.flood_limit if self.flood else 0):
                writer.write(self.flood)
                await writer.drain()
                self.sent += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


class RecordingServer(_Base):
    """Keeps every request; /redirect?status=N&to=URL redirects, anything else answers 200."""

    def __init__(self, *, host: str = HOST) -> None:
        self.host = host
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []  # method, path, headers, body
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path, dict(request.headers), body))
        if request.path == "/redirect":
            status = int(request.query.get("status", "302"))
            return web.Response(status=status, headers={"Location": request.query["to"]})
        return web.Response(text="landed")


class UdpResponder:
    """A UDP server on 127.0.0.1 (`port` 0: any free one) that answers each datagram in a
    task of its own (`_answer`, by subclasses); an async context manager."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = loop.create_task(server._answer(data, addr))
                server._tasks.add(task)
                task.add_done_callback(server._tasks.discard)

        transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=(HOST, self.port), family=socket.AF_INET)
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            self._transport.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class DnsServer(UdpResponder):
    """A UDP name server on 127.0.0.1: A records from `names`, after `delay`, TTL 300.

    AAAA questions get an empty answer (NOERROR), unknown names NXDOMAIN. With
    `answering = False` every query is dropped, as by a dead resolver.
    """

    def __init__(self, names: dict[str, str], *, delay: float = 0.0, port: int = 0) -> None:
        super().__init__(port)  # 0: any free port
        self.names = {k.rstrip(".").lower(): v for k, v in names.items()}
        self.delay = delay
        self.answering = True
        self.queries = 0

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        if not self.answering:
            return
        query = dns.message.from_wire(data)
        await asyncio.sleep(self.delay)  # the delay under test, not synchronisation
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        if name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, 300, "IN", "A", self.names[name]))
        self._reply(response.to_wire(), addr)
