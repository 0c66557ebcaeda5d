"""Feedback requests: one row per order, claimed by conditional UPDATE, finished once.

What the schedule reads of orders (their dates, status and SKUs) and of buyers'
conversations is read here too, as plain values (:class:`OrderRecord`), so the
rules in ``bridge.domain.feedback`` never see a row. States and the invariant
are on :class:`bridge.store.models.FeedbackRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.engine import Connection

from bridge.domain.feedback import ENDED_STATUSES
from bridge.domain.orders import OrderFacts
from bridge.store.dialects import dialect_insert, skip_locked
from bridge.store.models import BUYER, CONV, FEEDBACK, ORDER_DELIVERY, ORDERS, OUTBOX
from bridge.store.orders import facts_of_rows
from bridge.store.times import iso, utc

REQUEST_STATES = ("scheduled", "claimed", "sent", "skipped", "cancelled")
#: What an opt-out notice answering a sent request leaves in its ``reason`` (counted by `status`).
NOT_DELIVERED_OPTED_OUT = "not delivered: buyer opted out"


@dataclass(frozen=True)
class OrderRecord:
    """An order as the feedback rules and templates need it: its facts and its row."""

    facts: OrderFacts
    row_id: int

    @property
    def marketplace(self) -> str | None:
        return self.facts.marketplace

    @property
    def language(self) -> str | None:
        return self.facts.language

    @property
    def buyer_name(self) -> str | None:
        return self.facts.buyer_name

    @property
    def titles(self) -> tuple[str, ...]:
        return self.facts.titles


@dataclass(frozen=True)
class Request:
    id: int
    account: str
    order_id: str
    buyer_alias: str | None
    state: str
    due_at: datetime
    reason: str | None
    outbox_message_id: str | None
    sent_at: datetime | None


_REQUEST_COLUMNS = (FEEDBACK.c.id, FEEDBACK.c.account, FEEDBACK.c.order_id, FEEDBACK.c.buyer_alias, FEEDBACK.c.state,
                    FEEDBACK.c.due_at, FEEDBACK.c.reason, FEEDBACK.c.outbox_message_id, FEEDBACK.c.sent_at)


def _request(row: Any) -> Request:
    due = utc(row.due_at)
    assert due is not None
    return Request(int(row.id), row.account, row.order_id, row.buyer_alias, row.state, due, row.reason,
                   row.outbox_message_id, utc(row.sent_at))


# --- orders, as the rules read them ----------------------------------------------------------

def _records(conn: Connection, rows: list[Any]) -> list[OrderRecord]:
    return [OrderRecord(facts, int(r.id)) for facts, r in zip(facts_of_rows(conn, rows), rows)]


def order_record(conn: Connection, account: str, order_id: str) -> OrderRecord | None:
    rows = conn.execute(select(ORDERS).where(ORDERS.c.account == account,
                                                      ORDERS.c.order_id == order_id)).all()
    found = _records(conn, list(rows))
    return found[0] if found else None


def orders_to_schedule(conn: Connection, account: str, delivered_since: datetime, limit: int,
                       after: tuple[datetime, int] | None = None) -> list[OrderRecord]:
    """Orders with no request yet, not ended, delivered (or expected) since ``delivered_since``,
    ``limit`` at a time, in delivery order after ``after`` (a page's last :func:`schedule_key`).

    Bounded by the window: an order delivered longer ago than the marketplace's
    window can never be asked, so the query never reads the account's whole history.
    """
    delivery = ORDER_DELIVERY
    has_request = exists().where(FEEDBACK.c.account == ORDERS.c.account, FEEDBACK.c.order_id == ORDERS.c.order_id)
    query = select(ORDERS).where(
        ORDERS.c.account == account, ORDERS.c.status.not_in(ENDED_STATUSES), delivery >= delivered_since,
        ~has_request)
    if after is not None:
        query = query.where(or_(delivery > after[0], and_(delivery == after[0], ORDERS.c.id > after[1])))
    rows = conn.execute(query.order_by(delivery, ORDERS.c.id).limit(limit)).all()
    return _records(conn, list(rows))


def schedule_key(record: OrderRecord) -> tuple[datetime, int]:
    """Where :func:`orders_to_schedule` continues after ``record``."""
    f = record.facts
    delivery = f.delivered_at or f.estimated_delivery_to or f.estimated_delivery_from
    assert delivery is not None
    return delivery, record.row_id


def orders_since(conn: Connection, account: str, since: datetime) -> int:
    """Orders purchased since ``since`` (the daily cap's average)."""
    return int(conn.execute(select(func.count()).select_from(ORDERS).where(
        ORDERS.c.account == account, ORDERS.c.purchased_at >= since)).scalar_one())


def last_buyer_message_at(conn: Connection, account: str, alias: str) -> datetime | None:
    """When the buyer last wrote to the account (any conversation)."""
    # The buyer first, then their conversations (ix_conversation_buyer): never the account's all.
    buyer = select(BUYER.c.id).where(BUYER.c.account == account, BUYER.c.alias == alias).scalar_subquery()
    return utc(conn.execute(select(func.max(CONV.c.last_message_at)).where(CONV.c.buyer_id == buyer)).scalar())


# --- scheduling ---------------------------------------------------------------------------------

def _insert(conn: Connection) -> Any:
    return dialect_insert("postgresql" if conn.dialect.name == "postgresql" else "sqlite", FEEDBACK)


def schedule_request(conn: Connection, account: str, order_id: str, buyer_alias: str | None, due_at: datetime,
                     now: datetime) -> bool:
    """A scheduled request for the order, unless it has one already (in any state). True when made."""
    statement = _insert(conn).values(account=account, order_id=order_id, buyer_alias=buyer_alias, state="scheduled",
                                     due_at=due_at, created_at=now, updated_at=now)
    return _inserted(conn, statement)


def _inserted(conn: Connection, statement: Any) -> bool:
    """Run an INSERT that does nothing when the order has a request already; True when it made one.

    (RETURNING, not rowcount: psycopg reports no row count for an INSERT that returns rows.)
    """
    done = statement.on_conflict_do_nothing(index_elements=["account", "order_id"]).returning(FEEDBACK.c.id)
    return conn.execute(done).first() is not None


def record_external(conn: Connection, account: str, order_id: str, reason: str, now: datetime) -> tuple[bool, Request]:
    """The order was asked for feedback elsewhere: it is never asked here.

    A new row, or a scheduled one, becomes ``skipped`` with ``reason``; a row that
    was already sent, skipped or cancelled is left as it is. Returns (changed, the row).
    """
    made = _inserted(conn, _insert(conn).values(account=account, order_id=order_id, state="skipped", due_at=now,
                                                reason=reason, created_at=now, updated_at=now))
    if not made:
        made = conn.execute(update(FEEDBACK).where(
            FEEDBACK.c.account == account, FEEDBACK.c.order_id == order_id, FEEDBACK.c.state == "scheduled").values(
            state="skipped", reason=reason, updated_at=now)).rowcount == 1
    found = request_of_order(conn, account, order_id)
    assert found is not None
    return made, found


def request_of_order(conn: Connection, account: str, order_id: str) -> Request | None:
    row = conn.execute(select(*_REQUEST_COLUMNS).where(FEEDBACK.c.account == account,
                                                       FEEDBACK.c.order_id == order_id)).first()
    return None if row is None else _request(row)


def request_of_message(conn: Connection, account: str, message_id: str) -> Request | None:
    """The request whose outbox message has this Message-ID."""
    row = conn.execute(select(*_REQUEST_COLUMNS).where(FEEDBACK.c.account == account,
                                                       FEEDBACK.c.outbox_message_id == message_id)).first()
    return None if row is None else _request(row)


# --- the dispatcher's claims ---------------------------------------------------------------------

_DUE = (select(FEEDBACK.c.id).where(FEEDBACK.c.account == bindparam("account"), FEEDBACK.c.state == "scheduled",
                                    FEEDBACK.c.due_at <= bindparam("now"))
        .order_by(FEEDBACK.c.due_at, FEEDBACK.c.id).limit(bindparam("limit")))


def claim_due_requests(conn: Connection, account: str, worker: str, now: datetime, limit: int) -> list[Request]:
    """Claim up to ``limit`` due requests (scheduled -> claimed) by conditional UPDATE; the ones won.

    Another dispatcher (a second daemon on the same database) never wins the same
    row: the UPDATE succeeds only while the row is still scheduled. PostgreSQL skips
    rows another claimer holds instead of waiting for them.
    """
    due = conn.execute(skip_locked(_DUE, conn), {"account": account, "now": now, "limit": limit})
    ids = [int(r[0]) for r in due]
    won = []
    for request_id in ids:
        if conn.execute(update(FEEDBACK).where(FEEDBACK.c.id == request_id, FEEDBACK.c.state == "scheduled").values(
                state="claimed", claimed_by=worker, claimed_at=now, updated_at=now)).rowcount == 1:
            won.append(request_id)
    if not won:
        return []
    rows = conn.execute(select(*_REQUEST_COLUMNS).where(FEEDBACK.c.id.in_(won)).order_by(FEEDBACK.c.due_at,
                                                                                           FEEDBACK.c.id))
    return [_request(r) for r in rows]


def finish_request(conn: Connection, request_id: int, *, worker: str, state: str, now: datetime,
                   reason: str | None = None, outbox_message_id: str | None = None,
                   due_at: datetime | None = None) -> bool:
    """Record what became of a request ``worker`` claimed: sent, skipped, cancelled, or scheduled again
    (``due_at``). Only while the claim is still ours; False otherwise (then the caller must roll back)."""
    values: dict[str, Any] = {"state": state, "reason": reason, "claimed_by": None, "claimed_at": None,
                              "updated_at": now}
    if state == "sent":
        values.update(sent_at=now, outbox_message_id=outbox_message_id)
    if due_at is not None:
        values["due_at"] = due_at
    return conn.execute(update(FEEDBACK).where(FEEDBACK.c.id == request_id, FEEDBACK.c.state == "claimed",
                                               FEEDBACK.c.claimed_by == worker).values(**values)).rowcount == 1


def release_stale_claims(conn: Connection, account: str, worker: str, claimed_before: datetime,
                         now: datetime) -> int:
    """Claims a dead dispatcher left: back to scheduled. Safe because a request is sent and marked sent
    in one transaction: a row still ``claimed`` has nothing in the outbox."""
    return conn.execute(update(FEEDBACK).where(
        FEEDBACK.c.account == account, FEEDBACK.c.state == "claimed",
        or_(FEEDBACK.c.claimed_by.is_(None), FEEDBACK.c.claimed_by != worker),
        or_(FEEDBACK.c.claimed_at.is_(None), FEEDBACK.c.claimed_at < claimed_before)).values(
        state="scheduled", claimed_by=None, claimed_at=None, updated_at=now)).rowcount


def sent_between(conn: Connection, account: str, start: datetime, end: datetime) -> int:
    """Requests sent in ``[start, end)`` (one local day, for the daily cap)."""
    return int(conn.execute(select(func.count()).select_from(FEEDBACK).where(
        FEEDBACK.c.account == account, FEEDBACK.c.sent_at >= start, FEEDBACK.c.sent_at < end)).scalar_one())


# --- opt-outs ---------------------------------------------------------------------------------------

def cancel_scheduled_of_buyer(conn: Connection, account: str, alias: str, reason: str, now: datetime) -> int:
    """The buyer opted out: their scheduled requests never go. Returns how many."""
    return conn.execute(update(FEEDBACK).where(
        FEEDBACK.c.account == account, FEEDBACK.c.buyer_alias == alias, FEEDBACK.c.state == "scheduled").values(
        state="cancelled", reason=reason, updated_at=now)).rowcount


def cancel_unsent_requests(conn: Connection, account: str, *, reason: str, now: datetime, alias: str | None = None,
                           message_id: str | None = None) -> int:
    """Requests recorded sent whose outbox row was cancelled before it left (the buyer's, or the one with
    this Message-ID): cancelled too, so the request says what happened. Returns how many."""
    cancelled_rows = select(OUTBOX.c.message_id).where(OUTBOX.c.account == account, OUTBOX.c.state == "cancelled")
    if message_id is not None:
        cancelled_rows = cancelled_rows.where(OUTBOX.c.message_id == message_id)
    query = update(FEEDBACK).where(FEEDBACK.c.account == account, FEEDBACK.c.state == "sent",
                                   FEEDBACK.c.outbox_message_id.in_(cancelled_rows))
    if alias is not None:
        query = query.where(FEEDBACK.c.buyer_alias == alias)
    return conn.execute(query.values(state="cancelled", reason=reason, updated_at=now)).rowcount


def mark_not_delivered(conn: Connection, request_id: int, reason: str, now: datetime) -> None:
    conn.execute(update(FEEDBACK).where(FEEDBACK.c.id == request_id).values(reason=reason, updated_at=now))


# --- reports ------------------------------------------------------------------------------------------

def list_requests(conn: Connection, accounts: Iterable[str], limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(*_REQUEST_COLUMNS).where(FEEDBACK.c.account.in_(list(accounts)))
                        .order_by(FEEDBACK.c.due_at, FEEDBACK.c.id).limit(limit))
    return [{"account": r.account, "order_id": r.order_id, "state": r.state, "due_at": iso(utc(r.due_at)),
             "reason": r.reason, "buyer": r.buyer_alias, "sent_at": iso(utc(r.sent_at)),
             "message_id": r.outbox_message_id} for r in rows]


def feedback_counts(conn: Connection, account: str) -> dict[str, int]:
    """Requests by state, and the sent ones the marketplace did not deliver because the buyer opted out."""
    counts = {s: 0 for s in REQUEST_STATES}
    counts.update({s: int(n) for s, n in conn.execute(
        select(FEEDBACK.c.state, func.count()).where(FEEDBACK.c.account == account).group_by(FEEDBACK.c.state))})
    counts["not_delivered_opted_out"] = int(conn.execute(select(func.count()).select_from(FEEDBACK).where(
        and_(FEEDBACK.c.account == account, FEEDBACK.c.reason == NOT_DELIVERED_OPTED_OUT))).scalar_one())
    return counts
