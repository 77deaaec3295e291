"""Other locations, as their own monitors see them: each peer's GET /api/v1/targets.

Why the peers' API (not Prometheus, not a shared store): every monitor already serves it,
it needs no extra service on machines that run none, and a peer that cannot be reached
shows as exactly that ("no answer from X") instead of stale numbers. The answers are
cached for `ttl` seconds and fetched at most `timeout` seconds, all peers at once, so a
slow peer delays a page by at most `timeout` once per `ttl`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

log = logging.getLogger("monitor.web")

MAX_ANSWER = 16 * 1024 * 1024  # bytes read from a peer at most (10,000 targets fit)


@dataclass(frozen=True, slots=True)
class PeerView:
    """What one peer said last: its location and each target's state, or why it did not."""

    url: str
    location: str | None
    states: dict[str, str] = field(default_factory=dict)  # target -> up/down/unknown
    causes: dict[str, str] = field(default_factory=dict)  # target -> failure of a down one
    error: str | None = None


class Peers:
    """Fetches and caches the peers' target states; `close()` is safe in any state."""

    def __init__(self, urls: Sequence[str], token: str | None = None, *, timeout: float = 2.0,
                 ttl: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.token, self.timeout, self.ttl, self.clock = token, timeout, ttl, clock
        self._cache: list[PeerView] = []
        self._fetched = -float("inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._failing: set[str] = set()

    async def views(self) -> list[PeerView]:
        if not self.urls:
            return []
        async with self._lock:  # concurrent pages share one refresh
            if self.clock() - self._fetched >= self.ttl:
                self._cache = list(await asyncio.gather(*(self._fetch(u) for u in self.urls)))
                self._fetched = self.clock()
        return self._cache

    async def _fetch(self, url: str) -> PeerView:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers)
        try:
            async with asyncio.timeout(self.timeout), \
                    self._session.get(f"{url}/api/v1/targets", allow_redirects=False) as r:
                if r.status != 200:
                    raise ValueError(f"HTTP {r.status}")
                data = json.loads(await r.content.read(MAX_ANSWER))
            states = {str(t["name"]): str(t["state"]) for t in data["targets"]}
            causes = {str(t["name"]): str((t.get("last_result") or {}).get("failure") or "")
                      for t in data["targets"] if t["state"] == "down"}
            view = PeerView(url, str(data["location"]), states, causes)
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
            why = "no answer within the timeout" if isinstance(exc, TimeoutError) else (
                str(exc) or type(exc).__name__)
            if url not in self._failing:
                self._failing.add(url)
                log.warning("peer %s: %s; its column shows as unknown", url, why)
            return PeerView(url, None, error=why[:200])
        if url in self._failing:
            self._failing.discard(url)
            log.info("peer %s answers again", url)
        return view

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
