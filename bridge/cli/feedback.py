"""``mailbridge feedback list|preview|skip``: feedback requests per order, one previewed, one made elsewhere."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from sqlalchemy.engine import Engine

from bridge import store
from bridge.adapters.templates import Templates
from bridge.cli.settings import load, one_account, open_store, selected_accounts
from bridge.services import feedback
from bridge.services.account import AccountContext


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    accounts = selected_accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_store(settings)
    if args.action == "list":
        return _list(engine, accounts, args)
    account = one_account(accounts)
    if account is None:
        return 2
    acct = AccountContext.build(settings.account(account), b"", Templates(settings.templates_dir),
                                settings.relay, settings.policy)
    if args.action == "preview":
        return _preview(engine, acct, args)
    return _skip(engine, acct, args)


def _list(engine: Engine, accounts: list[str], args: argparse.Namespace) -> int:
    with engine.begin() as conn:
        listed = store.list_requests(conn, accounts, args.limit)
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    if not listed:
        print("no feedback requests")
    for r in listed:
        when = f"sent {r['sent_at']}" if r["sent_at"] else f"due {r['due_at']}"
        print(f"{r['account']:<12} {r['order_id']:<20} {r['state']:<10} {when}")
        if r["reason"]:
            print(f"{'':<12} {r['reason']}")
    return 0


def _preview(engine: Engine, acct: AccountContext, args: argparse.Namespace) -> int:
    now = args.clock()
    with engine.begin() as conn:
        shown = feedback.preview(conn, acct, args.order, now)
    if shown is None:
        print(f"mailbridge: no order {args.order} in account {acct.name}; import the order report first",
              file=sys.stderr)
        return 2
    if shown.request is not None:
        r = shown.request
        print(f"Request: {r.state}, due {r.due_at.isoformat(timespec='minutes')}" + (f" ({r.reason})" if r.reason
                                                                                    else ""))
    if shown.rendered is not None:
        print(f"Template: {shown.template}")
        print(f"From: {acct.settings.seller_name} <{acct.settings.seller_address}>")
        print(f"To: {_buyer(engine, acct, args.order) or '(no buyer address known)'}")
        print(f"Subject: {shown.rendered.subject}\n")
        print(shown.rendered.text)
    if shown.may_send:
        print("May be sent now: yes")
        return 0
    print("May be sent now: no")
    for reason in shown.reasons:
        print(f"  - {reason}")
    if shown.due is not None:
        print(f"Next possible send time: {shown.due.isoformat(timespec='minutes')}")
    return 1


def _buyer(engine: Engine, acct: AccountContext, order_id: str) -> str | None:
    with engine.begin() as conn:
        return feedback.order_buyer(conn, acct.name, order_id)


def _skip(engine: Engine, acct: AccountContext, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        print("mailbridge: --reason is empty; say how the order was asked, e.g. \"Request a Review\"", file=sys.stderr)
        return 2
    who = f"operator {getpass.getuser()}"
    with engine.begin() as conn:
        changed, request = feedback.record_external(conn, acct, args.order, args.reason.strip(), who, args.clock())
    if changed:
        print(f"{args.order}: recorded as asked elsewhere ({args.reason.strip()}); mailbridge will not ask it")
    else:
        print(f"{args.order}: unchanged, its request is already {request.state}"
              + (f" ({request.reason})" if request.reason else ""))
    return 0
