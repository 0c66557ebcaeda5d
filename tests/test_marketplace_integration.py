"""eBay and Walmart buyers through the real pipeline: a real Dovecot and a real SMTP server on 127.0.0.1.

An account's ``marketplace`` config key names its site; buyer mail from the
marketplace's relay is forwarded to staff and threaded per buyer and order, and
a staff reply goes back to the relay alias through the same guard, which judges
Walmart's reply window.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from bridgekit import Clock, make_settings, outbox_states, parsed, rows, text_of

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.services import guard
from bridge.workers.supervisor import Daemon

WALMART_ALIAS = "5a0c9e1b7d3f42a68e0b1c2d3e4f5a6b@relay.walmart.com"
EBAY_ALIAS = "trailrunner_88.q4z1@members.ebay.com"

# (config key, buyer alias, display name, first order, other order, how the order appears in the subject)
CASES = {
    "walmart": ("walmart.com", WALMART_ALIAS, "Walmart Customer", "4417288193021", "4417288193999",
                "Customer inquiry about PO# {order}"),
    "ebay": ("ebay.com", EBAY_ALIAS, "trailrunner_88", "26-11873-40215", "26-11873-40999",
             "Question about order {order} - Acme Trail Tent"),
}


def _buyer_mail(alias: str, name: str, subject: str, words: str, message_id: str, date: str) -> bytes:
    # Our own rendering of a relayed buyer message (the layouts are unverified: see the marketplace modules).
    return (f'From: "{name}" <{alias}>\r\nTo: {{seller}}\r\nSubject: {subject}\r\nDate: {date}\r\n'
            f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
            f"{words}\r\n").encode()


def _run(daemon: Daemon):  # type: ignore[no-untyped-def]
    return asyncio.run(daemon.run_once(send=True))


def _daemon(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP, site: str,
            clock: Clock) -> Daemon:
    settings = make_settings(tmp_path, seller, staff, smtp, account={"marketplace": site, "forward_existing": True})
    assert settings.accounts[0].marketplace == site
    return Daemon(settings, clock=clock)


@pytest.mark.parametrize("market", sorted(CASES))
def test_buyer_mail_is_forwarded_and_threaded_per_order(market: str, tmp_path: Path, dovecot: DovecotServer,
                                                        fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                        smtp_server: SandboxSMTP) -> None:
    site, alias, name, order, other, subject = CASES[market]
    clock = Clock()
    date = format_datetime(clock.now - timedelta(hours=2))
    mails = [
        _buyer_mail(alias, name, subject.format(order=order), "The tent poles arrived bent.", f"{market}.1@x", date),
        _buyer_mail(alias.upper(), name, "Re: " + subject.format(order=order),
                    "Photos of the bent poles are ready if you need them.", f"{market}.2@x", date),
        _buyer_mail(alias, name, subject.format(order=other), "Is the footprint sold separately?", f"{market}.3@x",
                    date),
    ]
    for raw in mails:
        dovecot.append(fresh_mailbox.user, "INBOX", raw.replace(b"{seller}", fresh_mailbox.user.encode()))
    daemon = _daemon(tmp_path, fresh_mailbox, staff, smtp_server, site, clock)
    report = _run(daemon)

    assert report.ingest["acme"].forwarded == 3
    first, followup, second_order = smtp_server.wait_for(3)
    assert {r.rcpt_tos for r in (first, followup, second_order)} == {(staff.user,)}
    assert {r.kind for r in rows(daemon.engine, store.MESSAGE)} == {"buyer"}
    # One buyer, two orders: two conversations, keyed by the alias (lowercased) and the order.
    conversations = rows(daemon.engine, store.CONV)
    assert sorted(c.key for c in conversations) == sorted([f"{alias}#{order}", f"{alias}#{other}"])
    assert len(rows(daemon.engine, store.BUYER)) == 1
    # The follow-up joins the first notification's thread in the staff client; the other order does not.
    a, b, c = (parsed(r.data) for r in (first, followup, second_order))
    assert str(b["Reply-To"]) == str(a["Reply-To"]) != str(c["Reply-To"])
    assert str(b["In-Reply-To"]) == str(a["Message-ID"])
    assert c["In-Reply-To"] is None
    # Staff read the buyer's whole words.
    assert "The tent poles arrived bent." in text_of(first.data)
    assert "Photos of the bent poles" in text_of(followup.data)
    assert outbox_states(daemon.engine) == {"sent": 3}


def test_a_late_reply_to_a_walmart_buyer_goes_out_and_the_window_is_on_record(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    site, alias, name, order, _, subject = CASES["walmart"]
    clock = Clock()
    wrote = clock.now - timedelta(hours=60)      # docs/marketplaces.md: Walmart expects replies within 48 hours
    raw = _buyer_mail(alias, name, subject.format(order=order), "Where is the second box?", "wm.late@x",
                      format_datetime(wrote))
    dovecot.append(fresh_mailbox.user, "INBOX", raw.replace(b"{seller}", fresh_mailbox.user.encode()))
    daemon = _daemon(tmp_path, fresh_mailbox, staff, smtp_server, site, clock)
    _run(daemon)
    (notification,) = smtp_server.wait_for(1)

    dovecot.append(fresh_mailbox.user, "INBOX", samples.staff_reply(
        notification.data, staff=staff.user, text="Hello,\nthe second box left our warehouse today.\nRegards",
        message_id=f"staff.1@{staff.user.rpartition('@')[2]}"))
    clock.advance(60)
    report = _run(daemon)
    assert report.ingest["acme"].relayed == 1

    to_buyer = [r for r in smtp_server.received if r.rcpt_tos == (alias,)]
    assert len(to_buyer) == 1
    body = text_of(to_buyer[0].data)
    assert body.startswith("Hello,\nthe second box left our warehouse today.")
    assert "Where is the second box?" in body                       # the buyer's message, quoted
    with daemon.engine.begin() as conn:
        (decision,) = [r for r in guard.audit_rows(conn, ["acme"], None, 100) if r["category"] == "reply"]
    assert decision["decision"] == "warned"
    assert "reply_within_window" in decision["rules_evaluated"]
    assert [f["rule"] for f in decision["findings"]] == ["reply_within_window"]
    assert "Walmart expects replies within 48 hours" in decision["findings"][0]["reason"]
