"""Amazon's order notices to the seller: "Sold, ship now", refunds, returns, cancellations, claims (pure).

docs/marketplaces.md "Orders": "Sold, ship now" mail comes from
``seller-notification@amazon.com`` with ``Order ID``, ``Order date``, ``Ship by``,
``Item``, ``SKU`` and ``Quantity`` lines; a mail about several items or orders
repeats them ("Sold -- ship now! (2 listings/3 items)"). Only the English labels
are known. A notice whose lines are not found still names its order (the first
order id in the subject, else in the body), so a localised or reworded notice
still updates the order's status.

The refund, return, cancellation and claim notices' layouts are *unverified*
(docs/marketplaces.md lists only their subjects' topics); they are read for the
order id alone.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from bridge.domain.marketplaces.protocol import NoticeItem, OrderNotice

# Topics (Amazon's notice_topic) that are about one order.
ORDER_TOPICS = frozenset({"sold_ship_now", "refund", "return", "cancellation", "claim"})

_LABEL_RE = re.compile(r"^[ \t]*(order id|order date|ship by|item|sku|quantity)[ \t]*:[ \t]*(.*?)[ \t]*$",
                       re.IGNORECASE | re.MULTILINE)
_DATE_FORMATS = ("%Y-%m-%d", "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y")


def read_order_notices(topic: str | None, subject: str, text: str,
                       order_id_re: re.Pattern[str]) -> tuple[OrderNotice, ...]:
    """The orders a notice of ``topic`` tells of (see the module docstring); ``()`` for other topics."""
    if topic not in ORDER_TOPICS:
        return ()
    notices = _sold_blocks(topic, text, order_id_re) if topic == "sold_ship_now" else []
    if notices:
        return tuple(notices)
    for source in (subject, text):
        m = order_id_re.search(source)
        if m is not None:
            return (OrderNotice(topic, m.group(0).upper()),)
    return ()


def _sold_blocks(topic: str, text: str, order_id_re: re.Pattern[str]) -> list[OrderNotice]:
    """One notice per order, its items in order: a new item starts where an item line repeats."""
    orders: dict[str, tuple[datetime | None, list[dict[str, str]]]] = {}
    order_id: str | None = None
    item: dict[str, str] = {}
    for m in _LABEL_RE.finditer(text):
        label, value = m.group(1).lower(), m.group(2)
        if label == "order id":
            found = order_id_re.search(value)
            order_id = found.group(0).upper() if found else None
            if order_id is not None:
                item = {}
                orders.setdefault(order_id, (None, []))
            continue
        if order_id is None:
            continue
        if label == "order date":
            orders[order_id] = (_date(value) or orders[order_id][0], orders[order_id][1])
            continue
        if label == "ship by":
            continue      # no column for it: the ship-by date is the seller's deadline, not the buyer's
        if label in item:  # "Item:" again: the next item of this order
            item = {}
        if not item:
            orders[order_id][1].append(item)
        item[label] = value
    return [OrderNotice(topic, oid, ordered, tuple(_item(i) for i in items))
            for oid, (ordered, items) in orders.items()]


def _item(fields: dict[str, str]) -> NoticeItem:
    quantity = fields.get("quantity", "")
    return NoticeItem(fields.get("item") or None, fields.get("sku") or None,
                      int(quantity) if quantity.isdigit() else 1)


def _date(text: str) -> datetime | None:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None
