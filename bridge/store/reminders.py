"""Response-time reminders: one row per (buyer message, threshold), the timer's due query, and what status shows.

A reminder row turns ``sent`` in the transaction that queues its mail, by a
conditional UPDATE (``WHERE state = 'scheduled'``): two timers, or one that
died after committing, never send a threshold twice. "Answered" is read from
the outbox at the moment it matters: a staff reply to the buyer queued, being
sent, sent (or of unknown outcome after a crash) after the buyer's message was
recorded. A held, blocked, failed or cancelled reply did not reach the buyer
and answers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, case, exists, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bridge.store.dialects import skip_locked
from bridge.store.models import BUYER, CONV, MESSAGE, OUTBOX, REMINDER
from bridge.store.times import iso, utc

REMINDER_STATES = ("scheduled", "sent", "answered", "closed", "overtaken", "expired")
#: Outbox states of a staff reply that count as an answer to the buyer.
ANSWERING_STATES = ("queued", "sending", "sent", "unknown")
BUYER_REPLY = "buyer_reply"


def _replies_since(*states: str) -> ColumnElement[bool]:
    """Outbox rows of the reminder's conversation: staff replies to the buyer in ``states``, made after the
    buyer message was recorded (correlated with the REMINDER row of the enclosing query)."""
    return and_(OUTBOX.c.conversation_id == REMINDER.c.conversation_id, OUTBOX.c.purpose == BUYER_REPLY,
                OUTBOX.c.state.in_(states), OUTBOX.c.created_at >= REMINDER.c.received_at)


_ANSWERED = exists().where(_replies_since(*ANSWERING_STATES))
_HELD = select(func.count()).select_from(OUTBOX).where(_replies_since("held")).scalar_subquery()
_LATER = REMINDER.alias("later")
_LATER_DUE = exists().where(_LATER.c.message_row == REMINDER.c.message_row,
                            _LATER.c.after_hours > REMINDER.c.after_hours, _LATER.c.state == "scheduled",
                            _LATER.c.due_at <= bindparam("now", type_=REMINDER.c.due_at.type))

# The timer's query, run every tick: the index ix_reminder_due finds the due rows, and only for
# those are the conversation and its replies looked at.
_DUE = (select(REMINDER.c.id, REMINDER.c.conversation_id, REMINDER.c.message_row, REMINDER.c.after_hours,
               REMINDER.c.started_at, REMINDER.c.received_at, REMINDER.c.due_at, _ANSWERED.label("answered"),
               (CONV.c.status != "open").label("closed"), _LATER_DUE.label("later_due"), _HELD.label("held"))
        .join(CONV, CONV.c.id == REMINDER.c.conversation_id)
        .where(REMINDER.c.account == bindparam("account"), REMINDER.c.state == "scheduled",
               REMINDER.c.due_at <= bindparam("now", type_=REMINDER.c.due_at.type))
        .order_by(REMINDER.c.due_at, REMINDER.c.id).limit(bindparam("limit")))
_FINISH = update(REMINDER).where(REMINDER.c.id == bindparam("reminder_id"), REMINDER.c.state == "scheduled").values(
    state=bindparam("state"), reason=bindparam("reason"), outbox_message_id=bindparam("outbox_message_id"),
    updated_at=bindparam("now", type_=REMINDER.c.updated_at.type))


@dataclass(frozen=True)
class DueReminder:
    id: int
    conversation_id: int
    message_row: int
    after_hours: int
    started_at: datetime
    received_at: datetime
    due_at: datetime
    answered: bool
    closed: bool
    later_due: bool
    held: int           # staff replies held for an operator since the buyer's message (not answers)


# Asked for every buyer message ingest forwards: built once (a statement built per call costs
# more than running it).
_CLOCK_RUNNING = select(REMINDER.c.id).where(
    REMINDER.c.conversation_id == bindparam("conversation_id"), REMINDER.c.state == "scheduled",
    REMINDER.c.deadline_at > bindparam("now", type_=REMINDER.c.deadline_at.type), ~_ANSWERED).limit(1)


def clock_running(conn: Connection, conversation_id: int, now: datetime) -> bool:
    """Whether the conversation already has reminders waiting for an unanswered buyer message."""
    return conn.execute(_CLOCK_RUNNING, {"conversation_id": conversation_id, "now": now}).first() is not None


def schedule_reminders(conn: Connection, *, account: str, conversation_id: int, message_row: int,
                       started_at: datetime, received_at: datetime, deadline_at: datetime,
                       plan: tuple[tuple[int, datetime], ...], now: datetime) -> int:
    """One row per (hours, due time) of ``plan`` for the buyer message ``message_row``; returns how many."""
    if not plan:
        return 0
    conn.execute(REMINDER.insert(), [dict(
        account=account, conversation_id=conversation_id, message_row=message_row, after_hours=hours,
        started_at=started_at, received_at=received_at, deadline_at=deadline_at, due_at=due, state="scheduled",
        created_at=now, updated_at=now) for hours, due in plan])
    return len(plan)


def due_reminders(conn: Connection, account: str, now: datetime, limit: int) -> list[DueReminder]:
    """Scheduled reminders whose time has come, most overdue first, with what decides them.

    On PostgreSQL, rows another transaction has read this way are skipped (``FOR UPDATE SKIP LOCKED``).
    """
    # PostgreSQL: the rows a timer reads stay locked until its transaction ends, and another daemon's
    # timer skips them instead of reading them too and then waiting on its conditional update until
    # the first commits (only to find them taken). Only the reminder rows: the conversation stays free.
    query = skip_locked(_DUE, conn, of=REMINDER)
    return [DueReminder(r.id, r.conversation_id, r.message_row, r.after_hours, utc(r.started_at),  # type: ignore[arg-type]
                        utc(r.received_at), utc(r.due_at), bool(r.answered), bool(r.closed),  # type: ignore[arg-type]
                        bool(r.later_due), int(r.held or 0))
            for r in conn.execute(query, {"account": account, "now": now, "limit": limit})]


def finish_reminder(conn: Connection, reminder_id: int, *, state: str, now: datetime, reason: str | None = None,
                    outbox_message_id: str | None = None) -> bool:
    """Move a scheduled reminder to ``state``; False when it is not scheduled any more (another timer took it)."""
    result = conn.execute(_FINISH, {"reminder_id": reminder_id, "state": state, "reason": reason,
                                    "outbox_message_id": outbox_message_id, "now": now})
    return result.rowcount == 1


def stop_reminders(conn: Connection, conversation_id: int, *, state: str, reason: str, now: datetime) -> int:
    """Every scheduled reminder of the conversation to ``state`` (e.g. closed); returns how many."""
    result = conn.execute(update(REMINDER).where(
        REMINDER.c.conversation_id == conversation_id, REMINDER.c.state == "scheduled").values(
        state=state, reason=reason, updated_at=now))
    return int(result.rowcount)


def unanswered_since(conn: Connection, conversation_id: int,
                     received_at: datetime) -> tuple[int, int | None, str, str]:
    """(buyer messages recorded since ``received_at``, and the row id, subject and text of the newest)."""
    rows = conn.execute(select(MESSAGE.c.id, MESSAGE.c.subject, MESSAGE.c.text).where(
        MESSAGE.c.conversation_id == conversation_id, MESSAGE.c.kind == "buyer", MESSAGE.c.duplicate_of.is_(None),
        MESSAGE.c.received_at >= received_at).order_by(MESSAGE.c.id.desc())).all()
    if not rows:
        return 0, None, "", ""
    return len(rows), int(rows[0][0]), rows[0][1] or "", rows[0][2] or ""


def reminder_counts(conn: Connection, account: str) -> dict[str, int]:
    counts = {s: 0 for s in REMINDER_STATES}
    counts.update({s: int(n) for s, n in conn.execute(
        select(REMINDER.c.state, func.count()).where(REMINDER.c.account == account).group_by(REMINDER.c.state))})
    return counts


def awaiting_answer(conn: Connection, account: str, now: datetime, since: datetime) -> list[dict[str, object]]:
    """Open conversations whose buyer is still waiting for an answer, the clock closest to running out first.

    Reads the reminder rows whose 24 hours end after ``since`` (the index ix_reminder_deadline), so its
    work grows with the recent clocks, not with all conversations.
    """
    q = (select(REMINDER.c.conversation_id, func.min(REMINDER.c.started_at), func.min(REMINDER.c.deadline_at),
                func.sum(case((REMINDER.c.state == "sent", 1), else_=0)), BUYER.c.alias, CONV.c.subject)
         .join(CONV, CONV.c.id == REMINDER.c.conversation_id).join(BUYER, BUYER.c.id == CONV.c.buyer_id)
         .where(REMINDER.c.account == account, REMINDER.c.deadline_at > since,
                REMINDER.c.state.in_(("scheduled", "sent", "overtaken")), CONV.c.status == "open", ~_ANSWERED)
         .group_by(REMINDER.c.conversation_id, BUYER.c.alias, CONV.c.subject)
         .order_by(func.min(REMINDER.c.deadline_at)))
    out: list[dict[str, object]] = []
    for conv_id, started, deadline, reminded, alias, subject in conn.execute(q):
        deadline = utc(deadline)
        out.append({"conversation": f"MB-{conv_id}", "buyer": alias, "subject": subject,
                    "since": iso(utc(started)), "deadline": iso(deadline), "reminders_sent": int(reminded or 0),
                    "seconds_left": int((deadline - now).total_seconds())})  # type: ignore[operator]
    return out
