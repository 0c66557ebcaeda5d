"""What monitoring reads: the figures behind ``/metrics`` and ``mailbridge health``; quarantine acknowledgement.

Every read is one aggregate statement over all accounts (grouped by account),
so a scrape costs a handful of statements whatever the number of accounts;
the outbox counts read the index ``ix_outbox_account_state`` only, never the
rows (which hold whole messages). The audit log only grows, so it is read on
from the highest id a reader has counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.engine import Connection

from bridge.store.models import AUDIT, BUYER, FEEDBACK, MAILBOX, OUTBOX, QUARANTINE, QUARANTINE_ACK
from bridge.store.times import iso, utc


@dataclass(frozen=True)
class MailboxFetch:
    """The last fetch's outcome of one account's folder."""

    account: str
    folder: str
    last_fetch_at: datetime | None    # the last successful fetch (None: never)
    last_error: str | None            # the error since then, if any
    last_error_at: datetime | None
    initialised_at: datetime | None   # when ingest first recorded this folder (or its first error)


def mailbox_fetches(conn: Connection) -> list[MailboxFetch]:
    rows = conn.execute(select(MAILBOX.c.account, MAILBOX.c.folder, MAILBOX.c.last_fetch_at, MAILBOX.c.last_error,
                               MAILBOX.c.last_error_at, MAILBOX.c.initialised_at)
                        .order_by(MAILBOX.c.account, MAILBOX.c.folder)).all()
    return [MailboxFetch(r.account, r.folder, utc(r.last_fetch_at), r.last_error, utc(r.last_error_at),
                         utc(r.initialised_at)) for r in rows]


def outbox_by_state(conn: Connection) -> dict[tuple[str, str], int]:
    """Rows per (account, state)."""
    return {(a, s): int(n) for a, s, n in conn.execute(
        select(OUTBOX.c.account, OUTBOX.c.state, func.count()).group_by(OUTBOX.c.account, OUTBOX.c.state))}


def oldest_queued(conn: Connection) -> dict[str, datetime]:
    """Per account with queued rows: when the oldest of them was queued."""
    return {a: t for a, t in ((a, utc(t)) for a, t in conn.execute(
        select(OUTBOX.c.account, func.min(OUTBOX.c.created_at)).where(OUTBOX.c.state == "queued")
        .group_by(OUTBOX.c.account))) if t is not None}


@dataclass(frozen=True)
class Overdue:
    """Outbox rows of one state past their time, and the oldest such time."""

    count: int
    since: datetime


def overdue_outbox(conn: Connection, due_before: datetime, claimed_before: datetime) -> dict[tuple[str, str], Overdue]:
    """Per (account, state): ``queued`` rows due before ``due_before`` (due, and not sent since), and
    ``sending`` rows claimed before ``claimed_before`` (a send that neither finished nor was reconciled).

    A row waiting on purpose (a retry later, proactive mail paused by a restriction)
    has its due time ahead and is not overdue.
    """
    out: dict[tuple[str, str], Overdue] = {}
    for state, column, before in (("queued", OUTBOX.c.next_attempt_at, due_before),
                                  ("sending", OUTBOX.c.claimed_at, claimed_before)):
        for account, count, since in conn.execute(
                select(OUTBOX.c.account, func.count(), func.min(column))
                .where(OUTBOX.c.state == state, column < before).group_by(OUTBOX.c.account)):
            out[(account, state)] = Overdue(int(count), utc(since) or before)
    return out


def optouts(conn: Connection) -> dict[str, int]:
    """Buyers opted out, per account."""
    return {a: int(n) for a, n in conn.execute(
        select(BUYER.c.account, func.count()).where(BUYER.c.opted_out_at.is_not(None)).group_by(BUYER.c.account))}


def feedback_by_state(conn: Connection) -> dict[tuple[str, str], int]:
    """Feedback requests per (account, state)."""
    return {(a, s): int(n) for a, s, n in conn.execute(
        select(FEEDBACK.c.account, FEEDBACK.c.state, func.count()).group_by(FEEDBACK.c.account, FEEDBACK.c.state))}


# --- the audit log, read on from where the reader stopped ------------------------------------
# Only outbound decisions count; the log only grows, so a reader keeps the highest id it has
# counted and reads on from there: in bulk (grouped in SQL) for what is new, row by row for a
# short window below, where rows committed late (PostgreSQL) may still appear.

_OUTBOUND = AUDIT.c.event == "outbound"


@dataclass(frozen=True)
class AuditDecision:
    id: int
    account: str
    decision: str                 # allowed | warned | blocked | held | cancelled
    rules: tuple[str, ...]        # the rule ids of its findings


def audit_high_id(conn: Connection) -> int:
    """The highest id in the audit log (0: empty)."""
    return int(conn.execute(select(func.coalesce(func.max(AUDIT.c.id), 0))).scalar_one())


def audit_decisions(conn: Connection, after_id: int, upto_id: int, *, with_findings_only: bool = False
                    ) -> list[AuditDecision]:
    """Outbound decisions with ``after_id < id <= upto_id``, lowest first (only those with findings, if asked)."""
    query = (select(AUDIT.c.id, AUDIT.c.account, AUDIT.c.decision, AUDIT.c.rules)
             .where(_OUTBOUND, AUDIT.c.id > after_id, AUDIT.c.id <= upto_id).order_by(AUDIT.c.id))
    if with_findings_only:
        query = query.where(AUDIT.c.rules != "[]")
    return [AuditDecision(r.id, r.account, r.decision, _rule_ids(r.rules)) for r in conn.execute(query).all()]


def audit_decision_counts(conn: Connection, after_id: int, upto_id: int) -> dict[tuple[str, str], int]:
    """Outbound decisions per (account, decision) with ``after_id < id <= upto_id``."""
    return {(a, d): int(n) for a, d, n in conn.execute(
        select(AUDIT.c.account, AUDIT.c.decision, func.count())
        .where(_OUTBOUND, AUDIT.c.id > after_id, AUDIT.c.id <= upto_id).group_by(AUDIT.c.account, AUDIT.c.decision))}


def _rule_ids(text: str | None) -> tuple[str, ...]:
    try:
        findings = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(f["rule"]) for f in findings if isinstance(f, dict) and "rule" in f)


# --- quarantine and its acknowledgement ------------------------------------------------------

_ACKED = exists().where(QUARANTINE_ACK.c.quarantine_id == QUARANTINE.c.id)


def quarantine_counts(conn: Connection) -> dict[tuple[str, bool], int]:
    """Quarantined mail (not released) per (account, acknowledged)."""
    acked = _ACKED.label("acked")
    return {(a, bool(k)): int(n) for a, k, n in conn.execute(
        select(QUARANTINE.c.account, acked, func.count()).where(QUARANTINE.c.released_at.is_(None))
        .group_by(QUARANTINE.c.account, acked))}


def list_quarantine(conn: Connection, accounts: list[str], include_acknowledged: bool,
                    limit: int = 1000) -> list[dict[str, Any]]:
    """Quarantined mail of ``accounts``, oldest first, with who acknowledged it and when."""
    query = (select(QUARANTINE.c.id, QUARANTINE.c.account, QUARANTINE.c.folder, QUARANTINE.c.uid,
                    QUARANTINE.c.message_id, QUARANTINE.c.size, QUARANTINE.c.reason, QUARANTINE.c.created_at,
                    QUARANTINE_ACK.c.acknowledged_at, QUARANTINE_ACK.c.acknowledged_by)
             .select_from(QUARANTINE.outerjoin(QUARANTINE_ACK, QUARANTINE_ACK.c.quarantine_id == QUARANTINE.c.id))
             .where(QUARANTINE.c.account.in_(accounts), QUARANTINE.c.released_at.is_(None))
             .order_by(QUARANTINE.c.id).limit(limit))
    if not include_acknowledged:
        query = query.where(QUARANTINE_ACK.c.quarantine_id.is_(None))
    return [{"id": r.id, "account": r.account, "folder": r.folder, "uid": r.uid, "message_id": r.message_id,
             "size": r.size, "reason": r.reason, "created_at": iso(utc(r.created_at)),
             "acknowledged_at": iso(utc(r.acknowledged_at)), "acknowledged_by": r.acknowledged_by}
            for r in conn.execute(query).all()]


def acknowledge_quarantine(conn: Connection, accounts: list[str], ids: list[int] | None, who: str,
                           now: datetime) -> list[int]:
    """Acknowledge the quarantined mail ``ids`` of ``accounts`` (None: all of it not yet acknowledged).

    Returns the ids acknowledged now; ids already acknowledged, released, or of
    other accounts are left as they are (and not returned).
    """
    query = select(QUARANTINE.c.id).where(
        QUARANTINE.c.account.in_(accounts), QUARANTINE.c.released_at.is_(None), ~_ACKED)
    if ids is not None:
        query = query.where(QUARANTINE.c.id.in_(ids))
    todo = [r[0] for r in conn.execute(query.order_by(QUARANTINE.c.id)).all()]
    if todo:
        conn.execute(QUARANTINE_ACK.insert(), [
            {"quarantine_id": i, "acknowledged_at": now, "acknowledged_by": who} for i in todo])
    return todo

