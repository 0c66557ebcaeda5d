"""The ``mailbridge`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from bridge import __version__

log = logging.getLogger("bridge")


def _setup_logging(level: str) -> None:
    # Under systemd the journal adds timestamps; elsewhere they help.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") \
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Any:
    from bridge.config import find_config_path, load_settings

    return load_settings(find_config_path(args.config, os.environ))


def _accounts(settings: Any, name: str | None) -> list[str] | None:
    """The account names a command acts on (``--account`` or all); None, said on stderr, for an unknown name."""
    names = [a.name for a in settings.accounts]
    if name and name not in names:
        print(f"mailbridge: no account {name!r} in {settings.path} (known: {', '.join(names)})", file=sys.stderr)
        return None
    return [name] if name else names


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args)
    _setup_logging(args.log_level or settings.log_level)
    from bridge.workers.supervisor import Daemon

    daemon = Daemon(settings)
    if args.once:
        report = asyncio.run(daemon.run_once(send=not args.no_send))
        for name, stats in report.ingest.items():
            log.info("account %s: %d recorded (%d forwarded, %d history, %d duplicates, %d quarantined); %d sent, "
                     "%d failed", name, stats.recorded, stats.forwarded, stats.history, stats.duplicates,
                     stats.quarantined, report.sent.get(name, 0), report.failed.get(name, 0))
        for name, err in report.errors.items():
            print(f"mailbridge: account {name}: {err}", file=sys.stderr)
        return 1 if report.errors else 0
    asyncio.run(daemon.run())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    print(f"{settings.path}: OK, {len(settings.accounts)} account(s)")
    for a in settings.accounts:
        print(f"  {a.name}: {a.marketplace}, seller {a.seller_address}, staff {a.staff_address}, "
              f"IMAP {a.imap.host}:{a.imap.port} ({a.imap.security}), SMTP {a.smtp.host}:{a.smtp.port} "
              f"({a.smtp.security})")
    if not args.connect:
        return 0
    from bridge.adapters.imap import ImapError, MailboxSession
    from bridge.adapters.smtp import SendError, SmtpConnection

    failures = 0
    for a in settings.accounts:
        try:
            with MailboxSession(a.imap) as session:
                info = session.select(a.imap.folder)
            print(f"  {a.name}: IMAP login OK, {a.imap.folder} holds {info.exists} message(s)")
        except ImapError as exc:
            failures += 1
            print(f"  {a.name}: IMAP FAILED: {exc}")

        try:
            asyncio.run(SmtpConnection(a.smtp).check_login())
            print(f"  {a.name}: SMTP login OK")
        except SendError as exc:
            failures += 1
            print(f"  {a.name}: SMTP FAILED: {exc}")
    return 1 if failures else 0


def cmd_status(args: argparse.Namespace) -> int:
    from bridge import store
    from bridge.store.engine import open_database

    settings = _load(args)
    engine = open_database(settings.database.url)
    with engine.begin() as conn:
        report = [store.account_status(conn, a.name) for a in settings.accounts]
    if args.json:
        print(json.dumps({"accounts": report}, indent=2))
        return 0
    for r in report:
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
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    import getpass

    from bridge import store
    from bridge.store.engine import open_database

    settings = _load(args)
    accounts = _accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_database(settings.database.url)
    if args.action == "list":
        states = args.state or ["queued", "sending", "held", "failed", "unknown"]
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
    who = f"{getpass.getuser()} (mailbridge outbox {args.action})"
    now = args.clock()
    failures = 0
    from bridge.services import guard

    for outbox_id in args.ids:
        with engine.begin() as conn:
            act = store.operator_retry if args.action == "retry" else store.operator_cancel
            row = act(conn, outbox_id, accounts, now, who)
            previous = row.state if row is not None else None
            if row is not None and row.audience == "buyer":
                # A person decides about a buyer message: on the record either way.
                guard.record(conn, account=row.account, now=now, event="override",
                             decision="released" if args.action == "retry" else "cancelled",
                             category=row.category, buyer=guard.base_alias(json.loads(row.recipients)[0]),
                             message_id=row.message_id, conversation_id=row.conversation_id, actor=who,
                             detail=f"outbox {outbox_id} was {row.state}")
        if previous is None:
            allowed = store.RETRYABLE if args.action == "retry" else store.CANCELLABLE
            print(f"outbox {outbox_id}: not found, or not in a state that allows {args.action} "
                  f"({', '.join(allowed)}); see `mailbridge outbox list`", file=sys.stderr)
            failures += 1
        else:
            verb = "queued again" if args.action == "retry" else "cancelled"
            print(f"outbox {outbox_id}: {previous} -> {verb}"
                  + ("; the running daemon sends it within 15 seconds" if args.action == "retry" else ""))
    return 1 if failures else 0


def cmd_audit(args: argparse.Namespace) -> int:
    from datetime import datetime, timedelta

    from bridge import store
    from bridge.services import guard
    from bridge.store.engine import open_database

    settings = _load(args)
    accounts = [a.name for a in settings.accounts if not args.account or a.name == args.account]
    since = None
    if args.since:
        try:
            if args.since[-1] in "hd" and args.since[:-1].isdigit():
                amount = int(args.since[:-1])
                since = args.clock() - (timedelta(hours=amount) if args.since[-1] == "h"
                                                      else timedelta(days=amount))
            else:
                since = store.utc(datetime.fromisoformat(args.since))
        except ValueError:
            print(f"mailbridge: --since {args.since!r}: expected a date/time such as 2026-11-01 or "
                  "2026-11-01T08:00, or an age such as 24h or 7d", file=sys.stderr)
            return 2
    engine = open_database(settings.database.url)
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


def cmd_policy(args: argparse.Namespace) -> int:

    from bridge.config import PolicySettings, RelaySettings
    from bridge.domain import policy
    from bridge.services import guard

    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except OSError as exc:
        print(f"mailbridge: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        settings = _load(args)
        config = guard.policy_config(settings.policy, settings.relay)
        seller = settings.accounts[0].seller_address
    except Exception:  # noqa: BLE001 - no configuration: check against the defaults
        config, seller = guard.policy_config(PolicySettings(), RelaySettings()), "seller@example.com"
    buyer = "buyeralias123@marketplace.amazon.com"
    category = policy.Category(args.category)
    draft = policy.Draft(from_addr=seller, to_addr=buyer, subject=args.subject, text=text, category=category,
                         quoted_original=args.quoted if category == policy.Category.REPLY else None)
    ctx = policy.PolicyContext(seller_address=seller, buyer_alias=buyer, now=args.clock(),
                               buyer_original_text=args.quoted if category == policy.Category.REPLY else None,
                               order_completed_at=args.clock())
    decision = policy.check(draft, ctx, config)
    print(policy.explain(decision, text))
    return 0 if decision.allowed else 1


def cmd_optout(args: argparse.Namespace) -> int:
    import getpass
    from datetime import datetime, timezone

    from bridge import store
    from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
    from bridge.domain.threads import split_relay_address
    from bridge.services import guard
    from bridge.store.engine import open_database

    settings = _load(args)
    accounts = _accounts(settings, args.account)
    if accounts is None:
        return 2
    engine = open_database(settings.database.url)
    if args.action == "list":
        with engine.begin() as conn:
            listed = store.list_optouts(conn, accounts)
        if args.json:
            print(json.dumps(listed, indent=2))
        elif not listed:
            print("no opted-out or Do-Not-Solicit buyers")
        else:
            for r in listed:
                dns = f", do-not-solicit until {r['do_not_solicit_until']}" if r["do_not_solicit_until"] else ""
                out = f"opted out {r['opted_out_at']} ({r['source']})" if r["opted_out_at"] else "not opted out"
                print(f"{r['account']:<12} {r['buyer']:<48} {out}{dns}")
        return 0
    if len(accounts) != 1:
        print(f"mailbridge: several accounts ({', '.join(accounts)}); say which with --account", file=sys.stderr)
        return 2
    split = split_relay_address(args.address, ALL_RELAY_DOMAINS)
    if split is None:
        print(f"mailbridge: {args.address!r} is not a marketplace relay address (for example "
              "abc123def456@marketplace.amazon.com)", file=sys.stderr)
        return 2
    alias, account = split[0], accounts[0]
    now = args.clock()
    who = f"operator {getpass.getuser()}"
    with engine.begin() as conn:
        until_text = getattr(args, "until", None)   # only "add" has --until
        if args.dns or until_text:
            until = None
            if args.action == "add":
                try:
                    until = datetime.fromisoformat(until_text) if until_text else \
                        datetime(9999, 12, 31, tzinfo=timezone.utc)
                except ValueError:
                    print(f"mailbridge: --until {until_text!r}: expected a date such as 2027-11-23", file=sys.stderr)
                    return 2
                until = store.utc(until)
            store.set_do_not_solicit(conn, account, alias, until, now)
            guard.record(conn, account=account, now=now, event="optout",
                         decision="do_not_solicit" if until else "do_not_solicit_removed", category=None,
                         buyer=alias, actor=who, detail=f"until {until.isoformat()}" if until else None)
            print(f"{alias}: Do-Not-Solicit {'until ' + until.date().isoformat() if until else 'removed'}")
            return 0
        changed = store.set_opt_out(conn, account, alias, opted_out=args.action == "add", source=who, now=now)
        if changed:
            guard.record(conn, account=account, now=now, event="optout",
                         decision="opted_out" if args.action == "add" else "opted_in", category=None,
                         buyer=alias, actor=who)
            if args.action == "add":
                guard.cancel_unsolicited(conn, account=account, buyer=alias, source=who, actor=who, now=now)
    state = "opted out" if args.action == "add" else "not opted out"
    print(f"{alias}: {state}" + ("" if changed else " (unchanged)"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.cli.demo import run_demo

    _setup_logging(args.log_level or "WARNING")
    return run_demo(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailbridge", description=__doc__)
    p.add_argument("--version", action="version", version=f"mailbridge {__version__}")
    p.add_argument("-c", "--config", help="configuration file (default: $MAILBRIDGE_CONFIG, "
                                          "else /etc/mailbridge/mailbridge.toml)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override [daemon] log_level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (all accounts)")
    run.add_argument("--once", action="store_true", help="one pass: ingest all new mail, drain the outbox, exit")
    run.add_argument("--no-send", action="store_true", help="with --once: ingest only, leave the outbox queued")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate the configuration file")
    check.add_argument("--connect", action="store_true", help="also log in to every IMAP and SMTP server")
    check.set_defaults(func=cmd_check_config)

    status = sub.add_parser("status", help="per account: last fetch, messages, conversations, outbox, quarantine")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    outbox = sub.add_parser("outbox", help="list outgoing mail; retry or cancel held, failed or unknown rows")
    outbox.add_argument("--account", help="only this account")
    outbox_sub = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = outbox_sub.add_parser("list", help="rows waiting or needing a person (default states)")
    listing.add_argument("--state", action="append", choices=list(("queued", "sending", "sent", "failed", "unknown",
                                                                     "held", "cancelled")),
                         help="show this state (repeatable)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for action, text in (("retry", "queue held, failed or unknown rows again (check the Sent folder first "
                                   "for unknown ones: a retry may send twice)"),
                         ("cancel", "never send these rows")):
        act = outbox_sub.add_parser(action, help=text)
        act.add_argument("ids", type=int, nargs="+", metavar="ID")
    outbox.set_defaults(func=cmd_outbox)

    opt = sub.add_parser("optout", help="buyers who opted out or are on the Do-Not-Solicit list")
    opt.add_argument("--account", help="the account (needed for add/remove when there are several)")
    opt_sub = opt.add_subparsers(dest="action", required=True, metavar="ACTION")
    olist = opt_sub.add_parser("list", help="opted-out and Do-Not-Solicit buyers")
    olist.add_argument("--json", action="store_true")
    for action, text in (("add", "mark a buyer opted out (or --dns: Do-Not-Solicit)"),
                         ("remove", "undo an opt-out (or --dns: the Do-Not-Solicit entry)")):
        oact = opt_sub.add_parser(action, help=text)
        oact.add_argument("address", help="the buyer's relay address, e.g. abc123def456@marketplace.amazon.com")
        oact.add_argument("--dns", action="store_true", help="Do-Not-Solicit instead of opt-out")
        if action == "add":
            oact.add_argument("--until", help="Do-Not-Solicit expiry date (default: none)")
    opt.set_defaults(func=cmd_optout)

    audit = sub.add_parser("audit", help="every outbound decision and opt-out change, oldest first")
    audit.add_argument("--account", help="only this account")
    audit.add_argument("--since", help="from this date/time (2026-11-01, 2026-11-01T08:00) or age (24h, 7d)")
    audit.add_argument("--limit", type=int, default=10000)
    audit.add_argument("--json", action="store_true", help="machine-readable, for export")
    audit.set_defaults(func=cmd_audit)

    pol = sub.add_parser("policy", help="check draft wording against the marketplace's messaging rules")
    pol_sub = pol.add_subparsers(dest="action", required=True, metavar="ACTION")
    pcheck = pol_sub.add_parser("check", help="run the compliance guard on a draft text (FILE, or - for stdin)")
    pcheck.add_argument("file", metavar="FILE")
    pcheck.add_argument("--category", choices=["reply", "critical", "unsolicited"], default="reply",
                        help="reply on a buyer's thread (default), critical or unsolicited proactive message")
    pcheck.add_argument("--subject", default="Re: your order", help="the subject line to check too")
    pcheck.add_argument("--quoted", default="(the buyer's message)",
                        help="the buyer's message a reply quotes (default: a placeholder)")
    pol.set_defaults(func=cmd_policy)

    demo = sub.add_parser("demo", help="run a local sandbox (Dovecot + SMTP on 127.0.0.1) and show the flow")
    demo.add_argument("--keep", action="store_true", help="keep the sandbox folder afterwards")
    demo.set_defaults(func=cmd_demo)
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix (config, database, templates): said in one line, exit status 2."""
    from bridge.adapters.templates import TemplateError
    from bridge.config import ConfigError
    from bridge.store.engine import DatabaseError

    return ConfigError, DatabaseError, TemplateError


def _stop_during_startup(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def main(argv: Sequence[str] | None = None, *, clock: Callable[[], datetime] = _utcnow) -> int:
    """Run one command; ``clock`` is the time every command reads (tests pass their own)."""
    args = build_parser().parse_args(argv)
    args.clock = clock
    try:
        if args.command == "run":
            # Until the daemon installs its own handlers (after imports and opening the
            # database), SIGTERM simply ends start-up cleanly: nothing has begun yet.
            # Installed before the imports below, which take most of start-up.
            signal.signal(signal.SIGTERM, _stop_during_startup)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Looked up only now, so start-up need not import them. Never for SystemExit
        # (SIGTERM during start-up): a half-done import must not be imported again.
        if isinstance(exc, _user_errors()):
            print(f"mailbridge: {exc}", file=sys.stderr)
            return 2
        raise

