"""The per-account report behind ``mailbridge status``: the lease holder, mailboxes, counts by kind and state, quarantine, feedback,
response-time reminders and the buyers waiting for an answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from bridge.store.feedback import feedback_counts
from bridge.store.leases import account_lease
from bridge.store.models import BUYER, CONV, MAILBOX, MESSAGE, OUTBOX, QUARANTINE
from bridge.store.outbox import OUTBOX_STATES
from bridge.store.reminders import awaiting_answer, reminder_counts
from bridge.store.times import iso, utc


def account_status(conn: Connection, account: str, now: datetime | None = None,
                   overdue_shown_since: datetime | None = None) -> dict[str, Any]:
    """The report of one account. Given ``now``, also the buyers waiting for an answer (clocks whose 24 hours
    end after ``overdue_shown_since``, default ``now``), the one closest to its deadline first."""
    def count(table: Table, *cond: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(table.c.account == account, *cond)).scalar_one())

    mailboxes = [
        {"folder": r.folder, "uidvalidity": r.uidvalidity, "last_uid": r.last_uid,
         "last_fetch_at": iso(utc(r.last_fetch_at)), "last_error": r.last_error,
         "last_error_at": iso(utc(r.last_error_at))}
        for r in conn.execute(select(MAILBOX).where(MAILBOX.c.account == account)).all()
    ]
    kinds = {k: n for k, n in conn.execute(
        select(MESSAGE.c.kind, func.count()).where(MESSAGE.c.account == account).group_by(MESSAGE.c.kind)).all()}
    outbox = {s: 0 for s in OUTBOX_STATES}
    outbox.update({s: n for s, n in conn.execute(
        select(OUTBOX.c.state, func.count()).where(OUTBOX.c.account == account).group_by(OUTBOX.c.state)).all()})
    return {
        "account": account,
        # Which daemon works the account, until when (docs/architecture.md, "Several daemons").
        "lease": account_lease(conn, account),
        "mailboxes": mailboxes,
        "messages": count(MESSAGE),
        "messages_by_kind": kinds,
        "conversations": count(CONV),
        "buyers": count(BUYER),
        "outbox": outbox,
        "quarantined": count(QUARANTINE, QUARANTINE.c.released_at.is_(None)),
        "feedback": feedback_counts(conn, account),
        "reminders": reminder_counts(conn, account),
        "awaiting_answer": [] if now is None else awaiting_answer(conn, account, now, overdue_shown_since or now),
    }


def queued_outbox(conn: Connection) -> int:
    """Rows waiting to be sent, all accounts (the service manager's status line)."""
    return int(conn.execute(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.state == "queued")).scalar_one())
