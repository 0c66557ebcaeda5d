"""SQLModel tables.

Times are stored as timezone-aware UTC datetimes. JSON-ish columns are text
holding JSON, so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, LargeBinary, Table, UniqueConstraint, func
from sqlalchemy.engine import CursorResult
from sqlmodel import Column, DateTime, Field, SQLModel

# The schema number releases from before Alembic kept in schema_info ("schema_version");
# they refuse a database whose number is larger than theirs (1). Revision 0002 raised it to
# 2, so the previous release never runs on a database it has not the tables for. Later
# revisions leave it: alembic_version says the rest (bridge/store/schema.py).
SCHEMA_VERSION = 2


def _ts(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class SchemaInfo(SQLModel, table=True):
    __tablename__ = "schema_info"
    key: str = Field(primary_key=True)
    value: str


class MailboxState(SQLModel, table=True):
    """Per account and folder: where ingest stands.

    ``last_uid`` is the checkpoint: every UID <= last_uid under ``uidvalidity``
    has been recorded (as a message or a quarantine row). It moves only in the
    transaction that records the message.
    """

    __tablename__ = "mailbox_state"
    __table_args__ = (UniqueConstraint("account", "folder"),)
    id: int | None = Field(default=None, primary_key=True)
    account: str
    folder: str
    uidvalidity: int
    last_uid: int = 0
    # Mail with UID <= this, found on the first run, is recorded as history, not forwarded.
    history_until_uid: int = 0
    initialised_at: datetime = Field(sa_column=_ts())
    last_fetch_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str | None = None
    last_error_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Buyer(SQLModel, table=True):
    __tablename__ = "buyer"
    __table_args__ = (UniqueConstraint("account", "alias"),)
    id: int | None = Field(default=None, primary_key=True)
    account: str
    marketplace: str          # relay domain family + domain, e.g. "marketplace.amazon.de"
    alias: str                # base relay alias, lowercased, without "+case"
    name: str | None = None
    created_at: datetime = Field(sa_column=_ts())
    # Opt-out state (docs/marketplaces.md, "Buyer opt-out"): never anything unsolicited to this buyer.
    opted_out_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    opted_out_source: str | None = None       # "notice <Message-ID>", "operator jo"
    do_not_solicit_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # The last permanent delivery failure to this buyer's relay address (a DSN).
    bounced_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    bounce_reason: str | None = None


class Conversation(SQLModel, table=True):
    __tablename__ = "conversation"
    __table_args__ = (UniqueConstraint("account", "key"),
                      # When a buyer last wrote (the feedback rules ask it for each request sent).
                      Index("ix_conversation_buyer", "buyer_id", "last_message_at"))
    id: int | None = Field(default=None, primary_key=True)
    account: str
    key: str                  # threads.conversation_key(alias, order_id)
    buyer_id: int = Field(foreign_key="buyer.id")
    order_id: str | None = None
    comm_mgr_tok: str | None = None
    subject: str
    status: str = "open"      # open | closed
    flags: str = "[]"          # JSON: "COURTESY REFUND", "A-TO-Z CLAIM" (bridge.domain.flags), once raised
    created_at: datetime = Field(sa_column=_ts())
    last_message_at: datetime = Field(sa_column=_ts())
    message_count: int = 0
    # Message-IDs of the staff notifications of this conversation, oldest first
    # and newest last, so the next one can chain References (RFC 5322 3.6.4).
    staff_root_id: str | None = None
    staff_last_id: str | None = None


class Message(SQLModel, table=True):
    """Every inbound message recorded, whatever its kind."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("account", "folder", "uidvalidity", "uid"),
        Index("ix_message_account_msgid", "account", "message_id"),
        Index("ix_message_account_hash", "account", "content_hash"),
    )
    id: int | None = Field(default=None, primary_key=True)
    account: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None = None
    content_hash: str          # sha256 of the raw bytes (resync dedupe)
    kind: str
    rule_hits: str             # JSON list of {"rule", "kind", "reason"}
    disposition: str           # forwarded | history | recorded | duplicate
    from_addr: str
    to_addrs: str              # JSON list
    subject: str
    sent_date: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    received_at: datetime = Field(sa_column=_ts())
    in_reply_to: str | None = None
    references: str = "[]"     # JSON list
    order_id: str | None = None
    comm_mgr_tok: str | None = None
    buyer_address: str | None = None   # exact relay address used (keeps "+case")
    text: str                  # the buyer's words when extracted, else the body text
    size: int
    defects: str = "[]"        # JSON list
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    duplicate_of: int | None = None
    # The whole message as received, kept for staff replies: what a staff member
    # wrote is the record of what mailbridge was asked to send to a buyer.
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class Quarantine(SQLModel, table=True):
    """Mail that could not be processed: kept, with the reason, staff told once."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("account", "folder", "uidvalidity", "uid"),)
    id: int | None = Field(default=None, primary_key=True)
    account: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None = None
    size: int
    reason: str
    content_hash: str | None = Field(default=None, index=True)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    released_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class QuarantineAck(SQLModel, table=True):
    """An operator has seen a quarantined message (``mailbridge quarantine ack``).

    A table of its own, not a column of ``quarantine``, so that an existing
    database gains it by table creation alone. ``mailbridge health`` warns about
    quarantined mail until it is acknowledged; the mail itself stays kept.
    """

    __tablename__ = "quarantine_ack"
    quarantine_id: int = Field(primary_key=True, foreign_key="quarantine.id")
    acknowledged_at: datetime = Field(sa_column=_ts())
    acknowledged_by: str


class Outbox(SQLModel, table=True):
    """Outbound mail. Content and Message-ID are fixed when the row is created.

    States: queued -> sending -> sent | queued (retry) | failed;
    a ``sending`` row left by a crash is reconciled to sent / queued / unknown;
    ``held``: composed but not to be sent until an operator releases it
    (``mailbridge outbox retry``); ``cancelled``: an operator dropped it.
    """

    __tablename__ = "outbox"
    # ix_outbox_sent: the sending limits count an account's recent sends (bridge.domain.delivery).
    # ix_outbox_queue: a batch claim reads the queue in order, one priority at a time (store/outbox.py).
    # ix_outbox_account_state: counts by account and state (/metrics, health) read this index, never
    # the rows, which hold whole messages.
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"), Index("ix_outbox_sent", "account", "sent_at"),
                      Index("ix_outbox_queue", "account", "state", "audience", "next_attempt_at", "id"),
                      Index("ix_outbox_account_state", "account", "state", "created_at"))
    id: int | None = Field(default=None, primary_key=True)
    account: str = Field(index=True)
    message_id: str = Field(unique=True)   # without brackets
    # What this row answers, so the same staff reply ingested twice (a copy, a
    # resync) is relayed once: "relay:<account>:<staff Message-ID or hash>".
    dedupe_key: str | None = Field(default=None, unique=True)
    purpose: str               # staff_notification | staff_alert | buyer_reply | ...
    category: str | None = None  # buyer mail only: reply | critical | unsolicited (decides opt-out effects)
    audience: str              # staff | buyer: who receives it (decides crash reconciliation)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    source_message_id: int | None = Field(default=None, foreign_key="message.id")
    envelope_from: str
    recipients: str            # JSON list
    subject: str
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: str = "queued"
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=_ts())
    claimed_by: str | None = None
    claimed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str | None = None
    created_at: datetime = Field(sa_column=_ts())
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    copied_to_sent: bool = False


class AccountState(SQLModel, table=True):
    """Per account: proactive sending paused while the marketplace restricts it."""

    __tablename__ = "account_state"
    account: str = Field(primary_key=True)
    restricted_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    restricted_reason: str | None = None


class SendPause(SQLModel, table=True):
    """Per account: sending paused after the SMTP server said to slow down (bridge.domain.delivery).

    A row exists only while the account is (or was last) throttled; a send that
    goes through removes it. Kept in the database so a restart keeps the pause.
    """

    __tablename__ = "send_pause"
    account: str = Field(primary_key=True)
    paused_until: datetime = Field(sa_column=_ts())
    reason: str
    in_a_row: int = 1


class AuditLog(SQLModel, table=True):
    """Append-only record of every outbound decision and opt-out change.

    What a seller shows the marketplace: what was (not) sent to which buyer,
    when, by whose request, and which rule decided. Rows are only inserted.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_account_at", "account", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_ts())
    account: str
    event: str                 # outbound | optout | override
    decision: str              # allowed | warned | blocked | held | opted_out | opted_in | released
    category: str | None = None        # reply | critical | unsolicited
    rules: str = "[]"          # JSON: findings [{"rule", "severity", "reason", "excerpt"}]
    evaluated: str = "[]"      # JSON: rule ids that ran
    buyer: str | None = None           # relay alias
    conversation_id: int | None = None
    message_id: str | None = Field(default=None, index=True)   # our outbound Message-ID
    actor: str | None = None           # the staff sender or operator who asked for it
    detail: str | None = None


class Order(SQLModel, table=True):
    """One marketplace order of an account, merged from order reports and order notices.

    One row per (account, order id), whatever number of report rows, files
    and notices told of it. Dates are UTC. Where the marketplace gives an
    estimated delivery range instead of a delivery date, both ends are kept.
    """

    __tablename__ = "orders"   # ORDER is an SQL keyword
    __table_args__ = (UniqueConstraint("account", "order_id"),
                      Index("ix_orders_account_buyer", "account", "buyer_alias"),
                      # The feedback daily cap's average: orders purchased in the last 30 days.
                      Index("ix_orders_account_purchased", "account", "purchased_at"))
    id: int | None = Field(default=None, primary_key=True)
    account: str
    order_id: str                              # 123-1234567-1234567
    marketplace: str | None = None             # the account's marketplace key, e.g. "amazon.de"
    sales_channel: str | None = None           # as the report says, e.g. "Amazon.de"
    buyer_alias: str | None = None             # base relay alias, lowercased; unknown until a report or mail says
    buyer_name: str | None = None
    status: str = "pending"    # pending | shipped | delivered | cancelled | refunded | returned
    open_claim: bool = False   # an A-to-z claim is open
    language: str | None = None                # the buyer's language, when known
    purchased_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    shipped_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    estimated_delivery_from: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    estimated_delivery_to: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())


class OrderItem(SQLModel, table=True):
    """One line of an order; the same line seen again (another report, a re-import) updates it."""

    __tablename__ = "order_item"
    __table_args__ = (UniqueConstraint("order_row", "item_key"),)
    id: int | None = Field(default=None, primary_key=True)
    order_row: int = Field(foreign_key="orders.id", index=True)
    item_key: str              # the report's order-item-id, else the SKU, else the ASIN
    sku: str | None = None
    asin: str | None = None
    title: str | None = None
    quantity: int = 1


class FeedbackRequest(SQLModel, table=True):
    """The feedback request of one order: at most one per (account, order id), ever.

    The unique constraint, not the code, is what keeps an order from being asked
    twice: across restarts, re-imports, a crash between claim and send, and several
    daemons sharing the database. A request made elsewhere (Amazon's "Request a
    Review") is a row too, ``skipped`` with that reason.

    States: ``scheduled`` (waits for ``due_at``) -> ``claimed`` (a dispatcher took it)
    -> ``sent`` (queued in the outbox, ``outbox_message_id``) | ``skipped`` (an
    exclusion or the guard said no, ``reason``) | ``scheduled`` again (a later due
    time); ``cancelled``: the buyer opted out before it was due, or an operator.
    A sent request the marketplace did not deliver keeps ``sent`` and says why in
    ``reason`` ("not delivered: buyer opted out").
    """

    __tablename__ = "feedback_request"
    __table_args__ = (UniqueConstraint("account", "order_id"),
                      # The dispatcher's query: its work grows with the due rows, not with all rows.
                      Index("ix_feedback_due", "account", "state", "due_at"),
                      Index("ix_feedback_sent", "account", "sent_at"))
    id: int | None = Field(default=None, primary_key=True)
    account: str
    order_id: str
    buyer_alias: str | None = None
    state: str = "scheduled"
    due_at: datetime = Field(sa_column=_ts())
    reason: str | None = None
    outbox_message_id: str | None = Field(default=None, index=True)
    claimed_by: str | None = None
    claimed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class OAuth2Grant(SQLModel, table=True):
    """The newest refresh token of one OAuth2 login (an account's IMAP client, and its SMTP client
    when that is a separate one), kept because providers rotate them: each refresh may answer
    with a new refresh token and the old one stops working.

    ``grant``: "<account>" or "<account>:smtp". ``seed``: a fingerprint of the configured
    refresh token this row started from, so a new one in the file seeds again.
    ``revoked_at``: the provider answered invalid_grant for ``refresh_token``; nothing is
    tried with it again until a new one is authorized or configured. Never shown by status.
    """

    __tablename__ = "oauth2_grant"
    grant: str = Field(primary_key=True)
    account: str = Field(index=True)
    refresh_token: str
    seed: str | None = None
    updated_at: datetime = Field(sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    revoked_reason: str | None = None


class ResponseReminder(SQLModel, table=True):
    """One reminder to staff about a buyer message still unanswered: one row per (buyer message, threshold).

    The unique constraint, not the code, keeps a threshold's reminder from going
    out twice: the row turns ``sent`` in the transaction that queues the mail,
    across restarts, kill -9 and several daemons. Rows are made when the buyer
    message is recorded, for the conversation's oldest unanswered message only
    (bridge.domain.reminders).

    States: ``scheduled`` (waits for ``due_at``) -> ``sent`` (``outbox_message_id``)
    | ``answered`` (a staff reply went to the buyer first) | ``closed`` (the
    conversation was closed, e.g. "no response needed") | ``overtaken`` (a later
    threshold was due as well and was sent instead).
    """

    __tablename__ = "response_reminder"
    __table_args__ = (UniqueConstraint("message_row", "after_hours"),
                      # The timer's query: its work grows with the due rows, not with all rows.
                      Index("ix_reminder_due", "account", "state", "due_at"),
                      # `mailbridge status`: the clocks running out soon.
                      Index("ix_reminder_deadline", "account", "deadline_at"))
    id: int | None = Field(default=None, primary_key=True)
    account: str
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    message_row: int = Field(foreign_key="message.id")    # the buyer message the clock runs for
    after_hours: int
    started_at: datetime = Field(sa_column=_ts())          # when the buyer sent it: the 24 hours count from here
    received_at: datetime = Field(sa_column=_ts())         # when mailbridge recorded it: replies after it answer it
    deadline_at: datetime = Field(sa_column=_ts())         # started_at + 24 hours
    due_at: datetime = Field(sa_column=_ts())
    state: str = "scheduled"
    reason: str | None = None
    outbox_message_id: str | None = None
    created_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())


class Daemon(SQLModel, table=True):
    """A running daemon sharing the database (docs/architecture.md, "Several daemons").

    ``holder`` is unique per process start (host:pid:daemon:random): a restarted daemon never
    takes a dead predecessor's leases for its own. The row is the daemon's heartbeat:
    live while ``expires_at`` is ahead of the database's clock; the fair share of
    accounts is counted over the live rows that ``balances`` (a running daemon). A
    ``run --once`` pass has a row too (``mailbridge status`` shows its holder as alive) but
    takes no share: counting it would make the running daemons give accounts up to nobody.
    """

    __tablename__ = "daemon"
    holder: str = Field(primary_key=True)
    started_at: datetime = Field(sa_column=_ts())
    last_seen: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    balances: bool = True


class AccountLease(SQLModel, table=True):
    """Which daemon may touch an account, until when (the database's clock).

    A daemon writes for an account only in transactions that first read this row as
    still its own (``store.leases.fence``); another daemon takes the row only once
    ``expires_at`` has passed, or after the holder released it (``expires_at`` set to now).
    """

    __tablename__ = "account_lease"
    account: str = Field(primary_key=True)
    holder: str
    expires_at: datetime = Field(sa_column=_ts())
    acquired_at: datetime = Field(sa_column=_ts())
    renewed_at: datetime = Field(sa_column=_ts())
    history_id: int | None = None      # the lease_history row of this holding, moved on at each renewal


class LeaseHistory(SQLModel, table=True):
    """Append-only: one row per holding of an account's lease, so that overlaps can be looked for.

    ``valid_until`` follows each renewal (the lease's expiry); ``released_at`` is set by a
    clean release. A holding ends at ``released_at`` if set, else at ``valid_until``.
    """

    __tablename__ = "lease_history"
    __table_args__ = (Index("ix_lease_history_account", "account", "acquired_at"),)
    id: int | None = Field(default=None, primary_key=True)
    account: str
    holder: str
    acquired_at: datetime = Field(sa_column=_ts())
    valid_until: datetime = Field(sa_column=_ts())
    released_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


def _table(model: type[SQLModel]) -> Table:
    # SQLModel's metaclass sets __table__ on table=True models; its type hints do not say so.
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


# Core handles on the tables, for the statements in the aggregate modules.
INFO = _table(SchemaInfo)
MAILBOX = _table(MailboxState)
BUYER = _table(Buyer)
CONV = _table(Conversation)
MESSAGE = _table(Message)
QUARANTINE = _table(Quarantine)
QUARANTINE_ACK = _table(QuarantineAck)
OUTBOX = _table(Outbox)
ACCOUNT_STATE = _table(AccountState)
SEND_PAUSE = _table(SendPause)
AUDIT = _table(AuditLog)
ORDERS = _table(Order)
ORDER_ITEM = _table(OrderItem)
FEEDBACK = _table(FeedbackRequest)
OAUTH2_GRANT = _table(OAuth2Grant)
REMINDER = _table(ResponseReminder)
DAEMON = _table(Daemon)
LEASE = _table(AccountLease)
LEASE_HISTORY = _table(LeaseHistory)


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row a single-row INSERT just made."""
    key = result.inserted_primary_key
    assert key is not None, "not the result of a single-row INSERT"
    return int(key[0])


#: When an order was delivered, else when it is expected (latest estimate, then earliest): what the
#: feedback schedule counts the marketplace's window from and reads the orders in.
ORDER_DELIVERY = func.coalesce(ORDERS.c.delivered_at, ORDERS.c.estimated_delivery_to,
                               ORDERS.c.estimated_delivery_from)
# The feedback schedule's query (store.feedback.orders_to_schedule): an account's orders delivered
# since a date, in delivery order. An index on the expression itself (SQLite and PostgreSQL both
# have them), so the query reads only the orders inside the window, never the account's history.
Index("ix_orders_account_delivery", ORDERS.c.account, ORDER_DELIVERY)
