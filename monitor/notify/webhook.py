"""Generic webhook: a documented JSON body POSTed to any URL, optionally signed.

Settings: `url` (required), `secret` (optional: sign the body), `headers` (optional extra
headers, e.g. Authorization; values of 8 characters or more are treated as secrets),
`timeout`, `templates`.

Request: `POST url`, `Content-Type: application/json`, `X-Monitor-Key: <idempotency key>`
(the same for every retry of one message: receivers can drop duplicates), and with a
secret `X-Monitor-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by secret>`.

Body (`version` changes only if a field changes meaning or goes away):

    {"version": 1, "kind": "down" | "up" | "reminder" | "test", "key": "42:down",
     "target": "rt", "location": "msk", "url": "https://rt.com/",
     "cause": "timeout" | null, "error": "first error message",
     "since": "2026-03-01T02:00:00.000Z", "since_ts": 1772330400.0,
     "duration": 750.0 | null,            # seconds; "up": outage length, "reminder": so far
     "outage_id": 42 | null, "title": "DOWN: rt from msk", "text": "rendered text"}

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel
from monitor.notify.messages import iso_time, one_line

SIGNATURE_HEADER = "X-Monitor-Signature"
KEY_HEADER = "X-Monitor-Key"
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def body(message: Message, title: str, text: str) -> dict[str, object]:
    return {
        "version": 1,
        "kind": message.kind,
        "key": message.key,
        "target": message.target,
        "location": message.location,
        "url": message.url,
        "cause": message.cause,
        "error": one_line(message.error),  # from the probed server: one bounded line
        "since": iso_time(message.since),
        "since_ts": message.since,
        "duration": message.duration,
        "outage_id": message.outage_id,
        "title": title,
        "text": text,
    }


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


class WebhookNotifier(Channel):
    type = "webhook"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.url: str = settings.url("url")
        self.secret: str | None = settings.text("secret", None)
        self.headers = settings.text_map("headers")
        for name, value in self.headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise settings.error(f"headers.{name}", "not a valid HTTP header name")
            if any(c in value for c in "\r\n\0"):  # would smuggle a header of its own
                raise settings.error(f"headers.{name}", "must not contain a line break")
        # Header values long enough to be credentials are secret; "1" or "json" are not,
        # and redacting them would garble every error text.
        credentials = [v for v in self.headers.values() if len(v) >= 8]
        self.add_secrets(url_secrets(self.url), self.secret, credentials)

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        raw = json.dumps(body(message, rendered.title, rendered.text), ensure_ascii=False).encode()
        headers = {**self.headers, "Content-Type": "application/json", KEY_HEADER: message.key}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, raw)
        await self.post(session, self.url, data=raw, headers=headers)
