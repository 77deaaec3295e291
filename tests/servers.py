"""Real servers on 127.0.0.1 for tests: HTTP(S) with switchable behaviour and TLS edge cases.

Every server binds an ephemeral port on 127.0.0.1 and counts the TCP connections it accepts.
Use them in the test's event loop:

    async with HttpServer() as server:
        ... server.url("/ok") ...
        server.status = 503          # "/" and "/ok" now answer 503
        await server.refuse()        # stop listening: connections are refused
        await server.accept()        # listen again on the same port

or in a thread of their own, when the code under test runs elsewhere (a subprocess):

    with ServerThread(HttpServer()) as thread:
        server = thread.server       # attributes such as `status` can be set from here
        thread.call(server.refuse)   # coroutines run in the server's loop

Routes of HttpServer:
  /, /ok                      `status` with `body`, after `delay` seconds (switchable)
  /status/{code}              that status
  /slow?delay=S               answers after S seconds
  /drip?bytes=N&interval=S    headers at once, then one byte per interval
  /endless?chunk=N&interval=S a body that never ends
  /gzip-bomb?mb=N             N MiB of zeros, gzip-encoded (about N kB on the wire)
  /redirect-loop, /redirect?to=URL
  /big-headers                one 10 kB response header
  /drop                       closes the connection without a response
  /echo                       any method; answers "METHOD body X-Test", X-Test echoed as X-Echo

Certificates come from `Certs` (trustme). Fixtures for all of these are in conftest.py.
Test modules import this one as `from servers import ...` (pytest puts tests/ on sys.path).
Imports: stdlib, aiohttp, trustme. Never monitor.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import socket
import ssl
import threading
import zlib
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, Self, TypeVar

import trustme
from aiohttp import web

HOST = "127.0.0.1"
T = TypeVar("T")


class Certs:
    """A test CA (trust it in clients) and the server certificates the TLS tests need."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.good = self.ca.issue_cert("127.0.0.1", "localhost")
        self.wrong_host = self.ca.issue_cert("other.test")
        now = datetime.datetime.now(datetime.UTC)
        self.expired = self.ca.issue_cert(
            "127.0.0.1",
            "localhost",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        # Served as a self-signed certificate trusted by no one: the root of another CA.
        self.stranger = trustme.CA()

    def server_context(self, cert: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    def self_signed_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        pem = trustme.Blob(self.stranger.cert_pem.bytes() + self.stranger.private_key_pem.bytes())
        with pem.tempfile() as path:
            context.load_cert_chain(path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A plain verifying client context that trusts the test CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


class _Server(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class HttpServer:
    """An aiohttp app on 127.0.0.1 (HTTPS when given an ssl_context)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        # Behaviour of "/" and "/ok"; change it at any time, from any thread.
        self.status = 200
        self.body = "hello monitor"
        self.delay = 0.0
        self.connections = 0  # TCP connections accepted
        self.requests = 0
        self.tls_resumed = 0  # requests on a TLS connection that resumed an earlier session
        self.last_peer: str | None = None  # client address of the latest request to "/" or /ok
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._stopped: list[asyncio.Server] = []

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    def url(self, path: str = "/ok", *, host: str = HOST) -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._ok)
        app.router.add_get("/ok", self._ok)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/drip", self._drip)
        app.router.add_get("/endless", self._endless)
        app.router.add_get("/gzip-bomb", self._gzip_bomb)
        app.router.add_get("/redirect-loop", self._redirect_loop)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/big-headers", self._big_headers)
        app.router.add_get("/drop", self._drop)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/set-cookie-redirect", self._set_cookie_redirect)
        app.router.add_get("/needs-cookie", self._needs_cookie)
        # handler_cancellation: a client that gives up ends the handler (slow, drip, endless).
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await self.accept()

    async def accept(self) -> None:
        """Listen (again, on the same port once it has one)."""
        if self._listener is not None:
            return
        assert self._runner is not None and self._runner.server is not None
        handlers = self._runner.server

        def connection() -> asyncio.BaseProtocol:
            self.connections += 1
            return handlers()

        self._listener = await asyncio.get_running_loop().create_server(
            connection, HOST, self.port, ssl=self.ssl_context, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening: new connections are refused until accept(); open ones stay."""
        if self._listener is not None:
            self._listener.close()  # closes the listening socket at once
            self._stopped.append(self._listener)
            self._listener = None

    async def close(self) -> None:
        await self.refuse()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the open connections
            self._runner = None
        # Only now: since Python 3.12 wait_closed() also waits for the connections.
        for listener in self._stopped:
            await listener.wait_closed()
        self._stopped.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Routes

    async def _ok(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.last_peer = request.remote
        ssl_object = request.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.session_reused:
            self.tls_resumed += 1
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow site: the delay under test
        return web.Response(status=self.status, text=self.body)

    async def _status(self, request: web.Request) -> web.Response:
        self.requests += 1
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}")

    async def _slow(self, request: web.Request) -> web.Response:
        self.requests += 1
        await asyncio.sleep(float(request.query.get("delay", "5")))  # the delay under test
        return web.Response(text="slow")

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        count = int(request.query.get("bytes", "100"))
        interval = float(request.query.get("interval", "0.1"))
        response = web.StreamResponse(headers={"Content-Length": str(count)})
        await response.prepare(request)
        for _ in range(count):
            await response.write(b".")
            await asyncio.sleep(interval)  # the drip under test
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        chunk = b"x" * int(request.query.get("chunk", "65536"))
        interval = float(request.query.get("interval", "0"))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:  # until the client goes away (the handler is then cancelled)
            await response.write(chunk)
            if interval:
                await asyncio.sleep(interval)  # the pace under test

    async def _gzip_bomb(self, request: web.Request) -> web.Response:
        self.requests += 1
        mib = int(request.query.get("mb", "64"))
        return web.Response(body=_gzip_zeros(mib), headers={"Content-Encoding": "gzip"})

    async def _redirect_loop(self, request: web.Request) -> web.Response:
        self.requests += 1
        raise web.HTTPFound("/redirect-loop")

    async def _redirect(self, request: web.Request) -> web.Response:
        self.requests += 1
        raise web.HTTPFound(request.query["to"])

    async def _set_cookie_redirect(self, request: web.Request) -> web.Response:
        self.requests += 1
        response = web.HTTPFound("/needs-cookie")
        response.set_cookie("session", "s1")
        raise response

    async def _needs_cookie(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.cookies.get("session") != "s1":
            return web.Response(status=403, text="no session")
        return web.Response(text="welcome")

    async def _big_headers(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(text="big", headers={"X-Big": "b" * 10_000})

    async def _drop(self, request: web.Request) -> web.Response:
        self.requests += 1
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError  # nothing to answer; aiohttp drops the request quietly

    async def _echo(self, request: web.Request) -> web.Response:
        self.requests += 1
        test_header = request.headers.get("X-Test", "")
        text = f"{request.method} {await request.text()} {test_header}"
        return web.Response(text=text, headers={"X-Echo": test_header})


@functools.cache
def _gzip_zeros(mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(mib)) + compressor.flush()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a TLS handshake hangs)."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self.connected: asyncio.Event | None = None  # set on the first connection
        self._listener: asyncio.Server | None = None
        self._transports: list[asyncio.BaseTransport] = []

    def url(self, path: str = "/", *, scheme: str = "https") -> str:
        return f"{scheme}://{HOST}:{self.port}{path}"

    async def start(self) -> None:
        server = self

        class Silent(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server.connections += 1
                server._transports.append(transport)
                assert server.connected is not None
                server.connected.set()

        self.connected = asyncio.Event()
        self._listener = await asyncio.get_running_loop().create_server(Silent, HOST, 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            for transport in self._transports:
                transport.close()
            await self._listener.wait_closed()
            self._listener = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


S = TypeVar("S", bound=_Server)


class ServerThread(Generic[S]):
    """Runs a server (HttpServer, SilentServer) in a thread with its own event loop.

    For tests whose code under test is not in the test's loop, e.g. `monitor run` in a
    subprocess. Plain attributes of the server can be set from the test thread; coroutines
    (refuse, accept) go through call().
    """

    def __init__(self, server: S) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def call(self, function: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
        """Run `await function()` in the server's loop and return its result."""

        async def run() -> T:
            return await function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self.call(self.server.start)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.call(self.server.close)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
