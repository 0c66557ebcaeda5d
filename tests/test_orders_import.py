"""Importing order reports (bridge.services.orders) and order mail applied in the inbound transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bridgekit import rows
from sqlalchemy.engine import Engine

from bridge import store
from bridge.domain.classify import ClassifyContext, classify
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS, AMAZON, EBAY, MARKETPLACES
from bridge.domain.marketplaces.protocol import NoticeItem, OrderNotice
from bridge.domain.parse import parse_mail
from bridge.services.orders import UnreadableReport, apply_order_mail, import_report
from bridge.store.engine import open_database

DATA = Path(__file__).parent / "data" / "orders"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
CTX = dict(seller_address="seller@acme.example", staff_address="support@acme.example",
           staff_senders=("*@acme.example",), reply_address="seller+{token}@acme.example",
           relay_domains=ALL_RELAY_DOMAINS, sent_by_us=False, replies_to_us=False)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    yield engine
    engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_three_reports_a_duplicated_row_and_a_reimport(engine: Engine) -> None:
    clock = Clock()
    seen: list[tuple[int, int, int]] = []
    first = import_report(engine, "acme", DATA / "all_orders.txt", lambda *p: seen.append(p), clock=clock)
    assert (first.layout, first.rows_read, first.orders_created, first.orders_updated) == ("all_orders", 5, 3, 0)
    assert [(b.line, b.reason.split(" '")[0]) for b in first.bad_rows] == [(6, "bad order id")]
    assert first.items_created == 4 and seen[-1][0] == 5 and seen[-1][1] == seen[-1][2] > 0

    clock.now += timedelta(hours=1)
    ship = import_report(engine, "acme", DATA / "shipments.txt", clock=clock)
    # 4 rows: the tent (already known: updated), a new German order, a bad date, the tent's row again.
    assert (ship.layout, ship.rows_read, ship.orders_created, ship.orders_updated, ship.bad) == \
        ("shipments", 4, 1, 1, 1)
    assert [(b.line, "unparseable date 'yesterday' in 'shipment-date'" in b.reason) for b in ship.bad_rows] == \
        [(4, True)]
    clock.now += timedelta(hours=1)
    merchant = import_report(engine, "acme", DATA / "merchant.csv", clock=clock)
    assert (merchant.layout, merchant.orders_created, merchant.orders_updated, merchant.bad) == ("merchant", 1, 1, 1)
    assert [b.line for b in merchant.bad_rows] == [4]

    with engine.begin() as conn:
        tent = store.order_by_id(conn, "acme", "111-0000001-0000001")
        lamp = store.order_by_id(conn, "acme", "111-0000004-0000004")
    assert tent is not None and tent.status == "shipped"
    assert tent.buyer_alias == "k3j9x0qma2b7@marketplace.amazon.com" and tent.buyer_name == "Jane Doe"
    assert tent.purchased_at == datetime(2026, 11, 2, 18, 15, tzinfo=timezone.utc)
    assert tent.shipped_at == datetime(2026, 11, 3, 17, 0, tzinfo=timezone.utc)
    # The merchant report's promise date is the latest estimate; the gmail address was not kept.
    assert tent.estimated_delivery_to == datetime(2026, 11, 8, tzinfo=timezone.utc)
    # One line per item whatever the report: All Orders keys by SKU, the others by order-item id.
    assert sorted((i.sku, i.quantity) for i in tent.items) == [("FOOT-2P", 2), ("TENT-2P", 1)]
    assert lamp is not None and lamp.buyer_alias == "z9y8x7w6v5u4@marketplace.amazon.de"
    assert lamp.marketplace == "amazon.de" and lamp.language == "de"
    assert len(rows(engine, store.ORDERS)) == 5 and len(rows(engine, store.ORDER_ITEM)) == 6

    # A re-import of the same files creates nothing (each may update what the one before changed: the
    # reports name the tent differently, and the latest report says what an item is called).
    clock.now += timedelta(hours=1)
    for name in ("all_orders.txt", "shipments.txt", "merchant.csv"):
        again = import_report(engine, "acme", DATA / name, clock=clock)
        assert (again.orders_created, again.items_created) == (0, 0)
    again = import_report(engine, "acme", DATA / "merchant.csv", clock=clock)     # the same file twice in a row
    assert (again.orders_created, again.orders_updated, again.items_created, again.items_updated) == (0, 0, 0, 0)
    assert len(rows(engine, store.ORDERS)) == 5 and len(rows(engine, store.ORDER_ITEM)) == 6
    # An All Orders report saying "Pending" for a shipped order (it is older) does not move it back.
    with engine.begin() as conn:
        assert store.order_by_id(conn, "acme", "111-0000001-0000001").status == "shipped"  # type: ignore[union-attr]


def test_small_chunks_count_orders_spanning_chunks_once(engine: Engine, tmp_path: Path) -> None:
    report = tmp_path / "r.txt"
    lines = ["amazon-order-id\tpurchase-date\torder-status\tsku\tquantity"]
    for n in range(10):
        lines += [f"111-0000000-{n:07d}\t2026-11-02\tShipped\tA\t1", f"111-0000000-{n:07d}\t2026-11-02\tShipped\tB\t1"]
    report.write_text("\n".join(lines) + "\n")
    summary = import_report(engine, "acme", report, chunk_rows=3, clock=Clock())
    assert (summary.rows_read, summary.orders_created, summary.orders_updated, summary.items_created) == \
        (20, 10, 0, 20)


@pytest.mark.parametrize(("content", "message"), [
    (b"date\tsettlement-id\ttotal\n2026-11-02\t1\t2\n", "Columns found: date, settlement-id, total"),
    (b"", "empty"),
    (b"\xff\xfeamazon-order-id\n", "cannot read"),
])
def test_unreadable_reports(engine: Engine, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "report.txt"
    path.write_bytes(content)
    with pytest.raises(UnreadableReport, match=message):
        import_report(engine, "acme", path)
    with pytest.raises(UnreadableReport, match="cannot read"):
        import_report(engine, "acme", tmp_path / "missing.txt")
    assert rows(engine, store.ORDERS) == []


def test_a_utf8_bom_and_windows_line_ends(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes(b"\xef\xbb\xbfamazon-order-id\tpurchase-date\torder-status\tproduct-name\tsku\r\n"
                     b"111-2223334-4445556\t2026-11-02\tShipped\tZelt f\xc3\xbcr 2\tT\r\n")
    assert import_report(engine, "acme", path).orders_created == 1
    (item,) = rows(engine, store.ORDER_ITEM)
    assert item.title == "Zelt für 2"


# --------------------------------------------------------------------------- notices and buyers

def mail_of(name: str, directory: Path = DATA):  # type: ignore[no-untyped-def]
    mail = parse_mail((directory / name).read_bytes())
    return mail, classify(mail, ClassifyContext(**CTX))


@pytest.mark.parametrize(("name", "expected"), [
    ("sold_ship_now_two_items.eml", [OrderNotice("sold_ship_now", "114-7788990-1122334",
                                                 datetime(2026, 11, 16, tzinfo=timezone.utc),
                                                 (NoticeItem("Trailhead Tent 2P, Olive", "TENT-2P-OLV", 1),
                                                  NoticeItem("Trailhead Footprint 2P", "FOOT-2P", 2)))]),
    ("cancellation_request_notice.eml", [OrderNotice("cancellation", "114-7788990-1122334")]),
    ("refund_notice.eml", [OrderNotice("refund", "114-5566778-9900112")]),
    ("return_request_notice.eml", [OrderNotice("return", "202-3344556-6778899")]),
    ("atoz_claim_notice.eml", [OrderNotice("claim", "114-5566778-9900112")]),
])
def test_amazon_order_notices(name: str, expected: list[OrderNotice]) -> None:
    mail, cls = mail_of(name)
    assert cls.kind == "notice"
    assert list(AMAZON.read_order_notices(mail.subject, mail.text)) == expected
    assert EBAY.read_order_notices(mail.subject, mail.text) == ()


def test_the_corpus_sold_ship_now_mails() -> None:
    inbound = Path(__file__).parent / "data" / "inbound"
    mail, _ = mail_of("sold_ship_now_multi.eml", inbound)
    (notice,) = AMAZON.read_order_notices(mail.subject, mail.text)
    assert notice.order_id == "128-4445556-6677889"
    assert [(i.sku, i.quantity) for i in notice.items] == [("ACME-HC-10", 2), ("ACME-TT-1", 1)]
    assert AMAZON.read_order_notices("New negative feedback", "Order ID: 128-4445556-6677889") == ()


def test_notices_create_and_update_orders(engine: Engine) -> None:
    with engine.begin() as conn:
        for name in ("sold_ship_now_two_items.eml", "refund_notice.eml", "atoz_claim_notice.eml",
                     "return_request_notice.eml"):
            mail, cls = mail_of(name)
            assert apply_order_mail(conn, "acme", mail, cls, NOW) is not None
        sold = store.order_by_id(conn, "acme", "114-7788990-1122334")
        refunded = store.order_by_id(conn, "acme", "114-5566778-9900112")
        returned = store.order_by_id(conn, "acme", "202-3344556-6778899")
        mail, cls = mail_of("cancellation_request_notice.eml")
        apply_order_mail(conn, "acme", mail, cls, NOW)
        cancelled = store.order_by_id(conn, "acme", "114-7788990-1122334")
    assert sold is not None and sold.status == "pending"
    assert [(i.sku, i.title, i.quantity) for i in sold.items] == [
        ("TENT-2P-OLV", "Trailhead Tent 2P, Olive", 1), ("FOOT-2P", "Trailhead Footprint 2P", 2)]
    assert refunded is not None and refunded.status == "refunded" and refunded.open_claim is True
    assert returned is not None and returned.status == "returned"
    assert cancelled is not None and cancelled.status == "cancelled" and len(cancelled.items) == 2


def test_a_buyer_naming_an_order_links_the_alias(engine: Engine) -> None:
    inbound = Path(__file__).parent / "data" / "inbound"
    mail, cls = mail_of("amazon_case_suffix_alias.eml", inbound)
    assert cls.kind == "buyer" and mail.order_id
    with engine.begin() as conn:
        assert apply_order_mail(conn, "acme", mail, cls, NOW) is not None
        assert apply_order_mail(conn, "acme", mail, cls, NOW) is None     # already linked
        order = store.order_by_id(conn, "acme", mail.order_id)
    assert order is not None and order.buyer_alias == cls.buyer_alias and "+" not in order.buyer_alias
    site = cls.buyer_alias.rpartition("@marketplace.")[2]     # the alias's site, and its language
    assert order.marketplace == site and order.language == MARKETPLACES[site].language
    # Mail that is neither: nothing.
    mail, cls = mail_of("other_vendor_invoice.eml", inbound)
    with engine.begin() as conn:
        assert apply_order_mail(conn, "acme", mail, cls, NOW) is None
