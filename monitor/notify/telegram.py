"""Telegram bot API: `POST {api_url}/bot<token>/sendMessage` with an HTML-formatted text.

Title and text are HTML-escaped and `@name` mentions broken, so the error message (from the
probed server) cannot add tags, links or mentions; link previews are off.

Settings: `token` (required, secret: it sits in the URL path, so errors never show the
URL), `chat_id` (required), `api_url` (default https://api.telegram.org; tests point it at
a local receiver), `timeout`, `templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

import aiohttp

from monitor.notify.base import Message, Settings
from monitor.notify.channel import Channel
from monitor.notify.markup import html

MAX_TEXT = 3500  # Telegram takes 4096 characters; leave room for the title and escapes


class TelegramNotifier(Channel):
    type = "telegram"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.token: str = settings.text("token")
        self.chat_id: str = settings.text("chat_id")
        self.api_url: str = settings.url("api_url", "https://api.telegram.org").rstrip("/")
        if "/" in self.token or any(c.isspace() for c in self.token):
            raise settings.error("token", "does not look like a bot token (123456:ABC...)")
        self.add_secrets(self.token)

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        # Cut before escaping: a cut inside "&lt;" would make Telegram reject the HTML.
        text = f"<b>{html(rendered.title)}</b>\n{html(rendered.text[:MAX_TEXT])}"
        payload = {
            "chat_id": self.chat_id,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        await self.post(session, f"{self.api_url}/bot{self.token}/sendMessage", json_body=payload)
