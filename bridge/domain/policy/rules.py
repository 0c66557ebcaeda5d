"""The named rules of the compliance guard, in the order they run (pure).

Each rule is a small function ``(draft, ctx, settings) -> Iterable[Hit]`` whose
``__name__`` is its stable id (stored in the audit log, named in config:
renaming one is a migration). Its docstring's first line is its summary.
Content rules look at ``draft.text`` (our own words) only. The wording they look
for is data in :mod:`.phrases`.

:data:`RULES` hold for every message. :data:`MARKETPLACE_RULES` run only where
the buyer's marketplace states what they check (Walmart's reply window), so an
Amazon message is judged by exactly the rules it always was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses

from bridge.domain.marketplaces.layout import squash
from bridge.domain.marketplaces.registry import Registry
from bridge.domain.policy.phrases import (
    GREETING_RE,
    MARKETING_PATTERNS,
    OPT_OUT_LINK_PATTERNS,
    REVIEW_MANIPULATION_PATTERNS,
    SIGNOFF_RE,
    THANKS_RE,
)
from bridge.domain.policy.values import (
    PROACTIVE,
    AttachmentInfo,
    Category,
    Draft,
    Hit,
    Mode,
    PolicyContext,
    Rule,
    RuleCheck,
    RuleSettings,
)
from bridge.domain.threads import split_relay_address

# --------------------------------------------------------------------------- helpers


def _addresses(value: str) -> list[str]:
    return [addr.strip().lower() for _, addr in getaddresses([value]) if addr.strip()]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _compile(table: tuple[tuple[str, str, str], ...]) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    return tuple((lang, what, re.compile(rx, re.IGNORECASE)) for lang, what, rx in table)


_REVIEW_MANIPULATION_RES = _compile(REVIEW_MANIPULATION_PATTERNS)
_MARKETING_RES = _compile(MARKETING_PATTERNS)
_OPT_OUT_LINK_RES = _compile(OPT_OUT_LINK_PATTERNS)


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


def sender_is_registered(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
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


def recipient_is_conversation_buyer(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
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
    if not _same_buyer(recipients[0], ctx.buyer_alias, ctx.marketplaces):
        yield Hit(f"{recipients[0]!r} is not the relay address of this conversation's buyer "
                  f"({ctx.buyer_alias.strip().lower()!r}): reply on the buyer's own thread; mailbridge never "
                  f"writes to any other address.", draft.to_addr)


def _same_buyer(addr: str, alias: str, marketplaces: Registry) -> bool:
    alias = alias.strip().lower()
    if addr == alias:
        return True
    domain = alias.rpartition("@")[2]
    ours = split_relay_address(alias, frozenset({domain}), marketplaces)
    theirs = split_relay_address(addr, frozenset({domain}), marketplaces)
    # "<alias>+<case id>@<same domain>" is the same buyer (docs/marketplaces.md: the part before "+" is the key).
    return ours is not None and theirs is not None and ours[0] == theirs[0]


# --------------------------------------------------------------------------- 2. permission


def no_unsolicited_to_opted_out(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
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


def reply_quotes_original(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """A reply must include the buyer's original message below it (Amazon's reply rule)."""
    if draft.category is not Category.REPLY or not ctx.buyer_marketplace.reply.quote_original:
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


def no_links(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
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


def no_contact_details(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """No email addresses or phone numbers: all contact goes through Buyer-Seller Messaging."""
    for m in _EMAIL_RE.finditer(draft.text):
        yield Hit("Email addresses are not allowed in messages to buyers: remove it; the buyer can answer "
                  f"this message through {ctx.buyer_marketplace.name}.", m.group(0), m.span())
    for number, start, end in find_phone_numbers(draft.text):
        yield Hit("Phone numbers are not allowed in messages to buyers: remove it and keep the conversation "
                  "in Buyer-Seller Messaging.", number, (start, end))


# --------------------------------------------------------------------------- 4. content: wording


def no_review_manipulation(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """No incentives, no asking for a positive review, no asking to change or remove one."""
    yield from _pattern_hits(_REVIEW_MANIPULATION_RES, draft.text, lambda what, _: (
        f"Review manipulation ({what}) is forbidden: you may ask for an honest review, but never for a "
        f"positive one, never offer anything for it, never ask to change or remove one. Remove or reword "
        f"this part."))


_IMPORTANT_RE = re.compile(
    r"[\[【(（]\s*(?:important|importante|wichtig|belangrijk|重要)\s*[\]】)）]", re.IGNORECASE)


def no_important_unless_critical(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """``[Important]`` (or a localised form) in the subject only for critical messages."""
    if draft.category is Category.CRITICAL:
        return
    for m in _IMPORTANT_RE.finditer(draft.subject):
        yield Hit(f"{m.group(0)} in the subject is reserved for messages needed to complete the order: "
                  f"remove it from the subject.", m.group(0))


def no_marketing(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """No marketing or promotion: no sales, discounts, newsletters, social media or other products."""
    yield from _pattern_hits(_MARKETING_RES, draft.text, lambda what, _: (
        f"Marketing ({what}) is not allowed in messages to buyers: remove it and keep to what the order needs."))


def no_opt_out_links(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """No unsubscribe / opt-out links or instructions (buyers opt out through Amazon)."""
    yield from _pattern_hits(_OPT_OUT_LINK_RES, draft.text, lambda what, _: (
        f"Opt-out links and unsubscribe instructions ({what}) are not allowed: buyers manage this in their "
        f"{ctx.buyer_marketplace.name} account. Remove this part."))


_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?。！？])\s*|\n+")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


def _is_filler(sentence: str) -> bool:
    """Names and sign-off fragments ("Acme Store", "The Acme team", "山田")."""
    if _CJK_RE.search(sentence):
        return len(sentence) <= 8
    return len(sentence.split()) <= 3 and len(sentence) <= 30


def not_thank_you_only(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """A proactive message must say something the order needs; "thank you for your order" alone is not allowed."""
    if draft.category not in PROACTIVE:
        return
    thanks: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_SPLIT_RE.split(draft.text)):
        if not sentence or not re.search(r"\w", sentence):
            continue
        if THANKS_RE.search(sentence):
            thanks.append(sentence)
        elif GREETING_RE.search(sentence) or SIGNOFF_RE.search(sentence) or _is_filler(sentence):
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


def attachments_within_limits(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
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


def text_length(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """Our text is not empty and at most ``max_text_chars`` characters (the quoted original not counted)."""
    if not draft.text.strip():
        yield Hit("The message has no text of its own: write your answer above the quoted message.")
        return
    if len(draft.text) > config.max_text_chars:
        over = len(draft.text) - config.max_text_chars
        yield Hit(f"The text is {len(draft.text)} characters long, at most {config.max_text_chars} are allowed: "
                  f"shorten it by {over} characters.", draft.text[config.max_text_chars:][:80],
                  (config.max_text_chars, len(draft.text)))


def proactive_window(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
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


def account_not_restricted(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """No proactive message while Amazon restricts the account (replies still go)."""
    if draft.category not in PROACTIVE or ctx.account_restricted_until is None:
        return
    if _utc(ctx.now) < _utc(ctx.account_restricted_until):
        yield Hit(f"Amazon has restricted this account from proactive messages until "
                  f"{_utc(ctx.account_restricted_until):%Y-%m-%d %H:%M} UTC: only replies to buyers can be sent "
                  f"until then.")


# --------------------------------------------------------------------------- 6. the buyer's marketplace


def reply_within_window(draft: Draft, ctx: PolicyContext, config: RuleSettings) -> Iterator[Hit]:
    """A reply goes out within the buyer's marketplace's reply window (Walmart: 48 hours of the buyer's message)."""
    marketplace = ctx.buyer_marketplace
    window = marketplace.reply.reply_window
    if draft.category is not Category.REPLY or window is None or ctx.buyer_message_at is None:
        return
    wrote = _utc(ctx.buyer_message_at)
    if _utc(ctx.now) > wrote + window:
        hours = (_utc(ctx.now) - wrote) // timedelta(hours=1)
        yield Hit(f"{marketplace.name} expects replies within {_hours(window)} of the buyer's message; the buyer "
                  f"wrote on {wrote:%Y-%m-%d %H:%M} UTC, {hours} hours ago. Answer this buyer now, and answer "
                  f"{marketplace.name} buyers sooner: late replies count against the seller.")


def _hours(span: timedelta) -> str:
    hours = span / timedelta(hours=1)
    return f"{hours:g} hours" if hours != 1 else "1 hour"


def _has_reply_window(ctx: PolicyContext) -> bool:
    return ctx.buyer_marketplace.reply.reply_window is not None


# --------------------------------------------------------------------------- the list


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

# Rules that run only where the buyer's marketplace states what they check. A
# reply window is stated, not that a late reply is refused (docs/marketplaces.md), so the
# rule warns unless the operator makes it block: a late answer beats none.
MARKETPLACE_RULES: tuple[Rule, ...] = (
    Rule("reply_within_window", reply_within_window, _rule(reply_within_window).summary,
         applies=_has_reply_window, default_mode=Mode.WARN),
)
MARKETPLACE_RULE_IDS: tuple[str, ...] = tuple(r.id for r in MARKETPLACE_RULES)
ALL_RULES: tuple[Rule, ...] = RULES + MARKETPLACE_RULES
ALL_RULE_IDS: tuple[str, ...] = RULE_IDS + MARKETPLACE_RULE_IDS
