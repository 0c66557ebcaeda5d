"""The orders store on SQLite: upserts merge and never duplicate, look-ups, the buyer link, status changes.

``check_upserts`` is run on PostgreSQL too (tests/test_postgres.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bridgekit import rows
from sqlalchemy.engine import Engine

from bridge import store
from bridge.domain.orders import ItemFacts, OrderFacts
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
TENT = "111-2223334-4445556"
STOVE = "111-0000002-0000002"
ALIAS = "k3j9x0qma2b7@marketplace.amazon.com"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    yield engine
    engine.dispose()


def check_upserts(engine: Engine) -> None:
    """Create, update, re-import: counts, merged values, no duplicates (any database)."""
    first = [OrderFacts(TENT, status="shipped", purchased_at=NOW - timedelta(days=3),
                        items=(ItemFacts("A", "A", None, "Tent", 1), ItemFacts("B", "B", None, "Pegs", 4))),
             OrderFacts(STOVE, status="pending", items=(ItemFacts("S"),))]
    with engine.begin() as conn:
        counts = store.upsert_orders(conn, "acme", first, NOW)
    assert (counts.created, counts.updated, counts.items_created, counts.items_updated) == (2, 0, 3, 0)
    with engine.begin() as conn:   # the same again: nothing written
        counts = store.upsert_orders(conn, "acme", first, NOW + timedelta(hours=1))
    assert (counts.created, counts.updated, counts.items_created, counts.items_updated) == (0, 0, 0, 0)
    later = [OrderFacts(TENT, status="pending", buyer_alias=ALIAS, items=(ItemFacts("A", "A", "B0A", "Tent", 2),)),
             OrderFacts(STOVE, status="cancelled")]
    with engine.begin() as conn:
        counts = store.upsert_orders(conn, "acme", later, NOW + timedelta(hours=2))
        tent = store.order_by_id(conn, "acme", TENT)
        stove = store.order_by_id(conn, "acme", STOVE)
        other = store.order_by_id(conn, "other", TENT)
    assert (counts.created, counts.updated, counts.items_created, counts.items_updated) == (0, 2, 0, 1)
    assert tent is not None and tent.status == "shipped" and tent.buyer_alias == ALIAS     # never back to pending
    assert tent.purchased_at == NOW - timedelta(days=3)
    assert tent.items == (ItemFacts("A", "A", "B0A", "Tent", 2), ItemFacts("B", "B", None, "Pegs", 4))
    assert stove is not None and stove.status == "cancelled" and other is None
    assert len(rows(engine, store.ORDERS)) == 2 and len(rows(engine, store.ORDER_ITEM)) == 3


def test_upserts_merge_and_never_duplicate(engine: Engine) -> None:
    check_upserts(engine)


def test_accounts_are_kept_apart(engine: Engine) -> None:
    with engine.begin() as conn:
        store.upsert_orders(conn, "acme", [OrderFacts(TENT, status="shipped")], NOW)
        store.upsert_orders(conn, "other", [OrderFacts(TENT, status="pending")], NOW)
        assert [o["account"] for o in store.orders_for_account(conn, ["other"])] == ["other"]
        assert store.order_by_id(conn, "acme", TENT).status == "shipped"   # type: ignore[union-attr]


def test_orders_made_earlier_in_the_same_import_count_as_created(engine: Engine) -> None:
    with engine.begin() as conn:
        store.upsert_orders(conn, "acme", [OrderFacts(TENT, items=(ItemFacts("A"),))], NOW, created_since=NOW)
        counts = store.upsert_orders(conn, "acme", [OrderFacts(TENT, items=(ItemFacts("B"),))], NOW,
                                     created_since=NOW)
    assert (counts.created, counts.updated, counts.items_created) == (0, 0, 1)


def test_link_buyer_and_set_order_status(engine: Engine) -> None:
    with engine.begin() as conn:
        assert store.link_buyer(conn, "acme", TENT, ALIAS, NOW) is True          # an order not known yet is made
        assert store.link_buyer(conn, "acme", TENT, ALIAS, NOW) is False
        assert store.set_order_status(conn, "acme", STOVE, "cancelled", NOW) is None
        assert store.set_order_status(conn, "acme", TENT, "delivered", NOW) is True
        assert store.set_order_status(conn, "acme", TENT, "shipped", NOW) is False     # forward only
        assert store.set_order_status(conn, "acme", TENT, None, NOW, open_claim=True) is True
        assert store.set_order_status(conn, "acme", TENT, "shipped", NOW, force=True) is True
        (listed,) = store.orders_for_account(conn, ["acme"])
    assert listed["buyer_alias"] == ALIAS and listed["status"] == "shipped" and listed["open_claim"] is True


LINK_CASES = [
    # (what is stored before, the link a buyer message gives)
    (None, OrderFacts(TENT, buyer_alias=ALIAS)),                                          # not known yet: made
    (None, OrderFacts(TENT, buyer_alias=ALIAS, marketplace="amazon.de", language="de")),
    (OrderFacts(TENT, status="shipped", buyer_alias=ALIAS), OrderFacts(TENT, buyer_alias=ALIAS)),   # nothing new
    (OrderFacts(TENT, status="shipped", buyer_alias="old0000000@marketplace.amazon.com", marketplace="amazon.de",
                language="de"), OrderFacts(TENT, buyer_alias=ALIAS)),                     # the writer's alias wins
    (OrderFacts(TENT, status="delivered", buyer_alias=ALIAS, marketplace="amazon.de", language="de"),
     OrderFacts(TENT, buyer_alias=ALIAS, marketplace="amazon.co.uk", language="en")),
    (OrderFacts(TENT, status="cancelled", buyer_alias=ALIAS, marketplace="amazon.de"),
     OrderFacts(TENT, buyer_alias=ALIAS, marketplace="amazon.de", language="de")),
    (OrderFacts(TENT, status="pending", open_claim=True, purchased_at=NOW - timedelta(days=2)),
     OrderFacts(TENT, buyer_alias=ALIAS, language="ja")),
]


def check_link_buyer(engine: Engine, stored: OrderFacts | None, link: OrderFacts) -> None:
    """link_buyer (one statement) leaves an order exactly as the general merge (upsert_orders) does."""
    later = NOW + timedelta(hours=1)
    with engine.begin() as conn:
        for account in ("linked", "merged"):
            if stored is not None:
                store.upsert_orders(conn, account, [stored], NOW - timedelta(days=1))
        changed = store.link_buyer(conn, "linked", TENT, ALIAS, later, link)
        counts = store.upsert_orders(conn, "merged", [link], later)
        linked, merged = store.order_by_id(conn, "linked", TENT), store.order_by_id(conn, "merged", TENT)
        assert changed is bool(counts.created or counts.updated)
        assert linked == merged
        assert store.link_buyer(conn, "linked", TENT, ALIAS, later, link) is False     # said once is enough
        assert len(store.orders_for_account(conn, "linked")) == 1


@pytest.mark.parametrize("stored, link", LINK_CASES)
def test_link_buyer_is_the_general_merge_in_one_statement(engine: Engine, stored: OrderFacts | None,
                                                          link: OrderFacts) -> None:
    check_link_buyer(engine, stored, link)


OTHER = "other0000@marketplace.amazon.com"
LINK_BATCHES = [
    [OrderFacts(TENT, buyer_alias=ALIAS)],
    [OrderFacts(TENT, buyer_alias=ALIAS, marketplace="amazon.de"), OrderFacts(STOVE, buyer_alias=OTHER),
     OrderFacts(TENT, buyer_alias=OTHER, language="de"), OrderFacts(TENT, buyer_alias=ALIAS)],
    [OrderFacts(STOVE, buyer_alias=OTHER, language="ja"), OrderFacts(STOVE, buyer_alias=OTHER, language="en"),
     OrderFacts(STOVE, buyer_alias=OTHER)],
]


def check_link_buyers(engine: Engine, links: list[OrderFacts]) -> None:
    """Links held and written together (link_buyers) leave the orders as one link_buyer after another."""
    with engine.begin() as conn:
        for account in ("one-by-one", "together"):
            store.upsert_orders(conn, account, [OrderFacts(TENT, status="shipped", buyer_alias="report00@x.example",
                                                           marketplace="amazon.com")], NOW)
        for link in links:
            store.link_buyer(conn, "one-by-one", link.order_id, link.buyer_alias or "", NOW, link)
        store.link_buyers(conn, "together", links, NOW)
        assert store.orders_for_account(conn, "together") == [
            {**o, "account": "together"} for o in store.orders_for_account(conn, "one-by-one")]


@pytest.mark.parametrize("links", LINK_BATCHES)
def test_links_written_together_end_as_one_after_another(engine: Engine, links: list[OrderFacts]) -> None:
    check_link_buyers(engine, links)


@pytest.mark.parametrize("link", [OrderFacts(TENT, buyer_alias="other0000@marketplace.amazon.com"),
                                  OrderFacts(STOVE, buyer_alias=ALIAS),
                                  OrderFacts(TENT, buyer_alias=ALIAS, status="shipped")])
def test_link_buyer_refuses_a_link_about_something_else(engine: Engine, link: OrderFacts) -> None:
    with engine.begin() as conn, pytest.raises(ValueError):
        store.link_buyer(conn, "acme", TENT, ALIAS, NOW, link)


def test_listing_is_plain_values_newest_first(engine: Engine) -> None:
    with engine.begin() as conn:
        store.upsert_orders(conn, "acme", [
            OrderFacts(STOVE, purchased_at=NOW - timedelta(days=5)),
            OrderFacts(TENT, purchased_at=NOW - timedelta(days=1), items=(ItemFacts("A", "A", None, "Tent", 1),))],
            NOW)
        listed = store.orders_for_account(conn, "acme")
        assert store.orders_for_account(conn, "acme", limit=1) == listed[:1]
    assert [o["order_id"] for o in listed] == [TENT, STOVE]
    assert listed[0]["purchased_at"] == "2026-11-22T12:00:00+00:00" and listed[0]["status"] == "pending"
    assert listed[0]["items"] == [{"item_key": "A", "sku": "A", "asin": None, "title": "Tent", "quantity": 1}]


@pytest.mark.parametrize(("n", "sizes"), [
    (1, [1]), (2, [2]), (3, [4]), (500, [512]), (512, [512]), (513, [512, 1]), (1100, [512, 512, 128])])
def test_look_ups_go_in_few_statement_shapes(n: int, sizes: list[int]) -> None:
    from bridge.store.orders import _in_groups

    groups = list(_in_groups(list(range(n))))
    assert [len(g) for g in groups] == sizes
    assert sorted({k for g in groups for k in g}) == list(range(n))
