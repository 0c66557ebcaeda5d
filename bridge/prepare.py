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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from . import tokens
from .classify import Classification, ClassifyContext, Kind, classify
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


@dataclass(frozen=True)
class Prepared:
    item: FetchedMail
    content_hash: str
    mail: ParsedMail | None = None
    error: str | None = None                 # why it cannot be recorded: the quarantine reason
    origin_ok: bool = False                  # carries a valid X-Mailbridge-Origin of this account
    cls: Classification | None = None        # assuming no Message-ID of ours among its ids
    flags: tuple[str, ...] = field(default=())  # bridge.flags for a buyer message, else ()


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
        mail = parse_mail(item.raw)
        origin_ok = tokens.verify_origin(ctx.secret, mail.headers.get("x-mailbridge-origin", ""), mail.message_id,
                                         ctx.account)
        cls = classify(mail, ClassifyContext(sent_by_us=origin_ok, replies_to_us=False, **ctx.classify_base))
        flags = buyer_flags(mail, cls)
    except UnparseableMail as exc:
        return Prepared(item, content_hash, error=f"not a mail message: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure of one message quarantines it, with its reason
        return Prepared(item, content_hash, error=f"{type(exc).__name__}: {exc}")
    return Prepared(item, content_hash, mail, None, origin_ok, cls, flags)


def buyer_flags(mail: ParsedMail, cls: Classification) -> tuple[str, ...]:
    """Flags (courtesy refund, A-to-z claim) of a buyer message; nothing for other kinds."""
    if cls.kind != Kind.BUYER:
        return ()
    return tuple(conversation_flags(mail.buyer_text or mail.text, mail.subject))
