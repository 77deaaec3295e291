"""Slack incoming webhook: Block Kit with the title as a header and the text as plain text.

Slack's mrkdwn has no way to escape `*`, `_` or `~`, so the text (whose error message comes
from the probed server) goes in `plain_text` objects, which Slack never formats or links.
The top-level `text` is the notification fallback, with Slack's control characters escaped
so it cannot mention `<!channel>` or hide a link.
Settings: `url` (required: the webhook URL, a secret), `timeout`, `templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel
from monitor.notify.markup import slack

MAX_HEADER = 150  # Slack's limits for a header and a section text
MAX_SECTION = 3000


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackNotifier(Channel):
    type = "slack"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.url: str = settings.url("url")
        self.add_secrets(url_secrets(self.url))

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        payload = {
            "text": f"{slack(rendered.title)}\n{slack(rendered.text)}",
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": cut(rendered.title, MAX_HEADER)},
                },
                {
                    "type": "section",
                    "text": {
                        "type": "plain_text",
                        "text": cut(rendered.text, MAX_SECTION),
                        "emoji": True,  # :red_circle: in a template; a shortcode is not markup
                    },
                },
            ],
        }
        await self.post(session, self.url, json_body=payload)
