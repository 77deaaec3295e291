"""PagerDuty Events API v2: trigger on down, resolve on up, one dedup key per outage.

The dedup key is `monitor/{location}/{target}/{outage_id}`, so the resolve closes exactly
the incident its trigger opened, and a re-sent trigger does not open a second one.
Reminders send nothing: PagerDuty escalates open incidents itself. A test triggers and
at once resolves an incident of severity info.
Settings: `routing_key` (required, secret), `severity` (critical, error, warning, info;
default critical), `events_url` (default https://events.pagerduty.com/v2/enqueue),
`timeout`, `templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from monitor.notify.base import Message, Settings
from monitor.notify.channel import Channel
from monitor.notify.messages import iso_time, one_line

SEVERITIES = ("critical", "error", "warning", "info")


def dedup_key(message: Message) -> str:
    outage = message.outage_id if message.outage_id is not None else message.key
    return f"monitor/{message.location}/{message.target}/{outage}"


class PagerDutyNotifier(Channel):
    type = "pagerduty"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.routing_key: str = settings.text("routing_key")
        self.severity = settings.choice("severity", SEVERITIES, "critical")
        self.events_url: str = settings.url("events_url", "https://events.pagerduty.com/v2/enqueue")
        self.add_secrets(self.routing_key)

    def trigger(self, message: Message, severity: str) -> dict[str, Any]:
        rendered = self.render(message)
        event: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key(message),
            "payload": {
                "summary": f"{rendered.title}: {one_line(message.error)}"[:1024],
                "source": message.location,
                "severity": severity,
                "timestamp": iso_time(message.since),
                "component": message.target,
                "class": message.cause or "unknown",
                "custom_details": {"text": rendered.text, "url": message.url},
            },
        }
        if message.url.startswith(("http://", "https://")):
            event["links"] = [{"href": message.url, "text": message.target}]
        return event

    def resolve(self, message: Message) -> dict[str, Any]:
        return {
            "routing_key": self.routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key(message),
        }

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        if message.kind == "down":
            await self.post(
                session, self.events_url, json_body=self.trigger(message, self.severity)
            )
        elif message.kind == "up":
            await self.post(session, self.events_url, json_body=self.resolve(message))
        elif message.kind == "test":
            await self.post(session, self.events_url, json_body=self.trigger(message, "info"))
            await self.post(session, self.events_url, json_body=self.resolve(message))
