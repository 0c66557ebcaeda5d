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

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row

from . import models

MAILBOX = models.MailboxState.__table__
BUYER = models.Buyer.__table__
CONV = models.Conversation.__table__
MESSAGE = models.Message.__table__
QUARANTINE = models.Quarantine.__table__
OUTBOX = models.Outbox.__table__
INFO = models.SchemaInfo.__table__

OUTBOX_STATES = ("queued", "sending", "sent", "failed", "unknown", "cancelled")


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
    with engine.begin() as conn:
        row = conn.execute(select(INFO.c.value).where(INFO.c.key == "token_secret")).first()
        if row is not None:
            return str(row[0]).encode("ascii")
        value = pysecrets.token_hex(32)
        conn.execute(INFO.insert().values(key="token_secret", value=value))
        return value.encode("ascii")


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
    return None if row is None else MailboxCheckpoint(row[0], row[1], row[2])


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
    values: dict[str, Any] = {"last_error": error, "last_error_at": now if error else None}
    if error is None:
        values["last_fetch_at"] = now
    conn.execute(update(MAILBOX).where(MAILBOX.c.account == account, MAILBOX.c.folder == folder).values(**values))


# --- inbound ------------------------------------------------------------------

def already_recorded(conn: Connection, account: str, folder: str, uidvalidity: int, uid: int) -> bool:
    key = and_(MESSAGE.c.account == account, MESSAGE.c.folder == folder,
               MESSAGE.c.uidvalidity == uidvalidity, MESSAGE.c.uid == uid)
    if conn.execute(select(MESSAGE.c.id).where(key)).first():
        return True
    qkey = and_(QUARANTINE.c.account == account, QUARANTINE.c.folder == folder,
                QUARANTINE.c.uidvalidity == uidvalidity, QUARANTINE.c.uid == uid)
    return conn.execute(select(QUARANTINE.c.id).where(qkey)).first() is not None


def find_duplicate(conn: Connection, account: str, message_id: str | None, content_hash: str) -> int | None:
    """A message recorded before with the same content (resync after UIDVALIDITY change, copies).

    Matched by Message-ID *and* content hash when there is a Message-ID, by the
    hash alone otherwise: two different mails may share a Message-ID (broken
    senders) and must both reach staff.
    """
    cond = [MESSAGE.c.account == account, MESSAGE.c.content_hash == content_hash]
    if message_id:
        cond.append(MESSAGE.c.message_id == message_id)
    row = conn.execute(select(MESSAGE.c.id).where(*cond).order_by(MESSAGE.c.id).limit(1)).first()
    return None if row is None else int(row[0])


def outbox_has_message_ids(conn: Connection, ids: Iterable[str]) -> bool:
    wanted = [i for i in ids if i]
    if not wanted:
        return False
    return conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.message_id.in_(wanted)).limit(1)).first() is not None


def upsert_buyer(conn: Connection, account: str, marketplace: str, alias: str, name: str | None,
                 now: datetime) -> int:
    row = conn.execute(select(BUYER.c.id, BUYER.c.name).where(BUYER.c.account == account, BUYER.c.alias == alias)).first()
    if row is not None:
        if name and row[1] != name:
            conn.execute(update(BUYER).where(BUYER.c.id == row[0]).values(name=name))
        return int(row[0])
    return int(conn.execute(BUYER.insert().values(
        account=account, marketplace=marketplace, alias=alias, name=name, created_at=now)).inserted_primary_key[0])


@dataclass(frozen=True)
class ConversationRef:
    id: int
    staff_root_id: str | None
    staff_last_id: str | None
    message_count: int


def upsert_conversation(conn: Connection, account: str, key: str, buyer_id: int, order_id: str | None,
                        comm_mgr_tok: str | None, subject: str, now: datetime) -> ConversationRef:
    row = conn.execute(
        select(CONV.c.id, CONV.c.staff_root_id, CONV.c.staff_last_id, CONV.c.comm_mgr_tok)
        .where(CONV.c.account == account, CONV.c.key == key)
    ).first()
    if row is None:
        conv_id = int(conn.execute(CONV.insert().values(
            account=account, key=key, buyer_id=buyer_id, order_id=order_id, comm_mgr_tok=comm_mgr_tok,
            subject=subject, status="open", created_at=now, last_message_at=now,
        )).inserted_primary_key[0])
        return ConversationRef(conv_id, None, None, 0)
    values: dict[str, Any] = {"last_message_at": now, "status": "open"}
    if comm_mgr_tok and not row[3]:
        values["comm_mgr_tok"] = comm_mgr_tok
    conn.execute(update(CONV).where(CONV.c.id == row[0]).values(**values))
    count = conn.execute(select(func.count()).select_from(MESSAGE).where(MESSAGE.c.conversation_id == row[0])).scalar_one()
    return ConversationRef(int(row[0]), row[1], row[2], int(count))


def chain_staff_thread(conn: Connection, conversation_id: int, message_id: str) -> None:
    """Remember the newest staff notification (and the first) so the next one can chain to them."""
    conn.execute(update(CONV).where(CONV.c.id == conversation_id).values(
        staff_last_id=message_id,
        staff_root_id=func.coalesce(CONV.c.staff_root_id, message_id),
    ))


def insert_message(conn: Connection, **values: Any) -> int:
    return int(conn.execute(MESSAGE.insert().values(**values)).inserted_primary_key[0])


def insert_quarantine(conn: Connection, **values: Any) -> int:
    return int(conn.execute(QUARANTINE.insert().values(**values)).inserted_primary_key[0])


# --- outbox -------------------------------------------------------------------

def enqueue(conn: Connection, *, account: str, message_id: str, purpose: str, audience: str,
            envelope_from: str, recipients: tuple[str, ...], subject: str, raw: bytes, now: datetime,
            conversation_id: int | None = None, source_message_id: int | None = None) -> int:
    return int(conn.execute(OUTBOX.insert().values(
        account=account, message_id=message_id, purpose=purpose, audience=audience,
        conversation_id=conversation_id, source_message_id=source_message_id,
        envelope_from=envelope_from, recipients=json.dumps(list(recipients)), subject=subject, raw=raw,
        state="queued", attempts=0, next_attempt_at=now, created_at=now,
    )).inserted_primary_key[0])


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


def _item(row: Row[Any]) -> OutboxItem:
    return OutboxItem(row.id, row.account, row.message_id, row.purpose, row.audience, row.envelope_from,
                      tuple(json.loads(row.recipients)), bytes(row.raw), row.attempts, bool(row.copied_to_sent))


_ITEM_COLUMNS = (OUTBOX.c.id, OUTBOX.c.account, OUTBOX.c.message_id, OUTBOX.c.purpose, OUTBOX.c.audience,
                 OUTBOX.c.envelope_from, OUTBOX.c.recipients, OUTBOX.c.raw, OUTBOX.c.attempts,
                 OUTBOX.c.copied_to_sent)


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


def finish_send(conn: Connection, outbox_id: int, *, state: str, now: datetime, error: str | None = None,
                next_attempt_at: datetime | None = None) -> None:
    """Record the outcome of a send attempt of a row we claimed (state 'sending')."""
    values: dict[str, Any] = {"state": state, "last_error": error, "claimed_by": None}
    if state == "sent":
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == "sending").values(**values))


def mark_copied_to_sent(conn: Connection, outbox_id: int) -> None:
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(copied_to_sent=True))


def interrupted_sends(conn: Connection, account: str, claimed_before: datetime) -> list[OutboxItem]:
    """Rows left in 'sending' by a worker that died (claimed before ``claimed_before``)."""
    rows = conn.execute(select(*_ITEM_COLUMNS).where(
        OUTBOX.c.account == account, OUTBOX.c.state == "sending",
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
