"""The HTTP probe against real local servers: outcomes, failure classes, phases, limits."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from servers import Certs, HttpServer, ServerThread, SilentServer

from monitor.model import PHASES, Failure, ProbeResult, StatusRange, Target
from monitor.probes import run_probe
from monitor.probes.http import DnsChannel, new_ssl_context, probe_http


@pytest_asyncio.fixture(autouse=True, params=["own session", "shared session"])
async def sessions(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test twice: a probe with a session of its own (a lone call), and probes
    sharing the daemon's session (DnsChannel open on the loop): the same cold visits."""
    if request.param == "own session":
        yield
        return
    channel = DnsChannel()
    try:
        yield
    finally:
        await channel.close()


@pytest.fixture(scope="module")
def client_ssl(certs: Certs) -> ssl.SSLContext:
    """The probe's kind of verifying context, trusting the test CA."""
    context = new_ssl_context()
    certs.ca.configure_trust(context)
    return context


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, **{"timeout": 1.0, **options})


def not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def assert_phases_add_up(result: ProbeResult) -> None:
    assert set(result.phases) == set(PHASES)
    assert all(value >= 0 for value in result.phases.values())
    assert sum(result.phases.values()) == pytest.approx(
        result.duration, abs=0.005 + 0.05 * result.duration
    )


async def test_http_up(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/ok")), clock=lambda: 1234.5)

    assert result.ok, result.message
    assert (result.failure, result.message, result.status) == (None, "", 200)
    assert result.started_at == 1234.5
    assert_phases_add_up(result)
    assert result.phases["resolve"] == 0.0  # IP literal
    assert result.phases["tls"] == 0.0  # plain http
    assert result.phases["connect"] > 0 and result.phases["processing"] > 0
    assert result.cert_expiry is None
    assert not result.truncated


async def test_https_up(https_server: HttpServer, client_ssl: ssl.SSLContext, certs: Certs) -> None:
    result = await probe_http(target(https_server.url("/ok")), ssl_context=client_ssl)

    assert result.ok, result.message
    assert result.status == 200
    assert_phases_add_up(result)
    assert result.phases["tls"] > 0
    assert result.cert_expiry == not_after(certs.good.cert_chain_pems[0].bytes())


async def test_host_name_is_resolved_without_the_thread_pool(
    https_server: HttpServer, client_ssl: ssl.SSLContext
) -> None:
    submitted: list[object] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    executor = Recording(max_workers=1)
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        result = await probe_http(
            target(https_server.url("/ok", host="localhost")), ssl_context=client_ssl
        )
    finally:
        executor.shutdown()

    assert result.ok, result.message
    assert result.phases["resolve"] > 0
    assert_phases_add_up(result)
    assert submitted == []


@pytest.mark.parametrize(
    ("path", "expect", "ok", "message"),
    [
        ("/status/500", (StatusRange(200, 399),), False, "HTTP 500, expected 200-399"),
        ("/status/404", (StatusRange(200, 204), StatusRange(404, 404)), True, ""),
        ("/status/503", (StatusRange(200, 204), StatusRange(404, 404)), False,
         "HTTP 503, expected 200-204, 404"),
    ],
)  # fmt: skip
async def test_status_is_judged(
    http_server: HttpServer, path: str, expect: tuple[StatusRange, ...], ok: bool, message: str
) -> None:
    result = await probe_http(target(http_server.url(path), expect_status=expect))

    assert (result.ok, result.message) == (ok, message)
    assert result.failure == (None if ok else Failure.HTTP)
    assert result.status == int(path.rsplit("/", 1)[1])


async def test_slow_response_times_out_in_processing(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/slow?delay=5"), timeout=0.3))

    assert result.failure == Failure.TIMEOUT
    assert result.phase == "processing"
    assert result.message == "timed out after 0.3s during processing"
    assert result.status is None
    assert 0.3 <= result.duration < 0.6
    assert_phases_add_up(result)


async def test_refused_is_connect(refused_port: int) -> None:
    result = await probe_http(target(f"http://127.0.0.1:{refused_port}/"))

    assert result.failure == Failure.CONNECT
    assert result.message == "cannot connect: Connection refused"
    assert result.phase == "connect"


async def test_dropped_connection_is_connect(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/drop")))

    assert result.failure == Failure.CONNECT, result.message
    assert result.message == "server disconnected before a complete response"


async def test_unknown_name_is_dns() -> None:
    # .invalid is reserved (RFC 6761): no resolver can answer it with an address.
    result = await probe_http(target("http://nonexistent.invalid/"))

    assert result.failure == Failure.DNS
    assert result.message.startswith("DNS lookup failed: ")
    assert result.phase == "resolve"


@pytest.mark.parametrize(
    ("server_context", "host", "message"),
    [
        (Certs.self_signed_context, "127.0.0.1",
         "certificate verify failed: self-signed certificate"),
        (lambda certs: certs.server_context(certs.wrong_host), "localhost",
         "certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'."),
        (lambda certs: certs.server_context(certs.expired), "127.0.0.1",
         "certificate verify failed: certificate has expired"),
    ],
    ids=["self-signed", "wrong-host", "expired"],
)  # fmt: skip
async def test_bad_certificate_is_tls(
    certs: Certs,
    client_ssl: ssl.SSLContext,
    server_context: Callable[[Certs], ssl.SSLContext],
    host: str,
    message: str,
) -> None:
    async with HttpServer(ssl_context=server_context(certs)) as https:
        result = await probe_http(target(https.url("/ok", host=host)), ssl_context=client_ssl)

        assert (result.failure, result.message, result.phase) == (Failure.TLS, message, "tls")
        assert (https.connections, https.requests) == (1, 0)


async def test_verify_off_accepts_self_signed(self_signed_server: HttpServer, certs: Certs) -> None:
    result = await probe_http(target(self_signed_server.url("/ok"), verify_tls=False))

    assert result.ok, result.message
    assert result.phases["tls"] > 0
    # Not verified, so read from the raw certificate.
    assert result.cert_expiry == not_after(certs.stranger.cert_pem.bytes())


async def test_tls_hang_times_out_in_tls(silent_server: SilentServer) -> None:
    result = await probe_http(target(silent_server.url(scheme="https"), timeout=0.3))

    assert result.failure == Failure.TIMEOUT
    assert (result.phase, result.message) == ("tls", "timed out after 0.3s during tls")
    assert silent_server.connections == 1
    assert result.duration < 0.6


async def test_redirect_loop_is_http(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/redirect-loop")))

    assert (result.failure, result.message) == (Failure.HTTP, "too many redirects (10)")
    assert http_server.requests == 11  # the first request and 10 redirects followed


async def test_redirects_are_capped_at_max_redirects(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/redirect-loop"), max_redirects=2))

    assert (result.failure, result.message) == (Failure.HTTP, "too many redirects (2)")
    assert http_server.requests == 3


async def test_redirect_is_followed_and_timed_over_hops(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/redirect?to=/status/201")))

    assert result.ok, result.message
    assert result.status == 201
    assert http_server.connections == 2  # one per hop
    assert_phases_add_up(result)


async def test_redirect_not_followed_judges_the_redirect(http_server: HttpServer) -> None:
    url = http_server.url("/redirect?to=/ok")
    followed = await probe_http(target(url, follow_redirects=False))
    strict = await probe_http(
        target(url, follow_redirects=False, expect_status=(StatusRange(200, 299),))
    )

    assert (followed.ok, followed.status) == (True, 302)
    assert (strict.failure, strict.message) == (Failure.HTTP, "HTTP 302, expected 200-299")
    assert http_server.requests == 2


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({"body_contains": "hello monitor"}, ""),
        ({"body_contains": "xyz"}, "body does not contain 'xyz'"),
        ({"body_regex": r"hel+o\s+mon"}, ""),
        ({"body_regex": r"^monitor"}, "body does not match '^monitor'"),
    ],
)
async def test_body_expectations(
    http_server: HttpServer, expectation: dict[str, str], message: str
) -> None:
    result = await probe_http(target(http_server.url("/ok"), **expectation))

    assert result.message == message
    assert result.failure == (Failure.CONTENT if message else None)
    assert result.status == 200


async def test_method_headers_and_body_are_sent(http_server: HttpServer) -> None:
    result = await probe_http(
        target(
            http_server.url("/echo"),
            method="POST",
            body="ping",
            headers=(("X-Test", "yes"),),
            body_contains="POST ping yes",
        )
    )

    assert result.ok, result.message


async def test_body_is_judged_on_what_fits_under_the_cap(http_server: HttpServer) -> None:
    exact = await probe_http(
        target(http_server.url("/ok"), max_body_bytes=13, body_contains="monitor")
    )
    short = await probe_http(
        target(http_server.url("/ok"), max_body_bytes=5, body_contains="monitor")
    )

    assert (exact.ok, exact.truncated) == (True, False)  # "hello monitor" is 13 bytes
    assert short.truncated
    assert short.message == "body does not contain 'monitor' (in the first 5 bytes)"


@pytest.mark.parametrize(
    ("path", "cap"),
    [("/endless", 1 << 20), ("/endless?chunk=1000&interval=0.01", 20_000)],
    ids=["fast", "paced"],
)
async def test_endless_body_stops_at_the_cap(http_server: HttpServer, path: str, cap: int) -> None:
    result = await probe_http(
        target(http_server.url(path), timeout=3.0, max_body_bytes=cap, body_regex="^x+$")
    )

    assert result.ok, result.message
    assert result.truncated
    assert result.duration < 1.0  # ended by the cap, not by the timeout
    assert_phases_add_up(result)


async def test_cap_counts_decompressed_bytes(http_server: HttpServer) -> None:
    # 16 MiB of zeros, about 16 kB on the wire.
    result = await probe_http(
        target(http_server.url("/gzip-bomb?mb=16"), timeout=5.0, max_body_bytes=1 << 20)
    )

    assert result.ok, result.message
    assert result.truncated


async def test_slow_drip_times_out_in_transfer(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/drip?interval=0.05"), timeout=0.3))

    assert result.failure == Failure.TIMEOUT
    assert (result.phase, result.message) == ("transfer", "timed out after 0.3s during transfer")
    assert result.status == 200
    assert result.duration < 0.6
    assert_phases_add_up(result)


async def test_oversized_header_is_http(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/big-headers")))

    assert result.failure == Failure.HTTP
    assert result.message == "bad response: Got more than 8190 bytes when reading"


async def test_every_probe_opens_its_own_connection(
    http_server: HttpServer, https_server: HttpServer, client_ssl: ssl.SSLContext
) -> None:
    for _ in range(3):
        plain = await probe_http(target(http_server.url("/ok")))
        tls = await probe_http(target(https_server.url("/ok")), ssl_context=client_ssl)
        assert plain.ok and tls.ok
        assert tls.phases["tls"] > 0

    assert (http_server.connections, http_server.requests) == (3, 3)
    assert (https_server.connections, https_server.requests) == (3, 3)
    assert https_server.tls_resumed == 0


async def test_cookies_follow_redirect_hops_but_never_reach_another_probe(
    http_server: HttpServer,
) -> None:
    # /set-cookie-redirect sets a cookie and redirects to /needs-cookie, which answers 200
    # only with that cookie: the hops of one probe share cookies, the next probe starts without.
    first = await probe_http(target(http_server.url("/set-cookie-redirect")))
    second = await probe_http(target(http_server.url("/needs-cookie")))

    assert first.ok, first.message
    assert (second.ok, second.status) == (False, 403)


@pytest.mark.parametrize(
    "path", ["/status/500", "/big-headers", "/redirect-loop", "/slow?delay=5", "/drop"]
)
async def test_credentials_never_appear_in_messages(http_server: HttpServer, path: str) -> None:
    sep = "&" if "?" in path else "?"
    url = f"http://alice:hunter2@127.0.0.1:{http_server.port}{path}{sep}token=s3cret"

    result = await probe_http(target(url, timeout=0.3))

    assert not result.ok
    assert result.message
    for secret in ("alice", "hunter2", "s3cret", "://"):
        assert secret not in result.message


async def test_credentials_never_appear_when_the_url_is_unusable() -> None:
    result = await probe_http(target("http://alice:hunter2@/path?token=s3cret"))

    assert (result.failure, result.message) == (Failure.ERROR, "invalid URL")


async def test_cancelling_the_probe_task_propagates(silent_server: SilentServer) -> None:
    task = asyncio.create_task(probe_http(target(silent_server.url(scheme="http"), timeout=5)))
    assert silent_server.connected is not None
    await silent_server.connected.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_probe_dispatches_on_kind(http_server: HttpServer) -> None:
    before = time.time()
    http = await run_probe(target(http_server.url("/ok")))
    unknown = await run_probe(target(http_server.url("/ok"), kind="ftp"))

    assert http.ok
    assert (unknown.ok, unknown.failure) == (False, Failure.ERROR)
    assert unknown.message == "unknown probe kind 'ftp'"
    assert unknown.started_at >= before
    assert http_server.requests == 1


async def test_server_in_a_thread_switches_behaviour_at_run_time(
    threaded_http_server: ServerThread[HttpServer],
) -> None:
    # What an end-to-end test does with a monitor in a subprocess, with the probe as the client.
    thread = threaded_http_server
    server = thread.server
    url = server.url("/")
    healthy = await probe_http(target(url))
    server.status = 503
    failing = await probe_http(target(url))
    thread.call(server.refuse)
    refused = await probe_http(target(url))
    thread.call(server.accept)
    server.status = 200
    back = await probe_http(target(url))

    assert healthy.ok, healthy.message
    assert (failing.failure, failing.status) == (Failure.HTTP, 503)
    assert refused.failure == Failure.CONNECT
    assert back.ok, back.message
    assert server.connections == 3


async def test_source_address_is_the_local_end(http_server: HttpServer) -> None:
    result = await probe_http(target(http_server.url("/ok"), source_address="127.0.0.2"))

    assert result.ok, result.message
    assert http_server.last_peer == "127.0.0.2"


async def test_unusable_source_address_is_connect(http_server: HttpServer) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding to it fails locally.
    result = await probe_http(target(http_server.url("/ok"), source_address="192.0.2.1"))

    assert result.failure == Failure.CONNECT
    assert result.message == "cannot connect: Cannot assign requested address"
    assert http_server.connections == 0
