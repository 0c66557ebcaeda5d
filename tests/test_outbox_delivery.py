"""The outbox against the real servers: batches over one connection, Sent copies on one IMAP
connection, a batch reconciled with one search, sending limits across a restart, throttle replies."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import imapclient
import pytest
from bridgekit import Clock, make_settings, outbox_states, rows
from sqlalchemy import event

from bridge import store
from bridge.adapters.imap import default_client
from bridge.adapters.smtp import SmtpConnection
from bridge.cli.command import main
from bridge.config import ImapSettings, load_settings
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples
from bridge.store.times import iso
from bridge.workers.outbox import OutboxWorker
from bridge.workers.supervisor import Daemon


class CountingSmtp(SmtpConnection):
    """The worker's own SMTP adapter, counting the connections it opens."""

    opened = 0

    async def _connect(self) -> aiosmtplib.SMTP:
        CountingSmtp.opened += 1
        return await super()._connect()


def queue_notifications(daemon: Daemon, dovecot: DovecotServer, seller: SandboxAccount, n: int, seed: int) -> None:
    """``n`` buyer messages in the seller INBOX, ingested: ``n`` staff notifications queued, nothing sent."""
    with dovecot.imap_client(seller.user) as client:
        client.multiappend("INBOX", samples.buyer_backlog(n, seller_address=seller.user, seed=seed))
    asyncio.run(daemon.run_once(send=False))
    assert outbox_states(daemon.engine) == {"queued": n}


def queued_daemon(tmp_path: Path, dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount,
                  smtp: SandboxSMTP, n: int, seed: int, clock: Clock, **settings_kw: Any) -> Daemon:
    """A daemon on the injected clock with ``n`` staff notifications queued (``settings_kw``: make_settings's)."""
    daemon = Daemon(make_settings(tmp_path, seller, staff, smtp, account={"forward_existing": True}, **settings_kw),
                    clock=clock)
    queue_notifications(daemon, dovecot, seller, n, seed)
    return daemon


def drain(worker: OutboxWorker, **kw: Any) -> int:
    async def go() -> int:
        try:
            await worker.reconcile()
            return await worker.drain(**kw)
        finally:
            await worker.close()
    return asyncio.run(go())


def copying_daemon(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP, folder: str,
                   batch_size: int) -> Daemon:
    """A daemon that appends copies of what it sends to ``folder`` itself (sent_copies = "append")."""
    return Daemon(make_settings(tmp_path, seller, staff, smtp, account={"forward_existing": True},
                                imap={"sent_folder": folder}, smtp_opts={"sent_copies": "append"},
                                outbox={"batch_size": batch_size}))


def commits(engine: Any) -> list[int]:
    counter = [0]
    event.listen(engine, "commit", lambda _conn: counter.__setitem__(0, counter[0] + 1))
    return counter


def test_a_batched_drain_sends_everything_once_over_one_connection(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             outbox={"batch_size": 20})
    daemon = Daemon(settings, smtp_factory=lambda acct: CountingSmtp(acct.settings.smtp))
    queue_notifications(daemon, dovecot, fresh_mailbox, 45, seed=31)
    CountingSmtp.opened = 0
    committed = commits(daemon.engine)
    worker = daemon._outbox(daemon.accounts[0])
    assert drain(worker) == 45
    transactions = committed[0]
    received = smtp_server.received
    assert len(received) == 45 and len({r.message_id for r in received}) == 45
    assert outbox_states(daemon.engine) == {"sent": 45}
    assert CountingSmtp.opened == 1
    # Three batches (20, 20, 5): the look for interrupted sends, the first claim, then one transaction per
    # batch recording it and claiming the next (the last finds nothing). Not two per message.
    assert transactions == 1 + 1 + 3, transactions
    # The queue went out in its order.
    queued_order = [r.message_id for r in sorted(rows(daemon.engine, store.OUTBOX), key=lambda r: r.id)]
    assert [r.message_id for r in received] == queued_order


def test_a_missing_sent_folder_is_created_once_and_copies_go_over_one_connection(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture) -> None:
    logins: list[str] = []

    def counting(imap: ImapSettings) -> imapclient.IMAPClient:
        logins.append(imap.username)
        return default_client(imap)

    daemon = copying_daemon(tmp_path, fresh_mailbox, staff, smtp_server, "Sent Items", batch_size=10)
    queue_notifications(daemon, dovecot, fresh_mailbox, 25, seed=32)
    worker = OutboxWorker(daemon.engine, daemon.accounts[0], daemon.settings.outbox, imap_factory=counting)
    with caplog.at_level(logging.INFO, logger="bridge"):
        assert drain(worker) == 25
    assert logins == [fresh_mailbox.user]            # one login for three batches of copies
    with dovecot.imap_client(fresh_mailbox.user) as client:
        assert client.folder_exists("Sent Items")
        client.select_folder("Sent Items", readonly=True)
        assert len(client.search(["ALL"])) == 25
        assert len(client.search(["SEEN"])) == 25
    assert {r.copied_to_sent for r in rows(daemon.engine, store.OUTBOX)} == {True}
    created = [r for r in caplog.records if "does not exist; creating it" in r.getMessage()]
    assert len(created) == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_copies_that_cannot_be_stored_are_reported_once_not_per_message(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture) -> None:
    # A folder name the server refuses to create: every batch's copy fails, one warning in all.
    daemon = copying_daemon(tmp_path, fresh_mailbox, staff, smtp_server, "Sent/../../escape", batch_size=5)
    queue_notifications(daemon, dovecot, fresh_mailbox, 12, seed=33)
    worker = daemon._outbox(daemon.accounts[0])
    with caplog.at_level(logging.INFO, logger="bridge"):
        assert drain(worker) == 12
    assert outbox_states(daemon.engine) == {"sent": 12}          # the mail went out all the same
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not being copied" in warnings[0].getMessage(), warnings


def test_an_interrupted_batch_is_reconciled_with_one_search(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount) -> None:
    seller = fresh_mailbox
    with SandboxSMTP(dovecot, auth={seller.user: seller.password}, file_sent_copies=True) as smtp:
        clock = Clock()
        settings = make_settings(tmp_path, seller, staff, smtp, account={"forward_existing": True},
                                 smtp_opts={"sent_copies": "server", "username": seller.user,
                                            "password": seller.password, "timeout_seconds": 4},
                                 outbox={"reconcile_after_seconds": 5})
        daemon = Daemon(settings, clock=clock)
        queue_notifications(daemon, dovecot, seller, 12, seed=34)
        # A process claimed a batch, sent five of them and died before recording anything.
        with daemon.engine.begin() as conn:
            batch = store.claim_batch(conn, "acme", "dead-host:1:x", clock(), 20)
        assert len(batch) == 12

        async def dead_process_sends() -> None:
            conn = SmtpConnection(daemon.accounts[0].settings.smtp)
            for item in batch[:5]:
                await conn.send(item.envelope_from, item.recipients, item.raw)
            await conn.close()

        asyncio.run(dead_process_sends())
        smtp.wait_delivered()
        searches: list[object] = []

        def counting(imap: ImapSettings) -> imapclient.IMAPClient:
            client = default_client(imap)
            search = client.search

            def counted(criteria: Any = "ALL", charset: str | None = None) -> Any:
                searches.append(criteria)
                return search(criteria, charset)

            client.search = counted  # type: ignore[method-assign]
            return client

        clock.advance(10)
        worker = OutboxWorker(daemon.engine, daemon.accounts[0], settings.outbox, clock=clock, imap_factory=counting)
        assert drain(worker) == 7
        assert len(searches) == 1                           # the whole batch in one SEARCH
        notes = collections.Counter(r.last_error for r in rows(daemon.engine, store.OUTBOX))
        assert notes["send interrupted by a crash; found in the Sent folder afterwards"] == 5
        assert outbox_states(daemon.engine) == {"sent": 12}
        per_id = collections.Counter(r.message_id for r in smtp.received)
        assert len(per_id) == 12 and max(per_id.values()) == 1


def test_the_limit_holds_across_a_restart(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                          staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    clock = Clock()
    first = queued_daemon(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, 12, 35, clock,
                          smtp_opts={"max_per_minute": 4, "max_per_day": 10}, outbox={"batch_size": 3})
    settings = first.settings
    assert drain(first._outbox(first.accounts[0])) == 4
    clock.advance(20)
    first.engine.dispose()

    def restarted() -> int:   # a new process: nothing carried over but the database
        daemon = Daemon(settings, clock=clock)
        try:
            return drain(daemon._outbox(daemon.accounts[0]))
        finally:
            daemon.engine.dispose()

    assert restarted() == 0                # 20 s after the first four: the minute is used up
    clock.advance(39)
    assert restarted() == 0
    clock.advance(1)                       # a minute after the first sends
    assert restarted() == 4
    clock.advance(60)
    assert restarted() == 2                # the day's 10 are used up
    clock.advance(3600)
    assert restarted() == 0
    clock.advance(86400)
    assert restarted() == 2
    assert outbox_states(Daemon(settings, clock=clock).engine) == {"sent": 12}
    sent_at = sorted(r.sent_at for r in rows(Daemon(settings, clock=clock).engine, store.OUTBOX))
    # In every minute at most 4, in every day at most 10.
    for i, at in enumerate(sent_at):
        assert sum(1 for t in sent_at[i:] if t - at < timedelta(minutes=1)) <= 4
        assert sum(1 for t in sent_at[i:] if t - at < timedelta(days=1)) <= 10
    assert len(smtp_server.received) == 12


def test_run_once_does_not_wait_for_the_limit_when_nothing_is_left(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    # The limit is used up by the last message: nothing is held back, so nothing to wait for (the clock
    # stands still here, so waiting would never end: the timeout says so).
    clock = Clock()
    daemon = queued_daemon(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, 3, 40, clock,
                           smtp_opts={"max_per_minute": 3})
    worker = daemon._outbox(daemon.accounts[0])

    async def once() -> int:
        try:
            return await asyncio.wait_for(worker.drain(wait_for_limits=True), 20)
        finally:
            await worker.close()

    assert asyncio.run(once()) == 3
    assert outbox_states(daemon.engine) == {"sent": 3}


def test_a_throttle_reply_pauses_the_whole_account_not_each_row(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    clock = Clock()
    daemon = queued_daemon(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, 8, 36, clock,
                           outbox={"batch_size": 5})
    before = {r.id: r.next_attempt_at for r in rows(daemon.engine, store.OUTBOX)}
    smtp_server.fail_next(451, "4.7.0 Message submission rate for this client has exceeded the configured limit",
                          times=1, stage="DATA")
    assert drain(daemon._outbox(daemon.accounts[0])) == 0
    assert smtp_server.rejected == 1 and smtp_server.received == []
    after = rows(daemon.engine, store.OUTBOX)
    assert {r.state for r in after} == {"queued"} and {r.attempts for r in after} == {0}
    assert {r.id: r.next_attempt_at for r in after} == before       # no row got its own backoff
    (pause,) = rows(daemon.engine, store.SEND_PAUSE)
    assert pause.in_a_row == 1 and "rate" in pause.reason
    assert store.utc(pause.paused_until) == clock() + timedelta(seconds=60)

    # Paused: nothing is tried, however often the worker is woken.
    clock.advance(30)
    for _ in range(3):
        assert drain(daemon._outbox(daemon.accounts[0])) == 0
    assert smtp_server.rejected == 1

    # Throttled again after the pause: twice as long.
    clock.advance(31)
    smtp_server.fail_next(421, "4.7.0 Too many messages, slow down", stage="MAIL")
    assert drain(daemon._outbox(daemon.accounts[0])) == 0
    (pause,) = rows(daemon.engine, store.SEND_PAUSE)
    assert pause.in_a_row == 2 and store.utc(pause.paused_until) == clock() + timedelta(seconds=120)

    clock.advance(121)
    assert drain(daemon._outbox(daemon.accounts[0])) == 8
    assert outbox_states(daemon.engine) == {"sent": 8}
    assert rows(daemon.engine, store.SEND_PAUSE) == []                # the server takes mail again


def test_a_plain_4xx_still_retries_only_that_row(tmp_path: Path, dovecot: DovecotServer,
                                                 fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                 smtp_server: SandboxSMTP) -> None:
    clock = Clock()
    daemon = queued_daemon(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, 4, 37, clock)
    smtp_server.fail_next(452, "4.2.2 Mailbox full", stage="DATA")
    assert drain(daemon._outbox(daemon.accounts[0])) == 4
    assert outbox_states(daemon.engine) == {"sent": 3, "queued": 1}
    assert rows(daemon.engine, store.SEND_PAUSE) == []


def test_status_shows_the_rate_the_limits_a_pause_and_the_time_to_drain(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    (tmp_path / "imap-password").write_text(fresh_mailbox.password + "\n")
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mailbridge.db", seller=fresh_mailbox.user, staff=staff.user,
        imap_port=fresh_mailbox.port, smtp_port=smtp_server.port, imap_password_file="imap-password",
        sections={"account": {"forward_existing": True},
                  "smtp": {"sent_copies": "none", "max_per_minute": 10, "max_per_day": 1000}}))
    daemon = Daemon(load_settings(config), clock=clock)
    queue_notifications(daemon, dovecot, fresh_mailbox, 30, seed=39)
    assert drain(daemon._outbox(daemon.accounts[0])) == 10
    clock.advance(15)

    def status() -> dict[str, Any]:
        assert main(["-c", str(config), "status", "--json"], clock=clock) == 0
        (acct,) = json.loads(capsys.readouterr().out)["accounts"]
        return dict(acct["sending"])

    sending = status()
    assert sending == {
        "sent_last_minute": 10, "sent_last_day": 10, "limit_per_minute": 10, "limit_per_day": 1000, "queued": 20,
        "may_send_now": 0, "limited_until": iso(clock() + timedelta(seconds=45)), "paused_until": None,
        "pause_reason": None, "drain_seconds": 45.0 + 20 * 6.0,   # the minute's end, then 10 a minute
    }
    assert main(["-c", str(config), "status"], clock=clock) == 0
    human = capsys.readouterr().out
    assert "sending: 10 in the last minute (limit 10), 10 in the last 24 h (limit 1,000)" in human
    assert "20 queued: sent in about 3 min at the limits" in human

    with daemon.engine.begin() as conn:
        store.pause_sending(conn, "acme", clock() + timedelta(seconds=120), "451 4.7.0 rate exceeded", 1)
    sending = status()
    assert sending["paused_until"] == iso(clock() + timedelta(seconds=120))
    assert sending["drain_seconds"] == 45.0 + 120 + 20 * 6.0
    assert main(["-c", str(config), "status"], clock=clock) == 0
    assert "paused until" in capsys.readouterr().out
