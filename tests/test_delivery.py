"""The outbox's pace, as pure rules (bridge.domain.delivery): queue order, sending limits, throttle replies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bridge.domain.delivery import (
    DAY,
    MINUTE,
    Budget,
    Priority,
    SendLimits,
    WindowUse,
    drain_seconds,
    effective_limits,
    is_throttle,
    priority,
    provider_limits,
    send_budget,
    throttle_pause,
    window_budget,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(("audience", "category", "expected"), [
    ("buyer", "reply", Priority.BUYER_REPLY),
    ("buyer", None, Priority.BUYER_REPLY),            # a buyer row without a category is treated as a reply
    ("staff", None, Priority.STAFF),
    ("staff", "unsolicited", Priority.STAFF),         # who receives it decides first
    ("buyer", "unsolicited", Priority.PROACTIVE),     # feedback requests
    ("buyer", "critical", Priority.PROACTIVE),        # proactive too (docs/marketplaces.md)
])
def test_priority_puts_buyer_replies_first_then_staff_then_proactive(audience: str, category: str | None,
                                                                     expected: Priority) -> None:
    assert priority(audience, category) == expected


def test_priorities_are_ordered() -> None:
    assert Priority.BUYER_REPLY < Priority.STAFF < Priority.PROACTIVE


@pytest.mark.parametrize(("host", "username", "expected"), [
    ("smtp.office365.com", "seller@acme.example", SendLimits(30, 10_000)),
    ("SMTP.Office365.com.", "", SendLimits(30, 10_000)),
    ("smtp-mail.outlook.com", "seller@outlook.com", SendLimits(30, 10_000)),
    ("smtp.gmail.com", "seller@acme.example", SendLimits(None, 2_000)),      # Google Workspace
    ("smtp.gmail.com", "someone@gmail.com", SendLimits(None, 500)),          # a consumer Gmail account
    ("smtp.gmail.com", "someone@GoogleMail.com", SendLimits(None, 500)),
    ("mail.acme.example", "seller@acme.example", SendLimits()),              # unknown host: none
    ("127.0.0.1", "", SendLimits()),
])
def test_provider_limits(host: str, username: str, expected: SendLimits) -> None:
    assert provider_limits(host, username) == expected


@pytest.mark.parametrize(("minute", "day", "host", "expected"), [
    (None, None, "smtp.office365.com", SendLimits(30, 10_000)),   # the provider's
    (10, None, "smtp.office365.com", SendLimits(10, 10_000)),     # one set, the other the provider's
    (0, 0, "smtp.office365.com", SendLimits()),                   # 0: no limit, even for a known host
    (120, None, "mail.acme.example", SendLimits(120, None)),
    (None, None, "mail.acme.example", SendLimits()),
])
def test_effective_limits(minute: int | None, day: int | None, host: str, expected: SendLimits) -> None:
    assert effective_limits(minute, day, host, "seller@acme.example") == expected


@pytest.mark.parametrize(("limit", "use", "expected"), [
    (None, WindowUse(500), Budget(None, None)),                          # no limit
    (30, WindowUse(0), Budget(30, None)),
    (30, WindowUse(29), Budget(1, None)),
    (30, WindowUse(30, freeing_send=ago(50)), Budget(0, NOW + timedelta(seconds=10))),
    (30, WindowUse(31, freeing_send=ago(20)), Budget(0, NOW + timedelta(seconds=40))),   # over: a limit lowered
    (30, WindowUse(30, freeing_send=ago(60)), Budget(0, NOW)),            # leaving the window right now
    (30, WindowUse(30), Budget(0, NOW + MINUTE)),                         # not looked up: a window at most
])
def test_window_budget_a_token_comes_back_when_its_send_leaves_the_minute(limit: int | None, use: WindowUse,
                                                                          expected: Budget) -> None:
    assert window_budget(limit, MINUTE, use, NOW) == expected


@pytest.mark.parametrize(("limits", "minute", "day", "expected"), [
    (SendLimits(30, 10_000), WindowUse(10), WindowUse(100), Budget(20, None)),
    (SendLimits(30, 10_000), WindowUse(10), WindowUse(9_995), Budget(5, None)),          # the day is nearly used
    (SendLimits(30, 10_000), WindowUse(30, ago(30)), WindowUse(200), Budget(0, NOW + timedelta(seconds=30))),
    # Both used up: the later of the two times.
    (SendLimits(30, 100), WindowUse(30, ago(30)), WindowUse(100, ago(3600)), Budget(0, NOW + DAY - timedelta(hours=1))),
    (SendLimits(None, 100), WindowUse(0), WindowUse(40), Budget(60, None)),
    (SendLimits(), WindowUse(900), WindowUse(9000), Budget(None, None)),
])
def test_send_budget_takes_the_tighter_window(limits: SendLimits, minute: WindowUse, day: WindowUse,
                                              expected: Budget) -> None:
    assert send_budget(limits, minute, day, NOW) == expected


@pytest.mark.parametrize(("queued", "limits", "minute", "day", "expected"), [
    (0, SendLimits(), WindowUse(0), WindowUse(0), 0.0),
    (100, SendLimits(), WindowUse(0), WindowUse(0), None),                 # no limit: the server sets the pace
    (10, SendLimits(30), WindowUse(0), WindowUse(0), 0.0),                 # all may go now
    (240, SendLimits(120), WindowUse(0), WindowUse(0), 60.0),              # 120 now, 120 at 2 a second
    (240, SendLimits(120), WindowUse(120, ago(45)), WindowUse(120), 135.0),  # 15 s to wait, then 2 minutes
    (20, SendLimits(10, 1000), WindowUse(10, ago(15)), WindowUse(10), 45.0 + 120.0),   # the day is no brake
    # 30 now, 470 more at 30 a minute, the 500 over the day's limit at 1,000 a day.
    (1_000, SendLimits(30, 1_000), WindowUse(0), WindowUse(500), 470 * 2.0 + 500 * 86.4),
    (100, SendLimits(None, 50), WindowUse(0), WindowUse(0), 50 * 1728.0),   # 50 now, 50 over the day
])
def test_drain_seconds(queued: int, limits: SendLimits, minute: WindowUse, day: WindowUse,
                       expected: float | None) -> None:
    result = drain_seconds(queued, limits, minute, day, NOW)
    assert result == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("code", "message", "expected"), [
    # Throttles: the providers' own wording.
    (421, "4.7.0 Too many connections from your IP, try again later", True),
    (451, "4.7.28 Our system has detected an unusual rate of unsolicited mail", True),
    (450, "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents delivery", True),
    (452, "4.3.1 Message submission rate for this client has exceeded the configured limit", True),
    (421, "Too many messages sent; slow down", True),
    (451, "Ratelimit exceeded for sender", True),
    (451, "4.7.1 Try again later", True),                           # 4.7.x: security or policy status
    (450, "Sending throttled, try later", True),
    # Not throttles: about this message, or not a "try later" code.
    (452, "4.5.3 Too many recipients", False),                      # this transaction's recipient list
    (452, "4.2.2 Mailbox full", False),
    (451, "4.3.0 Temporary local problem, please try later", False),
    (450, "4.2.0 Greylisted, see https://example.org/separate-generate", False),   # "rate" inside words
    (550, "5.7.1 Message rejected: too many recipients per hour exceeded", False),  # 5xx: permanent
    (554, "5.7.0 Rate limit exceeded", False),
    (None, "connection refused", False),
    (250, "2.0.0 OK rate", False),
])
def test_is_throttle(code: int | None, message: str, expected: bool) -> None:
    assert is_throttle(code, message) is expected


@pytest.mark.parametrize(("in_a_row", "seconds"), [
    (1, 60.0), (2, 120.0), (3, 240.0), (5, 960.0), (6, 1800.0), (20, 1800.0), (0, 60.0),
])
def test_throttle_pause_doubles_up_to_half_an_hour(in_a_row: int, seconds: float) -> None:
    assert throttle_pause(in_a_row) == seconds


@pytest.mark.parametrize(("limits", "text"), [
    (SendLimits(30, 10_000), "30/min, 10,000/day"), (SendLimits(None, 500), "500/day"), (SendLimits(), "none"),
])
def test_limits_describe_themselves(limits: SendLimits, text: str) -> None:
    assert limits.describe() == text
