"""Orders: reading Amazon's order reports, and merging what several sources say of one order (pure).

A report is read row by row (:func:`read_report`): the header picks the layout
(:func:`detect_layout`), then each row gives an :class:`OrderFacts` (what the
row says about one order and one of its items) or a :class:`BadRow` (its line
number and why it was refused). Nothing here opens a file or a database: the
caller hands in lines of text and gets values back.

Layouts known (docs/marketplaces.md "Orders"; header names matched without regard
to case or surrounding spaces):

- ``all_orders``: the *All Orders* flat file, one row per order item, no buyer
  address; ``order-status`` Pending/Shipped/Cancelled (and the longer variants
  Amazon writes, such as "Shipped - Delivered to Buyer");
- ``shipments``: *Amazon Fulfilled Shipments*, one row per shipped item; its
  ``buyer-email`` is the buyer's relay alias; a row means the item shipped;
- ``merchant``: the merchant-fulfilled order report (``order-id``,
  ``order-item-id``, ``buyer-email``, ``promise-date`` or
  ``delivery-start-date``/``delivery-end-date``); it says nothing of the status.

Dates are ISO 8601 as Amazon writes them (``2026-11-02T10:15:00-08:00``, ``...Z``,
or a date alone) and come back in UTC. A time without an offset, and a date
alone, are taken as UTC: the reports name no zone for them.

Tab-separated reports are read without quoting (Amazon's flat files never quote,
and product names do carry ``"``); CSV files are read with the csv module's usual
quoting. The order-id pattern is Amazon's (:data:`~bridge.domain.marketplaces.amazon.ORDER_ID_RE`):
these are Amazon's reports.
"""

from __future__ import annotations

import csv
from operator import itemgetter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone

from bridge.domain.marketplaces.amazon import ORDER_ID_RE
from bridge.domain.marketplaces.protocol import OrderNotice
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry
from bridge.domain.threads import split_relay_address

STATUSES = ("pending", "shipped", "delivered", "cancelled", "refunded", "returned")
FINAL_STATUSES = frozenset({"cancelled", "refunded", "returned"})


# --------------------------------------------------------------------------- values

@dataclass(frozen=True, slots=True)
class ItemFacts:
    """One line of an order. ``item_key``: the order-item id, else the SKU, else the ASIN."""

    item_key: str
    sku: str | None = None
    asin: str | None = None
    title: str | None = None
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What one source (a report row, a notice, a merge of several), or the orders table, says about one order.

    ``None`` means "this source does not say": merging keeps what is known. The
    same value is what the feedback rules (:mod:`bridge.domain.feedback`) judge:
    an order read from the table always has a status.
    """

    order_id: str
    status: str | None = None
    open_claim: bool | None = None
    marketplace: str | None = None          # a site key of the registry, e.g. "amazon.de"
    sales_channel: str | None = None        # as the report writes it, e.g. "Amazon.de"
    buyer_alias: str | None = None          # base relay alias, only a real one
    buyer_name: str | None = None
    language: str | None = None
    purchased_at: datetime | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    estimated_delivery_from: datetime | None = None
    estimated_delivery_to: datetime | None = None
    items: tuple[ItemFacts, ...] = ()

    @property
    def skus(self) -> tuple[str, ...]:
        """The SKUs of its items, in item order (the feedback rules' ``exclude_skus`` reads them)."""
        return tuple(i.sku for i in self.items if i.sku)

    @property
    def titles(self) -> tuple[str, ...]:
        """The product names of its items, in item order."""
        return tuple(i.title for i in self.items if i.title)


# Every field of an order but its id and items: what the orders table holds beside them.
ORDER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(OrderFacts) if f.name not in ("order_id", "items"))


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that was refused: its first line in the file (the header is line 1) and why."""

    line: int
    reason: str


class UnknownLayout(ValueError):
    """Raised by :func:`detect_layout` when a header matches no known report layout; the message names both."""


# --------------------------------------------------------------------------- layouts

@dataclass(frozen=True)
class Layout:
    """A report layout: the columns that identify it, and the columns a row must fill."""

    name: str
    title: str
    identifying: frozenset[str]        # all present in the header: this layout
    required_values: tuple[str, ...]   # a row with one of these empty is a bad row
    order_id_column: str


LAYOUTS: tuple[Layout, ...] = (
    # Most specific first: the merchant report has no "amazon-order-id" at all.
    Layout("merchant", "merchant-fulfilled order report", frozenset({"order-id", "order-item-id"}),
           ("order-id", "purchase-date"), "order-id"),
    Layout("shipments", "Amazon Fulfilled Shipments", frozenset({"amazon-order-id", "shipment-date"}),
           ("amazon-order-id", "shipment-date"), "amazon-order-id"),
    Layout("all_orders", "All Orders", frozenset({"amazon-order-id", "order-status", "purchase-date"}),
           ("amazon-order-id", "purchase-date", "order-status"), "amazon-order-id"),
)


def normalise_header(header: Sequence[str]) -> tuple[str, ...]:
    """Column names lowercased and stripped (a UTF-8 byte-order mark on the first one removed)."""
    return tuple(name.strip().lstrip("\ufeff").strip().lower() for name in header)


def detect_layout(header: Sequence[str]) -> Layout:
    """The layout whose identifying columns the header holds; :class:`UnknownLayout` otherwise."""
    names = set(normalise_header(header))
    for layout in LAYOUTS:
        if layout.identifying <= names:
            return layout
    found = ", ".join(n for n in normalise_header(header) if n) or "(none)"
    known = "; ".join(f"{lay.title} ({', '.join(sorted(lay.identifying))})" for lay in LAYOUTS)
    raise UnknownLayout(f"the header matches no known order report layout. Columns found: {found}. "
                        f"Layouts known, by the columns that identify them: {known}")


def delimiter_for(filename: str, first_line: str) -> str:
    """"\\t" or ",": by the file's extension (.csv; .tsv or .txt), else by which the header line has more of."""
    lower = filename.lower()
    if lower.endswith(".csv"):
        return ","
    if lower.endswith((".tsv", ".txt", ".tab")):
        return "\t"
    return "\t" if first_line.count("\t") >= first_line.count(",") else ","


# --------------------------------------------------------------------------- fields

class _RowError(Exception):
    """One row's reason to be refused."""


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 date or date-time -> aware UTC; ``None`` for empty text; ValueError if unreadable.

    No offset (or a date alone) means UTC.
    """
    text = text.strip()
    if not text:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _status_of_report(text: str) -> str:
    """All Orders ``order-status`` -> one of :data:`STATUSES`."""
    low = " ".join(text.lower().split())
    if "cancel" in low:
        return "cancelled"
    if "delivered" in low:          # "Shipped - Delivered to Buyer"
        return "delivered"
    if "returned" in low:           # "Shipped - Returned to Seller"
        return "returned"
    if low.startswith(("shipped", "shipping", "partially shipped")):
        return "shipped"
    if low.startswith(("pending", "unshipped")):
        return "pending"
    raise _RowError(f"unknown order-status {text!r} (known: Pending, Unshipped, Shipped, Cancelled)")


# Every column some layout reads: a row is cut down to these once, as a dict of stripped cells.
READ_COLUMNS = ("amazon-order-id", "order-id", "order-item-id", "amazon-order-item-id", "purchase-date",
                "order-status", "shipment-date", "estimated-arrival-date", "promise-date", "delivery-start-date",
                "delivery-end-date", "buyer-email", "buyer-name", "sales-channel", "product-name", "sku", "asin",
                "quantity", "quantity-shipped", "quantity-purchased")
Cells = dict[str, str]


class RowReader:
    """Turns the rows of one report (after its header) into :class:`OrderFacts`; build it with the header."""

    def __init__(self, header: Sequence[str], registry: Registry = DEFAULT_REGISTRY) -> None:
        self.layout = detect_layout(header)
        names = normalise_header(header)
        index = {name: i for i, name in reversed(list(enumerate(names))) if name}   # a repeated name: the first
        self._names = tuple(n for n in READ_COLUMNS if n in index)      # at least the layout's identifying two
        self._cells = itemgetter(*(index[n] for n in self._names))
        self._width = max(index[n] for n in self._names) + 1
        self._registry = registry
        self._channels: dict[str, tuple[str | None, str | None]] = {}
        self._read: Callable[[Cells], OrderFacts] = {
            "all_orders": self._all_orders, "shipments": self._shipments, "merchant": self._merchant,
        }[self.layout.name]

    def read(self, row: Sequence[str], line: int) -> OrderFacts | BadRow:
        """One data row (its first line number for the report) -> its facts or why it is bad."""
        if len(row) < self._width:       # a short row: the missing cells are empty
            row = [*row, *([""] * (self._width - len(row)))]
        cells = dict(zip(self._names, (cell.strip() for cell in self._cells(row))))
        try:
            for name in self.layout.required_values:
                if not cells.get(name):
                    raise _RowError(f"missing value in required column {name!r}")
            return self._read(cells)
        except _RowError as exc:
            return BadRow(line, str(exc))

    # -- shared fields

    def _order_id(self, row: Cells) -> str:
        value = row.get(self.layout.order_id_column, "")
        if not ORDER_ID_RE.fullmatch(value):
            raise _RowError(f"bad order id {value!r} in {self.layout.order_id_column!r} (expected 123-1234567-1234567)")
        return value.upper()

    def _date(self, row: Cells, name: str) -> datetime | None:
        value = row.get(name, "")
        try:
            return parse_datetime(value)
        except ValueError:
            raise _RowError(f"unparseable date {value!r} in {name!r} (expected ISO 8601, "
                            "e.g. 2026-11-02T10:15:00-08:00)") from None

    def _quantity(self, row: Cells, name: str) -> int:
        value = row.get(name, "")
        if not value:
            return 1
        try:
            quantity = int(value)
        except ValueError:
            raise _RowError(f"bad quantity {value!r} in {name!r}") from None
        if quantity < 0:
            raise _RowError(f"bad quantity {value!r} in {name!r}")
        return quantity

    def _item(self, row: Cells, item_id_column: str | None, quantity_column: str) -> tuple[ItemFacts, ...]:
        sku, asin = row.get("sku", "") or None, row.get("asin", "") or None
        key = (row.get(item_id_column, "") if item_id_column else "") or sku or asin
        if not key:
            return ()
        return (ItemFacts(key, sku, asin, row.get("product-name", "") or None, self._quantity(row, quantity_column)),)

    def _channel(self, row: Cells) -> tuple[str | None, str | None, str | None]:
        """(sales channel as written, marketplace site key, its language) from ``sales-channel``."""
        channel = row.get("sales-channel", "")
        if not channel:
            return None, None, None
        known = self._channels.get(channel)
        if known is None:
            site = self._registry.sites.get(channel.lower())
            known = (site.key, site.language) if site is not None else (None, None)
            self._channels[channel] = known
        return channel, known[0], known[1]

    def _buyer(self, row: Cells) -> str | None:
        """The base relay alias of ``buyer-email``, only when it is a real relay alias of a known marketplace."""
        email = row.get("buyer-email", "")
        if not email:
            return None
        split = split_relay_address(email, self._registry.relay_domains, self._registry)
        return split[0] if split is not None else None

    # -- the layouts

    def _all_orders(self, row: Cells) -> OrderFacts:
        channel, site, language = self._channel(row)
        return OrderFacts(
            order_id=self._order_id(row), status=_status_of_report(row.get("order-status", "")),
            marketplace=site, sales_channel=channel, language=language,
            purchased_at=self._date(row, "purchase-date"),
            items=self._item(row, "order-item-id", "quantity"))

    def _shipments(self, row: Cells) -> OrderFacts:
        channel, site, language = self._channel(row)
        arrival = self._date(row, "estimated-arrival-date")
        return OrderFacts(
            order_id=self._order_id(row), status="shipped", marketplace=site, sales_channel=channel,
            language=language, buyer_alias=self._buyer(row), buyer_name=row.get("buyer-name", "") or None,
            purchased_at=self._date(row, "purchase-date"), shipped_at=self._date(row, "shipment-date"),
            estimated_delivery_from=arrival, estimated_delivery_to=arrival,
            items=self._item(row, "amazon-order-item-id", "quantity-shipped"))

    def _merchant(self, row: Cells) -> OrderFacts:
        channel, site, language = self._channel(row)
        start, end = self._date(row, "delivery-start-date"), self._date(row, "delivery-end-date")
        promise = self._date(row, "promise-date")
        return OrderFacts(
            order_id=self._order_id(row), marketplace=site, sales_channel=channel, language=language,
            buyer_alias=self._buyer(row), buyer_name=row.get("buyer-name", "") or None,
            purchased_at=self._date(row, "purchase-date"),
            estimated_delivery_from=start or promise, estimated_delivery_to=end or promise,
            items=self._item(row, "order-item-id", "quantity-purchased"))


def buyer_link(order_id: str, alias: str, registry: Registry = DEFAULT_REGISTRY) -> OrderFacts:
    """What a buyer writing from ``alias`` about an order tells of it: the buyer, and the site of the alias's
    relay domain with its language when only one site uses that domain (Amazon's do; eBay's are shared)."""
    domain = alias.rpartition("@")[2]
    sites = [s for s in registry.sites.values() if domain in s.relay_domains]
    site = sites[0] if len(sites) == 1 else None
    return OrderFacts(order_id, buyer_alias=alias, marketplace=site.key if site else None,
                      language=registry.language_of_relay_domain(domain))


def read_report(lines: Iterable[str], filename: str = "", registry: Registry = DEFAULT_REGISTRY,
                ) -> tuple[Layout, Iterator[OrderFacts | BadRow]]:
    """The layout of a report and its rows, read lazily from ``lines`` (text lines, as a file yields them).

    Raises :class:`UnknownLayout` for an empty report or a header of no known layout.
    Blank lines are skipped; a row's line number counts the header as line 1.
    """
    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        raise UnknownLayout("the report is empty: no header line")
    delimiter = delimiter_for(filename, first)
    if delimiter == "\t":
        reader = csv.reader(_chain(first, lines), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(_chain(first, lines), delimiter=",")
    reader_rows = RowReader(next(reader), registry)

    def rows() -> Iterator[OrderFacts | BadRow]:
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            yield reader_rows.read(row, start)

    return reader_rows.layout, rows()


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


# --------------------------------------------------------------------------- merging

# How far along an order is. A status moves only to a higher rank:
# - pending < shipped < delivered: a "shipped" row never undoes "delivered";
# - cancelled and returned (3) are final: no pending/shipped/delivered row, older or
#   not, undoes them, and neither replaces the other (the first one known stays);
# - refunded (4) is the last word: a returned or cancelled order may be refunded after.
STATUS_RANK = {"pending": 0, "shipped": 1, "delivered": 2, "cancelled": 3, "returned": 3, "refunded": 4}


def merge_status(current: str | None, new: str | None) -> str | None:
    """The status after ``new`` is heard of ``current`` (see :data:`STATUS_RANK`); ``None`` says nothing."""
    if new is None:
        return current
    if current is None or STATUS_RANK[new] > STATUS_RANK[current]:
        return new
    return current


def merge_item(current: ItemFacts, new: ItemFacts) -> ItemFacts:
    """The same line told again: what ``new`` says wins, what it leaves empty is kept.

    The quantity is the latest told, never a sum: the same row in two files (or twice
    in one) must not double it.
    """
    return ItemFacts(current.item_key, new.sku or current.sku, new.asin or current.asin,
                     new.title or current.title, new.quantity)


def same_line(a: ItemFacts, b: ItemFacts) -> bool:
    """Whether two items are the same line of one order.

    The same key; or, when one of them has no order-item id (its key is its SKU
    or ASIN: an All Orders row, a notice), the same SKU, else the same ASIN. Two
    different order-item ids are two lines even with one SKU.
    """
    if a.item_key == b.item_key:
        return True
    if a.sku and a.sku == b.sku and (a.item_key == a.sku or b.item_key == b.sku):
        return True
    return bool(a.asin and a.asin == b.asin and (a.item_key in (a.sku, a.asin) or b.item_key in (b.sku, b.asin)))


def find_line(items: Iterable[ItemFacts], item: ItemFacts) -> ItemFacts | None:
    """The line of ``items`` that ``item`` is (:func:`same_line`): the one with its key first."""
    candidates = [i for i in items if same_line(i, item)]
    return next((i for i in candidates if i.item_key == item.item_key), candidates[0] if candidates else None)


def merge_items(current: tuple[ItemFacts, ...], new: tuple[ItemFacts, ...]) -> tuple[ItemFacts, ...]:
    """Lines in the order first seen; a line already known (:func:`find_line`) is merged and keeps its key."""
    if not new:
        return current
    by_key = {i.item_key: i for i in current}
    for item in new:
        known = by_key.get(item.item_key) or find_line(by_key.values(), item)
        if known is None:
            by_key[item.item_key] = item
        else:
            by_key[known.item_key] = merge_item(known, item)
    return tuple(by_key.values())


def merge_order(current: OrderFacts, new: OrderFacts) -> OrderFacts:
    """What is known of an order after ``new`` (a later row, report or notice) is heard.

    Rules, in order:

    - the status moves only forward (:func:`merge_status`);
    - the purchase date never changes: the first one known is kept (a notice's date
      alone must not replace a report's exact time);
    - every other field: a value ``new`` gives replaces the old one (a later report
      corrects an earlier one); a field ``new`` leaves empty keeps its value;
    - ``open_claim``: the latest that says anything;
    - items merge by item key (:func:`merge_items`).
    """
    if new.order_id != current.order_id:
        raise ValueError(f"cannot merge order {new.order_id} into {current.order_id}")
    changes: dict[str, object] = {}
    for name in ORDER_FIELDS:
        old, value = getattr(current, name), getattr(new, name)
        if name == "status":
            value = merge_status(old, value)
        elif name == "purchased_at" and old is not None:
            value = old
        if value is not None and value != old:
            changes[name] = value
    items = merge_items(current.items, new.items)
    if items != current.items:
        changes["items"] = items
    return replace(current, **changes) if changes else current  # type: ignore[arg-type]


def merge_rows(rows: Iterable[OrderFacts]) -> dict[str, OrderFacts]:
    """Rows merged per order id, in the order the orders were first seen (later rows count as later)."""
    merged: dict[str, OrderFacts] = {}
    for row in rows:
        known = merged.get(row.order_id)
        merged[row.order_id] = row if known is None else merge_order(known, row)
    return merged


# --------------------------------------------------------------------------- notices

# What a marketplace's order notice means for the order. A buyer's cancellation
# request counts as cancelled: whether or not the seller still ships, a buyer who
# asked to cancel must not be asked for feedback (docs/marketplaces.md: cancelled orders
# are left out), and "cancelled" is final (see STATUS_RANK).
NOTICE_STATUS: dict[str, str | None] = {
    "sold_ship_now": "pending", "refund": "refunded", "return": "returned", "cancellation": "cancelled",
    "claim": None,
}


def order_from_notice(notice: OrderNotice) -> OrderFacts:
    """The facts of one order notice: its status (:data:`NOTICE_STATUS`), an open claim, its items.

    A notice's item has no order-item id: its key is the SKU, else its title.
    """
    items = tuple(ItemFacts(i.sku or i.title or "", i.sku, None, i.title, i.quantity)
                  for i in notice.items if i.sku or i.title)
    return OrderFacts(notice.order_id, status=NOTICE_STATUS.get(notice.topic),
                      open_claim=True if notice.topic == "claim" else None,
                      purchased_at=notice.ordered_at, items=items)
