"""Discord webhook: one embed (title, text, colour by kind); mentions are disabled.

The text is escaped for Discord's markdown (the error message comes from the probed server:
no masked links, formatting or @everyone from it); the title holds only config names.

Settings: `url` (required: the webhook URL, a secret), `username` (optional), `timeout`,
`templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel
from monitor.notify.markup import markdown

MAX_TEXT = 2000  # escaping at most doubles it: within the 4096 characters of a description
COLOURS = {"down": 0xD32F2F, "up": 0x388E3C, "reminder": 0xF57C00, "test": 0x1976D2}


class DiscordNotifier(Channel):
    type = "discord"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.url: str = settings.url("url")
        self.username: str | None = settings.text("username", None)
        self.add_secrets(url_secrets(self.url))

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        payload: dict[str, Any] = {
            # An error message quoting "@everyone" must not ping a whole server.
            "allowed_mentions": {"parse": []},
            "embeds": [
                {
                    "title": rendered.title[:256],
                    "description": markdown(rendered.text[:MAX_TEXT]),
                    "color": COLOURS.get(message.kind, COLOURS["test"]),
                }
            ],
        }
        if self.username:
            payload["username"] = self.username
        await self.post(session, self.url, json_body=payload)
