"""``mailbridge check-config [--connect]``: validate the file, and optionally log in to every server."""

from __future__ import annotations

import argparse
import asyncio

from bridge.adapters.imap import ClientFactory, ImapError, MailboxSession, default_client
from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.cli.settings import load
from bridge.config import AccountSettings, ImapSettings, SmtpSettings
from bridge.store.engine import require_driver


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    require_driver(settings.database.url)   # a PostgreSQL URL without psycopg installed: say so now, not at start
    print(f"{settings.path}: OK, {len(settings.accounts)} account(s)")
    for a in settings.accounts:
        print(f"  {a.name}: {a.marketplace}, seller {a.seller_address}, staff {a.staff_address}, "
              f"IMAP {a.imap.host}:{a.imap.port} ({a.imap.security}{_auth(a.imap)}), "
              f"SMTP {a.smtp.host}:{a.smtp.port} ({a.smtp.security}{_auth(a.smtp)})")
    if not args.connect:
        return 0
    failures = 0
    if not any("oauth2" in (a.imap.auth, a.smtp.auth) for a in settings.accounts):
        for a in settings.accounts:
            failures += not _imap_login(a, default_client)
            failures += not _smtp_login(a, SmtpConnection(a.smtp))
        return 1 if failures else 0
    # The daemon's own wiring: OAuth2 logins read (and rotate) the refresh token kept in the
    # database, and a revoked grant is recorded and reported to staff as the daemon would.
    from bridge.workers.supervisor import Daemon

    daemon = Daemon(settings, clock=args.clock)
    for acct in daemon.accounts:
        failures += not _imap_login(acct.settings, daemon.imap_factory_for(acct))
        failures += not _smtp_login(acct.settings, daemon.smtp_connection_for(acct))
    return 1 if failures else 0


def _auth(server: ImapSettings | SmtpSettings) -> str:
    if server.auth != "oauth2" or server.oauth2 is None:
        return ""
    return f", OAuth2 {server.oauth2.provider or server.oauth2.token_url}"


def _imap_login(account: AccountSettings, factory: ClientFactory) -> bool:
    try:
        with MailboxSession(account.imap, factory) as session:
            info = session.select(account.imap.folder)
    except ImapError as exc:
        print(f"  {account.name}: IMAP FAILED: {exc}")
        return False
    print(f"  {account.name}: IMAP login OK, {account.imap.folder} holds {info.exists} message(s)")
    return True


def _smtp_login(account: AccountSettings, connection: SmtpConnection) -> bool:
    try:
        asyncio.run(connection.check_login())
    except SendError as exc:
        print(f"  {account.name}: SMTP FAILED: {exc}")
        return False
    print(f"  {account.name}: SMTP login OK")
    return True
