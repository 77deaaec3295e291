"""What the channels share: a base class and the one HTTP helper that classifies errors.

Classification (like healthchecks' transports): network errors, timeouts, 5xx and 429 are
temporary; 429 and 503 carry the receiver's `Retry-After` (seconds or an HTTP date); any
other status outside 2xx is permanent, reported with the status and a short reason taken
from the body. Every request has its own timeout. Error texts pass through `redact` with
the channel's secrets, so a token in a URL path or echoed by a receiver never leaks.

Imports: stdlib, aiohttp, monitor.notify.base, monitor.notify.messages.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp

from monitor import __version__
from monitor.notify.base import Message, NotifyError, Settings, redact
from monitor.notify.messages import Rendered, Templates

DEFAULT_TIMEOUT = 10.0
MAX_BODY = 64 * 1024  # bytes of a response body we read: enough for any error reason
MAX_REASON = 200  # characters of a reason we keep
# Who is calling, for the receiver's logs; a webhook's own `headers:` may override it.
USER_AGENT = f"monitor/{__version__}"


class Channel:
    """Base of every notifier: name, secrets, templates, timeout and a repr without secrets."""

    type: ClassVar[str] = ""

    def __init__(self, name: str, settings: Settings):
        self.name = name
        self.timeout = settings.duration("timeout", DEFAULT_TIMEOUT)
        self.templates = Templates.parse(
            settings.get("templates", None), f"{settings.where}.templates"
        )
        self.secrets: tuple[str, ...] = ()

    def add_secrets(self, *values: Iterable[str] | str | None) -> None:
        found = list(self.secrets)
        for value in values:
            if isinstance(value, str):
                found.append(value)
            elif value is not None:
                found.extend(value)
        self.secrets = tuple(s for s in found if s)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        """Deliver one message (the `Notifier` interface): each channel implements it."""
        raise NotImplementedError

    def render(self, message: Message) -> Rendered:
        return self.templates.render(message)

    def fail(self, text: str, *, permanent: bool, retry_after: float | None = None) -> NotifyError:
        return NotifyError(
            redact(f"{self.type}: {text}", self.secrets),
            permanent=permanent,
            retry_after=retry_after,
        )

    async def post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
    ) -> str:
        """POST and return the response body, or raise a classified, redacted `NotifyError`."""
        return await request(
            session,
            "POST",
            url,
            label=self.type,
            secrets=self.secrets,
            time_limit=self.timeout,
            json_body=json_body,
            data=data,
            headers=headers,
            auth=auth,
        )


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    label: str,
    secrets: Iterable[str],
    time_limit: float = DEFAULT_TIMEOUT,
    json_body: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: aiohttp.BasicAuth | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """One HTTP request with its own timeout; raises `NotifyError` unless the status is 2xx."""
    secrets = tuple(secrets)
    send_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    if json_body is not None:
        data = json.dumps(json_body, ensure_ascii=False).encode()
        send_headers.setdefault("Content-Type", "application/json")

    def fail(text: str, permanent: bool, retry_after: float | None = None) -> NotifyError:
        return NotifyError(
            redact(f"{label}: {text}", secrets), permanent=permanent, retry_after=retry_after
        )

    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=send_headers,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            allow_redirects=False,  # a webhook that redirects is misconfigured
        ) as response:
            body = (await response.content.read(MAX_BODY)).decode("utf-8", "replace")
            status, reason, response_headers = (
                response.status,
                response.reason or "",
                response.headers,
            )
    except TimeoutError:
        raise fail(f"timed out after {time_limit:g}s", False) from None
    except aiohttp.InvalidURL:
        raise fail("invalid URL", True) from None
    except aiohttp.ClientConnectorError as e:
        # Host and port only: the path of a webhook URL is the secret part.
        errno = e.os_error.errno  # > 0 for socket errors; resolver errors are negative
        why = (
            os.strerror(errno)
            if errno and errno > 0
            else short(e.os_error.strerror or str(e.os_error))
        )
        raise fail(f"cannot connect to {e.host}:{e.port}: {why}", False) from None
    except (aiohttp.ClientError, OSError) as e:
        raise fail(f"{type(e).__name__}: {short(str(e))}".rstrip(": "), False) from None

    if 200 <= status < 300:
        return body
    text = f"HTTP {status} {reason}".rstrip()
    detail = body_reason(body)
    if detail and detail.lower() != reason.lower():
        text = f"{text}: {detail}"
    if status == 429 or status >= 500:
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response_headers.get("Retry-After"), clock())
            if retry_after is None and status == 429:
                retry_after = body_retry_after(body)
        raise fail(text, False, retry_after)
    raise fail(text, True)


def short(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def body_reason(body: str) -> str:
    """A short reason from an error body: a JSON error field, or the first words of text."""
    body = body.strip()
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        if body.startswith("<"):  # an HTML error page says nothing useful in 200 characters
            return ""
        return short(body)
    if isinstance(data, dict):
        for key in ("description", "message", "error", "detail", "errors", "status"):
            value = data.get(key)
            if value:
                return short(value if isinstance(value, str) else json.dumps(value))
    return short(json.dumps(data, ensure_ascii=False))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def body_retry_after(body: str) -> float | None:
    """Discord (`retry_after`) and Telegram (`parameters.retry_after`) say it in the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    parameters = data.get("parameters")
    value = data.get("retry_after")
    if value is None and isinstance(parameters, dict):
        value = parameters.get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None
