"""The ``mailbridge`` parser and :func:`main`, which runs one command.

Each command's work is in the module ``bridge.cli.<module>`` named in the
parser, and that module is imported only when its command runs: ``mailbridge
--help`` stays quick, and ``run`` can take SIGTERM cleanly before the imports
that take most of its start-up.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from bridge import __version__

DESCRIPTION = ("Bridge a marketplace seller's mailbox and the seller's support team, within the marketplace's "
               "messaging rules.")
EPILOG = ("-c/--config and --log-level may stand before or after the command (mailbridge -c FILE status, "
          "mailbridge status -c FILE); given twice, the later one counts.")
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
OUTBOX_STATES = ["queued", "sending", "sent", "failed", "unknown", "held", "cancelled"]


def _add_shared_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """-c/--config and --log-level, on the top parser (default None) and on every command's (``default`` is
    SUPPRESS there, so a value given before the command is not overwritten by the command's own default)."""
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="configuration file (default: $MAILBRIDGE_CONFIG, else /etc/mailbridge/mailbridge.toml); "
                             "before or after the command; given twice, the later one counts")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                        help="override [daemon] log_level; before or after the command")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailbridge", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"mailbridge {__version__}")
    _add_shared_options(p, None)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, text: str, module: str | None = None) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text, epilog=EPILOG)
        _add_shared_options(parser, argparse.SUPPRESS)
        if module:
            parser.set_defaults(module=module)
        return parser

    run = command(commands, "run", "run the daemon (all accounts)", "run")
    run.add_argument("--once", action="store_true", help="one pass: ingest all new mail, drain the outbox, exit")
    run.add_argument("--no-send", action="store_true", help="with --once: ingest only, leave the outbox queued")

    reload = command(commands, "reload", "check the configuration file, then have the running daemon re-read it "
                                         "(as systemctl reload mailbridge); exit 0 done, 1 no daemon, 2 bad file",
                     "reload")
    reload.add_argument("--pid", type=int, help="the daemon's process id (default: the mailbridge run process "
                                                "reading the same configuration file)")

    check = command(commands, "check-config", "validate the configuration file", "check")
    check.add_argument("--connect", action="store_true", help="also log in to every IMAP and SMTP server")

    oauth2 = command(commands, "oauth2", "OAuth2 logins (Microsoft 365, Google Workspace): get the first refresh token",
                     "oauth2")
    oauth2_actions = oauth2.add_subparsers(dest="action", required=True, metavar="ACTION")
    authorize = command(oauth2_actions, "authorize", "sign in as the seller's mailbox once: Microsoft by device code, "
                        "Google (or --authorize-url) in a browser redirected to 127.0.0.1; the refresh token is kept "
                        "in the database")
    authorize.add_argument("--account", required=True, help="the account to authorize")
    authorize.add_argument("--smtp", action="store_true",
                           help="authorize the separate SMTP client ([accounts.smtp.oauth2]) instead")
    authorize.add_argument("--authorize-url", help='the authorization endpoint of a generic server (provider = "")')
    authorize.add_argument("--no-browser", action="store_true", help="only print the sign-in URL")

    status = command(commands, "status", "per account: last fetch, messages, conversations, outbox, quarantine",
                     "status")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    health = command(commands, "health", "a check for monitoring systems: exit 0 OK, 1 WARNING, 2 CRITICAL, "
                                         "3 UNKNOWN, with the reason (README.md, \"Health\")", "health")
    health.add_argument("--json", action="store_true", help="machine-readable output")
    health.add_argument("--account", help="only this account")
    health.add_argument("--max-fetch-age", type=_duration, metavar="AGE",
                        help="CRITICAL when an account's folder has not been fetched for longer (90s, 15m, 2h, 1d; "
                             "default: 15m, or 3 poll intervals plus 4 IMAP timeouts when that is longer)")
    health.add_argument("--max-outbox-delay", type=_duration, metavar="AGE",
                        help="CRITICAL when outbox rows have been due, or sending, for longer (default: 1h)")

    quarantine = command(commands, "quarantine", "mail that could not be processed; acknowledge it once seen",
                         "quarantine")
    quarantine.add_argument("--account", help="only this account")
    quarantine_actions = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    qlist = command(quarantine_actions, "list", "quarantined mail not yet acknowledged (--all: all of it)")
    qlist.add_argument("--all", action="store_true", help="also what was acknowledged")
    qlist.add_argument("--limit", type=int, default=1000)
    qlist.add_argument("--json", action="store_true", help="machine-readable output")
    qack = command(quarantine_actions, "ack", "record that a person has seen this quarantined mail "
                                              "(`mailbridge health` stops warning about it; the mail stays kept)")
    qack.add_argument("ids", type=int, nargs="*", metavar="ID")
    qack.add_argument("--all", action="store_true", help="every quarantined message not yet acknowledged")

    outbox = command(commands, "outbox", "list outgoing mail; retry or cancel held, failed or unknown rows", "outbox")
    outbox.add_argument("--account", help="only this account")
    outbox_actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(outbox_actions, "list", "rows waiting or needing a person (default states)")
    listing.add_argument("--state", action="append", choices=OUTBOX_STATES, help="show this state (repeatable)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for action, text in (("retry", "queue held, failed or unknown rows again (check the Sent folder first "
                                   "for unknown ones: a retry may send twice)"),
                         ("cancel", "never send these rows")):
        command(outbox_actions, action, text).add_argument("ids", type=int, nargs="+", metavar="ID")

    optout = command(commands, "optout", "buyers who opted out or are on the Do-Not-Solicit list", "optout")
    optout.add_argument("--account", help="the account (needed for add/remove when there are several)")
    optout_actions = optout.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(optout_actions, "list", "opted-out and Do-Not-Solicit buyers").add_argument("--json", action="store_true")
    for action, text in (("add", "mark a buyer opted out (or --dns: Do-Not-Solicit)"),
                         ("remove", "undo an opt-out (or --dns: the Do-Not-Solicit entry)")):
        change = command(optout_actions, action, text)
        change.add_argument("address", help="the buyer's relay address, e.g. abc123def456@marketplace.amazon.com")
        change.add_argument("--dns", action="store_true", help="Do-Not-Solicit instead of opt-out")
        if action == "add":
            change.add_argument("--until", help="Do-Not-Solicit expiry date (default: none)")

    orders = command(commands, "orders", "marketplace orders: import order reports, list what is known", "orders")
    orders_actions = orders.add_subparsers(dest="action", required=True, metavar="ACTION")
    oimport = command(orders_actions, "import", "import an Amazon order report (All Orders, Amazon Fulfilled "
                                                 "Shipments or the merchant order report; tab-separated or CSV)")
    oimport.add_argument("file", metavar="FILE")
    oimport.add_argument("--account", required=True, help="the account the orders belong to")
    oimport.add_argument("--encoding", default="utf-8", help="the file's text encoding (default: utf-8)")
    olist = command(orders_actions, "list", "orders, newest first, with their items")
    olist.add_argument("--account", help="only this account")
    olist.add_argument("--limit", type=int, default=1000)
    olist.add_argument("--json", action="store_true", help="machine-readable output")

    fb = command(commands, "feedback", "feedback requests: list them, preview one, record one made elsewhere",
                 "feedback")
    fb.add_argument("--account", help="only this account (needed for preview/skip when there are several)")
    fb_actions = fb.add_subparsers(dest="action", required=True, metavar="ACTION")
    fb_list = command(fb_actions, "list", "per order: state (scheduled/sent/skipped/cancelled), due time, reason")
    fb_list.add_argument("--limit", type=int, default=1000)
    fb_list.add_argument("--json", action="store_true", help="machine-readable output")
    fb_preview = command(fb_actions, "preview", "the request for ORDER as it would be sent now, and whether it may "
                                                "be sent now (if not, why)")
    fb_preview.add_argument("order", metavar="ORDER", help="the order id, e.g. 111-2223334-4445556")
    fb_skip = command(fb_actions, "skip", "record that ORDER was asked for feedback elsewhere (e.g. Amazon's "
                                          "\"Request a Review\"), so it is never asked here")
    fb_skip.add_argument("order", metavar="ORDER", help="the order id, e.g. 111-2223334-4445556")
    fb_skip.add_argument("--reason", required=True, help='how it was asked, e.g. "Request a Review in Seller Central"')

    audit = command(commands, "audit", "every outbound decision and opt-out change, oldest first", "audit")
    audit.add_argument("--account", help="only this account")
    audit.add_argument("--since", help="from this date/time (2026-11-01, 2026-11-01T08:00) or age (24h, 7d)")
    audit.add_argument("--limit", type=int, default=10000)
    audit.add_argument("--json", action="store_true", help="machine-readable, for export")

    pol = command(commands, "policy", "check draft wording against the marketplace's messaging rules", "policy")
    pol_actions = pol.add_subparsers(dest="action", required=True, metavar="ACTION")
    pcheck = command(pol_actions, "check", "run the compliance guard on a draft text (FILE, or - for stdin)")
    pcheck.add_argument("file", metavar="FILE")
    pcheck.add_argument("--category", choices=["reply", "critical", "unsolicited"], default="reply",
                        help="reply on a buyer's thread (default), critical or unsolicited proactive message")
    pcheck.add_argument("--subject", default="Re: your order", help="the subject line to check too")
    pcheck.add_argument("--quoted", default="(the buyer's message)",
                        help="the buyer's message a reply quotes (default: a placeholder)")

    tpl = command(commands, "templates", "check and preview the email templates", "templates")
    tpl_actions = tpl.add_subparsers(dest="action", required=True, metavar="ACTION")
    tlint = command(tpl_actions, "lint", "load and render every template with sample values in each language and "
                    "run the content rules over buyer templates; exit 0 clean, 1 problems, 2 unusable folder")
    tlint.add_argument("dir", nargs="?", metavar="DIR",
                       help="the folder (default: [daemon] templates of the configuration, else the shipped ones)")
    tpreview = command(tpl_actions, "preview", "print a template rendered with its sample values, or with "
                       "a stored order's data (--order)")
    tpreview.add_argument("name", metavar="NAME", help="the template, e.g. feedback_request")
    tpreview.add_argument("--order", metavar="ID", help="render with this order's data (from the database)")
    tpreview.add_argument("--account", metavar="NAME", help="the order's account (when there are several)")
    tpreview.add_argument("--lang", help="the buyer's language (en, de, fr, es, it, ja; default: the order's, "
                          "else en)")
    tpreview.add_argument("--dir", help="the folder (default: as for lint)")

    db = command(commands, "db", "the database's schema: show its revision, upgrade it to this mailbridge's", "db")
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(db_actions, "current", "show the schema revision and whether this mailbridge can use it "
                                   "(exit 0 yes, 1 after mailbridge db upgrade, 2 no)")
    command(db_actions, "upgrade", "bring the schema to this mailbridge's revision in one transaction (back the "
                                   "database up first); creates an empty database; safe to run twice")

    demo = command(commands, "demo", "run a local sandbox (Dovecot + SMTP on 127.0.0.1) and show the flow", "demo")
    demo.add_argument("--keep", action="store_true", help="keep the sandbox folder afterwards")
    return p


def _duration(text: str) -> Any:
    """The thresholds of ``health``; the parsing lives with the checks (imported only then)."""
    from bridge.cli.health import duration

    return duration(text)


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix (config, database, templates): said in one line, exit status 2."""
    from bridge.adapters.templates import TemplateError
    from bridge.config import ConfigError
    from bridge.store.errors import DatabaseError

    return ConfigError, DatabaseError, TemplateError


def _stop_during_startup(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def main(argv: Sequence[str] | None = None, *, clock: Callable[[], datetime] = _utcnow) -> int:
    """Run one command; ``clock`` is the time every command reads (tests pass their own)."""
    args = build_parser().parse_args(argv)
    args.clock = clock
    previous: dict[int, Any] = {}
    try:
        if args.command == "run":
            # Put back when the command returns: a process that calls main() and goes on
            # (the tests do) must not keep start-up's handlers.
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
            # Until the daemon installs its own handlers (after imports and opening the
            # database), SIGTERM simply ends start-up cleanly: nothing has begun yet.
            # Installed before the command's module is imported, which takes most of start-up.
            signal.signal(signal.SIGTERM, _stop_during_startup)
            # A reload asked for while starting is moot (the file is being read now); by
            # default SIGHUP would end the process.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        module = importlib.import_module(f"bridge.cli.{args.module}")
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Looked up only now, so start-up need not import them. Never for SystemExit
        # (SIGTERM during start-up): a half-done import must not be imported again.
        if isinstance(exc, _user_errors()):
            print(f"mailbridge: {exc}", file=sys.stderr)
            return 2
        raise
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
