"""Microsoft Teams through a Power Automate workflow webhook, as an Adaptive Card.

The body is the shape the "Post to a channel when a webhook request is received" workflow
template expects: a `message` with one Adaptive Card attachment. Title and text are
`TextRun`s of a `RichTextBlock`, which Teams shows as written: no markdown, so the error
message (it comes from the probed server) cannot add links or formatting.
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


def plain(run: dict[str, Any]) -> dict[str, Any]:
    """A block of one text run: Adaptive Cards never apply markdown to a TextRun."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", **run}]}


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
                        plain(
                            {"text": title, "weight": "Bolder", "size": "Medium", "color": colour}
                        ),
                        plain({"text": text}),
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
