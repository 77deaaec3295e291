"""`monitor run` with the event-loop options the benchmarks compare, from public APIs only.

    python bench/launch.py [--uvloop] [--hold-dns] -- run --config FILE [monitor run options]

--uvloop runs the daemon on uvloop; --hold-dns keeps the loop's DNS channel open for the whole
run (`monitor.probes.http.DnsChannel`). Both are what `monitor run` does itself once the CLI
and the daemon adopt them; until then this launcher lets the benchmarks measure them.
Imports monitor.cli, monitor.config, monitor.app and monitor.probes.http.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from monitor.app import run_daemon
from monitor.cli import build_parser, setup_logging
from monitor.config import load_config
from monitor.probes.http import DnsChannel


async def run(args: argparse.Namespace, hold_dns: bool) -> None:
    config = load_config(args.config)
    dns = DnsChannel() if hold_dns else None
    try:
        await run_daemon(config, listen=args.listen, port=args.port, shard=args.shard)
    finally:
        if dns is not None:
            await dns.close()


def main() -> None:
    ours = argparse.ArgumentParser()
    ours.add_argument("--uvloop", action="store_true")
    ours.add_argument("--hold-dns", action="store_true")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    options = ours.parse_args(argv[:split])
    args = build_parser().parse_args(argv[split + 1 :])
    if args.command != "run":
        raise SystemExit("launch.py only runs `run`")
    setup_logging(args.log_level)
    if options.uvloop:
        import uvloop

        uvloop.run(run(args, options.hold_dns))
    else:
        asyncio.run(run(args, options.hold_dns))


if __name__ == "__main__":
    main()
