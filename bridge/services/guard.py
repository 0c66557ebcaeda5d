"""The gate every buyer-bound email passes: policy decision + audit record (thin shell over bridge.domain.policy).

``bridge.domain.policy`` decides (pure). This module builds its context from the
database (opt-out, Do-Not-Solicit, account restriction), turns the settings
into a ``PolicyConfig``, and writes the decision to the append-only audit log
in the caller's transaction, so a message and the decision that let it out
commit together. The outbox then refuses to send a buyer anything without
an allowing decision for that exact Message-ID (``may_send``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from bridge import store
from bridge.config import PolicySettings, RelaySettings
from bridge.domain import policy
from bridge.domain.threads import base_alias

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


def buyer_state(conn: Connection, account: str, alias: str, now: datetime) -> tuple[bool, bool]:
    """(opted out, under Do-Not-Solicit) for a buyer alias, at the time of the call."""
    state = store.buyer_contact_state(conn, account, alias)
    if state is None:
        return False, False
    dns_until = state.do_not_solicit_until
    return state.opted_out_at is not None, dns_until is not None and dns_until > now


def check(conn: Connection, *, account: str, draft: policy.Draft, buyer_alias: str, buyer_original_text: str | None,
          now: datetime, config: policy.PolicyConfig, buyer_message_at: datetime | None = None,
          order_completed_at: datetime | None = None) -> policy.Decision:
    """``buyer_message_at``: when the buyer wrote the message answered (for a marketplace's reply window);
    ``order_completed_at``: when the order a proactive message is about was completed (its window)."""
    opted_out, dns = buyer_state(conn, account, base_alias(buyer_alias), now)
    ctx = policy.PolicyContext(
        seller_address=draft.from_addr, buyer_alias=buyer_alias, now=now, buyer_opted_out=opted_out,
        buyer_do_not_solicit=dns, account_restricted_until=store.restricted_until(conn, account),
        buyer_original_text=buyer_original_text, buyer_message_at=buyer_message_at,
        order_completed_at=order_completed_at,
    )
    return policy.check(draft, ctx, config)


def record(conn: Connection, *, account: str, now: datetime, decision: str, category: str | None,
           findings: tuple[policy.Finding, ...] = (), evaluated: tuple[str, ...] = (), buyer: str | None = None,
           conversation_id: int | None = None, message_id: str | None = None, actor: str | None = None,
           detail: str | None = None, event: str = "outbound") -> None:
    store.record_audit(
        conn, account=account, now=now, event=event, decision=decision, category=category,
        findings=[{"rule": f.rule, "severity": str(f.severity), "reason": f.reason, "excerpt": f.excerpt}
                  for f in findings],
        evaluated=evaluated, buyer=buyer, conversation_id=conversation_id, message_id=message_id,
        actor=actor, detail=detail,
    )


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
    until = store.restricted_until(conn, account)
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
    return store.latest_send_decision(conn, message_id) in ALLOWING


def audit_rows(conn: Connection, accounts: list[str], since: datetime | None, limit: int) -> list[store.AuditRow]:
    """The audit log for ``mailbridge audit``; kept here for its callers, the store reads it."""
    return store.audit_rows(conn, accounts, since, limit)
