"""Issue 13's black-box run: order reports in, `run --once` twice, exactly one feedback request out.

Only the ``mailbridge`` command (``bridge.cli.command.main`` with an injected
clock) touches the database; the real Dovecot and SMTP servers receive what it
sends. The reports are written as Amazon writes them, dated around the clock.

Orders (the clock: 2026-11-23 12:00 UTC):

- ...0001 delivered 8 days ago (All Orders: "Shipped - Delivered to Buyer"): asked;
- ...0002 its buyer opted out with ``mailbridge optout add``: not asked;
- ...0003 cancelled by the All Orders report: not asked;
- ...0004 arrived 40 days ago: the marketplace's window has closed;
- ...0005 arrived 2 days ago: too early, scheduled;
- ...0006 not shipped (All Orders: Pending; its buyer known from the merchant report): not asked.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from bridgekit import Clock, parsed, text_of, to_buyers, to_staff

from bridge.cli.command import main
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples

ELIGIBLE, OPTED_OUT, CANCELLED, TOO_OLD, TOO_EARLY, UNSHIPPED = (f"111-0000000-000000{n}" for n in range(1, 7))
ALIAS = {order: f"buyer{order[-1]}x0qma2b7@marketplace.amazon.com" for order in
         (ELIGIBLE, OPTED_OUT, CANCELLED, TOO_OLD, TOO_EARLY, UNSHIPPED)}



def _ago(clock: Clock, days: float) -> datetime:
    return clock() - timedelta(days=days)


def _write(path: Path, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Path:
    path.write_text(samples.order_report(columns, rows))
    return path


def shipments(path: Path, clock: Clock) -> Path:
    """The shipped orders, one item each, arrived ``days`` ago; the eligible order's row is there twice."""
    def row(order: str, days: float) -> tuple[str, ...]:
        return samples.shipment_row(order, buyer=ALIAS[order], buyer_name=f"Buyer {order[-1]}",
                                    arrived=_ago(clock, days))
    eligible = row(ELIGIBLE, 8)
    return _write(path, samples.SHIPMENTS_COLUMNS, [eligible, row(OPTED_OUT, 8), row(CANCELLED, 8), eligible,
                                                    row(TOO_OLD, 40), row(TOO_EARLY, 2)])


def all_orders(path: Path, clock: Clock) -> Path:
    def row(order: str, status: str) -> tuple[str, ...]:
        return samples.all_orders_row(order, status, purchased=_ago(clock, 12))
    return _write(path, samples.ALL_ORDERS_COLUMNS, [row(ELIGIBLE, "Shipped - Delivered to Buyer"),
                                                     row(CANCELLED, "Cancelled"), row(UNSHIPPED, "Pending")])


def merchant(path: Path, clock: Clock) -> Path:
    """The unshipped order's buyer and promised date (8 days ago: it would be due, were it delivered)."""
    columns = ("order-id", "order-item-id", "purchase-date", "buyer-email", "buyer-name", "sku", "product-name",
               "quantity-purchased", "promise-date", "sales-channel")
    return _write(path, columns, [(UNSHIPPED, "50000000000006", _ago(clock, 12).isoformat(), ALIAS[UNSHIPPED],
                                   "Buyer 6", "LAMP-1", "Acme Lamp", "1", _ago(clock, 8).isoformat(), "Amazon.com")])


@pytest.fixture
def config(tmp_path: Path, fresh_mailbox: SandboxAccount, staff: SandboxAccount, smtp_server: SandboxSMTP) -> Path:
    path = tmp_path / "mailbridge.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mailbridge.db", seller=fresh_mailbox.user, staff=staff.user,
        imap_port=fresh_mailbox.port, smtp_port=smtp_server.port, imap_password=fresh_mailbox.password,
        sections={"smtp": {"sent_copies": "none"}, "feedback": {"enabled": True, "send_window": "00:00-24:00"}}))
    return path


def test_reports_in_run_twice_exactly_the_eligible_order_is_asked_once(
        tmp_path: Path, config: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()

    def mailbridge(*args: str) -> int:
        return main(["-c", str(config), *args], clock=clock)

    report = shipments(tmp_path / "shipments.txt", clock)
    assert mailbridge("orders", "import", str(report), "--account", "acme") == 0
    assert "6 rows read, 5 orders created, 0 updated" in capsys.readouterr().out
    assert mailbridge("orders", "import", str(report), "--account", "acme") == 0      # again: nothing new
    assert "6 rows read, 0 orders created" in capsys.readouterr().out
    assert mailbridge("orders", "import", str(all_orders(tmp_path / "all.txt", clock)), "--account", "acme") == 0
    assert mailbridge("orders", "import", str(merchant(tmp_path / "merchant.txt", clock)), "--account", "acme") == 0
    assert mailbridge("optout", "add", ALIAS[OPTED_OUT]) == 0

    capsys.readouterr()
    assert mailbridge("orders", "list", "--json") == 0
    orders = {o["order_id"]: o for o in json.loads(capsys.readouterr().out)["orders"]}
    assert {k: o["status"] for k, o in orders.items()} == {
        ELIGIBLE: "delivered", OPTED_OUT: "shipped", CANCELLED: "cancelled", TOO_OLD: "shipped",
        TOO_EARLY: "shipped", UNSHIPPED: "pending"}
    assert [(i["sku"], i["quantity"]) for i in orders[ELIGIBLE]["items"]] == [("TENT-2P", 1)]  # not doubled

    assert mailbridge("run", "--once") == 0
    assert mailbridge("run", "--once") == 0

    (request,) = to_buyers(smtp_server)
    mail = parsed(request.data)
    assert request.mail_from == fresh_mailbox.user                     # the seller's registered address
    assert tuple(request.rcpt_tos) == (ALIAS[ELIGIBLE],)
    assert fresh_mailbox.user in str(mail["From"])
    assert ELIGIBLE in str(mail["Subject"]) and ELIGIBLE in text_of(request.data)
    assert to_staff(smtp_server, staff) == []                          # nothing for staff in all this

    capsys.readouterr()
    assert mailbridge("feedback", "list", "--json") == 0
    listed = {r["order_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {k: r["state"] for k, r in listed.items()} == {ELIGIBLE: "sent", TOO_EARLY: "scheduled"}
    # Due 7 days after the arrival (days_after), inside the marketplace's 5-30 days.
    assert datetime.fromisoformat(listed[TOO_EARLY]["due_at"]) == clock() + timedelta(days=5)
    assert listed[ELIGIBLE]["message_id"] == str(mail["Message-ID"]).strip("<>")
