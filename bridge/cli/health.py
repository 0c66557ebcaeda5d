"""``mailbridge health [--json]``: a check for monitoring systems, from the database alone.

It reads what the daemon records (last fetch per account, the outbox, the
quarantine), so it answers the same whether the daemon runs or not; a daemon
that has stopped shows as accounts no longer fetched. Exit status, as
monitoring plugins have it: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check
could not run: configuration or database unreadable). See README.md, "Health".
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from bridge.cli.settings import load, open_store
from bridge.config import ConfigError
from bridge.domain.health import (
    OUTBOX_DELAY_DEFAULT,
    Finding,
    Status,
    default_fetch_age,
    overall,
    parse_duration,
    summary,
)
from bridge.services.health import Watched, assess
from bridge.store.engine import DatabaseError, reader


def duration(text: str) -> timedelta:
    """argparse type of the thresholds: 90s, 15m, 2h, 1d (a bare number is seconds)."""
    value = parse_duration(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 90s, 15m, 2h or 1d")
    return value


def run(args: argparse.Namespace) -> int:
    now = args.clock()
    try:
        settings = load(args)
        accounts = [a for a in settings.accounts if not args.account or a.name == args.account]
        if not accounts:
            return _report(args, [], f"no account {args.account!r} in {settings.path}", now)
        watched = [Watched(a.name, a.imap.folder, args.max_fetch_age
                           or default_fetch_age(a.imap.poll_seconds, a.imap.timeout_seconds)) for a in accounts]
        engine = open_store(settings)
        try:
            with reader(engine).begin() as conn:   # a snapshot: never waits for the daemon's batch in hand
                findings = assess(conn, watched, now, args.max_outbox_delay or OUTBOX_DELAY_DEFAULT)
        finally:
            engine.dispose()
    except (ConfigError, DatabaseError, SQLAlchemyError, OSError) as exc:
        return _report(args, [], f"cannot check: {exc}", now)
    return _report(args, findings, None, now)


def _report(args: argparse.Namespace, findings: list[Finding], unknown: str | None, now: datetime) -> int:
    status = Status.UNKNOWN if unknown else overall(findings)
    line = f"MAILBRIDGE UNKNOWN - {unknown}" if unknown else summary(findings)
    if args.json:
        print(json.dumps({
            "status": status.name, "exit_code": int(status), "summary": line,
            "checked_at": now.isoformat(timespec="seconds"),
            "findings": [{"status": f.status.name, "check": f.check, "account": f.account, "reason": f.reason}
                         for f in sorted(findings, key=lambda f: -f.status)],
        }, indent=2))
    else:
        print(line)
        if len(findings) > 1:
            for f in sorted(findings, key=lambda f: -f.status):
                print(f"{f.status.name} {f.check}: {f.reason}")
    return int(status)
