"""Rule 4, ``signature``: the "-- " block and the "Sent from my iPhone" lines.

Sign-offs such as "Best regards, Anna" are the staff's words and stay.
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
