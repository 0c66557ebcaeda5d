"""Feedback requests in the store, on SQLite and on the real PostgreSQL: one per order, claims that never collide."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bridgekit import database, insert_order
from sqlalchemy import event, insert, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from bridge import store
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
ALIAS = "k3j9x0qma2b7@marketplace.amazon.com"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database(request.param, tmp_path) as opened:
        yield opened


def schedule(engine: Engine, order_id: str, due: datetime = NOW, account: str = "acme") -> bool:
    with engine.begin() as conn:
        return store.schedule_request(conn, account, order_id, ALIAS, due, NOW)


def test_one_request_per_order_is_a_rule_of_the_schema(engine: Engine) -> None:
    assert schedule(engine, "111-0000000-0000001")
    assert not schedule(engine, "111-0000000-0000001", NOW + timedelta(days=3))   # a second schedule: nothing
    assert schedule(engine, "111-0000000-0000001", account="other")               # another account's order
    # Even a statement that goes around the store cannot add a second one.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(store.FEEDBACK).values(account="acme", order_id="111-0000000-0000001", state="sent",
                                                   due_at=NOW, created_at=NOW, updated_at=NOW))
    with engine.begin() as conn:
        request = store.request_of_order(conn, "acme", "111-0000000-0000001")
    assert request is not None and (request.state, request.due_at) == ("scheduled", NOW)


def test_the_due_index_leads_with_account_state_and_due_time(engine: Engine) -> None:
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("feedback_request")}
    assert indexes["ix_feedback_due"] == ["account", "state", "due_at"]


def test_claims_take_due_rows_a_few_at_a_time_and_never_twice(engine: Engine) -> None:
    for n in range(5):
        schedule(engine, f"111-0000000-000000{n}", NOW - timedelta(minutes=5 - n))
    schedule(engine, "111-0000000-0000009", NOW + timedelta(hours=1))                 # not due
    with engine.begin() as conn:
        first = store.claim_due_requests(conn, "acme", "w1", NOW, limit=3)
        second = store.claim_due_requests(conn, "acme", "w2", NOW, limit=3)
        third = store.claim_due_requests(conn, "acme", "w3", NOW, limit=3)
    assert [r.order_id[-1] for r in first] == ["0", "1", "2"]
    assert [r.order_id[-1] for r in second] == ["3", "4"]
    assert third == []
    with engine.begin() as conn:
        # Only the claimer records the outcome.
        assert not store.finish_request(conn, first[0].id, worker="w2", state="sent", now=NOW)
        assert store.finish_request(conn, first[0].id, worker="w1", state="sent", now=NOW, outbox_message_id="m1@x")
        assert not store.finish_request(conn, first[0].id, worker="w1", state="skipped", now=NOW)
        assert store.finish_request(conn, first[1].id, worker="w1", state="scheduled", now=NOW,
                                    reason="recent_conversation", due_at=NOW + timedelta(days=2))
        assert store.request_of_message(conn, "acme", "m1@x").order_id == first[0].order_id  # type: ignore[union-attr]
        assert store.sent_between(conn, "acme", NOW - timedelta(hours=1), NOW + timedelta(hours=1)) == 1


def test_claims_a_dead_dispatcher_left_are_released(engine: Engine) -> None:
    schedule(engine, "111-0000000-0000001", NOW - timedelta(hours=1))
    with engine.begin() as conn:
        (claimed,) = store.claim_due_requests(conn, "acme", "dead", NOW - timedelta(minutes=30), limit=5)
    with engine.begin() as conn:
        assert store.release_stale_claims(conn, "acme", "alive", NOW - timedelta(minutes=40), NOW) == 0  # too young
        assert store.release_stale_claims(conn, "acme", "alive", NOW - timedelta(minutes=10), NOW) == 1
        (again,) = store.claim_due_requests(conn, "acme", "alive", NOW, limit=5)
        assert again.id == claimed.id
        # The dead one's late outcome is refused.
        assert not store.finish_request(conn, claimed.id, worker="dead", state="sent", now=NOW)


def test_a_request_made_elsewhere_is_recorded_once(engine: Engine) -> None:
    with engine.begin() as conn:
        changed, request = store.record_external(conn, "acme", "111-0000000-0000001", "Request a Review", NOW)
        assert changed and (request.state, request.reason) == ("skipped", "Request a Review")
        assert not store.schedule_request(conn, "acme", "111-0000000-0000001", ALIAS, NOW, NOW)
        changed, request = store.record_external(conn, "acme", "111-0000000-0000001", "again", NOW)
        assert not changed and request.reason == "Request a Review"
    schedule(engine, "111-0000000-0000002")
    with engine.begin() as conn:
        changed, request = store.record_external(conn, "acme", "111-0000000-0000002", "by phone", NOW)
    assert changed and request.state == "skipped"


def test_orders_to_schedule_reads_only_recent_unasked_live_orders(engine: Engine) -> None:
    insert_order(engine, "111-0000000-0000001", delivered_at=NOW - timedelta(days=3),
                 items=(("TENT-2", "Tent"), ("PEG-8", "Pegs")))
    insert_order(engine, "111-0000000-0000002", delivered_at=NOW - timedelta(days=40))          # too old
    insert_order(engine, "111-0000000-0000003", status="cancelled", delivered_at=NOW - timedelta(days=3))
    insert_order(engine, "111-0000000-0000004", status="shipped",
                 estimated_delivery_from=NOW - timedelta(days=2), estimated_delivery_to=NOW + timedelta(days=2))
    insert_order(engine, "111-0000000-0000005", delivered_at=NOW - timedelta(days=3))           # asked already
    insert_order(engine, "111-0000000-0000006", status="pending")                              # no date yet
    schedule(engine, "111-0000000-0000005")
    with engine.begin() as conn:
        found = store.orders_to_schedule(conn, "acme", NOW - timedelta(days=30), limit=100)
        assert store.orders_since(conn, "acme", NOW - timedelta(days=30)) == 6
    assert [r.facts.order_id[-1] for r in found] == ["1", "4"]
    assert found[0].facts.skus == ("TENT-2", "PEG-8") and found[0].titles == ("Tent", "Pegs")
    assert found[1].facts.estimated_delivery_to == NOW + timedelta(days=2)


def test_an_opt_out_cancels_only_scheduled_requests_and_status_counts_them(engine: Engine) -> None:
    schedule(engine, "111-0000000-0000001")
    schedule(engine, "111-0000000-0000002", NOW - timedelta(days=1))
    with engine.begin() as conn:
        (sent,) = store.claim_due_requests(conn, "acme", "w", NOW, limit=1)
        store.finish_request(conn, sent.id, worker="w", state="sent", now=NOW, outbox_message_id="m@x")
        assert store.cancel_scheduled_of_buyer(conn, "acme", ALIAS, "buyer opted out", NOW) == 1
        store.mark_not_delivered(conn, sent.id, store.NOT_DELIVERED_OPTED_OUT, NOW)
        counts = store.feedback_counts(conn, "acme")
        listed = store.list_requests(conn, ["acme"], 10)
    assert counts == {"scheduled": 0, "claimed": 0, "sent": 1, "skipped": 0, "cancelled": 1,
                      "not_delivered_opted_out": 1}
    assert [(r["order_id"][-1], r["state"], r["reason"]) for r in listed] == [
        ("2", "sent", store.NOT_DELIVERED_OPTED_OUT), ("1", "cancelled", "buyer opted out")]


def _plans(engine: Engine, run: Callable[[Connection], object]) -> list[str]:
    """EXPLAIN QUERY PLAN (SQLite) of every SELECT ``run`` makes, with the parameters it made it with."""
    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    with engine.begin() as conn:
        event.listen(engine, "before_cursor_execute", keep)
        try:
            run(conn)
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        return [" | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
                for sql, params in seen]


@pytest.mark.parametrize(("query", "index"), [
    (lambda conn: store.orders_to_schedule(conn, "acme", NOW - timedelta(days=30), limit=100),
     r"ix_orders_account_delivery \(account=\? AND <expr>>\?\)"),
    (lambda conn: store.claim_due_requests(conn, "acme", "w", NOW, 20),
     r"ix_feedback_due \(account=\? AND state=\? AND due_at<\?\)"),
    (lambda conn: store.last_buyer_message_at(conn, "acme", ALIAS), r"ix_conversation_buyer \(buyer_id=\?\)"),
    (lambda conn: store.orders_since(conn, "acme", NOW),
     r"ix_orders_account_purchased \(account=\? AND purchased_at>\?\)"),
])
def test_the_schedule_and_the_dispatcher_read_by_index(tmp_path: Path, query: Callable[[Connection], object],
                                                       index: str) -> None:
    """Their work grows with the orders in the window, the due rows, the buyer's conversations, not with all."""
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    try:
        insert_order(engine, "111-0000000-0000001", delivered_at=NOW - timedelta(days=3))
        schedule(engine, "111-0000000-0000002")
        first = _plans(engine, query)[0]
        assert re.search(rf"SEARCH \w+ USING (COVERING )?INDEX {index}", first), first
        assert "SCAN orders" not in first and "SCAN feedback_request" not in first, first
    finally:
        engine.dispose()
