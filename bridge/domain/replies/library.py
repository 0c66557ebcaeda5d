"""The second opinion on quote headers: the mail-parser-reply library.

mail-parser-reply (1.36, ``EmailReplyParser(languages=[...]).read(text)``):
we rely only on *where* it finds its first header (``EmailReply.headers``),
and accept that finding only as our own rules would (an attribution must be
followed by the quote; a header block must start with its From line). Not
used, and why (each pinned in tests/test_replies.py): its ``latest_reply``
is the quoted notification itself when nothing stands above the header (a
quote-only reply would be relayed to the buyer), keeps the quoted buyer
lines of inline answers, and strips every line's indentation; its
signature rules drop the staff's words from "Thanks,", "Best regards",
"Viele Grüße" or any "- item" line down; it misses Japanese Outlook blocks
(差出人:), wrapped Japanese and Spanish Gmail headers, "...さんは書きました:",
"...のメール:" and Gmail's Dutch header; it cuts at "On Monday the courier
wrote:" inside a sentence; its Polish rule takes one "Data:" line for a
header (so "pl" is not passed); and it knows nothing of our marker.
"""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser

from bridge.domain.replies.headers import quote_follows
from bridge.domain.replies.lines import Cut, Doc

# Its header regexes use nested lazy quantifiers, so it only sees bounded
# input. Polish is left out: its "from_header" needs a single
# "Data:"/"Do:"/"Temat:" line, which staff text can contain. "david" is a
# product, not a language.
_LIBRARY_LANGUAGES = ("en", "de", "fr", "es", "it", "ja", "nl", "sv", "da", "cs", "ko", "zh")
_LIBRARY_FROM_KEYS = frozenset({"from", "von", "de", "da", "van", "från", "fra", "od", "差出人",
                                "发件人", "보낸 사람", "보낸사람"})
_LIBRARY_MAX_CHARS = 32_000
_LIBRARY_MAX_LINE = 1_000


def library_header(doc: Doc, limit: int, marker: Cut | None) -> Cut | None:
    """The first header mail-parser-reply finds above ``limit``, when it passes
    the checks our own rules make (``mailparser_reply``); None otherwise."""
    lines = doc.raw[:limit]
    if not any(lines) or sum(map(len, lines)) + len(lines) > _LIBRARY_MAX_CHARS:
        return None
    if max(map(len, lines)) > _LIBRARY_MAX_LINE:
        return None
    try:
        message = EmailReplyParser(languages=list(_LIBRARY_LANGUAGES)).read("\n".join(lines))
        header = next((str(reply.headers) for reply in message.replies if reply.headers), "")
    except Exception:  # a third-party parser must never stop a reply
        return None
    header_lines = [line.strip() for line in header.strip().split("\n") if line.strip()]
    if not header_lines:
        return None
    for i in range(limit):
        if doc.raw[i].strip().startswith(header_lines[0]):
            break
    else:
        return None
    end = i + len(header_lines)
    keyed = sum(1 for line in header_lines if ":" in line[:30] or "：" in line[:30])
    # A "Key: value" block must start with its From line ("Date:/To:" lines
    # in the staff's own text are no quote); an attribution line must be
    # followed by the quote, as for our own rules.
    if keyed >= 2:
        first_key = re.split(r"[:：]", header_lines[0].lstrip("> *"), maxsplit=1)[0].strip().lower()
        if first_key in _LIBRARY_FROM_KEYS:
            return Cut(i, min(end, limit), "mailparser_reply")
        return None
    if quote_follows(doc, end, limit, marker):
        return Cut(i, min(end, limit), "mailparser_reply")
    return None
