"""``mailbridge quarantine list|ack``: mail that could not be processed, and an operator's acknowledgement.

Quarantined mail is kept (row, bytes, the reason) and staff were told when it
came in. ``ack`` records that a person has looked at it, so that ``mailbridge
health`` stops warning about it; the mail stays in quarantine.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from bridge import store
from bridge.cli.settings import load, open_store, selected_accounts


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    accounts = selected_accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_store(settings)
    if args.action == "list":
        with engine.begin() as conn:
            listed = store.list_quarantine(conn, accounts, args.all, args.limit)
        if args.json:
            print(json.dumps(listed, indent=2))
            return 0
        for r in listed:
            acked = f"  acknowledged {r['acknowledged_at']} by {r['acknowledged_by']}" if r["acknowledged_at"] else ""
            print(f"{r['id']:>6}  {r['created_at']}  {r['account']:<12} {r['folder']} UID {r['uid']}  "
                  f"{r['message_id'] or '(no Message-ID)'}{acked}")
            print(f"        {r['reason']}")
        if not listed:
            print("no quarantined mail" + ("" if args.all else " waiting for acknowledgement"))
        return 0
    if not args.ids and not args.all:
        print("mailbridge: quarantine ack: name the ids to acknowledge (see `mailbridge quarantine list`), "
              "or --all", file=sys.stderr)
        return 2
    who = f"{getpass.getuser()} (mailbridge quarantine ack)"
    with engine.begin() as conn:
        done = store.acknowledge_quarantine(conn, accounts, None if args.all else args.ids, who, args.clock())
    print(f"acknowledged {len(done)} quarantined message(s)" + (f": {', '.join(map(str, done))}" if done else ""))
    missing = sorted(set(args.ids) - set(done)) if not args.all else []
    if missing:
        print(f"mailbridge: not acknowledged (no such quarantined mail of {', '.join(accounts)}, "
              f"or acknowledged before): {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    return 0
