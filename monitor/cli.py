"""Command line: `monitor init | run | check | validate | outages | report | demo | notify-test`.

Each sub-command's --help teaches it with an example. This module parses arguments and
prints; the work is done by the modules it calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from monitor import __version__
from monitor.config import (
    MIN_INTERVAL,
    ConfigError,
    ServerConfig,
    format_errors,
    host_name_problem,
    label_safe,
    load_config,
    parse_config,
)
from monitor.model import PHASES, OutageQuery, ProbeResult, Target
from monitor.server import is_loopback
from monitor.timefmt import parse_duration, rfc3339

DEFAULT_CONFIG = "config/monitor.yaml"
INIT_CONFIG = "monitor.yaml"  # `monitor init` writes here: the bundled DEFAULT_CONFIG exists


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor", formatter_class=_formatter,
        description="Website availability monitor: probes sites on a schedule, records outage "
                    "periods with their causes,\nand exposes Prometheus metrics for Grafana.",
        epilog="examples:\n"
               "  monitor run                          # the daemon on config/monitor.yaml\n"
               "  monitor check https://example.com/   # probe once, print phases\n"
               "  monitor validate config/monitor.yaml\n\n"
               "Run `monitor COMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", formatter_class=_formatter, help="run the monitoring daemon",
        description="Run the daemon: probe every target on its schedule, keep outage history, "
                    "serve /metrics,\n/healthz, the JSON API and a status page. SIGHUP (or POST "
                    "/-/reload) re-reads the config;\na broken config is rejected and the old "
                    "one keeps running. SIGTERM or Ctrl-C stops it.",
        epilog="examples:\n"
               "  monitor run\n"
               "  monitor run --config /etc/monitor/monitor.yaml --listen 0.0.0.0\n"
               "  monitor run --shard 2/4      # the second of four stable shards of the targets")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                     help=f"config file (default: {DEFAULT_CONFIG})")
    run.add_argument("--listen", help="address to bind, overriding server.listen")
    run.add_argument("--port", type=int, help="port to bind, overriding server.port")
    run.add_argument("--allow-host", action="append", default=[], metavar="NAME", type=_host,
                     help="also answer requests for this Host name (repeatable), adding to "
                          "server.allowed_hosts")
    run.add_argument("--insecure-no-token", action="store_true",
                     help="listen beyond loopback without server.token (only behind a "
                          "firewall or on a private network)")
    run.add_argument("--shard", type=_shard, metavar="I/N",
                     help="run only the I-th of N stable shards of the targets (1 <= I <= N)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser(
        "check", formatter_class=_formatter, help="probe URLs once and print the verdict",
        description="Probe each URL once, as the daemon would (a fresh DNS lookup, connection "
                    "and TLS handshake),\nand print the verdict, failure class, HTTP status and "
                    "the time of each phase.\nExit status 0 only if every URL is up.",
        epilog="examples:\n"
               "  monitor check https://www.rt.com/ http://duma.gov.ru/\n"
               "  monitor check --timeout 5s --contains Welcome https://example.com/\n"
               "  monitor check --json https://example.com/ | jq .\n"
               "  monitor check tcp://db.example.com:5432 tls://mail.example.com:993\n"
               "  monitor check 'dns://9.9.9.9/example.com?type=MX' icmp://192.0.2.1\n"
               "  monitor check --proxy socks5://127.0.0.1:1080 https://example.com/")
    check.add_argument("urls", nargs="+", metavar="URL")
    check.add_argument("--json", action="store_true", help="print one JSON object per URL")
    check.add_argument("--timeout", default="10s", help="probe deadline (default 10s)")
    check.add_argument("--contains", help="the body must contain this text")
    check.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    check.add_argument("--no-follow", action="store_true", help="do not follow redirects")
    check.add_argument("--proxy", help="probe http(s) URLs through this proxy: http://host:port "
                                       "(CONNECT) or socks5://[user:pass@]host:port")

    init = sub.add_parser(
        "init", formatter_class=_formatter, help="write a starter config for your own URLs",
        description="Write a commented starter config that watches the given URLs (a bare host "
                    "name means https://HOST/),\nthen say how to start it. An existing file is "
                    "left alone unless --force is given.\nEvery other option is in "
                    "config/example.yaml and the README.",
        epilog="examples:\n"
               "  monitor init https://example.com/ example.org\n"
               "  monitor init --config /etc/monitor/monitor.yaml --interval 30s https://shop.example/\n"
               "  monitor run --config monitor.yaml      # the next step")
    init.add_argument("urls", nargs="+", metavar="URL")
    init.add_argument("--config", "-c", default=INIT_CONFIG,
                      help=f"file to write (default: {INIT_CONFIG})")
    init.add_argument("--interval", default="60s",
                      help="how often each URL is probed (default: 60s)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")

    validate = sub.add_parser(
        "validate", formatter_class=_formatter, help="check a config file",
        description="Check a config file and list every error as FILE:LINE: path: problem.\n"
                    "Exit status 0 if it is valid, 1 if not.",
        epilog="example:\n  monitor validate config/monitor.yaml")
    validate.add_argument("path", nargs="?", default=DEFAULT_CONFIG,
                          help=f"config file (default: {DEFAULT_CONFIG})")

    for name, help_, desc, example, since in (
        ("outages", "list outage periods from the history",
         "List outages (newest first) with start, end, duration, cause and first error, read\n"
         "from the history file. Works while the daemon runs and when it is stopped.",
         "  monitor outages --since 7d\n"
         "  monitor outages --target rt.com --since 2022-02-24T00:00:00Z --format csv\n"
         "  monitor outages --open            # what is down right now\n\n"
         "Exit status 0; 1 if the history cannot be read; 2 for a bad argument, such as a\n"
         "--target that neither the config nor the history knows.", "30d"),
        ("report", "uptime, outages and recovery times per target",
         "Per target and location: uptime over known time (time the monitor was not running\n"
         "is not counted), number of outages, total and longest downtime, mean time to\n"
         "recovery. Reads the history file; works while the daemon runs or not.",
         "  monitor report\n  monitor report --since 7d --format json", "30d"),
    ):
        cmd = sub.add_parser(name, formatter_class=_formatter, help=help_, description=desc,
                             epilog="examples:\n" + example)
        cmd.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                         help=f"config whose store.path to read (default: {DEFAULT_CONFIG})")
        cmd.add_argument("--db", help="history file to read, instead of the config's")
        cmd.add_argument("--since", default=since,
                         help=f"look-back (7d, 12h) or RFC 3339 time (default: {since})")
        cmd.add_argument("--until", help="end of the window (default: now)")
        cmd.add_argument("--location", help="only this vantage point")
        cmd.add_argument("--format", "-f", choices=["table", "json", "csv"], default="table")
        if name == "outages":
            cmd.add_argument("--target", "-t", help="only this target")
            cmd.add_argument("--open", action="store_true", help="only outages still going on")

    ntest = sub.add_parser(
        "notify-test", formatter_class=_formatter, help="send a test message through a notifier",
        description="Send one test message through the notifier NAME of the config and report "
                    "success or the exact\nerror (secrets removed). Exit status 0 on success.",
        epilog="examples:\n"
               "  SLACK_WEBHOOK_URL=https://hooks.slack.com/... monitor notify-test ops\n"
               "  monitor notify-test --config /etc/monitor/monitor.yaml pager")
    ntest.add_argument("name", metavar="NAME", help="a name under notifiers: in the config")
    ntest.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                       help=f"config file (default: {DEFAULT_CONFIG})")

    demo = sub.add_parser(
        "demo", formatter_class=_formatter, help="replay the February 2022 outages on loopback",
        description="Start local sites that replay, in a loop, the trouble of February 2022 "
                    "(timeouts under load,\n503s, refused connections, a slow death, a site "
                    "blocked from one vantage point) and two\nmonitors watching them from "
                    "127.0.0.1 (location demo-a, port P) and 127.0.0.2 (demo-b, port P+1).\n"
                    "Nothing leaves the machine. Point Prometheus at both ports (compose.demo.yaml "
                    "does) to\nsee the outages in the dashboards.",
        epilog="examples:\n"
               "  monitor demo                 # monitors on :9321 and :9322, a 3-minute loop\n"
               "  monitor demo --cycle 60s     # faster\n"
               "  docker compose -f compose.yaml -f compose.demo.yaml up -d --build")
    demo.add_argument("--port", type=int, default=9321, help="first monitor's port (default 9321)")
    demo.add_argument("--listen", default="127.0.0.1",
                      help="address the two monitors bind (0.0.0.0 in a container)")
    demo.add_argument("--allow-host", action="append", default=[], metavar="NAME", type=_host,
                      help="also answer requests for this Host name (a compose service name)")
    demo.add_argument("--cycle", default="3m", help="length of one replay loop (default 3m)")
    demo.add_argument("--data", help="directory for the demo's history (default: a temp dir)")
    demo.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def _host(text: str) -> str:
    problem = host_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text.strip("[]").lower()


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write the shard as I/N, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= I <= N")
    return i, n


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "check": cmd_check, "validate": cmd_validate, "init": cmd_init,
               "demo": cmd_demo, "outages": cmd_history, "report": cmd_history,
               "notify-test": cmd_notify_test}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.app import StartupError, run_daemon

    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"monitor: {args.config} is not valid:", file=sys.stderr)
        print(format_errors(exc), file=sys.stderr)
        return 2
    server = replace(config.server, listen=args.listen or config.server.listen,
                     allowed_hosts=(*config.server.allowed_hosts, *args.allow_host),
                     allow_public_without_token=config.server.allow_public_without_token
                     or args.insecure_no_token)
    refusal = exposure_refusal(server)
    if refusal:
        print(f"monitor: {refusal}", file=sys.stderr)
        return 2
    config = replace(config, server=server)
    try:  # optional, faster event loop: pip install 'monitor[fast]'
        run = importlib.import_module("uvloop").run
    except ImportError:
        run = asyncio.run
    try:
        run(run_daemon(config, listen=args.listen, port=args.port, shard=args.shard))
    except StartupError as exc:  # one line with the fix, no traceback
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    return 0


def exposure_refusal(server: ServerConfig) -> str | None:
    """Why the server must not start as configured, or None; warns when it is let through."""
    if server.token or is_loopback(server.listen):
        return None
    if server.allow_public_without_token:
        logging.getLogger("monitor").warning(
            "INSECURE: listening on %s without a token: anyone who can connect reads the "
            "targets and outages and can trigger reloads; set server.token", server.listen)
        return None
    return (f"refusing to listen on {server.listen} without a token: anyone who can connect "
            "would read the targets and outages and could trigger reloads.\n"
            "Set server.token (for example token: ${MONITOR_TOKEN} and export MONITOR_TOKEN), "
            "listen on 127.0.0.1, or, only behind a firewall or on a private network, pass "
            "--insecure-no-token (server.allow_public_without_token: true).")


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.app import StartupError
    from monitor.demo import run_demo

    setup_logging(args.log_level)
    try:
        cycle = parse_duration(args.cycle)
    except ValueError as exc:
        print(f"monitor demo: --cycle: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        task = asyncio.create_task(run_demo(port=args.port, cycle=cycle, data_dir=args.data,
                                            listen=args.listen,
                                            allowed_hosts=tuple(args.allow_host)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    except StartupError as exc:  # one line with the fix, as `monitor run` does
        print(f"monitor demo: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """`monitor outages` and `monitor report`: read the history file directly."""
    from monitor.reports import format_outages, format_report
    from monitor.server import parse_time
    from monitor.store import SqliteReader, StoreError

    path = args.db
    configured: set[str] = set()  # target names of the config, when it is read
    if path is None:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"monitor {args.command}: {args.config} is not valid (or use --db):\n{exc}",
                  file=sys.stderr)
            return 2
        path, configured = config.store.path, {t.name for t in config.targets}
    now = time.time()
    try:
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else now
    except ValueError as exc:
        print(f"monitor {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        with SqliteReader(path) as reader:
            if args.command == "outages":
                found = reader.outages(OutageQuery(
                    target=args.target, location=args.location, since=since, until=until,
                    open=True if args.open else None, limit=None))
                if args.target and not found:
                    # report() names every target the history knows, whatever the window.
                    known = configured | {r.target for r in reader.report(now, now)}
                    if args.target not in known:
                        where = f"the history at {path}" + (
                            "" if args.db else f" or in {args.config}")
                        print(f"monitor outages: {unknown_target(args.target, known, where)}",
                              file=sys.stderr)
                        return 2
                times = reader.outage_times(found, now)
                print(format_outages(list(zip(found, times, strict=True)), args.format))
            else:
                print(format_report(reader.report(since, until, location=args.location),
                                    args.format))
    except StoreError as exc:
        print(f"monitor {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def unknown_target(name: str, known: set[str], where: str) -> str:
    """Why --target NAME lists nothing: a typo, most likely."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = (f"did you mean {close[0]!r}?" if close
            else f"known: {', '.join(sorted(known))}" if known else "it knows no targets yet")
    return f"no target {name!r} in {where}; {hint}"


def cmd_notify_test(args: argparse.Namespace) -> int:
    from monitor.notifications import build_all, send_test

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"monitor notify-test: {args.config} is not valid:\n{exc}", file=sys.stderr)
        return 2
    notifiers, _, _ = build_all(config)
    notifier = notifiers.get(args.name)
    if notifier is None:
        known = ", ".join(sorted(notifiers)) or "none are defined"
        print(f"monitor notify-test: no notifier {args.name!r} in {args.config} ({known})",
              file=sys.stderr)
        return 2
    error = asyncio.run(send_test(notifier, config.location))
    if error:
        print(f"FAILED {args.name}: {error}")
        return 1
    print(f"OK {args.name}: test message delivered")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(format_errors(exc))  # one error a line, then the count on a line of its own
        return 1
    print(f"{args.path}: ok, {len(config.targets)} targets, location {config.location}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter config for the given URLs, checked by load_config before it is kept."""
    try:
        interval = parse_duration(args.interval)
        urls = [starter_url(url) for url in args.urls]
    except ValueError as exc:
        print(f"monitor init: {exc}", file=sys.stderr)
        return 2
    if interval < MIN_INTERVAL:
        print(f"monitor init: --interval must be at least {MIN_INTERVAL:g}s", file=sys.stderr)
        return 2
    path = Path(args.config)
    if path.exists() and not args.force:
        print(f"monitor init: {path} exists; keep it (monitor run --config {path}) or pass "
              "--force to overwrite it", file=sys.stderr)
        return 2
    text = starter_config(urls, interval, time.time())
    try:
        parse_config(text, str(path), {})  # what we write must load: no surprise at `run`
    except ConfigError as exc:
        print(f"monitor init: cannot write a valid config for these URLs:\n{exc}",
              file=sys.stderr)
        return 2
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"monitor init: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    count = len(urls)
    print(f"wrote {path}: {count} target{'' if count == 1 else 's'}, "
          f"probed every {interval:g}s")
    run = "monitor run" if str(path) == DEFAULT_CONFIG else f"monitor run --config {path}"
    print(f"next: {run}   (status page http://127.0.0.1:9321/, metrics at /metrics)")
    return 0


def starter_url(text: str) -> str:
    """A URL from what the user typed: a bare host name means https://HOST/; tcp://, tls://,
    dns:// and icmp:// URLs are taken as they are."""
    from monitor.probes import check_url

    url = text.strip()
    if "://" not in url:
        url = f"https://{url}"
    try:
        kind = check_url(url)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if kind != "http":
        return url
    return url if urlsplit(url).path else f"{url}/"


def starter_config(urls: Sequence[str], interval: float, now: float) -> str:
    """A commented config watching `urls`; names come from the host names, made unique."""
    names: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        # A dns target is named after the name it asks for, not the server it asks.
        host = parts.path.strip("/") if parts.scheme == "dns" else parts.hostname
        base = label_safe(host or "") or "site"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    # Double-quoted YAML (JSON is a subset); `${` would be read as a variable reference.
    targets = "".join(
        f"  - name: {name}\n    url: {json.dumps(url).replace('${', '$${')}\n"
        for name, url in zip(names, urls, strict=True)
    )
    return f"""\
# Written by `monitor init` on {rfc3339(now)}. Check it with `monitor validate FILE`;
# every option (notifiers, maintenance windows, expected status or text, labels) is
# explained in config/example.yaml and the README.

server:
  listen: 127.0.0.1   # this machine only; to listen beyond it, set server.token first
  port: 9321          # the status page, /metrics for Prometheus and the JSON API

store:
  path: data/monitor.db   # the outage history (SQLite), relative to where monitor starts

defaults:
  interval: {interval:g}s   # how often each URL is probed
  timeout: {min(10.0, interval):g}s   # a slower answer is a failure
  down_after: 3    # failed probes in a row before an outage opens
  expect:
    status: [200-399]   # the answers that count as up

targets:
{targets}
# To be told about outages, add a notifier and list it under the targets, for example:
# notifiers:
#   ops: {{type: slack, url: "${{SLACK_WEBHOOK_URL}}"}}
# and under defaults:  notifiers: [ops]
"""


def cmd_check(args: argparse.Namespace) -> int:
    from monitor.probes import run_probe

    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"monitor check: --timeout: {exc}", file=sys.stderr)
        return 2
    from monitor.probes import check_url, parse_proxy_url
    from monitor.probes.sanitize import display_url

    kinds = []
    for url in args.urls:
        try:
            kinds.append(check_url(url))
        except ValueError as exc:
            print(f"monitor check: {display_url(url)}: {exc}", file=sys.stderr)
            return 2
    if args.proxy is not None:
        try:
            parse_proxy_url(args.proxy)
        except ValueError as exc:
            print(f"monitor check: --proxy: {exc}", file=sys.stderr)
            return 2
    targets = [
        Target(name=f"url{i}", url=url, kind=kind, timeout=timeout, interval=max(timeout, 1.0),
               body_contains=args.contains, verify_tls=not args.insecure,
               follow_redirects=not args.no_follow,
               proxy=args.proxy if kind == "http" else None)
        for i, (url, kind) in enumerate(zip(args.urls, kinds, strict=True))
    ]

    async def probe_all() -> list[ProbeResult]:
        return await asyncio.gather(*(run_probe(t) for t in targets))

    results = asyncio.run(probe_all())
    for target, result in zip(targets, results, strict=True):
        print(json.dumps(check_json(target, result)) if args.json else check_line(target, result))
    return 0 if all(r.ok for r in results) else 1


def check_json(target: Target, r: ProbeResult) -> dict[str, object]:
    from monitor.probes.sanitize import display_url

    return {"url": display_url(target.url), "up": r.ok,
            "failure": r.failure.value if r.failure else None,
            "phase": r.phase, "message": r.message, "status": r.status,
            "duration_seconds": round(r.duration, 6),
            "phases": {p: round(r.phases[p], 6) for p in PHASES if p in r.phases},
            "cert_expires_at": rfc3339(r.cert_expiry),
            "kind": target.kind, "rtt_seconds": None if r.rtt is None else round(r.rtt, 6),
            "loss": r.loss}


def check_line(target: Target, r: ProbeResult) -> str:
    from monitor.probes.sanitize import display_url

    verdict = "UP  " if r.ok else "DOWN"
    phases = " ".join(f"{p}={r.phases[p] * 1000:.1f}ms" for p in PHASES if p in r.phases)
    why = (f" ({r.message})" if r.message else "") if r.ok else f" {r.failure}: {r.message}"
    return (f"{verdict} {display_url(target.url)} status={r.status or '-'} "
            f"total={r.duration * 1000:.1f}ms {phases}{why}")
