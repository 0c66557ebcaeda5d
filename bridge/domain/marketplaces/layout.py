"""Layout helpers shared by marketplace relays (pure functions on text).

Every relay wraps a buyer's words in boilerplate of the same few shapes: a
block between marker lines, a ``<pre>`` block in an HTML notification, a
``Label: value`` list. These helpers find those shapes; the per-marketplace
modules supply the markers, labels and phrases as data.
"""

from __future__ import annotations

import re
from html import unescape

_TAG_RE = re.compile(r"<[^>]*>")
_PRE_RE = re.compile(r"<pre\b[^>]*>(.*?)</pre\s*>", re.IGNORECASE | re.DOTALL)
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)
# Typographic apostrophes and quotes normalised so "n’avons" matches "n'avons".
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})


def marker_regex(labels: tuple[str, ...]) -> re.Pattern[str]:
    """A line of 3+ dashes, one of ``labels``, 3+ dashes (case-insensitive).

    Quoted lines (``> ---- Begin message ----``) do not match: a marker quoted
    inside a reply belongs to an older message.
    """
    alternatives = "|".join(re.escape(label).replace(r"\ ", r"\s+") for label in labels)
    return re.compile(rf"^[ \t]*-{{3,}}[ \t]*(?:{alternatives})[ \t]*-{{3,}}[ \t]*$",
                      re.IGNORECASE | re.MULTILINE)


def between_markers(text: str, begin: re.Pattern[str], end: re.Pattern[str]) -> str | None:
    """The text between the first ``begin`` line and the next ``end`` line.

    When the end marker is missing (a truncated message) everything after the
    begin marker is returned. ``None`` when there is no begin marker.
    """
    m = begin.search(text)
    if m is None:
        return None
    rest = text[m.end():]
    e = end.search(rest)
    return clean_block(rest[:e.start()] if e else rest)


def pre_blocks(html: str) -> list[str]:
    """Text of each ``<pre>`` block, tags stripped and entities decoded, verbatim otherwise."""
    out = []
    for m in _PRE_RE.finditer(html):
        inner = _BR_RE.sub("\n", m.group(1))
        out.append(clean_block(unescape(_TAG_RE.sub("", inner)).replace("\r\n", "\n")))
    return out


def clean_block(text: str) -> str:
    """Trailing spaces removed from each line, leading/trailing blank lines dropped."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def squash(text: str) -> str:
    """Case-folded, quotes normalised, *all* whitespace removed.

    Fingerprint phrases are compared in this form so that line wrapping,
    double spaces and CJK text (no spaces at all) match alike.
    """
    return "".join(text.translate(_QUOTES).casefold().split())   # split(): exactly the characters \s matches


# --------------------------------------------------------------------------- notice regions and fingerprints

# Where quoted history starts in a reply: nothing below it is this mail's own text.
QUOTE_START_RE = re.compile(
    r"^[ \t]*(?:-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original"
    r"|Messaggio originale|Forwarded message)\s*-{2,}"
    r"|On\b.{0,300}\bwrote:[ \t]*$|Am\b.{0,300}\bschrieb.{0,100}:[ \t]*$|Le\b.{0,300}\ba écrit[ \t]*:[ \t]*$)",
    re.MULTILINE | re.IGNORECASE,
)
_QUOTED_LINE_RE = re.compile(r"^[ \t]*>.*$", re.MULTILINE)


def notice_region(text: str, buyer_text: str | None,
                  markers: tuple[re.Pattern[str], re.Pattern[str]] | None = None) -> str:
    """The part of ``text`` the marketplace itself wrote: the buyer's words (as
    extracted, and between the ``markers`` begin/end lines when given), ``>``-quoted
    lines and quoted history removed."""
    if buyer_text:
        text = text.replace(buyer_text, "")
    if markers is not None:
        begin = markers[0].search(text)
        if begin is not None:
            end = markers[1].search(text, begin.end())
            text = text[:begin.start()] + (text[end.end():] if end else "")
    quote = QUOTE_START_RE.search(text)
    if quote is not None:
        text = text[:quote.start()]
    return _QUOTED_LINE_RE.sub("", text)


def first_fingerprint(region: str, fingerprints: tuple[tuple[str, str], ...]) -> int | None:
    """Index of the first ``(reason, squashed phrase)`` whose phrase is in ``squash(region)``, else ``None``.

    Fingerprints are compared squashed (see :func:`squash`): line wrapping and
    CJK text without spaces match alike. Order them most specific first.
    """
    squashed = squash(region)
    if not squashed:
        return None
    for index, (_reason, phrase) in enumerate(fingerprints):
        if phrase in squashed:
            return index
    return None
