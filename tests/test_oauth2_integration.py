"""OAuth2 (SASL XOAUTH2) logins against real local servers (issue 15).

A Dovecot whose oauth2 passdb checks every token at a small OAuth2 server on
127.0.0.1 (tests/oauth2server.py: strictly rotating refresh tokens, short-lived
access tokens), and the sandbox SMTP server requiring AUTH XOAUTH2 checked
against the same server. The daemon and the OAuth2 server read one injected
clock: expiry is decided by moving it, not by waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgekit import Clock, account_block, rows, wait_until
from conftest import SANDBOX_USERS
from oauth2server import OAuth2TestServer

from bridge import store
from bridge.config import Settings, parse_settings
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, SandboxUnavailable, samples
from bridge.workers.ingest import AccountIngest
from bridge.workers.supervisor import Daemon

CLIENT_SECRET = "client-secret-for-tests"


@pytest.fixture(scope="module")
def token_server() -> Iterator[OAuth2TestServer]:
    server = OAuth2TestServer(client_secret=CLIENT_SECRET, lifetime=8).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oauth2_dovecot(token_server: OAuth2TestServer) -> Iterator[DovecotServer]:
    server = DovecotServer(SANDBOX_USERS, oauth2_introspection_url=f"{token_server.url}/introspect")
    try:
        server.start()
    except SandboxUnavailable as error:
        pytest.skip(f"Dovecot sandbox unavailable: {error}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clock(token_server: OAuth2TestServer) -> Clock:
    clock = Clock()
    token_server.clock = lambda: clock.now.timestamp()
    return clock


@pytest.fixture
def mail(oauth2_dovecot: DovecotServer, token_server: OAuth2TestServer) -> Iterator[tuple[Any, ...]]:
    if not oauth2_dovecot.running:
        oauth2_dovecot.start()
    seller, staff = oauth2_dovecot.new_account("seller"), oauth2_dovecot.new_account("staff")
    with SandboxSMTP(oauth2_dovecot, bearer=token_server.bearer_ok) as smtp:
        yield seller, staff, smtp


def oauth2_account(seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP, token_url: str,
                   seed: str) -> dict[str, Any]:
    domain = seller.user.rpartition("@")[2]
    return {
        "name": "acme", "marketplace": "amazon.com", "seller_name": "Acme Outdoor", "seller_address": seller.user,
        "staff_address": staff.user, "staff_senders": [f"*@{domain}"], "forward_existing": True,
        "imap": {"host": "127.0.0.1", "port": seller.port, "security": "none", "username": seller.user,
                 "auth": "oauth2", "poll_seconds": 5,
                 "oauth2": {"token_url": token_url, "client_id": "mailbridge-test", "client_secret": CLIENT_SECRET,
                            "refresh_token": seed}},
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "sent_copies": "none",
                 "auth": "oauth2"},
    }


def settings_of(tmp_path: Path, *accounts: dict[str, Any]) -> Settings:
    data = {"database": {"url": f"sqlite:///{tmp_path}/mailbridge.db"},
            "outbox": {"retry_base_seconds": 1, "retry_max_seconds": 10}, "accounts": list(accounts)}
    return parse_settings(data, tmp_path / "mailbridge.toml", {}, lambda p: p.read_text())


def buyer_writes(dovecot: DovecotServer, seller: SandboxAccount, n: int) -> None:
    dovecot.append(seller.user, "INBOX", samples.amazon_buyer_message(
        buyer_alias=f"k3j9x0qma2b{n}", buyer_name="Jane", order=f"111-2223334-444555{n}",
        question=f"Question number {n}?", seller_address=seller.user, token=f"A1B2C3D4E5F6{n}",
        message_id=f"buyer.{n}@email.amazon.com"))


def forwarded(smtp: SandboxSMTP, staff: SandboxAccount) -> int:
    return len(smtp.messages_to(staff.user))


def test_forwards_refreshes_expired_tokens_and_uses_the_rotated_refresh_token_after_a_restart(
        tmp_path: Path, oauth2_dovecot: DovecotServer, token_server: OAuth2TestServer, clock: Clock,
        mail: tuple[Any, ...]) -> None:
    seller, staff, smtp = mail
    seed = token_server.grant(seller.user)
    settings = settings_of(tmp_path, oauth2_account(seller, staff, smtp, f"{token_server.url}/token", seed))
    refreshes = token_server.refreshes

    buyer_writes(oauth2_dovecot, seller, 1)
    report = asyncio.run(Daemon(settings, clock=clock).run_once())
    assert report.errors == {} and forwarded(smtp, staff) == 1
    assert token_server.refreshes == refreshes + 1           # one token for IMAP and SMTP both

    # The token expires while the daemon idles; Dovecot restarts: the next login needs a new token.
    daemon = Daemon(settings, clock=clock)
    clock.advance(10)
    oauth2_dovecot.restart()
    buyer_writes(oauth2_dovecot, seller, 2)
    report = asyncio.run(daemon.run_once())
    assert report.errors == {} and forwarded(smtp, staff) == 2
    assert token_server.refreshes == refreshes + 2

    # A restarted daemon: the configured seed was spent long ago (the server refuses it now);
    # the rotated refresh token kept in the database is used.
    buyer_writes(oauth2_dovecot, seller, 3)
    clock.advance(10)
    report = asyncio.run(Daemon(settings, clock=clock).run_once())
    assert report.errors == {} and forwarded(smtp, staff) == 3
    assert "invalid_grant" not in token_server.refused
    (grant,) = rows(daemon.engine, store.OAUTH2_GRANT)
    assert grant.refresh_token != seed and grant.revoked_at is None


def test_a_refused_access_token_is_replaced_once(tmp_path: Path, oauth2_dovecot: DovecotServer,
                                                 token_server: OAuth2TestServer, clock: Clock,
                                                 mail: tuple[Any, ...]) -> None:
    seller, staff, smtp = mail
    settings = settings_of(tmp_path, oauth2_account(seller, staff, smtp, f"{token_server.url}/token",
                                                    token_server.grant(seller.user)))
    daemon = Daemon(settings, clock=clock)
    buyer_writes(oauth2_dovecot, seller, 1)
    asyncio.run(daemon.run_once())
    before = token_server.refreshes
    token_server.revoke_access(seller.user)      # our token looks valid for a while yet: the server says no
    buyer_writes(oauth2_dovecot, seller, 2)
    report = asyncio.run(daemon.run_once())
    assert report.errors == {} and forwarded(smtp, staff) == 2
    assert token_server.refreshes == before + 1


def test_invalid_grant_stops_that_account_once_and_the_others_go_on(
        tmp_path: Path, oauth2_dovecot: DovecotServer, token_server: OAuth2TestServer, clock: Clock,
        mail: tuple[Any, ...], caplog: pytest.LogCaptureFixture) -> None:
    seller, staff, smtp = mail
    other = oauth2_dovecot.new_account("other")
    other_smtp = SandboxSMTP(oauth2_dovecot)      # the other account sends through a local relay
    other_smtp.start()
    settings = settings_of(tmp_path,
                           oauth2_account(seller, staff, smtp, f"{token_server.url}/token",
                                          token_server.grant(seller.user)),
                           account_block("other", other, staff, other_smtp))
    daemon = Daemon(settings, clock=clock)
    token_server.revoke_grant(seller.user)        # consent withdrawn at the provider
    buyer_writes(oauth2_dovecot, seller, 1)
    buyer_writes(oauth2_dovecot, other, 2)
    refused = len(token_server.refused)

    with caplog.at_level(logging.INFO, logger="bridge"):
        report = asyncio.run(daemon.run_once())
        assert "mailbridge oauth2 authorize --account acme" in report.errors["acme"]
        assert "other" not in report.errors and forwarded(other_smtp, staff) == 1   # the other account's buyer
        other_smtp.stop()
        # Tried again: no new request reaches the provider, no second error.
        clock.advance(600)
        report = asyncio.run(daemon.run_once())
        assert "acme" in report.errors
    assert token_server.refused[refused:] == ["invalid_grant"]
    found = [r for r in caplog.records if r.name == "bridge.services.access_tokens" and r.levelno >= logging.ERROR]
    assert len(found) == 1 and "was revoked" in found[0].getMessage()
    # Staff are told (the alert waits in the outbox: sending shares the revoked grant).
    alerts = [r for r in rows(daemon.engine, store.OUTBOX, account="acme") if "OAuth2" in r.subject]
    assert len(alerts) == 1 and alerts[0].state == "queued"
    (grant,) = rows(daemon.engine, store.OAUTH2_GRANT)
    assert grant.revoked_at is not None and "invalid_grant" in grant.revoked_reason


def test_a_revoked_account_waits_quietly_and_resumes_after_authorize_without_a_restart(
        tmp_path: Path, oauth2_dovecot: DovecotServer, token_server: OAuth2TestServer, clock: Clock,
        mail: tuple[Any, ...], caplog: pytest.LogCaptureFixture) -> None:
    seller, staff, smtp = mail
    settings = settings_of(tmp_path, oauth2_account(seller, staff, smtp, f"{token_server.url}/token",
                                                    token_server.grant(seller.user)))
    daemon = Daemon(settings, clock=clock)
    (acct,) = daemon.accounts
    token_server.revoke_grant(seller.user)
    buyer_writes(oauth2_dovecot, seller, 1)
    ingest = AccountIngest(daemon.engine, acct, factory=daemon.imap_factory_for(acct), clock=clock)
    ingest.reauthorize_poll_seconds = 0.05      # instead of minutes
    tries: list[str] = []
    record_error = ingest.record_error
    ingest.record_error = lambda message: (tries.append(message), record_error(message))  # type: ignore[method-assign]
    stop = threading.Event()
    worker = threading.Thread(target=ingest.run_forever, args=(stop,))
    refused = len(token_server.refused)
    with caplog.at_level(logging.INFO, logger="bridge"):
        worker.start()
        try:
            wait_until(lambda: len(tries) >= 3, "the account to report the revocation", 60, interval=0.01)
            # `mailbridge oauth2 authorize` stores a new refresh token while the daemon runs.
            seed = rows(daemon.engine, store.OAUTH2_GRANT)[0].seed
            with daemon.engine.begin() as conn:
                store.seed_grant(conn, "acme", "acme", token_server.grant(seller.user), seed, clock())
            wait_until(lambda: ingest.stats.recorded >= 1, "the account to resume", 60, interval=0.01)
        finally:
            stop.set()
            worker.join(30)
    assert all("oauth2 authorize --account acme" in t for t in tries)
    assert token_server.refused[refused:] == ["invalid_grant"]           # one request, then the database answers
    revoked_lines = [r for r in caplog.records if "was revoked" in r.getMessage()]
    assert len(revoked_lines) == 1 and revoked_lines[0].levelno == logging.ERROR


def test_an_oauth2_account_added_by_a_reload_logs_in_with_its_tokens(
        tmp_path: Path, oauth2_dovecot: DovecotServer, token_server: OAuth2TestServer, clock: Clock,
        mail: tuple[Any, ...]) -> None:
    """SIGHUP's reload builds the new account's token source: it logs in with XOAUTH2, not a password."""
    from bridge.config import load_settings
    from bridge.sandbox import config_toml

    seller, staff, smtp = mail
    other = oauth2_dovecot.new_account("other")
    config = tmp_path / "mailbridge.toml"
    first = config_toml(database=f"sqlite:///{tmp_path}/mailbridge.db", seller=other.user, staff=staff.user,
                        imap_port=other.port, smtp_port=smtp.port, imap_password=other.password, name="other",
                        staff_senders=[f"*@{staff.user.rpartition('@')[2]}"],
                        sections={"imap": {"poll_seconds": 5}, "smtp": {"sent_copies": "none"}})
    config.write_text(first)
    acme = oauth2_account(seller, staff, smtp, f"{token_server.url}/token", token_server.grant(seller.user))
    oauth2 = acme["imap"].pop("oauth2")
    added = ["", "[[accounts]]", *(f"{k} = {json.dumps(v)}" for k, v in acme.items() if not isinstance(v, dict))]
    for table in ("imap", "smtp"):
        added += ["", f"[accounts.{table}]", *(f"{k} = {json.dumps(v)}" for k, v in acme[table].items())]
    added += ["", "[accounts.imap.oauth2]", *(f"{k} = {json.dumps(v)}" for k, v in oauth2.items())]

    daemon = Daemon(load_settings(config), clock=clock)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(daemon.run(stop),), daemon=True)
    runner.start()
    try:
        config.write_text(first + "\n".join(added) + "\n")
        assert asyncio.run_coroutine_threadsafe(daemon.reload(), loop).result(60) is True
        buyer_writes(oauth2_dovecot, seller, 1)
        wait_until(lambda: forwarded(smtp, staff) >= 1, "the account added by the reload to forward", 60)
        assert "acme" in daemon.tokens
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(90)
        loop.close()
