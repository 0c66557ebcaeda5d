"""Mail from mailbridge to staff: rendered from a template, signed, queued in the same transaction.

Every template a service renders goes through :func:`render`: when an admin's
edit broke a template and the adapter stood in its last good version
(``Rendered.broken``), staff are told here, once per broken file version and
account. The alert's outbox row carries a dedupe key naming that version, so
"once" holds across batches, restarts and daemons, and a batch that rolls back
takes its alert with it (the next attempt queues it again).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from bridge import store
from bridge.adapters.templates import BrokenTemplate, Rendered, TemplateError
from bridge.domain import compose, tokens
from bridge.services.account import AccountContext

log = logging.getLogger(__name__)


def render(conn: Connection, acct: AccountContext, template: str, variables: dict[str, Any], now: datetime,
           *, lang: str | None = None) -> Rendered:
    """Render ``template`` (in ``lang`` with English fallback, when given) for ``acct``; if a broken edit was
    replaced by the last good version, queue the alert about it in ``conn``'s transaction.
    Raises TemplateError when there is no good version to use."""
    rendered = (acct.templates.render(template, variables) if lang is None
                else acct.templates.render_localized(template, lang, variables))
    if rendered.broken:
        alert_broken_templates(conn, acct, rendered.broken, now)
    return rendered


def queue_staff_mail(conn: Connection, acct: AccountContext, template: str, variables: dict[str, Any],
                     now: datetime, *, purpose: str, to_addr: str | None = None, in_reply_to: str | None = None,
                     references: tuple[str, ...] = (), conversation_id: int | None = None,
                     reply_to: str | None = None, source_message_id: int | None = None,
                     dedupe_key: str | None = None, message_id: str | None = None) -> str:
    """Render ``template`` and queue it from mailbridge to staff (``to_addr``, else the staff address).

    ``reply_to``: where staff replies go (a conversation's signed reply address, so Reply answers the
    buyer); ``source_message_id``: the recorded message the mail is about (a reply to it quotes that one);
    ``dedupe_key``: a unique key of the outbox row, so the same mail is never queued twice;
    ``message_id``: the Message-ID, when the caller fixed it already (else a new one). Returns the Message-ID."""
    rendered = render(conn, acct, template, variables, now)
    return _queue(conn, acct, rendered.subject, rendered.text, now, purpose=purpose, to_addr=to_addr,
                  in_reply_to=in_reply_to, references=references, conversation_id=conversation_id,
                  reply_to=reply_to, source_message_id=source_message_id, dedupe_key=dedupe_key,
                  message_id=message_id)


def _queue(conn: Connection, acct: AccountContext, subject: str, text: str, now: datetime, *, purpose: str,
           to_addr: str | None = None, in_reply_to: str | None = None, references: tuple[str, ...] = (),
           conversation_id: int | None = None, dedupe_key: str | None = None, reply_to: str | None = None,
           source_message_id: int | None = None, message_id: str | None = None) -> str:
    s = acct.settings
    message_id = message_id or compose.new_message_id(s.seller_address)
    out = compose.build_mail(
        account=s.name, origin=tokens.make_origin(acct.secret, s.name, message_id), message_id=message_id,
        date=now, from_name=f"mailbridge ({s.seller_name})", from_addr=s.seller_address,
        to_addr=to_addr or s.staff_address, subject=subject, text=text, in_reply_to=in_reply_to,
        references=references, reply_to=reply_to,
    )
    store.enqueue(conn, account=s.name, message_id=out.message_id, purpose=purpose, audience="staff",
                  envelope_from=out.envelope_from, recipients=out.recipients, subject=out.subject, raw=out.raw,
                  now=now, conversation_id=conversation_id, dedupe_key=dedupe_key,
                  source_message_id=source_message_id)
    return message_id


def queue_staff_alert(conn: Connection, acct: AccountContext, title: str, body: str, now: datetime,
                      purpose: str = "staff_alert") -> str:
    """Queue a plain alert to the staff address (problems staff must know about)."""
    return queue_staff_mail(conn, acct, "staff_alert", {"title": title, "body": body, "account": acct.name}, now,
                            purpose=purpose)


def alert_broken_templates(conn: Connection, acct: AccountContext, broken: tuple[BrokenTemplate, ...],
                           now: datetime) -> None:
    """Tell staff about each broken template file version, once per account.

    The alert is itself rendered from ``staff_alert``, which may be the broken
    one. So this never calls :func:`render`: a last good ``staff_alert`` that
    stands in for a broken one adds that file to the work list (a loop over a
    list, never recursion), and without any good ``staff_alert`` the alert is
    written from the built-in text below, so staff still hear of it.
    """
    todo = list(broken)
    done: set[str] = set()
    while todo:
        item = todo.pop(0)
        key = f"template-broken:{acct.name}:{item.file}:{item.version}"
        if key in done or store.dedupe_key_used(conn, key):
            continue
        done.add(key)
        title = f"Template {item.file.rpartition('/')[2]} is broken; the last good version is in use"[:150]
        body = _broken_body(item)
        try:
            rendered = acct.templates.render("staff_alert", {"title": title, "body": body, "account": acct.name})
            subject, text = rendered.subject, rendered.text
            todo.extend(rendered.broken)
        except TemplateError:
            subject, text = f"[mailbridge] {title}", f"{title}\n\n{body}\n\nAccount: {acct.name}\n"
        log.error("account %s: template %s (version %s) is broken, the last good version is in use: %s",
                  acct.name, item.file, item.version, item.error)
        try:
            with conn.begin_nested():
                _queue(conn, acct, subject, text, now, purpose="staff_alert", dedupe_key=key)
        except IntegrityError:   # another daemon queued the same alert a moment ago
            pass


def _broken_body(item: BrokenTemplate) -> str:
    return "\n".join([
        "An edited template fails, so mailbridge keeps using the version of it that last worked.",
        "Mail goes on as before, with the old wording; nothing half-rendered is sent.",
        "",
        f"File:    {item.file}",
        f"Version: {item.version} (sha256 of the file; you are told once per version)",
        f"Error:   {item.error}",
        "",
        "What to do: fix the file (`mailbridge templates lint` shows every problem with its line);",
        "the fixed version is used from the next mail on, without a restart.",
    ])
