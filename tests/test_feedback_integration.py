"""Feedback requests end to end: orders in the database, the clock moved, the real Dovecot and SMTP server.

Exactly the eligible requests reach the SMTP server, from the seller's registered
address and naming their order; an opt-out notice cancels what is scheduled and
is recorded on what was sent, never forwarded to staff; a second pass, or the
``mailbridge`` command run twice, sends nothing twice.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bridgekit import Clock, insert_order, make_settings, parsed, rows, text_of, to_buyers, to_staff, wait_until

from bridge import store
from bridge.cli.command import main
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml
from bridge.workers.supervisor import Daemon

DATA = Path(__file__).parent / "data" / "bounces"
ALIAS = "k3j9x0qma2b7@marketplace.amazon.com"
ANY_TIME = {"enabled": True, "send_window": "00:00-24:00"}


class Shop:
    """One seller account with feedback requests on, its orders put in by hand."""

    def __init__(self, tmp_path: Path, dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount,
                 smtp: SandboxSMTP, **fb: Any) -> None:
        self.dovecot, self.seller, self.staff, self.smtp = dovecot, seller, staff, smtp
        self.clock = Clock()
        settings = make_settings(tmp_path, seller, staff, smtp, account={"feedback": {**ANY_TIME, **fb}})
        self.daemon = Daemon(settings, clock=self.clock)

    def order(self, order_id: str, days_ago: float | None, **kw: Any) -> None:
        delivered = None if days_ago is None else self.clock() - timedelta(days=days_ago)
        insert_order(self.daemon.engine, order_id, delivered_at=delivered, now=self.clock(), **kw)

    def run(self) -> Any:
        return asyncio.run(self.daemon.run_once())

    def requests(self) -> dict[str, tuple[str, str | None]]:
        return {r.order_id: (r.state, r.reason) for r in rows(self.daemon.engine, store.FEEDBACK)}

    def asked(self) -> list[str]:
        """The order ids of the feedback requests the SMTP server received."""
        return [str(parsed(r.data)["Subject"]).split()[2].rstrip(":") for r in to_buyers(self.smtp)]


@pytest.fixture
def shop(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
         smtp_server: SandboxSMTP) -> Shop:
    return Shop(tmp_path, dovecot, fresh_mailbox, staff, smtp_server)


def optout_notice(order_id: str, alias: str = ALIAS) -> bytes:
    raw = (DATA / "amazon_optout_en.eml").read_bytes()
    return raw.replace(b"p3q8r1s6t2u7v4w9@", alias.split("@")[0].encode() + b"@").replace(
        b"112-9876543-2109876", order_id.encode())


def test_exactly_the_eligible_requests_reach_the_smtp_server(shop: Shop) -> None:
    shop.order("111-0000000-0000001", 7)                                            # eligible now
    shop.order("111-0000000-0000002", 2, buyer_alias="b2early0000@marketplace.amazon.com")   # too early
    shop.order("111-0000000-0000003", 40, buyer_alias="b3old000000@marketplace.amazon.com")  # too old
    shop.order("111-0000000-0000004", 7, status="cancelled", buyer_alias="b4cancel000@marketplace.amazon.com")
    shop.order("111-0000000-0000005", None, status="pending", buyer_alias="b5pending00@marketplace.amazon.com")
    shop.order("111-0000000-0000006", 7, buyer_alias="b6optout000@marketplace.amazon.com")
    with shop.daemon.engine.begin() as conn:
        store.set_opt_out(conn, "acme", "b6optout000@marketplace.amazon.com", opted_out=True, source="t",
                          now=shop.clock())
    report = shop.run()
    assert report.feedback == {"acme": 1}
    assert shop.asked() == ["111-0000000-0000001"]
    (mail,) = to_buyers(shop.smtp)
    assert mail.mail_from == shop.seller.user and tuple(mail.rcpt_tos) == (ALIAS,)
    assert "111-0000000-0000001" in text_of(mail.data)
    assert shop.requests() == {"111-0000000-0000001": ("sent", None), "111-0000000-0000002": ("scheduled", None)}

    shop.run()                                                      # a second pass: nothing new
    assert len(to_buyers(shop.smtp)) == 1
    shop.clock.advance(5 * 86400)                                   # the early one is due (day 7)
    shop.run()
    shop.run()
    assert shop.asked() == ["111-0000000-0000001", "111-0000000-0000002"]
    assert to_staff(shop.smtp, shop.staff) == []                    # nothing for staff in all this


def test_an_opt_out_notice_before_the_due_time_cancels_the_request(shop: Shop) -> None:
    shop.order("111-0000000-0000001", 2)
    shop.run()
    assert shop.requests()["111-0000000-0000001"][0] == "scheduled"
    # The buyer opted out; Amazon says so about another message to them (order 2, not ours to know).
    shop.dovecot.append(shop.seller.user, "INBOX", optout_notice("111-0000000-0000009"))
    shop.run()
    state, reason = shop.requests()["111-0000000-0000001"]
    assert state == "cancelled" and reason.startswith("buyer opted out (notice <")
    shop.clock.advance(10 * 86400)
    shop.run()
    assert to_buyers(shop.smtp) == []
    assert to_staff(shop.smtp, shop.staff) == []


def test_the_opt_out_notice_answering_a_request_is_recorded_not_forwarded(shop: Shop,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    shop.order("111-0000000-0000001", 7, buyer_alias=None)         # no alias: the buyer is known only later
    shop.order("111-0000000-0000002", 7)
    shop.run()
    assert shop.asked() == ["111-0000000-0000002"]
    shop.dovecot.append(shop.seller.user, "INBOX", optout_notice("111-0000000-0000002", alias="x"))
    shop.run()
    assert shop.requests()["111-0000000-0000002"] == ("sent", "not delivered: buyer opted out")
    (buyer,) = rows(shop.daemon.engine, store.BUYER, alias=ALIAS)   # known from the order, not the notice
    assert buyer.opted_out_at is not None
    (notice,) = [m for m in rows(shop.daemon.engine, store.MESSAGE) if m.kind == "bounce"]
    assert notice.disposition == "opted_out"
    assert to_staff(shop.smtp, shop.staff) == []
    with shop.daemon.engine.begin() as conn:
        assert store.account_status(conn, "acme")["feedback"]["not_delivered_opted_out"] == 1


def _config(tmp_path: Path, shop: Shop) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mailbridge.db", seller=shop.seller.user, staff=shop.staff.user,
        imap_port=shop.seller.port, smtp_port=shop.smtp.port, imap_password=shop.seller.password,
        sections={"smtp": {"sent_copies": "none"}})
        + '\n[accounts.feedback]\nenabled = true\nsend_window = "00:00-24:00"\n')
    return path


def test_the_commands(tmp_path: Path, shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(_config(tmp_path, shop))
    shop.order("111-0000000-0000001", 7)
    shop.order("111-0000000-0000002", 2, buyer_alias="b2early0000@marketplace.amazon.com")
    shop.order("111-0000000-0000003", 7, buyer_alias="b3amazon000@marketplace.amazon.com")
    shop.order("111-0000000-0000004", 7, status="refunded", buyer_alias="b4refund000@marketplace.amazon.com")

    assert main(["-c", config, "feedback", "skip", "111-0000000-0000003", "--reason", "Request a Review"],
                clock=shop.clock) == 0
    assert main(["-c", config, "feedback", "preview", "111-0000000-0000001"], clock=shop.clock) == 0
    out = capsys.readouterr().out
    assert "Subject: Your order 111-0000000-0000001" in out and "May be sent now: yes" in out
    assert f"From: Acme Outdoor <{shop.seller.user}>" in out and f"To: {ALIAS}" in out
    assert main(["-c", config, "feedback", "preview", "111-0000000-0000004"], clock=shop.clock) == 1
    assert "order_ended: the order was refunded" in capsys.readouterr().out

    for _ in range(2):                                              # run --once twice: one request, once
        assert main(["-c", config, "run", "--once"], clock=shop.clock) == 0
    assert shop.asked() == ["111-0000000-0000001"]
    capsys.readouterr()
    assert main(["-c", config, "feedback", "list", "--json"], clock=shop.clock) == 0
    listed = {r["order_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {k: v["state"] for k, v in listed.items()} == {
        "111-0000000-0000001": "sent", "111-0000000-0000002": "scheduled", "111-0000000-0000003": "skipped"}
    assert listed["111-0000000-0000002"]["due_at"] == (shop.clock() + timedelta(days=5)).isoformat()
    assert listed["111-0000000-0000003"]["reason"] == "asked elsewhere: Request a Review"
    assert main(["-c", config, "status"], clock=shop.clock) == 0
    assert "feedback requests: scheduled 1, claimed 0, sent 1, skipped 1, cancelled 0" in capsys.readouterr().out
    assert main(["-c", config, "feedback", "preview", "999-0000000-0000000"], clock=shop.clock) == 2
    # An operator's opt-out cancels the buyer's scheduled request at once.
    assert main(["-c", config, "optout", "add", "b2early0000@marketplace.amazon.com"], clock=shop.clock) == 0
    state, reason = shop.requests()["111-0000000-0000002"]
    assert state == "cancelled" and reason.startswith("buyer opted out (operator ")
    shop.clock.advance(6 * 86400)
    assert main(["-c", config, "run", "--once"], clock=shop.clock) == 0
    assert shop.asked() == ["111-0000000-0000001"]


def test_the_daemon_dispatches_on_its_timer_and_wakes_the_outbox(shop: Shop) -> None:
    import threading

    shop.order("111-0000000-0000001", 7)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(shop.daemon.run(stop),), daemon=True)
    thread.start()
    try:
        wait_until(lambda: to_buyers(shop.smtp), "a mail to the buyer", 20)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    assert not thread.is_alive()
    assert shop.asked() == ["111-0000000-0000001"]
    assert [h.name for h in shop.daemon.health.heartbeats if h.name.startswith("feedback")] == ["feedback-acme"]


def test_the_dispatcher_schedules_every_ten_minutes_and_dispatches_every_tick(shop: Shop) -> None:
    from bridge.workers.feedback import FeedbackDispatcher

    woken: list[int] = []
    dispatcher = FeedbackDispatcher(shop.daemon.engine, shop.daemon.accounts[0], clock=shop.clock,
                                    on_queued=lambda: woken.append(1))
    assert dispatcher.tick().sent == 0 and dispatcher.last_scheduled == shop.clock()
    shop.order("111-0000000-0000001", 7)
    shop.clock.advance(60)
    assert dispatcher.tick().sent == 0                 # not looked for yet
    shop.clock.advance(600)
    assert dispatcher.tick().sent == 1 and woken == [1]
    assert dispatcher.tick().sent == 0 and woken == [1]


def test_a_request_cancelled_in_the_outbox_says_so(shop: Shop) -> None:
    from bridge.services import feedback as service
    from bridge.services import guard

    shop.order("111-0000000-0000001", 7)
    shop.order("111-0000000-0000002", 7, buyer_alias="b2second000@marketplace.amazon.com")
    acct = shop.daemon.accounts[0]
    with shop.daemon.engine.begin() as conn:
        service.schedule(conn, acct, shop.clock())
    assert service.dispatch_due(shop.daemon.engine, acct, shop.clock(), 5, worker="t").sent == 2   # queued only
    with shop.daemon.engine.begin() as conn:
        # Buyer 1 opts out through the command's path: the queued mail and its request are cancelled together.
        store.set_opt_out(conn, "acme", ALIAS, opted_out=True, source="operator t", now=shop.clock())
        guard.cancel_unsolicited(conn, account="acme", buyer=ALIAS, source="operator t", actor="t", now=shop.clock())
        service.buyer_opted_out(conn, "acme", ALIAS, "operator t", shop.clock())
        # Buyer 2's opt-out is only in the buyer table: the outbox finds it at send time.
        store.set_opt_out(conn, "acme", "b2second000@marketplace.amazon.com", opted_out=True, source="x",
                          now=shop.clock())
    shop.run()
    assert to_buyers(shop.smtp) == []
    got = shop.requests()
    assert got["111-0000000-0000001"] == ("cancelled", "cancelled before it was sent: buyer opted out (operator t)")
    state, reason = got["111-0000000-0000002"]
    assert state == "cancelled" and reason.startswith("cancelled at send time: ") and "opted out" in reason
