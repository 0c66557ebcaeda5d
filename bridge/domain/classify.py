"""Ordered named rules -> kind + hits (pure).

Contract used by the pipeline: ``classify(mail, ctx) -> Classification``.
Rules run in the order of ``RULES``; the first rule that *decides* wins, but
every rule that hit (including informational ones) is recorded in ``hits`` so
an operator can see why a message went where it went.

Each rule is a small function ``(mail, ctx) -> RuleHit | None`` whose
``__name__`` is the rule's stable name (it is stored in the audit trail:
rename a rule only with a migration note). A hit with ``decides=False`` is
informational: it explains something seen without choosing the kind.

Order and why (docs/architecture.md):

1. own mail first: the loop guard beats everything.
2. bounces before auto-replies: a DSN often also carries Auto-Submitted.
3. auto-replies before staff replies: a staff out-of-office answering a
   forwarded buyer message goes to the reply address from a staff sender, and
   must never reach a buyer.
4. staff replies before buyers, buyers before notices, ``unclassified`` last.

Marketplace relay mail and the bulk-ish headers: a marketplace's relayed buyer
mail (Amazon's, at least) and its notifications may carry headers such as ``Precedence: bulk``,
``Auto-Submitted: auto-generated`` or ``X-Auto-Response-Suppress`` (they are
machine-sent on the buyer's behalf). Treating those as auto-replies would
silently swallow a real buyer question, which costs far more than showing
staff one automatic reply. So for mail from a relay alias that has the buyer
layout (Begin/End markers, ``<pre>`` notification, customer-service relay or
a ``commMgrTok`` line), and for mail from a marketplace's own notification domains
(exact match: notices, and account-health warnings staff must see), they are
recorded as *non-deciding* hits; only ``Auto-Submitted: auto-replied`` (a
buyer's own responder, relayed) still decides AUTO_REPLY there.

What each marketplace looks like (relay domains, alias shapes, notification
senders and subjects, notice wording) is asked of ``ctx.marketplaces``
(:class:`bridge.domain.marketplaces.registry.Registry`), never of one
marketplace's module.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from bridge.domain import bounce_signals
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry
from bridge.domain.parse import ParsedMail
from bridge.domain.threads import split_relay_address


class Kind(StrEnum):
    OWN = "own"                  # mail mailbridge itself sent, come back (loop guard)
    BOUNCE = "bounce"            # RFC 3464 DSNs, MTA bounces, marketplace opt-out/not-delivered/restricted notices
    AUTO_REPLY = "auto_reply"    # Auto-Submitted, Precedence bulk/junk/list, X-Autoreply, out-of-office
    STAFF_REPLY = "staff_reply"  # to the reply address (token present) or In-Reply-To one of ours, from staff
    BUYER = "buyer"              # from a marketplace relay alias (exact domain match)
    NOTICE = "notice"            # marketplace notifications: sold/ship now, feedback, claims
    OTHER = "other"              # anything else: forwarded to staff as unclassified


@dataclass(frozen=True)
class RuleHit:
    rule: str        # stable rule name, e.g. "auto_submitted_header"
    kind: Kind       # the kind this rule argues for
    reason: str      # human-readable: what was seen ("Auto-Submitted: auto-replied")
    decides: bool = True  # False: informational only (recorded, never chooses the kind)


@dataclass(frozen=True)
class Classification:
    kind: Kind
    # Every rule that hit, in rule order. The deciding hit is the first with
    # ``decides`` set and has ``kind == kind``; informational hits
    # (``decides=False``) may come before it. When nothing decides, the last
    # hit is the ``unclassified`` fallback and kind is OTHER.
    hits: tuple[RuleHit, ...]
    buyer_alias: str | None = None     # base relay alias (lowercased, '+suffix' removed) for BUYER
    buyer_address: str | None = None   # the exact relay address the buyer wrote from (keeps '+case')
    reply_token: str | None = None     # the token found in the reply address (STAFF_REPLY), unverified
    decided_by: str | None = None      # name of the deciding rule

    @property
    def decision(self) -> RuleHit | None:
        """The hit that chose ``kind``."""
        return next((h for h in self.hits if h.decides), None)


@dataclass(frozen=True)
class ClassifyContext:
    seller_address: str              # lowercased
    staff_address: str               # lowercased
    staff_senders: tuple[str, ...]   # lowercased glob patterns
    reply_address: str               # pattern with "{token}", lowercased
    relay_domains: frozenset[str]    # all relay domains accepted as buyers
    sent_by_us: bool                 # the pipeline found this Message-ID in our outbox or a valid origin header
    replies_to_us: bool              # In-Reply-To/References name a Message-ID of ours (staff notification)
    marketplaces: Registry = field(default=DEFAULT_REGISTRY)   # who the relays and notification senders are


Rule = Callable[[ParsedMail, ClassifyContext], "RuleHit | None"]


# --------------------------------------------------------------------------- shared predicates

def _relay(mail: ParsedMail, ctx: ClassifyContext) -> tuple[str, str | None] | None:
    return split_relay_address(mail.from_addr, ctx.relay_domains, ctx.marketplaces) if mail.from_addr else None


def _marketplace_exemption(mail: ParsedMail, ctx: ClassifyContext) -> str | None:
    """Why bulk-ish auto-reply signals must not decide for this mail, or None."""
    if _relay(mail, ctx) is not None and (mail.buyer_text is not None or mail.comm_mgr_tok is not None):
        return "relay buyer layout"
    if ctx.marketplaces.is_notification_sender(mail.from_addr):
        return "marketplace notification sender"
    return None


def _auto_hit(name: str, reason: str, mail: ParsedMail, ctx: ClassifyContext) -> RuleHit:
    exemption = _marketplace_exemption(mail, ctx)
    if exemption is None:
        return RuleHit(name, Kind.AUTO_REPLY, reason)
    return RuleHit(name, Kind.AUTO_REPLY, f"{reason} (ignored: {exemption})", decides=False)


@lru_cache(maxsize=64)   # the account's configured pattern, compiled once as module patterns are at import
def _reply_address_re(pattern: str) -> re.Pattern[str] | None:
    if "{token}" not in pattern:
        return None
    head, _, tail = pattern.lower().partition("{token}")
    return re.compile(re.escape(head) + r"([a-z0-9.\-_]+)" + re.escape(tail))


def _reply_token(mail: ParsedMail, ctx: ClassifyContext) -> str | None:
    """The token of the first recipient matching ``ctx.reply_address``."""
    regex = _reply_address_re(ctx.reply_address)
    if regex is None:
        return None
    candidates = (*mail.to_addrs, *mail.cc_addrs,
                  mail.headers.get("delivered-to", "").lower(), mail.headers.get("x-original-to", "").lower())
    for addr in candidates:
        m = regex.fullmatch(addr.strip().strip("<>"))
        if m is not None:
            return m.group(1)
    return None


def _is_staff(mail: ParsedMail, ctx: ClassifyContext) -> bool:
    sender = mail.from_addr.lower()
    return bool(sender) and any(fnmatch.fnmatchcase(sender, pattern.lower()) for pattern in ctx.staff_senders)


# --------------------------------------------------------------------------- 1. own

def own_message(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """Mail we sent ourselves came back (the pipeline checked Message-ID / origin header)."""
    if ctx.sent_by_us:
        return RuleHit("own_message", Kind.OWN, "Message-ID or origin header is ours")
    return None


# --------------------------------------------------------------------------- 2. bounce

def delivery_status_report(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """RFC 3464 by structure: a message/delivery-status part anywhere, or multipart/report of that type."""
    reason = bounce_signals.structural_report(mail)
    return RuleHit("delivery_status_report", Kind.BOUNCE, reason) if reason else None


def mta_bounce(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """A report without RFC 3464 structure: delivery-system sender, bounce subject, bounce wording."""
    marketplace = _relay(mail, ctx) is not None or ctx.marketplaces.is_notification_sender(mail.from_addr)
    reason = bounce_signals.mta_report(mail, marketplace)
    return RuleHit("mta_bounce", Kind.BOUNCE, reason) if reason else None


def failed_recipients_header(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """Exim (and others) name the failed recipients in X-Failed-Recipients."""
    value = mail.headers.get("x-failed-recipients")
    if value:
        return RuleHit("failed_recipients_header", Kind.BOUNCE, f"X-Failed-Recipients: {value[:80]}")
    return None


def marketplace_undelivered_notice(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """A marketplace's opt-out / not-delivered / guidelines / restricted notice, by content.

    Buyer words and quoted history are not searched (a buyer writing "I opted
    out" is a buyer). Mail a staff member sends to the reply address is not
    searched either: staff quoting a notice in a reply is still a staff reply.
    """
    if _reply_token(mail, ctx) is not None and _is_staff(mail, ctx):
        return None
    notice = ctx.marketplaces.find_undelivered_notice(mail.text, mail.buyer_text, mail.from_addr)
    if notice is None and mail.html is not None and not mail.text.strip():
        notice = ctx.marketplaces.find_undelivered_notice(mail.html, mail.buyer_text, mail.from_addr)
    if notice is None:
        return None
    return RuleHit("marketplace_undelivered_notice", Kind.BOUNCE,
                   f"{notice.reason} notice ({notice.language}): {notice.phrase!r}")


# --------------------------------------------------------------------------- 3. auto-reply

_OOF_SUBJECT_RE = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?re(?:ply|sponse)|automatische antwort|réponse automatique"
    r"|respuesta automática|risposta automatica|automatisch antwoord|autosvar|resposta automática)\s*:"
    r"|\bout of (?:the )?office\b|\bauto[- ]?reply\b|abwesenheitsnotiz|\babwesend\b|\babsence du bureau\b"
    r"|\bfuori sede\b|\bausente de la oficina\b|自動応答|自動返信|不在通知|\bvacation (?:reply|response)\b",
    re.IGNORECASE,
)


def auto_submitted_header(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """RFC 3834: any Auto-Submitted value other than "no"."""
    value = mail.headers.get("auto-submitted")
    if value is None:
        return None
    token = value.split(";", 1)[0].strip().lower()
    if not token or token == "no":
        return None
    reason = f"Auto-Submitted: {value[:60]}"
    if token == "auto-replied":  # explicit: decides even on relay mail (a buyer's own responder)
        return RuleHit("auto_submitted_header", Kind.AUTO_REPLY, reason)
    return _auto_hit("auto_submitted_header", reason, mail, ctx)


def precedence_bulk(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """Precedence: bulk / junk / list (and the non-standard auto_reply)."""
    value = mail.headers.get("precedence", "").strip().lower()
    if value in ("bulk", "junk", "list", "auto_reply"):
        return _auto_hit("precedence_bulk", f"Precedence: {value}", mail, ctx)
    return None


def auto_response_suppress_header(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """Microsoft's X-Auto-Response-Suppress (All, OOF, AutoReply, DR, ...): set on automatic mail."""
    value = mail.headers.get("x-auto-response-suppress", "").strip()
    if value:
        return _auto_hit("auto_response_suppress_header", f"X-Auto-Response-Suppress: {value[:60]}", mail, ctx)
    return None


def autoreply_header(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """X-Autoreply / X-Autorespond / X-Autogenerated (vacation programs, Outlook rules)."""
    for name in ("x-autoreply", "x-autorespond", "x-autogenerated"):
        value = mail.headers.get(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return _auto_hit("autoreply_header", f"{name}: {value[:60]}", mail, ctx)
    return None


def out_of_office_subject(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """Out-of-office subjects in the common client languages."""
    m = _OOF_SUBJECT_RE.search(mail.subject)
    if m is not None:
        return _auto_hit("out_of_office_subject", f"subject contains {m.group(0).strip()!r}", mail, ctx)
    return None


def disposition_notification(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """RFC 8098 read receipts: automatic, never for a buyer."""
    if mail.content_type == "multipart/report" and bounce_signals.report_type(mail) == "disposition-notification":
        return _auto_hit("disposition_notification", "multipart/report; report-type=disposition-notification",
                         mail, ctx)
    return None


# --------------------------------------------------------------------------- 4. staff reply

def staff_reply_address(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """To the account's reply address (token present) from an allowed staff sender."""
    token = _reply_token(mail, ctx)
    if token is not None and _is_staff(mail, ctx):
        return RuleHit("staff_reply_address", Kind.STAFF_REPLY, f"reply address token from staff {mail.from_addr}")
    return None


def staff_reply_to_notification(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """In-Reply-To/References name one of our messages, from an allowed staff sender."""
    if ctx.replies_to_us and _reply_token(mail, ctx) is None and _is_staff(mail, ctx):
        return RuleHit("staff_reply_to_notification", Kind.STAFF_REPLY,
                       f"reply to one of our messages from staff {mail.from_addr}")
    return None


def reply_address_foreign_sender(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """To the reply address (or replying to us) from someone not allowed: never a staff reply.

    Informational: the mail falls through. A buyer relay writing to the
    reply address is still a buyer; anything else ends as OTHER for staff.
    """
    if (_reply_token(mail, ctx) is not None or ctx.replies_to_us) and not _is_staff(mail, ctx):
        return RuleHit("reply_address_foreign_sender", Kind.OTHER,
                       f"reply address used by non-staff sender {mail.from_addr or '(none)'}", decides=False)
    return None


# --------------------------------------------------------------------------- 5. buyer

def relay_sender(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """From is a marketplace relay alias (exact domain, alias-shaped local part)."""
    relay = _relay(mail, ctx)
    if relay is not None:
        return RuleHit("relay_sender", Kind.BUYER, f"From is relay alias {relay[0]}")
    return None


def relay_reply_to_only(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """Reply-To names a relay alias but From does not: recorded, never trusted."""
    if _relay(mail, ctx) is not None:
        return None
    for addr in mail.reply_to:
        relay = split_relay_address(addr, ctx.relay_domains, ctx.marketplaces)
        if relay is not None:
            return RuleHit("relay_reply_to_only", Kind.BUYER,
                           f"Reply-To is relay alias {relay[0]} but From is {mail.from_addr or '(none)'}",
                           decides=False)
    return None


def relay_lookalike_sender(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """From resembles a relay alias but is not one (look-alike domain or malformed alias)."""
    if not mail.from_addr or _relay(mail, ctx) is not None:
        return None
    domain = mail.from_addr.rpartition("@")[2]
    if domain in ctx.relay_domains or ctx.marketplaces.looks_like_relay(domain):
        what = "malformed relay alias" if domain in ctx.relay_domains else "look-alike relay domain"
        return RuleHit("relay_lookalike_sender", Kind.OTHER, f"{what}: {mail.from_addr}", decides=False)
    return None


# --------------------------------------------------------------------------- 6. notice

def marketplace_notice(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """A recognised notification subject from a marketplace's own notification domains (exact)."""
    marketplace = ctx.marketplaces.notification_marketplace(mail.from_addr)
    if marketplace is None:
        return None
    topic = marketplace.notice_topic(mail.subject)
    if topic is not None:
        return RuleHit("marketplace_notice", Kind.NOTICE, f"{topic} notice from {mail.from_addr}")
    return None


def notice_subject_foreign_sender(mail: ParsedMail, ctx: ClassifyContext) -> RuleHit | None:
    """A notification subject from a sender that is not the marketplace: recorded, not trusted."""
    if ctx.marketplaces.is_notification_sender(mail.from_addr) or _relay(mail, ctx) is not None:
        return None   # checked first: cheaper than the subject patterns, and true of most mail
    topic = ctx.marketplaces.notice_topic(mail.subject)
    if topic is not None:
        return RuleHit("notice_subject_foreign_sender", Kind.OTHER,
                       f"{topic} subject from non-marketplace sender {mail.from_addr or '(none)'}", decides=False)
    return None


# --------------------------------------------------------------------------- the list

RULES: tuple[Rule, ...] = (
    own_message,
    delivery_status_report,
    mta_bounce,
    failed_recipients_header,
    marketplace_undelivered_notice,
    auto_submitted_header,
    precedence_bulk,
    auto_response_suppress_header,
    autoreply_header,
    out_of_office_subject,
    disposition_notification,
    staff_reply_address,
    staff_reply_to_notification,
    reply_address_foreign_sender,
    relay_sender,
    relay_reply_to_only,
    relay_lookalike_sender,
    marketplace_notice,
    notice_subject_foreign_sender,
)

# Recorded when no rule decided.
FALLBACK_RULE = "unclassified"
RULE_NAMES: tuple[str, ...] = tuple(rule.__name__ for rule in RULES) + (FALLBACK_RULE,)


def classify(mail: ParsedMail, ctx: ClassifyContext) -> Classification:
    """Run every rule in order; the first deciding hit chooses the kind."""
    hits: list[RuleHit] = []
    decision: RuleHit | None = None
    for rule in RULES:
        hit = rule(mail, ctx)
        if hit is None:
            continue
        hits.append(hit)
        if decision is None and hit.decides:
            decision = hit
    if decision is None:
        decision = RuleHit(FALLBACK_RULE, Kind.OTHER, "no rule decided")
        hits.append(decision)

    kind = decision.kind
    buyer_alias = buyer_address = reply_token = None
    if kind is Kind.BUYER:
        relay = _relay(mail, ctx)
        if relay is not None:
            buyer_alias, buyer_address = relay[0], mail.from_addr.strip().lower()
    elif kind is Kind.STAFF_REPLY:
        reply_token = _reply_token(mail, ctx)
    return Classification(kind=kind, hits=tuple(hits), buyer_alias=buyer_alias, buyer_address=buyer_address,
                          reply_token=reply_token, decided_by=decision.rule)

