"""All database reads and writes (SQLAlchemy Core on the SQLModel tables).

Functions take a Connection that is already inside a transaction: the caller
(pipeline, outbox worker, CLI) decides where a transaction starts and ends.
"""

from __future__ import annotations

import json
import secrets as pysecrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from bridge.domain.threads import base_alias
from bridge.store import models

MAILBOX = models.MailboxState.__table__
BUYER = models.Buyer.__table__
CONV = models.Conversation.__table__
MESSAGE = models.Message.__table__
QUARANTINE = models.Quarantine.__table__
OUTBOX = models.Outbox.__table__
INFO = models.SchemaInfo.__table__

OUTBOX_STATES = ("queued", "sending", "sent", "failed", "unknown", "held", "blocked", "cancelled")


def utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# --- secrets -------------------------------------------------------------------

def token_secret(engine: Engine, configured: str | None) -> bytes:
    """The HMAC key: the configured one, else one generated once and kept in the database."""
    if configured:
        return configured.encode("utf-8")
    query = select(INFO.c.value).where(INFO.c.key == "token_secret")
    with engine.begin() as conn:
        row = conn.execute(query).first()
        if row is not None:
            return str(row[0]).encode("ascii")
    try:
        with engine.begin() as conn:
            conn.execute(INFO.insert().values(key="token_secret", value=pysecrets.token_hex(32)))
    except IntegrityError:
        pass  # several daemons started at once on one database: another one's key won
    with engine.begin() as conn:
        return str(conn.execute(query).scalar_one()).encode("ascii")


# --- mailbox state ------------------------------------------------------------

@dataclass(frozen=True)
class MailboxCheckpoint:
    uidvalidity: int
    last_uid: int
    history_until_uid: int


def mailbox_checkpoint(conn: Connection, account: str, folder: str) -> MailboxCheckpoint | None:
    row = conn.execute(
        select(MAILBOX.c.uidvalidity, MAILBOX.c.last_uid, MAILBOX.c.history_until_uid)
        .where(MAILBOX.c.account == account, MAILBOX.c.folder == folder)
    ).first()
    # UIDVALIDITY is never 0 (RFC 3501 2.3.1.1): 0 marks a row made only to record an error.
    return None if row is None or row[0] == 0 else MailboxCheckpoint(row[0], row[1], row[2])


def start_mailbox(conn: Connection, account: str, folder: str, uidvalidity: int,
                  history_until_uid: int, now: datetime) -> None:
    """First sight of a folder, or a UIDVALIDITY change: checkpoint back to 0 under the new validity."""
    exists = conn.execute(
        select(MAILBOX.c.id).where(MAILBOX.c.account == account, MAILBOX.c.folder == folder)
    ).first()
    values = dict(uidvalidity=uidvalidity, last_uid=0, history_until_uid=history_until_uid, initialised_at=now)
    if exists:
        conn.execute(update(MAILBOX).where(MAILBOX.c.id == exists[0]).values(**values))
    else:
        conn.execute(MAILBOX.insert().values(account=account, folder=folder, **values))


def mailbox_checkpoint_or_fail(engine: Engine, account: str, folder: str) -> MailboxCheckpoint:
    with engine.begin() as conn:
        checkpoint = mailbox_checkpoint(conn, account, folder)
    if checkpoint is None:
        raise RuntimeError(f"no mailbox state for {account}/{folder}")
    return checkpoint


def quarantined_uids(conn: Connection, account: str, folder: str, uidvalidity: int) -> list[int]:
    return [int(r[0]) for r in conn.execute(select(QUARANTINE.c.uid).where(
        QUARANTINE.c.account == account, QUARANTINE.c.folder == folder, QUARANTINE.c.uidvalidity == uidvalidity))]


def advance_checkpoint(conn: Connection, account: str, folder: str, uidvalidity: int, uid: int) -> None:
    """Move the checkpoint forward (never back) under the same UIDVALIDITY."""
    result = conn.execute(
        update(MAILBOX)
        .where(MAILBOX.c.account == account, MAILBOX.c.folder == folder,
               MAILBOX.c.uidvalidity == uidvalidity, MAILBOX.c.last_uid < uid)
        .values(last_uid=uid)
    )
    if result.rowcount != 1:
        row = mailbox_checkpoint(conn, account, folder)
        if row is None or row.uidvalidity != uidvalidity:
            raise RuntimeError(f"checkpoint for {account}/{folder} changed under us (now {row})")


def record_fetch(conn: Connection, account: str, folder: str, now: datetime, error: str | None) -> None:
    """Record a successful fetch (clears the error) or an error, for ``mailbridge status``."""
    values: dict[str, Any] = {"last_error": error, "last_error_at": now if error else None}
    if error is None:
        values["last_fetch_at"] = now
    updated = conn.execute(update(MAILBOX).where(MAILBOX.c.account == account, MAILBOX.c.folder == folder)
                           .values(**values)).rowcount
    if not updated:
        conn.execute(MAILBOX.insert().values(account=account, folder=folder, uidvalidity=0, last_uid=0,
                                             history_until_uid=0, initialised_at=now, **values))


# --- inbound ------------------------------------------------------------------
#
# The ingest hot path runs these for every message, so the statements are
# built once (building a Core statement costs several times its execution).


_RECORDED_UIDS = select(MESSAGE.c.uid).where(
    MESSAGE.c.account == bindparam("account"), MESSAGE.c.folder == bindparam("folder"),
    MESSAGE.c.uidvalidity == bindparam("uidvalidity"), MESSAGE.c.uid.in_(bindparam("uids", expanding=True)),
).union_all(select(QUARANTINE.c.uid).where(
    QUARANTINE.c.account == bindparam("account"), QUARANTINE.c.folder == bindparam("folder"),
    QUARANTINE.c.uidvalidity == bindparam("uidvalidity"), QUARANTINE.c.uid.in_(bindparam("uids", expanding=True)),
))
_BY_HASH = select(MESSAGE.c.id, MESSAGE.c.message_id, MESSAGE.c.content_hash).where(
    MESSAGE.c.account == bindparam("account"), MESSAGE.c.content_hash.in_(bindparam("hashes", expanding=True)),
).order_by(MESSAGE.c.id)
_OUTBOX_IDS = select(OUTBOX.c.message_id).where(OUTBOX.c.message_id.in_(bindparam("ids", expanding=True)))
_BUYER = select(BUYER.c.id, BUYER.c.name).where(BUYER.c.account == bindparam("account"),
                                                BUYER.c.alias == bindparam("alias"))
_BUYER_RENAME = update(BUYER).where(BUYER.c.id == bindparam("buyer_id")).values(name=bindparam("name"))
_CONV = select(CONV.c.id, CONV.c.staff_root_id, CONV.c.staff_last_id, CONV.c.message_count, BUYER.c.id,
               BUYER.c.name).join(BUYER, BUYER.c.id == CONV.c.buyer_id).where(
    CONV.c.account == bindparam("account"), CONV.c.key == bindparam("key"))
_CONV_TOUCH = update(CONV).where(CONV.c.id == bindparam("conv_id")).values(
    last_message_at=bindparam("now"), status="open", message_count=CONV.c.message_count + 1,
    comm_mgr_tok=func.coalesce(CONV.c.comm_mgr_tok, bindparam("tok", type_=CONV.c.comm_mgr_tok.type)),
    staff_last_id=func.coalesce(bindparam("staff_id", type_=CONV.c.staff_last_id.type), CONV.c.staff_last_id),
    staff_root_id=func.coalesce(CONV.c.staff_root_id, bindparam("staff_id", type_=CONV.c.staff_root_id.type)),
)


def recorded_uids(conn: Connection, account: str, folder: str, uidvalidity: int, uids: list[int]) -> set[int]:
    """Which of ``uids`` are already recorded (as a message or in quarantine)."""
    if not uids:
        return set()
    return {int(r[0]) for r in conn.execute(_RECORDED_UIDS, {
        "account": account, "folder": folder, "uidvalidity": uidvalidity, "uids": uids})}


class SeenContent:
    """Messages already recorded with given content hashes, for duplicate detection in one batch.

    A duplicate (resync after a UIDVALIDITY change, the same mail in two
    folders) has the same content hash *and* the same Message-ID; without a
    Message-ID the hash alone decides. Two different mails may share a
    Message-ID (broken senders): the hash keeps them apart, so both reach staff.
    """

    def __init__(self, conn: Connection, account: str, hashes: Iterable[str]) -> None:
        self._by_hash: dict[str, list[tuple[int, str | None]]] = {}
        wanted = list(set(hashes))
        if wanted:
            for row_id, message_id, content_hash in conn.execute(_BY_HASH, {"account": account, "hashes": wanted}):
                self.add(content_hash, message_id, int(row_id))

    def add(self, content_hash: str, message_id: str | None, row_id: int) -> None:
        self._by_hash.setdefault(content_hash, []).append((row_id, message_id))

    def find(self, content_hash: str, message_id: str | None) -> int | None:
        for row_id, known_id in self._by_hash.get(content_hash, ()):
            if not message_id or known_id == message_id:
                return row_id
        return None


def outbox_known_ids(conn: Connection, ids: Iterable[str | None]) -> set[str]:
    """Which of these Message-IDs are of mail we sent (or queued)."""
    wanted = list({i for i in ids if i})
    if not wanted:
        return set()
    return {str(r[0]) for r in conn.execute(_OUTBOX_IDS, {"ids": wanted})}


def _upsert_buyer(conn: Connection, account: str, marketplace: str, alias: str, name: str | None,
                  now: datetime) -> int:
    row = conn.execute(_BUYER, {"account": account, "alias": alias}).first()
    if row is not None:
        if name and row[1] != name:
            conn.execute(_BUYER_RENAME, {"buyer_id": row[0], "name": name})
        return int(row[0])
    return int(conn.execute(BUYER.insert(), {
        "account": account, "marketplace": marketplace, "alias": alias, "name": name, "created_at": now,
    }).inserted_primary_key[0])


@dataclass(frozen=True)
class ConversationRef:
    """A conversation as it was *before* the message being recorded joined it."""

    id: int
    staff_root_id: str | None
    staff_last_id: str | None
    message_count: int


def thread_message(conn: Connection, *, account: str, marketplace: str, alias: str, buyer_name: str | None,
                   key: str, order_id: str | None, comm_mgr_tok: str | None, subject: str, now: datetime,
                   staff_message_id: str | None = None) -> ConversationRef:
    """Find or open the buyer's conversation for ``key`` and count the new message in it.

    ``staff_message_id``: the Message-ID of the staff notification about to be
    queued for this message; it becomes the newest of the staff thread (and
    its root when it is the first), so the next one chains to it.
    """
    row = conn.execute(_CONV, {"account": account, "key": key}).first()
    if row is None:
        buyer_id = _upsert_buyer(conn, account, marketplace, alias, buyer_name, now)
        conv_id = int(conn.execute(CONV.insert(), {
            "account": account, "key": key, "buyer_id": buyer_id, "order_id": order_id,
            "comm_mgr_tok": comm_mgr_tok, "subject": subject, "status": "open", "created_at": now,
            "last_message_at": now, "message_count": 1, "staff_root_id": staff_message_id,
            "staff_last_id": staff_message_id,
        }).inserted_primary_key[0])
        return ConversationRef(conv_id, None, None, 0)
    conn.execute(_CONV_TOUCH, {"conv_id": row[0], "now": now, "tok": comm_mgr_tok, "staff_id": staff_message_id})
    if buyer_name and row[5] != buyer_name:
        conn.execute(_BUYER_RENAME, {"buyer_id": row[4], "name": buyer_name})
    return ConversationRef(int(row[0]), row[1], row[2], int(row[3]))


def raise_flags(conn: Connection, conversation_id: int, flags: list[str]) -> None:
    """Add flags to a conversation (they stay until staff deal with them)."""
    row = conn.execute(select(CONV.c.flags).where(CONV.c.id == conversation_id)).first()
    if row is None:
        raise LookupError(f"conversation {conversation_id} does not exist")
    merged = list(dict.fromkeys([*json.loads(row[0] or "[]"), *flags]))
    conn.execute(update(CONV).where(CONV.c.id == conversation_id).values(flags=json.dumps(merged)))


def insert_message(conn: Connection, **values: Any) -> int:
    return int(conn.execute(MESSAGE.insert(), values).inserted_primary_key[0])


def set_disposition(conn: Connection, message_row: int, disposition: str) -> None:
    conn.execute(update(MESSAGE).where(MESSAGE.c.id == message_row).values(disposition=disposition))


def quarantined_before(conn: Connection, account: str, content_hash: str, message_id: str | None) -> bool:
    cond = [QUARANTINE.c.account == account, QUARANTINE.c.content_hash == content_hash]
    if message_id:
        cond.append(QUARANTINE.c.message_id == message_id)
    return conn.execute(select(QUARANTINE.c.id).where(*cond).limit(1)).first() is not None


def insert_quarantine(conn: Connection, **values: Any) -> int:
    return int(conn.execute(QUARANTINE.insert(), values).inserted_primary_key[0])


# --- outbox -------------------------------------------------------------------

def enqueue(conn: Connection, *, account: str, message_id: str, purpose: str, audience: str,
            envelope_from: str, recipients: tuple[str, ...], subject: str, raw: bytes, now: datetime,
            conversation_id: int | None = None, source_message_id: int | None = None,
            state: str = "queued", dedupe_key: str | None = None, note: str | None = None,
            category: str | None = None) -> int:
    return int(conn.execute(OUTBOX.insert(), dict(
        account=account, message_id=message_id, purpose=purpose, audience=audience,
        conversation_id=conversation_id, source_message_id=source_message_id,
        envelope_from=envelope_from, recipients=json.dumps(list(recipients)), subject=subject, raw=raw,
        state=state, attempts=0, next_attempt_at=now, created_at=now, copied_to_sent=False,
        dedupe_key=dedupe_key, last_error=note, category=category,
    )).inserted_primary_key[0])


def dedupe_key_used(conn: Connection, key: str) -> bool:
    return conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.dedupe_key == key)).first() is not None


# --- conversations, for the reply relay ---------------------------------------

@dataclass(frozen=True)
class ConversationInfo:
    id: int
    status: str
    subject: str
    order_id: str | None
    comm_mgr_tok: str | None
    staff_root_id: str | None
    staff_last_id: str | None
    buyer_alias: str
    buyer_name: str | None


def conversation_info(conn: Connection, account: str, conversation_id: int) -> ConversationInfo | None:
    row = conn.execute(
        select(CONV.c.id, CONV.c.status, CONV.c.subject, CONV.c.order_id, CONV.c.comm_mgr_tok,
               CONV.c.staff_root_id, CONV.c.staff_last_id, BUYER.c.alias, BUYER.c.name)
        .join(BUYER, BUYER.c.id == CONV.c.buyer_id)
        .where(CONV.c.id == conversation_id, CONV.c.account == account)).first()
    return None if row is None else ConversationInfo(*row)


def conversation_of_notification(conn: Connection, account: str, ids: Iterable[str | None]) -> int | None:
    """The conversation of the newest staff notification among these Message-IDs.

    Only a staff notification counts: a reply to a confirmation ("replies are not
    read") or to a buyer reply (whose Message-ID the buyer has seen, so anyone
    could cite it) must never become mail to a buyer.
    """
    wanted = [i for i in ids if i]
    if not wanted:
        return None
    row = conn.execute(select(OUTBOX.c.conversation_id).where(
        OUTBOX.c.account == account, OUTBOX.c.message_id.in_(wanted), OUTBOX.c.conversation_id.is_not(None),
        OUTBOX.c.purpose == "staff_notification")
        .order_by(OUTBOX.c.id.desc()).limit(1)).first()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class BuyerMessage:
    id: int
    message_id: str | None
    subject: str
    text: str
    buyer_address: str | None
    order_id: str | None
    comm_mgr_tok: str | None
    sent_date: datetime | None
    references: tuple[str, ...]


def buyer_message_to_quote(conn: Connection, account: str, conversation_id: int,
                           answered_ids: Iterable[str | None]) -> BuyerMessage | None:
    """The buyer message staff answered: the one behind the notification they replied to, else the newest."""
    columns = (MESSAGE.c.id, MESSAGE.c.message_id, MESSAGE.c.subject, MESSAGE.c.text, MESSAGE.c.buyer_address,
               MESSAGE.c.order_id, MESSAGE.c.comm_mgr_tok, MESSAGE.c.sent_date, MESSAGE.c.references)
    wanted = [i for i in answered_ids if i]
    row = None
    if wanted:
        row = conn.execute(select(*columns).join(OUTBOX, OUTBOX.c.source_message_id == MESSAGE.c.id).where(
            OUTBOX.c.account == account, OUTBOX.c.message_id.in_(wanted),
            MESSAGE.c.conversation_id == conversation_id, MESSAGE.c.kind == "buyer")
            .order_by(MESSAGE.c.id.desc()).limit(1)).first()
    if row is None:
        row = conn.execute(select(*columns).where(
            MESSAGE.c.account == account, MESSAGE.c.conversation_id == conversation_id,
            MESSAGE.c.kind == "buyer").order_by(MESSAGE.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return BuyerMessage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], utc(row[7]),
                        tuple(json.loads(row[8] or "[]")))


@dataclass(frozen=True)
class OutboxItem:
    id: int
    account: str
    message_id: str
    purpose: str
    audience: str
    envelope_from: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    copied_to_sent: bool
    conversation_id: int | None
    subject: str
    category: str | None


def _item(row: Row[Any]) -> OutboxItem:
    return OutboxItem(row.id, row.account, row.message_id, row.purpose, row.audience, row.envelope_from,
                      tuple(json.loads(row.recipients)), bytes(row.raw), row.attempts, bool(row.copied_to_sent),
                      row.conversation_id, row.subject, row.category)


_ITEM_COLUMNS = (OUTBOX.c.id, OUTBOX.c.account, OUTBOX.c.message_id, OUTBOX.c.purpose, OUTBOX.c.audience,
                 OUTBOX.c.envelope_from, OUTBOX.c.recipients, OUTBOX.c.raw, OUTBOX.c.attempts,
                 OUTBOX.c.copied_to_sent, OUTBOX.c.conversation_id, OUTBOX.c.subject, OUTBOX.c.category)


def claim_due(conn: Connection, account: str, worker: str, now: datetime) -> OutboxItem | None:
    """Claim the most overdue queued row: queued -> sending, by a conditional UPDATE.

    Two workers (threads, processes, machines) never both win: the UPDATE only
    succeeds while the row is still queued. PostgreSQL additionally skips rows
    locked by another claimer instead of waiting for them.
    """
    query = (select(OUTBOX.c.id).where(OUTBOX.c.account == account, OUTBOX.c.state == "queued",
                                       OUTBOX.c.next_attempt_at <= now)
             .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id).limit(1))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    while True:
        row = conn.execute(query).first()
        if row is None:
            return None
        won = conn.execute(update(OUTBOX).where(OUTBOX.c.id == row[0], OUTBOX.c.state == "queued").values(
            state="sending", claimed_by=worker, claimed_at=now, attempts=OUTBOX.c.attempts + 1)).rowcount
        if won == 1:
            claimed = conn.execute(select(*_ITEM_COLUMNS).where(OUTBOX.c.id == row[0])).one()
            return _item(claimed)


def finish_send(conn: Connection, outbox_id: int, *, worker: str, state: str, now: datetime,
                error: str | None = None, next_attempt_at: datetime | None = None, refund_attempt: bool = False) -> bool:
    """Record the outcome of a send attempt of a row ``worker`` claimed.

    Only while the claim is still ours: if another process reconciled the row
    meanwhile (we were too slow), our outcome must not overwrite its decision.
    ``refund_attempt``: the attempt never reached the message (the session failed).
    """
    values: dict[str, Any] = {"state": state, "last_error": error, "claimed_by": None}
    if state == "sent":
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if refund_attempt:
        values["attempts"] = OUTBOX.c.attempts - 1
    return conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == "sending",
                                             OUTBOX.c.claimed_by == worker).values(**values)).rowcount == 1


def mark_copied_to_sent(conn: Connection, outbox_id: int) -> None:
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(copied_to_sent=True))


def interrupted_sends(conn: Connection, account: str, claimed_before: datetime,
                      exclude_worker: str) -> list[OutboxItem]:
    """Rows left in 'sending' by another worker (one that died), claimed before ``claimed_before``."""
    rows = conn.execute(select(*_ITEM_COLUMNS).where(
        OUTBOX.c.account == account, OUTBOX.c.state == "sending",
        or_(OUTBOX.c.claimed_by.is_(None), OUTBOX.c.claimed_by != exclude_worker),
        or_(OUTBOX.c.claimed_at.is_(None), OUTBOX.c.claimed_at < claimed_before))).all()
    return [_item(r) for r in rows]


def resolve_interrupted(conn: Connection, outbox_id: int, state: str, note: str, now: datetime) -> bool:
    values: dict[str, Any] = {"state": state, "last_error": note, "claimed_by": None}
    if state == "sent":
        values["sent_at"] = now
    if state == "queued":
        values["next_attempt_at"] = now
    return conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == "sending")
                        .values(**values)).rowcount == 1


def oldest_foreign_claim(conn: Connection, account: str, worker: str) -> datetime | None:
    """When the oldest row left in 'sending' by another worker was claimed."""
    return utc(conn.execute(select(func.min(OUTBOX.c.claimed_at)).where(
        OUTBOX.c.account == account, OUTBOX.c.state == "sending",
        or_(OUTBOX.c.claimed_by.is_(None), OUTBOX.c.claimed_by != worker))).scalar())


def next_due_time(conn: Connection, account: str) -> datetime | None:
    return utc(conn.execute(select(func.min(OUTBOX.c.next_attempt_at)).where(
        OUTBOX.c.account == account, OUTBOX.c.state == "queued")).scalar())


# --- status -------------------------------------------------------------------

def account_status(conn: Connection, account: str) -> dict[str, Any]:
    def count(table: Any, *cond: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(table.c.account == account, *cond)).scalar_one())

    mailboxes = [
        {"folder": r.folder, "uidvalidity": r.uidvalidity, "last_uid": r.last_uid,
         "last_fetch_at": _iso(utc(r.last_fetch_at)), "last_error": r.last_error,
         "last_error_at": _iso(utc(r.last_error_at))}
        for r in conn.execute(select(MAILBOX).where(MAILBOX.c.account == account)).all()
    ]
    kinds = {k: n for k, n in conn.execute(
        select(MESSAGE.c.kind, func.count()).where(MESSAGE.c.account == account).group_by(MESSAGE.c.kind)).all()}
    outbox = {s: 0 for s in OUTBOX_STATES}
    outbox.update({s: n for s, n in conn.execute(
        select(OUTBOX.c.state, func.count()).where(OUTBOX.c.account == account).group_by(OUTBOX.c.state)).all()})
    return {
        "account": account,
        "mailboxes": mailboxes,
        "messages": count(MESSAGE),
        "messages_by_kind": kinds,
        "conversations": count(CONV),
        "buyers": count(BUYER),
        "outbox": outbox,
        "quarantined": count(QUARANTINE, QUARANTINE.c.released_at.is_(None)),
    }


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


# --- operator actions ------------------------------------------------------------

def list_outbox(conn: Connection, accounts: Iterable[str], states: Iterable[str], limit: int) -> list[dict[str, Any]]:
    q = (select(OUTBOX.c.id, OUTBOX.c.account, OUTBOX.c.state, OUTBOX.c.purpose, OUTBOX.c.audience,
                OUTBOX.c.recipients, OUTBOX.c.subject, OUTBOX.c.attempts, OUTBOX.c.last_error,
                OUTBOX.c.created_at, OUTBOX.c.next_attempt_at, OUTBOX.c.sent_at, OUTBOX.c.message_id)
         .where(OUTBOX.c.account.in_(list(accounts)), OUTBOX.c.state.in_(list(states)))
         .order_by(OUTBOX.c.id.desc()).limit(limit))
    return [{
        "id": r.id, "account": r.account, "state": r.state, "purpose": r.purpose, "audience": r.audience,
        "recipients": json.loads(r.recipients), "subject": r.subject, "attempts": r.attempts,
        "last_error": r.last_error, "created_at": _iso(utc(r.created_at)),
        "next_attempt_at": _iso(utc(r.next_attempt_at)), "sent_at": _iso(utc(r.sent_at)),
        "message_id": r.message_id,
    } for r in conn.execute(q)]


_OPERATOR_COLUMNS = (OUTBOX.c.state, OUTBOX.c.account, OUTBOX.c.audience, OUTBOX.c.message_id,
                     OUTBOX.c.conversation_id, OUTBOX.c.category, OUTBOX.c.recipients)

# An operator may send again what is held, failed or of unknown outcome (after checking
# the Sent folder), and cancel anything not yet sent.
RETRYABLE = ("held", "failed", "unknown")
CANCELLABLE = ("queued", "held", "failed", "unknown")


def operator_retry(conn: Connection, outbox_id: int, accounts: Iterable[str], now: datetime,
                   who: str) -> Row[Any] | None:
    """Queue a row again; returns the row as it was, or None when it cannot be retried."""
    row = conn.execute(select(*_OPERATOR_COLUMNS).where(
        OUTBOX.c.id == outbox_id, OUTBOX.c.account.in_(list(accounts)))).first()
    if row is None or row.state not in RETRYABLE:
        return None
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == row.state).values(
        state="queued", next_attempt_at=now, attempts=0, last_error=f"{row.state}; released by {who} at {_iso(now)}"))
    return row


def operator_cancel(conn: Connection, outbox_id: int, accounts: Iterable[str], now: datetime,
                    who: str) -> Row[Any] | None:
    """Never send a row; returns the row as it was, or None when it cannot be cancelled."""
    row = conn.execute(select(*_OPERATOR_COLUMNS).where(OUTBOX.c.id == outbox_id,
                                                        OUTBOX.c.account.in_(list(accounts)))).first()
    if row is None or row.state not in CANCELLABLE:
        return None
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == row.state).values(
        state="cancelled", last_error=f"{row.state}; cancelled by {who} at {_iso(now)}"))
    return row


# --- opt-out state and delivery failures -------------------------------------------

def buyer_by_order(conn: Connection, account: str, order_id: str) -> str | None:
    """The relay alias of the buyer of an order, from the conversations we know."""
    row = conn.execute(select(BUYER.c.alias).join(CONV, CONV.c.buyer_id == BUYER.c.id).where(
        CONV.c.account == account, CONV.c.order_id == order_id).order_by(CONV.c.id.desc()).limit(1)).first()
    return None if row is None else str(row[0])


def buyer_exists(conn: Connection, account: str, alias: str) -> bool:
    return conn.execute(select(BUYER.c.id).where(BUYER.c.account == account, BUYER.c.alias == alias)).first() \
        is not None


def set_opt_out(conn: Connection, account: str, alias: str, *, opted_out: bool, source: str, now: datetime,
                marketplace: str | None = None) -> bool:
    """Mark a buyer opted out (or back in). Creates the buyer row if needed. True when the state changed."""
    row = conn.execute(select(BUYER.c.id, BUYER.c.opted_out_at).where(
        BUYER.c.account == account, BUYER.c.alias == alias)).first()
    if row is None:
        if not opted_out:
            return False
        conn.execute(BUYER.insert().values(account=account, alias=alias, created_at=now, opted_out_at=now,
                                           opted_out_source=source,
                                           marketplace=marketplace or alias.rpartition("@")[2]))
        return True
    if (row[1] is not None) == opted_out:
        return False
    conn.execute(update(BUYER).where(BUYER.c.id == row[0]).values(
        opted_out_at=now if opted_out else None, opted_out_source=source if opted_out else None))
    return True


def set_do_not_solicit(conn: Connection, account: str, alias: str, until: datetime | None, now: datetime) -> None:
    """Do-Not-Solicit: ``until`` None removes it; far future for "no expiry"."""
    if not buyer_exists(conn, account, alias):
        conn.execute(BUYER.insert().values(account=account, alias=alias, created_at=now,
                                           marketplace=alias.rpartition("@")[2]))
    conn.execute(update(BUYER).where(BUYER.c.account == account, BUYER.c.alias == alias).values(
        do_not_solicit_until=until))


def cancel_unsolicited(conn: Connection, account: str, alias: str, reason: str) -> list[tuple[int, str]]:
    """Cancel pending unsolicited mail to a buyer (any '+case' form of the alias); returns (id, Message-ID)s."""
    rows = conn.execute(select(OUTBOX.c.id, OUTBOX.c.recipients, OUTBOX.c.message_id).where(
        OUTBOX.c.account == account, OUTBOX.c.audience == "buyer", OUTBOX.c.category == "unsolicited",
        OUTBOX.c.state.in_(CANCELLABLE))).all()
    found = [(int(row_id), str(message_id)) for row_id, recipients, message_id in rows
             if any(base_alias(r) == alias for r in json.loads(recipients))]
    if found:
        conn.execute(update(OUTBOX).where(OUTBOX.c.id.in_([i for i, _ in found]), OUTBOX.c.state.in_(
            CANCELLABLE)).values(state="cancelled", last_error=reason))
    return found


def outbox_by_message_id(conn: Connection, account: str, message_id: str) -> Row[Any] | None:
    return conn.execute(select(OUTBOX.c.id, OUTBOX.c.purpose, OUTBOX.c.audience, OUTBOX.c.recipients,
                               OUTBOX.c.subject, OUTBOX.c.last_error).where(
        OUTBOX.c.account == account, OUTBOX.c.message_id == message_id)).first()


def note_bounce(conn: Connection, outbox_id: int, note: str) -> None:
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(last_error=note))


def record_buyer_bounce(conn: Connection, account: str, alias: str, reason: str, now: datetime) -> None:
    conn.execute(update(BUYER).where(BUYER.c.account == account, BUYER.c.alias == alias).values(
        bounced_at=now, bounce_reason=reason))


def restrict_account(conn: Connection, account: str, until: datetime, reason: str) -> None:
    table = models.AccountState.__table__
    if conn.execute(select(table.c.account).where(table.c.account == account)).first():
        conn.execute(update(table).where(table.c.account == account).values(
            restricted_until=until, restricted_reason=reason))
    else:
        conn.execute(table.insert().values(account=account, restricted_until=until, restricted_reason=reason))


def list_optouts(conn: Connection, accounts: Iterable[str]) -> list[dict[str, Any]]:
    rows = conn.execute(select(BUYER.c.account, BUYER.c.alias, BUYER.c.name, BUYER.c.opted_out_at,
                               BUYER.c.opted_out_source, BUYER.c.do_not_solicit_until).where(
        BUYER.c.account.in_(list(accounts)),
        or_(BUYER.c.opted_out_at.is_not(None), BUYER.c.do_not_solicit_until.is_not(None))).order_by(BUYER.c.alias))
    return [{"account": r[0], "buyer": r[1], "name": r[2], "opted_out_at": _iso(utc(r[3])), "source": r[4],
             "do_not_solicit_until": _iso(utc(r[5]))} for r in rows]
