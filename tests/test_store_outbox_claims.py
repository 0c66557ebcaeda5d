"""Claims of outbox batches: queue order by priority then due time, the cap on buyer rows, one claimer per row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from bridge import store
from bridge.domain.delivery import priority
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    yield engine
    engine.dispose()


def queue(engine: Engine, name: str, audience: str, category: str | None, minutes_ago: int) -> int:
    with engine.begin() as conn:
        return store.enqueue(conn, account="acme", message_id=f"{name}@x", purpose=name, audience=audience,
                             envelope_from="s@x", recipients=("r@x",), subject=name, raw=b"x",
                             now=NOW - timedelta(minutes=minutes_ago), category=category)


ROWS = [   # name, audience, category, queued minutes ago
    ("feedback-old", "buyer", "unsolicited", 90),
    ("notification-old", "staff", None, 60),
    ("critical", "buyer", "critical", 50),
    ("reply-new", "buyer", "reply", 1),
    ("notification-new", "staff", None, 5),
    ("reply-old", "buyer", "reply", 30),
]


@pytest.mark.parametrize(("limit", "expected"), [
    (6, ["reply-old", "reply-new", "notification-old", "notification-new", "feedback-old", "critical"]),
    (3, ["reply-old", "reply-new", "notification-old"]),
    (1, ["reply-old"]),
])
def test_a_batch_is_claimed_in_priority_order_then_the_most_overdue(engine: Engine, limit: int,
                                                                   expected: list[str]) -> None:
    for row in ROWS:
        queue(engine, *row)
    with engine.begin() as conn:
        claimed = store.claim_batch(conn, "acme", "w1", NOW, limit)
    assert [c.purpose for c in claimed] == expected
    # The SQL order is the domain's: priorities never go down along the batch.
    ranks = [priority(c.audience, c.category) for c in claimed]
    assert ranks == sorted(ranks)
    assert {c.attempts for c in claimed} == {1}


@pytest.mark.parametrize(("max_buyer", "expected"), [
    (None, ["reply-old", "reply-new", "notification-old", "notification-new", "feedback-old", "critical"]),
    (1, ["reply-old"]),   # the batch ends before the next buyer row: the staff rows wait for the next batch
])
def test_a_batch_holds_at_most_max_buyer_buyer_rows(engine: Engine, max_buyer: int | None,
                                                    expected: list[str]) -> None:
    for row in ROWS:
        queue(engine, *row)
    with engine.begin() as conn:
        claimed = store.claim_batch(conn, "acme", "w1", NOW, 10, max_buyer=max_buyer)
    assert [c.purpose for c in claimed] == expected


def test_claimed_rows_are_not_claimed_again_and_release_gives_them_back_untouched(engine: Engine) -> None:
    ids = [queue(engine, f"n{i}", "staff", None, 10 - i) for i in range(5)]
    with engine.begin() as conn:
        first = store.claim_batch(conn, "acme", "w1", NOW, 3)
        second = store.claim_batch(conn, "acme", "w2", NOW, 3)
    assert [c.id for c in first] == ids[:3] and [c.id for c in second] == ids[3:]
    with engine.begin() as conn:
        assert store.release_claims(conn, [c.id for c in first], "w2") == 0      # not w2's to give back
        assert store.release_claims(conn, [c.id for c in first], "w1", "paused") == 3
        again = store.claim_batch(conn, "acme", "w3", NOW, 10)
    assert [c.id for c in again] == ids[:3] and {c.attempts for c in again} == {1}


def test_window_use_counts_sends_and_names_the_one_that_frees_a_token(engine: Engine) -> None:
    ids = [queue(engine, f"n{i}", "staff", None, 0) for i in range(5)]
    with engine.begin() as conn:
        store.claim_batch(conn, "acme", "w", NOW, 5)
        for n, outbox_id in enumerate(ids):
            store.finish_send(conn, outbox_id, worker="w", state="sent", now=NOW - timedelta(seconds=50 - n * 10))
        since = NOW - timedelta(minutes=1)
        assert store.window_use(conn, "acme", since, None).count == 5
        assert store.window_use(conn, "acme", since, 10).freeing_send is None
        # At 4 a minute, the send at offset 1 (40 s ago) must leave the window before another goes.
        use = store.window_use(conn, "acme", since, 4)
        assert use.count == 5 and use.freeing_send == NOW - timedelta(seconds=40)
        assert store.window_use(conn, "other", since, 4).count == 0
