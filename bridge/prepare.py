"""Fetched bytes -> everything about a message that needs no database (pure).

``prepare()`` parses a fetched message, checks our origin header, classifies
it and finds its flags. None of that reads the database, so it can run
anywhere: in the ingest thread for a few new messages, or ahead of it in the
backlog reader process (bridge.reader) for thousands. Everything here is
picklable for that reason: errors travel as their quarantine reason, not as
exception objects.

The classification assumes what only the database can tell: that none of the
message's Message-IDs is one we queued. The pipeline checks that when it
records the message and classifies again in the rare case it is wrong.

It also works out what recording the message needs that follows from its
content and kind alone (:class:`Recording`): the rule hits as stored, the
conversation key, and the Message-ID and origin header a staff notification
would carry. That is CPU the ingest thread, which holds the database, does
not spend.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from . import compose, threads, tokens
from .classify import Classification, ClassifyContext, Kind, classify
from .config import AccountSettings
from .marketplaces import ALL_RELAY_DOMAINS
from .flags import conversation_flags
from .parse import ParsedMail, UnparseableMail, parse_mail


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
    classify_base: dict[str, Any]
    max_message_bytes: int
    seller_address: str        # as configured: the domain of our Message-IDs


@dataclass(frozen=True)
class Recording:
    """What recording a message needs that follows from its content and kind (not from the database)."""

    rule_hits: str                            # the classification's hits, as JSON for the message row
    buyer_name: str | None = None             # buyer mail: the name to show staff and keep for the buyer
    conversation_key: str | None = None       # buyer mail from a relay alias: bridge.threads.conversation_key
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
    flags: tuple[str, ...] = field(default=())  # bridge.flags for a buyer message, else ()
    recording: Recording | None = None       # for ``cls``


def prepare(ctx: PrepareContext, item: FetchedMail) -> Prepared:
    """Parse, check origin, classify and flag one message. Never raises for bad mail."""
    return complete(ctx, read(ctx, item))


def read(ctx: PrepareContext, item: FetchedMail) -> Prepared:
    """What :func:`prepare` does without ``ctx.secret``: all of it for mail without our origin header
    but the notification's Message-ID and origin value, only the parse for mail with one.
    :func:`complete` does the rest. (The backlog reader runs this alone; it never has the key.)
    """
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
        mail = parse_mail(item.raw)
        if mail.headers.get("x-mailbridge-origin"):
            return Prepared(item, content_hash, mail)    # classified once the origin is checked
        # Without the header the origin check is False whatever the secret.
        cls = classify(mail, ClassifyContext(sent_by_us=False, replies_to_us=False, **ctx.classify_base))
        return Prepared(item, content_hash, mail, None, False, cls, buyer_flags(mail, cls),
                        recording(ctx, mail, cls, signed=False))
    except UnparseableMail as exc:
        return Prepared(item, content_hash, error=f"not a mail message: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure of one message quarantines it, with its reason
        return Prepared(item, content_hash, error=f"{type(exc).__name__}: {exc}")


def complete(ctx: PrepareContext, prepared: Prepared) -> Prepared:
    """The part of :func:`prepare` that needs ``ctx.secret``, after :func:`read` (a no-op when done)."""
    mail = prepared.mail
    if mail is None or prepared.error is not None:
        return prepared
    item, content_hash = prepared.item, prepared.content_hash
    try:
        if prepared.cls is None:
            origin_ok = tokens.verify_origin(ctx.secret, mail.headers.get("x-mailbridge-origin", ""),
                                             mail.message_id, ctx.account)
            cls = classify(mail, ClassifyContext(sent_by_us=origin_ok, replies_to_us=False, **ctx.classify_base))
            return Prepared(item, content_hash, mail, None, origin_ok, cls, buyer_flags(mail, cls),
                            recording(ctx, mail, cls))
        rec = prepared.recording
        if rec is None or rec.staff_origin is not None or prepared.cls.kind not in FORWARDED_KINDS:
            return prepared
        # The notification's Message-ID is made here, with its origin value: whatever came
        # with the message (from the backlog reader) is not signed.
        staff_id = compose.new_message_id(ctx.seller_address)
        signed = Recording(rec.rule_hits, rec.buyer_name, rec.conversation_key, rec.thread_subject,
                           staff_id, tokens.make_origin(ctx.secret, ctx.account, staff_id))
        return Prepared(item, content_hash, mail, None, prepared.origin_ok, prepared.cls, prepared.flags, signed)
    except Exception as exc:  # noqa: BLE001 - as in read()
        return Prepared(item, content_hash, error=f"{type(exc).__name__}: {exc}")


def classify_base(settings: AccountSettings) -> dict[str, Any]:
    """The account's part of every :class:`bridge.classify.ClassifyContext`."""
    return dict(
        seller_address=settings.seller_address.lower(),
        staff_address=settings.staff_address.lower(),
        staff_senders=tuple(s.lower() for s in settings.staff_senders),
        reply_address=settings.reply_address.lower(),
        relay_domains=ALL_RELAY_DOMAINS,
    )


def context(settings: AccountSettings, secret: bytes) -> PrepareContext:
    """The account's :class:`PrepareContext`; ``secret=b""`` for :func:`read` alone."""
    return PrepareContext(settings.name, secret, classify_base(settings), settings.imap.max_message_bytes,
                          settings.seller_address)


def buyer_flags(mail: ParsedMail, cls: Classification) -> tuple[str, ...]:
    """Flags (courtesy refund, A-to-z claim) of a buyer message; nothing for other kinds."""
    if cls.kind != Kind.BUYER:
        return ()
    return tuple(conversation_flags(mail.buyer_text or mail.text, mail.subject))


# Kinds whose mail may be forwarded to staff (when it is not history or a duplicate).
FORWARDED_KINDS = (Kind.BUYER, Kind.OTHER)


def recording(ctx: PrepareContext, mail: ParsedMail, cls: Classification, signed: bool = True) -> Recording:
    """The :class:`Recording` of a message classified as ``cls`` (without the notification's id and
    origin value unless ``signed``: :func:`complete` adds them)."""
    rule_hits = hits_json(cls)
    buyer_name = key = None
    if cls.kind == Kind.BUYER:
        buyer_name = _buyer_name(mail)
        if cls.buyer_alias:
            key = threads.conversation_key(cls.buyer_alias, mail.order_id)
    staff_id = origin = None
    if signed and cls.kind in FORWARDED_KINDS:
        # Fixed now, used only if the message is forwarded: an id nobody uses costs nothing.
        staff_id = compose.new_message_id(ctx.seller_address)
        origin = tokens.make_origin(ctx.secret, ctx.account, staff_id)
    return Recording(rule_hits, buyer_name, key, threads.thread_subject(mail.subject) or mail.subject,
                     staff_id, origin)


_quote = json.encoder.encode_basestring_ascii   # the C escaper json.dumps uses (ensure_ascii)


def hits_json(cls: Classification) -> str:
    """``json.dumps`` of the hits as the message row keeps them, written directly (a test holds them equal)."""
    return "[" + ", ".join(
        f'{{"rule": {_quote(h.rule)}, "kind": {_quote(h.kind.value)}, "reason": {_quote(h.reason)}, '
        f'"decides": {"true" if h.decides else "false"}}}' for h in cls.hits) + "]"


def _buyer_name(mail: ParsedMail) -> str | None:
    if mail.buyer_name:
        return mail.buyer_name
    name = mail.from_name
    for suffix in (" - Amazon Marketplace", " - Marketplace", " via eBay", " via Walmart"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.strip() or None
