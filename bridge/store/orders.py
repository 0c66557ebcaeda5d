"""Orders and their items: batched upserts, look-ups, the buyer link and status changes.

One order per (account, order id) and one item per (order, item key): the unique
constraints of the tables make a re-import update, never duplicate. What a new
source says is merged into what is stored by the pure rules of
:mod:`bridge.domain.orders`, so the status moves only forward whatever the order
in which reports and notices arrive.

:func:`upsert_orders` takes a chunk of orders (one import chunk, or one notice)
and costs a fixed number of statements whatever its size: one SELECT of the
orders, one executemany INSERT and UPDATE, the same for the items. Rows that do not
change are not written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Row

from bridge.domain.orders import (
    ORDER_FIELDS,
    ItemFacts,
    OrderFacts,
    find_line,
    merge_item,
    merge_order,
    merge_rows,
    merge_status,
)
from bridge.store.dialects import UPSERT_DIALECTS, dialect_insert
from bridge.store.models import ORDER_ITEM, ORDERS
from bridge.store.times import iso, utc

_DATE_FIELDS = frozenset({"purchased_at", "shipped_at", "delivered_at", "estimated_delivery_from",
                          "estimated_delivery_to"})
_ITEM_FIELDS = ("sku", "asin", "title", "quantity")

# Look-ups by many keys go in groups of at most this many, each padded with its last key to
# a power of two: every such SELECT is then one of ten statements, each prepared once, and
# not one per chunk size (each distinct IN list is another prepared statement held by the
# driver's cache), while one key (a buyer's message) stays one parameter.
IN_GROUP = 512

_ORDERS_BY_IDS = select(ORDERS).where(ORDERS.c.account == bindparam("account"),
                                      ORDERS.c.order_id.in_(bindparam("keys", expanding=True)))
_ORDER_ROWS_BY_IDS = select(ORDERS.c.order_id, ORDERS.c.id).where(
    ORDERS.c.account == bindparam("account"), ORDERS.c.order_id.in_(bindparam("keys", expanding=True)))
_ITEMS_BY_ROWS = select(ORDER_ITEM).where(ORDER_ITEM.c.order_row.in_(bindparam("keys", expanding=True)))
_UPDATE_ORDER = update(ORDERS).where(ORDERS.c.id == bindparam("row_id")).values(
    {name: bindparam(name) for name in (*ORDER_FIELDS, "updated_at")})
_UPDATE_ITEM = update(ORDER_ITEM).where(ORDER_ITEM.c.id == bindparam("row_id")).values(
    {name: bindparam(name) for name in _ITEM_FIELDS})


@dataclass
class UpsertCounts:
    """What one :func:`upsert_orders` call wrote."""

    created: int = 0            # new orders
    updated: int = 0            # orders made before this import (see ``created_since``) that changed
    items_created: int = 0
    items_updated: int = 0

    def add(self, other: "UpsertCounts") -> None:
        self.created += other.created
        self.updated += other.updated
        self.items_created += other.items_created
        self.items_updated += other.items_updated


def _in_groups(keys: list[Any]) -> Iterable[list[Any]]:
    """``keys`` in groups of :data:`IN_GROUP`, each padded with repeats of its last key to a power of two."""
    for start in range(0, len(keys), IN_GROUP):
        group = keys[start:start + IN_GROUP]
        size = 1 << (len(group) - 1).bit_length()
        yield group + [group[-1]] * (size - len(group))


def _select_in(conn: Connection, statement: Any, keys: list[Any], **params: Any) -> Iterable[Row[Any]]:
    for group in _in_groups(keys):
        yield from conn.execute(statement, {"keys": group, **params})


def _facts(row: Row[Any], items: tuple[ItemFacts, ...] = ()) -> OrderFacts:
    values: dict[str, Any] = {name: (utc(row._mapping[name]) if name in _DATE_FIELDS else row._mapping[name])
                              for name in ORDER_FIELDS}
    return OrderFacts(order_id=row._mapping["order_id"], items=items, **values)


def _order_values(facts: OrderFacts) -> dict[str, Any]:
    values = {name: getattr(facts, name) for name in ORDER_FIELDS}
    values["status"] = values["status"] or "pending"        # a new order nobody gave a status is pending
    values["open_claim"] = bool(values["open_claim"])
    return values


def upsert_orders(conn: Connection, account: str, orders: Iterable[OrderFacts], now: datetime,
                  created_since: datetime | None = None) -> UpsertCounts:
    """Merge ``orders`` (one per order id) into the stored ones, creating those not known yet.

    ``created_since``: an order created at or after this time is counted as created,
    not updated, when it changes again (the same order in a later chunk of one import,
    which passes its start time here); default ``now``.
    """
    by_id = {o.order_id: o for o in orders}
    counts = UpsertCounts()
    if not by_id:
        return counts
    since = created_since or now
    stored = {r.order_id: r for r in _select_in(conn, _ORDERS_BY_IDS, list(by_id), account=account)}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for order_id, new in by_id.items():
        row = stored.get(order_id)
        if row is None:
            inserts.append({"account": account, "order_id": order_id, "created_at": now, "updated_at": now,
                            **_order_values(new)})
            continue
        current = _facts(row)
        merged = merge_order(current, replace(new, items=()))
        if merged != current:
            updates.append({"row_id": row.id, "updated_at": now, **_order_values(merged)})
            if utc(row.created_at) < since:   # type: ignore[operator]
                counts.updated += 1
    if inserts:
        conn.execute(ORDERS.insert(), inserts)
        counts.created = len(inserts)
        created = _select_in(conn, _ORDER_ROWS_BY_IDS, [i["order_id"] for i in inserts], account=account)
        row_ids = {str(r.order_id): int(r.id) for r in created}
    else:
        row_ids = {}
    if updates:
        conn.execute(_UPDATE_ORDER, updates)
    row_ids.update({order_id: int(r.id) for order_id, r in stored.items()})
    _upsert_items(conn, {row_ids[o.order_id]: o.items for o in by_id.values() if o.items}, counts)
    return counts


def _upsert_items(conn: Connection, items_by_row: dict[int, tuple[ItemFacts, ...]], counts: UpsertCounts) -> None:
    if not items_by_row:
        return
    stored: dict[int, dict[str, tuple[int, ItemFacts]]] = {}
    for r in _select_in(conn, _ITEMS_BY_ROWS, list(items_by_row)):
        stored.setdefault(r.order_row, {})[r.item_key] = (r.id, ItemFacts(r.item_key, r.sku, r.asin, r.title,
                                                                            r.quantity))
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for order_row, items in items_by_row.items():
        known = stored.get(order_row, {})
        for item in items:
            found = known.get(item.item_key)
            if found is None:
                line = find_line((facts for _, facts in known.values()), item)
                found = known[line.item_key] if line is not None else None
            if found is None:
                inserts.append({"order_row": order_row, "item_key": item.item_key, "sku": item.sku,
                                "asin": item.asin, "title": item.title, "quantity": item.quantity})
                continue
            row_id, current = found
            merged = merge_item(current, item)
            if merged != current:
                updates.append({"row_id": row_id, **{name: getattr(merged, name) for name in _ITEM_FIELDS}})
    if inserts:
        conn.execute(ORDER_ITEM.insert(), inserts)
    if updates:
        conn.execute(_UPDATE_ITEM, updates)
    counts.items_created += len(inserts)
    counts.items_updated += len(updates)


# --------------------------------------------------------------------------- single orders

def order_by_id(conn: Connection, account: str, order_id: str) -> OrderFacts | None:
    """The stored order with its items, or ``None``."""
    row = conn.execute(select(ORDERS).where(ORDERS.c.account == account, ORDERS.c.order_id == order_id)).first()
    return None if row is None else facts_of_rows(conn, [row])[0]


def facts_of_rows(conn: Connection, rows: list[Row[Any]]) -> list[OrderFacts]:
    """Rows of the orders table (all its columns) -> their facts with their items, in the same order."""
    items: dict[int, list[ItemFacts]] = {}
    for i in _select_in(conn, _ITEMS_BY_ROWS.order_by(ORDER_ITEM.c.id), [r.id for r in rows]):
        items.setdefault(int(i.order_row), []).append(ItemFacts(i.item_key, i.sku, i.asin, i.title, i.quantity))
    return [_facts(r, tuple(items.get(int(r.id), ()))) for r in rows]


@functools.cache
def _link_statement(dialect: str, returning: bool = True) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE (SQLite 3.24+, PostgreSQL 9.5+): the buyer link in one statement.

    It is what :func:`upsert_orders` does with a link (:func:`bridge.domain.orders.merge_order`:
    the alias replaces the stored one, a site or language the link gives replaces the stored
    one, nothing else changes; a new order is pending), written for one order so that it costs
    one statement: a buyer message that names an order runs it, and most of them do.
    The WHERE leaves an order that already says all of it untouched (no row returned).
    Without ``returning``, for an executemany of links to distinct orders.
    """
    if dialect not in UPSERT_DIALECTS:
        return None
    insert = dialect_insert(dialect, ORDERS)
    new = insert.excluded
    statement = insert.values(
        account=bindparam("account"), order_id=bindparam("order_id"), buyer_alias=bindparam("alias"),
        marketplace=bindparam("marketplace", type_=ORDERS.c.marketplace.type),
        language=bindparam("language", type_=ORDERS.c.language.type), status="pending", open_claim=False,
        created_at=bindparam("now", type_=ORDERS.c.created_at.type),
        updated_at=bindparam("now", type_=ORDERS.c.updated_at.type),
    ).on_conflict_do_update(
        index_elements=[ORDERS.c.account, ORDERS.c.order_id],
        set_={"buyer_alias": new.buyer_alias, "marketplace": func.coalesce(new.marketplace, ORDERS.c.marketplace),
              "language": func.coalesce(new.language, ORDERS.c.language), "updated_at": new.updated_at},
        where=or_(ORDERS.c.buyer_alias.is_distinct_from(new.buyer_alias),
                  and_(new.marketplace.is_not(None), ORDERS.c.marketplace.is_distinct_from(new.marketplace)),
                  and_(new.language.is_not(None), ORDERS.c.language.is_distinct_from(new.language))),
    )
    # A row back when one was made or changed (rowcount is not as plain on every driver).
    return statement.returning(ORDERS.c.id) if returning else statement


def _check_link(link: OrderFacts) -> None:
    if not link.buyer_alias:
        raise ValueError(f"a buyer link without a buyer alias: {link}")
    if link.items or any(getattr(link, name) is not None
                         for name in ORDER_FIELDS if name not in ("buyer_alias", "marketplace", "language")):
        raise ValueError(f"a buyer link tells the buyer, site and language only, not {link}")


def _link_values(account: str, link: OrderFacts, now: datetime) -> dict[str, Any]:
    return {"account": account, "order_id": link.order_id, "alias": link.buyer_alias,
            "marketplace": link.marketplace, "language": link.language, "now": now}



def link_buyer(conn: Connection, account: str, order_id: str, alias: str, now: datetime,
               link: OrderFacts | None = None) -> bool:
    """Record ``alias`` (a base relay alias) as the buyer of an order; an order not known yet is made, pending.

    True when something changed. The alias a buyer writes from is the buyer's:
    it replaces one a report gave. ``link``: more the mail tells (its site and
    language, :func:`bridge.domain.orders.buyer_link`); its alias must be ``alias``.
    Another writer making the same order at the same moment (a report import) is
    no error: the database merges the two.
    """
    link = link or OrderFacts(order_id, buyer_alias=alias)
    if (link.order_id, link.buyer_alias) != (order_id, alias):
        raise ValueError(f"the link is about {link.order_id} and {link.buyer_alias}, not {order_id} and {alias}")
    _check_link(link)
    statement = _link_statement(conn.dialect.name)
    if statement is None:   # a database without ON CONFLICT: the general merge, a few statements more
        counts = upsert_orders(conn, account, [link], now)
        return bool(counts.created or counts.updated)
    return conn.execute(statement, _link_values(account, link, now)).first() is not None


def link_buyers(conn: Connection, account: str, links: Iterable[OrderFacts], now: datetime) -> None:
    """:func:`link_buyer` for several links (each made by :func:`bridge.domain.orders.buyer_link`) in
    one executemany: links to the same order are merged first, in their order, as one after the
    other would have left it (one row of a statement must not meet another's conflict)."""
    checked = list(links)
    for link in checked:
        _check_link(link)
    merged = merge_rows(checked)
    if not merged:
        return
    statement = _link_statement(conn.dialect.name, returning=False)
    if statement is None:
        upsert_orders(conn, account, merged.values(), now)
        return
    conn.execute(statement, [_link_values(account, link, now) for link in merged.values()])


def set_order_status(conn: Connection, account: str, order_id: str, status: str | None, now: datetime, *,
                     open_claim: bool | None = None, force: bool = False) -> bool | None:
    """Change an order's status (and/or its open claim); ``None`` when the order is not known.

    Without ``force`` the status moves only forward (:func:`bridge.domain.orders.merge_status`);
    ``force`` sets it as given (an operator correcting a mistake). True when something changed.
    """
    row = conn.execute(select(ORDERS.c.id, ORDERS.c.status, ORDERS.c.open_claim).where(
        ORDERS.c.account == account, ORDERS.c.order_id == order_id)).first()
    if row is None:
        return None
    new_status = (status or row.status) if force else merge_status(row.status, status)
    new_claim = row.open_claim if open_claim is None else open_claim
    if new_status == row.status and bool(new_claim) == bool(row.open_claim):
        return False
    conn.execute(update(ORDERS).where(ORDERS.c.id == row.id).values(status=new_status, open_claim=new_claim,
                                                                      updated_at=now))
    return True


def orders_for_account(conn: Connection, accounts: str | Iterable[str], limit: int = 1000) -> list[dict[str, Any]]:
    """An account's (or several accounts') orders, newest purchase first, with their items, as plain values
    for listing and JSON (dates as ISO text)."""
    names = [accounts] if isinstance(accounts, str) else list(accounts)
    rows = list(conn.execute(select(ORDERS).where(ORDERS.c.account.in_(names)).order_by(
        ORDERS.c.purchased_at.desc(), ORDERS.c.id.desc()).limit(limit)))
    items: dict[int, list[dict[str, Any]]] = {}
    if rows:
        for i in conn.execute(select(ORDER_ITEM).where(ORDER_ITEM.c.order_row.in_([r.id for r in rows])).order_by(
                ORDER_ITEM.c.id)):
            items.setdefault(i.order_row, []).append(
                {"item_key": i.item_key, "sku": i.sku, "asin": i.asin, "title": i.title, "quantity": i.quantity})
    out = []
    for r in rows:
        m = r._mapping
        entry: dict[str, Any] = {"account": r.account, "order_id": r.order_id}
        entry.update({name: iso(utc(m[name])) if name in _DATE_FIELDS else m[name] for name in ORDER_FIELDS})
        entry["open_claim"] = bool(r.open_claim)
        entry["items"] = items.get(r.id, [])
        out.append(entry)
    return out
