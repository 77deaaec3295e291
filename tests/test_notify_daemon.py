"""Notifications end to end: `monitor run` as a subprocess, every channel at a local receiver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon import Daemon
from receivers import Receiver, Reply, SmtpReceiver
from servers import HttpServer

TOKEN = "123456:AAF-secret_token_value"
SECRETS = {
    "HOOK_URL_PATH": "hook-0123456789abcdef",
    "HOOK_SECRET": "hmac-s3cret-value",
    "SLACK_PATH": "services/T0/B0/slack-secret-XYZ",
    "TG_TOKEN": TOKEN,
    "PD_KEY": "R0UTING-secret-key",
    "SMTP_PASSWORD": "smtp-pw-secret",
}


def write_config(path: Path, site: str, receiver: Receiver, smtp: SmtpReceiver,
                 notifiers: str = "[hook, slack, discord, teams, telegram, ntfy, pager, mail, "
                                  "am, apprise]", extra: str = "") -> Path:
    port = receiver.url.rsplit(":", 1)[1]
    path.write_text(f"""\
location: lab
store: {{path: history.db}}
{extra}
notifiers:
  hook: {{type: webhook, url: "{receiver.url}/${{HOOK_URL_PATH}}", secret: "${{HOOK_SECRET}}"}}
  slack: {{type: slack, url: "{receiver.url}/${{SLACK_PATH}}"}}
  discord: {{type: discord, url: "{receiver.url}/api/webhooks/1/tok"}}
  teams: {{type: teams, url: "{receiver.url}/workflows/x"}}
  telegram: {{type: telegram, token: "${{TG_TOKEN}}", chat_id: 42, api_url: "{receiver.url}"}}
  ntfy: {{type: ntfy, server: "{receiver.url}", topic: alerts}}
  pager: {{type: pagerduty, routing_key: "${{PD_KEY}}", events_url: "{receiver.url}/v2/enqueue"}}
  mail:
    type: email
    host: 127.0.0.1
    port: {smtp.port}
    security: none
    allow_plaintext_auth: true
    username: alice
    password: "${{SMTP_PASSWORD}}"
    from: monitor@example.org
    to: [ops@example.org]
  am: {{type: alertmanager, url: "{receiver.url}/am"}}
  apprise: {{type: apprise, urls: ["json://127.0.0.1:{port}/apprise"]}}
targets:
  - name: site
    url: {site}
    interval: 1s
    timeout: 500ms
    down_after: 2
    notifiers: {notifiers}
""")
    return path


def by_path(receiver: Receiver) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in receiver.delivered:
        out.setdefault(r.path.split("?")[0], []).append(r.text)
    return out


async def test_down_then_up_reaches_every_channel_and_no_secret_leaks(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    smtp = await SmtpReceiver(users={"alice": SECRETS["SMTP_PASSWORD"]}).start()
    try:
        async with HttpServer() as site:
            config = write_config(tmp_path / "monitor.yaml", site.url("/ok"), receiver, smtp)
            async with Daemon(config, env=SECRETS) as daemon:
                await daemon.wait_for_log(r"site UP from lab")
                site.status = 503
                await daemon.wait_for_log(r"site DOWN from lab")
                await receiver.wait_delivered(9)  # nine HTTP channels
                await smtp.wait_for(1)
                site.status = 200
                await daemon.wait_for_log(r"site UP from lab since", after=2)
                await receiver.wait_delivered(18)
                mails = await smtp.wait_for(2)
                _, targets = await daemon.get_json("/api/v1/targets")
                _, outages = await daemon.get_json("/api/v1/outages")
                metrics = await daemon.metrics()
    finally:
        await receiver.close()
        await smtp.close()
    got = by_path(receiver)
    hook = got[f"/{SECRETS['HOOK_URL_PATH']}"]
    bodies = [json.loads(b) for b in hook]
    assert [b["kind"] for b in bodies] == ["down", "up"]
    assert bodies[0]["cause"] == "http" and bodies[0]["error"] == "HTTP 503, expected 200-399"
    assert bodies[1]["duration"] > 0 and bodies[0]["key"] == f"{bodies[0]['outage_id']}:down"
    assert len(got[f"/{SECRETS['SLACK_PATH']}"]) == 2
    assert len(got["/api/webhooks/1/tok"]) == 2
    assert len(got["/workflows/x"]) == 2
    assert len(got[f"/bot{TOKEN}/sendMessage"]) == 2
    assert len(got["/alerts"]) == 2
    pd = [json.loads(b) for b in got["/v2/enqueue"]]
    assert [p["event_action"] for p in pd] == ["trigger", "resolve"]
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"]
    am = [json.loads(b) for b in got["/am/api/v2/alerts"]]
    assert am[0][0]["labels"]["target"] == "site" and "endsAt" in am[1][0]
    assert len(got["/apprise"]) == 2
    assert "site" in str(mails[0].message["Subject"]) and mails[0].login == "alice"
    # Secrets: never in logs, API output or metrics.
    visible = "\n".join([daemon.log(), json.dumps(targets), json.dumps(outages), metrics])
    for name, secret in SECRETS.items():
        assert secret not in visible, f"{name} leaked"
    assert 'monitor_notifications_total{location="lab",notifier="slack",outcome="sent"} 2.0' \
        in metrics


async def test_undelivered_messages_survive_a_kill_and_nothing_is_sent_twice(
        tmp_path: Path) -> None:
    receiver = await Receiver(default=Reply(503, body="down for maintenance")).start()
    smtp = await SmtpReceiver().start()
    try:
        async with HttpServer() as site:
            config = write_config(tmp_path / "monitor.yaml", site.url("/ok"), receiver, smtp,
                                  notifiers="[slack]")
            site.status = 503
            async with Daemon(config, env=SECRETS) as daemon:
                await daemon.wait_for_log(r"site DOWN from lab")
                await receiver.wait_for(1)  # tried, failed with 503: still in the outbox
                await daemon.stop(signal.SIGKILL)
            receiver.default = Reply(200)
            async with Daemon(config, env=SECRETS) as daemon:
                await receiver.wait_delivered(1)
                site.status = 200
                await daemon.wait_for_log(r"site UP from lab since")
                await receiver.wait_delivered(2)
                await daemon.stop(signal.SIGTERM)
            async with Daemon(config, env=SECRETS) as daemon:
                # A third start (state resumed: up) has nothing left to send. Its sender
                # looks at the outbox at start, oldest first; a new outage comes later, so
                # once its message is here, a re-sent old one would have come before it.
                site.status = 503
                await daemon.wait_for_log(r"site DOWN from lab")
                await receiver.wait_delivered(3)
    finally:
        await receiver.close()
        await smtp.close()
    delivered = [r.text for r in receiver.delivered]
    assert len(delivered) == 3, delivered
    assert "503" in delivered[0] and "down" in delivered[0].lower()
    heads = [r.json()["text"].split(":")[0] for r in receiver.delivered]
    assert heads == ["DOWN", "UP", "DOWN"], delivered  # the old two once, then the new one


async def test_a_hanging_channel_delays_neither_probes_nor_other_channels(
        tmp_path: Path) -> None:
    hanging = await Receiver(default=Reply(hang=True)).start()
    receiver = await Receiver().start()
    smtp = await SmtpReceiver().start()
    try:
        async with HttpServer() as site:
            config = write_config(tmp_path / "monitor.yaml", site.url("/ok"), receiver, smtp,
                                  notifiers="[slack, discord]")
            text = config.read_text().replace(
                f'slack: {{type: slack, url: "{receiver.url}',
                f'slack: {{type: slack, timeout: 60s, url: "{hanging.url}')
            config.write_text(text)
            site.status = 503
            async with Daemon(config, env=SECRETS) as daemon:
                await daemon.wait_for_log(r"site DOWN from lab")
                await hanging.wait_for(1)
                await receiver.wait_delivered(1)  # discord, while slack hangs
                site.status = 200
                await daemon.wait_for_log(r"site UP from lab since")  # probing went on
                await receiver.wait_delivered(2)
    finally:
        await hanging.close()
        await receiver.close()
        await smtp.close()
    assert [r.path for r in receiver.delivered] == ["/api/webhooks/1/tok"] * 2  # down, up


async def test_maintenance_keeps_the_outage_and_sends_nothing(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    smtp = await SmtpReceiver().start()
    try:
        async with HttpServer() as site:
            config = write_config(
                tmp_path / "monitor.yaml", site.url("/ok"), receiver, smtp,
                notifiers="[slack]",
                extra="maintenance:\n  - {targets: [site], start: 2020-01-01T00:00:00Z, "
                      "end: 2099-01-01T00:00:00Z}")
            site.status = 503
            async with Daemon(config, env=SECRETS) as daemon:
                await daemon.wait_for_log(r"site DOWN from lab")
                site.status = 200
                await daemon.wait_for_log(r"site UP from lab since")
                _, body = await daemon.get_json("/api/v1/outages")
                # Not a synchronisation: a negative can only be watched for a while. The
                # sender is woken at once when the outbox gets a row, and loopback answers
                # in milliseconds, so 1 s is ample for a wrongly sent message to arrive.
                await asyncio.sleep(1.0)
    finally:
        await receiver.close()
        await smtp.close()
    (outage,) = body["outages"]  # type: ignore[index]
    assert outage["maintenance"] is True and outage["ended_at"] is not None
    assert receiver.received == []


async def test_notify_test_reports_success_and_the_exact_error(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    smtp = await SmtpReceiver().start()
    try:
        config = write_config(tmp_path / "monitor.yaml", "http://127.0.0.1:9/", receiver, smtp)
        env = {**os.environ, **SECRETS}

        def run(name: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "monitor", "notify-test", name,
                                   "--config", str(config)], capture_output=True, text=True,
                                  timeout=60, env=env, check=False)

        ok = await asyncio.to_thread(run, "telegram")
        receiver.fail(401, body='{"ok":false,"error_code":401,"description":"Unauthorized"}')
        bad = await asyncio.to_thread(run, "telegram")
    finally:
        await receiver.close()
        await smtp.close()
    assert ok.returncode == 0 and ok.stdout.startswith("OK telegram"), ok
    assert bad.returncode == 1 and "401" in bad.stdout and "Unauthorized" in bad.stdout, bad
    assert TOKEN not in bad.stdout + bad.stderr


async def test_up_message_counts_known_time_and_says_the_unknown_part(tmp_path: Path) -> None:
    """The monitor is stopped for a while during an outage: the "up" message's duration is
    the time it saw the site down, and the stopped time is named apart, not added to it."""
    receiver = await Receiver().start()
    smtp = await SmtpReceiver().start()
    gap = 3.0
    try:
        async with HttpServer() as site:
            config = write_config(tmp_path / "monitor.yaml", site.url("/ok"), receiver, smtp,
                                  notifiers="[hook]")
            site.status = 503
            async with Daemon(config, env=SECRETS) as daemon:
                await daemon.wait_for_log(r"site DOWN from lab")
                await receiver.wait_delivered(1)
            # Time the monitor does not watch: the whole point of the test, not a wait.
            await asyncio.sleep(gap)
            site.status = 200
            async with Daemon(config, env=SECRETS) as daemon:
                await daemon.wait_for_log(r"site UP from lab since")
                await receiver.wait_delivered(2)
            seen_up = time.time()
    finally:
        await receiver.close()
        await smtp.close()
    down, up = (json.loads(r.text) for r in receiver.delivered)
    assert (down["kind"], up["kind"]) == ("down", "up")
    wall = seen_up - up["since_ts"]  # at least the outage's wall-clock length
    assert 0 < up["duration"] <= wall - gap, (up["duration"], wall)
    assert "unknown: the monitor was not watching" in up["text"], up["text"]
