"""Shields-style badges: a grey label and a coloured message, as a small SVG.

Safe to embed: no script, no external reference, every text escaped; the route adds
`Content-Type: image/svg+xml`, `X-Content-Type-Options: nosniff` and a CSP that forbids
scripts, so even a badge opened directly cannot run anything.
"""

from __future__ import annotations

import hashlib
from html import escape

COLOURS = {"up": "#2e7d32", "down": "#c62828", "unknown": "#757575", "good": "#2e7d32",
           "fair": "#a86a00", "poor": "#c62828"}
_NARROW = set("fijlrt1I.,:;|!' ()")
_WIDE = set("mwMW%@")


def text_width(text: str) -> int:
    """Pixels at 11 px Verdana, estimated per character (no font metrics at hand)."""
    return sum(4 if c in _NARROW else 10 if c in _WIDE else 7 for c in text)


def badge(label: str, message: str, colour: str) -> str:
    """The SVG text of a badge; `colour` is a key of COLOURS."""
    fill = COLOURS.get(colour, COLOURS["unknown"])
    lw, mw = text_width(label) + 12, text_width(message) + 12
    width = lw + mw
    label, message = escape(label[:60]), escape(message[:60])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{label}: {message}"><title>{label}: {message}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{fill}"/>'
        f'<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" '
        f'text-anchor="middle"><text x="{lw / 2:.1f}" y="14">{label}</text>'
        f'<text x="{lw + mw / 2:.1f}" y="14">{message}</text></g></svg>')


def etag(body: str) -> str:
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'


def uptime_colour(ratio: float | None) -> str:
    if ratio is None:
        return "unknown"
    return "good" if ratio >= 0.999 else "fair" if ratio >= 0.99 else "poor"


def latency_colour(ms: float | None) -> str:
    if ms is None:
        return "unknown"
    return "good" if ms < 500 else "fair" if ms < 2000 else "poor"
