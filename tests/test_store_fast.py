"""store._Fast: the ingest hot path's statements, run on the SQLite cursor, must store exactly
what SQLAlchemy's own execute() stores, and fail with SQLAlchemy's exceptions."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc, text

from bridge import store
from bridge.db import open_database

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=timezone.utc)

MESSAGE = dict(
    account="acme", folder="INBOX", uidvalidity=7, uid=1, message_id="m1@x", content_hash="h" * 64, kind="buyer",
    rule_hits="[]", disposition="forwarded", from_addr="a@marketplace.amazon.com", to_addrs='["s@x"]',
    subject="Grüße ✓", sent_date=NOW, received_at=NOW, in_reply_to=None, references="[]", order_id="111-2223334-4445556",
    comm_mgr_tok=None, buyer_address="a@marketplace.amazon.com", text="Hallo\nWelt", size=123, defects="[]",
    conversation_id=None, duplicate_of=None, raw=b"\x00\xffraw",
)
OUTBOX = dict(
    account="acme", message_id="mb.1@x", purpose="staff_notification", audience="staff", conversation_id=None,
    source_message_id=None, envelope_from="s@x", recipients='["t@x"]', subject="s", raw=b"bytes", state="queued",
    attempts=0, next_attempt_at=NOW, created_at=NOW, copied_to_sent=False, dedupe_key=None, last_error=None,
    category=None,
)
BUYER = dict(account="acme", marketplace="marketplace.amazon.com", alias="a@marketplace.amazon.com", name="Ann",
             created_at=NOW)
CONV = dict(account="acme", key="a#1", buyer_id=None, order_id="1", comm_mgr_tok=None, subject="s", status="open",
            created_at=NOW, last_message_at=NOW, message_count=1, staff_root_id="r@x", staff_last_id="r@x")


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    return open_database(f"sqlite:///{tmp_path}/fast.db")


def _row(conn: Any, table: Any, row_id: int) -> dict[str, Any]:
    values = dict(conn.execute(table.select().where(table.c.id == row_id)).mappings().one())
    values.pop("id")
    return values


@pytest.mark.parametrize("fast,table,values,unique", [
    (store._MESSAGE_INSERT, store.MESSAGE, MESSAGE, ("uid", 2)),
    (store._OUTBOX_INSERT, store.OUTBOX, OUTBOX, ("message_id", "mb.2@x")),
    (store._BUYER_INSERT, store.BUYER, BUYER, ("alias", "b@marketplace.amazon.com")),
    (store._CONV_INSERT, store.CONV, CONV, ("key", "a#2")),
], ids=["message", "outbox", "buyer", "conversation"])
def test_fast_insert_stores_what_sqlalchemy_stores(engine: Any, fast: Any, table: Any, values: dict[str, Any],
                                                   unique: tuple[str, Any]) -> None:
    with engine.begin() as conn:
        if table is store.CONV:
            values = {**values, "buyer_id": store._BUYER_INSERT.insert(conn, {**BUYER, "alias": "c@x"})}
        fast_id = fast.insert(conn, values)
        key, other = unique
        slow_id = int(conn.execute(fast.stmt, {**values, key: other}).inserted_primary_key[0])
        assert slow_id == fast_id + 1
        fast_row, slow_row = _row(conn, table, fast_id), _row(conn, table, slow_id)
        assert (fast_row.pop(key), slow_row.pop(key)) == (values[key], other)
        assert fast_row == slow_row
        # Stored text, too (SQLite keeps what it is given: a different datetime format would differ here).
        cols = ", ".join(f'quote("{c.name}")' for c in table.columns if c.name not in ("id", key))
        raw = [tuple(conn.execute(text(f"SELECT {cols} FROM {table.name} WHERE id = :i"), {"i": i}).one())
               for i in (fast_id, slow_id)]
        assert raw[0] == raw[1]


def test_fast_update_and_select_match(engine: Any) -> None:
    with engine.begin() as conn:
        buyer = store._BUYER_INSERT.insert(conn, BUYER)
        conv = store._CONV_INSERT.insert(conn, {**CONV, "buyer_id": buyer, "staff_root_id": None,
                                                "staff_last_id": None})
        ref = store.thread_message(conn, account="acme", marketplace="m", alias=BUYER["alias"], buyer_name="Bo",
                                   key="a#1", order_id="1", comm_mgr_tok="TOK", subject="s", now=NOW,
                                   staff_message_id="n1@x")
        assert ref == store.ConversationRef(conv, None, None, 1)
        store.raise_flags(conn, conv, ["A-TO-Z CLAIM"])
        store.raise_flags(conn, conv, ["COURTESY REFUND", "A-TO-Z CLAIM"])
        row = _row(conn, store.CONV, conv)
        assert (row["message_count"], row["comm_mgr_tok"], row["staff_root_id"], row["staff_last_id"]) == \
            (2, "TOK", "n1@x", "n1@x")
        assert row["flags"] == '["A-TO-Z CLAIM", "COURTESY REFUND"]'
        assert store.utc(row["last_message_at"]) == NOW
        assert _row(conn, store.BUYER, buyer)["name"] == "Bo"
        assert store._CONV.first(conn, {"account": "acme", "key": "nope"}) is None


def test_fast_statements_raise_sqlalchemy_errors(engine: Any) -> None:
    with engine.begin() as conn:
        with pytest.raises(exc.IntegrityError):          # NOT NULL: a per-message problem
            store._MESSAGE_INSERT.insert(conn, {**MESSAGE, "account": None})
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE message"))
        with pytest.raises(exc.OperationalError) as err:  # the database itself: systemic
            store._MESSAGE_INSERT.insert(conn, MESSAGE)
        assert "Hallo" not in str(err.value)             # parameters stay out of logs
        conn.rollback()


def test_a_datetime_bound_again_is_formatted_once_and_never_confused() -> None:
    from datetime import timedelta

    calls: list[Any] = []

    def process(value: Any) -> str | None:
        calls.append(value)
        return None if value is None else value.isoformat()

    memo = store._same_as_last(process)
    later = NOW + timedelta(seconds=1)
    elsewhere = NOW.astimezone(timezone(timedelta(hours=2)))
    assert elsewhere == NOW and elsewhere.isoformat() != NOW.isoformat()   # equal, yet written differently
    values = [NOW, NOW, NOW, later, NOW, elsewhere, elsewhere, None, None, NOW]
    assert [memo(v) for v in values] == [process(v) for v in values]
    calls.clear()
    for value in (later, later, later):
        memo(value)
    assert calls == [later]                                  # the same object again: formatted once


def test_a_new_database_gets_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    import sqlite3

    from bridge.db import SQLITE_PAGE_SIZE

    fresh = open_database(f"sqlite:///{tmp_path}/fresh.db")
    with fresh.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == SQLITE_PAGE_SIZE == 16384
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    old_path = tmp_path / "old.db"
    with sqlite3.connect(old_path) as made_before:   # a database from before: SQLite's default pages
        made_before.execute("CREATE TABLE kept (x)")
        made_before.execute("INSERT INTO kept VALUES (1)")
    old = open_database(f"sqlite:///{old_path}")
    with old.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
        assert conn.exec_driver_sql("SELECT x FROM kept").scalar() == 1
        store._MESSAGE_INSERT.insert(conn, MESSAGE)                     # and works as before


def test_statements_the_fast_path_cannot_run_exactly_are_refused(engine: Any) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, bindparam, update

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer, onupdate=7),
                  Column("m", Integer))
    fast = store._Fast(update(table).where(table.c.id == bindparam("row")).values(m=bindparam("m")), ("row", "m"))
    with pytest.raises(TypeError, match="onupdate"):
        fast._plan(engine.dialect)


def test_wal_checkpoints_after_about_4_mib_whatever_the_page_size(tmp_path: Path) -> None:
    import sqlite3

    from bridge.db import WAL_CHECKPOINT_BYTES

    fresh = open_database(f"sqlite:///{tmp_path}/fresh.db")
    with fresh.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() * 16384 == WAL_CHECKPOINT_BYTES
    with sqlite3.connect(tmp_path / "old.db") as made_before:
        made_before.execute("CREATE TABLE kept (x)")
    old = open_database(f"sqlite:///{tmp_path}/old.db")
    with old.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() * 4096 == WAL_CHECKPOINT_BYTES
