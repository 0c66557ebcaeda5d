"""The feedback part of ``mailbridge demo``: a shipments report in, one request per eligible order out.

After the support flow, the seller imports a small *Amazon Fulfilled
Shipments* report (four orders, dated around the real clock). mailbridge
schedules a request for each; before they are due to be sent, one buyer opts
out (Amazon's notice arrives in the watched mailbox) and an *All Orders* report
says one order was cancelled. One pass of the daemon (``run --once``) then checks
every request again: one is sent, rendered in the buyer's language from the
seller's registered address; the opted-out buyer's and the cancelled order's
are not; the order delivered two days ago waits for its due time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

from bridge import store
from bridge.sandbox import DovecotServer, SandboxSMTP, samples
from bridge.services import feedback
from bridge.services.orders import import_report
from bridge.workers.supervisor import Daemon

ASKED, OPTED_OUT, CANCELLED, NOT_DUE = "113-4455667-0000001", "113-4455667-0000002", "113-4455667-0000003", \
    "113-4455667-0000004"
BUYERS = {ASKED: ("fbjane7k2m9q4x1", "Jane Doe"), OPTED_OUT: ("fbmarco3n8p5w2", "Marco Rossi"),
          CANCELLED: ("fbaiko6r1t4y8z", "Aiko Sato"), NOT_DUE: ("fblukas2c5v7b9", "Lukas Berg")}
#: What each order shows at the end: (request state, what the demo says of it).
EXPECTED = {ASKED: "sent", OPTED_OUT: "cancelled", CANCELLED: "skipped", NOT_DUE: "scheduled"}


def _alias(order: str) -> str:
    return f"{BUYERS[order][0]}@marketplace.amazon.com"


def show_feedback_requests(root: Path, dovecot: DovecotServer, smtp: SandboxSMTP, daemon: Daemon, seller: str,
                           say: Callable[[str], None]) -> bool:
    """Run the feedback part on the demo's sandbox (the daemon stopped); True when it showed what it should."""
    acct = daemon.accounts[0]
    now = daemon.clock()
    arrived = {ASKED: 8, OPTED_OUT: 8, CANCELLED: 8, NOT_DUE: 2}       # days ago (estimated arrival)
    report = root / "shipments.txt"
    report.write_text(samples.order_report(samples.SHIPMENTS_COLUMNS, [
        samples.shipment_row(order, buyer=_alias(order), buyer_name=BUYERS[order][1],
                             arrived=now - timedelta(days=days)) for order, days in arrived.items()]))
    summary = import_report(daemon.engine, acct.name, report, clock=daemon.clock)
    say("")
    say(f"Feedback requests ([accounts.feedback] enabled). The seller imports a shipments report: "
        f"mailbridge orders import {report.name} -> {summary.orders_created} orders")
    with daemon.engine.begin() as conn:
        made = feedback.schedule(conn, acct, now)
    say(f"  {made} requests scheduled, each 7 days after delivery, inside Amazon's 5-30 day window:")
    for r in _requests(daemon):
        say(f"    {r['order_id']}  due {r['due_at'][:16]}  buyer {r['buyer']}")

    dovecot.append(seller, "INBOX", samples.amazon_optout_notice(
        seller_address=seller, buyer_relay=_alias(OPTED_OUT), order=OPTED_OUT,
        message_id="optout.2@amazonses.com"))
    say(f"  -> Amazon's opt-out notice for the buyer of {OPTED_OUT} arrives in the watched mailbox")
    cancelled = root / "all-orders.txt"
    cancelled.write_text(samples.order_report(samples.ALL_ORDERS_COLUMNS, [
        samples.all_orders_row(CANCELLED, "Cancelled", purchased=now - timedelta(days=12))]))
    import_report(daemon.engine, acct.name, cancelled, clock=daemon.clock)
    say(f"  -> an All Orders report says {CANCELLED} was cancelled")

    before = len(smtp.received)
    asyncio.run(daemon.run_once())                   # `mailbridge run --once`: every request checked again
    say("  One pass of the daemon (mailbridge run --once) checks every condition again at send time:")
    listed = {r["order_id"]: r for r in _requests(daemon)}
    for order, r in listed.items():
        why = f": {r['reason']}" if r["reason"] else ""
        when = f" (due {r['due_at'][:16]}, not yet due)" if r["state"] == "scheduled" else ""
        say(f"    {order}  {r['state']}{when}{why}")
    sent = [m for m in smtp.received[before:] if m.rcpt_tos == (_alias(ASKED),)]
    if sent:
        mail = message_from_bytes(sent[0].data, policy=policy.default)
        say(f"  The request Amazon relays to the buyer of {ASKED} (`mailbridge feedback list` shows them all):")
        for header in ("From", "To", "Subject"):
            say(f"  | {header}: {mail[header]}")
        say("  |")
        for line in mail.get_body(preferencelist=("plain",)).get_content().splitlines():  # type: ignore[union-attr]
            say(f"  | {line}")
    return {k: r["state"] for k, r in listed.items()} == EXPECTED and len(sent) == 1 and \
        len(smtp.received) - before == 1


def _requests(daemon: Daemon) -> list[dict[str, str]]:
    with daemon.engine.begin() as conn:
        return store.list_requests(conn, [a.name for a in daemon.accounts], 100)
