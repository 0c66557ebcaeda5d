"""The tables, declared with SQLAlchemy Core: the statements in the aggregate modules use them as they are.

Times are stored as timezone-aware UTC datetimes. JSON-ish columns are text
holding JSON, so SQLite and PostgreSQL behave the same. A column's ``default``
is the value an INSERT that leaves it out gets (applied by SQLAlchemy, not the
database). Every change here comes with a revision (``scripts/new-migration``).

Plain Core tables, not SQLModel classes: nothing here is ever an object, and
declaring sixteen ORM-mapped pydantic classes, with SQLAlchemy's ORM imported
for them, took about a third of the daemon's start-up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (Boolean, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table,
                        UniqueConstraint, func)
from sqlalchemy.engine import CursorResult

# The schema number releases from before Alembic kept in schema_info ("schema_version");
# they refuse a database whose number is larger than theirs (1). Revision 0002 raised it to
# 2, so the previous release never runs on a database it has not the tables for. Later
# revisions leave it: alembic_version says the rest (bridge/store/schema.py).
SCHEMA_VERSION = 2


METADATA = MetaData()


def _ts(name: str, nullable: bool = False, index: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable, index=index)


INFO = Table(
    "schema_info", METADATA,
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)


# Per account and folder: where ingest stands.
#
# ``last_uid`` is the checkpoint: every UID <= last_uid under ``uidvalidity``
# has been recorded (as a message or a quarantine row). It moves only in the
# transaction that records the message.
MAILBOX = Table(
    "mailbox_state", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("folder", String, nullable=False),
    Column("uidvalidity", Integer, nullable=False),
    Column("last_uid", Integer, nullable=False, default=0),
    # Mail with UID <= this, found on the first run, is recorded as history, not forwarded.
    Column("history_until_uid", Integer, nullable=False, default=0),
    _ts("initialised_at"),
    _ts("last_fetch_at", nullable=True),
    Column("last_error", String),
    _ts("last_error_at", nullable=True),
    UniqueConstraint("account", "folder"),
)


BUYER = Table(
    "buyer", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("marketplace", String, nullable=False),  # relay domain family + domain, e.g. "marketplace.amazon.de"
    Column("alias", String, nullable=False),  # base relay alias, lowercased, without "+case"
    Column("name", String),
    _ts("created_at"),
    # Opt-out state (docs/marketplaces.md, "Buyer opt-out"): never anything unsolicited to this buyer.
    _ts("opted_out_at", nullable=True),
    Column("opted_out_source", String),  # "notice <Message-ID>", "operator jo"
    _ts("do_not_solicit_until", nullable=True),
    # The last permanent delivery failure to this buyer's relay address (a DSN).
    _ts("bounced_at", nullable=True),
    Column("bounce_reason", String),
    UniqueConstraint("account", "alias"),
)


CONV = Table(
    "conversation", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("key", String, nullable=False),  # threads.conversation_key(alias, order_id)
    Column("buyer_id", Integer, ForeignKey("buyer.id"), nullable=False),
    Column("order_id", String),
    Column("comm_mgr_tok", String),
    Column("subject", String, nullable=False),
    Column("status", String, nullable=False, default="open"),  # open | closed
    # JSON: "COURTESY REFUND", "A-TO-Z CLAIM" (bridge.domain.flags), once raised
    Column("flags", String, nullable=False, default="[]"),
    _ts("created_at"),
    _ts("last_message_at"),
    Column("message_count", Integer, nullable=False, default=0),
    # Message-IDs of the staff notifications of this conversation, oldest first
    # and newest last, so the next one can chain References (RFC 5322 3.6.4).
    Column("staff_root_id", String),
    Column("staff_last_id", String),
    UniqueConstraint("account", "key"),
    # When a buyer last wrote (the feedback rules ask it for each request sent).
    Index("ix_conversation_buyer", "buyer_id", "last_message_at"),
)


# Every inbound message recorded, whatever its kind.
MESSAGE = Table(
    "message", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("folder", String, nullable=False),
    Column("uidvalidity", Integer, nullable=False),
    Column("uid", Integer, nullable=False),
    Column("message_id", String),
    Column("content_hash", String, nullable=False),  # sha256 of the raw bytes (resync dedupe)
    Column("kind", String, nullable=False),
    Column("rule_hits", String, nullable=False),  # JSON list of {"rule", "kind", "reason"}
    Column("disposition", String, nullable=False),  # forwarded | history | recorded | duplicate
    Column("from_addr", String, nullable=False),
    Column("to_addrs", String, nullable=False),  # JSON list
    Column("subject", String, nullable=False),
    _ts("sent_date", nullable=True),
    _ts("received_at"),
    Column("in_reply_to", String),
    Column("references", String, nullable=False, default="[]"),  # JSON list
    Column("order_id", String),
    Column("comm_mgr_tok", String),
    Column("buyer_address", String),  # exact relay address used (keeps "+case")
    Column("text", String, nullable=False),  # the buyer's words when extracted, else the body text
    Column("size", Integer, nullable=False),
    Column("defects", String, nullable=False, default="[]"),  # JSON list
    Column("conversation_id", Integer, ForeignKey("conversation.id"), index=True),
    Column("duplicate_of", Integer),
    # The whole message as received, kept for staff replies: what a staff member
    # wrote is the record of what mailbridge was asked to send to a buyer.
    Column("raw", LargeBinary, nullable=True),
    UniqueConstraint("account", "folder", "uidvalidity", "uid"),
    Index("ix_message_account_msgid", "account", "message_id"),
    Index("ix_message_account_hash", "account", "content_hash"),
)


# Mail that could not be processed: kept, with the reason, staff told once.
QUARANTINE = Table(
    "quarantine", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("folder", String, nullable=False),
    Column("uidvalidity", Integer, nullable=False),
    Column("uid", Integer, nullable=False),
    Column("message_id", String),
    Column("size", Integer, nullable=False),
    Column("reason", String, nullable=False),
    Column("content_hash", String, index=True),
    Column("raw", LargeBinary, nullable=True),
    _ts("created_at"),
    _ts("released_at", nullable=True),
    UniqueConstraint("account", "folder", "uidvalidity", "uid"),
)


# An operator has seen a quarantined message (``mailbridge quarantine ack``).
#
# A table of its own, not a column of ``quarantine``, so that an existing
# database gains it by table creation alone. ``mailbridge health`` warns about
# quarantined mail until it is acknowledged; the mail itself stays kept.
QUARANTINE_ACK = Table(
    "quarantine_ack", METADATA,
    Column("quarantine_id", Integer, ForeignKey("quarantine.id"), primary_key=True),
    _ts("acknowledged_at"),
    Column("acknowledged_by", String, nullable=False),
)


# Outbound mail. Content and Message-ID are fixed when the row is created.
#
# States: queued -> sending -> sent | queued (retry) | failed;
# a ``sending`` row left by a crash is reconciled to sent / queued / unknown;
# ``held``: composed but not to be sent until an operator releases it
# (``mailbridge outbox retry``); ``cancelled``: an operator dropped it.
OUTBOX = Table(
    "outbox", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False, index=True),
    Column("message_id", String, nullable=False, unique=True),  # without brackets
    # What this row answers, so the same staff reply ingested twice (a copy, a
    # resync) is relayed once: "relay:<account>:<staff Message-ID or hash>".
    Column("dedupe_key", String, unique=True),
    Column("purpose", String, nullable=False),  # staff_notification | staff_alert | buyer_reply | ...
    Column("category", String),  # buyer mail only: reply | critical | unsolicited (decides opt-out effects)
    # staff | buyer: who receives it (decides crash reconciliation)
    Column("audience", String, nullable=False),
    Column("conversation_id", Integer, ForeignKey("conversation.id"), index=True),
    Column("source_message_id", Integer, ForeignKey("message.id")),
    Column("envelope_from", String, nullable=False),
    Column("recipients", String, nullable=False),  # JSON list
    Column("subject", String, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("state", String, nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    _ts("next_attempt_at"),
    Column("claimed_by", String),
    _ts("claimed_at", nullable=True),
    Column("last_error", String),
    _ts("created_at"),
    _ts("sent_at", nullable=True),
    Column("copied_to_sent", Boolean, nullable=False, default=False),
    # ix_outbox_sent: the sending limits count an account's recent sends (bridge.domain.delivery).
    # ix_outbox_queue: a batch claim reads the queue in order, one priority at a time (store/outbox.py).
    # ix_outbox_account_state: counts by account and state (/metrics, health) read this index, never
    # the rows, which hold whole messages.
    Index("ix_outbox_due", "state", "next_attempt_at"), Index("ix_outbox_sent", "account", "sent_at"),
    Index("ix_outbox_queue", "account", "state", "audience", "next_attempt_at", "id"),
    Index("ix_outbox_account_state", "account", "state", "created_at"),
)


# Per account: proactive sending paused while the marketplace restricts it.
ACCOUNT_STATE = Table(
    "account_state", METADATA,
    Column("account", String, primary_key=True),
    _ts("restricted_until", nullable=True),
    Column("restricted_reason", String),
)


# Per account: sending paused after the SMTP server said to slow down (bridge.domain.delivery).
#
# A row exists only while the account is (or was last) throttled; a send that
# goes through removes it. Kept in the database so a restart keeps the pause.
SEND_PAUSE = Table(
    "send_pause", METADATA,
    Column("account", String, primary_key=True),
    _ts("paused_until"),
    Column("reason", String, nullable=False),
    Column("in_a_row", Integer, nullable=False, default=1),
)


# Append-only record of every outbound decision and opt-out change.
#
# What a seller shows the marketplace: what was (not) sent to which buyer,
# when, by whose request, and which rule decided. Rows are only inserted.
AUDIT = Table(
    "audit_log", METADATA,
    Column("id", Integer, primary_key=True),
    _ts("at"),
    Column("account", String, nullable=False),
    Column("event", String, nullable=False),  # outbound | optout | override
    # allowed | warned | blocked | held | opted_out | opted_in | released
    Column("decision", String, nullable=False),
    Column("category", String),  # reply | critical | unsolicited
    # JSON: findings [{"rule", "severity", "reason", "excerpt"}]
    Column("rules", String, nullable=False, default="[]"),
    Column("evaluated", String, nullable=False, default="[]"),  # JSON: rule ids that ran
    Column("buyer", String),  # relay alias
    Column("conversation_id", Integer),
    Column("message_id", String, index=True),  # our outbound Message-ID
    Column("actor", String),  # the staff sender or operator who asked for it
    Column("detail", String),
    Index("ix_audit_account_at", "account", "at"),
)


# One marketplace order of an account, merged from order reports and order notices.
#
# One row per (account, order id), whatever number of report rows, files
# and notices told of it. Dates are UTC. Where the marketplace gives an
# estimated delivery range instead of a delivery date, both ends are kept.
ORDERS = Table(
    "orders", METADATA,   # ORDER is an SQL keyword
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("order_id", String, nullable=False),  # 123-1234567-1234567
    Column("marketplace", String),  # the account's marketplace key, e.g. "amazon.de"
    Column("sales_channel", String),  # as the report says, e.g. "Amazon.de"
    Column("buyer_alias", String),  # base relay alias, lowercased; unknown until a report or mail says
    Column("buyer_name", String),
    # pending | shipped | delivered | cancelled | refunded | returned
    Column("status", String, nullable=False, default="pending"),
    Column("open_claim", Boolean, nullable=False, default=False),  # an A-to-z claim is open
    Column("language", String),  # the buyer's language, when known
    _ts("purchased_at", nullable=True),
    _ts("shipped_at", nullable=True),
    _ts("delivered_at", nullable=True),
    _ts("estimated_delivery_from", nullable=True),
    _ts("estimated_delivery_to", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("account", "order_id"),
    Index("ix_orders_account_buyer", "account", "buyer_alias"),
    # The feedback daily cap's average: orders purchased in the last 30 days.
    Index("ix_orders_account_purchased", "account", "purchased_at"),
)


# One line of an order; the same line seen again (another report, a re-import) updates it.
ORDER_ITEM = Table(
    "order_item", METADATA,
    Column("id", Integer, primary_key=True),
    Column("order_row", Integer, ForeignKey("orders.id"), nullable=False, index=True),
    Column("item_key", String, nullable=False),  # the report's order-item-id, else the SKU, else the ASIN
    Column("sku", String),
    Column("asin", String),
    Column("title", String),
    Column("quantity", Integer, nullable=False, default=1),
    UniqueConstraint("order_row", "item_key"),
)


# The feedback request of one order: at most one per (account, order id), ever.
#
# The unique constraint, not the code, is what keeps an order from being asked
# twice: across restarts, re-imports, a crash between claim and send, and several
# daemons sharing the database. A request made elsewhere (Amazon's "Request a
# Review") is a row too, ``skipped`` with that reason.
#
# States: ``scheduled`` (waits for ``due_at``) -> ``claimed`` (a dispatcher took it)
# -> ``sent`` (queued in the outbox, ``outbox_message_id``) | ``skipped`` (an
# exclusion or the guard said no, ``reason``) | ``scheduled`` again (a later due
# time); ``cancelled``: the buyer opted out before it was due, or an operator.
# A sent request the marketplace did not deliver keeps ``sent`` and says why in
# ``reason`` ("not delivered: buyer opted out").
FEEDBACK = Table(
    "feedback_request", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("order_id", String, nullable=False),
    Column("buyer_alias", String),
    Column("state", String, nullable=False, default="scheduled"),
    _ts("due_at"),
    Column("reason", String),
    Column("outbox_message_id", String, index=True),
    Column("claimed_by", String),
    _ts("claimed_at", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("sent_at", nullable=True),
    UniqueConstraint("account", "order_id"),
    # The dispatcher's query: its work grows with the due rows, not with all rows.
    Index("ix_feedback_due", "account", "state", "due_at"),
    Index("ix_feedback_sent", "account", "sent_at"),
)


# The newest refresh token of one OAuth2 login (an account's IMAP client, and its SMTP client
# when that is a separate one), kept because providers rotate them: each refresh may answer
# with a new refresh token and the old one stops working.
#
# ``grant``: "<account>" or "<account>:smtp". ``seed``: a fingerprint of the configured
# refresh token this row started from, so a new one in the file seeds again.
# ``revoked_at``: the provider answered invalid_grant for ``refresh_token``; nothing is
# tried with it again until a new one is authorized or configured. Never shown by status.
OAUTH2_GRANT = Table(
    "oauth2_grant", METADATA,
    Column("grant", String, primary_key=True),
    Column("account", String, nullable=False, index=True),
    Column("refresh_token", String, nullable=False),
    Column("seed", String),
    _ts("updated_at"),
    _ts("revoked_at", nullable=True),
    Column("revoked_reason", String),
)


# One reminder to staff about a buyer message still unanswered: one row per (buyer message, threshold).
#
# The unique constraint, not the code, keeps a threshold's reminder from going
# out twice: the row turns ``sent`` in the transaction that queues the mail,
# across restarts, kill -9 and several daemons. Rows are made when the buyer
# message is recorded, for the conversation's oldest unanswered message only
# (bridge.domain.reminders).
#
# States: ``scheduled`` (waits for ``due_at``) -> ``sent`` (``outbox_message_id``)
# | ``answered`` (a staff reply went to the buyer first) | ``closed`` (the
# conversation was closed, e.g. "no response needed") | ``overtaken`` (a later
# threshold was due as well and was sent instead).
REMINDER = Table(
    "response_reminder", METADATA,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("conversation_id", Integer, ForeignKey("conversation.id"), nullable=False, index=True),
    Column("message_row", Integer, ForeignKey("message.id"), nullable=False),  # the buyer message the clock runs for
    Column("after_hours", Integer, nullable=False),
    _ts("started_at"),  # when the buyer sent it: the 24 hours count from here
    _ts("received_at"),  # when mailbridge recorded it: replies after it answer it
    _ts("deadline_at"),  # started_at + 24 hours
    _ts("due_at"),
    Column("state", String, nullable=False, default="scheduled"),
    Column("reason", String),
    Column("outbox_message_id", String),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("message_row", "after_hours"),
    # The timer's query: its work grows with the due rows, not with all rows.
    Index("ix_reminder_due", "account", "state", "due_at"),
    # `mailbridge status`: the clocks running out soon.
    Index("ix_reminder_deadline", "account", "deadline_at"),
)


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
