"""Rule 2: the quote headers mail clients write above the quoted message.

``original_message`` ("-----Original Message-----" and localised forms),
``outlook_header_block`` (From/Sent/To/Subject blocks in en, de, fr, es, it,
ja, da, no, sv, nl, pl, pt, tr, ru, zh), the attribution line ("On <date>, X wrote:" and its de, fr, es, it, ja
forms) labelled ``apple_mail``, ``thunderbird`` or ``gmail_on_wrote`` by its
shape, and, as the last resort, ``attribution``: any "...:" line with a time
or an address just above the quote.
"""

from __future__ import annotations

import re

from bridge.domain.replies.lines import ONLY_DECORATION, Cut, Doc

_MAX_HEADER_LINE = 600

# "-----Original Message-----" and localised forms (Outlook, GMX, web.de...).
_ORIGINAL_MESSAGE = frozenset({
    "original message", "ursprüngliche nachricht", "original-nachricht", "originalnachricht",
    "message d'origine", "message original", "mensaje original", "messaggio originale",
    "元のメッセージ", "オリジナル メッセージ", "forwarded message",
    # Outlook in Danish, Swedish and Dutch (mail-parser-reply's "da" rules miss
    # the Danish one, as its own Danish test mail shows).
    "oprindelig meddelelse", "ursprungligt meddelande", "oorspronkelijk bericht",
    # Norwegian, Swedish (Apple/Thunderbird), Dutch, Polish, Portuguese, Turkish,
    # Russian, Chinese (simplified and traditional) forms of the same line.
    "opprinnelig melding", "originalmeddelande", "origineel bericht", "wiadomość oryginalna",
    "oryginalna wiadomość", "mensagem original", "özgün ileti", "orijinal mesaj", "asıl ileti",
    "исходное сообщение", "пересылаемое сообщение", "原始邮件", "原始郵件", "原始消息",
    "original email message", "forwarded email",
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
    # da, no
    "fra": "from", "sendt": "sent", "dato": "sent", "til": "to", "emne": "subject", "kopi": "cc",
    # sv
    "från": "from", "skickat": "sent", "till": "to", "ämne": "subject", "kopia": "cc",
    # nl
    "van": "from", "verzonden": "sent", "aan": "to", "onderwerp": "subject",
    # pl
    "od": "from", "wysłano": "sent", "wysłane": "sent", "do": "to", "temat": "subject", "dw": "cc",
    # pt
    "enviada": "sent", "enviada em": "sent", "enviado em": "sent", "assunto": "subject",
    # tr
    "kimden": "from", "gönderildi": "sent", "gönderilme tarihi": "sent", "tarih": "sent", "kime": "to",
    "konu": "subject", "bilgi": "cc",
    # ru
    "от": "from", "отправлено": "sent", "дата": "sent", "кому": "to", "тема": "subject", "копия": "cc",
    # zh (simplified, traditional)
    "发件人": "from", "发送时间": "sent", "日期": "sent", "收件人": "to", "主题": "subject", "抄送": "cc",
    "寄件者": "from", "寄件日期": "sent", "收件者": "to", "主旨": "subject", "副本": "cc",
}


def _header_key(bare: str) -> str | None:
    """The category of an Outlook header line ("From: x" -> "from"), else None."""
    for colon in (":", "："):
        at = bare.find(colon, 0, 26)
        if at > 0:
            return _HEADER_KEYS.get(bare[:at].strip(" *").lower())
    return None


def _outlook_block(doc: Doc, i: int, limit: int) -> int | None:
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
    # Turkish "İ" lowercases to "i" plus a combining dot (U+0307).
    return bare.strip("- ").lower().replace("\u0307", "") in _ORIGINAL_MESSAGE


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


def attribution(doc: Doc, i: int, limit: int, marker: Cut | None) -> Cut | None:
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
        if label and quote_follows(doc, end, limit, marker):
            return Cut(i, end, label)
    return None


def quote_follows(doc: Doc, index: int, limit: int, marker: Cut | None) -> bool:
    """Whether the first non-blank line from ``index`` on is quoted, our marker,
    or missing: what makes a header-shaped line a quote header."""
    after = doc.next_nonblank(index, limit)
    if after >= limit:
        return True
    return doc.quoted[after] or (marker is not None and after == marker.start)


def _header_at(doc: Doc, i: int, limit: int, marker: Cut | None) -> Cut | None:
    bare = doc.bare[i]
    if not bare:
        return None
    if _original_message(bare):
        return Cut(i, i + 1, "original_message")
    if bare[0] == "_" and len(bare) >= 10 and ONLY_DECORATION.fullmatch(bare):
        # Outlook's "________________________________" above its header block.
        after = doc.next_nonblank(i + 1, limit)
        if after < limit and after - i <= 3:
            end = _outlook_block(doc, after, limit)
            if end is not None:
                return Cut(i, end, "outlook_header_block")
        return None
    end = _outlook_block(doc, i, limit)
    if end is not None:
        return Cut(i, end, "outlook_header_block")
    return attribution(doc, i, limit, marker)


def find_header(doc: Doc, limit: int, marker: Cut | None) -> Cut | None:
    """The earliest quote header above ``limit`` that one of our own rules knows.

    An Outlook header block on the very first line, with no marker of ours
    below, heads a forwarded message rather than a quote: nothing was written
    above it, so it is the text itself (mail-parser-reply's Polish fixture)."""
    first = doc.next_nonblank(0, limit)
    for i in range(limit):
        cut = _header_at(doc, i, limit, marker)
        if cut is not None:
            if i == first and marker is None and cut.rule == "outlook_header_block":
                continue
            return cut
    return None


_TIME = re.compile(r"\d{1,2}:\d{2}")


def generic_attribution(doc: Doc, limit: int, marker: Cut | None) -> Cut | None:
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
            return Cut(start, end, "attribution")
    return None
