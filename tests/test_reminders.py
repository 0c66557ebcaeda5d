"""Response-time reminders and "no response needed": the pure rules, as tables of cases (one clock per case)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bridge.domain import reminders
from bridge.domain.reminders import Action, Pending

T0 = datetime(2026, 11, 27, 18, 0, tzinfo=timezone.utc)   # a Friday evening: weekends count too
H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)


@pytest.mark.parametrize("sent_at,received_at,expected", [
    (T0, T0 + 3 * M, T0),                                    # the buyer's Date: the 24 hours count from it
    (None, T0, T0),                                          # no Date: when we received it
    (T0 + H, T0, T0),                                        # a Date in the future (skewed clock): received
    (T0 - 30 * H, T0, T0 - 30 * H),                          # received late (daemon down): still the Date
    (T0.replace(tzinfo=None), T0 + M, T0),                   # "-0000": no zone, taken as UTC
])
def test_clock_start(sent_at: datetime | None, received_at: datetime, expected: datetime) -> None:
    assert reminders.clock_start(sent_at, received_at) == expected


@pytest.mark.parametrize("after_hours,now,expected", [
    ((12, 20), T0, ((12, T0 + 12 * H), (20, T0 + 20 * H))),
    ((20, 12, 12), T0, ((12, T0 + 12 * H), (20, T0 + 20 * H))),   # sorted, each once
    ((), T0, ()),                                                  # off
    ((0, 24, 30, 6), T0, ((6, T0 + 6 * H),)),                      # outside the 24 hours: left out
    ((12, 20), T0 + 13 * H, ((12, T0 + 12 * H), (20, T0 + 20 * H))),  # already passed: the timer decides
    ((12, 20), T0 + 24 * H - S, ((12, T0 + 12 * H), (20, T0 + 20 * H))),
    ((12, 20), T0 + 24 * H, ()),                                   # the 24 hours are over: nothing
    ((23,), T0, ((23, T0 + 23 * H),)),
])
def test_schedule(after_hours: tuple[int, ...], now: datetime, expected: tuple[tuple[int, datetime], ...]) -> None:
    assert reminders.schedule(T0, after_hours, now) == expected


DUE = T0 + 12 * H


@pytest.mark.parametrize("pending,now,expected", [
    (Pending(DUE, answered=False, closed=False), DUE - S, Action.WAIT),          # one second early
    (Pending(DUE, answered=False, closed=False), DUE, Action.SEND),              # exactly due
    (Pending(DUE, answered=False, closed=False), DUE + 5 * H, Action.SEND),      # a late tick still sends
    (Pending(DUE, answered=True, closed=False), DUE, Action.ANSWERED),
    (Pending(DUE, answered=True, closed=False), DUE - H, Action.ANSWERED),       # answered: never sent
    (Pending(DUE, answered=False, closed=True), DUE, Action.CLOSED),
    (Pending(DUE, answered=True, closed=True), DUE, Action.CLOSED),              # closed wins: it says why
    (Pending(DUE, answered=False, closed=False, later_due=True), DUE + 8 * H, Action.OVERTAKEN),
    (Pending(DUE, answered=False, closed=False, later_due=True), DUE - S, Action.WAIT),
    (Pending(DUE, answered=False, closed=False), DUE + 24 * H - S, Action.SEND),
    (Pending(DUE, answered=False, closed=False), DUE + 24 * H, Action.EXPIRED),  # a whole window late
])
def test_decide(pending: Pending, now: datetime, expected: Action) -> None:
    assert reminders.decide(pending, now) is expected


@pytest.mark.parametrize("now,expected", [
    (T0 + 12 * H, "12 h 00 min left"),
    (T0 + 20 * H + 30 * S, "3 h 59 min left"),
    (T0 + 23 * H + 59 * M, "1 min left"),
    (T0 + 24 * H - 30 * S, "0 min left"),
    (T0 + 24 * H, "overdue by 0 min"),
    (T0 + 25 * H + 5 * M, "overdue by 1 h 05 min"),
    (T0 + 48 * H, "overdue by 24 h 00 min"),
])
def test_time_left(now: datetime, expected: str) -> None:
    assert reminders.time_left(T0, now) == expected


@pytest.mark.parametrize("now,expected", [
    (T0 + 12 * H + 3 * M, "12 h 03 min"), (T0 + 59 * S, "0 min"), (T0 - H, "0 min"),
])
def test_waited(now: datetime, expected: str) -> None:
    assert reminders.waited(T0, now) == expected


PHRASES = reminders.DEFAULT_NO_RESPONSE_PHRASES


@pytest.mark.parametrize("text,expected", [
    ("no response needed", True),
    ("No response needed.", True),
    ("NO RESPONSE NEEDED!!", True),
    ("  No   response\nneeded  ", True),
    ("No-response needed", True),
    ("no response needed 👍", True),
    ("No reply needed.", True),
    ("No response required", True),
    ("\"No response needed\"", True),
    ("No response needed, thanks", False),          # more than the phrase: a real answer, relayed
    ("No response needed? Please check the order.", False),
    ("response needed", False),
    ("no", False),
    ("", False),
    ("...", False),
    ("We need no response from you", False),
])
def test_no_response_needed(text: str, expected: bool) -> None:
    assert reminders.is_no_response_needed(text, PHRASES) is expected


@pytest.mark.parametrize("text,phrases,expected", [
    ("Keine Antwort nötig.", ("keine antwort nötig",), True),        # the account's own phrase
    ("no response needed", (), False),                               # [] turns it off
    ("Erledigt", ("erledigt", "no response needed"), True),
])
def test_no_response_needed_configured(text: str, phrases: tuple[str, ...], expected: bool) -> None:
    assert reminders.is_no_response_needed(text, phrases) is expected
