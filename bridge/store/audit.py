"""The append-only audit log: every outbound decision, opt-out change and override, and reading it back.

What a seller shows the marketplace: what was (not) sent to which buyer, when,
at whose request, and which rule decided. Rows are only ever inserted. The
policy check (``bridge.services.guard``) decides; this module keeps the
record. Recording and the send-time lookup run for every buyer-bound message,
so their statements are built once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TypedDict

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from bridge.store.models import AUDIT
from bridge.store.times import iso, utc

# Events whose decision lets a buyer-bound message out or holds it back: the
# policy check at send time and an operator's release or cancel.
SEND_DECIDING_EVENTS = ("outbound", "override")

_RECORD = AUDIT.insert()
_LATEST_SEND_DECISION = select(AUDIT.c.decision).where(
    AUDIT.c.message_id == bindparam("message_id"), AUDIT.c.event.in_(SEND_DECIDING_EVENTS),
).order_by(AUDIT.c.id.desc()).limit(1)


def record_audit(conn: Connection, *, account: str, now: datetime, event: str, decision: str,
                 category: str | None, findings: Iterable[Mapping[str, str | None]] = (),
                 evaluated: Iterable[str] = (), buyer: str | None = None, conversation_id: int | None = None,
                 message_id: str | None = None, actor: str | None = None, detail: str | None = None) -> None:
    """Append one entry. ``findings``: the rules that objected, each {"rule", "severity", "reason", "excerpt"}."""
    conn.execute(_RECORD, {
        "at": now, "account": account, "event": event, "decision": decision, "category": category,
        "rules": json.dumps([dict(f) for f in findings]), "evaluated": json.dumps(list(evaluated)),
        "buyer": buyer, "conversation_id": conversation_id, "message_id": message_id, "actor": actor,
        "detail": detail,
    })


def latest_send_decision(conn: Connection, message_id: str) -> str | None:
    """The newest decision recorded about sending this Message-ID (policy check or override), or None."""
    row = conn.execute(_LATEST_SEND_DECISION, {"message_id": message_id}).first()
    return None if row is None else str(row[0])


_SIGNATURE_CUT = select(AUDIT.c.detail).where(
    AUDIT.c.message_id == bindparam("message_id"), AUDIT.c.event == "signature",
).order_by(AUDIT.c.id.desc()).limit(1)


def signature_cut(conn: Connection, message_id: str) -> list[str]:
    """The signature lines left out of this buyer mail (recorded by the relay), for the staff's confirmation."""
    row = conn.execute(_SIGNATURE_CUT, {"message_id": message_id}).first()
    return str(row[0]).splitlines() if row is not None and row[0] else []


class AuditFinding(TypedDict):
    """One rule that objected, as ``bridge.services.guard.record`` writes it."""

    rule: str
    severity: str
    reason: str
    excerpt: str | None


class AuditRow(TypedDict):
    """One entry as ``audit_rows`` reads it back (``at`` in ISO 8601, UTC)."""

    id: int
    at: str | None          # as iso() returns it; the column is never NULL
    account: str
    event: str
    decision: str
    category: str | None
    findings: list[AuditFinding]
    rules_evaluated: list[str]
    buyer: str | None
    conversation_id: int | None
    message_id: str | None
    actor: str | None
    detail: str | None


def audit_rows(conn: Connection, accounts: list[str], since: datetime | None, limit: int) -> list[AuditRow]:
    """Entries of these accounts, oldest first, from ``since`` on; for ``mailbridge audit`` and its JSON export."""
    q = select(AUDIT).where(AUDIT.c.account.in_(accounts))
    if since is not None:
        q = q.where(AUDIT.c.at >= since)
    return [{
        "id": r.id, "at": iso(utc(r.at)), "account": r.account,
        "event": r.event, "decision": r.decision, "category": r.category, "findings": json.loads(r.rules),
        "rules_evaluated": json.loads(r.evaluated), "buyer": r.buyer, "conversation_id": r.conversation_id,
        "message_id": r.message_id, "actor": r.actor, "detail": r.detail,
    } for r in conn.execute(q.order_by(AUDIT.c.id).limit(limit))]
