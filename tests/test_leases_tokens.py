"""An OAuth2 account's token source writes through its lease's fence once the account runs: a daemon that
lost the account must not store a refreshed (possibly rotated) refresh token over the new holder's."""

from __future__ import annotations

from pathlib import Path

import pytest
from bridgekit import account_block

from bridge.config import parse_settings
from bridge.domain.leases import LeaseTiming
from bridge.sandbox import SandboxAccount, SandboxSMTP
from bridge.services.access_tokens import grant_name
from bridge.store.errors import LeaseLost
from bridge.workers.leases import AccountLease
from bridge.workers.supervisor import Daemon

pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres


def test_token_writes_are_fenced_by_the_accounts_lease(tmp_path: Path, pg_url: str, fresh_mailbox: SandboxAccount,
                                                        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    account = account_block("acme", fresh_mailbox, staff, smtp_server)
    del account["imap"]["password"]
    account["imap"].update(auth="oauth2", oauth2={"token_url": "http://127.0.0.1:9/token", "client_id": "bridge",
                                                  "client_secret": "secret", "refresh_token": "refresh"})
    account["smtp"]["username"] = fresh_mailbox.user
    settings = parse_settings({"database": {"url": pg_url}, "accounts": [account]}, tmp_path / "mailbridge.toml",
                              {}, lambda p: p.read_text())
    daemon = Daemon(settings)
    try:
        acct = daemon.accounts[0]
        tokens = daemon.tokens[grant_name(acct.name)]
        with tokens.engine.begin():    # before the account runs: nothing to fence
            pass
        lease = AccountLease(acct.name, "elsewhere:1:daemon:gone", LeaseTiming(60, 5, 10), deadline=1e12)
        daemon._engine_for(acct, lease)   # what starting the account's workers does
        with pytest.raises(LeaseLost, match="no longer holds its lease"):
            with tokens.engine.begin():   # that holder holds no lease: nothing may be written
                pass
    finally:
        daemon.engine.dispose()
