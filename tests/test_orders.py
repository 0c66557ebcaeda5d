"""Order reports and merging (pure): header detection, rows of every layout, dates, bad rows, merge rules."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from bridge.domain.orders import (
    STATUS_RANK,
    BadRow,
    ItemFacts,
    OrderFacts,
    RowReader,
    buyer_link,
    UnknownLayout,
    delimiter_for,
    detect_layout,
    merge_order,
    merge_rows,
    merge_status,
    parse_datetime,
    read_report,
)

DATA = Path(__file__).parent / "data" / "orders"
UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------- header detection

@pytest.mark.parametrize(("header", "layout"), [
    ("amazon-order-id\tmerchant-order-id\tpurchase-date\tlast-updated-date\torder-status\tsku", "all_orders"),
    ("AMAZON-ORDER-ID\tPurchase-Date\t Order-Status \tsku", "all_orders"),
    ("\ufeffamazon-order-id\tpurchase-date\torder-status", "all_orders"),
    ("amazon-order-id\tpurchase-date\tshipment-date\tbuyer-email\tsku\tquantity-shipped", "shipments"),
    # a shipments report also has no order-status: it is never taken for All Orders
    ("amazon-order-id\tshipment-date\torder-status\tpurchase-date", "shipments"),
    ("order-id\torder-item-id\tpurchase-date\tbuyer-email\tpromise-date", "merchant"),
    ("Order-ID\tORDER-ITEM-ID\tpurchase-date", "merchant"),
])
def test_detect_layout(header: str, layout: str) -> None:
    assert detect_layout(header.split("\t")).name == layout


@pytest.mark.parametrize("header", [
    "order-id\tpurchase-date",                       # no order-item-id
    "amazon-order-id\tpurchase-date",                # neither order-status nor shipment-date
    "date\tsettlement-id\ttotal",
    "",
])
def test_unknown_header_is_one_error_naming_columns_and_layouts(header: str) -> None:
    with pytest.raises(UnknownLayout) as err:
        detect_layout(header.split("\t"))
    text = str(err.value)
    assert "All Orders" in text and "Amazon Fulfilled Shipments" in text and "merchant-fulfilled" in text
    for column in filter(None, header.split("\t")):
        assert column in text


@pytest.mark.parametrize(("filename", "first", "expected"), [
    ("r.csv", "a\tb\tc", ","), ("r.txt", "a,b,c", "\t"), ("r.tsv", "a,b", "\t"),
    ("report", "a\tb,c\td", "\t"), ("report", "a,b,c\td", ","), ("R.CSV", "a\tb", ","),
])
def test_delimiter_by_extension_else_sniffed(filename: str, first: str, expected: str) -> None:
    assert delimiter_for(filename, first) == expected


# --------------------------------------------------------------------------- dates

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-02T10:15:00+00:00", utc(2026, 11, 2, 10, 15)),
    ("2026-11-02T10:15:00-08:00", utc(2026, 11, 2, 18, 15)),
    ("2026-11-02T23:30:00-08:00", utc(2026, 11, 3, 7, 30)),      # crosses midnight
    ("2026-11-02T01:00:00+09:00", utc(2026, 11, 1, 16, 0)),
    ("2026-11-02T10:15:00Z", utc(2026, 11, 2, 10, 15)),
    ("2026-11-02T10:15:00", utc(2026, 11, 2, 10, 15)),            # no offset: UTC
    ("2026-11-02", utc(2026, 11, 2)),                             # date only
    ("  2026-11-02  ", utc(2026, 11, 2)),
    ("", None),
])
def test_parse_datetime(text: str, expected: datetime | None) -> None:
    value = parse_datetime(text)
    assert value == expected
    assert value is None or value.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize("text", ["yesterday", "02/11/2026", "2026-13-01", "2026-11-02T25:00:00"])
def test_unparseable_dates_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


# --------------------------------------------------------------------------- rows

ALL = ["amazon-order-id", "purchase-date", "order-status", "sales-channel", "product-name", "sku", "asin", "quantity"]
SHIP = ["amazon-order-id", "amazon-order-item-id", "purchase-date", "shipment-date", "buyer-email", "buyer-name",
        "sku", "product-name", "quantity-shipped", "estimated-arrival-date", "sales-channel"]
MERCHANT = ["order-id", "order-item-id", "purchase-date", "buyer-email", "buyer-name", "sku", "product-name",
            "quantity-purchased", "promise-date", "delivery-start-date", "delivery-end-date", "sales-channel"]


def read(header: list[str], **values: str) -> OrderFacts | BadRow:
    return RowReader(header).read([values.get(h.replace("-", "_"), "") for h in header], 7)


@pytest.mark.parametrize(("status_text", "status"), [
    ("Pending", "pending"), ("Shipped", "shipped"), ("Cancelled", "cancelled"), ("Canceled", "cancelled"),
    ("Unshipped", "pending"), ("Shipped - Delivered to Buyer", "delivered"), ("Partially Shipped", "shipped"),
    ("Shipped - Returned to Seller", "returned"), ("Pending - Waiting for Pick Up", "pending"),
])
def test_all_orders_statuses(status_text: str, status: str) -> None:
    facts = read(ALL, amazon_order_id="111-2223334-4445556", purchase_date="2026-11-02", order_status=status_text)
    assert isinstance(facts, OrderFacts) and facts.status == status


def test_all_orders_row() -> None:
    facts = read(ALL, amazon_order_id="111-2223334-4445556", purchase_date="2026-11-02T10:15:00-08:00",
                 order_status="Shipped", sales_channel="Amazon.de", product_name="Zelt", sku="T-1", asin="B0T1",
                 quantity="2")
    assert facts == OrderFacts("111-2223334-4445556", status="shipped", marketplace="amazon.de",
                               sales_channel="Amazon.de", language="de", purchased_at=utc(2026, 11, 2, 18, 15),
                               items=(ItemFacts("T-1", "T-1", "B0T1", "Zelt", 2),))


def test_shipments_row_reduces_the_buyer_email_to_the_base_alias() -> None:
    facts = read(SHIP, amazon_order_id="111-2223334-4445556", amazon_order_item_id="400", purchase_date="2026-11-02",
                 shipment_date="2026-11-03T09:00:00-08:00", buyer_email="K3J9X0QMA2B7+case-9@marketplace.amazon.com",
                 buyer_name="Jane", sku="T-1", quantity_shipped="1", estimated_arrival_date="2026-11-07",
                 sales_channel="Amazon.com")
    assert isinstance(facts, OrderFacts)
    assert facts.status == "shipped" and facts.shipped_at == utc(2026, 11, 3, 17)
    assert facts.buyer_alias == "k3j9x0qma2b7@marketplace.amazon.com" and facts.buyer_name == "Jane"
    assert facts.estimated_delivery_from == facts.estimated_delivery_to == utc(2026, 11, 7)
    assert facts.items == (ItemFacts("400", "T-1", None, None, 1),)
    assert facts.marketplace == "amazon.com" and facts.language == "en"


@pytest.mark.parametrize(("email", "alias"), [
    ("k3j9x0qma2b7@marketplace.amazon.com", "k3j9x0qma2b7@marketplace.amazon.com"),
    ("jane@gmail.com", None),                                       # not a relay
    ("k3j9x0qma2b7@marketplace.amazon.com.evil.example", None),     # look-alike
    ("ab@marketplace.amazon.com", None),                            # not the alias shape
    ("", None),
])
def test_only_real_relay_aliases_are_kept(email: str, alias: str | None) -> None:
    facts = read(SHIP, amazon_order_id="111-2223334-4445556", shipment_date="2026-11-03", buyer_email=email)
    assert isinstance(facts, OrderFacts) and facts.buyer_alias == alias


def test_merchant_row_delivery_range_or_promise_date() -> None:
    ranged = read(MERCHANT, order_id="111-2223334-4445556", order_item_id="55", purchase_date="2026-11-02",
                  delivery_start_date="2026-11-04T00:00:00+09:00", delivery_end_date="2026-11-06",
                  promise_date="2026-11-09", quantity_purchased="3", sku="C-1")
    assert isinstance(ranged, OrderFacts) and ranged.status is None
    assert (ranged.estimated_delivery_from, ranged.estimated_delivery_to) == (utc(2026, 11, 3, 15), utc(2026, 11, 6))
    assert ranged.items == (ItemFacts("55", "C-1", None, None, 3),)
    promised = read(MERCHANT, order_id="111-2223334-4445556", order_item_id="55", purchase_date="2026-11-02",
                    promise_date="2026-11-09")
    assert isinstance(promised, OrderFacts)
    assert promised.estimated_delivery_from == promised.estimated_delivery_to == utc(2026, 11, 9)


@pytest.mark.parametrize(("header", "values", "reason"), [
    (ALL, {"amazon_order_id": "12-34", "purchase_date": "2026-11-02", "order_status": "Shipped"}, "bad order id"),
    (ALL, {"amazon_order_id": "111-2223334-44455567", "purchase_date": "2026-11-02", "order_status": "Shipped"},
     "bad order id"),
    (ALL, {"amazon_order_id": "111-2223334-4445556", "purchase_date": "11/02/2026", "order_status": "Shipped"},
     "unparseable date '11/02/2026' in 'purchase-date'"),
    (ALL, {"amazon_order_id": "111-2223334-4445556", "order_status": "Shipped"},
     "missing value in required column 'purchase-date'"),
    (ALL, {"amazon_order_id": "111-2223334-4445556", "purchase_date": "2026-11-02", "order_status": "Lost"},
     "unknown order-status 'Lost'"),
    (ALL, {"amazon_order_id": "111-2223334-4445556", "purchase_date": "2026-11-02", "order_status": "Shipped",
           "sku": "A", "quantity": "two"}, "bad quantity 'two'"),
    (SHIP, {"amazon_order_id": "111-2223334-4445556", "shipment_date": "soon"}, "unparseable date 'soon'"),
    (SHIP, {"amazon_order_id": "111-2223334-4445556"}, "missing value in required column 'shipment-date'"),
    (SHIP, {"shipment_date": "2026-11-02"}, "missing value in required column 'amazon-order-id'"),
    (SHIP, {"amazon_order_id": "111-2223334-4445556", "shipment_date": "2026-11-02",
            "estimated_arrival_date": "2026-11-31"}, "unparseable date '2026-11-31' in 'estimated-arrival-date'"),
    (MERCHANT, {"order_id": "111-2223334-4445556", "purchase_date": "2026-11-02", "promise_date": "x"},
     "unparseable date 'x' in 'promise-date'"),
    (MERCHANT, {"order_id": "D01-1234567-1234567"}, "missing value in required column 'purchase-date'"),
])
def test_bad_rows_say_why(header: list[str], values: dict[str, str], reason: str) -> None:
    bad = read(header, **values)
    assert isinstance(bad, BadRow) and bad.line == 7
    assert reason in bad.reason


def test_digital_order_ids_are_accepted() -> None:
    facts = read(ALL, amazon_order_id="d01-1234567-1234567", purchase_date="2026-11-02", order_status="Shipped")
    assert isinstance(facts, OrderFacts) and facts.order_id == "D01-1234567-1234567"


def test_short_rows_read_missing_cells_as_empty() -> None:
    assert isinstance(RowReader(ALL).read(["111-2223334-4445556", "2026-11-02", "Shipped"], 2), OrderFacts)


# --------------------------------------------------------------------------- whole reports

def test_all_orders_report_file() -> None:
    with (DATA / "all_orders.txt").open(encoding="utf-8") as f:
        layout, rows = read_report(f, "all_orders.txt")
        got = list(rows)
    assert layout.name == "all_orders"
    bad = [r for r in got if isinstance(r, BadRow)]
    assert [(b.line, b.reason.split(" '")[0]) for b in bad] == [(6, "bad order id")]
    merged = merge_rows(r for r in got if isinstance(r, OrderFacts))
    assert list(merged) == ["111-0000001-0000001", "111-0000002-0000002", "111-0000003-0000003"]
    tent = merged["111-0000001-0000001"]
    assert [i.sku for i in tent.items] == ["TENT-2P", "FOOT-2P"] and tent.items[1].quantity == 2
    assert tent.items[0].title == 'Acme Tent 2P, 3/4" poles'          # a quote in a tab-separated file
    assert merged["111-0000002-0000002"].status == "cancelled"


def test_csv_report_with_quotes_and_uppercase_header() -> None:
    with (DATA / "merchant.csv").open(encoding="utf-8") as f:
        layout, rows = read_report(f, "merchant.csv")
        got = list(rows)
    assert layout.name == "merchant"
    assert [r.line for r in got if isinstance(r, BadRow)] == [4]
    cup = got[0]
    assert isinstance(cup, OrderFacts) and cup.items[0].title == 'Acme Cup, "large"'
    assert cup.buyer_alias == "abcdefgh12@marketplace.amazon.co.jp" and cup.language == "ja"
    assert isinstance(got[1], OrderFacts) and got[1].buyer_alias is None       # gmail: not a relay


def test_line_numbers_count_blank_lines_and_multiline_cells() -> None:
    text = ('order-id,order-item-id,purchase-date,product-name\n'
            '111-2223334-4445556,1,2026-11-02,"two\nlines"\n'
            '\n'
            'bad,2,2026-11-02,x\n')
    _, rows = read_report(text.splitlines(keepends=True), "r.csv")
    got = list(rows)
    assert isinstance(got[0], OrderFacts) and got[0].items[0].title == "two\nlines"
    assert isinstance(got[1], BadRow) and got[1].line == 5


def test_empty_report_is_an_unknown_layout() -> None:
    with pytest.raises(UnknownLayout, match="empty"):
        read_report([], "r.txt")


# --------------------------------------------------------------------------- merging

@pytest.mark.parametrize(("current", "new", "expected"), [
    (None, None, None),
    (None, "shipped", "shipped"),
    ("pending", None, "pending"),
    ("pending", "shipped", "shipped"),
    ("pending", "delivered", "delivered"),
    ("shipped", "pending", "shipped"),            # an older All Orders row
    ("shipped", "delivered", "delivered"),
    ("delivered", "shipped", "delivered"),        # delivered beats shipped
    ("pending", "cancelled", "cancelled"),
    ("shipped", "cancelled", "cancelled"),
    ("cancelled", "shipped", "cancelled"),        # never undone by an older "shipped" row
    ("cancelled", "pending", "cancelled"),
    ("cancelled", "delivered", "cancelled"),
    ("returned", "shipped", "returned"),
    ("returned", "delivered", "returned"),
    ("refunded", "shipped", "refunded"),
    ("refunded", "delivered", "refunded"),
    ("refunded", "returned", "refunded"),
    ("refunded", "cancelled", "refunded"),
    ("delivered", "returned", "returned"),
    ("returned", "refunded", "refunded"),         # refunded after the return
    ("cancelled", "refunded", "refunded"),
    ("cancelled", "returned", "cancelled"),       # final statuses do not replace each other
    ("returned", "cancelled", "returned"),
])
def test_status_rules(current: str | None, new: str | None, expected: str | None) -> None:
    assert merge_status(current, new) == expected


def test_every_status_has_a_rank() -> None:
    from bridge.domain.orders import STATUSES
    assert set(STATUS_RANK) == set(STATUSES)


def test_rows_of_one_order_merge_into_one_order_with_its_items() -> None:
    rows = [
        OrderFacts("111-2223334-4445556", status="pending", purchased_at=utc(2026, 11, 2, 10),
                   items=(ItemFacts("A", "A", None, "Tent", 1),)),
        OrderFacts("111-9999999-9999999", status="pending", items=(ItemFacts("Z"),)),
        OrderFacts("111-2223334-4445556", status="pending", items=(ItemFacts("B", "B", None, "Pegs", 4),)),
        OrderFacts("111-2223334-4445556", status="pending", items=(ItemFacts("A", "A", None, "Tent", 1),)),  # dup
    ]
    merged = merge_rows(rows)
    assert list(merged) == ["111-2223334-4445556", "111-9999999-9999999"]
    assert merged["111-2223334-4445556"].items == (ItemFacts("A", "A", None, "Tent", 1),
                                                   ItemFacts("B", "B", None, "Pegs", 4))


def test_a_later_report_updates_an_order() -> None:
    first = OrderFacts("111-2223334-4445556", status="pending", purchased_at=utc(2026, 11, 2, 10, 15),
                       sales_channel="Amazon.com", items=(ItemFacts("A", "A", "B0A", "Tent", 1),))
    later = OrderFacts("111-2223334-4445556", status="shipped", purchased_at=utc(2026, 11, 2),
                       shipped_at=utc(2026, 11, 3), buyer_alias="k3j9x0qma2b7@marketplace.amazon.com",
                       estimated_delivery_from=utc(2026, 11, 6), estimated_delivery_to=utc(2026, 11, 8),
                       items=(ItemFacts("A", "A", None, "Tent 2P", 2),))
    merged = merge_order(first, later)
    assert merged.status == "shipped" and merged.shipped_at == utc(2026, 11, 3)
    assert merged.purchased_at == utc(2026, 11, 2, 10, 15)      # the first purchase date known stays
    assert merged.sales_channel == "Amazon.com"                  # not said again: kept
    assert merged.buyer_alias == "k3j9x0qma2b7@marketplace.amazon.com"
    assert merged.items == (ItemFacts("A", "A", "B0A", "Tent 2P", 2),)   # asin kept, title and quantity updated
    assert merge_order(merged, later) == merged                           # the same report again changes nothing
    assert merge_order(merged, OrderFacts("111-2223334-4445556", status="cancelled")).status == "cancelled"
    claim = merge_order(merged, OrderFacts("111-2223334-4445556", open_claim=True))
    assert claim.open_claim is True and merge_order(claim, OrderFacts("111-2223334-4445556")).open_claim is True


def test_merging_another_order_is_refused() -> None:
    with pytest.raises(ValueError):
        merge_order(OrderFacts("111-2223334-4445556"), OrderFacts("111-2223334-4445557"))


@pytest.mark.parametrize(("alias", "marketplace", "language"), [
    ("k3j9x0qma2b7@marketplace.amazon.de", "amazon.de", "de"),
    ("k3j9x0qma2b7@marketplace.amazon.co.jp", "amazon.co.jp", "ja"),
    ("jane.doe@members.ebay.com", None, None),        # one relay domain, several sites and languages
])
def test_buyer_link_names_the_site_of_the_alias(alias: str, marketplace: str | None, language: str | None) -> None:
    assert buyer_link("111-2223334-4445556", alias) == OrderFacts(
        "111-2223334-4445556", buyer_alias=alias, marketplace=marketplace, language=language)
