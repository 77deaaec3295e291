"""http(s) probes through real HTTP CONNECT and SOCKS5 proxies on 127.0.0.1, with
credentials; a proxy that is down or refuses us is class `proxy` (unknown), a target the
proxy cannot reach is `connect`; credentials never show; the daemon wiring."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, sample
from kind_servers import ConnectProxy, Socks5Proxy, refusing_port
from servers import Certs, HttpServer

from monitor.model import Failure, Target
from monitor.probes import run_probe
from monitor.probes.http import new_ssl_context, probe_http

USER, PASSWORD = "probe", "s3cret-pass"


def target(url: str, proxy: str, **options: Any) -> Target:
    return Target(name="t", url=url, proxy=proxy, **{"timeout": 3.0, **options})


@pytest.fixture(params=["http", "socks5"])
async def proxy(request: pytest.FixtureRequest) -> Any:
    kind = ConnectProxy if request.param == "http" else Socks5Proxy
    async with kind(USER, PASSWORD) as server:
        yield server


def url_of(proxy: Any, user: str = USER, password: str = PASSWORD) -> str:
    return f"{proxy.scheme}://{user}:{password}@127.0.0.1:{proxy.port}"


async def test_a_probe_goes_through_the_proxy_with_credentials(
    proxy: Any, http_server: HttpServer
) -> None:
    result = await run_probe(target(http_server.url("/ok"), url_of(proxy)))
    assert result.ok, result.message
    assert result.status == 200
    assert proxy.tunnels == [("127.0.0.1", http_server.port)]
    assert result.phases["resolve"] == 0.0  # the proxy resolves the target's name
    assert result.phases["connect"] > 0


async def test_https_through_the_proxy_verifies_the_target(proxy: Any, certs: Certs) -> None:
    context = new_ssl_context()
    certs.ca.configure_trust(context)
    async with HttpServer(ssl_context=certs.server_context(certs.good)) as web, \
            HttpServer(ssl_context=certs.server_context(certs.wrong_host)) as wrong:
        good = await probe_http(target(web.url("/ok"), url_of(proxy)), ssl_context=context)
        bad = await probe_http(target(wrong.url("/ok"), url_of(proxy)), ssl_context=context)
    assert good.ok, good.message
    assert good.phases["tls"] > 0 and good.cert_expiry is not None
    assert (bad.failure, bad.phase) == (Failure.TLS, "tls")


async def test_wrong_credentials_are_the_proxys_failure_not_the_targets(
    proxy: Any, http_server: HttpServer
) -> None:
    result = await run_probe(target(http_server.url("/ok"), url_of(proxy, password="wrong-pw")))
    assert (result.failure, result.message) == (Failure.PROXY, "the proxy refused the credentials")
    assert result.unknown  # says nothing of the target: no outage
    assert proxy.tunnels == []


async def test_a_proxy_that_is_down_is_the_proxys_failure(http_server: HttpServer) -> None:
    sock, port = refusing_port()
    with sock:
        for scheme in ("http", "socks5"):
            result = await run_probe(target(http_server.url("/ok"),
                                            f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{port}"))
            assert (result.failure, result.phase) == (Failure.PROXY, "connect")
            assert result.message == "cannot connect to the proxy: Connection refused"
            assert result.unknown


async def test_a_target_the_proxy_cannot_reach_is_connect(proxy: Any) -> None:
    sock, port = refusing_port()
    with sock:
        result = await run_probe(target(f"http://127.0.0.1:{port}/", url_of(proxy)))
    assert (result.failure, result.phase) == (Failure.CONNECT, "connect")
    assert not result.unknown
    expected = {"http": "cannot connect (via proxy): the proxy answered 502",
                "socks5": "cannot connect (via proxy): Connection refused"}
    assert result.message == expected[proxy.scheme]


async def test_proxy_credentials_never_appear_in_messages(http_server: HttpServer) -> None:
    async with ConnectProxy(USER, PASSWORD) as proxy:
        proxy.reject_with = f"HTTP/1.1 403 Forbidden for {USER}:{PASSWORD}".encode()
        result = await run_probe(target(http_server.url("/ok"),
                                        f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}"))
    assert result.failure is Failure.PROXY
    assert result.message.startswith("the proxy refused: ")
    assert PASSWORD not in result.message and USER not in result.message
    assert "***" in result.message


async def test_a_redirect_is_followed_through_a_loopback_proxy(
    proxy: Any, http_server: HttpServer
) -> None:
    # The target is on loopback, so the private-address policy lets its redirects stay there.
    result = await run_probe(target(http_server.url("/redirect?to=/ok"), url_of(proxy)))
    assert result.ok, result.message
    assert len(proxy.tunnels) == 2  # one tunnel per hop: connections are never reused


async def test_the_daemon_probes_through_a_proxy_and_tells_proxy_from_target(
    tmp_path: Path, http_server: HttpServer
) -> None:
    dead, dead_port = refusing_port()
    async with ConnectProxy(USER, PASSWORD) as proxy:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""\
location: lab
store: {{path: history.db}}
defaults:
  interval: 1s
  timeout: 900ms
  down_after: 1
  proxy: http://{USER}:${{PROXY_PASSWORD}}@127.0.0.1:{proxy.port}
targets:
  - name: via-proxy
    url: {http_server.url("/ok")}
  - name: via-dead-proxy
    url: {http_server.url("/ok")}
    proxy: socks5://127.0.0.1:{dead_port}
""")
        with dead:
            async with Daemon(config, env={"PROXY_PASSWORD": PASSWORD}) as daemon:
                await daemon.wait_for_log(r"via-proxy UP from lab")
                proxy.refuse_target = True  # the proxy can no longer reach the site
                down = await daemon.wait_for_log(r"via-proxy DOWN from lab")
                status, body = await daemon.get_json("/api/v1/outages")
                for _ in range(100):  # poll, bounded (about 5 s): a third dead-proxy probe
                    metrics = await daemon.metrics()
                    if (sample(metrics, "monitor_probes_total", target="via-dead-proxy",
                               result="local") or 0) >= 3:
                        break
                    await asyncio.sleep(0.05)
    assert "connect: cannot connect (via proxy): the proxy answered 502" in down
    assert status == 200
    outages = body["outages"]  # type: ignore[index]
    # The dead proxy opened no outage on its target: its results are unknown.
    assert [(o["target"], o["cause"]) for o in outages] == [("via-proxy", "connect")]
    assert not any("via-dead-proxy DOWN" in line for line in daemon.lines)
    # ... but the log says, once (not for each of its probes), that its proxy failed.
    said = [line for line in daemon.lines if "via-dead-proxy: its proxy failed" in line]
    assert len(said) == 1, daemon.log()
    assert said[0].endswith("via-dead-proxy: its proxy failed (cannot connect to the proxy: "
                            "Connection refused); results are unknown until it works")
    assert (sample(metrics, "monitor_probes_total", target="via-dead-proxy", result="local")
            or 0) >= 3
    # Counted as `local` (unknown), with no `proxy` series that would stay 0 forever.
    assert sample(metrics, "monitor_probes_total", target="via-dead-proxy", result="proxy") \
        is None
    assert PASSWORD not in daemon.log()
    # The history counts proxy failures in a column of their own (schema migration 4).
    assert not any("ERROR monitor.store" in line for line in daemon.lines), daemon.log()


def test_the_log_says_once_when_a_proxy_fails_and_once_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from monitor.model import ProbeResult
    from monitor.proxies import ProxyLog

    def result(failure: Failure | None) -> ProbeResult:
        return ProbeResult(target="site", started_at=0.0, duration=0.1, ok=failure is None,
                           failure=failure, message="cannot connect to the proxy: x"
                           if failure is Failure.PROXY else "")

    proxies = ProxyLog()
    caplog.set_level("WARNING", logger="monitor")
    for failure in (None, Failure.PROXY, Failure.PROXY, Failure.LOCAL, Failure.PROXY, None,
                    None, Failure.CONNECT):
        proxies.observe(result(failure))
    assert [r.getMessage() for r in caplog.records] == [
        "site: its proxy failed (cannot connect to the proxy: x); results are unknown until "
        "it works",
        "site: its proxy works again",
    ]


async def test_the_proxys_name_is_looked_up_by_the_monitor(http_server: HttpServer) -> None:
    from kind_servers import Zone

    from monitor.probes.resolve import Resolver

    async with ConnectProxy() as proxy, Zone({("proxy.test", "A"): ["127.0.0.1"]},
                                             slow=frozenset({"slow-proxy.test"}),
                                             delay=5.0) as zone:
        resolver = Resolver([("127.0.0.1", zone.port)])
        named = await probe_http(target(http_server.url("/ok"),
                                        f"http://proxy.test:{proxy.port}"), resolver=resolver)
        missing = await probe_http(target(http_server.url("/ok"),
                                          f"http://nosuch.test:{proxy.port}"), resolver=resolver)
        slow = await probe_http(target(http_server.url("/ok"),
                                       f"http://slow-proxy.test:{proxy.port}", timeout=0.5),
                                resolver=resolver)
    assert named.ok, named.message
    assert proxy.tunnels == [("127.0.0.1", http_server.port)]
    assert (missing.failure, missing.message) == (
        Failure.PROXY, "DNS lookup of the proxy failed: no such name")
    assert (slow.failure, slow.message) == (
        Failure.PROXY, "DNS lookup of the proxy timed out after 0.5s")
