"""Orders from reports and from mail: the import of a report file, and what order notices and buyers tell.

:func:`import_report` streams a report file (constant memory: one chunk of rows at
a time) and writes each chunk in its own transaction, so a large file neither holds
the database for long nor loses what was imported when a later chunk fails.

:func:`apply_order_mail` runs inside the inbound transaction of one message: a
marketplace's order notice ("Sold, ship now", refund, return, cancellation,
A-to-z claim) creates or updates its orders, and a buyer writing about an order
links the buyer's alias to it. Neither opens a conversation or tells staff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from bridge import store
from bridge.domain.classify import Classification, Kind
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry
from bridge.domain.orders import (
    BadRow,
    OrderFacts,
    UnknownLayout,
    buyer_link,
    merge_rows,
    order_from_notice,
    read_report,
)
from bridge.domain.parse import ParsedMail

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000          # rows per transaction: big enough that a commit's fsync is cheap per row
MAX_BAD_ROWS_KEPT = 1000   # bad rows listed in the summary; more are only counted

Progress = Callable[[int, int, int], None]   # (rows read, bytes read, file size in bytes)


class UnreadableReport(Exception):
    """Raised by :func:`import_report` when the file cannot be read or its header matches no known layout."""


@dataclass
class ImportSummary:
    """What an import did. ``bad_rows`` lists the first :data:`MAX_BAD_ROWS_KEPT`; ``bad`` counts them all."""

    path: str
    layout: str = ""
    rows_read: int = 0
    orders_created: int = 0
    orders_updated: int = 0
    items_created: int = 0
    items_updated: int = 0
    bad: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def import_report(engine: Engine, account: str, path: str | Path, progress: Progress | None = None, *,
                  encoding: str = "utf-8", registry: Registry = DEFAULT_REGISTRY,
                  clock: Callable[[], datetime] = _utcnow, chunk_rows: int = CHUNK_ROWS) -> ImportSummary:
    """Import one order report file for ``account``; returns what it did.

    Bad rows are reported and skipped; good rows are kept. Raises
    :class:`UnreadableReport` (nothing imported) for a missing or unreadable file,
    an undecodable header or an unknown layout. Text that does not decode in
    ``encoding`` past the header is replaced (U+FFFD), never fatal.
    """
    path = Path(path)
    summary = ImportSummary(str(path))
    started = clock()
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            counter = _ByteCounter(f, encoding)
            try:
                layout, rows = read_report(counter.lines(), path.name, registry)
            except UnknownLayout as exc:
                raise UnreadableReport(f"{path}: {exc}") from None
            summary.layout = layout.name
            chunk: list[OrderFacts] = []
            for row in rows:
                summary.rows_read += 1
                if isinstance(row, BadRow):
                    summary.bad += 1
                    if len(summary.bad_rows) < MAX_BAD_ROWS_KEPT:
                        summary.bad_rows.append(row)
                else:
                    chunk.append(row)
                if summary.rows_read % chunk_rows == 0:
                    _write_chunk(engine, account, chunk, clock(), started, summary)
                    chunk = []
                    if progress is not None:
                        progress(summary.rows_read, counter.read, size)
            _write_chunk(engine, account, chunk, clock(), started, summary)
            if progress is not None:
                progress(summary.rows_read, counter.read, size)
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableReport(f"{path}: cannot read the file: {exc}") from None
    log.info("account %s: imported %s (%s): %d rows, %d orders created, %d updated, %d bad rows", account, path,
             summary.layout, summary.rows_read, summary.orders_created, summary.orders_updated, summary.bad)
    return summary


class _ByteCounter:
    """Text lines of a binary file, counting the bytes read (for progress) without ``tell()``."""

    def __init__(self, f: BinaryIO, encoding: str) -> None:
        self._f = f
        self._encoding = encoding
        self.read = 0

    def lines(self) -> Iterator[str]:
        first = True
        for raw in self._f:
            self.read += len(raw)
            if first:
                first = False
                # The header must decode: a wrong encoding is the user's to fix, said at once.
                yield raw.decode("utf-8-sig" if self._encoding.lower().replace("_", "-") == "utf-8"
                                 else self._encoding)
                continue
            yield raw.decode(self._encoding, "replace")


def _write_chunk(engine: Engine, account: str, chunk: list[OrderFacts], now: datetime, started: datetime,
                 summary: ImportSummary) -> None:
    if not chunk:
        return
    merged = merge_rows(chunk).values()
    try:
        with engine.begin() as conn:
            counts = store.upsert_orders(conn, account, merged, now, created_since=started)
    except IntegrityError:
        # Another writer (the daemon, from a "Sold, ship now" mail) created one of these
        # orders between our read and our insert: read the chunk again, once.
        with engine.begin() as conn:
            counts = store.upsert_orders(conn, account, merged, now, created_since=started)
    summary.orders_created += counts.created
    summary.orders_updated += counts.updated
    summary.items_created += counts.items_created
    summary.items_updated += counts.items_updated


# --------------------------------------------------------------------------- mail

def apply_order_mail(conn: Connection, account: str, mail: ParsedMail, cls: Classification, now: datetime,
                     registry: Registry = DEFAULT_REGISTRY) -> str | None:
    """What an inbound message tells of orders, applied in the message's transaction.

    - A marketplace notice about orders creates or updates them (status, open claim, items);
    - a buyer message naming an order links the buyer's alias to it.

    Returns a short note of what was done (for the log), or ``None``.
    """
    if cls.kind == Kind.NOTICE:
        marketplace = registry.notification_marketplace(mail.from_addr)
        notices = marketplace.read_order_notices(mail.subject, mail.text) if marketplace is not None else ()
        if not notices:
            return None
        orders = merge_rows(order_from_notice(n) for n in notices)
        store.upsert_orders(conn, account, orders.values(), now)
        return f"{notices[0].topic} notice: order(s) {', '.join(orders)}"
    link = buyer_order_link(mail, cls, registry)
    if link is not None and store.link_buyer(conn, account, link.order_id, cls.buyer_alias or "", now, link):
        return f"order {mail.order_id} linked to buyer {cls.buyer_alias}"
    return None


def buyer_order_link(mail: ParsedMail, cls: Classification,
                     registry: Registry = DEFAULT_REGISTRY) -> OrderFacts | None:
    """The link of a buyer message naming an order (for :func:`bridge.store.link_buyers`), else ``None``."""
    if cls.kind == Kind.BUYER and cls.buyer_alias and mail.order_id:
        return buyer_link(mail.order_id, cls.buyer_alias, registry)
    return None
