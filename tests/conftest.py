"""Shared fixtures: local servers and certificates (see tests/servers.py for the servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from servers import Certs, HttpServer, ServerThread, SilentServer, closed_port


@pytest.fixture(scope="session")
def certs() -> Certs:
    """The test CA and server certificates (made once: key generation is not free)."""
    return Certs()


@pytest_asyncio.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    async with HttpServer() as server:
        yield server


@pytest_asyncio.fixture
async def https_server(certs: Certs) -> AsyncIterator[HttpServer]:
    """HTTPS with a certificate for 127.0.0.1 and localhost from the test CA."""
    async with HttpServer(ssl_context=certs.server_context(certs.good)) as server:
        yield server


@pytest_asyncio.fixture
async def self_signed_server(certs: Certs) -> AsyncIterator[HttpServer]:
    async with HttpServer(ssl_context=certs.self_signed_context()) as server:
        yield server


@pytest_asyncio.fixture
async def wrong_host_server(certs: Certs) -> AsyncIterator[HttpServer]:
    """HTTPS whose certificate (from the test CA) names only other.test."""
    async with HttpServer(ssl_context=certs.server_context(certs.wrong_host)) as server:
        yield server


@pytest_asyncio.fixture
async def expired_server(certs: Certs) -> AsyncIterator[HttpServer]:
    async with HttpServer(ssl_context=certs.server_context(certs.expired)) as server:
        yield server


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    """Accepts TCP, never answers: TLS handshakes and HTTP requests to it hang."""
    async with SilentServer() as server:
        yield server


@pytest.fixture
def refused_port() -> int:
    return closed_port()


@pytest.fixture
def threaded_http_server() -> Iterator[ServerThread[HttpServer]]:
    """An HttpServer in its own thread, for code under test outside the test's loop."""
    with ServerThread(HttpServer()) as thread:
        yield thread
