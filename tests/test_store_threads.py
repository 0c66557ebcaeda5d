"""Threading one inbound batch (store.BatchThreads): held touches written together end as single touches would.

Each case is a batch of messages (conversation key, the notification's Message-ID or
None, the commMgrTok or None) and where it is flushed; the conversations the database
holds after it, and the "before" each message saw, are compared with the plain model
of one touch per message in order (:func:`model`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bridgekit import rows
from sqlalchemy.engine import Engine

from bridge import store
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
Message = tuple[str, "str | None", "str | None"]     # key, staff notification Message-ID, commMgrTok
State = tuple[int, "str | None", "str | None", "str | None"]   # count, root, last, token


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    yield engine
    engine.dispose()


def model(stored: dict[str, State], batch: list[Message]) -> tuple[dict[str, State], list[State | None]]:
    """One touch per message, in order: the conversations after, and what each message saw before it."""
    convs = dict(stored)
    seen: list[State | None] = []
    for key, staff, tok in batch:
        before = convs.get(key)
        seen.append(before)
        if before is None:
            convs[key] = (1, staff, staff, tok)
        else:
            count, root, last, token = before
            convs[key] = (count + 1, root or staff, staff or last, token or tok)
    return convs, seen


def thread(threads: store.BatchThreads, conn: object, key: str, staff: str | None, tok: str | None,
           name: str = "Jane") -> store.ConversationRef:
    return threads.thread(conn, marketplace="marketplace.amazon.com",  # type: ignore[arg-type]
                          alias=f"{key}@marketplace.amazon.com", buyer_name=name, key=key, order_id=None,
                          comm_mgr_tok=tok, subject="Order", now=NOW, staff_message_id=staff)


def stored_state(engine: Engine) -> dict[str, State]:
    return {r.key: (r.message_count, r.staff_root_id, r.staff_last_id, r.comm_mgr_tok)
            for r in rows(engine, store.CONV)}


BATCHES = [
    # (what an earlier batch made, this batch, flush after these positions (and always at the end))
    ([], [("a", "n1", None), ("a", "n2", "TOK"), ("a", "n3", "OTHER")], []),
    ([], [("a", None, None), ("b", "n1", None), ("a", "n2", None), ("b", None, "T"), ("a", None, None)], [1, 3]),
    ([("a", "n0", "T0")], [("a", "n1", "T1"), ("a", None, None), ("a", "n2", None)], []),
    ([("a", None, None)], [("a", None, "T1"), ("a", "n1", None), ("a", "n2", "T2")], [0]),
    ([("a", "n0", None), ("b", "m0", None)], [("b", "m1", None), ("c", None, None), ("a", "n1", None),
                                               ("c", "k1", "T"), ("b", None, None)], [0, 1, 2, 3, 4]),
]


def aliases(messages: list[Message]) -> list[str]:
    return [f"{m[0]}@marketplace.amazon.com" for m in messages]


@pytest.mark.parametrize("buyers_read_first", [False, True])
@pytest.mark.parametrize("earlier, batch, flushes", BATCHES)
def test_held_touches_end_as_one_touch_per_message(engine: Engine, earlier: list[Message], batch: list[Message],
                                                   flushes: list[int], buyers_read_first: bool) -> None:
    with engine.begin() as conn:
        first = store.BatchThreads(conn, "acme", [m[0] for m in earlier])
        for key, staff, tok in earlier:
            thread(first, conn, key, staff, tok)
        first.flush(conn, NOW)
    stored = stored_state(engine)
    expected, expected_seen = model(stored, batch)
    with engine.begin() as conn:
        threads = store.BatchThreads(conn, "acme", [m[0] for m in batch], aliases(batch) if buyers_read_first else ())
        seen = []
        for i, (key, staff, tok) in enumerate(batch):
            ref = thread(threads, conn, key, staff, tok)
            seen.append(ref)
            if i in flushes:
                threads.flush(conn, NOW + timedelta(minutes=5))
        threads.flush(conn, NOW + timedelta(minutes=5))
    assert stored_state(engine) == expected
    for ref, want in zip(seen, expected_seen):
        if want is None:
            assert (ref.message_count, ref.staff_root_id, ref.staff_last_id) == (0, None, None)
        else:
            assert (ref.message_count, ref.staff_root_id, ref.staff_last_id) == want[:3]
    assert len(rows(engine, store.BUYER)) == len(expected)
    assert all(r.status == "open" for r in rows(engine, store.CONV))


def test_a_rolled_back_message_is_forgotten_and_the_next_reads_the_database(engine: Engine) -> None:
    with engine.begin() as conn:
        threads = store.BatchThreads(conn, "acme", ["a", "b"], ["a@marketplace.amazon.com", "b@marketplace.amazon.com"])
        thread(threads, conn, "a", "n1", None)
        savepoint = conn.begin_nested()
        thread(threads, conn, "a", "n2", None)             # this message fails after threading:
        thread(threads, conn, "b", "m1", None)             # a new conversation, rolled back with it
        savepoint.rollback()
        threads.forget()
        before_b = thread(threads, conn, "b", "m2", None)
        before_a = thread(threads, conn, "a", "n3", None)
        threads.flush(conn, NOW)
    assert (before_a.message_count, before_a.staff_last_id) == (1, "n1")
    assert before_b.message_count == 0
    assert stored_state(engine) == {"a": (2, "n1", "n3", None), "b": (1, "m2", "m2", None)}


def test_a_new_display_name_renames_the_buyer_once(engine: Engine) -> None:
    with engine.begin() as conn:
        threads = store.BatchThreads(conn, "acme", ["a"])
        thread(threads, conn, "a", None, None, name="Jane")
        thread(threads, conn, "a", None, None, name="Jane D.")
        thread(threads, conn, "a", None, None, name="Jane D.")
        threads.flush(conn, NOW)
    (buyer,) = rows(engine, store.BUYER)
    assert buyer.name == "Jane D."


def test_a_buyer_made_by_others_after_a_flush_is_not_made_again(engine: Engine) -> None:
    # A bounce in the batch may opt a buyer out before their first message is threaded: that makes the
    # buyer row. The batch read "no buyer" for that alias before; after the flush it must not trust it.
    with engine.begin() as conn:
        threads = store.BatchThreads(conn, "acme", ["a"], ["a@marketplace.amazon.com"])
        threads.flush(conn, NOW)
        store.set_opt_out(conn, "acme", "a@marketplace.amazon.com", opted_out=True, source="test", now=NOW)
        thread(threads, conn, "a", "n1", None)
        threads.flush(conn, NOW)
    (buyer,) = rows(engine, store.BUYER)
    (conv,) = rows(engine, store.CONV)
    assert conv.buyer_id == buyer.id and buyer.name == "Jane"


def test_a_new_name_given_in_a_new_conversation_is_kept_for_the_buyers_others(engine: Engine) -> None:
    with engine.begin() as conn:
        first = store.BatchThreads(conn, "acme", ["a"])
        thread(first, conn, "a", None, None, name="Jane")
        first.flush(conn, NOW)
    with engine.begin() as conn:
        threads = store.BatchThreads(conn, "acme", ["a", "a2"], ["a@marketplace.amazon.com"])
        threads.thread(conn, marketplace="marketplace.amazon.com", alias="a@marketplace.amazon.com",
                       buyer_name="Jane D.", key="a2", order_id=None, comm_mgr_tok=None, subject="Order", now=NOW)
        thread(threads, conn, "a", None, None, name="Jane")    # the old name again: the buyer is renamed back
        threads.flush(conn, NOW)
    (buyer,) = rows(engine, store.BUYER)
    assert buyer.name == "Jane" and len(rows(engine, store.CONV)) == 2
