"""Apprise URLs: the long tail of services through the `apprise` library.

Settings: `urls` (required: one Apprise URL or a list; each is a secret), `timeout`,
`templates`. Apprise says only "failed", so every failure is temporary.

Imports: stdlib, aiohttp (for the interface), apprise, monitor.notify.
"""

from __future__ import annotations

import asyncio
import warnings

import aiohttp
import apprise

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel

NOTIFY_TYPES = {
    "down": apprise.NotifyType.FAILURE,
    "up": apprise.NotifyType.SUCCESS,
    "reminder": apprise.NotifyType.WARNING,
    "test": apprise.NotifyType.INFO,
}


class AppriseNotifier(Channel):
    type = "apprise"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.urls: tuple[str, ...] = settings.text_list("urls")
        for url in self.urls:
            self.add_secrets(url_secrets(url))
        # Keep Apprise's persistent store in memory: the monitor owns its state on disk.
        self.apprise = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        for i, url in enumerate(self.urls):
            with warnings.catch_warnings():
                # Apprise loads its plugins on first use, and one imports the deprecated
                # `imghdr` (Python 3.11, 3.12): a warning about Apprise's code, not ours.
                warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
                added = self.apprise.add(url)
            if not added:
                raise ValueError(f"{settings.where}.urls[{i}]: not a valid Apprise URL")

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        rendered = self.render(message)
        try:
            async with asyncio.timeout(self.timeout):
                ok = await self.apprise.async_notify(
                    body=rendered.text,
                    title=rendered.title,
                    # Plain text: Apprise escapes it for services that take markdown or HTML.
                    body_format=apprise.NotifyFormat.TEXT,
                    notify_type=NOTIFY_TYPES.get(message.kind, apprise.NotifyType.INFO),
                )
        except TimeoutError:
            raise self.fail(f"timed out after {self.timeout:g}s", permanent=False) from None
        if not ok:
            raise self.fail("delivery failed (see the apprise log)", permanent=False)
