"""``mailbridge outbox list|retry|cancel``: outgoing mail, and a person's decision on held, failed or unknown rows."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime

from sqlalchemy.engine import Engine

from bridge import store
from bridge.cli.settings import load, open_store, selected_accounts
from bridge.domain.threads import base_alias
from bridge.services import guard

#: What ``outbox list`` shows without ``--state``: rows waiting, and rows that need a person.
DEFAULT_STATES = ["queued", "sending", "held", "failed", "unknown"]


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    accounts = selected_accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_store(settings)
    if args.action == "list":
        return _list(engine, accounts, args)
    who = f"{getpass.getuser()} (mailbridge outbox {args.action})"
    now = args.clock()
    failures = sum(not _decide(engine, accounts, outbox_id, args.action == "retry", now, who) for outbox_id in args.ids)
    return 1 if failures else 0


def _list(engine: Engine, accounts: list[str], args: argparse.Namespace) -> int:
    states = args.state or DEFAULT_STATES
    with engine.begin() as conn:
        listed = store.list_outbox(conn, accounts, states, args.limit)
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    if not listed:
        print(f"no outbox rows in state {', '.join(states)}")
    for r in listed:
        print(f"{r['id']:>6}  {r['state']:<9} {r['account']:<12} {r['purpose']:<18} to {', '.join(r['recipients'])}")
        print(f"        {r['subject']}")
        if r["last_error"]:
            print(f"        last: {r['last_error']}")
    return 0


def _decide(engine: Engine, accounts: list[str], outbox_id: int, retry: bool, now: datetime, who: str) -> bool:
    """Retry or cancel one row; False, said on stderr, when it is not there or not in a state for it."""
    action = "retry" if retry else "cancel"
    with engine.begin() as conn:
        act = store.operator_retry if retry else store.operator_cancel
        row = act(conn, outbox_id, accounts, now, who)
        if row is not None and row.audience == "buyer":
            # A person decides about a buyer message: on the record either way.
            guard.record(conn, account=row.account, now=now, event="override",
                         decision="released" if retry else "cancelled",
                         category=row.category, buyer=base_alias(json.loads(row.recipients)[0]),
                         message_id=row.message_id, conversation_id=row.conversation_id, actor=who,
                         detail=f"outbox {outbox_id} was {row.state}")
    if row is None:
        allowed = store.RETRYABLE if retry else store.CANCELLABLE
        print(f"outbox {outbox_id}: not found, or not in a state that allows {action} "
              f"({', '.join(allowed)}); see `mailbridge outbox list`", file=sys.stderr)
        return False
    if retry:
        print(f"outbox {outbox_id}: {row.state} -> queued again; the running daemon sends it within 15 seconds")
    else:
        print(f"outbox {outbox_id}: {row.state} -> cancelled")
    return True
