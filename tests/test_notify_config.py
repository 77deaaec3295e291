"""Building notifiers from config: exact errors that name the setting and never its value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from monitor.notify.base import Message, redact, url_secrets
from monitor.notify.messages import Templates, format_duration, notify_test_message
from monitor.notify.registry import build_notifier
from monitor.timefmt import parse_duration

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX"


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        (
            "sms",
            {},
            "notifiers.ops.type: unknown notifier type 'sms' (known: webhook, slack, "
            "discord, teams, telegram, ntfy, pagerduty, email, alertmanager, apprise)",
        ),
        ("slack", {}, "notifiers.ops.url: required"),
        (
            "slack",
            {"url": "ftp://x/services/T000/B000/XXXXXXXXXXXX"},
            "notifiers.ops.url: must be an http:// or https:// URL",
        ),
        ("slack", {"url": HOOK, "channel": "#ops"}, "notifiers.ops.channel: unknown setting"),
        (
            "slack",
            {"url": HOOK, "timeout": "forever"},
            "notifiers.ops.timeout: must be a duration like 10s",
        ),
        ("slack", {"url": HOOK, "timeout": 0}, "notifiers.ops.timeout: must be more than zero"),
        (
            "webhook",
            {"url": HOOK, "headers": ["x"]},
            "notifiers.ops.headers: must be a mapping of strings",
        ),
        ("telegram", {"chat_id": 1}, "notifiers.ops.token: required"),
        (
            "telegram",
            {"token": "12/34", "chat_id": 1},
            "notifiers.ops.token: does not look like a bot token (123456:ABC...)",
        ),
        ("ntfy", {"topic": "a/b"}, "notifiers.ops.topic: must not contain /"),
        (
            "ntfy",
            {"topic": "t", "priority": "max"},
            "notifiers.ops.priority: must be one of min, low, default, high, urgent",
        ),
        (
            "ntfy",
            {"topic": "t", "username": "u"},
            "notifiers.ops.password: username and password go together",
        ),
        (
            "pagerduty",
            {"routing_key": "k", "severity": "fatal"},
            "notifiers.ops.severity: must be one of critical, error, warning, info",
        ),
        ("email", {"host": "h", "from": "a@b.c"}, "notifiers.ops.to: required"),
        (
            "email",
            {"host": "h", "from": "a@b.c", "to": ["ops"]},
            "notifiers.ops.to: must be an email address",
        ),
        (
            "email",
            {"host": "h", "from": "a@b.c", "to": "d@e.f", "security": "ssl"},
            "notifiers.ops.security: must be one of starttls, tls, none",
        ),
        (
            "email",
            {"host": "h", "from": "a@b.c", "to": "d@e.f", "port": "smtp"},
            "notifiers.ops.port: must be a port number",
        ),
        (
            "email",
            {"host": "h", "from": "a@b.c", "to": "d@e.f", "security": "none",
             "username": "u", "password": "p"},
            "notifiers.ops.password: would be sent without TLS (security: none); use security: "
            "starttls or tls, or set allow_plaintext_auth: true if the network path is trusted",
        ),
        (
            "email",
            {"host": "h", "from": "a@b.c", "to": "d@e.f", "allow_plaintext_auth": "yes"},
            "notifiers.ops.allow_plaintext_auth: must be true or false",
        ),
        (
            "webhook",
            {"url": HOOK, "headers": {"X-Team": "ops\r\nX-Admin: yes"}},
            "notifiers.ops.headers.X-Team: must not contain a line break",
        ),
        (
            "webhook",
            {"url": HOOK, "headers": {"Bad Name": "x"}},
            "notifiers.ops.headers.Bad Name: not a valid HTTP header name",
        ),
        (
            "ntfy",
            {"topic": "t", "tags": ["ok", "a\nb"]},
            "notifiers.ops.tags: a tag must be printable and without commas",
        ),
        (
            "alertmanager",
            {"url": "http://am:9093", "bearer_token": "t", "username": "u", "password": "p"},
            "notifiers.ops.bearer_token: use either bearer_token or username and password",
        ),
        (
            "apprise",
            {"urls": []},
            "notifiers.ops.urls: must be a string or a non-empty list of strings",
        ),
        (
            "apprise",
            {"urls": ["json://127.0.0.1/", "nosuchscheme://s3cret@host/"]},
            "notifiers.ops.urls[1]: not a valid Apprise URL",
        ),
        (
            "slack",
            {"url": HOOK, "templates": {"sideways": "x"}},
            "notifiers.ops.templates.sideways: unknown message kind (use down, up, reminder, test)",
        ),
        (
            "slack",
            {"url": HOOK, "templates": {"down": "$password"}},
            "notifiers.ops.templates.down: unknown variable $password (known: $target, $location, "
            "$cause, $error, $since, $duration, $url, $kind)",
        ),
        (
            "slack",
            {"url": HOOK, "templates": {"down": "${target.__class__}"}},
            "notifiers.ops.templates.down: invalid placeholder (write $$ for a dollar)",
        ),
        (
            "slack",
            {"url": HOOK, "templates": {"up": "costs $5"}},
            "notifiers.ops.templates.up: invalid placeholder (write $$ for a dollar)",
        ),
        (
            "slack",
            {"url": HOOK, "templates": "down: x"},
            "notifiers.ops.templates: must be a mapping of message kind to text",
        ),
    ],
)
def test_invalid_settings(kind, settings, message):
    with pytest.raises(ValueError) as caught:
        build_notifier("ops", kind, settings)
    assert str(caught.value) == message


def test_redact_and_url_secrets():
    secrets = url_secrets("https://user:pa55@h.example/services/T000/B000/XYZ?token=abc")
    text = "POST https://user:pa55@h.example/services/T000/B000/XYZ?token=abc failed; token=abc"
    assert redact(text, secrets) == "POST *** failed; ***"
    assert redact("services/T000/B000/XYZ and pa55", secrets) == "*** and ***"
    assert url_secrets("https://h.example/hook") == ("https://h.example/hook",)  # short path


def test_parse_duration():
    assert [parse_duration(v) for v in (5, 2.5, "90s", "5m", "1h30m", "2d", "250ms", "30")] == [
        5.0,
        2.5,
        90.0,
        300.0,
        5400.0,
        172800.0,
        0.25,
        30.0,
    ]
    for bad in ("", "h", "1x", True, -1, None):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_format_duration():
    assert [format_duration(s) for s in (0, 45, 750, 3600, 3900, 2 * 86400 + 4 * 3600 + 5)] == [
        "0s",
        "45s",
        "12m 30s",
        "1h",
        "1h 5m",
        "2d 4h",
    ]
    assert format_duration(None) == "unknown"


def test_default_texts():
    down = Message(
        "down", "1:down", "rt", "msk", "https://rt.com/", "dns", "no such host", 0.0, None, 1
    )
    templates = Templates()
    rendered = templates.render(down)
    assert rendered.title == "DOWN: rt from msk"
    assert rendered.text == (
        "rt is down from msk since 1970-01-01 00:00:00 UTC.\nCause: dns: no such host\n"
        "https://rt.com/"
    )
    reminder = templates.render(
        Message(
            "reminder",
            "1:reminder:1",
            "rt",
            "msk",
            "https://rt.com/",
            "dns",
            "no such host",
            0.0,
            5400.0,
            1,
        )
    )
    assert reminder.title == "STILL DOWN: rt from msk"
    assert reminder.text.startswith("rt is still down from msk: 1h 30m so far (since 1970")
    test = templates.render(notify_test_message("msk", 0.0, "ops"))
    assert test.title == "TEST: monitor notification from msk"


def test_message_round_trips_through_a_dict():
    message = notify_test_message("msk", 12.0, "ops")
    assert Message.from_dict(message.to_dict()) == message


def test_notify_sits_below_config() -> None:
    """config builds notifiers to validate them, so monitor.notify must never import config
    (or anything above it): that would be an import cycle."""
    code = ("import sys, monitor.notify.registry, monitor.notify.maintenance, "
            "monitor.notify.sender; print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    ours = {name for name in loaded if name.startswith("monitor.")}
    assert {n for n in ours if not n.startswith("monitor.notify")} == {"monitor.timefmt"}
