"""ntfy: `POST {server}/{topic}` with the text as body and title, priority and tags headers.

Settings: `topic` (required; on a public server the topic name is the only protection, so
it is treated as a secret), `server` (default https://ntfy.sh), `token` (bearer) or
`username` + `password`, `priority` for down and reminder messages (min, low, default,
high, urgent; default high; recoveries and tests use default), `tags` (extra tags),
`timeout`, `templates`. A non-ASCII title is sent RFC 2047 encoded, which ntfy decodes.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

from email.header import Header
from urllib.parse import quote

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel

PRIORITIES = ("min", "low", "default", "high", "urgent")
TAGS = {
    "down": "rotating_light",
    "up": "white_check_mark",
    "reminder": "warning",
    "test": "test_tube",
}


def header_value(text: str) -> str:
    """HTTP headers are Latin-1 at best: anything beyond ASCII goes RFC 2047 encoded."""
    text = " ".join(text.split())
    if text.isascii():
        return text
    return Header(text, "utf-8").encode(maxlinelen=10_000)


class NtfyNotifier(Channel):
    type = "ntfy"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.server: str = settings.url("server", "https://ntfy.sh").rstrip("/")
        self.topic: str = settings.text("topic")
        if "/" in self.topic:
            raise settings.error("topic", "must not contain /")
        self.token: str | None = settings.text("token", None)
        self.username: str | None = settings.text("username", None)
        self.password: str | None = settings.text("password", None)
        if (self.username is None) != (self.password is None):
            raise settings.error("password", "username and password go together")
        if self.token and self.username:
            raise settings.error("token", "use either token or username and password")
        self.priority = settings.choice("priority", PRIORITIES, "high")
        self.tags: tuple[str, ...] = settings.text_list("tags", ())
        for tag in self.tags:
            if "," in tag or not tag.isprintable():  # one header: commas separate tags
                raise settings.error("tags", "a tag must be printable and without commas")
        self.add_secrets(url_secrets(self.server), self.topic, self.token, self.password)

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        urgent = message.kind in ("down", "reminder")
        headers = {
            "Title": header_value(rendered.title),
            "Priority": self.priority if urgent else "default",
            "Tags": ",".join((TAGS.get(message.kind, "bell"), *self.tags)),
            "Content-Type": "text/plain; charset=utf-8",
        }
        if message.url.startswith(("http://", "https://")):
            headers["Click"] = message.url
        auth = None
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.username and self.password:
            auth = aiohttp.BasicAuth(self.username, self.password)
        url = f"{self.server}/{quote(self.topic, safe='')}"
        await self.post(session, url, data=rendered.text.encode(), headers=headers, auth=auth)
