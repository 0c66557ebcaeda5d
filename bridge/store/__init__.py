"""Every SQL statement mailbridge runs (SQLAlchemy Core on the SQLModel tables), one module per aggregate.

- ``models``: the tables, and Core handles on them (``OUTBOX``, ``BUYER``, ...)
- ``engine``: opening the database, SQLite pragmas, schema creation and version
- ``mailbox``: UID checkpoints and the last fetch's outcome, per account and folder
- ``messages``: recorded inbound mail, quarantine, duplicates by content hash
- ``conversations``: threading, and what the reply relay reads back
- ``buyers``: buyers, opt-out, Do-Not-Solicit, bounces, account restrictions
- ``reminders``: response-time reminders (one per buyer message and threshold), the timer's due query
- ``feedback``: feedback requests (one per order, ever), their claims, and the orders the schedule reads
- ``outbox``: enqueue, claims, outcomes, crash reconciliation, operator retry/cancel
- ``orders``: orders and their items, merged from reports and notices; the buyer link
- ``audit``: the append-only audit log of outbound decisions, opt-outs and overrides
- ``status``: the per-account report of ``mailbridge status``
- ``oauth2_grants``: the newest (rotated) refresh token of each OAuth2 login, and revocations
- ``monitoring``: what ``/metrics`` and ``mailbridge health`` read; quarantine acknowledgement
- ``leases``: account leases, the daemons' heartbeats, the lease history; the fence of a worker's transaction
- ``hmac_key``: the reply-token key kept in the database; ``times``: UTC in, ISO out

Functions take a Connection that is already inside a transaction: the caller
(inbound service, outbox worker, CLI) decides where a transaction starts and
ends. Callers use this facade (``from bridge import store``; ``store.enqueue``);
the names below are its whole public surface.
"""

from __future__ import annotations

from bridge.store.audit import AuditFinding, AuditRow, audit_rows, latest_send_decision, record_audit, signature_cut
from bridge.store.buyers import (
    ContactState,
    buyer_by_order,
    buyer_contact_state,
    list_optouts,
    record_buyer_bounce,
    restrict_account,
    restricted_until,
    set_do_not_solicit,
    set_opt_out,
)
from bridge.store.conversations import (
    BatchThreads,
    BuyerMessage,
    ConversationInfo,
    ConversationRef,
    buyer_message_to_quote,
    close_conversation,
    conversation_info,
    conversation_of_notification,
    newest_conversation,
    raise_flags,
)
from bridge.store.feedback import (
    NOT_DELIVERED_OPTED_OUT,
    REQUEST_STATES,
    OrderRecord,
    Request,
    cancel_scheduled_of_buyer,
    cancel_unsent_requests,
    claim_due_requests,
    feedback_counts,
    finish_request,
    last_buyer_message_at,
    list_requests,
    mark_not_delivered,
    order_record,
    orders_since,
    orders_to_schedule,
    record_external,
    release_stale_claims,
    request_of_message,
    request_of_order,
    schedule_key,
    schedule_request,
    sent_between,
)
from bridge.store.hmac_key import token_secret
from bridge.store.leases import (
    LeaseState,
    Taken,
    account_lease,
    beat,
    database_time,
    end_stuck_sessions,
    fence,
    fenced,
    forget_daemon,
    keeper_limits,
    lease_history,
    lease_states,
    live_daemons,
    release,
    renew,
    take,
)
from bridge.store.errors import LeaseLost
from bridge.store.mailbox import (
    MailboxCheckpoint,
    advance_checkpoint,
    mailbox_checkpoint,
    mailbox_checkpoint_or_fail,
    record_fetch,
    start_mailbox,
)
from bridge.store.messages import (
    SeenContent,
    insert_message,
    insert_quarantine,
    quarantined_before,
    quarantined_uids,
    recorded_uids,
    set_disposition,
)
from bridge.store.models import (
    ACCOUNT_STATE,
    AUDIT,
    BUYER,
    CONV,
    DAEMON,
    FEEDBACK,
    INFO,
    LEASE,
    LEASE_HISTORY,
    MAILBOX,
    MESSAGE,
    OAUTH2_GRANT,
    ORDER_ITEM,
    ORDERS,
    OUTBOX,
    QUARANTINE,
    QUARANTINE_ACK,
    REMINDER,
    SEND_PAUSE,
)
from bridge.store.monitoring import (
    AuditDecision,
    MailboxFetch,
    Overdue,
    acknowledge_quarantine,
    audit_decision_counts,
    audit_decisions,
    audit_high_id,
    feedback_by_state,
    list_quarantine,
    mailbox_fetches,
    oldest_queued,
    optouts,
    outbox_by_state,
    overdue_outbox,
    quarantine_counts,
)
from bridge.store.oauth2_grants import GrantState, grant_state, revoke_grant, rotate_refresh_token, seed_grant
from bridge.store.orders import (
    UpsertCounts,
    link_buyer,
    link_buyers,
    order_by_id,
    orders_for_account,
    set_order_status,
    upsert_orders,
)
from bridge.store.outbox import (
    CANCELLABLE,
    OUTBOX_STATES,
    RETRYABLE,
    OutboxItem,
    SendPause,
    cancel_unsolicited,
    claim_batch,
    claim_due,
    dedupe_key_used,
    end_pause,
    enqueue,
    enqueue_many,
    finish_send,
    interrupted_sends,
    list_outbox,
    mark_copied_to_sent,
    next_due_time,
    note_bounce,
    oldest_foreign_claim,
    operator_cancel,
    operator_retry,
    outbox_by_message_id,
    outbox_known_ids,
    pause_sending,
    queued_count,
    release_claims,
    outbox_row,
    resolve_interrupted,
    send_pause,
    window_use,
)
from bridge.store.reminders import (
    REMINDER_STATES,
    DueReminder,
    awaiting_answer,
    clock_running,
    due_reminders,
    finish_reminder,
    reminder_counts,
    schedule_reminders,
    stop_reminders,
    unanswered_since,
)
from bridge.store.status import account_status, queued_outbox
from bridge.store.times import utc

__all__ = [
    # tables
    "ACCOUNT_STATE", "AUDIT", "BUYER", "CONV", "DAEMON", "FEEDBACK", "INFO", "LEASE", "LEASE_HISTORY", "MAILBOX", "MESSAGE", "OAUTH2_GRANT", "ORDER_ITEM",
    "ORDERS", "OUTBOX", "QUARANTINE", "QUARANTINE_ACK", "REMINDER", "SEND_PAUSE",
    # mailbox
    "MailboxCheckpoint", "advance_checkpoint", "mailbox_checkpoint", "mailbox_checkpoint_or_fail", "record_fetch",
    "start_mailbox",
    # messages and quarantine
    "SeenContent", "insert_message", "insert_quarantine", "quarantined_before", "quarantined_uids", "recorded_uids",
    "set_disposition",
    # conversations
    "BatchThreads", "BuyerMessage", "ConversationInfo", "ConversationRef", "buyer_message_to_quote",
    "close_conversation", "conversation_info", "conversation_of_notification", "newest_conversation", "raise_flags",
    # buyers and account restrictions
    "ContactState", "buyer_by_order", "buyer_contact_state", "list_optouts", "record_buyer_bounce",
    "restrict_account", "restricted_until", "set_do_not_solicit", "set_opt_out",
    # outbox
    "CANCELLABLE", "OUTBOX_STATES", "RETRYABLE", "OutboxItem", "SendPause", "cancel_unsolicited", "claim_batch",
    "claim_due", "dedupe_key_used", "end_pause", "enqueue", "enqueue_many", "finish_send", "interrupted_sends", "list_outbox",
    "mark_copied_to_sent", "next_due_time", "note_bounce", "oldest_foreign_claim", "operator_cancel",
    "operator_retry", "outbox_by_message_id", "outbox_known_ids", "outbox_row", "pause_sending", "queued_count",
    "release_claims", "resolve_interrupted", "send_pause", "window_use",
    # orders
    "UpsertCounts", "link_buyer", "link_buyers", "order_by_id", "orders_for_account", "set_order_status",
    "upsert_orders",
    # feedback requests
    "NOT_DELIVERED_OPTED_OUT", "REQUEST_STATES", "OrderRecord", "Request", "cancel_scheduled_of_buyer",
    "cancel_unsent_requests", "claim_due_requests", "feedback_counts", "finish_request", "last_buyer_message_at", "list_requests",
    "mark_not_delivered", "order_record", "orders_since", "orders_to_schedule", "record_external",
    "release_stale_claims", "request_of_message", "request_of_order", "schedule_key", "schedule_request",
    "sent_between",
    # response-time reminders
    "REMINDER_STATES", "DueReminder", "awaiting_answer", "clock_running", "due_reminders", "finish_reminder",
    "reminder_counts", "schedule_reminders", "stop_reminders", "unanswered_since",
    # audit log
    "AuditFinding", "AuditRow", "audit_rows", "latest_send_decision", "record_audit", "signature_cut",
    # OAuth2 refresh tokens
    "GrantState", "grant_state", "revoke_grant", "rotate_refresh_token", "seed_grant",
    # monitoring: /metrics, health, quarantine acknowledgement
    "AuditDecision", "MailboxFetch", "Overdue", "acknowledge_quarantine", "audit_decision_counts",
    "audit_decisions", "audit_high_id",
    "feedback_by_state", "list_quarantine", "mailbox_fetches", "oldest_queued", "optouts", "outbox_by_state",
    "overdue_outbox", "quarantine_counts",
    # account leases and daemons
    "LeaseLost", "LeaseState", "Taken", "account_lease", "beat", "database_time", "end_stuck_sessions", "fence",
    "fenced", "forget_daemon", "keeper_limits", "lease_history", "lease_states", "live_daemons", "release", "renew",
    "take",
    # status, secrets, times
    "account_status", "queued_outbox", "token_secret", "utc",
]
