"""``mailbridge run [--once [--no-send]]``: the daemon, or one pass for cron and tests."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from contextlib import nullcontext

from bridge.cli.settings import load, setup_logging
from bridge.config import Settings
from bridge.store.daemon_lock import lock_database
from bridge.workers.supervisor import Daemon

log = logging.getLogger("bridge")


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    setup_logging(args.log_level or settings.log_level, settings.log_format)
    # One daemon per SQLite database, for as long as this process runs; `--once` too: it ingests and
    # sends the same accounts a running daemon does (bridge/store/daemon_lock.py). PostgreSQL: no lock.
    with lock_database(settings.database.url) or nullcontext():
        return _run(args, settings)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    daemon = Daemon(settings, clock=args.clock)
    daemon.log_level_override = args.log_level
    if not args.once:
        asyncio.run(daemon.run())   # until SIGTERM/SIGINT: the work in hand is finished, then exit 0
        return 0
    report = asyncio.run(daemon.run_once(send=not args.no_send, wait_for_limits=True))
    for name, stats in report.ingest.items():
        log.info("account %s: %d recorded (%d forwarded, %d history, %d duplicates, %d quarantined); %d sent, "
                 "%d failed", name, stats.recorded, stats.forwarded, stats.history, stats.duplicates,
                 stats.quarantined, report.sent.get(name, 0), report.failed.get(name, 0))
    for name, holder in report.skipped.items():
        # Not an error: the daemon holding the account works it (exit status 0).
        print(f"mailbridge: account {name}: skipped, the running daemon {holder} holds it", file=sys.stderr)
    for name, err in report.errors.items():
        print(f"mailbridge: account {name}: {err}", file=sys.stderr)
    return 1 if report.errors else 0
