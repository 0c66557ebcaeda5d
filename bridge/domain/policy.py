"""The compliance guard: every email to a buyer passes :func:`check` (pure).

Contract for the outbox (and for ``mailbridge policy check FILE``):

- ``check(draft, ctx, config) -> Decision``. No I/O, no clock: ``ctx.now`` is
  passed in. Every rule of :data:`RULES` runs (unless its mode is ``off``) and
  every occurrence it objects to becomes one :class:`Finding`, so staff see
  all problems at once, not one per round trip.
- ``Decision.allowed`` is False as soon as one finding has severity ``block``.
  Findings of rules in ``warn`` mode are kept (audit log, staff notice) but
  never stop the message.
- Rule ids are stable: they are stored in the audit log and named in config
  (``PolicyConfig(modes={"no_links": "warn"})``). Renaming one is a migration.
- Content rules look at ``draft.text`` (our own words) only. The buyer's quoted
  original (``draft.quoted_original``) is the buyer's text: it may contain
  their phone number or a link, and quoting it is required, not a violation.

Source of every rule: Amazon's Buyer-Seller Messaging guidelines as summarised
in DOMAIN.md ("Replying", "Content rules", "Critical vs unsolicited", "Buyer
opt-out"). Wording lists in languages other than English are our own
renderings, kept as data below so a reviewer can extend them without touching
the logic.

Decisions taken here (documented so the wiring and the operator know):

- ``no_links``: the default allowlist holds Amazon's own marketplace domains
  (``amazon.com``, ``amazon.de``, ... and their sub-domains). A link to the
  buyer's order page or Amazon's returns centre is "needed by the order" and
  does not lead off the platform; any other domain must be allowlisted by the
  operator. Set ``link_allowlist=()`` to forbid every link.
- ``text_length`` counts ``draft.text`` only (the quoted original is not ours
  to shorten) and also blocks an empty message.
- ``proactive_window``: an unknown completion date blocks unsolicited mail
  (we cannot prove it is inside the window) but not critical mail, which is
  typically needed *before* the order completes (customisation, address).
- Naive datetimes are taken as UTC.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses
from enum import StrEnum
from types import MappingProxyType

from bridge.domain.marketplaces import (
    AMAZON_TLDS,
    ATTACHMENT_TYPES,
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
)
from bridge.domain.marketplaces.layout import squash
from bridge.domain.threads import split_relay_address

# --------------------------------------------------------------------------- values


class Category(StrEnum):
    """Why we write to the buyer (DOMAIN.md, "Critical vs unsolicited")."""

    REPLY = "reply"                # a reply on a thread the buyer started: always allowed, even after opt-out
    CRITICAL = "critical"          # proactive, needed to complete the order (customisation, delivery, address)
    UNSOLICITED = "unsolicited"    # proactive, anything else (feedback/review request, manuals, ...)


PROACTIVE = frozenset({Category.CRITICAL, Category.UNSOLICITED})


class Mode(StrEnum):
    """What a rule's hit does: stop the message, only record it, or nothing."""

    BLOCK = "block"
    WARN = "warn"
    OFF = "off"


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"


@dataclass(frozen=True, kw_only=True)
class AttachmentInfo:
    filename: str
    content_type: str
    size: int                      # bytes, decoded


@dataclass(frozen=True, kw_only=True)
class Draft:
    """One outbound message to a buyer, as it would be sent."""

    from_addr: str
    to_addr: str
    subject: str
    text: str                      # our own words (no quoted original)
    category: Category
    attachments: tuple[AttachmentInfo, ...] = ()
    quoted_original: str | None = None   # the buyer's message as quoted below our text (replies)


@dataclass(frozen=True, kw_only=True)
class PolicyContext:
    """What the store knows about the account, the buyer and the order at send time."""

    seller_address: str                         # the account's registered BSM address
    buyer_alias: str | None                     # relay alias of this conversation's/order's buyer
    now: datetime
    buyer_opted_out: bool = False
    buyer_do_not_solicit: bool = False
    order_completed_at: datetime | None = None
    account_restricted_until: datetime | None = None
    buyer_original_text: str | None = None      # the buyer's own words we reply to


def _default_link_allowlist() -> tuple[str, ...]:
    return tuple(f"amazon.{tld}" for tld in AMAZON_TLDS)


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Operator settings. ``modes`` maps a rule id to ``block`` | ``warn`` | ``off``
    (absent: ``block``). Unknown rule ids and bad values raise ``ValueError``
    naming the key, so a typo in the TOML fails at start."""

    modes: Mapping[str, str] = field(default_factory=dict, hash=False)
    link_allowlist: tuple[str, ...] = field(default_factory=_default_link_allowlist)
    allowed_attachment_types: tuple[str, ...] = ATTACHMENT_TYPES   # file extensions
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES                # all attachments together
    max_attachments: int = MAX_ATTACHMENTS
    max_text_chars: int = 2000
    proactive_window_days: int = 30

    def __post_init__(self) -> None:
        known = set(RULE_IDS)
        modes: dict[str, Mode] = {}
        for rule_id, value in self.modes.items():
            if rule_id not in known:
                raise ValueError(f"policy.modes: unknown rule id {rule_id!r} (known: {', '.join(RULE_IDS)})")
            try:
                modes[rule_id] = Mode(str(value).strip().lower())
            except ValueError:
                raise ValueError(f"policy.modes.{rule_id}: {value!r} is not one of block, warn, off") from None
        object.__setattr__(self, "modes", MappingProxyType(modes))
        object.__setattr__(self, "link_allowlist", tuple(
            d.strip().lower().lstrip(".").removeprefix("www.") for d in self.link_allowlist if d.strip()))
        object.__setattr__(self, "allowed_attachment_types", tuple(
            t.strip().lower().lstrip(".") for t in self.allowed_attachment_types if t.strip()))
        for name in ("max_attachment_bytes", "max_attachments", "max_text_chars", "proactive_window_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"policy.{name}: must be a whole number >= 0, got {value!r}")

    def mode(self, rule_id: str) -> Mode:
        return Mode(self.modes.get(rule_id, Mode.BLOCK))


@dataclass(frozen=True)
class Finding:
    rule: str                           # stable rule id
    severity: Severity
    reason: str                         # what is wrong and how to fix it
    excerpt: str | None = None          # the offending text
    span: tuple[int, int] | None = None  # offsets of ``excerpt`` in draft.text


@dataclass(frozen=True)
class Decision:
    allowed: bool
    findings: tuple[Finding, ...]
    evaluated: tuple[str, ...] = ()     # rule ids that ran (mode not ``off``), for the audit log

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.BLOCK)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARN)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the rules that objected, in rule order, once each."""
        return tuple(dict.fromkeys(f.rule for f in self.findings))


@dataclass(frozen=True)
class Hit:
    """What a rule function yields; :func:`check` adds the rule id and severity."""

    reason: str
    excerpt: str | None = None
    span: tuple[int, int] | None = None


RuleCheck = Callable[[Draft, PolicyContext, PolicyConfig], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    check: RuleCheck
    summary: str


# --------------------------------------------------------------------------- helpers


def _addresses(value: str) -> list[str]:
    return [addr.strip().lower() for _, addr in getaddresses([value]) if addr.strip()]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@functools.cache
def _compiled(table: tuple[tuple[str, str, str], ...]) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    # Compiled on first use of each table: compiling the 65 patterns at import took
    # 14 ms of every start, and only a reply to a buyer needs them.
    return tuple((lang, what, re.compile(rx, re.IGNORECASE)) for lang, what, rx in table)


def _pattern_hits(patterns: tuple[tuple[str, str, re.Pattern[str]], ...], text: str,
                  reason: Callable[[str, str], str]) -> Iterator[Hit]:
    """One hit per matched stretch of text (overlapping patterns report once)."""
    taken: list[tuple[int, int]] = []
    found: list[Hit] = []
    for _lang, what, pattern in patterns:
        for m in pattern.finditer(text):
            start, end = m.span()
            if start == end or any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(Hit(reason(what, m.group(0)), m.group(0), (start, end)))
    yield from sorted(found, key=lambda h: h.span or (0, 0))


# --------------------------------------------------------------------------- 1. addresses


def sender_is_registered(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """Amazon only relays mail from the seller's registered address; anything else is dropped, often silently."""
    registered = _addresses(ctx.seller_address)
    sender = _addresses(draft.from_addr)
    if not registered:
        yield Hit("No registered seller address is configured for this account: set the account's "
                  "registered Buyer-Seller Messaging address before sending.")
        return
    if len(sender) != 1 or sender[0] != registered[0]:
        yield Hit(f"The message would be sent from {draft.from_addr.strip() or '(no address)'!r}, but Amazon only "
                  f"relays mail from the registered address {registered[0]!r}: send it from that address.",
                  draft.from_addr or None)


def recipient_is_conversation_buyer(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """Only the relay alias of this conversation's (or order's) buyer, ``+case`` variants included; nothing else, ever."""
    recipients = _addresses(draft.to_addr)
    if ctx.buyer_alias is None or not ctx.buyer_alias.strip():
        yield Hit("The buyer of this conversation is unknown: mailbridge only writes to the relay address of "
                  "the buyer of an existing conversation or order.", draft.to_addr or None)
        return
    if len(recipients) != 1:
        yield Hit(f"The message must go to exactly one address, the buyer's relay alias "
                  f"{ctx.buyer_alias.strip().lower()!r}; it names {len(recipients)}.", draft.to_addr or None)
        return
    if not _same_buyer(recipients[0], ctx.buyer_alias):
        yield Hit(f"{recipients[0]!r} is not the relay address of this conversation's buyer "
                  f"({ctx.buyer_alias.strip().lower()!r}): reply on the buyer's own thread; mailbridge never "
                  f"writes to any other address.", draft.to_addr)


def _same_buyer(addr: str, alias: str) -> bool:
    alias = alias.strip().lower()
    if addr == alias:
        return True
    domain = alias.rpartition("@")[2]
    ours = split_relay_address(alias, frozenset({domain}))
    theirs = split_relay_address(addr, frozenset({domain}))
    # "<alias>+<case id>@<same domain>" is the same buyer (DOMAIN.md: the part before "+" is the key).
    return ours is not None and theirs is not None and ours[0] == theirs[0]


# --------------------------------------------------------------------------- 2. permission


def no_unsolicited_to_opted_out(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No unsolicited message to a buyer who opted out or is on the Do-Not-Solicit list (replies and critical mail still go)."""
    if draft.category is not Category.UNSOLICITED:
        return
    if ctx.buyer_opted_out:
        yield Hit("The buyer has opted out of unsolicited messages: Amazon will not deliver this one. "
                  "Only replies to the buyer's own messages and messages needed to complete the order may be sent.")
    if ctx.buyer_do_not_solicit:
        yield Hit("The buyer is on the Do-Not-Solicit list: no feedback requests or other unsolicited messages.")


_QUOTE_PREFIX_RE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)


def _essential(text: str) -> str:
    """Text compared for quoting: ``>`` prefixes, all whitespace and case removed."""
    return squash(_QUOTE_PREFIX_RE.sub("", text))


def reply_quotes_original(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """A reply must include the buyer's original message below it (Amazon's reply rule)."""
    if draft.category is not Category.REPLY:
        return
    quoted = _essential(draft.quoted_original or "")
    if not quoted:
        yield Hit("A reply must include the buyer's original message below your text: keep the quoted message "
                  "when you reply.")
        return
    original = _essential(ctx.buyer_original_text or "")
    if original and original not in quoted:
        first_line = next((line.strip() for line in (ctx.buyer_original_text or "").splitlines() if line.strip()), "")
        yield Hit("The quoted text does not contain the buyer's original message: quote the buyer's whole "
                  "message, unchanged, below your reply.", first_line[:120] or None)


# --------------------------------------------------------------------------- 3. content: links, contact details

# Top-level domains that make a bare "word.tld" a link. Deliberately without
# TLDs that are also common file extensions or words after a missing space
# (zip, mov, pdf, no, is, to): "manual.pdf" and "Ref.no" are not links.
# "example" is here so documentation-style names (acme.example) count too.
LINK_TLDS: frozenset[str] = frozenset((
    "com", "net", "org", "info", "biz", "io", "co", "me", "app", "dev", "shop", "store", "online", "site",
    "website", "xyz", "top", "club", "link", "click", "email", "page", "blog", "tech", "eu", "uk", "de",
    "fr", "es", "it", "nl", "be", "at", "ch", "pl", "se", "dk", "fi", "pt", "ie", "cz", "jp", "cn", "us",
    "ca", "au", "mx", "br", "in", "sg", "ae", "tr", "ly", "gl", "gd", "tv", "cc", "ws", "ru", "example",
))
_LINK_RE = re.compile(
    r"(?P<url>\b(?:https?|ftp)://[^\s<>\"']+)"
    r"|(?P<www>(?<![\w@.\-/])www\d{0,3}\.[^\s<>\"']+)"
    r"|(?P<bare>(?<![\w@.\-/])(?P<host>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(?![\w@-])"
    r"(?:[/?#][^\s<>\"']*)?)",
    re.IGNORECASE,
)
_TRAILING_PUNCT = ".,;:!?)]}'\"»”’"


def _bare_domain_is_link(host: str) -> bool:
    """"acme.shop", "ACME.COM", "amazon.com.evil.example": a known TLD as the last
    label (or inside). Not "manual.pdf", "e.g", "Mr.Smith", nor "item.It" (a
    missing space before a capitalised word)."""
    labels = host.split(".")[1:]
    last = labels[-1]
    if last.lower() in LINK_TLDS:
        return not (last[0].isupper() and last[1:].islower())
    return any(label in LINK_TLDS for label in labels[:-1])


def _link_host(link: str) -> str:
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", link, flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", host, maxsplit=1)[0]
    return host.rpartition("@")[2].lower().rstrip(".")


def _allowlisted(host: str, allowlist: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in allowlist)


def find_links(text: str) -> Iterator[tuple[str, int, int]]:
    """Every link in ``text`` as (link, start, end): URLs, ``www.`` names and bare domains such as ``acme.shop``."""
    for m in _LINK_RE.finditer(text):
        host = m.group("host")
        if host and not _bare_domain_is_link(host):
            continue
        link, start = m.group(0), m.start()
        stripped = link.rstrip(_TRAILING_PUNCT)
        if stripped:
            yield stripped, start, start + len(stripped)


def no_links(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No links the order does not need: only domains on the operator's allowlist (Amazon's own by default)."""
    for link, start, end in find_links(draft.text):
        host = _link_host(link)
        if _allowlisted(host, config.link_allowlist):
            continue
        yield Hit(f"Links are not allowed in messages to buyers ({host!r} is not on the allowlist): remove the "
                  f"link and describe the information in words, or ask the operator to allowlist the domain "
                  f"if the order truly needs it.", link, (start, end))


_EMAIL_RE = re.compile(
    r"(?<![\w.+%-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+"
    r"|(?<!\w)[a-z0-9._%+-]+\s*(?:\[at\]|\(at\)|\{at\})\s*[a-z0-9-]+\s*(?:\[dot\]|\(dot\)|\{dot\}|\.)\s*[a-z]{2,}"
    r"|(?<!\w)[a-z0-9._%+-]+ at [a-z0-9-]+ dot [a-z]{2,}\b"
    r"|\bmailto:\S+",
    re.IGNORECASE,
)
# A run of digits with phone-like separators, never part of a longer word or
# number ("1Z999AA10123456784" and "B0ABCDEF12" start inside a word). Newlines
# are not separators.
_PHONE_CANDIDATE_RE = re.compile(
    r"(?<![\w+/.,-])(?:\+|\(\+?|00)?\d(?:[ \t.\-/()]{0,3}\d){5,}(?!\w|[.,/-]\d)"
)
_ORDER_ID_RE = re.compile(r"(?:\d{3}|D01)-\d{7}-\d{7}", re.IGNORECASE)
_DATE_RES = (
    re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}"),
    re.compile(r"\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"),
)
# North American 10-digit numbers: area code and exchange start 2-9.
_NANP_RE = re.compile(r"(?:1[-. ]?)?\(?[2-9]\d{2}\)?[-. ]?[2-9]\d{2}[-. ]\d{4}")
_PHONE_CONTEXT_RE = re.compile(
    r"(?:\b(?:call|phone|tel|telephone|mobile|cell|whats\s?app|fax|ring|text|sms|dial|hotline|"
    r"telefon|handy|rufen|anrufen|t[ée]l[ée]phone|portable|appel(?:ez|er)|tel[ée]fono|m[óo]vil|llam[ae]|"
    r"cellulare|chiam[ai])\b|電話|携帯|TEL)[^\n\d]{0,25}$",
    re.IGNORECASE,
)


def _is_phone(candidate: str, before: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if digits < 7 or digits > 15 or _ORDER_ID_RE.fullmatch(candidate):
        return False
    if any(rx.fullmatch(candidate) for rx in _DATE_RES):
        return False
    if candidate.startswith(("+", "(+", "00")) and digits >= 8:
        return True                                   # international: +49 30 1234567, 0044 20 ...
    if _NANP_RE.fullmatch(candidate):
        return True                                   # (555) 234-5678, 555.234.5678
    separated = any(not ch.isdigit() for ch in candidate)
    if candidate.startswith("0") and 9 <= digits <= 12 and separated:
        return True                                   # local with trunk 0: 030 1234567, 06 12 34 56 78, 03-1234-5678
    return bool(_PHONE_CONTEXT_RE.search(before))      # "call me on 5551234"


def find_phone_numbers(text: str) -> Iterator[tuple[str, int, int]]:
    """Phone numbers in ``text`` as (number, start, end); order ids, dates, prices,
    tracking numbers and postal codes are not phone numbers."""
    for m in _PHONE_CANDIDATE_RE.finditer(text):
        candidate = m.group(0).rstrip(" .-/(")
        if _is_phone(candidate, text[max(0, m.start() - 40):m.start()]):
            yield candidate, m.start(), m.start() + len(candidate)


def no_contact_details(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No email addresses or phone numbers: all contact goes through Buyer-Seller Messaging."""
    for m in _EMAIL_RE.finditer(draft.text):
        yield Hit("Email addresses are not allowed in messages to buyers: remove it; the buyer can answer "
                  "this message through Amazon.", m.group(0), m.span())
    for number, start, end in find_phone_numbers(draft.text):
        yield Hit("Phone numbers are not allowed in messages to buyers: remove it and keep the conversation "
                  "in Buyer-Seller Messaging.", number, (start, end))


# --------------------------------------------------------------------------- 4. content: wording

_REVIEW_EN = r"(?:review|feedback|rating)s?"
_INCENTIVE_EN = (r"(?:refund|gift(?:\s*card)?|discount|coupon|voucher|reward|free\s+\w+|cash\s*back|rebate|"
                 r"compensation|money\s+back|bonus)")
_REVIEW_DE = r"(?:Bewertung|Rezension|Kundenrezension|Feedback|Sternebewertung)(?:en)?"
_INCENTIVE_DE = r"(?:Rückerstattung|Erstattung|Gutschein|Geschenk|Rabatt|Prämie|Belohnung|Geld\s+zurück)"
_REVIEW_FR = r"(?:avis|évaluation|commentaire|note)s?"
_INCENTIVE_FR = r"(?:remboursement|cadeau|réduction|remise|bon\s+d'achat|coupon|récompense)"
_REVIEW_ES = r"(?:reseña|opinión|valoración|comentario|calificación)(?:es|s)?"
_INCENTIVE_ES = r"(?:reembolso|regalo|descuento|cupón|vale|recompensa)"
_REVIEW_IT = r"(?:recensione|recensioni|valutazione|valutazioni|feedback)"
_INCENTIVE_IT = r"(?:rimborso|regalo|sconto|buono|coupon|omaggio|premio)"
_REVIEW_JA = r"(?:レビュー|評価|カスタマーレビュー)"
_INCENTIVE_JA = r"(?:返金|プレゼント|割引|クーポン|ギフト券|ギフトカード|特典|ポイント)"

# (language, what it is, regex). Incentives, asks for a *positive* review, asks
# to change or remove one, and review gating ("only if you are happy").
# Non-English lists are our own renderings of the same asks.
REVIEW_MANIPULATION_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("en", "asks for a positive review",
     rf"\b(?:positive|good|great|nice|excellent|glowing|favou?rable|awesome|perfect|top)\s+{_REVIEW_EN}"),
    ("en", "asks for a star rating", r"\b(?:5|five)[- ]?stars?\b|\b(?:5|five)[- ]star\b|★{4,}"),
    ("en", "offers something for a review",
     rf"\b{_INCENTIVE_EN}\b[^.!?\n]{{0,80}}\b(?:in exchange for|in return for|if you|once you|after you|when you|"
     rf"for leaving|for writing|for posting)\b[^.!?\n]{{0,40}}\b{_REVIEW_EN}"),
    ("en", "offers something for a review",
     rf"\b(?:in exchange for|in return for|for leaving|for writing|for posting|if you (?:leave|write|post|give)|"
     rf"once you (?:leave|write|post))\b[^.!?\n]{{0,40}}\b{_REVIEW_EN}\b[^.!?\n]{{0,80}}\b{_INCENTIVE_EN}"),
    ("en", "asks to change or remove a review",
     r"\b(?:(?:chang|remov|delet|updat|revis|amend|edit|withdr[ae]w|reconsider|retract|modif|rais|improv|upgrad)"
     r"\w*|tak(?:e|es|ing|en)\s+down)\s+(?:(?:your|the|this|that|my|our|negative|bad|poor|critical|low|"
     r"1-star|one-star|2-star|two-star|previous|recent)\s+){0,3}" + _REVIEW_EN + r"\b"),
    ("en", "asks only satisfied buyers for a review",
     rf"\bif you(?:'re| are| were)? (?:happy|satisfied|pleased|delighted)\b[^.!?\n]{{0,60}}\b{_REVIEW_EN}"),
    ("en", "asks to contact the seller before reviewing",
     rf"\bbefore (?:leaving|writing|posting|giving) (?:a |any |your )?(?:negative |bad |poor )?{_REVIEW_EN}"),
    ("de", "asks for a positive review",
     rf"\b(?:positive|gute|sehr gute|tolle|hervorragende)[nr]?\s+{_REVIEW_DE}"),
    ("de", "asks for a star rating", r"\b(?:5|fünf)[- ]?Sterne"),
    ("de", "offers something for a review",
     rf"\b{_INCENTIVE_DE}[^.!?\n]{{0,80}}\b(?:im Austausch|als Gegenleistung|wenn Sie|für eine|für Ihre|sobald Sie)"
     rf"\b[^.!?\n]{{0,40}}{_REVIEW_DE}"),
    ("de", "offers something for a review",
     rf"\b(?:im Austausch für|als Gegenleistung für|für eine|für Ihre)\s+(?:\w+\s+)?{_REVIEW_DE}[^.!?\n]{{0,80}}"
     rf"{_INCENTIVE_DE}"),
    ("de", "asks to change or remove a review",
     rf"{_REVIEW_DE}\s+(?:zu\s+)?(?:ändern|löschen|entfernen|aktualisieren|zurückzuziehen|zurückziehen|anpassen|"
     r"überarbeiten|abändern)"),
    ("fr", "asks for a positive review",
     rf"\b{_REVIEW_FR}\s+(?:positi(?:f|ve)s?|favorables?|élogieux)|\bbonne\s+(?:évaluation|note)|\bbon\s+"
     rf"(?:avis|commentaire)"),
    ("fr", "asks for a star rating", r"\b(?:5|cinq)\s+étoiles"),
    ("fr", "offers something for a review",
     rf"\b{_INCENTIVE_FR}[^.!?\n]{{0,80}}(?:en échange d|si vous|contre (?:un|votre))[^.!?\n]{{0,40}}{_REVIEW_FR}"),
    ("fr", "offers something for a review",
     rf"(?:en échange d(?:'un|e votre|’un)|contre (?:un|votre))\s+{_REVIEW_FR}[^.!?\n]{{0,80}}{_INCENTIVE_FR}"),
    ("fr", "asks to change or remove a review",
     rf"\b(?:modifier|supprimer|retirer|changer|mettre à jour|revoir)\s+(?:votre|l'|l’|cet|ce|cette)\s*"
     rf"{_REVIEW_FR}"),
    ("es", "asks for a positive review",
     rf"\b{_REVIEW_ES}\s+(?:positiv[ao]s?|favorables?|de 5 estrellas)|\bbuen[ao]s?\s+{_REVIEW_ES}"),
    ("es", "asks for a star rating", r"\b(?:5|cinco)\s+estrellas"),
    ("es", "offers something for a review",
     rf"\b{_INCENTIVE_ES}[^.!?\n]{{0,80}}(?:a cambio de|si (?:nos )?(?:deja|escribe|publica)s?|cuando (?:nos )?"
     rf"(?:deje|escriba)s?)[^.!?\n]{{0,40}}{_REVIEW_ES}"),
    ("es", "offers something for a review",
     rf"\ba cambio de (?:una? |su |tu )?{_REVIEW_ES}[^.!?\n]{{0,80}}{_INCENTIVE_ES}"),
    ("es", "asks to change or remove a review",
     rf"\b(?:cambiar|eliminar|borrar|retirar|modificar|actualizar|quitar)\s+(?:su|tu|la|esta|el|este)\s+"
     rf"{_REVIEW_ES}"),
    ("it", "asks for a positive review",
     rf"\b{_REVIEW_IT}\s+(?:positiv[aei]|favorevol[ei]|a 5 stelle)|\bbuon[ae]\s+{_REVIEW_IT}"),
    ("it", "asks for a star rating", r"\b(?:5|cinque)\s+stelle"),
    ("it", "offers something for a review",
     rf"\b{_INCENTIVE_IT}[^.!?\n]{{0,80}}(?:in cambio di|se (?:ci )?lasci|quando (?:ci )?lasci)[^.!?\n]{{0,40}}"
     rf"{_REVIEW_IT}"),
    ("it", "offers something for a review",
     rf"\bin cambio di (?:una? |sua |tua )?{_REVIEW_IT}[^.!?\n]{{0,80}}{_INCENTIVE_IT}"),
    ("it", "asks to change or remove a review",
     rf"\b(?:modificare|rimuovere|eliminare|cambiare|aggiornare|ritirare|cancellare)\s+(?:la sua|la tua|la|questa|"
     rf"il suo|il tuo|il)\s+{_REVIEW_IT}"),
    ("ja", "asks for a positive review", r"高評価|良い(?:評価|レビュー)|好評価|星[5５]|★[5５]|[5５]つ星|満点"),
    ("ja", "offers something for a review",
     rf"{_INCENTIVE_JA}[^。！？\n]{{0,40}}{_REVIEW_JA}|{_REVIEW_JA}[^。！？\n]{{0,30}}(?:いただければ|頂ければ|"
     rf"いただいた方|頂いた方|書いていただくと)[^。！？\n]{{0,30}}{_INCENTIVE_JA}"),
    ("ja", "asks to change or remove a review",
     rf"{_REVIEW_JA}[をのは]?[^。！？\n]{{0,6}}(?:変更|削除|取り消|取消|修正|更新|書き直|見直)"),
)


def no_review_manipulation(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No incentives, no asking for a positive review, no asking to change or remove one."""
    yield from _pattern_hits(_compiled(REVIEW_MANIPULATION_PATTERNS), draft.text, lambda what, _: (
        f"Review manipulation ({what}) is forbidden: you may ask for an honest review, but never for a "
        f"positive one, never offer anything for it, never ask to change or remove one. Remove or reword "
        f"this part."))


_IMPORTANT_RE = re.compile(
    r"[\[【(（]\s*(?:important|importante|wichtig|belangrijk|重要)\s*[\]】)）]", re.IGNORECASE)


def no_important_unless_critical(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """``[Important]`` (or a localised form) in the subject only for critical messages."""
    if draft.category is Category.CRITICAL:
        return
    for m in _IMPORTANT_RE.finditer(draft.subject):
        yield Hit(f"{m.group(0)} in the subject is reserved for messages needed to complete the order: "
                  f"remove it from the subject.", m.group(0))


# (language, what, regex): promotional wording. Kept precise: "sale" alone,
# "offer" alone or "new" alone are ordinary words in support mail.
MARKETING_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("en", "promotion", r"\bcheck out our (?:new|latest|other|full|entire|newest)\b"),
    ("en", "sale", r"\b(?:on sale|sale (?:ends|starts|now on)|(?:summer|winter|spring|autumn|fall|holiday|"
                   r"christmas|black friday|cyber monday|clearance|flash|big|annual|seasonal|anniversary) sale)\b"),
    ("en", "discount", r"\d+\s*%\s*off\b"),
    ("en", "newsletter", r"\bnewsletters?\b"),
    ("en", "social media", r"\bfollow us on\b|\blike us on (?:facebook|instagram)\b"),
    ("en", "promotion", r"\b(?:visit|browse) our (?:store|shop|storefront|website|site|other products)\b"),
    ("en", "promotion", r"\bnew arrivals\b|\bshop now\b|\bour other products\b|\bsubscribe to our\b"),
    ("en", "promotion", r"\blimited[- ]time (?:offer|deal|only)\b|\bexclusive (?:offer|deal|discount)s?\b"),
    ("en", "promotion", r"\b(?:promo|discount|coupon|voucher) codes?\b|\bbuy (?:one|1),? get (?:one|1)\b"),
    ("de", "discount", r"\d+\s*%\s*Rabatt\b"),
    ("de", "social media", r"\bfolgen Sie uns\b"),
    ("de", "promotion", r"\bbesuchen Sie unseren (?:Shop|Store|Webshop)\b|\b(?:Rabatt|Gutschein)code\b"),
    ("fr", "discount", r"\d+\s*%\s*de (?:réduction|remise)\b"),
    ("fr", "social media", r"\bsuivez-nous\b"),
    ("fr", "promotion", r"\bcode promo\b|\bdécouvrez nos nouveau(?:x|tés)\b|\bsoldes\b"),
    ("es", "discount", r"\d+\s*%\s*de descuento\b"),
    ("es", "social media", r"\bsíguenos\b"),
    ("es", "promotion", r"\bcódigo (?:de )?(?:descuento|promocional)\b|\bdescubre nuestr[ao]s nuev|\brebajas\b"),
    ("it", "discount", r"\d+\s*%\s*di sconto\b"),
    ("it", "social media", r"\bseguici\b"),
    ("it", "promotion", r"\bcodice (?:sconto|promozionale)\b|\bscopri i nostri nuovi\b|\bsaldi\b"),
    ("ja", "sale", r"セール"),
    ("ja", "discount", r"\d+\s*[%％]\s*(?:オフ|OFF)"),
    ("ja", "social media", r"フォローして"),
    ("ja", "newsletter", r"メルマガ|メールマガジン"),
    ("ja", "promotion", r"クーポンコード|新商品のご案内"),
)


def no_marketing(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No marketing or promotion: no sales, discounts, newsletters, social media or other products."""
    yield from _pattern_hits(_compiled(MARKETING_PATTERNS), draft.text, lambda what, _: (
        f"Marketing ({what}) is not allowed in messages to buyers: remove it and keep to what the order needs."))


OPT_OUT_LINK_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("en", "unsubscribe", r"\bunsubscrib(?:e|ing)\b"),
    ("en", "opt-out link", r"\bopt[- ]?out (?:here|link|below|now|at)\b|\bclick here to (?:opt[- ]?out|stop)\b"),
    ("en", "opt-out instruction",
     r"\b(?:if you (?:no longer|do not|don't) (?:wish|want) to receive|to stop receiving) (?:these |our |further |"
     r"future |any )?(?:e-?mails|messages)\b"),
    ("en", "preferences link", r"\bmanage (?:your )?(?:email|e-mail|subscription|communication) preferences\b"),
    ("de", "unsubscribe", r"\b(?:hier|vom Newsletter) abmelden\b|\babbestellen\b|\bAbmeldelink\b"),
    ("fr", "unsubscribe", r"\bse désabonner\b|\bdésinscri(?:re|ption|vez)\b|\bdésabonnement\b"),
    ("es", "unsubscribe", r"\bdar(?:se|te) de baja\b|\bcancelar (?:la |tu |su )?suscripción\b"),
    ("it", "unsubscribe", r"\bannulla(?:re)? (?:l'|l’)?iscrizione\b|\bdisiscriv\w*"),
    ("ja", "unsubscribe", r"配信停止|購読解除|配信を停止"),
)


def no_opt_out_links(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No unsubscribe / opt-out links or instructions (buyers opt out through Amazon)."""
    yield from _pattern_hits(_compiled(OPT_OUT_LINK_PATTERNS), draft.text, lambda what, _: (
        f"Opt-out links and unsubscribe instructions ({what}) are not allowed: buyers manage this in their Amazon "
        f"account. Remove this part."))


# Sentences that only thank, greet or sign off. A proactive message made of
# nothing else is a "thank you"-only message.
_THANKS_RE = re.compile(
    r"\bthank(?:s| you)\b[^.!?\n]{0,60}\b(?:order|purchase|buying|shopping|business|choosing|support|trust)"
    r"|\bwe (?:really |truly |greatly )?appreciate (?:your|you)\b|\b(?:we )?hope you (?:enjoy|like|love|are enjoying)\b"
    r"|\benjoy your (?:new |purchase|order|product|item)|^\W*(?:many |thanks? )?thank(?:s| you)(?: so much| very much| again)?\W*$"
    r"|\b(?:danke|vielen dank|herzlichen dank)\b[^.!?\n]{0,60}(?:bestellung|einkauf|kauf|vertrauen)"
    r"|\bviel (?:freude|spaß)\b|\bmerci\b[^.!?\n]{0,60}(?:commande|achat|confiance)|\bbonne (?:utilisation|réception)\b"
    r"|\bgracias\b[^.!?\n]{0,60}(?:pedido|compra|confianza)|\besperamos que (?:disfrute|le guste|te guste)"
    r"|\bgrazie\b[^.!?\n]{0,60}(?:ordine|acquisto|fiducia)|\bsperiamo che (?:ti|le) piaccia"
    r"|(?:ご注文|お買い上げ|お買い求め|ご購入|ご利用)[^。！？\n]{0,20}(?:ありがとう|有難う)|^\W*ありがとうございま",
    re.IGNORECASE,
)
_GREETING_RE = re.compile(
    r"^\W*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|hallo|guten tag|liebe[rs]?|sehr geehrte[rs]?|"
    r"bonjour|bonsoir|cher|chère|hola|buenos días|estimad[oa]s?|querid[oa]s?|ciao|buongiorno|gentile|salve|"
    r"こんにちは)\b[^.!?\n]{0,40}$|様$",
    re.IGNORECASE,
)
_SIGNOFF_RE = re.compile(
    r"^\W*(?:(?:best|kind|warm|many|warmest|kindest)\s+(?:regards|wishes)|regards|sincerely|yours(?: truly| "
    r"sincerely)?|cheers|best|mit freundlichen grüßen|freundliche grüße|viele grüße|beste grüße|cordialement|"
    r"bien à vous|salutations|saludos(?: cordiales)?|atentamente|un saludo|cordiali saluti|distinti saluti|saluti|"
    r"un saluto|よろしくお願い(?:いた)?します)\b[^.!?\n]{0,40}$",
    re.IGNORECASE,
)
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?。！？])\s*|\n+")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


def _is_filler(sentence: str) -> bool:
    """Names and sign-off fragments ("Acme Store", "The Acme team", "山田")."""
    if _CJK_RE.search(sentence):
        return len(sentence) <= 8
    return len(sentence.split()) <= 3 and len(sentence) <= 30


def not_thank_you_only(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """A proactive message must say something the order needs; "thank you for your order" alone is not allowed."""
    if draft.category not in PROACTIVE:
        return
    thanks: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_SPLIT_RE.split(draft.text)):
        if not sentence or not re.search(r"\w", sentence):
            continue
        if _THANKS_RE.search(sentence):
            thanks.append(sentence)
        elif _GREETING_RE.search(sentence) or _SIGNOFF_RE.search(sentence) or _is_filler(sentence):
            continue
        else:
            return          # something of substance
    if thanks:
        start = draft.text.find(thanks[0])
        yield Hit("A proactive message that only thanks the buyer is not allowed: say what the order needs "
                  "(or do not send it).", thanks[0], (start, start + len(thanks[0])) if start >= 0 else None)


# --------------------------------------------------------------------------- 5. form and timing

_MIME_EXTENSIONS = {
    "application/pdf": ("pdf",), "image/jpeg": ("jpg", "jpeg"), "image/jpg": ("jpg", "jpeg"),
    "image/pjpeg": ("jpg", "jpeg"), "image/png": ("png",), "image/gif": ("gif",), "text/plain": ("txt",),
}
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def _attachment_type_ok(att: AttachmentInfo, allowed: tuple[str, ...]) -> bool:
    name = att.filename.strip().lower()
    extension = name.rpartition(".")[2] if "." in name else ""
    ctype = att.content_type.strip().lower().partition(";")[0].strip()
    if extension and extension not in allowed:
        return False
    if ctype in _GENERIC_TYPES:
        return bool(extension)
    by_type = _MIME_EXTENSIONS.get(ctype)
    if by_type is None or not any(e in allowed for e in by_type):
        return False
    return not extension or extension in by_type


def attachments_within_limits(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """At most ``max_attachments`` files, ``max_attachment_bytes`` in all, allowed types only."""
    atts = draft.attachments
    if len(atts) > config.max_attachments:
        yield Hit(f"{len(atts)} attachments, at most {config.max_attachments} are allowed: send fewer files.")
    total = sum(max(a.size, 0) for a in atts)
    if total > config.max_attachment_bytes:
        yield Hit(f"Attachments total {total / 1_048_576:.1f} MB, at most "
                  f"{config.max_attachment_bytes / 1_048_576:.1f} MB are allowed: send smaller or fewer files.")
    for att in atts:
        if not _attachment_type_ok(att, config.allowed_attachment_types):
            yield Hit(f"Attachment {att.filename or '(unnamed)'!r} ({att.content_type or 'unknown type'}) is not an "
                      f"allowed type ({', '.join(config.allowed_attachment_types)}): convert it (for example to "
                      f"PDF) or leave it out.", att.filename or None)


def text_length(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """Our text is not empty and at most ``max_text_chars`` characters (the quoted original not counted)."""
    if not draft.text.strip():
        yield Hit("The message has no text of its own: write your answer above the quoted message.")
        return
    if len(draft.text) > config.max_text_chars:
        over = len(draft.text) - config.max_text_chars
        yield Hit(f"The text is {len(draft.text)} characters long, at most {config.max_text_chars} are allowed: "
                  f"shorten it by {over} characters.", draft.text[config.max_text_chars:][:80],
                  (config.max_text_chars, len(draft.text)))


def proactive_window(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """Proactive messages only within ``proactive_window_days`` (30) of order completion."""
    if draft.category not in PROACTIVE:
        return
    if ctx.order_completed_at is None:
        if draft.category is Category.UNSOLICITED:
            yield Hit("The order's completion date is unknown, so we cannot show this unsolicited message is "
                      f"within {config.proactive_window_days} days of it: wait until the order is complete "
                      "(shipped/delivered) or do not send it.")
        return
    deadline = _utc(ctx.order_completed_at) + timedelta(days=config.proactive_window_days)
    if _utc(ctx.now) > deadline:
        yield Hit(f"Proactive messages may only be sent within {config.proactive_window_days} days of order "
                  f"completion; this window closed on {deadline:%Y-%m-%d}. Do not send it.")


def account_not_restricted(draft: Draft, ctx: PolicyContext, config: PolicyConfig) -> Iterator[Hit]:
    """No proactive message while Amazon restricts the account (replies still go)."""
    if draft.category not in PROACTIVE or ctx.account_restricted_until is None:
        return
    if _utc(ctx.now) < _utc(ctx.account_restricted_until):
        yield Hit(f"Amazon has restricted this account from proactive messages until "
                  f"{_utc(ctx.account_restricted_until):%Y-%m-%d %H:%M} UTC: only replies to buyers can be sent "
                  f"until then.")


# --------------------------------------------------------------------------- registry and entry points


def _rule(fn: RuleCheck) -> Rule:
    doc = (fn.__doc__ or "").strip().splitlines()
    return Rule(getattr(fn, "__name__"), fn, doc[0] if doc else "")


# Ordered: who may send to whom first, then permission, then content, then form and timing.
RULES: tuple[Rule, ...] = tuple(_rule(fn) for fn in (
    sender_is_registered,
    recipient_is_conversation_buyer,
    no_unsolicited_to_opted_out,
    reply_quotes_original,
    no_links,
    no_contact_details,
    no_review_manipulation,
    no_important_unless_critical,
    attachments_within_limits,
    text_length,
    proactive_window,
    account_not_restricted,
    no_marketing,
    no_opt_out_links,
    not_thank_you_only,
))
RULE_IDS: tuple[str, ...] = tuple(r.id for r in RULES)
DEFAULT_CONFIG = PolicyConfig()


def check(draft: Draft, ctx: PolicyContext, config: PolicyConfig = DEFAULT_CONFIG) -> Decision:
    """Run every rule on ``draft``; blocked as soon as one rule in ``block`` mode objects."""
    findings: list[Finding] = []
    evaluated: list[str] = []
    for rule in RULES:
        mode = config.mode(rule.id)
        if mode is Mode.OFF:
            continue
        evaluated.append(rule.id)
        severity = Severity.BLOCK if mode is Mode.BLOCK else Severity.WARN
        for hit in rule.check(draft, ctx, config):
            findings.append(Finding(rule.id, severity, hit.reason, hit.excerpt, hit.span))
    allowed = not any(f.severity is Severity.BLOCK for f in findings)
    return Decision(allowed, tuple(findings), tuple(evaluated))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def explain(decision: Decision, text: str | None = None) -> str:
    """A multi-line explanation for staff: verdict, then each finding with its rule id,
    the offending text marked ``>>>like this<<<`` (in context when ``text`` — the
    draft's text — is given) and what to change."""
    blocking, warnings = decision.blocking, decision.warnings
    if not decision.findings:
        return "Allowed: the message passed every rule."
    if decision.allowed:
        head = f"Allowed, with {len(warnings)} warning{'s' if len(warnings) != 1 else ''}."
    else:
        head = (f"Blocked: {len(blocking)} problem{'s' if len(blocking) != 1 else ''} must be fixed before this "
                f"message can be sent" + (f" ({len(warnings)} more only warned)." if warnings else "."))
    lines = [head]
    for number, finding in enumerate(decision.findings, 1):
        lines.append(f"{number}. [{finding.severity}] {finding.rule}: {finding.reason}")
        marked = _marked(finding, text)
        if marked:
            lines.append(f"   {marked}")
    return "\n".join(lines)


def _marked(finding: Finding, text: str | None) -> str | None:
    if text is not None and finding.span is not None:
        start, end = finding.span
        if 0 <= start <= end <= len(text):
            before = text[max(0, start - 40):start]
            after = text[end:end + 40]
            prefix = "..." if start > 40 else ""
            suffix = "..." if end + 40 < len(text) else ""
            return (f"{prefix}{_one_line(before)}>>>{_one_line(text[start:end])}<<<"
                    f"{_one_line(after)}{suffix}")
    if finding.excerpt:
        return f">>>{_one_line(finding.excerpt)}<<<"
    return None
