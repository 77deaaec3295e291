"""The one sanitizer for every message that leaves a probe.

A probe's message goes to the log, the store, both APIs, the status page and notifications,
so it must carry no secret and nothing a hostile server chose beyond a short, printable,
single-line summary. `clean()` is applied to every `ProbeResult.message` (by the probe and
again by `monitor.probes.run_probe`); it is idempotent.

What counts as a secret of a target (`target_secrets()`), each in every encoding a request
or an echo may carry it in (as written, percent-decoded, percent-encoded, `+` for spaces,
Python bytes escapes, and the base64 token of HTTP Basic auth):
- the URL's user name and password;
- every query value;
- every configured header value, and each word of it (`Bearer <token>`);
- the request body, and each of its form values.
Values shorter than `MIN_SECRET` characters are not masked: "1" or "on" are no secrets, and
masking them would garble every message.

Imports: stdlib only.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
from collections.abc import Iterable
from urllib.parse import (
    parse_qsl,
    quote,
    quote_plus,
    unquote,
    unquote_plus,
    urlsplit,
    urlunsplit,
)

__all__ = ["MAX_MESSAGE", "MIN_SECRET", "clean", "display_url", "target_secrets"]

MAX_MESSAGE = 300  # characters
MIN_SECRET = 4  # characters
MASK = "***"

# scheme://anything-up-to-whitespace-or-quote, and URL(...) / url=... reprs of aiohttp.
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)]*")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\uffff]+")  # controls, DEL, C1, surrogates


def clean(message: str, secrets: Iterable[str] = ()) -> str:
    """One printable line of at most MAX_MESSAGE characters, without URLs or `secrets`."""
    patterns = _masker(tuple(secrets))
    if patterns is not None:  # before reshaping: an echo keeps the request's own bytes
        message = patterns.sub(MASK, message)
    message = " ".join(_NOT_PRINTABLE.sub(" ", message).split())
    message = _URL.sub("<url>", message)
    if patterns is not None:  # again: joining lines may have rebuilt a secret
        message = patterns.sub(MASK, message)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return message


@functools.lru_cache(maxsize=4096)  # one per target: built once, not on every probe
def _masker(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms = {form for secret in secrets for form in _encodings(secret) if len(form) >= MIN_SECRET}
    if not forms:
        return None
    # Longest first, so that a secret inside a longer one is masked as part of it.
    alternatives = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)


def _encodings(secret: str) -> set[str]:
    """`secret` as written, decoded and encoded the ways a URL, a header or a repr carry it."""
    forms = {secret, unquote(secret), unquote_plus(secret)}
    for form in list(forms):
        forms.add(quote(form, safe=""))
        forms.add(quote(form, safe="/:@!$&'()*+,;=~"))  # as a path or userinfo keeps it
        forms.add(quote_plus(form))
        for charset in ("utf-8", "latin-1"):
            with contextlib.suppress(UnicodeEncodeError):  # b'p\xc3\xb6' as aiohttp shows
                forms.add(repr(form.encode(charset))[2:-1])
        forms.add(form.encode("unicode_escape").decode("ascii"))
    return forms


@functools.lru_cache(maxsize=4096)
def target_secrets(url: str, headers: tuple[tuple[str, str], ...] = (), body: str | None = None
                   ) -> tuple[str, ...]:
    """Everything of a target's request that may be secret (see the module docstring)."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
    except ValueError:  # an unusable URL: mask its pieces as best we can
        netloc = url.partition("://")[2].partition("/")[0]
        query = url.partition("?")[2]
    userinfo, at, _ = netloc.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        found += [user, password]
        found += _basic_tokens(unquote(user), unquote(password))
    found += _form_values(query)
    for _, value in headers:
        found.append(value)
        found += value.split()
    if body:
        found.append(body)
        found += _form_values(body)
    return tuple(s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET)


def _form_values(text: str) -> list[str]:
    values: list[str] = []
    for pair in text.split("&"):
        values.append(pair.partition("=")[2])  # as written
    values += [value for _, value in parse_qsl(text, keep_blank_values=True)]
    return values


def _basic_tokens(user: str, password: str) -> list[str]:
    tokens = []
    for charset in ("latin-1", "utf-8"):
        try:
            raw = f"{user}:{password}".encode(charset)
        except UnicodeEncodeError:
            continue
        token = base64.b64encode(raw).decode("ascii")
        tokens += [token, token.rstrip("=")]
    return tokens


def display_url(url: str) -> str:
    """`url` to show a person: user info and every query value masked, the rest as written.

    https://alice:pw@example.com/a?token=s3cret&page=2 → https://***@example.com/a?token=***&page=***
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    _, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{MASK}@{hostport}" if at else hostport
    query = "&".join(
        pair if parts.scheme == "dns" and re.fullmatch(r"type=\w+", pair)  # no secret
        else f"{pair.partition('=')[0]}={MASK}" if "=" in pair else pair
        for pair in parts.query.split("&")
    ) if parts.query else ""
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if not netloc and url.startswith(f"{parts.scheme}://"):  # dns:///name keeps its slashes
        shown = f"{parts.scheme}://{shown.removeprefix(parts.scheme + ':')}"
    return shown
