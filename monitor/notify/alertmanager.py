"""Alertmanager: `POST {url}/api/v2/alerts` with one alert per target and location.

Labels: alertname=MonitorTargetDown, target, location, severity, plus any static `labels`.
Alertmanager resolves an alert by itself when its `endsAt` passes (default: after
`resolve_timeout`, five minutes), and we do not re-send every few seconds as Prometheus
does. So a down alert carries `endsAt = since + hold` (default 24h, refreshed by each
reminder), and the recovery sends the same labels with `endsAt` set to the end of the
outage, which resolves it. A test fires alertname=MonitorTest for five minutes.
Settings: `url` (required: Alertmanager's base URL), `username` + `password` or
`bearer_token` (secrets), `severity` (default critical), `labels`, `hold`, `timeout`,
`templates`.

Imports: stdlib, aiohttp, monitor.notify.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from monitor.notify.base import Message, Settings, url_secrets
from monitor.notify.channel import Channel
from monitor.notify.messages import iso_time, one_line

ALERTNAME = "MonitorTargetDown"
TEST_ALERTNAME = "MonitorTest"
TEST_HOLD = 300.0


class AlertmanagerNotifier(Channel):
    type = "alertmanager"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.url: str = settings.url("url").rstrip("/")
        self.username: str | None = settings.text("username", None)
        self.password: str | None = settings.text("password", None)
        if (self.username is None) != (self.password is None):
            raise settings.error("password", "username and password go together")
        self.bearer_token: str | None = settings.text("bearer_token", None)
        if self.bearer_token and self.username:
            raise settings.error("bearer_token", "use either bearer_token or username and password")
        self.severity: str = settings.text("severity", "critical")
        self.labels = settings.text_map("labels")
        self.hold = settings.duration("hold", 86400.0)
        self.add_secrets(url_secrets(self.url), self.password, self.bearer_token)

    def alert(self, message: Message) -> dict[str, Any]:
        rendered = self.render(message)
        test = message.kind == "test"
        labels = {
            **self.labels,
            "alertname": TEST_ALERTNAME if test else ALERTNAME,
            "target": message.target,
            "location": message.location,
            "severity": "info" if test else self.severity,
        }
        if message.kind == "up":  # the wall-clock end: known and unknown time
            ends = message.since + (message.duration or 0.0) + (message.unknown or 0.0)
        elif test:
            ends = message.since + TEST_HOLD
        else:  # down, reminder: hold it firing; the recovery ends it
            ends = message.since + (message.duration or 0.0) + (message.unknown or 0.0) + self.hold
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {
                "summary": rendered.title,
                "description": rendered.text,
                "cause": message.cause or "unknown",
                "error": one_line(message.error),
            },
            "startsAt": iso_time(message.since),
            "endsAt": iso_time(ends),
        }
        if message.url.startswith(("http://", "https://")):
            alert["generatorURL"] = message.url
        return alert

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        headers = {}
        auth = None
        if self.bearer_token:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        elif self.username and self.password:
            auth = aiohttp.BasicAuth(self.username, self.password)
        await self.post(
            session,
            f"{self.url}/api/v2/alerts",
            json_body=[self.alert(message)],
            headers=headers,
            auth=auth,
        )
