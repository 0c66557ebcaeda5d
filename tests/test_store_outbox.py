"""Operator retry/cancel on the outbox: they act only on the row as they read it, and say when they did not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from bridgekit import row_moves_on_before_update
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from bridge import store
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
WHO = "jo (mailbridge outbox)"
OperatorAction = Callable[..., object]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    yield engine
    engine.dispose()


def queue_row(engine: Engine, state: str, account: str = "acme") -> int:
    with engine.begin() as conn:
        outbox_id = store.enqueue(conn, account=account, message_id=f"{state}.{account}@x", purpose="buyer_reply",
                                  audience="buyer", envelope_from="s@x", recipients=("b@marketplace.amazon.com",),
                                  subject="s", raw=b"x", now=NOW, state=state, category="unsolicited")
        conn.execute(update(store.OUTBOX).where(store.OUTBOX.c.id == outbox_id).values(attempts=3))
    return outbox_id


def state_of(engine: Engine, outbox_id: int) -> tuple[str, int, str | None]:
    with engine.begin() as conn:
        row = conn.execute(select(store.OUTBOX.c.state, store.OUTBOX.c.attempts, store.OUTBOX.c.last_error)
                           .where(store.OUTBOX.c.id == outbox_id)).one()
    return row.state, row.attempts, row.last_error


@pytest.mark.parametrize("state", store.RETRYABLE)
def test_retry_queues_the_row_again_and_returns_it_as_it_was(engine: Engine, state: str) -> None:
    outbox_id = queue_row(engine, state)
    with engine.begin() as conn:
        row = store.operator_retry(conn, outbox_id, ["acme"], NOW, WHO)
    assert row is not None and row.state == state and row.audience == "buyer"
    assert state_of(engine, outbox_id) == ("queued", 0, f"{state}; released by {WHO} at 2026-11-23T12:00:00+00:00")


@pytest.mark.parametrize("state", store.CANCELLABLE)
def test_cancel_drops_the_row_and_returns_it_as_it_was(engine: Engine, state: str) -> None:
    outbox_id = queue_row(engine, state)
    with engine.begin() as conn:
        row = store.operator_cancel(conn, outbox_id, ["acme"], NOW, WHO)
    assert row is not None and row.state == state
    assert state_of(engine, outbox_id)[0] == "cancelled"


@pytest.mark.parametrize(("action", "state"), [
    (store.operator_retry, "sent"), (store.operator_retry, "cancelled"), (store.operator_retry, "queued"),
    (store.operator_cancel, "sent"), (store.operator_cancel, "sending"), (store.operator_cancel, "cancelled"),
])
def test_a_row_in_a_final_or_busy_state_is_left_alone(engine: Engine, action: OperatorAction, state: str) -> None:
    outbox_id = queue_row(engine, state)
    before = state_of(engine, outbox_id)
    with engine.begin() as conn:
        assert action(conn, outbox_id, ["acme"], NOW, WHO) is None
    assert state_of(engine, outbox_id) == before


def test_another_accounts_row_and_a_missing_row_are_not_found(engine: Engine) -> None:
    outbox_id = queue_row(engine, "held", account="other")
    with engine.begin() as conn:
        assert store.operator_retry(conn, outbox_id, ["acme"], NOW, WHO) is None
        assert store.operator_cancel(conn, outbox_id + 1, ["acme", "other"], NOW, WHO) is None
    assert state_of(engine, outbox_id)[0] == "held"


@pytest.mark.parametrize(("action", "read", "moved_to"), [
    # An opt-out notice cancels the held unsolicited row while the operator releases it.
    (store.operator_retry, "held", "cancelled"),
    # Another operator released the failed row a moment earlier; the daemon has claimed it.
    (store.operator_retry, "failed", "sending"),
    # Another operator released the row; this one's cancel must not report what it did not do.
    (store.operator_cancel, "failed", "queued"),
    (store.operator_cancel, "unknown", "sent"),
])
def test_a_row_that_moved_on_after_the_read_is_not_touched_and_not_reported_done(
        engine: Engine, action: OperatorAction, read: str, moved_to: str) -> None:
    outbox_id = queue_row(engine, read)
    with engine.begin() as conn, row_moves_on_before_update(conn, outbox_id, moved_to):
        # None: the CLI then reports failure and writes no override to the audit log.
        assert action(conn, outbox_id, ["acme"], NOW, WHO) is None
    assert state_of(engine, outbox_id) == (moved_to, 3, None)
