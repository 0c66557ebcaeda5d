"""``mailbridge optout list|add|remove [--dns [--until DATE]]``: opt-outs and Do-Not-Solicit entries."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime, timezone

from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.cli.settings import load, one_account, open_store, selected_accounts
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
from bridge.domain.threads import split_relay_address
from bridge.services import feedback, guard

#: A Do-Not-Solicit entry added without ``--until`` never expires.
FOREVER = datetime(9999, 12, 31, tzinfo=timezone.utc)


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    accounts = selected_accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_store(settings)
    if args.action == "list":
        _list(engine, accounts, args.json)
        return 0
    account = one_account(accounts)
    if account is None:
        return 2
    split = split_relay_address(args.address, ALL_RELAY_DOMAINS)
    if split is None:
        print(f"mailbridge: {args.address!r} is not a marketplace relay address (for example "
              "abc123def456@marketplace.amazon.com)", file=sys.stderr)
        return 2
    alias = split[0]
    until_text = getattr(args, "until", None)   # only "add" has --until
    with engine.begin() as conn:
        if args.dns or until_text:
            return _do_not_solicit(conn, account, alias, args.action == "add", until_text, args.clock())
        return _opt_out(conn, account, alias, args.action == "add", args.clock())


def _list(engine: Engine, accounts: list[str], as_json: bool) -> None:
    with engine.begin() as conn:
        listed = store.list_optouts(conn, accounts)
    if as_json:
        print(json.dumps(listed, indent=2))
        return
    if not listed:
        print("no opted-out or Do-Not-Solicit buyers")
    for r in listed:
        dns = f", do-not-solicit until {r['do_not_solicit_until']}" if r["do_not_solicit_until"] else ""
        out = f"opted out {r['opted_out_at']} ({r['source']})" if r["opted_out_at"] else "not opted out"
        print(f"{r['account']:<12} {r['buyer']:<48} {out}{dns}")


def _do_not_solicit(conn: Connection, account: str, alias: str, add: bool, until_text: str | None,
                    now: datetime) -> int:
    until = None
    if add:
        try:
            until = store.utc(datetime.fromisoformat(until_text)) if until_text else FOREVER
        except ValueError:
            print(f"mailbridge: --until {until_text!r}: expected a date such as 2027-11-23", file=sys.stderr)
            return 2
    who = f"operator {getpass.getuser()}"
    store.set_do_not_solicit(conn, account, alias, until, now)
    guard.record(conn, account=account, now=now, event="optout",
                 decision="do_not_solicit" if until else "do_not_solicit_removed", category=None,
                 buyer=alias, actor=who, detail=f"until {until.isoformat()}" if until else None)
    print(f"{alias}: Do-Not-Solicit {'until ' + until.date().isoformat() if until else 'removed'}")
    return 0


def _opt_out(conn: Connection, account: str, alias: str, add: bool, now: datetime) -> int:
    who = f"operator {getpass.getuser()}"
    changed = store.set_opt_out(conn, account, alias, opted_out=add, source=who, now=now)
    if changed:
        guard.record(conn, account=account, now=now, event="optout",
                     decision="opted_out" if add else "opted_in", category=None, buyer=alias, actor=who)
        if add:
            guard.cancel_unsolicited(conn, account=account, buyer=alias, source=who, actor=who, now=now)
            feedback.buyer_opted_out(conn, account, alias, who, now)
    print(f"{alias}: {'opted out' if add else 'not opted out'}" + ("" if changed else " (unchanged)"))
    return 0
