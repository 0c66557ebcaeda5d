"""Shared fixtures: real mail servers on 127.0.0.1 (see bridge/sandbox.py).

- ``dovecot``: one Dovecot IMAP server for the whole session, users
  ``SANDBOX_USERS``. Shared mail: write tests should use ``fresh_mailbox``.
  A test may stop or restart it; the next test gets it running again.
- ``fresh_mailbox``: a ``SandboxAccount`` for a brand-new Dovecot user
  (INBOX, Sent, Processed, Quarantine all empty) that no other test sees.
  Costs about 10 ms. Call ``dovecot.new_account()`` for more.
- ``smtp_server``: a ``SandboxSMTP`` per test; mail to a Dovecot username
  (e.g. ``fresh_mailbox.user``) lands in that user's INBOX. Call
  ``smtp_server.wait_delivered()`` before reading the mailbox.

Without Dovecot these tests are skipped, except on CI (``CI`` set), where a
missing server is a failure: CI never skips silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridgekit import Flow, postgres_database

from bridge.sandbox import (
    DovecotServer,
    SandboxAccount,
    SandboxSMTP,
    SandboxUnavailable,
)

SANDBOX_USERS: dict[str, str] = {
    "seller@acme.example": "seller-pass",
    "staff@acme.example": "staff-pass",
    "buyer@sandbox.invalid": "buyer-pass",
}


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def _dovecot_session() -> Iterator[DovecotServer]:
    server = DovecotServer(SANDBOX_USERS)
    try:
        server.start()
    except SandboxUnavailable as error:
        message = f"Dovecot sandbox unavailable: {error}"
        if _on_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def dovecot(_dovecot_session: DovecotServer) -> DovecotServer:
    if not _dovecot_session.running:  # a previous test stopped it
        _dovecot_session.start()
    return _dovecot_session


@pytest.fixture
def fresh_mailbox(dovecot: DovecotServer) -> SandboxAccount:
    return dovecot.new_account("test")


@pytest.fixture
def smtp_server(dovecot: DovecotServer) -> Iterator[SandboxSMTP]:
    with SandboxSMTP(dovecot) as server:
        yield server


@pytest.fixture
def staff(dovecot: DovecotServer) -> SandboxAccount:
    """A brand-new Dovecot user for the support team's mailbox."""
    return dovecot.new_account("staff")


@pytest.fixture
def flow(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
         smtp_server: SandboxSMTP) -> Flow:
    """One seller account with a buyer message already forwarded to staff (bridgekit.Flow)."""
    return Flow(tmp_path, dovecot, fresh_mailbox, staff, smtp_server)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A brand-new PostgreSQL database for one test (bridgekit.postgres_database), dropped afterwards."""
    with postgres_database() as url:
        yield url
