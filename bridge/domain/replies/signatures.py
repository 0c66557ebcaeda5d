"""Rule 4, ``signature``: the "-- " block, the "Sent from my iPhone" lines, and the
contact lines of a signature written without a "-- " line.

Sign-offs such as "Best regards, Anna" are the staff's words and stay. Real staff
signatures (Outlook's, most of all) have no "-- " delimiter and carry a phone
number, a website, an address: contact details a marketplace forbids in messages
to buyers. ``contact_signature`` finds a closing phrase ("Best regards,",
"Mit freundlichen Grüßen", "Cordialement"...) near the end and, when the lines
below it carry contact details, keeps the sign-off and the name line and cuts the
rest; the caller tells the staff member what was cut. Contact details above the
closing phrase are the staff's answer: they stay, and the compliance guard
decides about them.
"""

from __future__ import annotations

import re

from bridge.domain.replies.lines import ONLY_DECORATION, Doc


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


def strip_signature(doc: Doc, block: list[int]) -> tuple[list[int], bool]:
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
        if end and ONLY_DECORATION.fullmatch(doc.bare[block[end - 1]]):
            end -= 1   # "____" left above a cut, "##-" of a wrapped marker
            continue
        return block[:end], removed


# Closing phrases in the marketplaces' languages, alone on their line or followed by a name.
_CLOSING = re.compile(
    r"(?:(?:best|kind|warm(?:est)?|many|with)\s+)?(?:regards|wishes|thanks|thank you)|cheers|sincerely"
    r"|yours(?: sincerely| truly| faithfully)?|(?:mit )?(?:freundlichen|besten|vielen|viele|liebe|herzliche)?\s*grü(?:ß|ss)en?"
    r"|mfg|lg|cordialement|bien (?:à vous|cordialement)|salutations(?: distinguées)?|(?:un )?saludos?(?: cordiales)?"
    r"|atentamente|cordiali saluti|distinti saluti|saluti|(?:met )?vriendelijke groet(?:en)?|groeten|mvg"
    r"|med venlig hilsen|venlig hilsen|mvh|med vennlig hilsen|med vänliga hälsningar|vänliga hälsningar|hälsningar"
    r"|pozdrawiam|z poważaniem|atenciosamente|abraços|cumprimentos|saygılarımla|iyi çalışmalar|с уважением"
    r"|よろしくお願い(?:いた)?します|敬具|此致敬礼|此致|顺颂商祺|مع التحية|تحياتي",
    re.IGNORECASE,
)
_BARE_CLOSING = re.compile(rf"(?:{_CLOSING.pattern})[,.!。、]?", re.IGNORECASE)
# "Best regards," alone, or "Thanks, Sam" / "Regards - Sam Patel": a name of up to three words after a comma or dash.
_CLOSING_LINE = re.compile(
    rf"(?:{_CLOSING.pattern})(?:[,.!。、]|\s*[,\u2013-]\s*[^\W\d][\w'.-]*(?:\s+[^\W\d][\w'.-]*){{0,2}})?",
    re.IGNORECASE)
# What makes a line contact details: a phone number, a link or website, an address, a label.
_CONTACT = re.compile(
    r"https?://|\bwww\.|[\w.+-]+@[\w-]+\.[\w.-]+|(?:\+|\b00)\d[\d ().-]{6,}\d|\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,4}"
    r"|\b(?:tel|phone|fax|mobile|mob|cell|telefon|téléphone|tél|teléfono|telefono|tlf|電話)\b\.?\s*[:.]?\s*\+?\d"
    r"|\b[\w-]+\.(?:com|net|org|de|co\.uk|fr|es|it|nl|se|pl|jp|example)\b",
    re.IGNORECASE,
)
_SIGNATURE_REACH = 12      # a closing phrase further up than this many lines is not a sign-off
_SIGNATURE_LINES = 8       # more lines than this below it are not a signature
_SENTENCE_END = re.compile(r"[^\W\d]{3,}\.$")   # "...has the manual." (not "Musterstr. 1", not "Inc.")


def has_contact_details(line: str) -> bool:
    return _CONTACT.search(line) is not None


def contact_signature(doc: Doc, block: list[int]) -> tuple[list[int], list[str]]:
    """``block`` without the contact lines of a signature below a closing phrase, and the lines cut."""
    nonblank = [k for k, i in enumerate(block) if doc.bare[i]]
    for k in reversed(nonblank[-_SIGNATURE_REACH:]):
        if _CLOSING_LINE.fullmatch(doc.bare[block[k]]):
            break
    else:
        return block, []
    below = [k2 for k2 in nonblank if k2 > k]
    if not any(has_contact_details(doc.bare[block[k2]]) for k2 in below):
        return block, []
    # A signature is a few short lines, not sentences: words written after "Thanks" stay.
    if len(below) > _SIGNATURE_LINES or any(len(doc.bare[block[k2]]) > 100 or doc.bare[block[k2]].endswith(("?", "!"))
                                            or _SENTENCE_END.search(doc.bare[block[k2]]) for k2 in below):
        return block, []
    keep_until = k + 1
    bare_sign_off = _BARE_CLOSING.fullmatch(doc.bare[block[k]]) is not None
    if bare_sign_off and below and not has_contact_details(doc.bare[block[below[0]]]) \
            and len(doc.bare[block[below[0]]]) <= 80:
        keep_until = below[0] + 1      # the name under a bare sign-off ("Best regards," / "Sam Patel | Acme")
    removed = [doc.raw[block[k2]].strip() for k2 in below if k2 >= keep_until]
    return block[:keep_until], removed
