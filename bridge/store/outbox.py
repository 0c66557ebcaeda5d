"""Outbound mail: enqueue, claims by conditional UPDATE, outcomes, crash reconciliation, operator actions.

A row's content and Message-ID are fixed when it is queued. A worker claims a
row (queued -> sending) before sending and records the outcome only while the
claim is still its own; a row left in ``sending`` by a worker that died is
reconciled, never resent blindly. States: ``bridge.store.models.Outbox``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, TypeAlias, Unpack

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Row

from bridge.domain.delivery import PROACTIVE_CATEGORIES, Priority, WindowUse
from bridge.domain.threads import base_alias
from bridge.store.dialects import skip_locked, upsert
from bridge.store.models import OUTBOX, SEND_PAUSE, inserted_id
from bridge.store.times import iso, utc

AUDIENCES = ("staff", "buyer")
OUTBOX_STATES = ("queued", "sending", "sent", "failed", "unknown", "held", "blocked", "cancelled")
# An operator may send again what is held, failed or of unknown outcome (after checking
# the Sent folder), and cancel anything not yet sent.
RETRYABLE = ("held", "failed", "unknown")
CANCELLABLE = ("queued", "held", "failed", "unknown")

# A result row of some of the outbox's columns, read by attribute (``row.state``).
OutboxRow: TypeAlias = "Row[Unpack[tuple[Any, ...]]]"

# Run for every inbound batch (is this mail our own, coming back?): built once.
_OUTBOX_IDS = select(OUTBOX.c.message_id).where(OUTBOX.c.message_id.in_(bindparam("ids", expanding=True)))


def enqueue(conn: Connection, **row: Any) -> int:
    """Queue one message (the arguments of :func:`outbox_row`); returns its row id."""
    return inserted_id(conn.execute(OUTBOX.insert(), outbox_row(**row)))


def enqueue_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Queue several messages (each made by :func:`outbox_row`) with one executemany INSERT."""
    if rows:
        conn.execute(OUTBOX.insert(), rows)


def outbox_row(*, account: str, message_id: str, purpose: str, audience: str, envelope_from: str,
               recipients: tuple[str, ...], subject: str, raw: bytes, now: datetime,
               conversation_id: int | None = None, source_message_id: int | None = None, state: str = "queued",
               dedupe_key: str | None = None, note: str | None = None,
               category: str | None = None) -> dict[str, Any]:
    """The values of a new outbox row, for :func:`enqueue` or :func:`enqueue_many`."""
    if audience not in AUDIENCES:    # the queue's order and crash reconciliation both go by it
        raise ValueError(f"outbox audience must be one of {AUDIENCES}, not {audience!r}")
    return dict(
        account=account, message_id=message_id, purpose=purpose, audience=audience,
        conversation_id=conversation_id, source_message_id=source_message_id,
        envelope_from=envelope_from, recipients=json.dumps(list(recipients)), subject=subject, raw=raw,
        state=state, attempts=0, next_attempt_at=now, created_at=now, copied_to_sent=False,
        dedupe_key=dedupe_key, last_error=note, category=category,
    )


def dedupe_key_used(conn: Connection, key: str) -> bool:
    return conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.dedupe_key == key)).first() is not None


def outbox_known_ids(conn: Connection, ids: Iterable[str | None]) -> set[str]:
    """Which of these Message-IDs are of mail we sent (or queued)."""
    wanted = list({i for i in ids if i})
    if not wanted:
        return set()
    return {str(r[0]) for r in conn.execute(_OUTBOX_IDS, {"ids": wanted})}


# --- claim, send, record --------------------------------------------------------------

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


def _item(row: OutboxRow) -> OutboxItem:
    return OutboxItem(row.id, row.account, row.message_id, row.purpose, row.audience, row.envelope_from,
                      tuple(json.loads(row.recipients)), bytes(row.raw), row.attempts, bool(row.copied_to_sent),
                      row.conversation_id, row.subject, row.category)


_ITEM_COLUMNS = (OUTBOX.c.id, OUTBOX.c.account, OUTBOX.c.message_id, OUTBOX.c.purpose, OUTBOX.c.audience,
                 OUTBOX.c.envelope_from, OUTBOX.c.recipients, OUTBOX.c.raw, OUTBOX.c.attempts,
                 OUTBOX.c.copied_to_sent, OUTBOX.c.conversation_id, OUTBOX.c.subject, OUTBOX.c.category)


# The outbox worker runs these for every message it sends, so they are built once,
# like the inbound statements (building one costs more than running it).
# The queue's order (bridge.domain.delivery.priority): buyer replies, staff mail, proactive mail; within
# each, the most overdue first. One query per priority, each an ordered range of the index ix_outbox_queue
# read only as far as the batch needs: one query sorting every due row by a computed priority read
# 5,000 rows per batch after a backlog (90 ms a claim, more than sending the batch).
_PRIORITY_FILTERS = (
    (Priority.BUYER_REPLY, (OUTBOX.c.audience == "buyer") & or_(
        OUTBOX.c.category.is_(None), OUTBOX.c.category.not_in(PROACTIVE_CATEGORIES))),
    (Priority.STAFF, OUTBOX.c.audience == "staff"),
    (Priority.PROACTIVE, (OUTBOX.c.audience == "buyer") & OUTBOX.c.category.in_(PROACTIVE_CATEGORIES)),
)
_DUE_BY_PRIORITY = tuple(
    select(OUTBOX.c.id, OUTBOX.c.audience)
    .where(OUTBOX.c.account == bindparam("account"), OUTBOX.c.state == "queued", where,
           OUTBOX.c.next_attempt_at <= bindparam("now", type_=OUTBOX.c.next_attempt_at.type))
    .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id).limit(bindparam("limit"))
    for _, where in _PRIORITY_FILTERS)
_CLAIM_MANY = update(OUTBOX).where(OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
                                   OUTBOX.c.state == "queued").values(
    state="sending", claimed_by=bindparam("worker"), claimed_at=bindparam("now", type_=OUTBOX.c.claimed_at.type),
    attempts=OUTBOX.c.attempts + 1)
_CLAIMED_MANY = select(*_ITEM_COLUMNS).where(OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
                                             OUTBOX.c.state == "sending", OUTBOX.c.claimed_by == bindparam("worker"))
# A NULL sent_at or next_attempt_at leaves the column as it is; refund is 0 or 1.
_FINISH = update(OUTBOX).where(
    OUTBOX.c.id == bindparam("outbox_id"), OUTBOX.c.state == "sending", OUTBOX.c.claimed_by == bindparam("worker"),
).values(
    state=bindparam("state"), last_error=bindparam("error"), claimed_by=None,
    sent_at=func.coalesce(bindparam("sent_at", type_=OUTBOX.c.sent_at.type), OUTBOX.c.sent_at),
    next_attempt_at=func.coalesce(bindparam("next_attempt_at", type_=OUTBOX.c.next_attempt_at.type),
                                  OUTBOX.c.next_attempt_at),
    attempts=OUTBOX.c.attempts - bindparam("refund"),
)


def claim_due(conn: Connection, account: str, worker: str, now: datetime) -> OutboxItem | None:
    """Claim the first row of the queue (see :func:`claim_batch`), or None when nothing is due."""
    items = claim_batch(conn, account, worker, now, 1)
    return items[0] if items else None


def claim_batch(conn: Connection, account: str, worker: str, now: datetime, limit: int,
                max_buyer: int | None = None) -> list[OutboxItem]:
    """Claim up to ``limit`` due rows in queue order (queued -> sending) in one statement; the rows won.

    Two workers (threads, processes, machines) never both win a row: the UPDATE
    only takes rows still queued. PostgreSQL additionally skips rows locked by
    another claimer instead of waiting for them.

    ``max_buyer``: at most this many rows to buyers (the batch ends before the
    next one). Rows claimed and then cut off by a crash are reconciled one by
    one, and where the Sent folder cannot tell, each buyer row among them needs a person.
    A row another worker took meanwhile is simply not among the rows returned.
    """
    queries = tuple(skip_locked(q, conn) for q in _DUE_BY_PRIORITY)
    while True:
        ids = _due_in_order(conn, queries, account, now, limit, max_buyer)
        if not ids:
            return []
        # Conditional: only rows still queued become ours (two claimers never both win a row).
        conn.execute(_CLAIM_MANY, {"ids": ids, "worker": worker, "now": now})
        won = {int(r.id): _item(r) for r in conn.execute(_CLAIMED_MANY, {"ids": ids, "worker": worker})}
        if won:
            return [won[i] for i in ids if i in won]


def _due_in_order(conn: Connection, queries: tuple[Any, ...], account: str, now: datetime, limit: int,
                  max_buyer: int | None) -> list[int]:
    ids: list[int] = []
    buyers = 0
    for query in queries:
        for row_id, audience in conn.execute(query, {"account": account, "now": now, "limit": limit - len(ids)}):
            if audience == "buyer":
                if max_buyer is not None and buyers >= max_buyer:
                    return ids       # the batch ends before the next buyer row
                buyers += 1
            ids.append(int(row_id))
        if len(ids) >= limit:
            break
    return ids


def release_claims(conn: Connection, outbox_ids: Iterable[int], worker: str, note: str | None = None) -> int:
    """Give claimed rows back untouched (their attempt refunded, their place in the queue kept)."""
    ids = list(outbox_ids)
    if not ids:
        return 0
    return conn.execute(update(OUTBOX).where(
        OUTBOX.c.id.in_(ids), OUTBOX.c.state == "sending", OUTBOX.c.claimed_by == worker,
    ).values(state="queued", claimed_by=None, attempts=OUTBOX.c.attempts - 1,
             last_error=func.coalesce(note, OUTBOX.c.last_error))).rowcount


def finish_send(conn: Connection, outbox_id: int, *, worker: str, state: str, now: datetime,
                error: str | None = None, next_attempt_at: datetime | None = None, refund_attempt: bool = False) -> bool:
    """Record the outcome of a send attempt of a row ``worker`` claimed.

    Only while the claim is still ours: if another process reconciled the row
    meanwhile (we were too slow), our outcome must not overwrite its decision.
    ``refund_attempt``: the attempt never reached the message (the session failed).
    """
    return conn.execute(_FINISH, {
        "outbox_id": outbox_id, "worker": worker, "state": state, "error": error,
        "sent_at": now if state == "sent" else None, "next_attempt_at": next_attempt_at,
        "refund": 1 if refund_attempt else 0,
    }).rowcount == 1


def mark_copied_to_sent(conn: Connection, outbox_ids: Iterable[int]) -> None:
    ids = list(outbox_ids)
    if ids:
        conn.execute(update(OUTBOX).where(OUTBOX.c.id.in_(ids)).values(copied_to_sent=True))


# --- the sending limits: what was sent, and the account's pause after a throttle reply ------------

_SENT_SINCE = (select(func.count()).select_from(OUTBOX)
               .where(OUTBOX.c.account == bindparam("account"), OUTBOX.c.sent_at.is_not(None),
                      OUTBOX.c.sent_at > bindparam("since", type_=OUTBOX.c.sent_at.type)))
_NTH_SENT_SINCE = (select(OUTBOX.c.sent_at)
                   .where(OUTBOX.c.account == bindparam("account"), OUTBOX.c.sent_at.is_not(None),
                          OUTBOX.c.sent_at > bindparam("since", type_=OUTBOX.c.sent_at.type))
                   .order_by(OUTBOX.c.sent_at).offset(bindparam("offset")).limit(1))


def window_use(conn: Connection, account: str, since: datetime, limit: int | None) -> WindowUse:
    """How many messages of ``account`` went after ``since``; at or over ``limit``, which one frees a token.

    Counted from ``sent_at`` (index ``ix_outbox_sent``): every send is on record,
    whichever process made it, so the count survives restarts.
    """
    params = {"account": account, "since": since}
    count = int(conn.execute(_SENT_SINCE, params).scalar_one())
    if limit is None or count < limit:
        return WindowUse(count)
    return WindowUse(count, utc(conn.execute(_NTH_SENT_SINCE, {**params, "offset": count - limit}).scalar()))


@dataclass(frozen=True)
class SendPause:
    """An account's sending paused after throttle replies: until when, why, how many in a row."""

    until: datetime
    reason: str
    in_a_row: int


def send_pause(conn: Connection, account: str) -> SendPause | None:
    row = conn.execute(select(SEND_PAUSE).where(SEND_PAUSE.c.account == account)).first()
    if row is None:
        return None
    return SendPause(utc(row.paused_until), row.reason, int(row.in_a_row))   # type: ignore[arg-type]


def pause_sending(conn: Connection, account: str, until: datetime, reason: str, in_a_row: int) -> None:
    """Record (or extend) an account's pause; kept across restarts."""
    values = {"paused_until": until, "reason": reason, "in_a_row": in_a_row}
    upsert(conn, SEND_PAUSE, {"account": account, **values}, ["account"], values)


def end_pause(conn: Connection, account: str) -> None:
    """A send went through after a pause: the next throttle counts from one again."""
    conn.execute(SEND_PAUSE.delete().where(SEND_PAUSE.c.account == account))


def queued_count(conn: Connection, account: str) -> int:
    return int(conn.execute(select(func.count()).select_from(OUTBOX).where(
        OUTBOX.c.account == account, OUTBOX.c.state == "queued")).scalar_one())


def next_due_time(conn: Connection, account: str) -> datetime | None:
    return utc(conn.execute(select(func.min(OUTBOX.c.next_attempt_at)).where(
        OUTBOX.c.account == account, OUTBOX.c.state == "queued")).scalar())


# --- reconciliation after a crash ----------------------------------------------------------

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


# --- bounces and opt-outs -----------------------------------------------------------------

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


def outbox_by_message_id(conn: Connection, account: str, message_id: str) -> OutboxRow | None:
    return conn.execute(select(OUTBOX.c.id, OUTBOX.c.purpose, OUTBOX.c.audience, OUTBOX.c.recipients,
                               OUTBOX.c.subject, OUTBOX.c.last_error).where(
        OUTBOX.c.account == account, OUTBOX.c.message_id == message_id)).first()


def note_bounce(conn: Connection, outbox_id: int, note: str) -> None:
    conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(last_error=note))


# --- operator actions ------------------------------------------------------------------------

def list_outbox(conn: Connection, accounts: Iterable[str], states: Iterable[str], limit: int) -> list[dict[str, Any]]:
    q = (select(OUTBOX.c.id, OUTBOX.c.account, OUTBOX.c.state, OUTBOX.c.purpose, OUTBOX.c.audience,
                OUTBOX.c.recipients, OUTBOX.c.subject, OUTBOX.c.attempts, OUTBOX.c.last_error,
                OUTBOX.c.created_at, OUTBOX.c.next_attempt_at, OUTBOX.c.sent_at, OUTBOX.c.message_id)
         .where(OUTBOX.c.account.in_(list(accounts)), OUTBOX.c.state.in_(list(states)))
         .order_by(OUTBOX.c.id.desc()).limit(limit))
    return [{
        "id": r.id, "account": r.account, "state": r.state, "purpose": r.purpose, "audience": r.audience,
        "recipients": json.loads(r.recipients), "subject": r.subject, "attempts": r.attempts,
        "last_error": r.last_error, "created_at": iso(utc(r.created_at)),
        "next_attempt_at": iso(utc(r.next_attempt_at)), "sent_at": iso(utc(r.sent_at)),
        "message_id": r.message_id,
    } for r in conn.execute(q)]


_OPERATOR_COLUMNS = (OUTBOX.c.state, OUTBOX.c.account, OUTBOX.c.audience, OUTBOX.c.message_id,
                     OUTBOX.c.conversation_id, OUTBOX.c.category, OUTBOX.c.recipients)


# An operator action reads the row, then changes it only if it is still in the state it
# read: between the two the daemon or another operator may have moved it on (an opt-out
# notice cancelling a held row, a second operator releasing it). PostgreSQL's reads take
# no lock, so this happens there; the rowcount tells, and then nothing was done.


def operator_retry(conn: Connection, outbox_id: int, accounts: Iterable[str], now: datetime,
                   who: str) -> OutboxRow | None:
    """Queue a row again; returns the row as it was, or None when it was not queued again.

    None: no such row in ``accounts``, a state that cannot be retried, or the
    row changed state after it was read. Nothing was written then, so the
    caller must not put a release on record.
    """
    row = conn.execute(select(*_OPERATOR_COLUMNS).where(
        OUTBOX.c.id == outbox_id, OUTBOX.c.account.in_(list(accounts)))).first()
    if row is None or row.state not in RETRYABLE:
        return None
    changed = conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == row.state).values(
        state="queued", next_attempt_at=now, attempts=0,
        last_error=f"{row.state}; released by {who} at {iso(now)}")).rowcount
    return row if changed == 1 else None


def operator_cancel(conn: Connection, outbox_id: int, accounts: Iterable[str], now: datetime,
                    who: str) -> OutboxRow | None:
    """Never send a row; returns the row as it was, or None when it was not cancelled (as for retry)."""
    row = conn.execute(select(*_OPERATOR_COLUMNS).where(OUTBOX.c.id == outbox_id,
                                                        OUTBOX.c.account.in_(list(accounts)))).first()
    if row is None or row.state not in CANCELLABLE:
        return None
    changed = conn.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id, OUTBOX.c.state == row.state).values(
        state="cancelled", last_error=f"{row.state}; cancelled by {who} at {iso(now)}")).rowcount
    return row if changed == 1 else None
