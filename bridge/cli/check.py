"""``mailbridge check-config [--connect]``: validate the file, and optionally log in to every server."""

from __future__ import annotations

import argparse
import asyncio

from bridge.adapters.imap import ImapError, MailboxSession
from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.cli.settings import load
from bridge.config import AccountSettings


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    print(f"{settings.path}: OK, {len(settings.accounts)} account(s)")
    for a in settings.accounts:
        print(f"  {a.name}: {a.marketplace}, seller {a.seller_address}, staff {a.staff_address}, "
              f"IMAP {a.imap.host}:{a.imap.port} ({a.imap.security}), SMTP {a.smtp.host}:{a.smtp.port} "
              f"({a.smtp.security})")
    if not args.connect:
        return 0
    failures = 0
    for a in settings.accounts:
        failures += not _imap_login(a)
        failures += not _smtp_login(a)
    return 1 if failures else 0


def _imap_login(account: AccountSettings) -> bool:
    try:
        with MailboxSession(account.imap) as session:
            info = session.select(account.imap.folder)
    except ImapError as exc:
        print(f"  {account.name}: IMAP FAILED: {exc}")
        return False
    print(f"  {account.name}: IMAP login OK, {account.imap.folder} holds {info.exists} message(s)")
    return True


def _smtp_login(account: AccountSettings) -> bool:
    try:
        asyncio.run(SmtpConnection(account.smtp).check_login())
    except SendError as exc:
        print(f"  {account.name}: SMTP FAILED: {exc}")
        return False
    print(f"  {account.name}: SMTP login OK")
    return True
