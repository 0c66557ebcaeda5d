"""Mail from mailbridge to staff: rendered from a template, signed, queued in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from bridge import store
from bridge.domain import compose, tokens
from bridge.services.account import AccountContext


def queue_staff_mail(conn: Connection, acct: AccountContext, template: str, variables: dict[str, Any],
                     now: datetime, *, purpose: str, to_addr: str | None = None, in_reply_to: str | None = None,
                     references: tuple[str, ...] = (), conversation_id: int | None = None) -> str:
    """Render ``template`` and queue it from mailbridge to staff (``to_addr``, else the staff address)."""
    s = acct.settings
    rendered = acct.templates.render(template, variables)
    message_id = compose.new_message_id(s.seller_address)
    out = compose.build_mail(
        account=s.name, origin=tokens.make_origin(acct.secret, s.name, message_id), message_id=message_id,
        date=now, from_name=f"mailbridge ({s.seller_name})", from_addr=s.seller_address,
        to_addr=to_addr or s.staff_address, subject=rendered.subject, text=rendered.text, in_reply_to=in_reply_to,
        references=references,
    )
    store.enqueue(conn, account=s.name, message_id=out.message_id, purpose=purpose, audience="staff",
                  envelope_from=out.envelope_from, recipients=out.recipients, subject=out.subject, raw=out.raw,
                  now=now, conversation_id=conversation_id)
    return message_id


def queue_staff_alert(conn: Connection, acct: AccountContext, title: str, body: str, now: datetime,
                      purpose: str = "staff_alert") -> str:
    """Queue a plain alert to the staff address (problems staff must know about)."""
    return queue_staff_mail(conn, acct, "staff_alert", {"title": title, "body": body, "account": acct.name}, now,
                            purpose=purpose)
