"""Feedback eligibility and due times (bridge.domain.feedback): tables with an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bridge.domain import feedback as fb
from bridge.domain.feedback import BuyerFacts, Schedule, SendWindow
from bridge.domain.orders import ItemFacts, OrderFacts

UTC = timezone.utc
DELIVERED = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)          # a Monday
ANY_TIME = SendWindow.parse("00:00-24:00")


def order(**kw: object) -> OrderFacts:
    values: dict[str, object] = dict(order_id="111-2223334-4445556", status="delivered", delivered_at=DELIVERED,
                                     buyer_alias="k3j9x0qma2b7@marketplace.amazon.com",
                                     items=(ItemFacts("1", "TENT-2"),))
    values.update(kw)
    return OrderFacts(**values)  # type: ignore[arg-type]


def schedule(**kw: object) -> Schedule:
    values: dict[str, object] = dict(time_zone="UTC", window=ANY_TIME, days_after=5)
    values.update(kw)
    return Schedule(**values)  # type: ignore[arg-type]


def rules(a: fb.Assessment) -> list[str]:
    return [e.rule for e in a.exclusions]


# --------------------------------------------------------------------------- the marketplace's window


@pytest.mark.parametrize(("day", "may_send", "excluded"), [
    (4, False, []),                  # too early: scheduled for day 5
    (5, True, []),
    (12, True, []),
    (30, True, []),
    (31, False, ["window_passed"]),
])
def test_window_edges_after_delivery(day: int, may_send: bool, excluded: list[str]) -> None:
    now = DELIVERED + timedelta(days=day)
    a = fb.assess(order(), BuyerFacts(), schedule(), now)
    assert a.may_send(now) is may_send
    assert rules(a) == excluded
    if day == 4:
        assert a.due == DELIVERED + timedelta(days=5)


@pytest.mark.parametrize("days_after", [0, 3, 5])
def test_days_after_never_moves_the_due_time_before_day_5(days_after: int) -> None:
    a = fb.assess(order(), BuyerFacts(), schedule(days_after=days_after), DELIVERED)
    assert a.due == DELIVERED + timedelta(days=5)


def test_days_after_places_the_due_time_inside_the_window() -> None:
    a = fb.assess(order(), BuyerFacts(), schedule(days_after=7), DELIVERED)
    assert a.due == DELIVERED + timedelta(days=7)


EARLIEST = datetime(2026, 11, 3, 0, 0, tzinfo=UTC)
LATEST = datetime(2026, 11, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("now", "may_send", "excluded"), [
    (EARLIEST + timedelta(days=4, hours=23), False, []),
    (EARLIEST + timedelta(days=5), True, []),
    (LATEST + timedelta(days=30), True, []),             # 30 days after the latest estimated date
    (EARLIEST + timedelta(days=31), True, []),           # past 30 after the earliest: the latest counts
    (LATEST + timedelta(days=30, seconds=1), False, ["window_passed"]),
])
def test_estimated_range_opens_after_the_earliest_and_closes_after_the_latest(
        now: datetime, may_send: bool, excluded: list[str]) -> None:
    o = order(status="shipped", delivered_at=None, shipped_at=EARLIEST - timedelta(days=2),
              estimated_delivery_from=EARLIEST, estimated_delivery_to=LATEST)
    a = fb.assess(o, BuyerFacts(), schedule(), now)
    assert (a.may_send(now), rules(a)) == (may_send, excluded)


def test_a_delivery_date_wins_over_the_estimate() -> None:
    o = order(estimated_delivery_from=EARLIEST + timedelta(days=20), estimated_delivery_to=LATEST + timedelta(days=20))
    assert fb.request_window(o) == fb.RequestWindow(DELIVERED + timedelta(days=5), DELIVERED + timedelta(days=30),
                                                    DELIVERED)


@pytest.mark.parametrize(("kw", "rule"), [
    (dict(status="pending", delivered_at=None), "not_delivered"),
    (dict(status="shipped", delivered_at=None, shipped_at=DELIVERED), "not_delivered"),
    (dict(status="cancelled"), "order_ended"),
    (dict(status="refunded"), "order_ended"),
    (dict(status="returned"), "order_ended"),
    (dict(open_claim=True), "open_claim"),
    (dict(buyer_alias=None), "no_buyer_alias"),
    (dict(items=(ItemFacts("1", "OK-1"), ItemFacts("2", "SECRET-9"))), "excluded_sku"),
])
def test_order_exclusions(kw: dict[str, object], rule: str) -> None:
    now = DELIVERED + timedelta(days=6)
    a = fb.assess(order(**kw), BuyerFacts(), schedule(exclude_skus=frozenset({"SECRET-9"})), now)
    assert rules(a) == [rule]
    assert not a.eligible and a.due is None


def test_buyer_exclusions() -> None:
    now = DELIVERED + timedelta(days=6)
    s = schedule()
    assert rules(fb.assess(order(), BuyerFacts(opted_out=True), s, now)) == ["opted_out"]
    forever = fb.assess(order(), BuyerFacts(do_not_solicit_until=datetime(9999, 12, 31, tzinfo=UTC)), s, now)
    assert rules(forever) == ["do_not_solicit"] and forever.due is None
    asked = fb.assess(order(), BuyerFacts(), s, now, already_asked="Amazon's Request a Review")
    assert rules(asked) == ["already_asked"] and "Request a Review" in asked.reason


def test_exclusions_that_end_move_the_due_time() -> None:
    now = DELIVERED + timedelta(days=6)
    wrote = DELIVERED + timedelta(days=1)
    a = fb.assess(order(), BuyerFacts(last_message_at=wrote), schedule(), now)
    assert rules(a) == ["recent_conversation"] and a.due == wrote + timedelta(days=14)
    assert not a.may_send(now)
    off = fb.assess(order(), BuyerFacts(last_message_at=wrote), schedule(exclude_recent_conversation_days=0), now)
    assert off.may_send(now)
    dns_end = DELIVERED + timedelta(days=10)
    a = fb.assess(order(), BuyerFacts(do_not_solicit_until=dns_end), schedule(), now)
    assert a.due == dns_end


def test_an_exclusion_outlasting_the_window_leaves_no_send_time() -> None:
    wrote = DELIVERED + timedelta(days=20)
    a = fb.assess(order(), BuyerFacts(last_message_at=wrote), schedule(), DELIVERED + timedelta(days=21))
    assert rules(a) == ["recent_conversation", "no_send_time"] and a.due is None


def test_every_rule_is_named() -> None:
    assert [r.__name__ for r in fb.RULES] == list(fb.RULE_NAMES[:-1])


# --------------------------------------------------------------------------- send window, days, time zones


def test_send_window_moves_the_due_time_to_the_next_local_opening() -> None:
    s = schedule(time_zone="America/Los_Angeles", window=SendWindow.parse("09:00-18:00"), days_after=7)
    # Day 7 is Mon 9 Nov 15:00 UTC = 07:00 in Los Angeles (PST, UTC-8): moved to 09:00 PST = 17:00 UTC.
    assert fb.assess(order(), BuyerFacts(), s, DELIVERED).due == datetime(2026, 11, 9, 17, 0, tzinfo=UTC)


def test_after_the_window_closes_the_request_waits_for_the_next_day() -> None:
    s = schedule(time_zone="Europe/Berlin", window=SendWindow.parse("09:00-15:00"), days_after=7)
    # 15:00 UTC = 16:00 in Berlin (CET): past 15:00, so the next day at 09:00 CET = 08:00 UTC.
    assert fb.assess(order(), BuyerFacts(), s, DELIVERED).due == datetime(2026, 11, 10, 8, 0, tzinfo=UTC)


def test_send_days_skip_to_the_next_allowed_day() -> None:
    s = schedule(time_zone="Europe/Berlin", window=SendWindow.parse("09:00-18:00"), days_after=5,
                 send_days=frozenset({fb.weekday("tue"), fb.weekday("thu")}))
    # Day 5 is Sat 7 Nov: the next Tuesday, 10 Nov, 09:00 CET.
    assert fb.assess(order(), BuyerFacts(), s, DELIVERED).due == datetime(2026, 11, 10, 8, 0, tzinfo=UTC)


def test_a_window_start_in_a_skipped_hour_means_the_first_instant_after_the_jump() -> None:
    # Europe/Berlin springs forward on Sun 29 Mar 2026: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
    s = schedule(time_zone="Europe/Berlin", window=SendWindow.parse("02:30-18:00"), days_after=5)
    delivered = datetime(2026, 3, 23, 23, 0, tzinfo=UTC)     # day 5: Sun 29 Mar 00:00 CET
    due = fb.assess(order(delivered_at=delivered), BuyerFacts(), s, delivered).due
    assert due == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)      # 03:00 CEST


def test_a_window_start_in_a_repeated_hour_means_its_first_occurrence() -> None:
    # Europe/Berlin falls back on Sun 25 Oct 2026: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    s = schedule(time_zone="Europe/Berlin", window=SendWindow.parse("02:30-18:00"), days_after=5)
    delivered = datetime(2026, 10, 19, 22, 0, tzinfo=UTC)    # day 5: Sun 25 Oct 00:00 CEST
    due = fb.assess(order(delivered_at=delivered), BuyerFacts(), s, delivered).due
    assert due == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)    # 02:30 CEST, the first one


def test_a_due_time_in_the_repeated_hour_stays_put() -> None:
    s = schedule(time_zone="Europe/Berlin", window=SendWindow.parse("00:00-03:00"), days_after=5)
    second_0215 = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)    # 02:15 CET, the second 02:15 of the day
    assert fb.next_allowed(second_0215, s) == second_0215
    after = datetime(2026, 10, 25, 2, 0, tzinfo=UTC)           # 03:00 CET: the window is over
    assert fb.next_allowed(after, s) == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)   # Mon 00:00 CET


def test_a_due_time_in_the_skipped_hour_is_already_an_instant() -> None:
    s = schedule(time_zone="America/New_York", window=SendWindow.parse("01:00-04:00"), days_after=5)
    # 8 Mar 2026, 02:00 EST -> 03:00 EDT. 06:59 UTC is 01:59 EST, 07:00 UTC is 03:00 EDT: both allowed.
    for moment in (datetime(2026, 3, 8, 6, 59, tzinfo=UTC), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)):
        assert fb.next_allowed(moment, s) == moment
    assert fb.next_allowed(datetime(2026, 3, 8, 8, 0, tzinfo=UTC), s) == datetime(2026, 3, 9, 5, 0, tzinfo=UTC)


def test_no_send_time_left_in_the_window() -> None:
    s = schedule(time_zone="UTC", window=SendWindow.parse("09:00-10:00"),
                 send_days=frozenset({fb.weekday("sun")}))
    now = DELIVERED + timedelta(days=29)                       # Tue 1 Dec; the window closes Wed 2 Dec 15:00
    a = fb.assess(order(), BuyerFacts(), s, now)
    assert rules(a) == ["no_send_time"] and a.due is None


@pytest.mark.parametrize(("text", "start", "end"), [("09:00-18:00", 540, 1080), ("00:00-24:00", 0, 1440),
                                                   (" 7:30 - 9:05 ", 450, 545)])
def test_send_window_text(text: str, start: int, end: int) -> None:
    w = SendWindow.parse(text)
    assert (w.start, w.end) == (start, end)


@pytest.mark.parametrize("text", ["9-18", "18:00-09:00", "09:00-09:00", "25:00-26:00", "09:60-10:00",
                                  "24:30-24:40", "00:00-24:01", ""])
def test_bad_send_window_text(text: str) -> None:
    with pytest.raises(ValueError):
        SendWindow.parse(text)


def test_days_and_zones() -> None:
    assert fb.weekday("Mon") == 0 and fb.weekday("sun") == 6
    with pytest.raises(ValueError, match="unknown day"):
        fb.weekday("monday")
    with pytest.raises(ValueError, match="unknown time zone"):
        fb.zone("Mars/Olympus")


# --------------------------------------------------------------------------- the daily cap


@pytest.mark.parametrize(("configured", "orders", "cap"), [
    (0, 0, 600), (0, 30, 604), (0, 3000, 1000), (0, 29, 603), (50, 3000, 50),
])
def test_daily_cap(configured: int, orders: int, cap: int) -> None:
    assert fb.daily_cap(configured, orders) == cap


@pytest.mark.parametrize(("moment", "tz", "start", "hours"), [
    (datetime(2026, 11, 23, 12, 0, tzinfo=UTC), "UTC", datetime(2026, 11, 23, tzinfo=UTC), 24),
    # 02:00 UTC on 24 Nov is still 23 Nov in Los Angeles (UTC-8).
    (datetime(2026, 11, 24, 2, 0, tzinfo=UTC), "America/Los_Angeles", datetime(2026, 11, 23, 8, tzinfo=UTC), 24),
    (datetime(2026, 3, 29, 12, 0, tzinfo=UTC), "Europe/Berlin", datetime(2026, 3, 28, 23, tzinfo=UTC), 23),
    (datetime(2026, 10, 25, 12, 0, tzinfo=UTC), "Europe/Berlin", datetime(2026, 10, 24, 22, tzinfo=UTC), 25),
])
def test_the_cap_counts_per_local_day(moment: datetime, tz: str, start: datetime, hours: int) -> None:
    begin, end = fb.local_day(moment, tz)
    assert begin == start and end - begin == timedelta(hours=hours)
