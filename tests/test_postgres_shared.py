"""Several daemons on one PostgreSQL database: they start together, share what is shared, never take one row twice.

(Which daemon holds which account is the lease's business, tested elsewhere; here: the database underneath.)
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bridgekit import mailbridge_process, make_settings, wait_until
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples
from bridge.store.engine import open_database
from bridge.workers.supervisor import Daemon

pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres


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
    engine = None
    try:
        for log, daemon in zip(logs, daemons):
            wait_until(lambda: "ready: " in log.read_text() or daemon.poll() is not None, f"{log.name} to be ready")
        engine = open_database(pg_url)
        # Both have opened the database; the account's folder has been seen (by one daemon, or by both when
        # nothing decides which one holds it).
        wait_until(lambda: rows_in(engine, "mailbox_state") == 1, "the account's folder to be seen")
        for log, daemon in zip(logs, daemons):
            assert daemon.poll() is None, log.read_text()
            daemon.send_signal(signal.SIGTERM)
        for log, daemon in zip(logs, daemons):
            assert daemon.wait(60) == 0, log.read_text()
            assert " ERROR " not in log.read_text() and "Traceback" not in log.read_text(), log.read_text()
        assert rows_in(engine, "schema_info") == 2       # schema_version and token_secret, each made once
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        if engine is not None:
            engine.dispose()


def rows_in(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


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
        wait_until(lambda: waiting_on_a_lock(engine) == 1 or not thread.is_alive(),
                   "the second writer to wait for the first")
    thread.join(60)
    return errors


NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
BUYER = "k3j9x0qma2b7@marketplace.amazon.com"


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
    # `mailbridge optout add` beside the daemon's bounce handling: the first opt-out stands, the second finds it
    (lambda conn, n: store.set_opt_out(conn, "acme", BUYER, opted_out=True, source=f"source {n}", now=NOW),
     lambda conn: conn.scalar(text("SELECT opted_out_source FROM buyer")), "source 1"),
    (lambda conn, n: store.set_do_not_solicit(conn, "acme", BUYER, NOW + timedelta(days=n), NOW),
     lambda conn: store.buyer_contact_state(conn, "acme", BUYER).do_not_solicit_until, NOW + timedelta(days=2)),
], ids=["start_mailbox", "record_fetch", "restrict_account", "pause_sending", "seed_grant", "set_opt_out",
        "set_do_not_solicit"])
def test_a_row_made_by_two_transactions_at_once_is_made_once(pg_url: str, write: Callable[..., object],
                                                             read: Callable[[Connection], object],
                                                             second: object) -> None:
    """The second writer waits for the first one's row, then updates it (or leaves it): no unique violation."""
    engine = open_database(pg_url)
    errors = while_first_writes(engine, lambda conn: write(conn, 1), lambda conn: write(conn, 2))
    assert errors == []
    with engine.connect() as conn:
        assert read(conn) == second
    engine.dispose()


def test_a_daemons_pool_is_sized_from_its_accounts(tmp_path: Path, pg_url: str, fresh_mailbox: SandboxAccount,
                                                   smtp_server: SandboxSMTP, staff: SandboxAccount) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, db_url=pg_url)
    (acme,) = settings.accounts
    settings = replace(settings, accounts=tuple(replace(acme, name=name) for name in ("acme", "bolt", "cask")))
    daemon = Daemon(settings)
    assert daemon.engine.pool.size() == 3 + 4     # bridge.store.engine.pool_limits
    daemon.engine.dispose()


# --- claims: two daemons claiming at the same moment ------------------------------------------------

def six_due_outbox_rows(engine: Engine, _: pytest.FixtureRequest) -> datetime:
    with engine.begin() as conn:
        for n in range(6):
            store.enqueue(conn, account="acme", message_id=f"m{n}@x", purpose="staff_alert", audience="staff",
                          envelope_from="s@x", recipients=("t@x",), subject="s", raw=b"x", now=NOW)
    return NOW


def six_due_feedback_requests(engine: Engine, _: pytest.FixtureRequest) -> datetime:
    with engine.begin() as conn:
        for n in range(6):
            store.schedule_request(conn, "acme", f"111-0000000-000000{n}", "k3j9x0qma2b7@marketplace.amazon.com",
                                   NOW, NOW)
    return NOW


def six_due_reminders(engine: Engine, request: pytest.FixtureRequest) -> datetime:
    """Six buyers' unanswered messages, ingested by a daemon: at 12.5 hours each has its first reminder due."""
    dovecot, seller, staff, smtp = (request.getfixturevalue(f) for f in ("dovecot", "fresh_mailbox", "staff",
                                                                        "smtp_server"))
    tmp_path = request.getfixturevalue("tmp_path")
    for n in range(6):
        dovecot.append(seller.user, "INBOX", samples.amazon_buyer_message(
            buyer_alias=f"buyer{n}x0qma2b7", buyer_name=f"Buyer {n}", order=f"111-2223334-444555{n}",
            question="Where is it?", seller_address=seller.user, message_id=f"b{n}@email.amazon.com", date=NOW))
    settings = make_settings(tmp_path, seller, staff, smtp, db_url=str(engine.url.render_as_string(False)),
                             account={"forward_existing": True})
    daemon = Daemon(settings, clock=lambda: NOW)
    asyncio.run(daemon.run_once(send=False))
    daemon.engine.dispose()
    return NOW + timedelta(hours=12.5)


def claim_outbox(conn: Connection, worker: str, now: datetime) -> set[int]:
    return {item.id for item in store.claim_batch(conn, "acme", worker, now, 4)}


def claim_feedback(conn: Connection, worker: str, now: datetime) -> set[int]:
    return {request.id for request in store.claim_due_requests(conn, "acme", worker, now, 4)}


def claim_reminders(conn: Connection, worker: str, now: datetime) -> set[int]:
    """A reminder timer's claim: read the due ones, move each on by a conditional update (services/reminders.py)."""
    return {due.id for due in store.due_reminders(conn, "acme", now, 4)
            if store.finish_reminder(conn, due.id, state="sent", now=now, outbox_message_id=f"{worker}.{due.id}@x")}


@pytest.mark.parametrize(("make", "claim"), [
    (six_due_outbox_rows, claim_outbox),
    (six_due_feedback_requests, claim_feedback),
    (six_due_reminders, claim_reminders),
], ids=["outbox", "feedback", "reminders"])
def test_a_second_claimer_skips_the_rows_the_first_holds_and_does_not_wait(
        pg_url: str, request: pytest.FixtureRequest, make: Callable[[Engine, pytest.FixtureRequest], datetime],
        claim: Callable[[Connection, str, datetime], set[int]]) -> None:
    """Daemon A claims 4 of 6 due rows and has not committed; daemon B, meanwhile, gets the other 2 at once."""
    engine = open_database(pg_url)
    now = make(engine, request)
    with engine.connect() as a:
        with a.begin():
            first = claim(a, "a", now)
            with engine.begin() as b:
                # Were B to wait for A's rows it would fail here, not hang: SKIP LOCKED never waits on a lock.
                b.execute(text("SET LOCAL lock_timeout = '5s'"))
                second = claim(b, "b", now)
        with a.begin():
            third = claim(a, "a2", now)
    assert len(first) == 4 and len(second) == 2 and not first & second
    assert third == set()
    engine.dispose()
