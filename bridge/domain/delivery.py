"""How the outbox paces what it sends: the order of the queue, the sending limits, throttle replies.

Pure: values in, values out, the time passed in. The outbox worker and
``mailbridge status`` ask these; the store only counts what was sent.

- **Order**: replies to buyers first (a person is waiting), then mail to staff,
  then proactive mail to buyers (feedback requests and the like), which can
  always wait. It matters when an account is held back by a limit.
- **Limits**: ``max_per_minute`` and ``max_per_day`` per account. Each is a
  bucket of that many tokens; a send takes one and it comes back when that
  send leaves the window (a minute, a day). The tokens are not kept anywhere:
  they are counted from the outbox's own ``sent_at`` records, so a restart,
  a crash or a second daemon taking over the account sees the same budget.
  Tokens that come back one window after use (a sliding window) are what the
  providers state ("30 messages per minute"): a bucket that refills at a rate
  would let twice the limit through in the minute across a refill.
- **Throttle replies**: a 4xx that says "slow down" is about the account, not
  the message: the whole account's queue pauses instead of each row going
  on its own exponential backoff (a retry storm the server answers with 5xx).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

from bridge.domain.policy import PROACTIVE

# --------------------------------------------------------------------------- order


class Priority(IntEnum):
    """The order of the queue: lower goes first (then the due time, then the row)."""

    BUYER_REPLY = 0      # a buyer is waiting for an answer staff already wrote
    STAFF = 1            # notifications, alerts and confirmations to the support team
    PROACTIVE = 2        # buyer mail nobody asked for yet: feedback requests, notices


def priority(audience: str, category: str | None) -> Priority:
    """Where a message goes in the queue, from who receives it and why we write (its ``category``)."""
    if audience == "staff":
        return Priority.STAFF
    if category in PROACTIVE:
        return Priority.PROACTIVE
    return Priority.BUYER_REPLY


#: The categories whose buyer mail is proactive, as plain strings (the outbox's column).
PROACTIVE_CATEGORIES: tuple[str, ...] = tuple(sorted(str(c) for c in PROACTIVE))


# --------------------------------------------------------------------------- limits

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class SendLimits:
    """Messages an account may send per minute and per day; None: no limit."""

    per_minute: int | None = None
    per_day: int | None = None

    @property
    def any(self) -> bool:
        return self.per_minute is not None or self.per_day is not None

    def describe(self) -> str:
        parts = [f"{n:,}/{unit}" for n, unit in ((self.per_minute, "min"), (self.per_day, "day")) if n is not None]
        return ", ".join(parts) or "none"


# The submission limits the providers document, for their submission hosts. Messages are
# counted (Microsoft counts recipients: mailbridge's mail has one recipient each).
#   Microsoft 365 / Exchange Online: 30 messages a minute, 10,000 recipients a day
#     (learn.microsoft.com, "Exchange Online limits", Sending limits).
#   Gmail: 500 a day for a gmail.com account, 2,000 a day for Google Workspace
#     (support.google.com/a/answer/166852, "Gmail sending limits in Google Workspace";
#     a trial Workspace account has 500); no per-minute figure is published.
_MICROSOFT = SendLimits(per_minute=30, per_day=10_000)
_GMAIL_CONSUMER = SendLimits(per_day=500)
_WORKSPACE = SendLimits(per_day=2_000)
_CONSUMER_GMAIL_DOMAINS = ("gmail.com", "googlemail.com")


def provider_limits(host: str, username: str) -> SendLimits:
    """The documented limits of a known submission host (none for any other host)."""
    host = host.strip().lower().rstrip(".")
    if host in ("smtp.office365.com", "smtp-mail.outlook.com"):
        return _MICROSOFT
    if host == "smtp.gmail.com":
        domain = username.rpartition("@")[2].strip().lower()
        return _GMAIL_CONSUMER if domain in _CONSUMER_GMAIL_DOMAINS else _WORKSPACE
    return SendLimits()


def effective_limits(per_minute: int | None, per_day: int | None, host: str, username: str) -> SendLimits:
    """The configured limits, each falling back to the provider's when not set; 0 means no limit."""
    known = provider_limits(host, username)

    def pick(configured: int | None, default: int | None) -> int | None:
        if configured is None:
            return default
        return configured or None

    return SendLimits(pick(per_minute, known.per_minute), pick(per_day, known.per_day))


@dataclass(frozen=True)
class WindowUse:
    """What was sent in one window ending now: how many, and when the send that frees the next token went.

    ``freeing_send``: once the count reaches the limit, the time of the send whose
    leaving the window brings the count below the limit again (the
    ``count - limit``-th oldest in the window, counting from 0); None otherwise.
    """

    count: int
    freeing_send: datetime | None = None


@dataclass(frozen=True)
class Budget:
    """How many messages may go now, and when more may go when none may now."""

    allowed: int | None          # None: no limit
    next_at: datetime | None     # when ``allowed`` is 0: the time a token comes back


def window_budget(limit: int | None, window: timedelta, use: WindowUse, now: datetime) -> Budget:
    """The tokens left in one window. Over the limit (a limit lowered, a clock set back) counts as none left."""
    if limit is None:
        return Budget(None, None)
    left = limit - use.count
    if left > 0:
        return Budget(left, None)
    if use.freeing_send is None:    # the caller did not look: try again in a window at the latest
        return Budget(0, now + window)
    return Budget(0, max(now, use.freeing_send + window))


def send_budget(limits: SendLimits, minute: WindowUse, day: WindowUse, now: datetime) -> Budget:
    """Both windows together: the smaller allowance, and the later time when none is left."""
    budgets = [window_budget(limits.per_minute, MINUTE, minute, now), window_budget(limits.per_day, DAY, day, now)]
    blocked = [b.next_at for b in budgets if b.allowed == 0 and b.next_at is not None]
    if blocked:
        return Budget(0, max(blocked))
    allowed = [b.allowed for b in budgets if b.allowed is not None]
    return Budget(min(allowed) if allowed else None, None)


def drain_seconds(queued: int, limits: SendLimits, minute: WindowUse, day: WindowUse, now: datetime) -> float | None:
    """About how long until ``queued`` messages have gone at the limits; None when no limit sets the pace.

    What the budget allows now goes at once; the rest of what the day still allows
    at the minute's pace; what is over the day's limit at the day's pace (that
    many a day). An estimate for people: sends are not spread evenly in fact.
    """
    if queued <= 0:
        return 0.0
    if not limits.any:
        return None
    budget = send_budget(limits, minute, day, now)
    start = max(0.0, (budget.next_at - now).total_seconds()) if budget.next_at is not None else 0.0
    day_left = max(0, limits.per_day - day.count) if limits.per_day is not None else queued
    within_day = min(queued, day_left)
    at_minute_pace = max(0, within_day - (budget.allowed or 0))
    seconds = start
    if limits.per_minute:
        seconds += at_minute_pace * MINUTE.total_seconds() / limits.per_minute
    over_day = queued - within_day
    if over_day and limits.per_day:
        seconds += over_day * DAY.total_seconds() / limits.per_day
    return seconds


# --------------------------------------------------------------------------- throttle replies

# RFC 5321 4.2: 421 closing the channel, 450/451 try later, 452 out of resources; the text
# tells a throttle apart from a full mailbox or a grey list. RFC 3463: 4.7.x is a
# security or policy status, which is how providers report rate limits (Microsoft
# "4.7.0 ... Too many connections", Gmail "4.7.28 ... unusual rate", "4.7.0 ... exceeded").
THROTTLE_CODES = frozenset({421, 450, 451, 452})
_THROTTLE_WORDS = re.compile(r"\brate|too many|exceeded|\bthrottl", re.IGNORECASE)
_ENHANCED = re.compile(r"^\s*(\d)\.(\d{1,3})\.(\d{1,3})\b")

# 452 4.5.3 "too many recipients" is about this transaction's recipient list, not the account's pace.
_TOO_MANY_RECIPIENTS = (4, 5, 3)


def is_throttle(code: int | None, message: str) -> bool:
    """Whether an SMTP reply says "you are sending too fast" (for the account), not "this message failed"."""
    if code not in THROTTLE_CODES:
        return False
    enhanced = _ENHANCED.match(message)
    status = tuple(int(g) for g in enhanced.groups()) if enhanced else None
    if status == _TOO_MANY_RECIPIENTS:
        return False
    if status is not None and status[:2] == (4, 7):
        return True
    return bool(_THROTTLE_WORDS.search(message))


# A first throttle pauses the account a minute (the providers' windows are a minute
# or more); each one in a row doubles it, up to half an hour.
THROTTLE_FIRST_SECONDS = 60.0
THROTTLE_MAX_SECONDS = 1800.0


def throttle_pause(in_a_row: int) -> float:
    """Seconds to pause an account after its ``in_a_row``-th throttle reply in a row (1 for the first)."""
    return min(THROTTLE_MAX_SECONDS, THROTTLE_FIRST_SECONDS * 2.0 ** max(0, in_a_row - 1))
