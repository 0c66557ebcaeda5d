"""The store on a real PostgreSQL (127.0.0.1:5432): same flow as SQLite, and safe concurrent claims."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bridgekit import Clock, make_settings, outbox_states, row_moves_on_before_update, rows

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.store.engine import open_database
from bridge.workers.supervisor import Daemon

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres


def test_ingest_and_forward_on_postgres(tmp_path: Path, pg_url: str, dovecot: DovecotServer,
                                        fresh_mailbox: SandboxAccount, smtp_server: SandboxSMTP,
                                        staff: SandboxAccount) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, db_url=pg_url,
                             account={"forward_existing": True})
    for raw in samples.buyer_backlog(6, seller_address=fresh_mailbox.user, seed=31, buyers=2):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme"].forwarded == 6
    assert len(smtp_server.wait_for(6)) == 6
    assert outbox_states(daemon.engine) == {"sent": 6}
    assert len(rows(daemon.engine, store.CONV)) == 2
    assert sorted(r.message_count for r in rows(daemon.engine, store.CONV)) == [3, 3]
    # A second pass finds nothing new and sends nothing.
    assert asyncio.run(daemon.run_once()).ingest["acme"].recorded == 0
    assert len(smtp_server.received) == 6
    daemon.engine.dispose()


def test_concurrent_claims_never_take_the_same_row(pg_url: str) -> None:
    engine = open_database(pg_url)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for i in range(200):
            store.enqueue(conn, account="acme", message_id=f"m{i}@x", purpose="staff_alert", audience="staff",
                          envelope_from="s@x", recipients=("t@x",), subject="s", raw=b"x", now=now)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def worker(n: int) -> None:
        while True:
            with engine.begin() as conn:
                item = store.claim_due(conn, "acme", f"w{n}", now)
            if item is None:
                return
            claimed[n].append(item.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [i for ids in claimed for i in ids]
    assert len(everything) == 200 and len(set(everything)) == 200
    assert sum(1 for ids in claimed if ids) >= 2          # the work really was shared
    engine.dispose()


@pytest.mark.parametrize(("action", "read", "moved_to"), [
    ("retry", "held", "cancelled"),     # an opt-out notice cancels the held row while an operator releases it
    ("cancel", "failed", "queued"),     # another operator released the row a moment earlier
])
def test_operator_action_on_a_row_another_transaction_moved_on_does_nothing(
        pg_url: str, action: str, read: str, moved_to: str) -> None:
    engine = open_database(pg_url)
    now = datetime.now(timezone.utc)
    act = store.operator_retry if action == "retry" else store.operator_cancel
    try:
        with engine.begin() as conn:
            outbox_id = store.enqueue(conn, account="acme", message_id="row@x", purpose="buyer_reply",
                                      audience="buyer", envelope_from="s@x", recipients=("b@x",), subject="s",
                                      raw=b"x", now=now, state=read, category="unsolicited")
        # The other transaction commits between the operator's read and conditional write.
        with engine.begin() as conn, row_moves_on_before_update(conn, outbox_id, moved_to, by=engine):
            assert act(conn, outbox_id, ["acme"], now, "jo") is None
        assert [r.state for r in rows(engine, store.OUTBOX)] == [moved_to]
    finally:
        engine.dispose()


def test_nul_bytes_in_mail_do_not_block_postgres(tmp_path: Path, pg_url: str, dovecot: DovecotServer,
                                                 fresh_mailbox: SandboxAccount, smtp_server: SandboxSMTP,
                                                 staff: SandboxAccount) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, db_url=pg_url,
                             account={"forward_existing": True})
    good = samples.buyer_backlog(2, seller_address=fresh_mailbox.user, seed=32)
    nul = good[0].replace(b"Begin message -------------\r\n\r\n", b"Begin message -------------\r\n\r\nA\x00B ")
    nul = nul.replace(b"Message-ID: <", b"Message-ID: <nul.")
    for raw in (nul, good[1]):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme"].forwarded == 2 and report.ingest["acme"].quarantined == 0
    assert len(smtp_server.wait_for(2)) == 2
    daemon.engine.dispose()


def test_order_upserts_on_postgres(pg_url: str) -> None:
    from test_store_orders import check_upserts

    engine = open_database(pg_url)
    try:
        check_upserts(engine)
    finally:
        engine.dispose()


def test_buyer_links_on_postgres(pg_url: str) -> None:
    from test_store_orders import LINK_BATCHES, LINK_CASES, check_link_buyer, check_link_buyers

    engine = open_database(pg_url)
    try:
        for stored, link in LINK_CASES:
            with engine.begin() as conn:
                conn.execute(store.ORDERS.delete().where(store.ORDERS.c.account.in_(["linked", "merged"])))
            check_link_buyer(engine, stored, link)
        for links in LINK_BATCHES:
            with engine.begin() as conn:
                conn.execute(store.ORDERS.delete().where(store.ORDERS.c.account.in_(["one-by-one", "together"])))
            check_link_buyers(engine, links)
    finally:
        engine.dispose()


def test_order_report_import_on_postgres(pg_url: str) -> None:
    from bridge.services.orders import import_report

    data = Path(__file__).parent / "data" / "orders"
    engine = open_database(pg_url)
    try:
        for name in ("all_orders.txt", "shipments.txt", "merchant.csv", "shipments.txt"):
            import_report(engine, "acme", data / name)
        assert len(rows(engine, store.ORDERS)) == 5 and len(rows(engine, store.ORDER_ITEM)) == 6
        with engine.begin() as conn:
            tent = store.order_by_id(conn, "acme", "111-0000001-0000001")
        assert tent is not None and tent.status == "shipped"
        assert tent.purchased_at == datetime(2026, 11, 2, 18, 15, tzinfo=timezone.utc)
    finally:
        engine.dispose()


def test_response_reminders_on_postgres(tmp_path: Path, pg_url: str, dovecot: DovecotServer,
                                        fresh_mailbox: SandboxAccount, smtp_server: SandboxSMTP,
                                        staff: SandboxAccount) -> None:
    clock = Clock()
    start = clock.now
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, db_url=pg_url,
                             account={"forward_existing": True})
    dovecot.append(fresh_mailbox.user, "INBOX", samples.amazon_buyer_message(
        buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556", question="Where is it?",
        seller_address=fresh_mailbox.user, message_id="pg.buyer@email.amazon.com", date=start))
    daemon = Daemon(settings, clock=clock)
    asyncio.run(daemon.run_once())
    (note,) = smtp_server.wait_for(1)
    for hours in (12, 12.5, 20):
        clock.now = start + timedelta(hours=hours)
        asyncio.run(daemon.run_once())
    reminders = [r for r in smtp_server.received if "unanswered for" in r.data.decode(errors="replace")]
    assert len(reminders) == 2
    with daemon.engine.begin() as conn:
        (waiting,) = store.account_status(conn, "acme", clock.now)["awaiting_answer"]
    assert waiting["seconds_left"] == 4 * 3600 and waiting["reminders_sent"] == 2
    dovecot.append(fresh_mailbox.user, "INBOX", samples.staff_reply(note.data, staff=staff.user,
                                                                    text="No response needed.", message_id="pg.s@x"))
    asyncio.run(daemon.run_once())
    assert rows(daemon.engine, store.CONV)[0].status == "closed"
    assert not [r for r in smtp_server.received if "@marketplace.amazon." in r.rcpt_tos[0]]
    daemon.engine.dispose()
