"""Feedback requests: who may be asked, and when (pure: values in, values out, the clock passed in).

The marketplace's window is a hard rule, not a setting (docs/marketplaces.md,
"Feedback and review requests"): a request goes out from 5 days after delivery
to 30 days after it; when only an estimated delivery range is known, from 5
days after its earliest date to 30 days after its latest. Outside it nothing
is sent.

Inside the window the account's :class:`Schedule` places the request:
``days_after`` the delivery (else the earliest estimated date), then the next
local time the send window and send days allow, in the account's time zone
(``zoneinfo``; a window start the clocks jump over moves to the first instant
after the jump, one they repeat counts its first occurrence).

:func:`assess` runs the named exclusion rules of :data:`RULES` in order; each
hit is an :class:`Exclusion` saying why, and until when if it ends by itself
(a Do-Not-Solicit entry with an expiry, a recent conversation). The result is
an :class:`Assessment`: the exclusions, and the due time when the request may
still go out. The same function decides when a request is scheduled and again
at send time, against the data of that moment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.domain.orders import FINAL_STATUSES, OrderFacts

#: The marketplace's window, counted from the delivery (docs/marketplaces.md). Never a setting.
WINDOW_OPENS = timedelta(days=5)
WINDOW_CLOSES = timedelta(days=30)

#: The safe daily cap when none is configured: Amazon allows about 5x average daily orders + 600
#: proactive messages a day; seller tools keep to 4x + 600 (docs/marketplaces.md).
CAP_ORDERS_FACTOR = 4
CAP_BASE = 600
CAP_AVERAGE_DAYS = 30

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")     # datetime.weekday() order
ENDED_STATUSES = tuple(sorted(FINAL_STATUSES))

_WINDOW_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
_MINUTES_PER_DAY = 24 * 60


# --------------------------------------------------------------------------- values in


@dataclass(frozen=True, kw_only=True)
class BuyerFacts:
    """What the buyer asked for and did, as stored."""

    opted_out: bool = False
    do_not_solicit_until: datetime | None = None
    last_message_at: datetime | None = None      # the buyer's newest message to this account


@dataclass(frozen=True)
class SendWindow:
    """Local minutes of the day ``[start, end)`` a request may go out; ``00:00-24:00`` is any time."""

    start: int = 9 * 60
    end: int = 18 * 60

    @classmethod
    def parse(cls, text: str) -> SendWindow:
        """``"09:00-18:00"``; raises ValueError saying what is wrong."""
        m = _WINDOW_RE.fullmatch(text)
        if m is None:
            raise ValueError('expected "HH:MM-HH:MM" such as "09:00-18:00" ("00:00-24:00": any time)')
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ValueError("hours run from 00 to 23 (24:00 only as the end), minutes from 00 to 59")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            raise ValueError("the window must end after it starts on the same day")
        return cls(start, end)

    @property
    def any_time(self) -> bool:
        return self.start == 0 and self.end == _MINUTES_PER_DAY

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """An account's ``[accounts.feedback]`` settings, as the rules read them."""

    time_zone: str                               # IANA name (the marketplace's unless configured)
    days_after: int = 7
    window: SendWindow = SendWindow()
    send_days: frozenset[int] = frozenset(range(7))   # weekday numbers, Monday 0
    exclude_skus: frozenset[str] = frozenset()
    exclude_recent_conversation_days: int = 14   # 0: off

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.time_zone)


def zone(name: str) -> ZoneInfo:
    """The time zone ``name``; raises ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; expected an IANA name such as \"Europe/Berlin\"") from exc


def weekday(name: str) -> int:
    """``"mon"`` -> 0; raises ValueError for an unknown day."""
    try:
        return DAYS.index(name.strip().lower())
    except ValueError:
        raise ValueError(f"unknown day {name!r}; expected one of {', '.join(DAYS)}") from None


# --------------------------------------------------------------------------- the marketplace's window


@dataclass(frozen=True)
class RequestWindow:
    """When a request may go out at all: ``[opens, closes]`` (UTC)."""

    opens: datetime
    closes: datetime
    base: datetime        # what ``days_after`` counts from: the delivery, else the earliest estimated date


def request_window(order: OrderFacts) -> RequestWindow | None:
    """The marketplace's window for ``order``; None while no delivery date or estimate is known."""
    if order.delivered_at is not None:
        return RequestWindow(order.delivered_at + WINDOW_OPENS, order.delivered_at + WINDOW_CLOSES,
                             order.delivered_at)
    earliest = order.estimated_delivery_from or order.estimated_delivery_to
    latest = order.estimated_delivery_to or order.estimated_delivery_from
    if earliest is None or latest is None:
        return None
    return RequestWindow(earliest + WINDOW_OPENS, max(earliest, latest) + WINDOW_CLOSES, earliest)


# --------------------------------------------------------------------------- local time


def next_allowed(moment: datetime, schedule: Schedule) -> datetime:
    """The first instant at or after ``moment`` inside the send window on a send day (UTC)."""
    if not schedule.send_days:
        raise ValueError("no send days")
    tz = schedule.zone
    moment = moment.astimezone(timezone.utc)
    local = moment.astimezone(tz)
    day = local.date()
    for _ in range(8):
        if day.weekday() in schedule.send_days:
            start = _instant(day, schedule.window.start, tz)
            end = _instant(day, schedule.window.end, tz)
            if moment < end:
                return max(moment, start)
        day += timedelta(days=1)
    raise AssertionError("a send day comes within a week")   # pragma: no cover


def _instant(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The first instant whose local wall time on ``day`` is ``minute`` past midnight or later (UTC).

    A wall time the clocks skip (spring forward) gives the instant of the jump; one they
    repeat (fall back) its first occurrence (PEP 495 ``fold=0``).
    """
    if minute >= _MINUTES_PER_DAY:
        return _instant(day + timedelta(days=1), 0, tz)
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    first = wall.replace(tzinfo=tz)                      # fold=0: the earlier reading of a repeated time
    if first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall:
        return first.astimezone(timezone.utc)
    # In a gap: fold=0 reads it with the offset before the jump (an instant after the gap),
    # fold=1 with the one after (an instant before it). The jump lies between the two.
    ends = sorted(int(wall.replace(tzinfo=tz, fold=fold).timestamp()) for fold in (0, 1))
    low, high = ends                                     # low reads before the wall time, high after it
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, timezone.utc)


def local_day(moment: datetime, time_zone: str) -> tuple[datetime, datetime]:
    """The local calendar day holding ``moment``: ``[start, end)`` in UTC (23 or 25 hours around DST)."""
    tz = zone(time_zone)
    day = moment.astimezone(tz).date()
    return _instant(day, 0, tz), _instant(day + timedelta(days=1), 0, tz)


def daily_cap(configured: int, orders_last_30_days: int) -> int:
    """Requests per local day: ``configured``, or when 0 the safe default 4 x average daily orders + 600."""
    if configured > 0:
        return configured
    return CAP_ORDERS_FACTOR * orders_last_30_days // CAP_AVERAGE_DAYS + CAP_BASE


# --------------------------------------------------------------------------- the exclusion rules


@dataclass(frozen=True)
class Exclusion:
    rule: str                      # stable name: shown in `feedback list`, kept on the request row
    reason: str                    # for people
    until: datetime | None = None  # it ends by itself then; None: it does not

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class Facts:
    """Everything a rule reads."""

    order: OrderFacts
    buyer: BuyerFacts
    already_asked: str | None          # how the order was already asked for feedback, if it was
    schedule: Schedule
    now: datetime


Rule = Callable[[Facts], Iterator[Exclusion]]


def opted_out(f: Facts) -> Iterator[Exclusion]:
    """The buyer opted out of unsolicited messages: never (docs/marketplaces.md, "Buyer opt-out")."""
    if f.buyer.opted_out:
        yield Exclusion("opted_out", "the buyer opted out of unsolicited messages")


def do_not_solicit(f: Facts) -> Iterator[Exclusion]:
    until = f.buyer.do_not_solicit_until
    if until is not None and until > f.now:
        ends = until if until.year < 9999 else None
        yield Exclusion("do_not_solicit", "the buyer is on the Do-Not-Solicit list"
                        + (f" until {until:%Y-%m-%d}" if ends else ""), ends)


def order_ended(f: Facts) -> Iterator[Exclusion]:
    if f.order.status in ENDED_STATUSES:
        yield Exclusion("order_ended", f"the order was {f.order.status}")


def open_claim(f: Facts) -> Iterator[Exclusion]:
    if f.order.open_claim:
        yield Exclusion("open_claim", "the order has an open A-to-z claim")


def recent_conversation(f: Facts) -> Iterator[Exclusion]:
    days = f.schedule.exclude_recent_conversation_days
    wrote = f.buyer.last_message_at
    if days > 0 and wrote is not None and f.now < wrote + timedelta(days=days):
        yield Exclusion("recent_conversation", f"the buyer wrote on {wrote:%Y-%m-%d}, within {days} days",
                        wrote + timedelta(days=days))


def excluded_sku(f: Facts) -> Iterator[Exclusion]:
    for sku in f.order.skus:
        if sku in f.schedule.exclude_skus:
            yield Exclusion("excluded_sku", f"SKU {sku} is excluded (exclude_skus)")


def already_asked(f: Facts) -> Iterator[Exclusion]:
    """One request per order, across every channel (docs/marketplaces.md)."""
    if f.already_asked:
        yield Exclusion("already_asked", f"already asked for feedback: {f.already_asked}")


def no_buyer_alias(f: Facts) -> Iterator[Exclusion]:
    if not f.order.buyer_alias:
        yield Exclusion("no_buyer_alias", "no buyer relay address is known for the order")


def not_delivered(f: Facts) -> Iterator[Exclusion]:
    if f.order.status in ENDED_STATUSES:
        return
    if f.order.status in (None, "pending") and f.order.delivered_at is None:
        yield Exclusion("not_delivered", "the order has not shipped yet")
    elif request_window(f.order) is None:
        yield Exclusion("not_delivered", "no delivery date or estimated delivery is known yet")


def window_passed(f: Facts) -> Iterator[Exclusion]:
    window = request_window(f.order)
    if window is not None and f.now > window.closes:
        yield Exclusion("window_passed", f"the marketplace's window closed on {window.closes:%Y-%m-%d} "
                                         "(30 days after delivery)")


#: Every exclusion, in the order they are reported.
RULES: tuple[Rule, ...] = (opted_out, do_not_solicit, order_ended, open_claim, recent_conversation, excluded_sku,
                           already_asked, no_buyer_alias, not_delivered, window_passed)
RULE_NAMES = ("opted_out", "do_not_solicit", "order_ended", "open_claim", "recent_conversation", "excluded_sku",
              "already_asked", "no_buyer_alias", "not_delivered", "window_passed", "no_send_time")


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Assessment:
    """What the rules say about one order at ``now``."""

    exclusions: tuple[Exclusion, ...]
    due: datetime | None           # when the request may go out (maybe past); None: never

    @property
    def permanent(self) -> tuple[Exclusion, ...]:
        return tuple(e for e in self.exclusions if e.until is None)

    @property
    def eligible(self) -> bool:
        """Not excluded for good, and a send time is left inside the window."""
        return self.due is not None

    def may_send(self, now: datetime) -> bool:
        return self.due is not None and self.due <= now

    @property
    def reason(self) -> str:
        """Why not now, in one line ("" when nothing stands in the way)."""
        return "; ".join(str(e) for e in self.exclusions)


def assess(order: OrderFacts, buyer: BuyerFacts, schedule: Schedule, now: datetime,
           already_asked: str | None = None) -> Assessment:
    """Run every rule; the due time is the first allowed local time from ``days_after`` the delivery,
    inside the window, not before ``now`` and after every temporary exclusion ends, or None."""
    facts = Facts(order=order, buyer=buyer, already_asked=already_asked, schedule=schedule, now=now)
    found = tuple(e for rule in RULES for e in rule(facts))
    window = request_window(order)
    if window is None or any(e.until is None for e in found):
        return Assessment(found, None)
    # Never before now: a request found late (or re-checked at send time) goes at the next allowed time.
    earliest = max([window.base + timedelta(days=schedule.days_after), window.opens, now]
                   + [e.until for e in found if e.until is not None])
    due = next_allowed(earliest, schedule)
    if due > window.closes:
        last = Exclusion("no_send_time", f"no allowed send time ({schedule.window}, "
                                         f"{'/'.join(DAYS[d] for d in sorted(schedule.send_days))}) is left before "
                                         f"the marketplace's window closes on {window.closes:%Y-%m-%d %H:%M} UTC")
        return Assessment(found + (last,), None)
    return Assessment(found, due)
