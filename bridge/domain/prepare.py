"""Fetched bytes -> everything about a message that needs no database (pure).

``prepare()`` parses a fetched message, checks our origin header, classifies
it and finds its flags, before the batch's transaction opens, so the database
is held only for writing. Errors travel as their quarantine reason, not as
exception objects.

The classification assumes what only the database can tell: that none of the
message's Message-IDs is one we queued. The inbound service checks that when
it records the message and classifies again in the rare case it is wrong.

It also works out what recording the message needs that follows from its
content and kind alone (:class:`Recording`): the rule hits as stored, the
conversation key, and the Message-ID and origin header a staff notification
would carry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bridge.domain import compose, threads, tokens
from bridge.domain.classify import Classification, ClassifyContext, Kind, classify
from bridge.domain.flags import conversation_flags
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry
from bridge.domain.parse import ParsedMail, UnparseableMail, parse_mail


@dataclass(frozen=True)
class FetchedMail:
    """One message as the IMAP adapter hands it over."""

    uid: int
    size: int                 # RFC822.SIZE reported by the server
    raw: bytes                # the whole message, or only its header when ``header_only``
    header_only: bool = False  # too large to download: only the header was fetched
    missing: bool = False      # the server listed it but returned no content


@dataclass(frozen=True)
class PrepareContext:
    """What preparing one account's mail needs; small and picklable."""

    account: str
    secret: bytes
    classify_base: dict[str, Any]   # ClassifyContext fields; "marketplaces" (a Registry) when not the default
    max_message_bytes: int
    seller_address: str        # as configured: the domain of our Message-IDs

    @property
    def marketplaces(self) -> Registry:
        registry: Registry = self.classify_base.get("marketplaces", DEFAULT_REGISTRY)
        return registry


@dataclass(frozen=True)
class Recording:
    """What recording a message needs that follows from its content and kind (not from the database)."""

    rule_hits: str                            # the classification's hits, as JSON for the message row
    buyer_name: str | None = None             # buyer mail: the name to show staff and keep for the buyer
    conversation_key: str | None = None       # buyer mail from a relay alias: bridge.domain.threads.conversation_key
    thread_subject: str = ""                  # the subject a new conversation gets
    staff_message_id: str | None = None       # mail staff may be told about: the notification's Message-ID
    staff_origin: str | None = None           # and its X-Mailbridge-Origin value


@dataclass(frozen=True)
class Prepared:
    item: FetchedMail
    content_hash: str
    mail: ParsedMail | None = None
    error: str | None = None                 # why it cannot be recorded: the quarantine reason
    origin_ok: bool = False                  # carries a valid X-Mailbridge-Origin of this account
    cls: Classification | None = None        # assuming no Message-ID of ours among its ids
    flags: tuple[str, ...] = field(default=())  # bridge.domain.flags for a buyer message, else ()
    recording: Recording | None = None       # for ``cls``


def prepare(ctx: PrepareContext, item: FetchedMail) -> Prepared:
    """Parse, check origin, classify and flag one message. Never raises for bad mail."""
    content_hash = hashlib.sha256(item.raw).hexdigest()
    if item.missing:
        return Prepared(item, content_hash, error=(
            "no content: the IMAP server listed this message but returned nothing for it; it stays on the server"))
    if item.header_only:
        limit = ctx.max_message_bytes
        return Prepared(item, content_hash, error=(
            f"too large: the message is {item.size / 1048576:.1f} MB, over imap.max_message_bytes "
            f"({limit / 1048576:.1f} MB); it was left unread on the server"))
    try:
        mail = parse_mail(item.raw, ctx.marketplaces)
        origin = mail.headers.get("x-mailbridge-origin")
        origin_ok = bool(origin) and tokens.verify_origin(ctx.secret, origin or "", mail.message_id, ctx.account)
        cls = classify(mail, ClassifyContext(sent_by_us=origin_ok, replies_to_us=False, **ctx.classify_base))
        return Prepared(item, content_hash, mail, None, origin_ok, cls, buyer_flags(mail, cls),
                        recording(ctx, mail, cls))
    except UnparseableMail as exc:
        return Prepared(item, content_hash, error=f"not a mail message: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure of one message quarantines it, with its reason
        return Prepared(item, content_hash, error=f"{type(exc).__name__}: {exc}")


def buyer_flags(mail: ParsedMail, cls: Classification) -> tuple[str, ...]:
    """Flags (courtesy refund, A-to-z claim) of a buyer message; nothing for other kinds."""
    if cls.kind != Kind.BUYER:
        return ()
    return tuple(conversation_flags(mail.buyer_text or mail.text, mail.subject))


# Kinds whose mail may be forwarded to staff (when it is not history or a duplicate).
FORWARDED_KINDS = (Kind.BUYER, Kind.OTHER)


def recording(ctx: PrepareContext, mail: ParsedMail, cls: Classification) -> Recording:
    """The :class:`Recording` of a message classified as ``cls``."""
    rule_hits = json.dumps([{"rule": h.rule, "kind": h.kind.value, "reason": h.reason, "decides": h.decides}
                            for h in cls.hits])
    buyer_name = key = None
    if cls.kind == Kind.BUYER:
        buyer_name = _buyer_name(mail, ctx.marketplaces)
        if cls.buyer_alias:
            key = threads.conversation_key(cls.buyer_alias, mail.order_id)
    staff_id = origin = None
    if cls.kind in FORWARDED_KINDS:
        # Fixed now, used only if the message is forwarded: an id nobody uses costs nothing.
        staff_id = compose.new_message_id(ctx.seller_address)
        origin = tokens.make_origin(ctx.secret, ctx.account, staff_id)
    return Recording(rule_hits, buyer_name, key, threads.thread_subject(mail.subject) or mail.subject,
                     staff_id, origin)


def _buyer_name(mail: ParsedMail, marketplaces: Registry) -> str | None:
    if mail.buyer_name:
        return mail.buyer_name
    name = mail.from_name
    for suffix in marketplaces.display_name_suffixes:   # "Jane - Amazon Marketplace" -> "Jane"
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.strip() or None
