"""``mailbridge status [--json]``: per account, the last fetch, messages, conversations, outbox, quarantine,
feedback requests, response-time reminders and the buyers waiting for an answer."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

from bridge import store
from bridge.cli.settings import load
from bridge.domain.clock import utcnow
from bridge.domain.reminders import RESPONSE_WINDOW, describe_left
from bridge.store.engine import open_database


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    engine = open_database(settings.database.url, config=settings.path)
    now = utcnow()
    try:
        with engine.begin() as conn:
            # Buyers whose 24 hours ran out within the last day are still shown, as overdue.
            report = [store.account_status(conn, a.name, now, now - RESPONSE_WINDOW) for a in settings.accounts]
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

