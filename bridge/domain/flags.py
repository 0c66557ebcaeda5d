"""Conversation flags for a buyer message (pure: text in, flag names out).

``conversation_flags(buyer_text, subject="") -> tuple[str, ...]`` returns, in
this order and each at most once:

``COURTESY REFUND`` (:data:`COURTESY_REFUND`)
    The buyer is answering a brand owner's courtesy-refund offer (docs/marketplaces.md
    "Courtesy refunds (brand owners)"): staff must complete the refund. The
    offer is fixed and non-editable and the buyer's answer arrives as an
    ordinary buyer message, typically a short "Full refund". The exact wording
    is *unverified*, so the rule favours precision over recall:

    1. The *core* of the message is taken: ``>``-quoted lines are dropped, the
       text is cut at a quote header ("On ... wrote:", "-----Original
       Message-----" and their de/fr/es/it/ja forms), greeting lines ("Hi
       Anna,"), thanks lines without a refund word ("Thank you for the
       offer!") and blank lines are dropped, a closing line ("Best regards",
       "Mit freundlichen Grüßen", "よろしくお願いします", "Sent from my
       iPhone"...) ends the core (the signature follows it), and a leading
       greeting / trailing thanks on the same line are trimmed.
    2. The core is *short*: at most :data:`MAX_WORDS` words and at most
       :data:`MAX_WIDTH` characters, a CJK character counting as two (Japanese
       has no spaces, and one kanji carries about a word's worth of meaning).
    3. The core contains a refund *answer* phrase (:data:`REFUND_ANSWER_PATTERNS`:
       "full refund", "refund please", "I accept the refund", "yes ... refund",
       a bare "Refund", and their de/fr/es/it/ja forms). The bare word
       "refund" inside other words is not enough.
    4. The core is not a question ("?", "？", "¿", an interrogative opening
       such as "Can I..." / "Kann ich..." / "Puis-je...", Japanese
       "...ますか") and not a refusal (a negation such as "no", "not",
       "nicht", "pas", "non", "不要"): "Can I get a refund?" asks about the
       return policy, "No refund needed" declines.

    When the subject quotes the offer ("Re: ... courtesy refund ...", its
    other-language forms *unverified*: :data:`OFFER_SUBJECT_PATTERNS`), a bare
    short affirmative ("Yes please", "Ja", "Oui", "はい") is also an answer;
    steps 1, 2 and 4 still apply.

``A-TO-Z CLAIM`` (:data:`A_TO_Z_CLAIM`)
    The buyer's own words (quoted text dropped as in step 1, but the whole
    unquoted text searched, not only the short core) mention an Amazon A-to-z
    Guarantee claim: "A-to-z claim", "AtoZ guarantee", "file an A-to-z",
    "Amazon A to z", "A-bis-z-Garantie", "Garantie A à Z", "Garantía de la A
    a la Z", "Garanzia dalla A alla Z", "マーケットプレイス保証", "AからZ保証"
    (:data:`A_TO_Z_PATTERNS`). "A to Z" alone is *not* enough: it is an idiom
    in every language ("checked it from A to Z", "von A bis Z", "de A à Z")
    and part of brand names ("AtoZ Outdoors"), so the English form needs a
    claim/guarantee word after it, "Amazon" before it, or a filing verb
    ("file/open an A-to-z"); the other languages need their guarantee word.

Patterns are data: tuples of ``(language, regex)``, compiled once,
case-insensitive and Unicode-aware. Text is NFKC-normalised first, so
full-width "ＡｔｏＺ" or "？" match like their ASCII forms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

__all__ = [
    "A_TO_Z_CLAIM",
    "A_TO_Z_PATTERNS",
    "COURTESY_REFUND",
    "MAX_WIDTH",
    "MAX_WORDS",
    "OFFER_SUBJECT_PATTERNS",
    "REFUND_ANSWER_PATTERNS",
    "conversation_flags",
    "courtesy_refund_core",
]

COURTESY_REFUND: Final = "COURTESY REFUND"
A_TO_Z_CLAIM: Final = "A-TO-Z CLAIM"

#: A courtesy-refund answer is short: at most this many words ...
MAX_WORDS: Final = 12
#: ... and at most this many characters (a CJK character counts as two).
MAX_WIDTH: Final = 80

_FLAGS: Final = re.IGNORECASE | re.UNICODE

Patterns = tuple[tuple[str, str], ...]

# --- courtesy refund -------------------------------------------------------

#: Phrases of a buyer *taking* a refund. English from the brief's examples;
#: the other languages are the natural translations, *unverified* against real
#: buyer answers.
REFUND_ANSWER_PATTERNS: Final[Patterns] = (
    ("en", r"\b(?:full|complete|total|entire|courtesy)\s+refund\b"),
    ("en", r"\brefund\W{0,3}\s*(?:please|pls|plz)\b"),
    ("en", r"\bplease\s+(?:issue\s+(?:the\s+|a\s+)?|send\s+(?:the\s+|a\s+)?)?refund\b"),
    ("en", r"\baccept(?:ed|ing)?\s+(?:the\s+|your\s+|a\s+|this\s+)?(?:\w+\s+)?refund\b"),
    ("en", r"\b(?:yes|yeah|yep|sure|ok|okay)\b.*\brefund\b"),
    ("en", r"\b(?:i(?:'d|\s+would)\s+(?:like|prefer)|i\s+want|i(?:'ll|\s+will)\s+take|i\s+choose|i\s+prefer)"
           r"\s+(?:the\s+|a\s+|your\s+)?(?:full\s+)?refund\b"),
    ("en", r"^\W*refund\W*$"),
    # German: "Rückerstattung" also typed "Rueckerstattung"/"Ruckerstattung".
    ("de", r"\b(?:volle|vollständige|komplette|gesamte)\s+(?:r(?:ü|ue|u)ck)?erstattung\b"),
    ("de", r"\b(?:r(?:ü|ue|u)ck)?erstattung\W{0,3}\s*bitte\b"),
    ("de", r"\bbitte\s+(?:um\s+(?:die\s+|eine\s+)?)?(?:r(?:ü|ue|u)ck)?erstattung\b"),
    ("de", r"\bja\b.*\b(?:r(?:ü|ue|u)ck)?erstattung\b"),
    ("de", r"\b(?:nehme|akzeptiere)\s+(?:die\s+|ihre\s+)?(?:\w+\s+)?(?:r(?:ü|ue|u)ck)?erstattung\b"),
    ("de", r"^\W*(?:r(?:ü|ue|u)ck)?erstattung\W*$"),
    ("fr", r"\bremboursement\s+(?:intégral|integral|complet|total)\b"),
    ("fr", r"\bremboursement\W{0,3}\s*(?:s'il\s+vous\s+pla[iî]t|svp|stp)\b"),
    ("fr", r"\boui\b.*\bremboursement\b"),
    ("fr", r"\bj'accepte\s+(?:le\s+|votre\s+)?remboursement\b"),
    ("fr", r"^\W*remboursement\W*$"),
    ("es", r"\breembolso\s+(?:completo|total|íntegro|integro)\b"),
    ("es", r"\breembolso\W{0,3}\s*por\s+favor\b"),
    ("es", r"\bs[ií]\b.*\breembolso\b"),
    ("es", r"\bacepto\s+(?:el\s+|su\s+)?reembolso\b"),
    ("es", r"^\W*reembolso\W*$"),
    ("it", r"\brimborso\s+(?:completo|totale|integrale)\b"),
    ("it", r"\brimborso\W{0,3}\s*per\s+favore\b"),
    ("it", r"\bs[iì]\b.*\brimborso\b"),
    ("it", r"\baccetto\s+(?:il\s+)?rimborso\b"),
    ("it", r"^\W*rimborso\W*$"),
    ("ja", r"全額返金"),
    ("ja", r"返金を?(?:希望|お願い|して(?:ください|下さい)|でお願い)"),
    ("ja", r"返金で(?:結構|大丈夫|構いません)"),
    ("ja", r"^\W*返金\W*$"),
)

#: With the offer quoted in the subject, a bare yes is an answer too.
_AFFIRMATIVE_PATTERNS: Final[Patterns] = (
    ("en", r"^\W*(?:yes|yeah|yep|sure|ok|okay|i\s+accept)(?:\W+please)?\W*$"),
    ("de", r"^\W*(?:ja|gerne|gern|einverstanden)(?:\W+bitte)?\W*$"),
    ("fr", r"^\W*(?:oui|d'accord|j'accepte)(?:\W+(?:merci|svp|s'il\s+vous\s+pla[iî]t))?\W*$"),
    ("es", r"^\W*(?:s[ií]|acepto|de\s+acuerdo)(?:\W+por\s+favor)?\W*$"),
    ("it", r"^\W*(?:s[iì]|accetto|va\s+bene)(?:\W+per\s+favore)?\W*$"),
    ("ja", r"^\W*(?:はい|お願いします|承知しました)\W*$"),
)

#: The subject of Amazon's courtesy-refund offer as quoted in a reply. The
#: offer's real subject line is *unverified* (all languages); "courtesy
#: refund" is the Seller Central name of the feature.
OFFER_SUBJECT_PATTERNS: Final[Patterns] = (
    ("en", r"\bcourtesy\s+refund\b"),
    ("de", r"\bkulanz\w*(?:\s+(?:r(?:ü|ue|u)ck)?erstattung)?\b"),
    ("fr", r"\bremboursement\s+(?:de\s+courtoisie|à\s+titre\s+gracieux|commercial)\b"),
    ("es", r"\breembolso\s+de\s+cortes[ií]a\b"),
    ("it", r"\brimborso\s+di\s+cortesia\b"),
    ("ja", r"(?:好意|厚意|サービス)による返金|返金のご提案"),
)

# Questions and refusals never count as an answer.
_QUESTION_PATTERNS: Final[Patterns] = (
    ("any", r"[?¿]"),
    ("en", r"^\W*(?:can|could|may|might|how|when|why|what|where|will\s+you|would\s+you|do\s+you|does|is\s+it"
           r"|am\s+i|are\s+you|should)\b"),
    ("de", r"^\W*(?:kann|könnte|können|wie|wann|warum|wo|ist\s+es|bekomme\s+ich|gibt\s+es)\b"),
    ("fr", r"^\W*(?:puis-je|pourrais|pouvez|pourriez|comment|quand|pourquoi|est-ce|ai-je)\b"),
    ("es", r"^\W*(?:puedo|podría|podria|pueden|cómo|como|cuándo|cuando|por\s+qué|es\s+posible)\b"),
    ("it", r"^\W*(?:posso|potrei|potete|come|quando|perché|perche|è\s+possibile)\b"),
    ("ja", r"(?:ですか|ますか|でしょうか|ませんか)\W*$"),
)

_NEGATION_PATTERNS: Final[Patterns] = (
    ("en", r"\b(?:no|not|don't|dont|doesn't|never|without|nope|decline\w*|refuse\w*)\b"),
    ("de", r"\b(?:nein|nicht|kein\w*|ablehn\w*|lehne)\b"),
    ("fr", r"\b(?:non|pas|refuse\w*|jamais)\b"),
    ("es", r"\b(?:no|nunca|rechazo|sin)\b"),
    ("it", r"\b(?:no|non|rifiuto|senza)\b"),
    ("ja", r"不要|いりません|いらない|要りません|結構です|しません|しない|辞退"),
)

# --- A-to-z Guarantee -------------------------------------------------------

# "A-to-z", "A to Z", "AtoZ", "A‐to‐z" (any dash); not inside a longer word.
_ATOZ = r"(?<![a-z0-9])a\s*[-‐‑–—]?\s*to\s*[-‐‑–—]?\s*z(?![a-z0-9])"

#: Mentions of an A-to-z Guarantee claim. English is Amazon's own spelling
#: ("A-to-z Guarantee"). The other languages are the marketplace names as
#: best known, *unverified*: de "A-bis-z-Garantie", fr "Garantie A à Z",
#: es "Garantía de la A a la Z", it "Garanzia dalla A alla Z",
#: ja "(Amazon)マーケットプレイス保証" / "AからZ保証".
A_TO_Z_PATTERNS: Final[Patterns] = (
    ("en", _ATOZ + r"\s*(?:guarantee|claim|case|dispute|protection|保証)"),
    ("en", r"\bamazon(?:'s|s)?\s+" + _ATOZ),
    ("en", r"\b(?:file|filed|filing|open|opened|opening|submit|submitted|submitting|raise|raised|raising"
           r"|start|started|lodge|lodged|make|made)\s+(?:an?\s+|my\s+|the\s+)?" + _ATOZ),
    ("de", r"(?<![a-z0-9])a\s*[-‐‑–—]?\s*(?:bis\s*[-‐‑–—]?\s*)?z\s*[-‐‑–—]?\s*garantie"),
    ("fr", r"\bgarantie\s+(?:d'\s*)?a\s*(?:à|a|-)\s*z(?![a-z0-9])"),
    ("es", r"\bgarant[ií]a\s+(?:de\s+)?(?:la\s+)?a\s+a\s+la\s+z(?![a-z0-9])"),
    ("it", r"\bgaranzia\s+(?:dalla\s+)?a\s+(?:alla\s+)?z(?![a-z0-9])"),
    ("ja", r"マーケットプレイス保証"),
    ("ja", r"(?<![a-z0-9])a\s*(?:から|to|-)?\s*z\s*保証"),
)

# --- stripping to the core ----------------------------------------------------

_QUOTE_HEADER_PATTERNS: Final[Patterns] = (
    ("any", r"^\s*-{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine"
            r"|mensaje\s+original|messaggio\s+originale|元のメッセージ)\s*-{2,}\s*$"),
    ("en", r"^\s*on\s.+\swrote:\s*$"),
    ("de", r"^\s*am\s.+\sschrieb.*:\s*$"),
    ("fr", r"^\s*le\s.+\sa\s+écrit\s*:\s*$"),
    ("es", r"^\s*el\s.+\sescribió\s*:\s*$"),
    ("it", r"^\s*il\s.+\sha\s+scritto\s*:\s*$"),
    ("ja", r"^.*(?:さんは書きました|wrote)\s*:\s*$"),
)

_GREETING = (
    r"(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening)|hallo|guten\s+(?:tag|morgen|abend)"
    r"|sehr\s+geehrte[rs]?|liebe[rs]?|moin|servus|bonjour|bonsoir|salut|madame|monsieur|hola"
    r"|buen(?:os|as)\s+(?:d[ií]as|tardes|noches)|estimad[oa]s?|ciao|salve|buongiorno|buonasera|gentile"
    r"|こんにちは|お世話になっております|お世話になります)"
)
_THANKS = (
    r"(?:thanks?(?:\s+you)?|thx|ty|danke(?:\s+schön|\s+sehr)?|vielen\s+dank|merci(?:\s+beaucoup)?"
    r"|gracias|muchas\s+gracias|grazie(?:\s+mille)?|ありがとうございます|ありがとうございました|ありがとう)"
)
_CLOSING = (
    r"(?:(?:best|kind|warm|many)?\s*regards|best(?:\s+wishes)?|cheers|sincerely|yours(?:\s+\w+)?"
    r"|(?:mit\s+)?freundlichen\s+grüßen|(?:viele|liebe|beste)\s+grüße|grüße|mfg|lg|vg"
    r"|cordialement|bien\s+à\s+vous|salutations|(?:un\s+)?saludo|saludos(?:\s+cordiales)?|atentamente"
    r"|cordiali\s+saluti|distinti\s+saluti|saluti|un\s+saluto"
    r"|よろしくお願いします|よろしくお願いいたします|宜しくお願いします|宜しくお願い致します"
    r"|sent\s+from\s+my\s+.+|von\s+meinem\s+.+\s+gesendet|envoyé\s+de\s+mon\s+.+|enviado\s+desde\s+mi\s+.+"
    r"|inviato\s+da(?:l)?\s+.+|.*から送信)"
)
_REFUND_WORDS: Final = ("refund", "erstattung", "remboursement", "reembolso", "rimborso", "返金")
_REFUND_WORD = "(?:" + "|".join(map(re.escape, _REFUND_WORDS)) + ")"

_GREETING_LINE: Final = re.compile(r"^\W*" + _GREETING + r"\b(?:\s+[\w.'-]+){0,3}\W*$", _FLAGS)
_THANKS_LINE: Final = re.compile(r"^\W*" + _THANKS + r"(?:\W+\w+){0,6}\W*$", _FLAGS)
_CLOSING_LINE: Final = re.compile(r"^\W*(?:--\s*$|" + _CLOSING + r"\W*$)", _FLAGS)
_LEADING_GREETING: Final = re.compile(r"^\W*" + _GREETING + r"\b(?:\s+\w+)?[,!:、。]+\s*", _FLAGS)
_TRAILING_THANKS: Final = re.compile(
    r"(?:^|[\s,.!;、。])+\W*(?:" + _THANKS + r"|" + _CLOSING + r")(?:\s+(?:so|very)\s+much|\s+in\s+advance)?\W*$",
    _FLAGS,
)
_REFUND_WORD_RE: Final = re.compile(_REFUND_WORD, _FLAGS)
# A superset of _ATOZ on lowered text (no look-arounds, any run of separators): a pre-check only.
_LOOSE_ATOZ: Final = re.compile(r"a[\s\-‐‑–—]*to[\s\-‐‑–—]*z")
_WORD: Final = re.compile(r"\w+", _FLAGS)


def _compile(patterns: Iterable[tuple[str, str]]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(regex, _FLAGS) for _language, regex in patterns)


_REFUND_ANSWER_RES: Final = _compile(REFUND_ANSWER_PATTERNS)
_AFFIRMATIVE_RES: Final = _compile(_AFFIRMATIVE_PATTERNS)
_OFFER_SUBJECT_RES: Final = _compile(OFFER_SUBJECT_PATTERNS)
_QUESTION_RES: Final = _compile(_QUESTION_PATTERNS)
_NEGATION_RES: Final = _compile(_NEGATION_PATTERNS)
_A_TO_Z_RES: Final = _compile(A_TO_Z_PATTERNS)
# One alternation over the per-line quote-header patterns: each is anchored at the
# start of its line, so the alternation is matched there, once per line.
_QUOTE_HEADER_RE: Final = re.compile("|".join(f"(?:{regex})" for _language, regex in _QUOTE_HEADER_PATTERNS),
                                     _FLAGS)


def _any(patterns: tuple[re.Pattern[str], ...], text: str) -> bool:
    return any(p.search(text) for p in patterns)


def _offer_quoted(subject: str) -> bool:
    """The subject quotes the seller's courtesy-refund offer (OFFER_SUBJECT_PATTERNS)."""
    return _any(_OFFER_SUBJECT_RES, unicodedata.normalize("NFKC", subject))


def _unquoted_lines(text: str) -> list[str]:
    """The buyer's own lines: NFKC-normalised, ``>`` quotes and quote tails dropped."""
    lines: list[str] = []
    for line in unicodedata.normalize("NFKC", text).splitlines():
        if _QUOTE_HEADER_RE.match(line):
            break  # everything below a quote header is the earlier message
        if not line.lstrip().startswith(">"):
            lines.append(line.strip())
    return lines


def courtesy_refund_core(buyer_text: str) -> str:
    """The words a courtesy-refund answer is judged on (step 1 of the rule).

    Quotes, quote tails, greeting lines, thanks lines without a refund word,
    blank lines and everything from a closing line down are removed; a leading
    greeting and trailing thanks on the remaining text are trimmed.
    """
    kept: list[str] = []
    for line in _unquoted_lines(buyer_text):
        if not line:
            continue
        if kept and _CLOSING_LINE.match(line):
            break  # the signature follows a closing line
        if _CLOSING_LINE.match(line) and not _REFUND_WORD_RE.search(line):
            continue
        if _GREETING_LINE.match(line) and not _REFUND_WORD_RE.search(line):
            continue
        if _THANKS_LINE.match(line) and not _REFUND_WORD_RE.search(line):
            continue
        kept.append(line)
    core = " ".join(kept)
    core = _LEADING_GREETING.sub("", core, count=1)
    previous = None
    while previous != core:  # "Full refund please, thanks, regards" -> "Full refund please"
        previous = core
        core = _TRAILING_THANKS.sub("", core).strip()
    return core


def _width(text: str) -> int:
    # East Asian wide characters carry about a word each; count them double.
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _is_courtesy_refund_answer(buyer_text: str, subject: str) -> bool:
    core = courtesy_refund_core(buyer_text)
    if not core:
        return False
    if len(_WORD.findall(core)) > MAX_WORDS or _width(core) > MAX_WIDTH:
        return False  # a long message mentioning a refund is a complaint, not an answer
    if _any(_QUESTION_RES, core) or _any(_NEGATION_RES, core):
        return False
    if _any(_REFUND_ANSWER_RES, core):
        return True
    offer_quoted = _offer_quoted(subject)
    return offer_quoted and _any(_AFFIRMATIVE_RES, core)


def conversation_flags(buyer_text: str, subject: str = "") -> tuple[str, ...]:
    """Flags for one buyer message: ``COURTESY REFUND`` then ``A-TO-Z CLAIM``.

    *buyer_text* is the buyer's message body (plain text); ``>``-quoted lines
    and anything below a quote header are ignored. *subject* is the mail's
    subject; it only widens the courtesy-refund rule when it quotes the offer.
    See the module docstring for the rules. Never raises for odd text.
    """
    # A design choice, not a benchmark figure: the full rules run dozens of case-insensitive
    # patterns, milliseconds on a buyer message of a few KB (more than the rest of ingest),
    # so they run only on text that could hold a flag. Every refund-answer pattern contains
    # a refund word (or the subject quotes the offer); every A-to-z pattern contains "garan",
    # 保証 or an a-to-z shape. The checks run on lowered text; "İ" is the one character
    # str.lower() folds differently from the regex engine, so text holding it goes straight
    # to the full rules. test_pre_checks_never_change_the_result holds them to the rules.
    text = unicodedata.normalize("NFKC", buyer_text)
    lowered = text.lower()
    exotic = "\u0130" in text
    flags: list[str] = []
    might_answer = exotic or any(word in lowered for word in _REFUND_WORDS) or \
        _offer_quoted(subject)
    if might_answer and _is_courtesy_refund_answer(buyer_text, subject):
        flags.append(COURTESY_REFUND)
    if exotic or "z" in lowered or "保証" in text:
        own = "\n".join(_unquoted_lines(buyer_text))
        own_lowered = own.lower()
        if (exotic or "garan" in own_lowered or "保証" in own or _LOOSE_ATOZ.search(own_lowered)) and \
                _any(_A_TO_Z_RES, own):
            flags.append(A_TO_Z_CLAIM)
    return tuple(flags)
