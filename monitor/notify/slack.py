"""Slack incoming webhook: `{"text": ...}` in Slack's mrkdwn, title in bold.

Settings: `url` (required: the webhook URL, a secret), `timeout`, `templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel


def escape(text: str) -> str:
    """Slack's three control characters; anything else is shown as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier(Channel):
    type = "slack"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.url: str = settings.url("url")
        self.add_secrets(url_secrets(self.url))

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        text = f"*{escape(rendered.title)}*\n{escape(rendered.text)}"
        await self.post(session, self.url, json_body={"text": text})
