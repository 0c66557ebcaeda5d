"""upsert_buyer: one statement that makes a buyer or finds it, keeping a new display name but never an empty one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from bridgekit import database, rows
from sqlalchemy.engine import Engine

from bridge import store
from bridge.store.buyers import upsert_buyer

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
ALIAS = "a@marketplace.amazon.com"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database(request.param, tmp_path) as opened:
        yield opened


def upsert(engine: Engine, name: str | None) -> int:
    with engine.begin() as conn:
        return upsert_buyer(conn, "acme", "marketplace.amazon.com", ALIAS, name, NOW)


@pytest.mark.parametrize(("names", "stored"), [
    ([None], None),
    ([""], ""),                               # a new buyer is made with what it was given
    (["Jane"], "Jane"),
    (["Jane", None], "Jane"),                 # no name, or an empty one: the stored one stays
    (["Jane", ""], "Jane"),
    ([None, "Jane"], "Jane"),                 # a name where there was none
    (["Jane", "Jane D."], "Jane D."),         # a changed name is kept
    (["Jane", "Jane D.", "Jane"], "Jane"),
])
def test_one_buyer_per_alias_and_its_name(engine: Engine, names: list[str | None], stored: str | None) -> None:
    ids = {upsert(engine, name) for name in names}
    (buyer,) = rows(engine, store.BUYER)
    assert ids == {buyer.id}
    assert (buyer.account, buyer.alias, buyer.marketplace, buyer.name) == (
        "acme", ALIAS, "marketplace.amazon.com", stored)


def test_a_buyer_made_by_an_opt_out_is_found_and_named(engine: Engine) -> None:
    with engine.begin() as conn:
        store.set_opt_out(conn, "acme", ALIAS, opted_out=True, source="test", now=NOW)
    buyer_id = upsert(engine, "Jane")
    (buyer,) = rows(engine, store.BUYER)
    assert (buyer.id, buyer.name, buyer.opted_out_source) == (buyer_id, "Jane", "test")


def test_a_buyer_another_transaction_is_making_is_waited_for_not_made_again(tmp_path: Path) -> None:
    """PostgreSQL: `mailbridge optout add` makes the buyer while a batch threads its first message; the batch
    finds that buyer once the other commits, instead of failing on the unique key (which would abort it)."""
    with database("postgresql", tmp_path) as engine:
        other = engine.connect()
        other.begin()
        store.set_opt_out(other, "acme", ALIAS, opted_out=True, source="cli", now=NOW)   # not committed yet
        found: list[int | BaseException] = []

        def batch() -> None:
            try:
                found.append(upsert(engine, "Jane"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                found.append(exc)

        thread = threading.Thread(target=batch)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the upsert did not wait for the uncommitted buyer row"
        other.commit()
        other.close()
        thread.join(30)
        (buyer,) = rows(engine, store.BUYER)
        assert found == [buyer.id] and (buyer.name, buyer.opted_out_source) == ("Jane", "cli")
