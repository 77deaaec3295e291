"""The tls probe and min_days_left against real TLS servers with trustme certificates:
valid, expiring within the threshold, expired, issued for another host, untrusted."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from daemon import Daemon, sample
from kind_servers import LineServer
from servers import Certs, HttpServer, SilentServer

from monitor.model import Failure, Target
from monitor.probes import run_probe
from monitor.probes.http import new_ssl_context, probe_http
from monitor.probes.tls import expiry_failure, probe_tls

DAY = 86400.0


def target(url: str, **options: Any) -> Target:
    return Target(name="t", url=url, kind="tls", **{"timeout": 2.0, **options})


def not_after(cert: trustme.LeafCert) -> float:
    from cryptography import x509

    parsed = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    return parsed.not_valid_after_utc.timestamp()


@pytest.fixture(scope="module")
def expiring(certs: Certs) -> trustme.LeafCert:
    """Valid for 127.0.0.1 today, but for five more days only."""
    now = datetime.datetime.now(datetime.UTC)
    return certs.ca.issue_cert("127.0.0.1", not_before=now - datetime.timedelta(days=85),
                               not_after=now + datetime.timedelta(days=5))


async def test_a_valid_certificate_passes_with_its_expiry_and_a_tls_phase(certs: Certs) -> None:
    async with LineServer("silent", ssl_context=certs.server_context(certs.good)) as server:
        result = await probe_tls(target(f"tls://127.0.0.1:{server.port}"),
                                 ssl_context=certs.client_context())
    assert result.ok, result.message
    assert {"resolve", "connect", "tls"} <= set(result.phases)
    assert result.cert_expiry == not_after(certs.good)


async def test_a_reply_inside_tls_is_judged_like_tcp(certs: Certs) -> None:
    async with LineServer("banner", banner=b"* OK IMAP4rev1 ready\r\n",
                          ssl_context=certs.server_context(certs.good)) as server:
        url = f"tls://127.0.0.1:{server.port}"
        good = await probe_tls(target(url, body_contains="* OK"),
                               ssl_context=certs.client_context())
        bad = await probe_tls(target(url, body_contains="+OK", timeout=0.5),
                              ssl_context=certs.client_context())
    assert good.ok, good.message
    assert (bad.failure, bad.phase) == (Failure.CONTENT, "processing")


async def test_an_expiring_certificate_fails_under_min_days_left(
    certs: Certs, expiring: trustme.LeafCert
) -> None:
    async with LineServer("silent", ssl_context=certs.server_context(expiring)) as server:
        url = f"tls://127.0.0.1:{server.port}"
        plain = await probe_tls(target(url), ssl_context=certs.client_context())
        strict = target(url, min_days_left=14)
        judged = expiry_failure(strict, plain, time.time())
        lenient = expiry_failure(target(url, min_days_left=3), plain, time.time())
        # Through run_probe (the daemon's path): unverified, the expiry is still read.
        wired = await run_probe(target(url, min_days_left=14, verify_tls=False))
    assert plain.ok and lenient is None
    assert judged is not None and judged[0] is Failure.TLS
    assert judged[1].startswith("certificate expires in 5.0 days (")
    assert judged[1].endswith("), less than min_days_left 14")
    assert (wired.ok, wired.failure, wired.phase) == (False, Failure.TLS, "tls")
    assert wired.message == judged[1]
    assert wired.cert_expiry == not_after(expiring)


async def test_min_days_left_applies_to_https_too(certs: Certs, expiring: trustme.LeafCert
                                                  ) -> None:
    async with HttpServer(ssl_context=certs.server_context(expiring)) as server:
        result = await run_probe(Target(name="t", url=server.url("/ok"),
                                        min_days_left=30, verify_tls=False, timeout=2.0))
    assert (result.failure, result.phase) == (Failure.TLS, "tls")
    assert "certificate expires in 5.0 days" in result.message


async def test_an_expired_certificate_fails_verification(certs: Certs) -> None:
    async with LineServer("silent", ssl_context=certs.server_context(certs.expired)) as server:
        url = f"tls://127.0.0.1:{server.port}"
        verified = await probe_tls(target(url), ssl_context=certs.client_context())
        unverified = await run_probe(target(url, verify_tls=False, min_days_left=0))
    assert (verified.failure, verified.phase) == (Failure.TLS, "tls")
    assert verified.message == "certificate verify failed: certificate has expired"
    # Not verified, it is still judged by its date: min_days_left 0 means "not expired".
    assert unverified.failure is Failure.TLS
    assert unverified.message.startswith("certificate expired 1.0 days ago (")


async def test_a_certificate_for_another_host_fails(certs: Certs) -> None:
    async with LineServer("silent", ssl_context=certs.server_context(certs.wrong_host)) as server:
        result = await probe_tls(target(f"tls://127.0.0.1:{server.port}"),
                                 ssl_context=certs.client_context())
    assert (result.failure, result.phase) == (Failure.TLS, "tls")
    assert result.message.startswith("certificate verify failed: IP address mismatch")


async def test_an_untrusted_certificate_fails_with_the_system_cas(certs: Certs) -> None:
    async with LineServer("silent", ssl_context=certs.server_context(certs.good)) as server:
        result = await run_probe(target(f"tls://127.0.0.1:{server.port}"))
    assert result.failure is Failure.TLS
    assert result.message == ("certificate verify failed: unable to get local issuer "
                              "certificate")


async def test_a_plain_tcp_server_fails_the_handshake_not_the_connection() -> None:
    async with LineServer("close", banner=b"HTTP/1.0 400 Bad Request\r\n\r\n") as server:
        result = await run_probe(target(f"tls://127.0.0.1:{server.port}"))
    assert (result.failure, result.phase) == (Failure.TLS, "tls")
    assert result.message.startswith("TLS handshake failed: ")


async def test_a_silent_server_times_out_in_the_tls_phase() -> None:
    async with SilentServer() as server:
        result = await run_probe(target(f"tls://127.0.0.1:{server.port}", timeout=0.5))
    assert (result.failure, result.phase) == (Failure.TIMEOUT, "tls")
    assert result.message == "timed out after 0.5s during tls"


async def test_https_and_tls_report_the_same_expiry(certs: Certs) -> None:
    async with HttpServer(ssl_context=certs.server_context(certs.good)) as web, \
            LineServer("silent", ssl_context=certs.server_context(certs.good)) as raw:
        context = new_ssl_context()
        certs.ca.configure_trust(context)
        https = await probe_http(Target(name="h", url=web.url("/ok")),
                                 ssl_context=context)
        tls = await probe_tls(target(f"tls://127.0.0.1:{raw.port}"),
                              ssl_context=certs.client_context())
    assert https.ok and tls.ok
    assert https.cert_expiry == tls.cert_expiry == not_after(certs.good)


async def test_the_daemon_fails_a_certificate_under_min_days_left_as_tls(
    tmp_path: Path, certs: Certs, expiring: trustme.LeafCert
) -> None:
    ca = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca))
    async with LineServer("silent", ssl_context=certs.server_context(expiring)) as server:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: history.db}}
targets:
  - name: imaps
    url: tls://127.0.0.1:{server.port}
    interval: 1s
    timeout: 900ms
    down_after: 1
    min_days_left: 14
""")
        # The daemon trusts the test CA as it would a system CA (OpenSSL's SSL_CERT_FILE).
        async with Daemon(config, env={"SSL_CERT_FILE": str(ca)}) as daemon:
            down = await daemon.wait_for_log(r"imaps DOWN from lab")
            status, body = await daemon.get_json("/api/v1/outages?target=imaps")
            metrics = await daemon.metrics()
    assert "tls: certificate expires in 5.0 days (" in down
    assert status == 200
    (outage,) = body["outages"]  # type: ignore[index]
    assert outage["cause"] == "tls"
    assert outage["message"].endswith("less than min_days_left 14")
    assert sample(metrics, "monitor_target_info", target="imaps", kind="tls") == 1
    assert sample(metrics, "monitor_tls_cert_expiry_timestamp_seconds",
                  target="imaps") == not_after(expiring)
    assert (sample(metrics, "monitor_probe_phase_seconds", target="imaps", phase="tls")
            or 0) > 0
