"""Notifier type names → classes, and building notifiers from plain config mappings.

`build_notifier` is both the factory and the validator: a bad setting raises ValueError
with its config path ("notifiers.ops.url: required") and never the value, which may be a
secret.

Imports: stdlib and monitor.notify (one module per channel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.notify.alertmanager import AlertmanagerNotifier
from monitor.notify.apprise import AppriseNotifier
from monitor.notify.base import Notifier, Settings
from monitor.notify.channel import Channel
from monitor.notify.discord import DiscordNotifier
from monitor.notify.email import EmailNotifier
from monitor.notify.ntfy import NtfyNotifier
from monitor.notify.pagerduty import PagerDutyNotifier
from monitor.notify.slack import SlackNotifier
from monitor.notify.teams import TeamsNotifier
from monitor.notify.telegram import TelegramNotifier
from monitor.notify.webhook import WebhookNotifier

TYPES: Mapping[str, type[Channel]] = {
    cls.type: cls
    for cls in (
        WebhookNotifier,
        SlackNotifier,
        DiscordNotifier,
        TeamsNotifier,
        TelegramNotifier,
        NtfyNotifier,
        PagerDutyNotifier,
        EmailNotifier,
        AlertmanagerNotifier,
        AppriseNotifier,
    )
}


def build_notifier(name: str, type: str, settings: Mapping[str, Any]) -> Notifier:
    """One notifier from its settings (a `type` key in them is allowed and ignored)."""
    where = f"notifiers.{name}"
    cls = TYPES.get(type)
    if cls is None:
        raise ValueError(
            f"{where}.type: unknown notifier type {type!r} (known: {', '.join(TYPES)})"
        )
    reader = Settings(where, settings)
    notifier = cls(name, reader)
    reader.finish()
    return notifier
