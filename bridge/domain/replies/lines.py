"""A reply body as lines, read once, and the cut a rule reports."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Characters some clients put where a space or nothing belongs.
_SPACE_LIKE = str.maketrans({"\xa0": " ", "\u202f": " ", "\u2007": " ", "\u3000": " ",
                             "\u200b": None, "\ufeff": None, "\u2019": "'"})
_QUOTE_PREFIX = re.compile(r"[ \t]*>[ \t>]*")
# A line of nothing but decoration: "____" above Outlook's header block, the
# "##-" of a wrapped marker.
ONLY_DECORATION = re.compile(r"[#\-_=~*]+")


class Doc:
    """The body split into lines once: raw (right-stripped), quoted or not,
    and ``bare`` (quote prefix removed, odd spaces normalised, whitespace
    collapsed) for matching."""

    def __init__(self, text: str) -> None:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.raw: list[str] = [line.rstrip() for line in text.split("\n")]
        self.quoted: list[bool] = []
        self.bare: list[str] = []
        for line in self.raw:
            prefix = _QUOTE_PREFIX.match(line)
            self.quoted.append(prefix is not None)
            body = line[prefix.end():] if prefix else line
            self.bare.append(" ".join(body.translate(_SPACE_LIKE).split()))

    def __len__(self) -> int:
        return len(self.raw)

    def next_nonblank(self, index: int, limit: int) -> int:
        """First line at or after ``index`` (below ``limit``) that is not blank
        (a bare ">" is not blank: it is quote)."""
        while index < limit and not self.bare[index] and not self.quoted[index]:
            index += 1
        return index


@dataclass(frozen=True)
class Cut:
    """Where a rule found a quote header or our marker, and the rule's name."""

    start: int   # first line of the quote header / marker
    end: int     # first line after it
    rule: str
