"""``mailbridge status [--json]``: per account, the daemon holding it and until when, the last fetch, messages, conversations, outbox, the sending
rate against its limits, quarantine, feedback requests, response-time reminders and the buyers waiting for an
answer."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

from bridge import store
from bridge.cli.settings import load, open_store
from bridge.domain.reminders import RESPONSE_WINDOW, describe_left
from bridge.services.pace import sending_status


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    engine = open_store(settings)
    now = args.clock()
    try:
        with engine.begin() as conn:
            # Buyers whose 24 hours ran out within the last day are still shown, as overdue.
            report = [{**store.account_status(conn, a.name, now, now - RESPONSE_WINDOW),
                       "sending": sending_status(conn, a.name, a.smtp, now)} for a in settings.accounts]
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"accounts": report}, indent=2))
    else:
        for account in report:
            _print_account(account)
    return 0


def _print_account(r: dict[str, Any]) -> None:
    print(f"account {r['account']}")
    print(f"  {_lease_line(r['lease'])}")
    for m in r["mailboxes"]:
        print(f"  mailbox {m['folder']}: last fetch {m['last_fetch_at'] or 'never'}, UID {m['last_uid']} "
              f"(UIDVALIDITY {m['uidvalidity']})")
        if m["last_error"]:
            print(f"    last error {m['last_error_at']}: {m['last_error']}")
    if not r["mailboxes"]:
        print("  mailbox: never fetched")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r["messages_by_kind"].items())) or "none"
    print(f"  messages: {r['messages']} ({kinds})")
    print(f"  conversations: {r['conversations']}, buyers: {r['buyers']}")
    print("  outbox: " + ", ".join(f"{s} {n}" for s, n in r["outbox"].items()))
    _print_sending(r["sending"])
    print(f"  quarantined: {r['quarantined']}")
    fb = r["feedback"]
    print("  feedback requests: " + ", ".join(f"{s} {n}" for s, n in fb.items() if s != "not_delivered_opted_out")
          + f" ({fb['not_delivered_opted_out']} not delivered: buyer opted out)")
    rem = r["reminders"]
    print("  response-time reminders: " + ", ".join(f"{s} {n}" for s, n in rem.items()))
    waiting = r["awaiting_answer"]
    print(f"  awaiting an answer: {len(waiting) or 'none'}")
    for w in waiting:
        print(f"    {w['conversation']} {w['buyer']}: {describe_left(timedelta(seconds=w['seconds_left']))} "
              f"(deadline {w['deadline']}, {w['reminders_sent']} reminder(s) sent) {w['subject']}")



def _lease_line(lease: dict[str, Any] | None) -> str:
    if lease is None:
        return "held by: no daemon yet"
    if lease["live"]:
        state = "" if lease["holder_live"] else " (its heartbeat has stopped: taken over when the lease ends)"
        return f"held by: {lease['holder']} until {lease['expires_at']}{state}"
    return f"held by: nobody (last {lease['holder']}, lease ended {lease['expires_at']}; the next daemon takes it)"


def _print_sending(s: dict[str, Any]) -> None:
    def limit(n: int | None) -> str:
        return "no limit" if n is None else f"limit {n:,}"

    print(f"  sending: {s['sent_last_minute']} in the last minute ({limit(s['limit_per_minute'])}), "
          f"{s['sent_last_day']:,} in the last 24 h ({limit(s['limit_per_day'])})")
    if s["paused_until"]:
        print(f"    paused until {s['paused_until']}: the server said to slow down ({s['pause_reason']})")
    elif s["limited_until"]:
        print(f"    at the limit: the next message may go at {s['limited_until']}")
    if s["queued"]:
        drain = s["drain_seconds"]
        when = ("as fast as the server takes it (no limit set)" if drain is None
                else f"in about {_duration(drain)} at the limits")
        print(f"    {s['queued']:,} queued: sent {when}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
