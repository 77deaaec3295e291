"""Reloads through the daemon: several at once (SIGHUP and POST /-/reload) run one at a time
and leave exactly one notification sender, so a message goes out once."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from daemon import Daemon
from receivers import Receiver, Reply
from servers import HttpServer

RELOADS = 4  # of each kind, all at once


def write_config(path: Path, site: str, receiver: Receiver, timeout: str) -> Path:
    path.write_text(f"""\
location: lab
store: {{path: history.db}}
notifiers:
  hook: {{type: webhook, url: "{receiver.url}/hook", timeout: {timeout}}}
targets:
  - name: site
    url: {site}
    interval: 1s
    timeout: 500ms
    down_after: 2
    notifiers: [hook]
""")
    return path


async def test_concurrent_reloads_leave_one_sender(tmp_path: Path) -> None:
    receiver = await Receiver(default=Reply(503, body="busy")).start()
    try:
        async with HttpServer() as site:
            config = write_config(tmp_path / "monitor.yaml", site.url("/ok"), receiver, "5s")
            async with Daemon(config) as daemon:
                await daemon.wait_for_log(r"site UP from lab")
                site.status = 503
                await daemon.wait_for_log(r"site DOWN from lab since .*\(outage 1\)")
                await receiver.wait_for(1)  # the "down" is pending: its first attempt failed
                # A changed notifier: a reload that sees the change starts a new sender, and
                # every sender running takes the pending message.
                write_config(config, site.url("/ok"), receiver, "6s")
                mark = len(daemon.lines)
                for _ in range(RELOADS):
                    daemon.send(signal.SIGHUP)
                posts = await asyncio.gather(*(daemon.post("/-/reload") for _ in range(RELOADS)))
                assert all(status == 200 for status, _ in posts), posts
                # Every POST has finished; POSTs asked at once share a run and pending
                # signals merge, so at least one run of each.
                for _ in range(2):
                    await daemon.wait_for_log(r"config reloaded from", after=mark)
                    mark = 1 + next(n for n in range(mark, len(daemon.lines))
                                    if "config reloaded from" in daemon.lines[n])
                receiver.default = Reply(200)
                async with asyncio.timeout(60):
                    await receiver.wait_delivered(1)
                site.status = 200
                await daemon.wait_for_log(r"site UP from lab since .*\(outage 1\)")
                async with asyncio.timeout(60):
                    await receiver.wait_delivered(2)
            # Stopped: every sender has finished, nothing more can arrive.
    finally:
        await receiver.close()
    kinds = [json.loads(r.body)["kind"] for r in receiver.delivered]
    assert kinds == ["down", "up"], kinds
