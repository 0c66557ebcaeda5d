"""What a delivery report or marketplace notice changes (the I/O half of bridge.domain.bounces).

The buyer is marked opted out (with source and time) and pending unsolicited mail and scheduled feedback
requests to them are cancelled (a notice answering a sent feedback request is recorded on it); proactive
sending pauses while the account is restricted; staff are told when one of
their replies did not arrive; a report that matches nothing is shown to staff,
never dropped. Runs inside the ingest transaction of the message.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from bridge import store
from bridge.domain.bounces import BounceKind, BounceReport
from bridge.domain.parse import ParsedMail
from bridge.domain.threads import base_alias
from bridge.services import feedback, guard
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_alert

log = logging.getLogger(__name__)

RESTRICTION_HOURS = 120   # docs/marketplaces.md: a restriction lasts at least 120 hours


def apply(conn: Connection, acct: AccountContext, report: BounceReport | None, mail: ParsedMail,
          now: datetime) -> str:
    """Apply the report's effects; returns the message's disposition."""
    s = acct.settings
    source = f"notice <{mail.message_id or 'no Message-ID'}> from {mail.from_addr or 'unknown sender'}"
    if report is None:
        # Classified as a bounce, but nothing could be read from it: a person looks.
        queue_staff_alert(conn, acct, f"Unreadable delivery report: {mail.subject or '(no subject)'}"[:150],
                          _summary(mail, "mailbridge recognised a delivery report or marketplace notice but could "
                                         "not tell what it is about."), now, purpose="bounce_unmatched")
        return "unmatched"

    if report.kind == BounceKind.OPTOUT:
        # The expected answer to a feedback request: recorded on it, never forwarded to staff.
        answered = feedback.notice_answers_request(conn, s.name, report.original_message_id, report.order_id, now)
        buyer = report.buyer_alias or (answered.buyer_alias if answered else None) or (
            (store.buyer_by_order(conn, s.name, report.order_id) or feedback.order_buyer(conn, s.name, report.order_id))
            if report.order_id else None)
        if buyer is None:
            queue_staff_alert(conn, acct, "A buyer opted out, but mailbridge cannot tell which one",
                              _summary(mail, f"{report.reason} Neither a relay address nor a known order "
                                             "(order id: " + (report.order_id or "none") + ") identifies the buyer. "
                                             "Add them by hand: `mailbridge optout add ADDRESS`."), now,
                              purpose="bounce_unmatched")
            return "unmatched"
        if store.set_opt_out(conn, s.name, buyer, opted_out=True, source=source, now=now):
            guard.record(conn, account=s.name, now=now, event="optout", decision="opted_out", category=None,
                         buyer=buyer, actor=mail.from_addr, detail=f"{report.reason} ({source})")
        cancelled = guard.cancel_unsolicited(conn, account=s.name, buyer=buyer, source=source, actor="mailbridge",
                                             now=now)
        cancelled += feedback.buyer_opted_out(conn, s.name, buyer, source, now)
        log.info("account %s: buyer %s opted out; %d pending unsolicited message(s) and feedback request(s) "
                 "cancelled%s", s.name, buyer, cancelled,
                 f"; feedback request for {answered.order_id} not delivered" if answered else "")
        return "opted_out"

    if report.kind == BounceKind.RESTRICTED:
        until = now + timedelta(hours=RESTRICTION_HOURS)
        store.restrict_account(conn, s.name, until, f"{report.reason} ({source})")
        guard.record(conn, account=s.name, now=now, event="restriction", decision="paused", category=None,
                     actor=mail.from_addr, detail=f"proactive sending paused until {until.isoformat(timespec='minutes')}")
        queue_staff_alert(conn, acct, "The marketplace restricted proactive messages",
                          _summary(mail, f"{report.reason} mailbridge sends no proactive message from this account "
                                         f"until {until:%Y-%m-%d %H:%M} UTC. Replies to buyers' own messages still "
                                         "go out."), now, purpose="restriction_alert")
        return "restricted"

    if report.kind in (BounceKind.GUIDELINE_VIOLATION, BounceKind.NOT_DELIVERED):
        queue_staff_alert(conn, acct, "A message to a buyer was not delivered",
                          _summary(mail, report.reason + (f" Order {report.order_id}." if report.order_id else "")
                                   + " Check `mailbridge audit` for what was sent, and answer again if needed."),
                          now, purpose="bounce_alert")
        return "recorded"

    # An MTA delivery report: find our message through the returned Message-ID.
    row = store.outbox_by_message_id(conn, s.name, report.original_message_id) if report.original_message_id \
        else None
    failed = ", ".join(f"{r.address} ({r.status or '?'}: {r.diagnostic or r.action})" for r in report.recipients)
    if row is None:
        queue_staff_alert(conn, acct, f"Delivery report for mail mailbridge did not send: {mail.subject}"[:150],
                          _summary(mail, f"{report.reason} Failed: {failed or 'unknown recipients'}."), now,
                          purpose="bounce_unmatched")
        return "unmatched"
    note = f"{'bounced' if report.permanent else 'delayed'} {now:%Y-%m-%d %H:%M}: {failed or report.reason}"
    store.note_bounce(conn, row.id, note)
    if report.permanent and row.audience == "buyer":
        for rcpt in report.recipients or ():
            store.record_buyer_bounce(conn, s.name, base_alias(rcpt.address), note, now)
        queue_staff_alert(conn, acct, f"Your reply did not reach the buyer: {row.subject}"[:150],
                          _summary(mail, f"The buyer's mail server refused it for good: {failed}. The buyer can "
                                         "still write through the marketplace; check the order in Seller Central."),
                          now, purpose="bounce_alert")
    return "recorded"


def _summary(mail: ParsedMail, text: str) -> str:
    return (f"{text}\n\nFrom:       {mail.from_addr}\nSubject:    {mail.subject}\n"
            f"Message-ID: {mail.message_id or '(none)'}\nThe message is kept in the seller mailbox.")
