"""``mailbridge orders import FILE --account NAME`` and ``mailbridge orders list [--account NAME] [--json]``.

Import exit status: 0 when every row was read, 1 when some rows were bad (the good
ones are imported all the same), 2 when the file cannot be read or its layout is
unknown (nothing imported).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bridge import store
from bridge.cli.settings import load, open_store, selected_accounts
from bridge.services.orders import ImportSummary, UnreadableReport, import_report


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    accounts = selected_accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_store(settings)
    try:
        if args.action == "import":
            return _import(engine, accounts[0], args)
        with engine.begin() as conn:
            listed = store.orders_for_account(conn, accounts, args.limit)
        _print_list(listed, args.json)
        return 0
    finally:
        engine.dispose()


def _import(engine: Any, account: str, args: argparse.Namespace) -> int:
    bar = _ProgressBar() if sys.stderr.isatty() else None
    try:
        summary = import_report(engine, account, args.file, bar, encoding=args.encoding, clock=args.clock)
    except UnreadableReport as exc:
        if bar is not None:
            bar.done()
        print(f"mailbridge: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:   # an unknown --encoding
        print(f"mailbridge: --encoding {args.encoding!r}: {exc}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.done()
    for bad in summary.bad_rows:
        print(f"{args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    if summary.bad > len(summary.bad_rows):
        print(f"{args.file}: ... and {summary.bad - len(summary.bad_rows)} more bad rows", file=sys.stderr)
    print(_summary_line(summary, account))
    return 1 if summary.bad else 0


def _summary_line(s: ImportSummary, account: str) -> str:
    return (f"{s.path}: {s.layout} report for account {account}: {s.rows_read} rows read, "
            f"{s.orders_created} orders created, {s.orders_updated} updated, "
            f"{s.items_created} items created, {s.items_updated} updated, {s.bad} bad rows")


class _ProgressBar:
    """A one-line bar on stderr (only ever made for a terminal)."""

    WIDTH = 30

    def __call__(self, rows: int, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%}  {rows} rows")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _print_list(listed: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"orders": listed}, indent=2))
        return
    if not listed:
        print("no orders")
    for o in listed:
        claim = ", open claim" if o["open_claim"] else ""
        when = (o["purchased_at"] or "date unknown")[:10]
        buyer = o["buyer_alias"] or "buyer unknown"
        items = "; ".join(f"{i['quantity']} x {i['title'] or i['sku'] or i['item_key']}" for i in o["items"])
        print(f"{o['account']:<12} {o['order_id']}  {when}  {o['status']}{claim}  {buyer}  {items}")
