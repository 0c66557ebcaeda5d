"""``mailbridge demo``: the whole flow on a local sandbox, on 127.0.0.1 only.

A real Dovecot IMAP server holds the seller's and the support team's
mailboxes; a local SMTP server accepts mailbridge's mail and delivers it into
Dovecot. Buyer mail is appended to the seller's INBOX as if the marketplace had
relayed it; the daemon runs for real (IDLE, outbox), and the summary shows
what the support team received. Then feedback requests: a shipments report
imported, requests scheduled, one sent and the others held back, each saying
why (:mod:`bridge.cli.demo_feedback`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

from bridge import store
from bridge.cli.demo_feedback import show_feedback_requests
from bridge.cli.settings import setup_logging
from bridge.config import load_settings
from bridge.sandbox import (
    DovecotServer,
    SandboxSMTP,
    SandboxUnavailable,
    config_toml,
    samples,
)
from bridge.services import guard
from bridge.workers.supervisor import Daemon

SELLER = "seller@acme.example"
STAFF = "support@acme.example"
PASSWORDS = {SELLER: "seller-demo-pass", STAFF: "support-demo-pass"}



def _route(address: str) -> str | None:
    """Mail to the support team lands in its mailbox; mail to the seller (and its
    plus-addressed reply addresses) in the seller's INBOX; buyers are only recorded."""
    if address == STAFF:
        return STAFF
    local, _, domain = address.partition("@")
    if domain == SELLER.partition("@")[2] and local.split("+")[0] == SELLER.partition("@")[0]:
        return SELLER
    return None


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(keep: bool = False) -> int:
    root = Path(tempfile.mkdtemp(prefix="mailbridge-demo-"))
    root.chmod(0o755)
    try:
        with DovecotServer(dict(PASSWORDS), root=root / "dovecot") as dovecot, \
                SandboxSMTP(dovecot, route=_route, auth=dict(PASSWORDS), file_sent_copies=True) as smtp:
            return _demo(root, dovecot, smtp)
    except SandboxUnavailable as exc:
        print(f"mailbridge demo: {exc}")
        return 1
    finally:
        if keep:
            print(f"sandbox kept in {root}; the same audit log as JSON:\n"
                  f"  mailbridge -c {root}/mailbridge.toml audit --json")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _demo(root: Path, dovecot: DovecotServer, smtp: SandboxSMTP) -> int:
    (root / "imap-password").write_text(PASSWORDS[SELLER] + "\n")
    (root / "smtp-password").write_text(PASSWORDS[SELLER] + "\n")
    (root / "mailbridge.toml").write_text(config_toml(
        database=f"sqlite:///{root}/mailbridge.db", seller=SELLER, staff=STAFF, imap_port=dovecot.port,
        smtp_port=smtp.port, imap_password_file=f"{root}/imap-password", name="acme-us", smtp_login=True,
        sections={"daemon": {"log_level": "WARNING"}, "outbox": {"retry_base_seconds": 1},
                  "imap": {"processed_folder": "Processed", "poll_seconds": 30},
                  "smtp": {"password_file": f"{root}/smtp-password", "sent_copies": "server"},
                  "feedback": {"enabled": True, "send_window": "00:00-24:00"}}))
    settings = load_settings(root / "mailbridge.toml")
    _say(f"Sandbox: Dovecot IMAP on 127.0.0.1:{dovecot.port}, SMTP on 127.0.0.1:{smtp.port}, files in {root}")

    # Mail that was in the mailbox before mailbridge ever ran: recorded as history, not forwarded.
    old = samples.buyer_backlog(2, seller_address=SELLER, seed=7)
    for raw in old:
        dovecot.append(SELLER, "INBOX", raw)
    _say(f"The seller's INBOX already holds {len(old)} old buyer messages.")

    daemon = Daemon(settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run(stop),), daemon=True)
    thread.start()
    time.sleep(1.0)

    _say("mailbridge is running (IMAP IDLE). Buyers write now:")
    fresh = samples.buyer_backlog(6, seller_address=SELLER, seed=42, buyers=4)
    arrivals = []
    for raw in fresh:
        subject = message_from_bytes(raw, policy=policy.default)["Subject"]
        arrivals.append(time.time())
        dovecot.append(SELLER, "INBOX", raw)
        _say(f"  -> buyer message: {subject}")
        time.sleep(0.3)
    extras = [
        ("an out-of-office reply", samples.out_of_office(sender="jo@acme.example", to=SELLER, message_id="oof.1@acme.example")),
        ("a spoofed 'Amazon' buyer", samples.spoofed_buyer(to=SELLER, message_id="spoof.1@evil.example")),
        ("a supplier invoice", samples.unclassified(sender="billing@parcel.example", to=SELLER, message_id="inv.1@parcel.example")),
        ("a message with broken MIME (no boundary, bad base64, raw 8-bit header)", samples.broken_mime(to=SELLER)),
    ]
    for label, raw in extras:
        dovecot.append(SELLER, "INBOX", raw)
        _say(f"  -> {label}")

    # Buyer messages; the spoof, the invoice and the broken message go to staff as unclassified
    # (the broken one with its defects listed); the out-of-office is recorded only.
    expected = len(fresh) + 3
    try:
        received = smtp.wait_for(expected, timeout=30)
    except TimeoutError as exc:
        _say(f"Not everything arrived in time: {exc}")
        received = list(smtp.received)
    relayed = _staff_answers(smtp, received)
    blocked = _staff_breaks_a_rule(smtp, received)
    optout = _buyer_opts_out(dovecot, daemon, received)
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)

    _say()
    _say("What the support team received (support@acme.example):")
    latencies = []
    for item in received:
        msg = message_from_bytes(item.data, policy=policy.default)
        _say(f"  * {msg['Subject']}")
        if msg["Reply-To"]:
            _say(f"      Reply-To {msg['Reply-To']}   (signed token: replies go back to this conversation)")
        if msg["In-Reply-To"]:
            _say(f"      threads under <{str(msg['In-Reply-To']).strip('<>')[:40]}...>")
    for arrived, item in zip(arrivals, received):
        latencies.append(item.received_at - arrived)
    if received:
        first = message_from_bytes(received[0].data, policy=policy.default)
        _say()
        _say("The first notification, as staff see it:")
        for line in first.get_content().splitlines()[:24]:
            _say(f"  | {line}")

    if relayed is not None:
        buyer_mail, confirmation, latency = relayed
        msg = message_from_bytes(buyer_mail.data, policy=policy.default)
        _say()
        _say(f"Jo from support pressed Reply in her mail client; {latency:.2f} s later the buyer's relay "
             "address received (from the seller's registered address, her signature and the quoted "
             "notification cut away, the buyer's question quoted as Amazon requires):")
        for header in ("From", "To", "Subject", "In-Reply-To"):
            _say(f"  | {header}: {msg[header]}")
        _say("  |")
        for line in msg.get_body(preferencelist=("plain",)).get_content().splitlines():  # type: ignore[union-attr]
            _say(f"  | {line}")
        if confirmation is not None:
            _say(f"  ... and the support thread got: \"{message_from_bytes(confirmation.data, policy=policy.default)['Subject']}\"")

    if blocked is not None:
        _say()
        _say("Jo answered another buyer with her phone number in it. Nothing went to the buyer; Jo got:")
        for line in message_from_bytes(blocked.data, policy=policy.default).get_body(  # type: ignore[union-attr]
                preferencelist=("plain",)).get_content().splitlines()[:12]:
            _say(f"  | {line}")
    if optout:
        _say()
        _say(f"Amazon's opt-out notice for {optout} arrived: the buyer is now opted out (replies to their own "
             "messages still go out; nothing unsolicited does).")

    asked = show_feedback_requests(root, dovecot, smtp, daemon, SELLER, _say)

    with daemon.engine.begin() as conn:
        status = store.account_status(conn, "acme-us")
        decisions = guard.audit_rows(conn, ["acme-us"], None, 1000)
    _say()
    _say("Summary:")
    _say(f"  messages recorded:   {status['messages']} "
         f"({', '.join(f'{k} {n}' for k, n in sorted(status['messages_by_kind'].items()))})")
    _say(f"  conversations:       {status['conversations']} with {status['buyers']} buyers")
    _say(f"  forwarded to staff:  {len(received)} emails "
         f"(outbox: {', '.join(f'{k} {v}' for k, v in status['outbox'].items() if v)})")
    _say(f"  quarantined:         {status['quarantined']} (kept, staff told)")
    _say(f"  staff mailbox holds: {len(dovecot.fetch_all(STAFF, 'INBOX'))} messages")
    _say(f"  seller INBOX now:    {len(dovecot.uids(SELLER, 'INBOX'))} (recorded mail moved to 'Processed')")
    if len(received) >= len(fresh) and latencies:
        ordered = sorted(latencies)
        _say(f"  arrival -> staff:    median {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s (IMAP IDLE)")
    _say()
    _say(f"Audit log ({len(decisions)} entries; `mailbridge audit --json` exports it; run the demo with --keep "
         "to try it):")
    for entry in decisions:
        rules = ", ".join(f["rule"] for f in entry["findings"]) or "-"
        _say(f"  {entry['event']:<8} {entry['decision']:<9} {entry['category'] or '-':<8} buyer {entry['buyer']}  "
             f"rules: {rules}  by {entry['actor']}")
    return 0 if len(received) >= expected and relayed is not None and blocked is not None and optout and asked \
        else 1


def _wait_for_mail(smtp: SandboxSMTP, start: int, match, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in smtp.received[start:]:
            if match(item):
                return item
        time.sleep(0.1)
    return None


def _staff_breaks_a_rule(smtp: SandboxSMTP, received: list):  # type: ignore[no-untyped-def,type-arg]
    """Jo answers a second buyer with her phone number: the compliance guard stops it and tells her."""
    import smtplib

    notes = [r for r in received if message_from_bytes(r.data, policy=policy.default)["Reply-To"]]
    if len(notes) < 2:
        return None
    note = message_from_bytes(notes[1].data, policy=policy.default)
    reply = samples.staff_reply(notes[1].data, staff=STAFF, message_id="jo.2@acme.example",
                                text="Hi, easiest is to call me directly on +1 415 555 0100 and we sort it out.")
    before = len(smtp.received)
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        client.login(STAFF, PASSWORDS[STAFF])
        client.sendmail(STAFF, [str(note["Reply-To"])], reply)
    return _wait_for_mail(smtp, before, lambda item: item.rcpt_tos == (STAFF,) and str(
        message_from_bytes(item.data, policy=policy.default)["Subject"]).startswith("Blocked"))


def _buyer_opts_out(dovecot: DovecotServer, daemon: Daemon, received: list) -> str | None:  # type: ignore[type-arg]
    """Amazon tells the seller a buyer opted out (as a copy of the notice, Seller Central > Notifications)."""
    with daemon.engine.begin() as conn:
        conv = store.newest_conversation(conn, "acme-us")
    if conv is None or conv.order_id is None:
        return None
    dovecot.append(SELLER, "INBOX", samples.amazon_optout_notice(
        seller_address=SELLER, buyer_relay=conv.buyer_alias, order=conv.order_id, message_id="optout.1@amazonses.com"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with daemon.engine.begin() as conn:
            state = store.buyer_contact_state(conn, "acme-us", conv.buyer_alias)
        if state is not None and state.opted_out_at is not None:
            return conv.buyer_alias
        time.sleep(0.1)
    return None


STAFF_ANSWER = """Hi {name},

thanks for asking! Yes, it works with the standard EN 417 canisters sold across Europe.

Kind regards"""


def _staff_answers(smtp: SandboxSMTP, received: list) -> tuple | None:  # type: ignore[type-arg]
    """Support answers the first buyer from a mail client, as a person would: Reply, write on top, send."""
    import smtplib

    notes = [r for r in received if message_from_bytes(r.data, policy=policy.default)["Reply-To"]]
    if not notes:
        return None
    note = message_from_bytes(notes[0].data, policy=policy.default)
    name = str(note["From"]).split(" via ")[0].strip('"') or "there"
    reply = samples.staff_reply(notes[0].data, staff=STAFF, text=STAFF_ANSWER.format(name=name),
                                message_id="jo.1@acme.example", signature="Jo\r\nAcme Outdoor Support\r\n"
                                "Sent from my iPhone")
    before = len(smtp.received)
    sent_at = time.time()
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:   # Jo's mail client submits it
        client.login(STAFF, PASSWORDS[STAFF])
        client.sendmail(STAFF, [str(note["Reply-To"])], reply)
    deadline = time.monotonic() + 30
    buyer_mail = confirmation = None
    while time.monotonic() < deadline and (buyer_mail is None or confirmation is None):
        for item in smtp.received[before:]:
            if "@marketplace.amazon." in item.rcpt_tos[0]:
                buyer_mail = buyer_mail or item
            elif str(message_from_bytes(item.data, policy=policy.default)["Subject"]).startswith("Sent to the buyer"):
                confirmation = confirmation or item
        time.sleep(0.1)
    if buyer_mail is None:
        return None
    return buyer_mail, confirmation, buyer_mail.received_at - sent_at


def run(args: argparse.Namespace) -> int:
    """``mailbridge demo [--keep]``."""
    setup_logging(args.log_level or "WARNING")
    return run_demo(keep=args.keep)
