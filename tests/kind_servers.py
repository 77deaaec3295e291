"""Real servers on 127.0.0.1 for the tcp, tls, dns probes and for proxying.

- `LineServer`: TCP (or TLS with a given context) that greets, echoes, or stays silent;
- `Zone`: a UDP name server answering from a table, with a chosen rcode per name and an
  optional delay;
- `ConnectProxy` and `Socks5Proxy`: proxies that check credentials, count the tunnels they
  open and relay bytes; `refuse_target` makes them report the target unreachable.

Use them as async context managers in the test's loop. Imports: stdlib, dnspython. Never
monitor.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from typing import Self

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from hostile_servers import UdpResponder

HOST = "127.0.0.1"


class _Listener:
    """Common start/stop of a TCP listener on 127.0.0.1 with its connection handler."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = 0
        self.connections = 0
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, HOST, 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()


class LineServer(_Listener):
    """mode "banner": sends `banner` at once; "close": sends it and closes; "echo": echoes
    what it reads; "silent": nothing."""

    def __init__(self, mode: str = "echo", *, banner: bytes = b"",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context)
        self.mode = mode
        self.banner = banner
        self.received = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode in ("banner", "close"):
            writer.write(self.banner)
            await writer.drain()
            if self.mode == "close":
                return
        while data := await reader.read(4096):
            self.received += data
            if self.mode == "echo":
                writer.write(data)
                await writer.drain()


def refusing_port() -> tuple[socket.socket, int]:
    """A bound, non-listening socket: connections to its port are refused while it lives."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    return sock, int(sock.getsockname()[1])


class Zone(UdpResponder):
    """A UDP name server: `records` {(name, type): [rdata text]}, `rcodes` {name: "SERVFAIL"}.

    A name in `slow` is answered after `delay` seconds. Other names are NXDOMAIN; a known
    name asked for a type it lacks gets an empty NOERROR answer.
    """

    def __init__(self, records: dict[tuple[str, str], list[str]], *,
                 rcodes: dict[str, str] | None = None, slow: frozenset[str] = frozenset(),
                 delay: float = 0.0) -> None:
        super().__init__()
        self.records = {(n.rstrip(".").lower(), t): v for (n, t), v in records.items()}
        self.rcodes = rcodes or {}
        self.slow = slow
        self.delay = delay
        self.queries: list[tuple[str, str]] = []

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.slow:
            await asyncio.sleep(self.delay)  # the slowness under test, not synchronisation
        response = dns.message.make_response(query)
        if name in self.rcodes:
            response.set_rcode(dns.rcode.from_text(self.rcodes[name]))
        elif not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in self.records:
            response.answer.append(dns.rrset.from_text_list(
                question.name, 300, "IN", rdtype, self.records[(name, rdtype)]))
        self._reply(response.to_wire(), addr)


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    up_reader, up_writer = upstream

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            dst.write_eof()

    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    finally:
        up_writer.transport.abort()


class _Proxy(_Listener):
    scheme = ""  # of its URL: "http" or "socks5"

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        super().__init__()
        self.user = user
        self.password = password
        self.tunnels: list[tuple[str, int]] = []  # where each accepted tunnel led
        self.refuse_target = False  # report every target as refusing the connection
        self.reject_with: bytes | None = None  # ConnectProxy: this status line, no tunnel

    async def open(self, host: str, port: int
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if self.refuse_target:
            return None
        try:
            upstream = await asyncio.open_connection(host, port)
        except OSError:
            return None
        self.tunnels.append((host, port))
        return upstream


class ConnectProxy(_Proxy):
    """An HTTP proxy that only tunnels (CONNECT), with Basic credentials if `user` is set."""

    scheme = "http"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, authority, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if self.reject_with is not None:
            writer.write(self.reject_with + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {token}":
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                             b"Content-Length: 0\r\n\r\n")
                await writer.drain()
                return
        host, _, port = authority.rpartition(":")
        upstream = await self.open(host.strip("[]"), int(port))
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _relay(reader, writer, upstream)


class Socks5Proxy(_Proxy):
    """A SOCKS5 proxy (RFC 1928, CONNECT only) with user/password auth (RFC 1929) if set."""

    scheme = "socks5"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = 0x02 if self.user is not None else 0x00
        if version != 5 or wanted not in methods:
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(bytes([5, wanted]))
        await writer.drain()
        if wanted == 0x02:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            plen = (await reader.readexactly(1))[0]
            password = (await reader.readexactly(plen)).decode()
            good = (user, password) == (self.user, self.password)
            writer.write(b"\x01\x00" if good else b"\x01\x01")
            await writer.drain()
            if not good:
                return
        _, command, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif atyp == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        port = int.from_bytes(await reader.readexactly(2), "big")
        upstream = await self.open(host, port) if command == 1 else None
        if upstream is None:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # 5: connection refused
            await writer.drain()
            return
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await writer.drain()
        await _relay(reader, writer, upstream)
