"""Each channel's request reaches a local stand-in for its service with the right content."""

from __future__ import annotations

import email.header
import hashlib
import hmac
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import trustme
from receivers import Receiver, Reply, SmtpReceiver

from monitor.notify.base import Message, NotifyError
from monitor.notify.channel import parse_retry_after
from monitor.notify.messages import notify_test_message
from monitor.notify.registry import build_notifier

SINCE = datetime(2026, 3, 1, 2, 0, tzinfo=UTC).timestamp()
DOWN = Message(
    kind="down",
    key="42:down",
    target="rt",
    location="msk",
    url="https://rt.com/",
    cause="timeout",
    error="timed out after 10s in processing",
    since=SINCE,
    duration=None,
    outage_id=42,
)
UP = replace(DOWN, kind="up", key="42:up", duration=750.0)
REMINDER = replace(DOWN, kind="reminder", key="42:reminder:1", duration=3600.0)
TOKEN = "123456:AAF-secret_token_value"


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_webhook_documented_body_with_signature(receiver, session):
    url = f"{receiver.url}/hooks/k3y-0f-the-webhook-path"
    notifier = build_notifier("ops", "webhook", {"url": url, "secret": "s3cret"})
    await notifier.send(DOWN, session)
    await notifier.send(UP, session)

    down, up = receiver.received
    assert down.path == "/hooks/k3y-0f-the-webhook-path"
    assert down.json() == {
        "version": 1,
        "kind": "down",
        "key": "42:down",
        "target": "rt",
        "location": "msk",
        "url": "https://rt.com/",
        "cause": "timeout",
        "error": "timed out after 10s in processing",
        "since": "2026-03-01T02:00:00.000Z",
        "since_ts": SINCE,
        "duration": None,
        "outage_id": 42,
        "title": "DOWN: rt from msk",
        "text": "rt is down from msk since 2026-03-01 02:00:00 UTC.\n"
        "Cause: timeout: timed out after 10s in processing\nhttps://rt.com/",
    }
    expected = hmac.new(b"s3cret", down.body, hashlib.sha256).hexdigest()
    assert down.headers["X-Monitor-Signature"] == f"sha256={expected}"
    assert down.headers["X-Monitor-Key"] == "42:down"
    assert up.json()["kind"] == "up"
    assert up.json()["duration"] == 750.0
    assert up.json()["text"].startswith("rt is up again from msk after 12m 30s (down since")


async def test_webhook_without_secret_is_unsigned_and_sends_extra_headers(receiver, session):
    notifier = build_notifier(
        "ops", "webhook", {"url": receiver.url, "headers": {"Authorization": "Bearer abc"}}
    )
    await notifier.send(DOWN, session)
    (got,) = receiver.received
    assert "X-Monitor-Signature" not in got.headers
    assert got.headers["Authorization"] == "Bearer abc"


async def test_slack(receiver, session):
    notifier = build_notifier("chat", "slack", {"url": f"{receiver.url}/services/T0/B0/XXXX"})
    await notifier.send(replace(DOWN, error="got <html> & more"), session)
    await notifier.send(UP, session)
    down, up = receiver.received
    assert down.path == "/services/T0/B0/XXXX"
    header, section = down.json()["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "DOWN: rt from msk"}}
    assert section["type"] == "section"
    assert section["text"]["type"] == "plain_text"
    assert section["text"]["text"].startswith("rt is down from msk since")
    assert "got <html> & more" in section["text"]["text"]  # plain text: shown as written
    # The notification fallback is mrkdwn: its control characters are escaped.
    assert down.json()["text"].startswith("DOWN: rt from msk\nrt is down from msk since")
    assert "got &lt;html&gt; &amp; more" in down.json()["text"]
    assert up.json()["blocks"][1]["text"]["text"].startswith("rt is up again from msk after 12m")


async def test_discord(receiver, session):
    notifier = build_notifier("chat", "discord", {"url": f"{receiver.url}/api/webhooks/1/tok"})
    await notifier.send(DOWN, session)
    await notifier.send(UP, session)
    down, up = (r.json() for r in receiver.received)
    assert down["allowed_mentions"] == {"parse": []}
    assert down["embeds"][0]["title"] == "DOWN: rt from msk"
    assert "Cause: timeout: timed out after 10s" in down["embeds"][0]["description"]
    assert down["embeds"][0]["color"] == 0xD32F2F
    assert up["embeds"][0]["title"] == "UP: rt from msk"
    assert up["embeds"][0]["color"] == 0x388E3C


async def test_teams_adaptive_card(receiver, session):
    notifier = build_notifier("chat", "teams", {"url": f"{receiver.url}/workflows/x?sig=abc"})
    await notifier.send(DOWN, session)
    await notifier.send(UP, session)
    down, up = (r.json() for r in receiver.received)
    assert down["type"] == "message"
    attachment = down["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"
    (title,), (text,) = (block["inlines"] for block in attachment["content"]["body"])
    assert (title["type"], title["text"], title["color"]) == (
        "TextRun", "DOWN: rt from msk", "Attention"
    )
    assert text["type"] == "TextRun"
    assert "Cause: timeout" in text["text"]
    assert up["attachments"][0]["content"]["body"][0]["inlines"][0]["text"] == "UP: rt from msk"


async def test_telegram(receiver, session):
    notifier = build_notifier(
        "tg", "telegram", {"token": TOKEN, "chat_id": -100123, "api_url": receiver.url}
    )
    await notifier.send(replace(DOWN, error="status <b>500</b>"), session)
    await notifier.send(UP, session)
    down, up = receiver.received
    assert down.path == f"/bot{TOKEN}/sendMessage"
    assert down.json()["chat_id"] == "-100123"
    assert down.json()["parse_mode"] == "HTML"
    assert down.json()["text"].startswith("<b>DOWN: rt from msk</b>\nrt is down from msk")
    assert "status &lt;b&gt;500&lt;/b&gt;" in down.json()["text"]
    assert up.json()["text"].startswith("<b>UP: rt from msk</b>\nrt is up again")


async def test_ntfy_headers_and_body(receiver, session):
    notifier = build_notifier(
        "phone",
        "ntfy",
        {"server": receiver.url, "topic": "ops-alerts", "token": "tk_secret", "tags": ["prod"]},
    )
    await notifier.send(DOWN, session)
    await notifier.send(UP, session)
    down, up = receiver.received
    assert down.path == "/ops-alerts"
    assert down.headers["Title"] == "DOWN: rt from msk"
    assert down.headers["Priority"] == "high"
    assert down.headers["Tags"] == "rotating_light,prod"
    assert down.headers["Click"] == "https://rt.com/"
    assert down.headers["Authorization"] == "Bearer tk_secret"
    assert down.text.startswith("rt is down from msk since 2026-03-01 02:00:00 UTC.")
    assert up.headers["Priority"] == "default"
    assert up.headers["Tags"] == "white_check_mark,prod"


async def test_ntfy_non_ascii_title_is_rfc2047_encoded(receiver, session):
    notifier = build_notifier("phone", "ntfy", {"server": receiver.url, "topic": "t"})
    await notifier.send(replace(DOWN, location="Москва"), session)
    (got,) = receiver.received
    ((raw, charset),) = email.header.decode_header(got.headers["Title"])
    assert raw.decode(charset) == "DOWN: rt from Москва"


async def test_pagerduty_trigger_then_resolve_with_one_dedup_key(receiver, session):
    notifier = build_notifier(
        "pd", "pagerduty", {"routing_key": "R0UTING", "events_url": f"{receiver.url}/v2/enqueue"}
    )
    await notifier.send(DOWN, session)
    await notifier.send(REMINDER, session)  # PagerDuty escalates by itself: nothing sent
    await notifier.send(UP, session)
    trigger, resolve = (r.json() for r in receiver.received)
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == "R0UTING"
    assert trigger["dedup_key"] == "monitor/msk/rt/42"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "msk"
    assert trigger["payload"]["component"] == "rt"
    assert trigger["payload"]["class"] == "timeout"
    assert trigger["payload"]["timestamp"] == "2026-03-01T02:00:00.000Z"
    assert trigger["payload"]["summary"].startswith("DOWN: rt from msk: timed out")
    assert resolve == {
        "routing_key": "R0UTING",
        "event_action": "resolve",
        "dedup_key": "monitor/msk/rt/42",
    }


async def test_alertmanager_fires_then_resolves_with_ends_at(receiver, session):
    notifier = build_notifier(
        "am", "alertmanager", {"url": receiver.url, "labels": {"team": "web"}}
    )
    await notifier.send(DOWN, session)
    await notifier.send(UP, session)
    down, up = receiver.received
    assert down.path == up.path == "/api/v2/alerts"
    (firing,) = down.json()
    assert firing["labels"] == {
        "team": "web",
        "alertname": "MonitorTargetDown",
        "target": "rt",
        "location": "msk",
        "severity": "critical",
    }
    assert firing["startsAt"] == "2026-03-01T02:00:00.000Z"
    assert firing["endsAt"] == "2026-03-02T02:00:00.000Z"  # held for 24h unless refreshed
    assert firing["generatorURL"] == "https://rt.com/"
    assert firing["annotations"]["summary"] == "DOWN: rt from msk"
    (resolved,) = up.json()
    assert resolved["labels"] == firing["labels"]
    assert resolved["endsAt"] == "2026-03-01T02:12:30.000Z"


async def test_apprise_json_url(receiver, session):
    port = receiver.url.rsplit(":", 1)[1]
    notifier = build_notifier("any", "apprise", {"urls": [f"json://127.0.0.1:{port}/apprise"]})
    await notifier.send(DOWN, session)
    (got,) = receiver.received
    assert got.path == "/apprise"
    assert got.json()["title"] == "DOWN: rt from msk"
    assert got.json()["message"].startswith("rt is down from msk since")
    assert got.json()["type"] == "failure"


async def test_apprise_failure_is_temporary(receiver, session):
    receiver.fail(500, times=10)
    port = receiver.url.rsplit(":", 1)[1]
    notifier = build_notifier("any", "apprise", {"urls": f"json://127.0.0.1:{port}/"})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert caught.value.permanent is False
    assert str(caught.value) == "apprise: delivery failed (see the apprise log)"


# --- templates ------------------------------------------------------------------------


async def test_templates_override_text_per_kind(receiver, session):
    notifier = build_notifier(
        "chat",
        "slack",
        {
            "url": receiver.url,
            "templates": {"down": "$target@$location: $cause ($error) since $since, $$5"},
        },
    )
    await notifier.send(DOWN, session)
    await notifier.send(UP, session)
    down, up = (r.json()["blocks"][1]["text"]["text"] for r in receiver.received)
    assert down == (
        "rt@msk: timeout (timed out after 10s in processing) since 2026-03-01 02:00:00 UTC, $5"
    )
    assert up.startswith("rt is up again")  # no template: the default


async def test_template_values_are_not_expanded_again(receiver, session):
    notifier = build_notifier(
        "chat", "slack", {"url": receiver.url, "templates": {"down": "$error"}}
    )
    await notifier.send(replace(DOWN, error="${target} $url"), session)
    assert receiver.received[0].json()["text"].endswith("\n${target} $url")


# --- errors and their classification --------------------------------------------------


async def test_server_error_is_temporary(receiver, session):
    receiver.fail(500, body="boom")
    notifier = build_notifier("chat", "slack", {"url": f"{receiver.url}/services/T0/B0/X"})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert str(caught.value) == "slack: HTTP 500 Internal Server Error: boom"
    assert (caught.value.permanent, caught.value.retry_after) == (False, None)


async def test_429_carries_retry_after_seconds(receiver, session):
    receiver.fail(429, headers={"Retry-After": "7"})
    notifier = build_notifier("chat", "discord", {"url": receiver.url})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert str(caught.value) == "discord: HTTP 429 Too Many Requests"
    assert (caught.value.permanent, caught.value.retry_after) == (False, 7.0)


async def test_429_retry_after_from_telegram_body(receiver, session):
    receiver.fail(
        429,
        body='{"ok":false,"description":"Too Many Requests: retry after 3",'
        '"parameters":{"retry_after":3}}',
    )
    notifier = build_notifier(
        "tg", "telegram", {"token": TOKEN, "chat_id": 1, "api_url": receiver.url}
    )
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert caught.value.retry_after == 3.0
    assert (
        str(caught.value)
        == "telegram: HTTP 429 Too Many Requests: Too Many Requests: retry after 3"
    )


def test_retry_after_http_date():
    now = datetime(2026, 3, 1, 2, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Sun, 01 Mar 2026 02:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 01:00:00 GMT", now) == 0.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def test_503_with_http_date(receiver, session):
    receiver.fail(503, headers={"Retry-After": "Wed, 01 Jan 2098 00:00:00 GMT"})
    notifier = build_notifier("chat", "slack", {"url": receiver.url})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert caught.value.permanent is False
    assert caught.value.retry_after is not None and caught.value.retry_after > 86400 * 365


async def test_bad_request_is_permanent_with_reason(receiver, session):
    receiver.fail(400, body="invalid_payload")
    notifier = build_notifier("chat", "slack", {"url": receiver.url})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert str(caught.value) == "slack: HTTP 400 Bad Request: invalid_payload"
    assert caught.value.permanent is True


async def test_telegram_401_hides_token_even_when_echoed(receiver, session):
    receiver.fail(401, body='{"ok":false,"error_code":401,"description":"Unauthorized"}')
    receiver.fail(404, body=f"no such bot {TOKEN} at /bot{TOKEN}/sendMessage")
    notifier = build_notifier(
        "tg", "telegram", {"token": TOKEN, "chat_id": 1, "api_url": receiver.url}
    )
    with pytest.raises(NotifyError) as first:
        await notifier.send(DOWN, session)
    with pytest.raises(NotifyError) as second:
        await notifier.send(DOWN, session)
    assert str(first.value) == "telegram: HTTP 401 Unauthorized"
    assert (
        str(second.value) == "telegram: HTTP 404 Not Found: no such bot *** at /bot***/sendMessage"
    )
    assert TOKEN not in repr(notifier)


async def test_hanging_receiver_times_out_as_temporary(receiver, session):
    receiver.plan(Reply(hang=True))
    notifier = build_notifier("chat", "slack", {"url": receiver.url, "timeout": 0.2})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert str(caught.value) == "slack: timed out after 0.2s"
    assert caught.value.permanent is False


async def test_connection_refused_is_temporary(session):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        notifier = build_notifier("chat", "slack", {"url": f"http://127.0.0.1:{port}/x"})
        with pytest.raises(NotifyError) as caught:
            await notifier.send(DOWN, session)
    assert str(caught.value) == f"slack: cannot connect to 127.0.0.1:{port}: Connection refused"
    assert caught.value.permanent is False


SECRET_SETTINGS = [
    ("webhook", {"url": "https://h.example/hook/0123456789abcdefXYZ", "secret": "hm4c-secret"}),
    ("slack", {"url": "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX"}),
    ("discord", {"url": "https://discord.com/api/webhooks/1/tokentokentoken"}),
    ("teams", {"url": "https://prod.logic.azure.com/workflows/1?sig=SIGNATURE123"}),
    ("telegram", {"token": TOKEN, "chat_id": 1}),
    ("ntfy", {"topic": "secret-topic-name", "username": "u", "password": "ntfy-pass"}),
    ("pagerduty", {"routing_key": "R0UTINGKEY"}),
    (
        "email",
        {
            "host": "smtp.example",
            "username": "u",
            "password": "smtp-pass",
            "from": "a@example.org",
            "to": "b@example.org",
        },
    ),
    ("alertmanager", {"url": "https://am.example", "bearer_token": "am-bearer"}),
    ("apprise", {"urls": ["json://user:apprise-pass@127.0.0.1/"]}),
]


@pytest.mark.parametrize(("kind", "settings"), SECRET_SETTINGS, ids=[k for k, _ in SECRET_SETTINGS])
def test_repr_has_no_secrets(kind, settings):
    notifier = build_notifier("ops", kind, settings)
    assert repr(notifier).startswith("<") and "'ops'" in repr(notifier)
    secret_values = [
        v for k, v in settings.items() if k not in ("chat_id", "from", "to", "username", "host")
    ]
    for value in secret_values:
        for secret in [value] if isinstance(value, str) else value:
            assert secret not in repr(notifier)
            assert secret in notifier.secrets or any(secret in s for s in notifier.secrets)


# --- email over a real SMTP server ---------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def email_settings(smtp: SmtpReceiver, **extra: object) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": smtp.port,
        "from": "monitor@example.org",
        "to": ["ops@example.org", "oncall@example.org"],
        **extra,
    }


async def test_email_plain_with_auth(session):
    smtp = await SmtpReceiver(users={"alice": "pw-secret"}).start()
    try:
        notifier = build_notifier(
            "mail",
            "email",
            email_settings(
                smtp,
                security="none",
                username="alice",
                password="pw-secret",
                allow_plaintext_auth=True,  # a test server on loopback
            ),
        )
        await notifier.send(DOWN, session)
        await notifier.send(UP, session)
        down, up = await smtp.wait_for(2)
    finally:
        await smtp.close()
    assert down.login == "alice"
    assert down.mail_from == "monitor@example.org"
    assert down.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    assert down.message["Subject"] == "DOWN: rt from msk"
    assert down.message["X-Monitor-Key"] == "42:down"
    assert down.message.get_content().startswith(
        "rt is down from msk since 2026-03-01 02:00:00 UTC."
    )
    assert up.message["Subject"] == "UP: rt from msk"
    assert "after 12m 30s" in up.message.get_content()


async def test_email_wrong_password_is_permanent_and_hidden(session):
    smtp = await SmtpReceiver(users={"alice": "right"}).start()
    try:
        notifier = build_notifier(
            "mail",
            "email",
            email_settings(
                smtp,
                security="none",
                username="alice",
                password="wr0ng-pass",
                allow_plaintext_auth=True,
            ),
        )
        with pytest.raises(NotifyError) as caught:
            await notifier.send(DOWN, session)
    finally:
        await smtp.close()
    assert caught.value.permanent is True
    assert str(caught.value).startswith("email: authentication failed: 535")
    assert "wr0ng-pass" not in str(caught.value)


async def test_email_starttls(session, server_context, ca_file):
    smtp = await SmtpReceiver(
        tls="starttls", context=server_context, users={"alice": "pw-secret"}
    ).start()
    try:
        notifier = build_notifier(
            "mail",
            "email",
            email_settings(
                smtp, security="starttls", username="alice", password="pw-secret", ca_file=ca_file
            ),
        )
        await notifier.send(DOWN, session)
        (mail,) = await smtp.wait_for(1)
    finally:
        await smtp.close()
    assert mail.tls is True
    assert mail.login == "alice"
    assert mail.message["Subject"] == "DOWN: rt from msk"


async def test_email_implicit_tls(session, server_context, ca_file):
    smtp = await SmtpReceiver(tls="implicit", context=server_context).start()
    try:
        notifier = build_notifier(
            "mail", "email", email_settings(smtp, security="tls", ca_file=ca_file)
        )
        await notifier.send(UP, session)
        (mail,) = await smtp.wait_for(1)
    finally:
        await smtp.close()
    assert mail.message["Subject"] == "UP: rt from msk"


async def test_email_untrusted_certificate_is_temporary(session, server_context):
    smtp = await SmtpReceiver(tls="implicit", context=server_context).start()
    try:
        notifier = build_notifier("mail", "email", email_settings(smtp, security="tls"))
        with pytest.raises(NotifyError) as caught:
            await notifier.send(DOWN, session)
    finally:
        await smtp.close()
    assert caught.value.permanent is False
    assert str(caught.value).startswith("email: ")


async def test_apprise_failure_logs_no_credentials(receiver, session, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.fail(500, times=10, body="denied")
    port = receiver.url.rsplit(":", 1)[1]
    url = f"json://user:apprise-pass@127.0.0.1:{port}/path"
    notifier = build_notifier("any", "apprise", {"urls": url})
    with pytest.raises(NotifyError) as caught:
        await notifier.send(DOWN, session)
    assert receiver.received[0].headers["Authorization"].startswith("Basic ")
    assert "apprise-pass" not in caplog.text + str(caught.value) + repr(notifier)


async def test_pagerduty_test_message_triggers_and_resolves(receiver, session):
    notifier = build_notifier(
        "pd", "pagerduty", {"routing_key": "R0UTING", "events_url": receiver.url}
    )
    await notifier.send(notify_test_message("msk", SINCE, "pd"), session)
    trigger, resolve = (r.json() for r in receiver.received)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["payload"]["severity"] == "info"
    assert trigger["dedup_key"] == resolve["dedup_key"]
