"""``mailbridge audit [--json] [--since WHEN]``: every outbound decision and opt-out change, oldest first."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta

from bridge import store
from bridge.cli.settings import load, open_store
from bridge.services import guard


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    accounts = [a.name for a in settings.accounts if not args.account or a.name == args.account]
    since = None
    if args.since:
        since = parse_since(args.since, args.clock())
        if since is None:
            print(f"mailbridge: --since {args.since!r}: expected a date/time such as 2026-11-01 or "
                  "2026-11-01T08:00, or an age such as 24h or 7d", file=sys.stderr)
            return 2
    engine = open_store(settings)
    with engine.begin() as conn:
        listed = guard.audit_rows(conn, accounts, since, args.limit)
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    for r in listed:
        rules = ", ".join(f"{f['rule']} ({f['severity']})" for f in r["findings"]) or "no findings"
        print(f"{r['at']}  {r['account']:<12} {r['event']:<8} {r['decision']:<9} {r['category'] or '-':<11} "
              f"buyer {r['buyer'] or '-'}  by {r['actor'] or '-'}: {rules}")
    if not listed:
        print("no audit entries" + (f" since {since.isoformat(timespec='seconds')}" if since else ""))
    return 0


def parse_since(text: str, now: datetime) -> datetime | None:
    """``--since``: an age before ``now`` (``24h``, ``7d``) or a date/time (UTC unless it says); None if neither."""
    try:
        if text[-1:] in ("h", "d") and text[:-1].isdecimal():
            amount = int(text[:-1])
            return now - (timedelta(hours=amount) if text[-1] == "h" else timedelta(days=amount))
        return store.utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):   # not a date; an age beyond the calendar
        return None
