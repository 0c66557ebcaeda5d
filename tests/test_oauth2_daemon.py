"""Issue 15's must-show run: the real ``mailbridge`` daemon on an OAuth2 mailbox, in real time.

A local OAuth2 server (tests/oauth2server.py) issues 8-second access tokens and rotates
refresh tokens strictly; Dovecot checks every XOAUTH2 login against it (oauth2 passdb,
introspection), the SMTP server every AUTH XOAUTH2. With the configuration contract of
the issue: ``check-config`` passes; a buyer message is forwarded; after the token
expired and Dovecot restarted, a second one is; after the daemon restarted (its seed
refresh token long spent), a third one is; and no secret or token is in any log line.

The one test that waits for real expiry (about 8 s): it asserts outcomes only, never
how long anything took.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bridgekit import running_daemon, wait_until
from conftest import SANDBOX_USERS
from oauth2server import OAuth2TestServer

from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, SandboxUnavailable, samples

CLIENT_SECRET = "cs-9f8e7d6c5b4a-never-logged"

pytestmark = pytest.mark.slow


@pytest.fixture
def servers() -> Iterator[tuple[OAuth2TestServer, DovecotServer, SandboxSMTP]]:
    tokens = OAuth2TestServer(client_secret=CLIENT_SECRET, lifetime=8).start()
    dovecot = DovecotServer(SANDBOX_USERS, oauth2_introspection_url=f"{tokens.url}/introspect")
    try:
        try:
            dovecot.start()
        except SandboxUnavailable as error:
            pytest.skip(f"Dovecot sandbox unavailable: {error}")
        with SandboxSMTP(dovecot, bearer=tokens.bearer_ok) as smtp:
            yield tokens, dovecot, smtp
    finally:
        dovecot.close()
        tokens.stop()


def contract_config(tmp_path: Path, tokens: OAuth2TestServer, seller: SandboxAccount, staff: SandboxAccount,
                    smtp: SandboxSMTP, seed: bool = True) -> Path:
    """The issue's configuration contract, for a generic OAuth2 server on loopback.
    Without ``seed`` no refresh token is configured (``mailbridge oauth2 authorize`` gets one)."""
    (tmp_path / "client-secret").write_text(CLIENT_SECRET + "\n")
    (tmp_path / "refresh-token").write_text(tokens.grant(seller.user) + "\n")
    path = tmp_path / "mailbridge.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{tmp_path}/mailbridge.db"

[outbox]
retry_base_seconds = 1

[[accounts]]
name = "acme"
marketplace = "amazon.com"
seller_name = "Acme Outdoor"
seller_address = "{seller.user}"
staff_address = "{staff.user}"
staff_senders = ["*@sandbox.invalid"]
forward_existing = true

[accounts.imap]
host = "127.0.0.1"
port = {seller.port}
security = "none"
username = "{seller.user}"
poll_seconds = 5
auth = "oauth2"

[accounts.imap.oauth2]
provider = ""
token_url = "{tokens.url}/token"
client_id = "{tokens.client_id}"
client_secret_file = "client-secret"
{'refresh_token_file = "refresh-token"' if seed else ""}
scopes = []

[accounts.smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "none"
sent_copies = "none"
auth = "oauth2"
""")
    return path


def mailbridge(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), *args], capture_output=True,
                          text=True, timeout=120)


def test_the_daemon_forwards_through_expiry_dovecot_and_daemon_restarts_without_leaking_tokens(
        tmp_path: Path, servers: tuple[OAuth2TestServer, DovecotServer, SandboxSMTP]) -> None:
    tokens, dovecot, smtp = servers
    seller, staff = dovecot.new_account("seller"), dovecot.new_account("staff")
    config = contract_config(tmp_path, tokens, seller, staff, smtp)
    log = tmp_path / "daemon.log"

    checked = mailbridge(config, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert "OAuth2" in checked.stdout

    def buyer_writes(n: int) -> None:
        dovecot.append(seller.user, "INBOX", samples.amazon_buyer_message(
            buyer_alias=f"k3j9x0qma2b{n}", buyer_name="Jane", order=f"111-2223334-444555{n}",
            question=f"Question number {n}?", seller_address=seller.user, token=f"A1B2C3D4E5F6{n}",
            message_id=f"buyer.{n}@email.amazon.com"))

    def forwarded(n: int) -> Callable[[], bool]:
        return lambda: len(smtp.messages_to(staff.user)) >= n

    with running_daemon(config, log):
        buyer_writes(1)
        wait_until(forwarded(1), "the first buyer message forwarded", timeout=90)
        # The access token expires while the daemon idles; then Dovecot restarts, which drops
        # the IMAP connection: logging in again needs a new access token.
        wait_until(lambda: 0 < tokens.latest_expiry() < time.time(), "the access token expired", timeout=90)
        dovecot.restart()
        buyer_writes(2)
        wait_until(forwarded(2), "the second buyer message forwarded", timeout=90)
    # The daemon restarts; the seed refresh token in the file was spent at the first refresh
    # (the server refuses a used one): the rotated one kept in the database must be used.
    assert tokens.refreshes >= 2
    with running_daemon(config, log):
        buyer_writes(3)
        wait_until(forwarded(3), "the third buyer message forwarded", timeout=90)

    assert "invalid_grant" not in tokens.refused
    assert [m.rcpt_tos for m in smtp.messages_to(staff.user)] == [(staff.user,)] * 3
    text = log.read_text(errors="replace") + checked.stdout + checked.stderr
    assert "new OAuth2 access token" in text                     # the log does talk about tokens...
    leaked = [t for t in [*tokens.issued, CLIENT_SECRET] if t in text]
    assert leaked == []                                           # ...but never shows one


def test_check_config_connect_logs_in_with_oauth2_and_says_what_to_do_after_invalid_grant(
        tmp_path: Path, servers: tuple[OAuth2TestServer, DovecotServer, SandboxSMTP]) -> None:
    tokens, dovecot, smtp = servers
    seller, staff = dovecot.new_account("seller"), dovecot.new_account("staff")
    config = contract_config(tmp_path, tokens, seller, staff, smtp)

    good = mailbridge(config, "check-config", "--connect")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "IMAP login OK" in good.stdout and "SMTP login OK" in good.stdout

    tokens.revoke_grant(seller.user)          # consent withdrawn at the provider
    bad = mailbridge(config, "check-config", "--connect")
    assert bad.returncode == 1
    assert "IMAP FAILED" in bad.stdout and "SMTP FAILED" in bad.stdout
    assert "run `mailbridge oauth2 authorize --account acme`" in bad.stdout
    assert tokens.refused.count("invalid_grant") == 1         # asked once; then the recorded revocation answers
    text = good.stdout + good.stderr + bad.stdout + bad.stderr
    assert [t for t in [*tokens.issued, CLIENT_SECRET] if t in text] == []


def test_oauth2_authorize_by_loopback_redirect_then_the_daemon_logs_in(
        tmp_path: Path, servers: tuple[OAuth2TestServer, DovecotServer, SandboxSMTP],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import urllib.request
    import webbrowser

    from bridge.cli.command import main
    from bridge.config import load_settings
    from bridge.workers.supervisor import Daemon

    tokens, dovecot, smtp = servers
    seller, staff = dovecot.new_account("seller"), dovecot.new_account("staff")
    config = contract_config(tmp_path, tokens, seller, staff, smtp, seed=False)

    def browser(url: str) -> bool:
        # The seller signs in: the authorization server redirects the browser to 127.0.0.1.
        with urllib.request.urlopen(url, timeout=30) as page:
            return page.status == 200

    monkeypatch.setattr(webbrowser, "open", browser)
    assert main(["-c", str(config), "oauth2", "authorize", "--account", "acme",
                 "--authorize-url", f"{tokens.url}/authorize?login_hint={seller.user}"]) == 0
    out = capsys.readouterr().out
    assert "authorized" in out and "code_challenge_method=S256" in out
    assert [t for t in tokens.issued if t in out and not t.startswith("code-")] == []

    dovecot.append(seller.user, "INBOX", samples.amazon_buyer_message(
        buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556", question="Footprint?",
        seller_address=seller.user, token="A1B2C3D4E5F6G", message_id="buyer.1@email.amazon.com"))
    report = asyncio.run(Daemon(load_settings(config)).run_once())
    assert report.errors == {} and len(smtp.messages_to(staff.user)) == 1
    # `status` never shows the refresh token kept in the database.
    capsys.readouterr()
    for args in (["status"], ["status", "--json"]):
        assert main(["-c", str(config), *args]) == 0
        shown = capsys.readouterr().out
        assert "acme" in shown and [t for t in tokens.issued if t in shown] == []
