"""A probed server shapes the error message: no channel lets it add links, mentions,
formatting, HTML, lines or mail headers. Each channel posts to its local stand-in."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from daemon import Daemon
from receivers import Receiver, SmtpReceiver

from monitor.notify.base import Message
from monitor.notify.markup import ZWSP, html, markdown, slack
from monitor.notify.messages import one_line
from monitor.notify.registry import build_notifier

HOSTILE = (
    "bad status line: [click here](https://evil.example/login) @everyone @here <!channel> "
    "<@123456789012345678> <script>alert(1)</script> **bold** _it_ ~~gone~~ `code` ||spoiler||"
    "\r\nUP: rt is up again\n# heading\r\n> quote\x1b[31m"
)
# What every channel shows of it: one line, control characters gone, nothing else changed.
LINE = (
    "bad status line: [click here](https://evil.example/login) @everyone @here <!channel> "
    "<@123456789012345678> <script>alert(1)</script> **bold** _it_ ~~gone~~ `code` ||spoiler|| "
    "UP: rt is up again # heading > quote [31m"
)
DOWN = Message(
    kind="down",
    key="42:down",
    target="rt",
    location="msk",
    url="https://rt.example/",
    cause="http",
    error=HOSTILE,
    since=datetime(2026, 3, 1, 2, 0, tzinfo=UTC).timestamp(),
    duration=None,
    outage_id=42,
)
TEXT = f"rt is down from msk since 2026-03-01 02:00:00 UTC.\nCause: http: {LINE}\nhttps://rt.example/"


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def strings(value: Any) -> list[str]:
    """Every string in a JSON document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def test_one_line() -> None:
    assert one_line(HOSTILE) == LINE
    assert one_line("x" * 2000) == "x" * 999 + "…"


def test_markdown_escapes_everything_but_full_addresses() -> None:
    assert markdown("[a](https://e.example/x) @everyone <@1> **b** _i_ `c` ||s|| \\") == (
        "\\[a\\]\\(https://e.example/x\\) @\u200beveryone \\<@1\\> \\*\\*b\\*\\* \\_i\\_ "
        "\\`c\\` \\|\\|s\\|\\| \\\\"
    )
    assert markdown("# h\n- item\n> q\n1. first\nhttps://rt.example/a_b*c") == (
        "\\# h\n\\- item\n\\> q\n1\\. first\nhttps://rt.example/a_b\\*c"
    )
    assert slack("<!channel> <https://e|x> &") == "&lt;!channel&gt; &lt;https://e|x&gt; &amp;"
    assert html("<b>@admin</b> & a@b") == f"&lt;b&gt;@{ZWSP}admin&lt;/b&gt; &amp; a@{ZWSP}b"
    assert html("@ops https://e.example/@ops?a=1&b=2") == (
        f"@{ZWSP}ops https://e.example/@ops?a=1&amp;b=2"
    )


async def test_discord(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier("chat", "discord", {"url": f"{receiver.url}/api/webhooks/1/t"})
    await notifier.send(DOWN, session)
    payload = receiver.received[0].json()
    (embed,) = payload["embeds"]
    assert payload["allowed_mentions"] == {"parse": []}
    assert embed["title"] == "DOWN: rt from msk"
    assert embed["description"] == markdown(TEXT)
    # Literally: the link is escaped (its address shows as itself), mentions are broken.
    assert "\\[click here\\]\\(https://evil.example/login\\)" in embed["description"]
    assert f"@{ZWSP}everyone @{ZWSP}here \\<!channel\\> \\<@123456789012345678\\>" in (
        embed["description"]
    )
    assert "\\<script\\>alert\\(1\\)\\</script\\>" in embed["description"]
    assert "\\*\\*bold\\*\\* \\_it\\_ \\~\\~gone\\~\\~ \\`code\\` \\|\\|spoiler\\|\\|" in (
        embed["description"]
    )
    for raw in ("@everyone", "@here", "\r", "\x1b"):
        assert raw not in embed["description"]
    # No markdown character left unescaped outside the full addresses.
    outside = re.sub(r"https?://[^\s()\\]+", "", embed["description"])
    assert not re.search(r"(?<!\\)[\[\]()<>*_~`|]", outside)
    assert embed["description"].count("\n") == 2  # the error added no line


async def test_slack(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier("chat", "slack", {"url": f"{receiver.url}/services/T/B/X"})
    await notifier.send(DOWN, session)
    payload = receiver.received[0].json()
    header, section = payload["blocks"]
    # plain_text is never formatted, linked or parsed for mentions by Slack.
    assert header["text"] == {"type": "plain_text", "text": "DOWN: rt from msk"}
    assert section["text"] == {"type": "plain_text", "text": TEXT, "emoji": True}
    # The notification fallback is mrkdwn: no control character of Slack's is left raw.
    assert payload["text"] == f"DOWN: rt from msk\n{slack(TEXT)}"
    assert "&lt;!channel&gt; &lt;@123456789012345678&gt; &lt;script&gt;" in payload["text"]
    assert not re.search(r"[<>]", payload["text"])
    assert [s for s in strings(payload) if "\r" in s] == []
    assert "mrkdwn" not in json.dumps(payload)


async def test_teams(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier("chat", "teams", {"url": f"{receiver.url}/workflows/x?sig=abc"})
    await notifier.send(DOWN, session)
    payload = receiver.received[0].json()
    body = payload["attachments"][0]["content"]["body"]
    # A TextRun is shown as written (Adaptive Cards apply markdown to TextBlocks only).
    assert [block["type"] for block in body] == ["RichTextBlock", "RichTextBlock"]
    runs = [inline for block in body for inline in block["inlines"]]
    assert [(run["type"], run["text"]) for run in runs] == [
        ("TextRun", "DOWN: rt from msk"),
        ("TextRun", TEXT),
    ]
    assert '"TextBlock"' not in json.dumps(payload)


async def test_telegram(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier(
        "tg", "telegram", {"token": "1:tok", "chat_id": 7, "api_url": receiver.url}
    )
    await notifier.send(DOWN, session)
    payload = receiver.received[0].json()
    assert payload["parse_mode"] == "HTML"
    assert payload["link_preview_options"] == {"is_disabled": True}
    assert payload["text"] == f"<b>DOWN: rt from msk</b>\n{html(TEXT)}"
    assert re.findall(r"<[^>]*>", payload["text"]) == ["<b>", "</b>"]  # only our own tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in payload["text"]
    assert f"@{ZWSP}everyone @{ZWSP}here" in payload["text"]
    assert not re.search(r"@\w", payload["text"])  # no @name left to mention someone
    assert "\r" not in payload["text"]


async def test_ntfy(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier("phone", "ntfy", {"server": receiver.url, "topic": "ops"})
    await notifier.send(DOWN, session)
    got = receiver.received[0]
    # Plain text: ntfy renders markdown only when asked to (Markdown: yes); we never ask.
    assert got.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert not {"Markdown", "X-Markdown", "Actions", "Attach", "Email", "Call"} & set(got.headers)
    assert got.headers["Title"] == "DOWN: rt from msk"
    assert got.headers["Click"] == "https://rt.example/"  # from the config, never the error
    assert got.text == TEXT


async def test_email_is_plain_text_and_subject_is_one_line() -> None:
    smtp = await SmtpReceiver().start()
    try:
        notifier = build_notifier(
            "mail",
            "email",
            {
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "none",
                "from": "monitor@example.org",
                "to": "ops@example.org",
            },
        )
        # The location cannot hold a newline in a valid config; the subject holds anyway.
        message = replace(DOWN, location="msk\r\nBcc: victim@example.org")
        async with aiohttp.ClientSession() as session:
            await notifier.send(message, session)
        (mail,) = await smtp.wait_for(1)
    finally:
        await smtp.close()
    assert mail.rcpt_tos == ["ops@example.org"]
    assert "Bcc" not in mail.message
    assert mail.message["Subject"] == "DOWN: rt from msk Bcc: victim@example.org"
    assert not mail.message.is_multipart()  # no HTML part to inject into
    assert mail.message.get_content_type() == "text/plain"
    assert f"\nCause: http: {LINE}\n" in mail.message.get_content().replace("\r\n", "\n")


async def test_alertmanager(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier("am", "alertmanager", {"url": receiver.url})
    await notifier.send(DOWN, session)
    (alert,) = receiver.received[0].json()
    assert alert["annotations"]["error"] == LINE
    assert alert["annotations"]["description"] == TEXT
    assert alert["generatorURL"] == "https://rt.example/"  # the UI's link: from the config only
    assert [s for s in strings(alert) if "\r" in s or "\x1b" in s] == []


async def test_pagerduty(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier(
        "pd", "pagerduty", {"routing_key": "R0UTING", "events_url": receiver.url}
    )
    await notifier.send(DOWN, session)
    event = receiver.received[0].json()
    assert event["payload"]["summary"] == f"DOWN: rt from msk: {LINE}"
    assert event["payload"]["custom_details"] == {"text": TEXT, "url": "https://rt.example/"}
    assert event["links"] == [{"href": "https://rt.example/", "text": "rt"}]  # the config's only
    assert [s for s in strings(event) if "\r" in s or "\x1b" in s] == []


async def test_webhook(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    notifier = build_notifier("hook", "webhook", {"url": receiver.url})
    await notifier.send(DOWN, session)
    body = receiver.received[0].json()
    # JSON carries the text as data; it is one line like everywhere else.
    assert (body["error"], body["text"]) == (LINE, TEXT)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("markdown", "\\[click here\\]\\(https"),
        ("html", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ],
)
async def test_apprise_escapes_for_the_service_format(
    receiver: Receiver, session: aiohttp.ClientSession, fmt: str, expected: str
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    notifier = build_notifier(
        "any", "apprise", {"urls": f"json://127.0.0.1:{port}/?format={fmt}"}
    )
    await notifier.send(DOWN, session)
    message = receiver.received[0].json()["message"]
    assert expected in message
    assert "<script>" not in message


# --- through the daemon -----------------------------------------------------------------

# A server that answers with a malformed status line: its bytes reach the error message.
EVIL_STATUS = (
    b"HTTP/1.1 [click](https://evil.example/) @everyone @here <@123> <script>x</script> "
    b"**bold** `code`\r\n\r\n"
)


async def test_daemon_notifications_from_a_hostile_server_are_inert(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(EVIL_STATUS)
        await writer.drain()
        writer.close()

    evil = await asyncio.start_server(answer, "127.0.0.1", 0)
    receiver = await Receiver().start()
    port = evil.sockets[0].getsockname()[1]
    config = tmp_path / "monitor.yaml"
    config.write_text(f"""\
location: lab
store: {{path: history.db}}
notifiers:
  discord: {{type: discord, url: "{receiver.url}/discord"}}
  slack: {{type: slack, url: "{receiver.url}/slack"}}
  teams: {{type: teams, url: "{receiver.url}/teams"}}
  telegram: {{type: telegram, token: "1:tok", chat_id: 7, api_url: "{receiver.url}"}}
targets:
  - name: site
    url: http://127.0.0.1:{port}/
    interval: 1s
    timeout: 500ms
    down_after: 1
    notifiers: [discord, slack, teams, telegram]
""")
    try:
        async with Daemon(config) as daemon:
            line = await daemon.wait_for_log(r"site DOWN from lab since")
            delivered = await receiver.wait_delivered(4)
    finally:
        await receiver.close()
        evil.close()
        await evil.wait_closed()
    match = re.search(r"since \S+(?: \(outage \d+\))?: (\w+): (.*) \(\d+ failed probes?\)$", line)
    assert match, line
    shown = one_line(match.group(2))  # what the probe made of the server's bytes
    got = {r.path: r.json() for r in delivered}

    description = got["/discord"]["embeds"][0]["description"]
    assert f"Cause: {match.group(1)}: {markdown(shown)}\n" in description
    outside = re.sub(r"https?://[^\s()\\]+", "", description)
    assert not re.search(r"(?<!\\)[\[\]()<>*`]", outside)
    assert not re.search(r"@(everyone|here)", description)

    slack_blocks = got["/slack"]["blocks"]
    assert {block["text"]["type"] for block in slack_blocks} == {"plain_text"}
    assert shown in slack_blocks[1]["text"]["text"]
    assert not re.search(r"[<>]", got["/slack"]["text"])

    teams = got["/teams"]["attachments"][0]["content"]["body"]
    assert [block["type"] for block in teams] == ["RichTextBlock", "RichTextBlock"]
    assert shown in teams[1]["inlines"][0]["text"]

    telegram = got["/bot1:tok/sendMessage"]["text"]
    assert html(shown) in telegram
    assert re.findall(r"<[^>]*>", telegram) == ["<b>", "</b>"]
    assert not re.search(r"@\w", telegram)
