"""Inbound pipeline: fetched mail -> recorded effects, one transaction per fetched batch.

The batch commits together with the UID checkpoint, so a message's effects
(its row, its conversation, its outbox rows) and the checkpoint that says
"done" commit together or not at all (docs/architecture.md, "Invariants").
When a message fails, the batch is done again with a SAVEPOINT per message:
the failed one is rolled back alone, quarantined inside the same transaction,
and never blocks the ones behind it. Committing a batch at once costs one
fsync instead of hundreds.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from bridge import store
from bridge.adapters.templates import TemplateContextError, TemplateError
from bridge.domain import bounces, compose, tokens
from bridge.domain.classify import Classification, ClassifyContext, Kind, classify
from bridge.domain.marketplaces import MARKETPLACES
from bridge.domain.orders import OrderFacts
from bridge.domain.parse import ParsedMail
from bridge.domain.prepare import (
    FORWARDED_KINDS,
    FetchedMail,
    Prepared,
    Recording,
    buyer_flags,
    prepare,
    recording,
)
from bridge.services import bounce_effects, orders, relay, reminders
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_alert, render

log = logging.getLogger(__name__)

# Quarantined mail keeps its bytes in the database up to this size, so it
# survives even if someone expunges the mailbox; larger mail stays on the server.
QUARANTINE_KEEP_BYTES = 2 * 1024 * 1024


# Failures that would hit every message alike: quarantining would only move
# all mail aside. They abort the batch instead (nothing lost, retried later).
# A DataError or IntegrityError is about one message's values, so it quarantines
# that message; the rest of DBAPIError (connection lost, database locked,
# disk full) is about the database. A TemplateError arrives only when a template
# has no good version to fall back on (broken since start-up; see
# bridge/adapters/templates.py), and a TemplateContextError is a bug in the
# context the code builds: both would hit every message alike.
SYSTEMIC_ERRORS: tuple[type[Exception], ...] = (TemplateError, TemplateContextError, OperationalError,
                                                InterfaceError, InternalError, ProgrammingError, NotSupportedError)


@dataclass
class BatchResult:
    recorded: int = 0
    forwarded: int = 0
    history: int = 0
    duplicates: int = 0
    quarantined: int = 0
    outbox_rows: int = 0
    relayed: int = 0          # staff replies queued for a buyer
    processed_uids: list[int] = field(default_factory=list)    # safe to move to processed_folder
    quarantined_uids: list[int] = field(default_factory=list)  # safe to move to quarantine_folder
    kinds: dict[str, int] = field(default_factory=dict)
    recorded_mail: list[RecordedMail] = field(default_factory=list)   # for the log, once committed


@dataclass(frozen=True)
class RecordedMail:
    """One message of a batch as recorded: what the log says about it after the commit."""

    uid: int
    message_id: str | None
    kind: str
    disposition: str
    row_id: int
    conversation_id: int | None


def ingest_batch(engine: Engine, acct: AccountContext, folder: str, uidvalidity: int,
                 batch: Iterable[FetchedMail], history_until_uid: int, now: datetime) -> BatchResult:
    """Record a batch of fetched mail and move the checkpoint past it, in one transaction.

    Mail is prepared (bridge.domain.prepare) before the transaction opens, so the
    database lock is held only for writing.

    Raises only when the database itself fails (or on a systemic error such as
    a broken template); then nothing of the batch is committed and the same
    UIDs are fetched again next time.
    """
    ctx = acct.prepare_context
    items = [prepare(ctx, i) for i in batch]
    try:
        return _ingest(engine, acct, folder, uidvalidity, items, history_until_uid, now, careful=False)
    except _RetryCarefully:
        # Some message failed. Do the batch again with a SAVEPOINT per message so
        # that one is quarantined alone. (Savepoints cost more than the rest of a
        # message's work, so the common, clean batch does without them.)
        return _ingest(engine, acct, folder, uidvalidity, items, history_until_uid, now, careful=True)


class _RetryCarefully(Exception):
    """A message failed in a batch run without savepoints."""


@dataclass
class _HeldWrites:
    """Writes of the forwarded path held back to go out together: conversation touches, buyer links to orders
    and staff notifications.

    Each is one executemany statement per flush instead of one statement per
    message. They are flushed before a message of another kind is recorded (its
    handling may read conversations or the outbox), after every message of a
    careful run (inside its SAVEPOINT), and before the checkpoint moves, so they
    commit with the rows and the checkpoint as before.
    """

    threads: store.BatchThreads
    links: list[OrderFacts] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    # Conversations whose response clock this batch started. Not written later, so not dropped by
    # forget(): after a rollback it only means the database is asked again.
    clocks_started: set[int] = field(default_factory=set)

    def flush(self, conn: Connection, now: datetime) -> None:
        self.threads.flush(conn, now)
        store.link_buyers(conn, self.threads.account, self.links, now)
        self.links.clear()
        store.enqueue_many(conn, self.notifications)
        self.notifications.clear()

    def forget(self) -> None:
        """A SAVEPOINT rolled back what was written; what is held is of the failed message only: drop it."""
        self.threads.forget()
        self.links.clear()
        self.notifications.clear()


def _ingest(engine: Engine, acct: AccountContext, folder: str, uidvalidity: int, items: list[Prepared],
            history_until_uid: int, now: datetime, careful: bool) -> BatchResult:
    result = BatchResult()
    # Templates are checked for edits once per batch: a stat per file and message costs more than it is worth.
    with acct.templates.checked_once(), engine.begin() as conn:
        done = store.recorded_uids(conn, acct.name, folder, uidvalidity, [p.item.uid for p in items])
        seen = store.SeenContent(conn, acct.name, (p.content_hash for p in items))
        ours = store.outbox_known_ids(conn, (i for p in items if p.mail for i in (
            p.mail.message_id, p.mail.in_reply_to, *p.mail.references)))
        threaded = [p for p in items if p.recording and p.recording.conversation_key and p.cls]
        held = _HeldWrites(store.BatchThreads(
            conn, acct.name,
            (p.recording.conversation_key for p in threaded if p.recording and p.recording.conversation_key),
            (p.cls.buyer_alias for p in threaded if p.cls and p.cls.buyer_alias)))
        last_uid = 0
        for prepared in items:
            item = prepared.item
            last_uid = max(last_uid, item.uid)
            if item.uid in done:
                continue
            if prepared.error is not None:
                # Known to be unrecordable before any write (not mail, too large, no content):
                # set aside at once, without the careful retry of the whole batch.
                _set_aside(conn, acct, folder, uidvalidity, prepared, prepared.error, now, result)
                continue
            savepoint = conn.begin_nested() if careful else None
            try:
                disposition, kind, outbox_rows, row_id, conversation_id = _record_one(
                    conn, acct, folder, uidvalidity, prepared, seen, ours, held, item.uid <= history_until_uid,
                    now)
                if savepoint is not None:
                    held.flush(conn, now)
                    savepoint.commit()
                if prepared.mail is not None:
                    seen.add(prepared.content_hash, prepared.mail.message_id, row_id)
            except SYSTEMIC_ERRORS:
                # Not this message's fault (a broken template, the database): stop the
                # batch, commit nothing, and let the same mail be fetched again later.
                raise
            except Exception as exc:  # noqa: BLE001 - any other failure of one message quarantines it
                if savepoint is None:
                    raise _RetryCarefully() from exc
                savepoint.rollback()
                held.forget()
                _set_aside(conn, acct, folder, uidvalidity, prepared, _reason(exc), now, result)
                continue
            result.recorded += 1
            result.outbox_rows += outbox_rows
            result.kinds[kind] = result.kinds.get(kind, 0) + 1
            result.processed_uids.append(item.uid)
            result.recorded_mail.append(RecordedMail(item.uid, prepared.mail.message_id if prepared.mail else None,
                                                     kind, disposition, row_id, conversation_id))
            if disposition == "forwarded":
                result.forwarded += 1
            elif disposition == "history":
                result.history += 1
            elif disposition == "duplicate":
                result.duplicates += 1
            elif disposition == "relayed":
                result.relayed += 1
        try:
            held.flush(conn, now)   # a careful run has flushed after every message: nothing is left
        except SYSTEMIC_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - a held write of some message failed: find which, carefully
            raise _RetryCarefully() from exc
        if last_uid:
            store.advance_checkpoint(conn, acct.name, folder, uidvalidity, last_uid)
            store.record_fetch(conn, acct.name, folder, now, None)
    return result


def _set_aside(conn: Connection, acct: AccountContext, folder: str, uidvalidity: int, prepared: Prepared,
               reason: str, now: datetime, result: BatchResult) -> None:
    """Quarantine one message (in its own savepoint) and count it."""
    uid = prepared.item.uid
    log.warning("account %s: %s UID %s quarantined: %s", acct.name, folder, uid, reason)
    with conn.begin_nested():
        result.outbox_rows += _quarantine(conn, acct, folder, uidvalidity, prepared, reason, now)
    result.quarantined += 1
    result.quarantined_uids.append(uid)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _record_one(conn: Connection, acct: AccountContext, folder: str, uidvalidity: int, prepared: Prepared,
                seen: store.SeenContent, ours: set[str], held: _HeldWrites, as_history: bool,
                now: datetime) -> tuple[str, str, int, int, int | None]:
    """Record one message; returns (disposition, kind, outbox rows queued, message row id, conversation id)."""
    assert prepared.mail is not None and prepared.cls is not None   # prepare() set an error otherwise
    item, mail, content_hash = prepared.item, prepared.mail, prepared.content_hash
    cls, flags, rec = prepared.cls, prepared.flags, prepared.recording
    # prepare() left a recording, signed if forwardable.
    assert rec is not None and (rec.staff_origin is not None or cls.kind not in FORWARDED_KINDS)
    replies_to_us = bool(ours & ({mail.in_reply_to, *mail.references} - {None, mail.message_id}))
    if replies_to_us or mail.message_id in ours:
        # What preparing could not know: the database says one of its ids is ours.
        sent_by_us = prepared.origin_ok or mail.message_id in ours
        cls = classify(mail, ClassifyContext(sent_by_us=sent_by_us, replies_to_us=replies_to_us,
                                             **acct.classify_base))
        flags = buyer_flags(mail, cls)
        rec = recording(acct.prepare_context, mail, cls)
    if cls.kind not in FORWARDED_KINDS:
        held.flush(conn, now)   # what follows may read the conversations and the outbox

    duplicate_of = seen.find(content_hash, mail.message_id)
    if duplicate_of is not None:
        disposition = "duplicate"
    elif as_history:
        disposition = "history"
    elif cls.kind in FORWARDED_KINDS:
        disposition = "forwarded"
    else:
        disposition = "recorded"

    # The notification's Message-ID is fixed already, so the conversation can chain to it in the same UPDATE.
    staff_message_id = rec.staff_message_id if disposition == "forwarded" else None
    conversation: store.ConversationRef | None = None
    if rec.conversation_key and cls.buyer_alias and duplicate_of is None:
        conversation = _thread(conn, held.threads, mail, cls, rec, now, staff_message_id)

    message_row = store.insert_message(
        conn,
        account=acct.name, folder=folder, uidvalidity=uidvalidity, uid=item.uid,
        message_id=_clean(mail.message_id), content_hash=content_hash, kind=cls.kind.value,
        rule_hits=rec.rule_hits,
        disposition=disposition, from_addr=_clean(mail.from_addr), to_addrs=_json_list(mail.all_recipients),
        subject=_clean(mail.subject), sent_date=mail.date, received_at=now, in_reply_to=_clean(mail.in_reply_to),
        references=_json_list(mail.references), order_id=mail.order_id, comm_mgr_tok=mail.comm_mgr_tok,
        buyer_address=cls.buyer_address, text=_clean(mail.buyer_text or mail.text), size=item.size,
        defects=_json_list(mail.defects), conversation_id=conversation.id if conversation else None,
        duplicate_of=duplicate_of, raw=item.raw if cls.kind == Kind.STAFF_REPLY else None,
    )
    if duplicate_of is None and cls.kind == Kind.NOTICE:
        # Order notices update the orders; never a thread, never staff.
        orders.apply_order_mail(conn, acct.name, mail, cls, now, acct.prepare_context.marketplaces)
    link = orders.buyer_order_link(mail, cls, acct.prepare_context.marketplaces) if duplicate_of is None else None
    if link is not None:
        held.links.append(link)   # a buyer naming an order is linked to it
    if cls.kind == Kind.BOUNCE and disposition == "recorded":
        disposition = bounce_effects.apply(conn, acct, bounces.analyse(item.raw, mail), mail, now)
        store.set_disposition(conn, message_row, disposition)
        return disposition, cls.kind.value, 1, message_row, None   # alerts may be queued: wake the outbox
    if cls.kind == Kind.STAFF_REPLY and disposition == "recorded":
        outcome = relay.handle_staff_reply(conn, acct, mail, cls, item.raw, content_hash, message_row, acct.relay,
                                           now)
        disposition = "relayed" if outcome.action == "queued" else outcome.action
        store.set_disposition(conn, message_row, disposition)
        return disposition, cls.kind.value, 0 if outcome.action == "duplicate" else 1, message_row, None
    conversation_id = conversation.id if conversation else None
    if staff_message_id is None:
        return disposition, cls.kind.value, 0, message_row, conversation_id
    held.notifications.append(_notification(conn, acct, mail, cls, flags, rec, conversation, message_row, now))
    if cls.kind == Kind.BUYER and conversation is not None:
        # The marketplace's 24 hours run from now on (from when the buyer sent it): remind staff in time.
        # A conversation this batch opened has no clock unless the batch started one: no need to ask.
        clock_may_run = not conversation.opened_in_batch or conversation.id in held.clocks_started
        if reminders.schedule_for_message(conn, acct, conversation_id=conversation.id, message_row=message_row,
                                          sent_at=mail.date, now=now, clock_may_run=clock_may_run):
            held.clocks_started.add(conversation.id)
    return disposition, cls.kind.value, 1, message_row, conversation_id


def _json_list(items: tuple[str, ...]) -> str:
    return json.dumps(list(items)) if items else "[]"


def _clean(text: str | None) -> str | None:
    """Text safe for every database: PostgreSQL text cannot hold NUL, which mail may carry."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def _thread(conn: Connection, threads: store.BatchThreads, mail: ParsedMail, cls: Classification,
            rec: Recording, now: datetime, staff_message_id: str | None) -> store.ConversationRef:
    alias = cls.buyer_alias or ""
    assert rec.conversation_key is not None
    return threads.thread(
        conn, marketplace=alias.rpartition("@")[2], alias=alias, buyer_name=rec.buyer_name,
        key=rec.conversation_key, order_id=mail.order_id, comm_mgr_tok=mail.comm_mgr_tok,
        subject=rec.thread_subject, now=now, staff_message_id=staff_message_id)


def _notification(conn: Connection, acct: AccountContext, mail: ParsedMail, cls: Classification,
                  flags: tuple[str, ...], rec: Recording, conversation: store.ConversationRef | None,
                  message_row: int, now: datetime) -> dict[str, Any]:
    """The staff notification of a forwarded message, as an outbox row to queue."""
    s = acct.settings
    assert rec.staff_message_id is not None and rec.staff_origin is not None
    message_id = rec.staff_message_id
    buyer_name = rec.buyer_name
    tag = f"MB-{conversation.id}" if conversation else f"MB-M{message_row}"
    if flags and conversation is not None:
        store.raise_flags(conn, conversation.id, list(flags))
    context = {
        "marker": compose.MARKER,
        "kind": cls.kind.value,
        "flags": ["UNCLASSIFIED"] if cls.kind == Kind.OTHER else list(flags),
        "tag": tag,
        "subject": mail.subject or "(no subject)",
        "original_subject": mail.subject,
        "from_display": f"{mail.from_name} <{mail.from_addr}>" if mail.from_name else mail.from_addr,
        "buyer_name": buyer_name,
        "buyer_alias": cls.buyer_alias,
        "order_id": mail.order_id,
        "text": (mail.buyer_text or mail.text or "(the message has no text)").strip(),
        "marketplace": MARKETPLACES[s.marketplace].key if s.marketplace in MARKETPLACES else s.marketplace,
        "message_count": (conversation.message_count + 1) if conversation else 1,
        "received": _received(now, now.utcoffset()),
        "account": s.name,
        "seller_address": s.seller_address,
        "defects": list(mail.defects),
    }
    rendered = render(conn, acct, "staff_notification", context, now)
    references: tuple[str, ...] = ()
    in_reply_to = None
    reply_to = None
    if conversation is not None:
        reply_to = tokens.reply_address(s.reply_address, tokens.make_reply_token(acct.secret, s.name, conversation.id))
        chain = [i for i in (conversation.staff_root_id, conversation.staff_last_id) if i]
        references = tuple(dict.fromkeys(chain))
        in_reply_to = conversation.staff_last_id
    sender_name = f"{buyer_name} via {s.seller_name}" if buyer_name else f"mailbridge ({s.seller_name})"
    out = compose.build_mail(
        account=s.name, origin=rec.staff_origin, message_id=message_id,
        date=now, from_name=sender_name, from_addr=s.seller_address, to_addr=s.staff_address,
        subject=rendered.subject, text=rendered.text, reply_to=reply_to, in_reply_to=in_reply_to,
        references=references,
    )
    return store.outbox_row(account=s.name, message_id=out.message_id, purpose="staff_notification",
                            audience="staff", envelope_from=out.envelope_from, recipients=out.recipients,
                            subject=out.subject, raw=out.raw, now=now,
                            conversation_id=conversation.id if conversation else None, source_message_id=message_row)


@functools.lru_cache(maxsize=4)
def _received(now: datetime, _offset: object) -> str:
    # A batch of mail shares one clock reading; equal instants in other zones are written differently.
    return now.strftime("%Y-%m-%d %H:%M UTC")


def _quarantine(conn: Connection, acct: AccountContext, folder: str, uidvalidity: int, prepared: Prepared,
                reason: str, now: datetime) -> int:
    """Keep a message that could not be processed, and tell staff once. Returns outbox rows queued."""
    item, content_hash = prepared.item, prepared.content_hash
    header = _header_summary(item.raw)
    told_before = store.quarantined_before(conn, acct.name, content_hash, header.get("message-id"))
    store.insert_quarantine(
        conn, account=acct.name, folder=folder, uidvalidity=uidvalidity, uid=item.uid,
        message_id=header.get("message-id"), size=item.size, reason=reason, content_hash=content_hash,
        raw=item.raw if len(item.raw) <= QUARANTINE_KEEP_BYTES else None, created_at=now,
    )
    if told_before:  # the same mail again (a resync after a UIDVALIDITY change): staff were told once
        return 0
    where = acct.settings.imap.quarantine_folder
    body = "\n".join([
        "mailbridge could not process a message in the seller mailbox, so it was set aside.",
        "Nothing was sent to anyone because of it; please read it in the mailbox yourself.",
        "",
        f"Reason:     {reason}",
        f"From:       {header.get('from', '(unknown)')}",
        f"Subject:    {header.get('subject', '(unknown)')}",
        f"Message-ID: {header.get('message-id', '(none)')}",
        f"Mailbox:    {folder}, UID {item.uid} (UIDVALIDITY {uidvalidity})",
        f"It is {'moved to the folder ' + repr(where) if where else 'left where it is'}; "
        "`mailbridge status` lists quarantined mail.",
    ])
    queue_staff_alert(conn, acct, f"Message set aside: {header.get('subject', 'a message')}"[:150], body, now,
                      purpose="quarantine_alert")
    return 1


def _header_summary(raw: bytes) -> dict[str, str]:
    """Best-effort From/Subject/Message-ID of bytes that may not parse at all."""
    from email import policy
    from email.header import decode_header, make_header
    from email.parser import BytesHeaderParser

    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw[:65536])
    except Exception:  # noqa: BLE001 - this is the fallback for mail that breaks the parser
        return {}
    out: dict[str, str] = {}
    for name in ("from", "subject", "message-id"):
        value = msg.get(name)
        if value is None:
            continue
        try:
            text = str(make_header(decode_header(str(value))))
        except Exception:  # noqa: BLE001
            text = str(value)
        out[name] = " ".join(text.split())[:200].strip("<>") if name == "message-id" else " ".join(text.split())[:200]
    return out
