"""Config for the kinds other than http and for proxies: what a valid file builds."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, parse_config

CONFIG = """\
defaults:
  method: POST
  headers: {X-Probe: "1"}
  proxy: http://probe:${PROXY_PASSWORD}@127.0.0.1:3128
  min_days_left: 10
targets:
  - {name: site, url: "https://example.org/"}
  - {name: direct, url: "https://example.org/", proxy: null}
  - {name: db, url: "tcp://db.example:5432", body: "PING\\r\\n",
     expect: {body_regex: "^\\\\+PONG"}}
  - {name: imaps, url: "tls://mail.example", min_days_left: 21}
  - {name: nx, url: "dns:///gone.example?type=AAAA", expect: {rcode: nxdomain}}
  - {name: gw, url: "icmp://192.0.2.1", kind: icmp, packets: 5, max_loss: 20%}
"""


def test_each_kind_comes_from_its_url_with_only_its_own_options() -> None:
    config = parse_config(CONFIG, "c.yaml", {"PROXY_PASSWORD": "pw-1234"})
    site, direct, db, imaps, nx, gw = config.targets
    assert [t.kind for t in config.targets] == ["http", "http", "tcp", "tls", "dns", "icmp"]
    assert site.proxy == "http://probe:pw-1234@127.0.0.1:3128"
    assert (site.method, site.min_days_left) == ("POST", 10)
    assert direct.proxy is None
    # Defaults meant for http do not reach the other kinds.
    assert (db.method, db.headers, db.proxy, db.min_days_left) == ("GET", (), None, None)
    assert (db.body, db.body_regex) == ("PING\r\n", r"^\+PONG")
    assert (imaps.min_days_left, imaps.proxy) == (21, None)
    assert nx.expect_rcode == ("NXDOMAIN",)
    assert (gw.packets, gw.proxy) == (5, None)
    assert gw.max_loss == pytest.approx(0.2)


def test_a_proxy_password_never_shows_in_errors() -> None:
    text = ('targets: [{name: a, url: "https://example.org/", '
            'proxy: "ftp://probe:${PROXY_PASSWORD}@x:21"}]\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", {"PROXY_PASSWORD": "pw-1234"})
    assert caught.value.errors == [
        "c.yaml:1: targets[0].proxy: must be a proxy URL like http://host:3128 or "
        "socks5://host:1080"]
