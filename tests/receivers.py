"""Local stand-ins for the services notifiers talk to, at their real protocol boundary.

`Receiver` is an aiohttp app on 127.0.0.1 that records every request and answers as told
(a plan of replies: 500, 429 + Retry-After, 400, or hang, then the default). It stands in
for Slack, Discord, Teams, Telegram, ntfy, PagerDuty, Alertmanager, Apprise's json:// and
generic webhooks alike: they differ only in path and body, which the tests check.
`SmtpReceiver` is a real aiosmtpd SMTP server in the test's event loop (plain, STARTTLS
or implicit TLS, optional AUTH) that records each message.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    method: str
    path: str  # raw path with query, as the client sent it
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int = 0  # what we answered (0: hung, never answered)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the receiver closes)


class Receiver:
    def __init__(self, default: Reply | None = None):
        self.default = default or Reply()
        self.received: list[Received] = []
        self._plan: deque[Reply] = deque()
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: it would print paths (a Telegram token) the real service would see.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def plan(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then with the default."""
        self._plan.extend(replies)

    def fail(self, status: int, times: int = 1, **kwargs: Any) -> None:
        kwargs.setdefault("body", "")
        self.plan(*[Reply(status, **kwargs)] * times)

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    async def wait_for(
        self, count: int, where: Callable[[Received], bool] = lambda r: True
    ) -> list[Received]:
        """Wait until `count` recorded requests satisfy `where` (answered or hung)."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: len([r for r in self.received if where(r)]) >= count
            )
            return [r for r in self.received if where(r)]

    async def wait_delivered(self, count: int) -> list[Received]:
        return await self.wait_for(count, lambda r: 200 <= r.status < 300)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        reply = self._plan.popleft() if self._plan else self.default
        record = Received(
            method=request.method,
            path=request.raw_path,
            headers=dict(request.headers),
            body=await request.read(),
            at=time.monotonic(),
        )
        if not reply.hang:
            record.status = reply.status
        async with self._changed:
            self.received.append(record)
            self._changed.notify_all()
        if reply.hang:
            await self._release.wait()
            return web.Response(status=503)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None  # the user that authenticated, if any
    tls: bool


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 in the running loop.

    `tls` is None (plain), "starttls" or "implicit"; with `users` AUTH is offered (and
    required before MAIL FROM).
    """

    def __init__(
        self,
        *,
        tls: str | None = None,
        context: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
    ):
        self.tls = tls
        self.context = context
        self.users = users or {}
        self.mails: list[Mail] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> SmtpReceiver:
        def factory() -> SMTP:
            kwargs: dict[str, Any] = {"hostname": "localhost"}
            if self.tls == "starttls":
                kwargs |= {"tls_context": self.context, "require_starttls": True}
            if self.users:
                kwargs |= {
                    "authenticator": self._authenticate,
                    "auth_require_tls": self.tls == "starttls",
                }
            return SMTP(self, **kwargs)

        ssl_context = self.context if self.tls == "implicit" else None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.users and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        mail = Mail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            message=message,
            login=login,
            tls=session.ssl is not None or self.tls == "implicit",
        )
        async with self._changed:
            self.mails.append(mail)
            self._changed.notify_all()
        return "250 OK"

    async def wait_for(self, count: int) -> list[Mail]:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.mails) >= count)
            return list(self.mails)
