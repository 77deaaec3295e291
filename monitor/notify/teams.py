"""Microsoft Teams through a Power Automate workflow webhook, as an Adaptive Card.

The body is the shape the "Post to a channel when a webhook request is received" workflow
template expects: a `message` with one Adaptive Card attachment (title and text blocks).
Settings: `url` (required: the workflow URL, a secret: it carries a signature), `timeout`,
`templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel

COLOURS = {"down": "Attention", "up": "Good", "reminder": "Warning", "test": "Accent"}


def card(title: str, text: str, colour: str) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": title,
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": colour,
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": text, "wrap": True},
                    ],
                },
            }
        ],
    }


class TeamsNotifier(Channel):
    type = "teams"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.url: str = settings.url("url")
        self.add_secrets(url_secrets(self.url))

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        colour = COLOURS.get(message.kind, "Default")
        await self.post(session, self.url, json_body=card(rendered.title, rendered.text, colour))
