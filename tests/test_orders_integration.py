"""Order mail through the real Dovecot and the real daemon: notices update orders, never staff's inbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridgekit import Clock, make_settings, rows

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.workers.supervisor import Daemon

DATA = Path(__file__).parent / "data" / "orders"
ORDER = "114-7788990-1122334"
ALIAS = "k3j9x0qma2b7@marketplace.amazon.com"


def test_sold_ship_now_creates_an_order_a_cancellation_cancels_it_and_a_buyer_is_linked(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    daemon = Daemon(settings, clock=Clock())
    seller = fresh_mailbox.user

    dovecot.append(seller, "INBOX", (DATA / "sold_ship_now_two_items.eml").read_bytes())
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme"].kinds == {"notice": 1} and report.ingest["acme"].forwarded == 0
    with daemon.engine.begin() as conn:
        order = store.order_by_id(conn, "acme", ORDER)
    assert order is not None and order.status == "pending" and order.buyer_alias is None
    assert [(i.sku, i.quantity) for i in order.items] == [("TENT-2P-OLV", 1), ("FOOT-2P", 2)]
    # No conversation, no buyer, nothing for staff.
    assert rows(daemon.engine, store.CONV) == [] and rows(daemon.engine, store.BUYER) == []
    assert rows(daemon.engine, store.OUTBOX) == [] and smtp_server.received == []

    dovecot.append(seller, "INBOX", (DATA / "cancellation_request_notice.eml").read_bytes())
    asyncio.run(daemon.run_once())
    with daemon.engine.begin() as conn:
        assert store.order_by_id(conn, "acme", ORDER).status == "cancelled"   # type: ignore[union-attr]
    assert rows(daemon.engine, store.OUTBOX) == [] and smtp_server.received == []

    # The buyer writes about the order: forwarded as ever, and the alias is linked to the order.
    dovecot.append(seller, "INBOX", samples.amazon_buyer_message(
        buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order=ORDER, question="Why was my order cancelled?",
        seller_address=seller, message_id="buyer.orders.1@email.amazon.com"))
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme"].forwarded == 1
    assert len(smtp_server.wait_for(1)) == 1
    with daemon.engine.begin() as conn:
        order = store.order_by_id(conn, "acme", ORDER)
    assert order is not None and order.buyer_alias == ALIAS and order.status == "cancelled"
    (conv,) = rows(daemon.engine, store.CONV)
    assert conv.order_id == ORDER
    assert len(rows(daemon.engine, store.ORDERS)) == 1
    daemon.engine.dispose()
