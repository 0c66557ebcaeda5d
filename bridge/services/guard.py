"""The gate every buyer-bound email passes: policy decision + audit record (thin shell over bridge.domain.policy).

``bridge.domain.policy`` decides (pure). This module builds its context from the
database (opt-out, Do-Not-Solicit, account restriction), turns the settings
into a ``PolicyConfig``, and writes the decision to the append-only audit log
in the caller's transaction, so a message and the decision that let it out
commit together. The outbox then refuses to send a buyer anything without
an allowing decision for that exact Message-ID (``may_send``).
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bridge import store
from bridge.config import PolicySettings, RelaySettings
from bridge.domain import policy
from bridge.domain.threads import base_alias
from bridge.store import models

AUDIT = models.AuditLog.__table__
ACCOUNT_STATE = models.AccountState.__table__

ALLOWING = ("allowed", "warned", "released")


def policy_config(settings: PolicySettings, relay: RelaySettings) -> policy.PolicyConfig:
    base = policy.PolicyConfig()
    return policy.PolicyConfig(
        modes=dict(settings.rules),
        link_allowlist=base.link_allowlist + settings.link_domains,
        allowed_attachment_types=relay.attachment_types,
        max_attachment_bytes=relay.max_attachment_bytes,
        max_attachments=relay.max_attachments,
        max_text_chars=settings.max_text_chars,
    )


def restricted_until(conn: Connection, account: str) -> datetime | None:
    row = conn.execute(select(ACCOUNT_STATE.c.restricted_until).where(ACCOUNT_STATE.c.account == account)).first()
    return store.utc(row[0]) if row else None


def buyer_state(conn: Connection, account: str, alias: str, now: datetime) -> tuple[bool, bool]:
    """(opted out, under Do-Not-Solicit) for a buyer alias, at the time of the call."""
    b = store.BUYER
    row = conn.execute(select(b.c.opted_out_at, b.c.do_not_solicit_until).where(
        b.c.account == account, b.c.alias == alias)).first()
    if row is None:
        return False, False
    dns_until = store.utc(row[1])
    return row[0] is not None, dns_until is not None and dns_until > now


def check(conn: Connection, *, account: str, draft: policy.Draft, buyer_alias: str, buyer_original_text: str | None,
          now: datetime, config: policy.PolicyConfig, buyer_message_at: datetime | None = None) -> policy.Decision:
    """``buyer_message_at``: when the buyer wrote the message answered (for a marketplace's reply window)."""
    opted_out, dns = buyer_state(conn, account, base_alias(buyer_alias), now)
    ctx = policy.PolicyContext(
        seller_address=draft.from_addr, buyer_alias=buyer_alias, now=now, buyer_opted_out=opted_out,
        buyer_do_not_solicit=dns, account_restricted_until=restricted_until(conn, account),
        buyer_original_text=buyer_original_text, buyer_message_at=buyer_message_at,
    )
    return policy.check(draft, ctx, config)


def record(conn: Connection, *, account: str, now: datetime, decision: str, category: str | None,
           findings: tuple[policy.Finding, ...] = (), evaluated: tuple[str, ...] = (), buyer: str | None = None,
           conversation_id: int | None = None, message_id: str | None = None, actor: str | None = None,
           detail: str | None = None, event: str = "outbound") -> None:
    conn.execute(AUDIT.insert().values(
        at=now, account=account, event=event, decision=decision, category=category,
        rules=json.dumps([{"rule": f.rule, "severity": str(f.severity), "reason": f.reason, "excerpt": f.excerpt}
                          for f in findings]),
        evaluated=json.dumps(list(evaluated)), buyer=buyer, conversation_id=conversation_id, message_id=message_id,
        actor=actor, detail=detail,
    ))


def cancel_unsolicited(conn: Connection, *, account: str, buyer: str, source: str, actor: str,
                       now: datetime) -> int:
    """Cancel the buyer's pending unsolicited mail because they opted out; each one audited. Returns how many."""
    cancelled = store.cancel_unsolicited(conn, account, buyer, f"cancelled: buyer opted out ({source})")
    for outbox_id, message_id in cancelled:
        record(conn, account=account, now=now, decision="cancelled", category="unsolicited", buyer=buyer,
               message_id=message_id, actor=actor, detail=f"outbox {outbox_id}: buyer opted out")
    return len(cancelled)


def paused_until(conn: Connection, account: str, now: datetime) -> datetime | None:
    """The end of an account restriction in force now, else None (proactive mail waits for it)."""
    until = restricted_until(conn, account)
    return until if until is not None and now < until else None


def stale_eligibility(conn: Connection, account: str, category: str, recipients: tuple[str, ...],
                      now: datetime) -> str | None:
    """Why an unsolicited message queued earlier may never go out now, or None.

    Replies are never re-judged here: opt-out does not apply to them.
    """
    if category != "unsolicited":
        return None
    for rcpt in recipients:
        opted_out, dns = buyer_state(conn, account, base_alias(rcpt), now)
        if opted_out:
            return f"{base_alias(rcpt)} has opted out of unsolicited messages"
        if dns:
            return f"{base_alias(rcpt)} is on the Do-Not-Solicit list"
    return None


def may_send(conn: Connection, message_id: str) -> bool:
    """Is there a decision on record that lets this buyer-bound message out? The newest one counts."""
    row = conn.execute(select(AUDIT.c.decision).where(AUDIT.c.message_id == message_id, AUDIT.c.event.in_(
        ("outbound", "override"))).order_by(AUDIT.c.id.desc()).limit(1)).first()
    return row is not None and row[0] in ALLOWING


def audit_rows(conn: Connection, accounts: list[str], since: datetime | None, limit: int) -> list[dict[str, object]]:
    q = select(AUDIT).where(AUDIT.c.account.in_(accounts))
    if since is not None:
        q = q.where(AUDIT.c.at >= since)
    out = []
    for r in conn.execute(q.order_by(AUDIT.c.id).limit(limit)):
        out.append({
            "id": r.id, "at": store.utc(r.at).isoformat(timespec="seconds"), "account": r.account,  # type: ignore[union-attr]
            "event": r.event, "decision": r.decision, "category": r.category, "findings": json.loads(r.rules),
            "rules_evaluated": json.loads(r.evaluated), "buyer": r.buyer, "conversation_id": r.conversation_id,
            "message_id": r.message_id, "actor": r.actor, "detail": r.detail,
        })
    return out
