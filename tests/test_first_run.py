"""A new user's first ten minutes: `monitor init`, the help texts, and what the CLI prints."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from daemon import Daemon
from receivers import Receiver
from servers import Certs, HttpServer

from monitor import __version__
from monitor.cli import build_parser
from monitor.config import load_config

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["init", "run", "check", "validate", "outages", "report", "demo", "notify-test"]


async def monitor(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "monitor", *args], capture_output=True,
        text=True, timeout=60, check=False, cwd=cwd)


async def watched(tmp_path: Path, web: HttpServer) -> Path:
    """`monitor init` for the local site, then the daemon on that file until it saw it up."""
    config = tmp_path / "watch" / "monitor.yaml"
    made = await monitor("init", "--config", str(config), "--interval", "1s", web.url("/ok"))
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [
        f"wrote {config}: 1 target, probed every 1s",
        f"next: monitor run --config {config}   (status page http://127.0.0.1:9321/, "
        "metrics at /metrics)",
    ]
    async with Daemon(config) as daemon:  # in the config's folder: store.path is relative
        await daemon.wait_for_log(r"127\.0\.0\.1 UP from ")
    return config


async def test_init_writes_a_config_that_validates_and_runs(tmp_path: Path) -> None:
    async with HttpServer() as web:
        config = await watched(tmp_path, web)
        assert web.requests >= 1
    text = config.read_text()
    assert text.startswith("# Written by `monitor init` on ")
    assert f'url: "{web.url("/ok")}"' in text
    checked = await monitor("validate", str(config))
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith(f"{config}: ok, 1 targets")
    assert (config.parent / "data" / "monitor.db").is_file()


async def test_init_names_targets_after_their_hosts_and_keeps_urls_as_typed(
        tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    made = await monitor("init", "--config", str(config), "example.com",
                         "https://example.com/shop?q=${x}", "http://[::1]:8080/")
    assert made.returncode == 0, made.stderr
    loaded = load_config(config, environ={})
    assert [(t.name, t.url) for t in loaded.targets] == [
        ("example.com", "https://example.com/"),
        ("example.com-2", "https://example.com/shop?q=${x}"),  # `${` is not a variable here
        ("1", "http://[::1]:8080/"),
    ]
    assert (loaded.targets[0].interval, loaded.server.listen) == (60, "127.0.0.1")


async def test_init_keeps_an_existing_file_and_refuses_a_bad_url(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text("mine\n")
    kept = await monitor("init", "--config", str(config), "https://example.com/")
    assert kept.returncode == 2
    assert kept.stderr == (f"monitor init: {config} exists; keep it (monitor run --config "
                           f"{config}) or pass --force to overwrite it\n")
    assert config.read_text() == "mine\n"
    other = tmp_path / "other.yaml"
    bad = await monitor("init", "--config", str(other), "ftp://example.com/")
    assert (bad.returncode, bad.stderr) == (
        2, "monitor init: 'ftp://example.com/': must be an http://, https://, tcp://, tls://, "
           "dns:// or icmp:// URL\n")
    assert not other.exists()
    forced = await monitor("init", "--config", str(config), "--force", "https://example.com/")
    assert forced.returncode == 0 and load_config(config).targets[0].url == "https://example.com/"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_example_parses(command: str) -> None:
    """Each `monitor ...` line of a command's examples is accepted by the real parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[index]
    examples = [line.split("#")[0].split("|")[0].strip() for line in sub.epilog.splitlines()]
    runs = [shlex.split(line) for line in examples if re.match(r"(\w+=\S+ )*monitor ", line)]
    runs = [[word for word in words if "=" not in word or word.startswith("-")]
            for words in runs]
    assert runs, f"{command} --help shows no example"
    for words in runs:
        assert words[0] == "monitor"
        parser.parse_args(words[1:])  # exits (fails the test) on an unknown option


async def test_validate_help_names_its_default_path() -> None:
    result = await monitor("validate", "--help")
    assert "(default: config/monitor.yaml)" in result.stdout


async def test_validate_prints_the_count_on_its_own_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - {name: a, url: 'ftp://x/'}\n  - {name: b, url: 'http://x/',"
                   " interval: soon}\n")
    result = await monitor("validate", str(bad))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad}:2: targets[0].url: must be an http://, https://, tcp://, tls://, dns:// or "
        "icmp:// URL, got 'ftp://x/'",
        f"{bad}:3: targets[1].interval: must be a duration like 10s, got 'soon'",
        "2 errors in the configuration",
    ]
    assert result.stderr == ""


async def test_outages_for_an_unknown_target_is_an_error(tmp_path: Path) -> None:
    async with HttpServer() as web:
        config = await watched(tmp_path, web)
    db = config.parent / "data" / "monitor.db"
    known = await monitor("outages", "--config", str(config), "--target", "127.0.0.1",
                          cwd=config.parent)
    assert (known.returncode, known.stdout.strip()) == (0, "no outages")
    typo = await monitor("outages", "--config", str(config), "--target", "127.0.0.2",
                         cwd=config.parent)
    assert typo.returncode == 2
    assert typo.stderr == ("monitor outages: no target '127.0.0.2' in the history at "
                           f"data/monitor.db or in {config}; did you mean '127.0.0.1'?\n")
    # Only the history to go by: the name comes from it.
    direct = await monitor("outages", "--db", str(db), "--target", "nosuch")
    assert direct.returncode == 2
    assert direct.stderr == (f"monitor outages: no target 'nosuch' in the history at {db}; "
                             "known: 127.0.0.1\n")
    # JSON output is indented by two spaces.
    report = await monitor("report", "--db", str(db), "--format", "json")
    assert report.returncode == 0
    assert report.stdout.startswith('[\n  {\n    "target": "127.0.0.1"'), report.stdout


async def test_webhooks_say_who_is_calling(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    try:
        config = tmp_path / "monitor.yaml"
        config.write_text(f"notifiers:\n  ops: {{type: webhook, url: '{receiver.url}/hook'}}\n"
                          "targets: [{name: a, url: 'http://127.0.0.1:9/', notifiers: [ops]}]\n")
        sent = await monitor("notify-test", "--config", str(config), "ops")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        (request,) = await receiver.wait_for(1)
    finally:
        await receiver.close()
    assert request.headers["User-Agent"] == f"monitor/{__version__}"


async def test_check_json_gives_the_certificate_expiry_in_rfc3339(certs: Certs) -> None:
    async with HttpServer(ssl_context=certs.server_context(certs.good)) as web:
        result = await monitor("check", "--json", "--insecure", web.url("/ok"))
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("\n") == 1  # one JSON object per URL, one line each
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    expiry = x509.load_pem_x509_certificate(
        certs.good.cert_chain_pems[0].bytes()).not_valid_after_utc
    assert line["cert_expires_at"] == expiry.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "cert_expiry" not in line
    assert datetime.fromisoformat(line["cert_expires_at"]).tzinfo is not None


def test_the_licence_is_an_spdx_expression() -> None:
    """A TOML table makes setuptools print a deprecation banner on every install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    floor = re.search(r"setuptools>=(\d+)", " ".join(project["build-system"]["requires"]))
    assert floor is not None and int(floor.group(1)) >= 77  # reads SPDX strings


async def test_run_refuses_every_error_of_every_section_at_once() -> None:
    """The daemon loads through the same one loader as validate: no second check to forget."""
    fixture = ROOT / "tests" / "configs" / "invalid-every-section.yaml"
    expected = fixture.with_suffix(".errors").read_text().splitlines()
    result = await monitor("run", "--config", fixture.name, cwd=fixture.parent)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"monitor: {fixture.name} is not valid:", *expected, "10 errors in the configuration"]
