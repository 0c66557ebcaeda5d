"""Response-time reminders to staff, and "no response needed" (rules: bridge.domain.reminders).

- :func:`schedule_for_message` runs in the ingest transaction of a buyer message
  forwarded to staff: it starts the conversation's clock (one reminder row per
  threshold) unless one is already running for an earlier unanswered message.
- :func:`send_due` is what the timer calls: it reads only the due rows (an
  index on the due time), decides each one again against the data of that
  moment (answered? closed?) and queues the reminder to the staff address, in
  the conversation's staff thread (In-Reply-To/References of its staff
  notifications), with the conversation's signed Reply-To so Reply answers the
  buyer. The row turns ``sent`` in the same transaction that queues the mail.
- :func:`close_without_answer` is the relay's branch for a staff reply that
  says only "no response needed": the conversation is closed, nothing is
  written to the buyer, the reminders stop, the audit log records it and the
  staff member gets a short confirmation.

What answers a buyer: a staff reply queued for, being sent to or sent to the
buyer after their message. A reply held for an operator (attachment limits) or
blocked by the guard did not reach the buyer, so the reminders go on and say so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.adapters.templates import TemplateError
from bridge.domain import compose, reminders, tokens
from bridge.domain.parse import ParsedMail
from bridge.domain.threads import base_alias
from bridge.services import guard, notify
from bridge.services.account import AccountContext

log = logging.getLogger(__name__)

PURPOSE = "response_reminder"
#: Batches of due reminders handled in one tick at most (a batch is one transaction).
MAX_BATCHES = 50


def _utc_minute(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def schedule_for_message(conn: Connection, acct: AccountContext, *, conversation_id: int, message_row: int,
                         sent_at: datetime | None, now: datetime, clock_may_run: bool = True) -> int:
    """Start the conversation's clock for a buyer message just forwarded to staff; returns reminders made.

    ``clock_may_run=False``: the caller knows the conversation has no reminders yet (ingest opened it
    in the batch being recorded and started no clock for it), so the database is not asked.
    """
    after_hours = acct.settings.reminders.after_hours
    if not after_hours:
        return 0
    start = reminders.clock_start(sent_at, now)
    plan = reminders.schedule(start, after_hours, now)
    # The plan first: it is pure, and when it is empty (the buyer's 24 hours are over, as for mail
    # read after a downtime) whether a clock runs does not matter. Ingest asks this for every buyer message.
    if not plan or (clock_may_run and store.clock_running(conn, conversation_id, now)):
        return 0
    return store.schedule_reminders(
        conn, account=acct.name, conversation_id=conversation_id, message_row=message_row, started_at=start,
        received_at=now, deadline_at=reminders.deadline(start), plan=plan, now=now)


@dataclass
class ReminderResult:
    sent: int = 0
    answered: int = 0
    closed: int = 0
    overtaken: int = 0
    expired: int = 0


def send_due(engine: Engine, acct: AccountContext, now: datetime, limit: int) -> ReminderResult:
    """Handle every reminder of the account due at ``now``, ``limit`` per transaction."""
    result = ReminderResult()
    for _ in range(MAX_BATCHES):
        with engine.begin() as conn:
            due = store.due_reminders(conn, acct.name, now, limit)
            for item in due:
                action = reminders.decide(reminders.Pending(due_at=item.due_at, answered=item.answered,
                                                            closed=item.closed, later_due=item.later_due), now)
                if action is not reminders.Action.WAIT and _handle(conn, acct, item, action, now):
                    # The result's fields are named after the states the rows move to.
                    setattr(result, action.value, getattr(result, action.value) + 1)
        if len(due) < limit:
            break
    return result


_REASONS = {
    reminders.Action.ANSWERED: "a staff reply went to the buyer first",
    reminders.Action.CLOSED: "the conversation was closed",
    reminders.Action.OVERTAKEN: "a later reminder was due as well and went instead",
    reminders.Action.EXPIRED: "due more than 24 hours ago (reminders were off or mailbridge was not running)",
}


def _handle(conn: Connection, acct: AccountContext, item: store.DueReminder, action: reminders.Action,
            now: datetime) -> bool:
    """Record the decision (a conditional update: False when another timer got there first); queue a reminder."""
    if action is not reminders.Action.SEND:
        return store.finish_reminder(conn, item.id, state=action.value, now=now, reason=_REASONS[action])
    message_id = compose.new_message_id(acct.settings.seller_address)
    if not store.finish_reminder(conn, item.id, state="sent", now=now, outbox_message_id=message_id):
        return False
    _queue_reminder(conn, acct, item, message_id, now)
    log.info("account %s: conversation MB-%d unanswered for %d h: staff reminded <%s>", acct.name,
             item.conversation_id, item.after_hours, message_id)
    return True


def _queue_reminder(conn: Connection, acct: AccountContext, item: store.DueReminder, message_id: str,
                    now: datetime) -> None:
    s = acct.settings
    conv = store.conversation_info(conn, s.name, item.conversation_id)
    assert conv is not None, "a reminder's conversation is a foreign key"
    count, newest_row, subject, text = store.unanswered_since(conn, conv.id, item.received_at)
    context = {
        "marker": compose.MARKER, "tag": f"MB-{conv.id}", "subject": subject or conv.subject,
        "buyer_name": conv.buyer_name, "buyer_alias": conv.buyer_alias, "order_id": conv.order_id,
        "text": (text or "(the message has no text)").strip(), "unanswered_messages": max(count, 1),
        "after_hours": item.after_hours, "waiting": reminders.waited(item.started_at, now),
        "time_left": reminders.time_left(item.started_at, now),
        "deadline": _utc_minute(reminders.deadline(item.started_at)), "held_replies": item.held,
        "no_response_phrase": s.reminders.no_response_phrases[0] if s.reminders.no_response_phrases else None,
        "account": s.name,
    }
    reply_to = tokens.reply_address(s.reply_address, tokens.make_reply_token(acct.secret, s.name, conv.id))
    title = f"Buyer waiting {context['waiting']}, {context['time_left']}: {context['subject']} [MB-{conv.id}]"
    _queue_or_alert(
        conn, acct, "response_reminder", context, now, title[:200],
        f"{context['buyer_name'] or 'The buyer'} is waiting for an answer ({context['time_left']} of the "
        f"24 hours the marketplace counts). They wrote:\n\n{context['text']}\n\nReply to this email to answer.",
        purpose=PURPOSE, message_id=message_id, in_reply_to=conv.staff_last_id,
        references=tuple(dict.fromkeys(i for i in (conv.staff_root_id, conv.staff_last_id) if i)),
        conversation_id=conv.id, reply_to=reply_to, source_message_id=newest_row or item.message_row,
        dedupe_key=f"reminder:{s.name}:{item.id}")


def _queue_or_alert(conn: Connection, acct: AccountContext, template: str, context: dict[str, Any], now: datetime,
                    title: str, body: str, **queue: Any) -> None:
    """Queue staff mail from ``template``; where the templates folder has no usable version of it (an
    admin's folder copied before it existed), from ``staff_alert`` with ``title`` and ``body`` instead,
    so staff still hear of it and ingest is not held up."""
    try:
        notify.queue_staff_mail(conn, acct, template, context, now, **queue)
    except TemplateError as exc:
        log.warning("account %s: template %s cannot be used (%s); sent as a staff_alert instead "
                    "(`mailbridge templates lint` lists what the templates folder lacks)", acct.name, template, exc)
        notify.queue_staff_mail(conn, acct, "staff_alert", {"title": title, "body": body, "account": acct.name},
                                now, **queue)


# --------------------------------------------------------------------------- no response needed


def is_no_response_needed(acct: AccountContext, staff_text: str) -> bool:
    return reminders.is_no_response_needed(staff_text, acct.settings.reminders.no_response_phrases)


def close_without_answer(conn: Connection, acct: AccountContext, conv: store.ConversationInfo, mail: ParsedMail,
                         staff_text: str, dedupe_key: str, now: datetime) -> None:
    """Close the conversation for a staff reply that says only "no response needed": nothing to the buyer.

    ``dedupe_key``: the staff reply's relay key, carried by the confirmation, so the same reply ingested
    again (a copy, a resync) is recognised and confirmed once."""
    s = acct.settings
    store.close_conversation(conn, conv.id)
    stopped = store.stop_reminders(conn, conv.id, state="closed", now=now,
                                   reason=f"no response needed ({mail.from_addr})")
    guard.record(conn, account=s.name, now=now, event="conversation", decision="closed", category=None,
                 buyer=base_alias(conv.buyer_alias), conversation_id=conv.id, actor=mail.from_addr,
                 detail=f"no response needed: staff reply <{mail.message_id}>; nothing was sent to the buyer")
    _queue_or_alert(conn, acct, "conversation_closed", {
        "tag": f"MB-{conv.id}", "subject": conv.subject, "buyer_name": conv.buyer_name, "order_id": conv.order_id,
        "staff_text": staff_text.strip(), "closed": _utc_minute(now), "account": s.name,
    }, now, f"Closed, nothing sent to the buyer: {conv.subject} [MB-{conv.id}]"[:200],
        "You answered only that no response is needed: the conversation is closed, nothing was sent to the "
        "buyer and no more reminders come for it.",
        purpose="conversation_closed", to_addr=mail.from_addr, in_reply_to=mail.message_id,
        references=tuple(i for i in (mail.message_id,) if i), conversation_id=conv.id, dedupe_key=dedupe_key)
    log.info("account %s: conversation MB-%d closed by %s: no response needed (%d reminder(s) stopped)",
             s.name, conv.id, mail.from_addr, stopped)
