"""Plain text made inert in each channel's markup.

Rendered titles and texts are plain text, and part of them comes from a probed server (the
error message), which may be hostile. Before a channel puts text into markup it passes it
through the function for that markup here, so the text cannot add links, mentions,
formatting or HTML. Addresses written out in full stay as they are: the services link them
as themselves, which shows where they lead (a masked link `[text](url)` would not).

Imports: stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ZWSP = "\u200b"  # zero-width space: breaks a mention without changing what people read

_URL = re.compile(r"https?://[^\s<>()\[\]`|*]+")
# Characters with a meaning anywhere in Discord's markdown (a backslash makes any ASCII
# punctuation literal), and the markers that mean something only at the start of a line.
_MARKDOWN_INLINE = re.compile(r"([\\*_~`|\[\]()<>])")
_MARKDOWN_LINE_START = re.compile(r"^(\s*)(?:([-#>+])|(\d+)\.)", re.MULTILINE)
_BROADCAST = re.compile(r"@(everyone|here|channel)\b", re.IGNORECASE)
_MENTION = re.compile(r"@(?=\w)")


def markdown(text: str) -> str:
    """Literal text in Discord-style markdown; full addresses are left to be linked."""
    return _around_urls(text, _markdown_plain, lambda url: url)


def _markdown_plain(text: str) -> str:
    text = _MARKDOWN_INLINE.sub(r"\\\1", text)
    text = _MARKDOWN_LINE_START.sub(_line_start, text)
    return _BROADCAST.sub(f"@{ZWSP}\\1", text)


def _line_start(match: re.Match[str]) -> str:
    """A list, heading or quote marker made literal: `\\-`, `\\#`, `1\\.`."""
    indent, marker, number = match.groups()
    return f"{indent}\\{marker}" if marker else f"{indent}{number}\\."


def slack(text: str) -> str:
    """Slack's control characters (links, mentions, `<!channel>`) as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html(text: str) -> str:
    """Literal text in HTML (Telegram's HTML mode), with `@name` mentions broken outside
    full addresses (`https://example.org/@team` stays one link)."""
    return _around_urls(text, lambda plain: _MENTION.sub(f"@{ZWSP}", slack(plain)), slack)


def _around_urls(text: str, plain: Callable[[str], str], url: Callable[[str], str]) -> str:
    """`text` with `url` applied to full addresses and `plain` to the rest."""
    parts: list[str] = []
    last = 0
    for match in _URL.finditer(text):
        parts += [plain(text[last : match.start()]), url(match.group(0))]
        last = match.end()
    parts.append(plain(text[last:]))
    return "".join(parts)
