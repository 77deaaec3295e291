"""As lenient as curl and the blackbox exporter; the monitor's own faults and floods.

Each case is a real server on 127.0.0.1 sending exactly the bytes under test.
"""

from __future__ import annotations

import gzip
import json
import ssl
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import RawServer
from servers import Certs

from monitor.model import Failure, Target
from monitor.probes.http import MAX_HEADERS, MAX_INFORMATIONAL, new_ssl_context, probe_http

TESTS = Path(__file__).resolve().parent


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, **{"timeout": 2.0, **options})


def response(headers: bytes, body: bytes = b"hello monitor") -> bytes:
    return (b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def test_thousands_of_headers_are_accepted() -> None:
    many = b"".join(b"X-Header-%d: value\r\n" % i for i in range(1500))
    async with RawServer(response(many)) as server:
        result = await probe_http(target(server.url(), body_contains="monitor"))

    assert result.ok, result.message
    assert MAX_HEADERS >= 1500


async def test_more_headers_than_the_cap_is_http() -> None:
    many = b"".join(b"X-Header-%d: value\r\n" % i for i in range(MAX_HEADERS + 10))
    async with RawServer(response(many)) as server:
        result = await probe_http(target(server.url()))

    assert result.failure == Failure.HTTP
    assert result.message == "bad response: Too many headers received"


@pytest.mark.parametrize(
    "raw",
    [response(b"", b"hello monitor") + b"EXTRA BYTES\r\n\r\nHTTP/1.1 500 Oops\r\n\r\n",
     b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"") + b"\x00\x01garbage",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"d\r\nhello monitor\r\n0\r\n\r\n"],
    ids=["after-content-length", "after-1xx-and-body", "chunked-untouched"],
)
async def test_bytes_after_the_body_are_ignored(raw: bytes) -> None:
    async with RawServer(raw) as server:
        result = await probe_http(target(server.url(), body_contains="hello monitor"))
        head = await probe_http(target(server.url(), method="HEAD"))

    assert (result.ok, result.status, result.message) == (True, 200, "")
    assert (head.ok, head.status) == (True, 200), head.message


async def test_a_body_shorter_than_its_content_length_is_still_an_error() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
    async with RawServer(raw) as server:
        result = await probe_http(target(server.url()))

    assert result.failure == Failure.HTTP
    assert result.message.startswith("bad response body: ")


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br"])
async def test_an_encoding_we_cannot_decode_is_left_undecoded(encoding: str) -> None:
    raw = response(b"Content-Encoding: " + encoding.encode() + b"\r\n", b"\x1b\x03\x00opaque")
    async with RawServer(raw) as server:
        plain = await probe_http(target(server.url()))
        judged = await probe_http(target(server.url(), body_contains="opaque"))

    assert plain.ok
    assert plain.message == f"body left undecoded (Content-Encoding: {encoding})"
    assert judged.ok, judged.message  # the checks run on the bytes as they came
    missing = await _probe_once(raw, body_contains="absent")
    assert missing.message == (
        f"body does not contain 'absent'; body left undecoded (Content-Encoding: {encoding})")


async def _probe_once(raw: bytes, **options: Any) -> Any:
    async with RawServer(raw) as server:
        return await probe_http(target(server.url(), **options))


async def test_gzip_and_deflate_are_decoded() -> None:
    body = gzip.compress(b"hello monitor")
    async with RawServer(response(b"Content-Encoding: gzip\r\n", body)) as server:
        result = await probe_http(target(server.url(), body_contains="hello monitor"))

    assert (result.ok, result.message) == (True, "")


async def test_unknown_charset_falls_back_to_utf8() -> None:
    for charset in (b"idna", b"no-such-charset", b"base64"):
        raw = response(b"Content-Type: text/html; charset=" + charset + b"\r\n",
                       "héllo monitor".encode())
        async with RawServer(raw) as server:
            result = await probe_http(target(server.url(), body_contains="héllo"))
        assert result.ok, (charset, result.message)


async def test_tls_version_mismatch_is_tls(certs: Certs) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certs.good.configure_cert(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 is the point here
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    client = new_ssl_context()
    certs.ca.configure_trust(client)
    async with RawServer(response(b""), ssl_context=context) as server:
        result = await probe_http(target(server.url().replace("http:", "https:")),
                                  ssl_context=client)

    assert (result.failure, result.phase) == (Failure.TLS, "tls"), result.message
    assert result.message.startswith("TLS handshake failed: ")


async def test_a_flood_of_1xx_responses_is_http_after_a_few() -> None:
    flood = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with RawServer(b"", flood=flood, flood_limit=200_000) as server:
        result = await probe_http(target(server.url(), timeout=10.0))

    assert result.failure == Failure.HTTP
    assert result.message == f"more than {MAX_INFORMATIONAL} informational (1xx) responses"


async def test_a_few_1xx_responses_are_skipped() -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    async with RawServer(early + response(b"")) as server:
        result = await probe_http(target(server.url(), body_contains="monitor"))

    assert (result.ok, result.status) == (True, 200), result.message


def test_out_of_descriptors_is_local_not_the_targets_fault() -> None:
    proc = subprocess.run([sys.executable, str(TESTS / "rlimit_probe.py")],
                          capture_output=True, text=True, timeout=60, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stderr
    literal, name, healthy = json.loads(proc.stdout)

    assert literal == ["local", "monitor out of resources: Too many open files", False]
    assert name == ["local", "monitor out of resources: Too many open files", False]
    assert healthy == [None, "", True]
