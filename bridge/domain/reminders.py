"""Response-time reminders and "no response needed", as pure rules (values in, values out, clock passed in).

Marketplaces measure how fast a seller answers a buyer: Amazon counts 24 hours
from the buyer's message, weekends and holidays included (docs/marketplaces.md).
mailbridge reminds the support team when a buyer message is still unanswered
after configurable thresholds (12 and 20 hours by default):

- the clock of a conversation starts at its oldest unanswered buyer message,
  at the time the buyer sent it (:func:`clock_start`); later buyer messages
  do not start a second clock, since one staff reply on the thread answers
  them all and the oldest one's deadline comes first;
- one reminder per threshold and clock; a threshold whose time has come while a
  later one has come too is *overtaken* (one reminder, the most urgent, not two
  at once, e.g. after the daemon was down);
- a reminder is not sent once the conversation is answered (a staff reply
  went to the buyer) or closed, nor a whole 24 hours after it was due
  (:func:`decide`).

A staff reply whose whole text is one of the account's "no response needed"
phrases closes the conversation without writing to the buyer
(:func:`is_no_response_needed`), like the "No response needed" button of
Amazon's Seller Central.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Iterable

#: What marketplaces count: a buyer message should be answered within 24 hours, weekends included.
RESPONSE_WINDOW = timedelta(hours=24)
#: The default thresholds, in hours after the buyer's message.
DEFAULT_AFTER_HOURS: tuple[int, ...] = (12, 20)
#: The default phrases a staff reply may consist of to close a conversation without an answer.
DEFAULT_NO_RESPONSE_PHRASES: tuple[str, ...] = ("no response needed", "no reply needed", "no response required")


def clock_start(sent_at: datetime | None, received_at: datetime) -> datetime:
    """When the buyer's 24 hours began: when the buyer sent it (its Date header), never later than we received it.

    A Date in the future (a skewed clock) counts as the time we received the mail; a Date without
    a zone ("-0000", RFC 5322 3.3) is taken as UTC.
    """
    if sent_at is not None and sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=timezone.utc)
    if sent_at is None or sent_at > received_at:
        return received_at
    return sent_at


def deadline(start: datetime) -> datetime:
    return start + RESPONSE_WINDOW


def thresholds(after_hours: Iterable[int]) -> tuple[int, ...]:
    """The configured thresholds, each once, in order; those outside the 24 hours are left out."""
    return tuple(sorted({h for h in after_hours if 0 < h < RESPONSE_WINDOW.total_seconds() // 3600}))


def schedule(start: datetime, after_hours: Iterable[int], now: datetime) -> tuple[tuple[int, datetime], ...]:
    """The reminders of a clock started at ``start``: (hours, due time) for each threshold.

    Nothing when the 24 hours are already over when the message is recorded (the
    staff notification itself then says it is late; a reminder would add nothing).
    """
    if now >= deadline(start):
        return ()
    return tuple((h, start + timedelta(hours=h)) for h in thresholds(after_hours))


class Action(str, Enum):
    SEND = "sent"              # remind staff now
    WAIT = "scheduled"         # not due yet
    ANSWERED = "answered"      # a staff reply went to the buyer: no reminder
    CLOSED = "closed"          # the conversation was closed (e.g. "no response needed"): no reminder
    OVERTAKEN = "overtaken"    # a later threshold is due as well: only that one is sent
    EXPIRED = "expired"        # due a whole window ago (reminders were off, or no daemon ran): too late to help


@dataclass(frozen=True)
class Pending:
    """What is known about one scheduled reminder when the timer looks at it."""

    due_at: datetime
    answered: bool            # a staff reply to the buyer was queued or sent after the buyer's message
    closed: bool              # the conversation is closed
    later_due: bool = False   # a later threshold of the same clock is due as well


def decide(p: Pending, now: datetime) -> Action:
    """What to do with one scheduled reminder at ``now``."""
    if p.closed:
        return Action.CLOSED
    if p.answered:
        return Action.ANSWERED
    if now < p.due_at:
        return Action.WAIT
    if now >= p.due_at + RESPONSE_WINDOW:
        return Action.EXPIRED
    if p.later_due:
        return Action.OVERTAKEN
    return Action.SEND


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def waited(start: datetime, now: datetime) -> str:
    """How long the buyer has been waiting, ``12 h 03 min``."""
    return _span(max(now - start, timedelta(0)))


def time_left(start: datetime, now: datetime) -> str:
    """How much of the 24 hours is left, as staff read it: ``3 h 59 min left`` or ``overdue by 1 h 05 min``."""
    return describe_left(deadline(start) - now)


def describe_left(left: timedelta) -> str:
    """``left`` of a deadline (negative: past it) as staff read it."""
    if left > timedelta(0):
        return f"{_span(left)} left"
    return f"overdue by {_span(-left)}"


def _normalised(text: str) -> str:
    """Lower case, punctuation and symbols (., !, emoji, dashes) as spaces, runs of spaces as one."""
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text.casefold())
    return " ".join(kept.split())


def normalised_phrase(phrase: str) -> str:
    """A configured phrase as it is compared (for the config check: empty means it can never match)."""
    return _normalised(phrase)


def is_no_response_needed(staff_text: str, phrases: Iterable[str]) -> bool:
    """True when the staff reply's whole text (quote and signature already cut) is one of ``phrases``,
    ignoring case, punctuation and spacing: "No response needed.", "no-response needed!"."""
    said = _normalised(staff_text)
    return bool(said) and any(said == _normalised(p) for p in phrases)
