"""Delivery reports and marketplace notices through the real Dovecot: their effects on the real flow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bridgekit import Flow, audit, parsed, rows, text_of, to_buyers, to_staff

from bridge import store
from bridge.domain.compose import new_message_id
from bridge.services import guard

DATA = Path(__file__).parent / "data" / "bounces"
BUYER = "k3j9x0qma2b7@marketplace.amazon.com"     # Flow's buyer, order 111-2223334-4445556


def notice(name: str) -> bytes:
    """A corpus notice, re-addressed to Flow's buyer and order."""
    raw = (DATA / name).read_bytes()
    for old, new in ((b"p3q8r1s6t2u7v4w9", b"k3j9x0qma2b7"), (b"112-9876543-2109876", b"111-2223334-4445556")):
        raw = raw.replace(old, new)
    return raw



def test_optout_notice_flips_the_buyer_and_cancels_unsolicited_mail(flow: Flow) -> None:  # noqa: F811
    with flow.daemon.engine.begin() as conn:   # a pending review request (unsolicited) for this buyer
        pending = store.enqueue(conn, account="acme", message_id=new_message_id(flow.seller.user),
                                purpose="feedback_request", audience="buyer", envelope_from=flow.seller.user,
                                recipients=(BUYER,), subject="How was your order?", raw=b"Subject: x\r\n\r\nx",
                                now=flow.clock() + timedelta(days=1), category="unsolicited")
    flow.dovecot.append(flow.seller.user, "INBOX", notice("amazon_optout_en.eml"))
    report = flow.run()
    assert report.ingest["acme"].kinds == {"bounce": 1}
    (buyer,) = rows(flow.daemon.engine, store.BUYER, alias=BUYER)
    assert buyer.opted_out_at is not None and buyer.opted_out_source.startswith("notice <")
    (row,) = rows(flow.daemon.engine, store.OUTBOX, id=pending)
    assert row.state == "cancelled" and "opted out" in row.last_error
    events = [(a["event"], a["decision"]) for a in audit(flow)]
    assert ("optout", "opted_out") in events and ("outbound", "cancelled") in events
    # Opt-out never blocks a reply on the buyer's own thread.
    flow.reply("Hi Jane, the footprint is included.")
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1
    assert not any(BUYER in r.rcpt_tos and b"How was your order" in r.data for r in flow.smtp.received)


def test_permanent_dsn_for_a_reply_tells_staff_and_marks_the_buyer(flow: Flow) -> None:  # noqa: F811
    flow.reply("Hi Jane, the footprint is included.")
    flow.run()
    (sent,) = to_buyers(flow.smtp)
    ours = str(parsed(sent.data)["Message-ID"]).strip("<>")
    dsn = (DATA / "postfix_user_unknown_relay.eml").read_bytes()
    dsn = dsn.replace(b"mb.out.0001.k7m2@acme.example", ours.encode())
    dsn = dsn.replace(b"k7m2x9q4t1v8w3z5+case-77889@marketplace.amazon.com", BUYER.encode())
    flow.dovecot.append(flow.seller.user, "INBOX", dsn)
    flow.run()
    told = [r for r in to_staff(flow.smtp, flow.staff)
            if "did not reach the buyer" in str(parsed(r.data)["Subject"])]
    assert len(told) == 1 and "5.1.1" in text_of(told[0].data)
    (buyer,) = rows(flow.daemon.engine, store.BUYER, alias=BUYER)
    assert buyer.bounced_at is not None and "5.1.1" in buyer.bounce_reason
    (reply_row,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"]
    assert reply_row.last_error.startswith("bounced")


def test_restriction_notice_pauses_proactive_mail_and_alerts(flow: Flow) -> None:  # noqa: F811
    flow.dovecot.append(flow.seller.user, "INBOX", notice("amazon_restricted_en.eml"))
    flow.run()
    with flow.daemon.engine.begin() as conn:
        until = store.restricted_until(conn, "acme")
    assert until is not None and until - flow.clock() == timedelta(hours=120)
    assert any("restricted proactive messages" in str(parsed(r.data)["Subject"]) for r in flow.smtp.received)
    assert [a["decision"] for a in audit(flow) if a["event"] == "restriction"] == ["paused"]
    flow.reply("Hi Jane, the footprint is included.")       # replies still go out while restricted
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1


def test_a_report_about_mail_we_did_not_send_is_shown_to_staff(flow: Flow) -> None:  # noqa: F811
    flow.dovecot.append(flow.seller.user, "INBOX", (DATA / "postfix_user_unknown_relay.eml").read_bytes())
    report = flow.run()
    assert report.ingest["acme"].kinds == {"bounce": 1}
    assert any(str(parsed(r.data)["Subject"]).startswith("[mailbridge] Delivery report for mail mailbridge did not")
               for r in flow.smtp.received)
    (msg,) = [r for r in rows(flow.daemon.engine, store.MESSAGE) if r.kind == "bounce"]
    assert msg.disposition == "unmatched"


def test_lookalikes_never_opt_anyone_out(flow: Flow) -> None:  # noqa: F811
    """Every look-alike of the corpus, re-addressed to a buyer and order this account knows."""
    lookalikes = sorted(DATA.glob("lookalike_*.eml"))
    assert len(lookalikes) >= 9
    for path in lookalikes:
        flow.dovecot.append(flow.seller.user, "INBOX", notice(path.name))
    flow.run()
    assert all(b.opted_out_at is None for b in rows(flow.daemon.engine, store.BUYER))
    dispositions = [r.disposition for r in rows(flow.daemon.engine, store.MESSAGE)]
    assert "opted_out" not in dispositions
    assert [a for a in audit(flow) if a["event"] == "optout"] == []


def test_unsolicited_mail_is_rechecked_at_send_time(flow: Flow) -> None:  # noqa: F811
    """A review request queued (and allowed) before the buyer opted out never leaves."""
    with flow.daemon.engine.begin() as conn:
        mid = new_message_id(flow.seller.user)
        store.enqueue(conn, account="acme", message_id=mid, purpose="feedback_request", audience="buyer",
                      envelope_from=flow.seller.user, recipients=(BUYER,), subject="How was your order?",
                      raw=b"Subject: How was your order?\r\n\r\nx", now=flow.clock(), category="unsolicited")
        guard.record(conn, account="acme", now=flow.clock(), decision="allowed", category="unsolicited",
                     buyer=BUYER, message_id=mid, actor="test")
        # The opt-out lands in the same moment, by another path than the notice (an operator).
        store.set_opt_out(conn, "acme", BUYER, opted_out=True, source="operator test", now=flow.clock())
    flow.run()
    assert not any(BUYER in r.rcpt_tos for r in flow.smtp.received)
    (row,) = rows(flow.daemon.engine, store.OUTBOX, message_id=mid)
    assert row.state == "cancelled" and "opted out" in row.last_error
    assert audit(flow)[-1]["decision"] == "cancelled"


def test_proactive_mail_waits_out_a_restriction(flow: Flow) -> None:  # noqa: F811
    flow.dovecot.append(flow.seller.user, "INBOX", notice("amazon_restricted_en.eml"))
    flow.run()
    with flow.daemon.engine.begin() as conn:
        mid = new_message_id(flow.seller.user)
        store.enqueue(conn, account="acme", message_id=mid, purpose="delivery_scheduling", audience="buyer",
                      envelope_from=flow.seller.user, recipients=(BUYER,), subject="Delivery appointment",
                      raw=b"Subject: Delivery appointment\r\n\r\nx", now=flow.clock(), category="critical")
        guard.record(conn, account="acme", now=flow.clock(), decision="allowed", category="critical",
                     buyer=BUYER, message_id=mid, actor="test")
    flow.run()
    (row,) = rows(flow.daemon.engine, store.OUTBOX, message_id=mid)
    assert row.state == "queued" and "paused" in row.last_error and row.attempts == 0
    assert not any(BUYER in r.rcpt_tos for r in flow.smtp.received)
    flow.clock.advance(121 * 3600)                  # the restriction is over
    flow.run()
    assert sum(BUYER in r.rcpt_tos for r in flow.smtp.received) == 1
