"""Several daemons on one PostgreSQL database: they start together, share what is shared, never take one row twice.

(Which daemon holds which account is the lease's business, tested elsewhere; here: the database underneath.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bridgekit import mailbridge_process, postgres_database
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml
from bridge.store.engine import open_database

pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def _wait_until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_daemons_start_together_on_a_new_database(tmp_path: Path, pg_url: str, dovecot: DovecotServer,
                                                      fresh_mailbox: SandboxAccount, smtp_server: SandboxSMTP,
                                                      staff: SandboxAccount) -> None:
    """Both create-or-find the schema, the HMAC key and the folder's checkpoint row, and run: no error logged."""
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(database=pg_url, seller=fresh_mailbox.user, staff=staff.user,
                                  imap_port=fresh_mailbox.port, smtp_port=smtp_server.port,
                                  imap_password=fresh_mailbox.password))
    logs = [tmp_path / f"daemon{n}.log" for n in range(2)]
    daemons = [mailbridge_process(config, log, "run") for log in logs]
    try:
        for log, daemon in zip(logs, daemons):
            _wait_until(lambda: "ready: 1/1 accounts connected" in log.read_text() or daemon.poll() is not None,
                        f"{log.name} to be ready")
        for log, daemon in zip(logs, daemons):
            assert daemon.poll() is None, log.read_text()
            daemon.send_signal(signal.SIGTERM)
        for log, daemon in zip(logs, daemons):
            assert daemon.wait(60) == 0, log.read_text()
            assert " ERROR " not in log.read_text() and "Traceback" not in log.read_text(), log.read_text()
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    engine = open_database(pg_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(store.INFO)) == 2   # schema_version, token_secret
        assert conn.scalar(text("SELECT count(*) FROM mailbox_state")) == 1
    engine.dispose()


def test_daemons_starting_together_share_one_hmac_key(pg_url: str) -> None:
    engine = open_database(pg_url)
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def starting_daemon() -> None:
        start.wait()
        keys.append(store.token_secret(engine, None))

    threads = [threading.Thread(target=starting_daemon) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(keys) == 8 and len(set(keys)) == 1
    assert store.token_secret(engine, None) == keys[0]
    engine.dispose()


def waiting_on_a_lock(engine: Engine) -> int:
    """How many sessions of the database wait for a row or index lock another transaction holds."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'")).scalar_one())


def while_first_writes(engine: Engine, first: Callable[[Connection], object],
                       second: Callable[[Connection], object]) -> list[BaseException]:
    """Run ``second`` in its own transaction while ``first``'s is open and holds what it wrote, then commit
    ``first``: the interleaving where "select, then insert if missing" has both insert. The errors of ``second``."""
    errors: list[BaseException] = []

    def other_daemon() -> None:
        try:
            with engine.begin() as conn:
                second(conn)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    with engine.begin() as conn:
        first(conn)
        thread = threading.Thread(target=other_daemon)
        thread.start()
        _wait_until(lambda: waiting_on_a_lock(engine) == 1 or not thread.is_alive(),
                    "the second writer to wait for the first")
    thread.join(60)
    return errors


NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("write", "read", "second"), [
    (lambda conn, n: store.start_mailbox(conn, "acme", "INBOX", 1000 + n, 0, NOW),
     lambda conn: store.mailbox_checkpoint(conn, "acme", "INBOX").uidvalidity, 1002),
    (lambda conn, n: store.record_fetch(conn, "acme", "INBOX", NOW + timedelta(seconds=n), f"error {n}"),
     lambda conn: conn.scalar(text("SELECT last_error FROM mailbox_state")), "error 2"),
    (lambda conn, n: store.restrict_account(conn, "acme", NOW + timedelta(days=n), f"reason {n}"),
     lambda conn: conn.scalar(text("SELECT restricted_reason FROM account_state")), "reason 2"),
    (lambda conn, n: store.pause_sending(conn, "acme", NOW + timedelta(minutes=n), f"throttled {n}", n),
     lambda conn: store.send_pause(conn, "acme").reason, "throttled 2"),
    (lambda conn, n: store.seed_grant(conn, "acme", "acme", f"token {n}", None, NOW),
     lambda conn: store.grant_state(conn, "acme").refresh_token, "token 2"),
], ids=["start_mailbox", "record_fetch", "restrict_account", "pause_sending", "seed_grant"])
def test_a_row_made_by_two_transactions_at_once_is_made_once(pg_url: str, write: Callable[..., object],
                                                             read: Callable[[Connection], object],
                                                             second: object) -> None:
    """The second writer waits for the first one's row, then updates it: no unique violation to abort it."""
    engine = open_database(pg_url)
    errors = while_first_writes(engine, lambda conn: write(conn, 1), lambda conn: write(conn, 2))
    assert errors == []
    with engine.connect() as conn:
        assert read(conn) == second   # the second write is the last word
    engine.dispose()
