"""Staff reply text extraction (pure): the new words staff wrote, nothing else.

Staff answer a forwarded buyer message from their own mail client. What comes
back holds their words plus whatever the client added: a quote header
("On ... wrote:", an Outlook "From:/Sent:" block), the quoted notification
(which starts with our ``MARKER`` line), a signature, "Sent from my iPhone".
Only the new words may reach the buyer, so :func:`extract_reply` cuts, in
this order (each rule has a name, reported in ``ReplyText.cut_at``/``hits``):

1. ``marker``: our own "##- Please type your reply above this line -##",
   found even when quoted ("> > ##- ..."), re-spaced, re-cased or wrapped
   over up to three lines. Everything from it down is our notification.
2. Client quote headers above it (the earliest wins):
   ``original_message`` ("-----Original Message-----" and its de/fr/es/it/ja
   forms), ``outlook_header_block`` (From/Sent/To/Subject blocks in en, de,
   fr, es, it, ja, with or without the "____" separator line above), and the
   attribution line "On <date>, X wrote:" (also "Am ... schrieb ...:",
   "Le ... a écrit :", "El ... escribió:", "Il ... ha scritto:", Japanese
   "2026年11月23日(月) 14:02 X <x@y>:" / "...さんは書きました:"), labelled by
   its shape: ``apple_mail`` (", at 14:02,"), ``thunderbird`` (numeric date)
   or ``gmail_on_wrote`` (every other attribution line; the client label is a
   best guess, the cut is the same). An attribution line only counts when it
   is followed by quoted lines, our marker or nothing: "the courier wrote:"
   inside the staff's own sentence never cuts.
   ``mailparser_reply``: when none of our header rules matched, the
   mail-parser-reply library is asked (more languages: nl, sv, da, cs, ko,
   zh...) on the text above the marker, with the same follow-up check (see
   "mail-parser-reply" below).
   ``attribution``: the last resort, the line or two just above the first
   quoted line (or quoted marker) ending in ":" with a time or an address
   in it: any client, any language ("Em ... escreveu:", "Op ... schreef X:").
3. ``quote_prefix``: trailing ">"-quoted lines. When new text sits between or
   after quoted lines (an inline or bottom-posted answer), only the unquoted
   lines are kept, blocks separated by a blank line: ``inline``.
4. ``signature``: the RFC 3676 4.3 "-- " delimiter and what follows it, and
   trailing mobile/app lines ("Sent from my iPhone", "Get Outlook for
   Android", "Von meinem iPhone gesendet", "iPhoneから送信"...). Sign-offs
   such as "Best regards, Anna" are the staff's words and stay.

HTML-only replies (empty ``text``) are rendered by the project's one HTML
converter (:mod:`bridge.domain.htmltext`), told to cut at the client's quote
container (Gmail ``gmail_quote``, Outlook ``divRplyFwdMsg``/``appendonsend``,
Yahoo ``yahoo_quoted``: the rule is ``html_*``), to leave out the signature
blocks Gmail and Thunderbird mark (``gmail_signature``, ``moz-signature``),
and to leave each ``<blockquote>`` as one ">" line so the text rules see where
the quote was; links become "text <url>".

Everything runs in linear time: the text is split into lines once, every
pattern looks at one line (or a join of at most three) of bounded length,
and the library (whose regexes backtrack) only sees bounded input.

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
from collections.abc import Mapping
from dataclasses import dataclass

from mailparser_reply import EmailReplyParser

from bridge.domain import htmltext
from bridge.domain.compose import MARKER

__all__ = ["ReplyText", "extract_reply"]


@dataclass(frozen=True)
class ReplyText:
    """What staff wrote, and how it was found.

    ``text``: the new words, CRLF normalised to LF, lines right-stripped,
    no leading or trailing blank lines. ``cut_at``: the rule that decided
    where the new words end (``marker``, ``original_message``,
    ``outlook_header_block``, ``apple_mail``, ``thunderbird``,
    ``gmail_on_wrote``, ``mailparser_reply``, ``attribution``, ``html_gmail_quote``,
    ``html_outlook_reply``, ``html_yahoo_quote``, ``quote_prefix``,
    ``inline``, ``signature`` when only a signature was removed, ``none``).
    ``removed_signature``: a signature or "Sent from ..." line was dropped.
    ``empty``: nothing is left; the caller must not send anything to the
    buyer and should tell the staff member. ``hits``: every rule that fired,
    in the order they ran, for the message's audit trail.
    """

    text: str
    cut_at: str
    removed_signature: bool
    empty: bool
    hits: tuple[str, ...] = ()


def extract_reply(text: str, html: str | None = None) -> ReplyText:
    """The staff's new words from a reply's text/plain body (or, when that
    is empty, its text/html body). Never raises; linear in the input size."""
    text = text or ""
    hits: list[str] = []
    html_cut: str | None = None
    html_signature = False
    if not text.strip() and html and html.strip():
        text, html_cut, html_signature = _html_to_text(html)
        hits.append("html")
        if html_cut:
            hits.append(html_cut)
    return _extract(_Doc(text), hits, html_cut, html_signature)


# --------------------------------------------------------------------------
# Lines

# Characters some clients put where a space or nothing belongs.
_SPACE_LIKE = str.maketrans({"\xa0": " ", "\u202f": " ", "\u2007": " ", "\u3000": " ",
                             "\u200b": None, "\ufeff": None, "\u2019": "'"})
_QUOTE_PREFIX = re.compile(r"[ \t]*>[ \t>]*")


class _Doc:
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
class _Cut:
    start: int   # first line of the quote header / marker
    end: int     # first line after it
    rule: str


# --------------------------------------------------------------------------
# Rule 1: our marker

_MARKER_CORE = " ".join(MARKER.strip("#- ").split()).lower()  # "please type your reply above this line"
_ONLY_DECORATION = re.compile(r"[#\-_=~*]+")


def _find_marker(doc: _Doc) -> _Cut | None:
    n = len(doc)
    for i in range(n):
        low = doc.bare[i].lower()
        if not low:
            continue
        if _MARKER_CORE in low:
            return _marker_cut(doc, i, i + 1)
        # Wrapped by a client: the phrase starts on this line, ends on one of
        # the next two. Only the joins are searched, so each line is read at
        # most three times.
        joined = low
        for j in (i + 1, i + 2):
            if j >= n or not doc.bare[j]:
                break
            joined = f"{joined} {doc.bare[j].lower()}"
            found = joined.find(_MARKER_CORE)
            if found != -1:
                if found < len(low):
                    return _marker_cut(doc, i, j + 1)
                break
    return None


def _marker_cut(doc: _Doc, start: int, end: int) -> _Cut:
    # "##-" wrapped onto a line of its own above the words belongs to the marker.
    if start > 0 and _ONLY_DECORATION.fullmatch(doc.bare[start - 1]):
        start -= 1
    return _Cut(start, end, "marker")


# --------------------------------------------------------------------------
# Rule 2: client quote headers

_MAX_HEADER_LINE = 600

# "-----Original Message-----" and localised forms (Outlook, GMX, web.de...).
_ORIGINAL_MESSAGE = frozenset({
    "original message", "ursprüngliche nachricht", "original-nachricht", "originalnachricht",
    "message d'origine", "message original", "mensaje original", "messaggio originale",
    "元のメッセージ", "オリジナル メッセージ", "forwarded message",
})

# Outlook header-block keys (lower case) -> what they say.
_HEADER_KEYS: dict[str, str] = {
    # en
    "from": "from", "sent": "sent", "date": "sent", "to": "to", "subject": "subject",
    "cc": "cc", "bcc": "cc", "reply-to": "cc", "importance": "cc",
    # de
    "von": "from", "gesendet": "sent", "datum": "sent", "an": "to", "betreff": "subject",
    "wichtigkeit": "cc", "antwort an": "cc",
    # fr
    "de": "from", "envoyé": "sent", "envoye": "sent", "à": "to", "a": "to", "objet": "subject",
    "cci": "cc", "importance ": "cc",
    # es
    "enviado": "sent", "enviado el": "sent", "fecha": "sent", "para": "to", "asunto": "subject",
    "cco": "cc", "importancia": "cc",
    # it
    "da": "from", "inviato": "sent", "data": "sent", "oggetto": "subject", "priorità": "cc",
    # ja (Outlook)
    "差出人": "from", "送信者": "from", "送信日時": "sent", "日付": "sent", "宛先": "to",
    "件名": "subject", "重要度": "cc",
}


def _header_key(bare: str) -> str | None:
    """The category of an Outlook header line ("From: x" -> "from"), else None."""
    for colon in (":", "："):
        at = bare.find(colon, 0, 26)
        if at > 0:
            return _HEADER_KEYS.get(bare[:at].strip(" *").lower())
    return None


def _outlook_block(doc: _Doc, i: int, limit: int) -> int | None:
    """End of a From/Sent/To/Subject block starting at line ``i``, or None.

    Needs "From" plus two of Sent/Date, To, Subject within a few lines; a
    wrapped To/Subject value and a stray blank line are tolerated."""
    if _header_key(doc.bare[i]) != "from":
        return None
    seen = {"from"}
    end = i + 1
    slack = 3
    for j in range(i + 1, min(limit, i + 14)):
        key = _header_key(doc.bare[j])
        if key:
            seen.add(key)
            end = j + 1
            continue
        slack -= 1
        if slack < 0:
            break
    if len(seen & {"sent", "to", "subject"}) >= 2:
        return end
    return None


def _original_message(bare: str) -> bool:
    if not bare.startswith("--") or len(bare) > 80:
        return False
    return bare.strip("- ").lower() in _ORIGINAL_MESSAGE


_FR_WROTE = re.compile(r"a [ée]crit ?:$")
_ES_WROTE = re.compile(r"escribi[óo] ?:$")
_JA_DATE = re.compile(r"\d{4}(?:年|/|-)")
# Shapes that tell the clients apart (a best guess; the cut is the same):
# Apple Mail puts a comma before the time ("On 23 Nov 2026, at 14:02, X <x@y>
# wrote:", "El 23 nov 2026, a las 14:02, ...", "Il giorno 23 nov 2026, alle ore
# 14:02, ...", "Le 23 nov. 2026 à 14:02, ..." without a weekday) and writes
# numeric dates with the address; Thunderbird writes a numeric date and only
# the name ("On 23/11/2026 14:02, X wrote:", "Am 23.11.26 um 14:02 schrieb X:").
_APPLE_SHAPE = re.compile(r",\s+at\s+\d|,\s+a las\s+\d|,\s+alle ore\s+\d|^le \d{1,2} [^\s\d]+ \d{4} à \d")
_NUMERIC_DATE = re.compile(r"(?:on|am|le|el|il|il giorno)\s+\d{1,4}[./-]\d{1,2}[./-]\d{2,4}\b")


def _attribution_label(line: str) -> str | None:
    """Rule name for an attribution line ("On ..., X wrote:"), else None."""
    if len(line) > _MAX_HEADER_LINE or not any(ch.isdigit() for ch in line):
        return None
    low = line.lower()
    if _JA_DATE.match(low) and low[-1] in ":：":
        if "のメール" in low:
            return "apple_mail"
        if "書きました" in low:
            return "thunderbird"
        if "@" in low or "wrote" in low:
            return "gmail_on_wrote"
        return None
    if not (
        (low.startswith("on ") and low.endswith("wrote:"))
        or (low.startswith("am ") and low.endswith(":") and " schrieb" in low)
        or (low.startswith("le ") and _FR_WROTE.search(low) is not None)
        or (low.startswith("el ") and _ES_WROTE.search(low) is not None)
        or (low.startswith("il ") and (low.endswith("ha scritto:") or low.endswith("ha scritto :")))
    ):
        return None
    if _APPLE_SHAPE.search(low):
        return "apple_mail"
    if _NUMERIC_DATE.match(low):
        return "apple_mail" if "@" in low else "thunderbird"
    return "gmail_on_wrote"


_OPENERS = ("on ", "am ", "le ", "el ", "il ")


def _attribution(doc: _Doc, i: int, limit: int, marker: _Cut | None) -> _Cut | None:
    """An attribution line (possibly wrapped over up to three lines) at ``i``
    that is followed by quoted lines, our marker or nothing."""
    first = doc.bare[i]
    if not first or len(first) > _MAX_HEADER_LINE:
        return None
    if not (first[:3].lower() in _OPENERS or first[0].isdigit()):
        return None
    joined = first
    for end in range(i + 1, min(limit, i + 3) + 1):
        if end > i + 1:
            previous = doc.bare[end - 2]
            nxt = doc.bare[end - 1]
            # A wrapped attribution never ends a line with a full stop.
            if not nxt or previous.endswith((".", "!", "?")):
                return None
            joined = f"{joined} {nxt}"
        label = _attribution_label(joined)
        if label and _quote_follows(doc, end, limit, marker):
            return _Cut(i, end, label)
    return None


def _quote_follows(doc: _Doc, index: int, limit: int, marker: _Cut | None) -> bool:
    after = doc.next_nonblank(index, limit)
    if after >= limit:
        return True
    return doc.quoted[after] or (marker is not None and after == marker.start)


def _header_at(doc: _Doc, i: int, limit: int, marker: _Cut | None) -> _Cut | None:
    bare = doc.bare[i]
    if not bare:
        return None
    if _original_message(bare):
        return _Cut(i, i + 1, "original_message")
    if bare[0] == "_" and len(bare) >= 10 and _ONLY_DECORATION.fullmatch(bare):
        # Outlook's "________________________________" above its header block.
        after = doc.next_nonblank(i + 1, limit)
        if after < limit and after - i <= 3:
            end = _outlook_block(doc, after, limit)
            if end is not None:
                return _Cut(i, end, "outlook_header_block")
        return None
    end = _outlook_block(doc, i, limit)
    if end is not None:
        return _Cut(i, end, "outlook_header_block")
    return _attribution(doc, i, limit, marker)


def _find_header(doc: _Doc, limit: int, marker: _Cut | None) -> _Cut | None:
    for i in range(limit):
        cut = _header_at(doc, i, limit, marker)
        if cut is not None:
            return cut
    return None


_TIME = re.compile(r"\d{1,2}:\d{2}")


def _generic_attribution(doc: _Doc, limit: int, marker: _Cut | None) -> _Cut | None:
    """The last resort for clients and languages no rule knows (pt, pl, tr...):
    the line or two just above the first quoted line (or a quoted marker) that
    end with a colon and carry a time or an address, e.g. "Em seg., 23 de nov.
    de 2026 às 14:02, X <x@y> escreveu:"."""
    first = next((i for i in range(limit) if doc.quoted[i]), None)
    if first is None and marker is not None and doc.quoted[marker.start]:
        first = marker.start
    if first is None:
        return None
    end = first
    while end > 0 and first - end < 3 and not doc.bare[end - 1]:
        end -= 1
    if end == 0 or not doc.bare[end - 1] or doc.quoted[end - 1]:
        return None
    last = doc.bare[end - 1]
    if not last.endswith((":", "：")):
        return None
    for start in (end - 1, end - 2):
        if start < 0 or not doc.bare[start] or doc.quoted[start]:
            return None
        if start < end - 1 and doc.bare[start].endswith((".", "!", "?", ":")):
            return None
        joined = " ".join(doc.bare[start:end])
        if len(joined) > 300:
            return None
        if _TIME.search(joined) or ("@" in joined and any(ch.isdigit() for ch in joined)):
            return _Cut(start, end, "attribution")
    return None


# mail-parser-reply, the second opinion. Its header regexes use nested lazy
# quantifiers, so it only sees bounded input. Polish is left out: its
# "from_header" needs a single "Data:"/"Do:"/"Temat:" line, which staff text
# can contain. "david" is a product, not a language.
_LIBRARY_LANGUAGES = ("en", "de", "fr", "es", "it", "ja", "nl", "sv", "da", "cs", "ko", "zh")
_LIBRARY_FROM_KEYS = frozenset({"from", "von", "de", "da", "van", "från", "fra", "od", "差出人",
                                "发件人", "보낸 사람", "보낸사람"})
_LIBRARY_MAX_CHARS = 32_000
_LIBRARY_MAX_LINE = 1_000


def _library_header(doc: _Doc, limit: int, marker: _Cut | None) -> _Cut | None:
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
            return _Cut(i, min(end, limit), "mailparser_reply")
        return None
    if _quote_follows(doc, end, limit, marker):
        return _Cut(i, min(end, limit), "mailparser_reply")
    return None


# --------------------------------------------------------------------------
# Rule 4: signatures

# Devices and apps named by the "Sent from ..." lines of other languages; kept
# to a list so "Gesendet von unserem Lager" (sent from our warehouse) stays.
_DEVICE = (r"(?:iphone|ipad|android|samsung|galaxy|pixel|huawei|xiaomi|blackberry|outlook|mail"
           r"|yahoo|gmail|proton ?mail|smartphone|mobile|handy|mobilger[äa]t|t[ée]l[ée]phone|tel[ée]fono|m[óo]vil"
           r"|cellulare|telefonino)")
_MOBILE_SIGNATURES = re.compile(
    r"(?:"
    r"sent from my [\w .,'&-]{1,40}"
    rf"|sent (?:from|with) (?:the )?{_DEVICE}[\w .-]{{0,40}}"
    r"|get outlook for (?:ios|android)"
    r"|von meinem [\w .-]{1,40} gesendet"
    rf"|gesendet (?:von|mit) (?:meinem |mein )?{_DEVICE}[\w .-]{{0,30}}"
    r"|outlook für (?:ios|android) beziehen"
    rf"|envoy[ée] (?:de|depuis|avec) (?:mon |ma )?{_DEVICE}[\w .-]{{0,30}}"
    r"|obtenir outlook pour (?:ios|android)"
    rf"|enviado (?:desde|con) (?:mi )?{_DEVICE}[\w .-]{{0,30}}"
    r"|obtener outlook para (?:ios|android)"
    rf"|inviato da (?:il mio )?{_DEVICE}[\w .-]{{0,30}}|inviato dal mio [\w .-]{{1,40}}"
    r"|scarica outlook per (?:ios|android)"
    rf"|(?:私の)?{_DEVICE}[\w .-]{{0,30}}から送信"
    r")[.!。]?(?: ?<[^<>]{0,200}>)?"
)


def _mobile_signature(bare: str) -> bool:
    return len(bare) <= 260 and _MOBILE_SIGNATURES.fullmatch(bare.lower()) is not None


def _strip_signature(doc: _Doc, block: list[int]) -> tuple[list[int], bool]:
    """``block`` (line numbers of one unquoted block) without its signature."""
    removed = False
    for k, i in enumerate(block):
        if doc.raw[i].strip() == "--":   # "-- " (RFC 3676 4.3); the space is often lost
            block, removed = block[:k], True
            break
    end = len(block)
    while True:
        while end and not doc.bare[block[end - 1]]:
            end -= 1
        if end and _mobile_signature(doc.bare[block[end - 1]]):
            end, removed = end - 1, True
            continue
        if end and _ONLY_DECORATION.fullmatch(doc.bare[block[end - 1]]):
            end -= 1   # "____" left above a cut, "##-" of a wrapped marker
            continue
        return block[:end], removed


# --------------------------------------------------------------------------
# Putting the rules together

def _extract(doc: _Doc, hits: list[str], html_cut: str | None, html_signature: bool) -> ReplyText:
    n = len(doc)
    marker = _find_marker(doc)
    limit = marker.start if marker else n
    if marker:
        hits.append("marker")
    header = _find_header(doc, limit, marker)
    if header is None:
        header = _library_header(doc, limit, marker)
    if header is None:
        header = _generic_attribution(doc, limit, marker)
    if header:
        hits.append(header.rule)
    cut = header or marker

    # Which lines are "quote" (Q) and which may be new text.
    quote = [False] * n
    region_end = n
    if cut is not None:
        for i in range(cut.start, cut.end):
            quote[i] = True
        after = doc.next_nonblank(cut.end, n)
        quoted_style = doc.quoted[cut.start] or (after < n and doc.quoted[after])
        if not quoted_style:
            # Outlook style: the original follows unquoted; all of it goes.
            region_end = cut.start
        else:
            # ">" style: new text may still sit between quoted lines below.
            if marker is not None:
                for i in range(marker.start, marker.end):
                    quote[i] = True
            i = cut.end
            while i < n:
                if not doc.quoted[i] and doc.bare[i]:
                    more = _attribution(doc, i, n, None)
                    if more is not None:
                        for k in range(more.start, more.end):
                            quote[k] = True
                        i = more.end
                        continue
                i += 1
    for i in range(region_end):
        if doc.quoted[i]:
            quote[i] = True

    # Unquoted blocks, in order, and whether any quote came before each.
    blocks: list[tuple[list[int], bool]] = []
    current: list[int] = []
    seen_quote = False
    current_after_quote = False
    for i in range(region_end):
        if quote[i]:
            if any(doc.bare[k] for k in current):
                blocks.append((current, current_after_quote))
            current = []
            seen_quote = True
            continue
        if not current:
            current_after_quote = seen_quote
        current.append(i)
    if any(doc.bare[k] for k in current):
        blocks.append((current, current_after_quote))

    removed_signature = html_signature
    kept: list[tuple[str, bool]] = []
    for block, after_quote in blocks:
        first = next((k for k, i in enumerate(block) if doc.bare[i]), len(block))
        block, removed = _strip_signature(doc, block[first:])
        removed_signature = removed_signature or removed
        text = "\n".join(doc.raw[i] for i in block).strip("\n")
        if text.strip():
            kept.append((text, after_quote))

    if any(after_quote for _, after_quote in kept):
        cut_at = "inline"
    elif cut is not None:
        cut_at = cut.rule
    elif html_cut is not None:
        cut_at = html_cut
    elif seen_quote:
        cut_at = "quote_prefix"
    elif removed_signature:
        cut_at = "signature"
    else:
        cut_at = "none"
    if cut_at in ("inline", "quote_prefix"):
        hits.append(cut_at)
    if removed_signature:
        hits.append("signature")
    result = "\n\n".join(text for text, _ in kept).strip()
    return ReplyText(text=result, cut_at=cut_at, removed_signature=removed_signature,
                     empty=not result, hits=tuple(hits))


# --------------------------------------------------------------------------
# HTML-only replies

def _quote_container(tag: str, attrs: Mapping[str, str]) -> str | None:
    """The rule for a mail client's container of the quoted thread: the
    reply's own words end where it starts."""
    classes = attrs.get("class", "").lower().split()
    element_id = attrs.get("id", "").lower()
    if "gmail_quote" in classes or "gmail_quote_container" in classes:
        return "html_gmail_quote"
    if "yahoo_quoted" in classes:
        return "html_yahoo_quote"
    if element_id.startswith("divrplyfwdmsg") or element_id in (
        "appendonsend", "mail-editor-reference-message-container"
    ):
        return "html_outlook_reply"
    return None


def _signature_container(tag: str, attrs: Mapping[str, str]) -> bool:
    classes = attrs.get("class", "").lower().split()
    return "gmail_signature" in classes or "moz-signature" in classes


def _html_to_text(html: str) -> tuple[str, str | None, bool]:
    """(text, quote container cut or None, signature block removed)."""
    rendered = htmltext.to_text(html, cut_before=_quote_container, leave_out=_signature_container,
                                quotes_as_marker=True)
    return rendered.text, rendered.cut_by, rendered.left_out
