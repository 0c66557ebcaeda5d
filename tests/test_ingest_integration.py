"""Ingest -> thread -> forward, against a real Dovecot and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from bridgekit import Clock, make_settings, outbox_states, rows, wait_until

from bridge import store
from bridge.adapters.smtp import SmtpConnection
from bridge.domain import tokens
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.services.account import AccountContext
from bridge.workers.ingest import AccountIngest
from bridge.workers.supervisor import Daemon


def backlog(seller: SandboxAccount, n: int, seed: int = 1, buyers: int | None = None) -> list[bytes]:
    return samples.buyer_backlog(n, seller_address=seller.user, seed=seed, buyers=buyers)


def run_once(daemon: Daemon, send: bool = True):  # type: ignore[no-untyped-def]
    return asyncio.run(daemon.run_once(send=send))


def parsed(item):  # type: ignore[no-untyped-def]
    return message_from_bytes(item.data, policy=policy.default)


def test_buyer_mail_is_forwarded_threaded_and_signed(tmp_path: Path, dovecot: DovecotServer,
                                                     fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                     smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server,
                             imap={"processed_folder": "Processed"}, account={"forward_existing": True})
    mails = backlog(fresh_mailbox, 3, buyers=2)  # buyer A, buyer B, buyer A again
    for raw in mails:
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = run_once(daemon)
    assert report.ingest["acme"].forwarded == 3
    got = smtp_server.wait_for(3)
    assert [r.rcpt_tos for r in got] == [(staff.user,)] * 3
    first, second, followup = (parsed(r) for r in got)

    # Reply-To carries a signed token naming the conversation; both mails of buyer A share it.
    local = str(first["Reply-To"]).split("@")[0]
    token = local.split("+", 1)[1]
    conv_a = tokens.verify_reply_token(daemon.accounts[0].secret, "acme", token)
    assert conv_a is not None
    assert str(followup["Reply-To"]) == str(first["Reply-To"])
    assert str(second["Reply-To"]) != str(first["Reply-To"])
    # The follow-up threads under the first notification in the staff client.
    assert str(followup["In-Reply-To"]) == str(first["Message-ID"])
    assert str(first["Message-ID"]) in str(followup["References"])
    assert f"[MB-{conv_a}]" in str(first["Subject"])
    assert "inquiry from Amazon customer" in str(first["Subject"])
    # Marked as ours, never answered by auto-responders.
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["X-Mailbridge-Origin"]
    body = first.get_content()
    question = samples.QUESTIONS
    assert any(q in body for q in question)
    assert "Begin message" not in body and "commMgrTok" not in body  # the buyer's words, not Amazon's frame
    # Recorded, then moved out of the INBOX only after commit.
    assert dovecot.uids(fresh_mailbox.user, "INBOX") == []
    assert len(dovecot.uids(fresh_mailbox.user, "Processed")) == 3
    assert len(rows(daemon.engine, store.CONV)) == 2
    assert outbox_states(daemon.engine) == {"sent": 3}
    assert {r.kind for r in rows(daemon.engine, store.MESSAGE)} == {"buyer"}
    # \Seen is left alone: staff reading the mailbox keep their own flags.
    with dovecot.imap_client(fresh_mailbox.user) as client:
        client.select_folder("Processed")
        flags = client.get_flags(client.search(["ALL"]))
    assert all(b"\\Seen" not in f for f in flags.values())


def test_first_run_records_existing_mail_as_history(tmp_path: Path, dovecot: DovecotServer,
                                                    fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                    smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server)
    old = backlog(fresh_mailbox, 4, seed=2, buyers=2)
    for raw in old[:3]:
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = run_once(daemon)
    assert report.ingest["acme"].history == 3 and report.ingest["acme"].forwarded == 0
    assert smtp_server.received == []
    # A follow-up from a known buyer is forwarded and joins the history's conversation.
    dovecot.append(fresh_mailbox.user, "INBOX", old[3])
    report = run_once(daemon)
    assert report.ingest["acme"].forwarded == 1
    assert len(smtp_server.wait_for(1)) == 1
    assert len(rows(daemon.engine, store.CONV)) == 2
    # Running again finds nothing new.
    report = run_once(daemon)
    assert report.ingest["acme"].recorded == 0
    assert len(smtp_server.received) == 1


def test_every_kind_gets_its_outcome(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                     staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             imap={"max_message_bytes": 1024 * 1024})
    user = fresh_mailbox.user
    domain = user.rpartition("@")[2]
    big = samples.amazon_buyer_message(buyer_alias="bigbuyer12345", buyer_name="Big", order="111-2223334-4445556",
                                       question="see attachment", seller_address=user, message_id="big@x",
                                       padding=1_300_000)
    inputs = {
        "oof": samples.out_of_office(sender=f"jo@{domain}", to=user, message_id="oof@x"),
        "spoof": samples.spoofed_buyer(to=user, message_id="spoof@x"),
        "invoice": samples.unclassified(sender="billing@parcel.example", to=user, message_id="inv@x"),
        "broken": samples.broken_mime(to=user),
        "big": big,
        "buyer": backlog(fresh_mailbox, 1, seed=3)[0],
    }
    for raw in inputs.values():
        dovecot.append(user, "INBOX", raw)
    daemon = Daemon(settings)
    run_once(daemon)
    msgs = {r.uid: r for r in rows(daemon.engine, store.MESSAGE)}
    kinds = [msgs[u].kind if u in msgs else "quarantined" for u in range(1, 7)]
    assert kinds == ["auto_reply", "other", "other", "other", "quarantined", "buyer"]
    # The look-alike domain never becomes a buyer: only the real relay buyer exists.
    assert [b.alias for b in rows(daemon.engine, store.BUYER)] == [msgs[6].buyer_address]
    assert msgs[6].conversation_id is not None and msgs[2].conversation_id is None
    (q,) = rows(daemon.engine, store.QUARANTINE)
    assert q.uid == 5 and "max_message_bytes" in q.reason
    got = smtp_server.wait_for(5)
    subjects = [str(parsed(r)["Subject"]) for r in got]
    # The out-of-office is recorded only; the spoof, the invoice and the broken mail reach staff
    # marked unclassified; the oversized mail is set aside with an alert; the buyer is forwarded.
    assert sum(s.startswith("[UNCLASSIFIED]") for s in subjects) == 3
    assert any(s.startswith("[mailbridge] Message set aside") for s in subjects)
    assert sum("inquiry from Amazon customer" in s and not s.startswith("[") for s in subjects) == 1
    assert len(got) == 5
    # The big message is still in the mailbox, untouched.
    assert 5 in dovecot.uids(user, "INBOX")


def test_uidvalidity_change_resyncs_without_duplicates(tmp_path: Path, dovecot: DovecotServer,
                                                       fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                       smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    mails = backlog(fresh_mailbox, 5, seed=4)
    for raw in mails[:4]:
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    run_once(daemon)
    assert len(smtp_server.wait_for(4)) == 4
    before = dovecot.uidvalidity(fresh_mailbox.user, "INBOX")
    dovecot.recreate_folder(fresh_mailbox.user, "INBOX")       # same mail, new UIDVALIDITY
    assert dovecot.uidvalidity(fresh_mailbox.user, "INBOX") != before
    dovecot.append(fresh_mailbox.user, "INBOX", mails[4])      # and one new message
    report = run_once(daemon)
    assert report.ingest["acme"].duplicates == 4
    assert report.ingest["acme"].forwarded == 1
    got = smtp_server.wait_for(6)
    subjects = [str(parsed(r)["Subject"]) for r in got]
    assert sum("was rebuilt on the server" in s for s in subjects) == 1
    assert len(got) == 6  # 4 + the new one + the resync alert: no buyer message forwarded twice
    forwarded_sources = [r.source_message_id for r in rows(daemon.engine, store.OUTBOX, purpose="staff_notification")]
    assert len(forwarded_sources) == 5


def test_smtp_4xx_is_retried_then_sent(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                       staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    dovecot.append(fresh_mailbox.user, "INBOX", backlog(fresh_mailbox, 1, seed=5)[0])
    clock = Clock()
    daemon = Daemon(settings, clock=clock)
    smtp_server.fail_next(451, "4.3.0 Try again later", times=1)
    run_once(daemon)
    assert smtp_server.received == []
    (row,) = rows(daemon.engine, store.OUTBOX)
    assert row.state == "queued" and row.attempts == 1 and "451" in row.last_error
    run_once(daemon)                       # not due yet: nothing is sent
    assert smtp_server.received == []
    clock.advance(60)
    run_once(daemon)
    assert len(smtp_server.wait_for(1)) == 1
    (row,) = rows(daemon.engine, store.OUTBOX)
    assert row.state == "sent" and row.attempts == 2


def test_smtp_5xx_fails_for_good(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                 staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    dovecot.append(fresh_mailbox.user, "INBOX", backlog(fresh_mailbox, 1, seed=6)[0])
    clock = Clock()
    daemon = Daemon(settings, clock=clock)
    smtp_server.fail_next(550, "5.1.1 No such user", times=1, stage="RCPT")
    run_once(daemon)
    clock.advance(3600)
    run_once(daemon)
    assert smtp_server.received == []
    (row,) = rows(daemon.engine, store.OUTBOX)
    assert row.state == "failed" and row.attempts == 1 and "550" in row.last_error
    with daemon.engine.begin() as conn:
        assert store.account_status(conn, "acme")["outbox"]["failed"] == 1


def test_stop_lets_the_outbox_finish_only_the_message_in_hand(tmp_path: Path, dovecot: DovecotServer,
                                                             fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                             smtp_server: SandboxSMTP) -> None:
    # SIGTERM must not wait for a long queue to drain: systemd kills after TimeoutStopSec.
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    for raw in backlog(fresh_mailbox, 5, seed=13):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    stop = asyncio.Event()

    def stops_after_one_send(acct: AccountContext) -> SmtpConnection:
        conn = SmtpConnection(acct.settings.smtp)
        send = conn.send

        async def send_then_stop(*args: Any, **kwargs: Any) -> None:
            await send(*args, **kwargs)
            stop.set()     # as SIGTERM does, while the first message is in hand

        conn.send = send_then_stop  # type: ignore[method-assign]
        return conn

    daemon = Daemon(settings, smtp_factory=stops_after_one_send)
    run_once(daemon, send=False)
    assert outbox_states(daemon.engine) == {"queued": 5}
    worker = daemon._outbox(daemon.accounts[0])
    asyncio.run(asyncio.wait_for(worker.run(stop, asyncio.Event()), 30))
    assert outbox_states(daemon.engine) == {"sent": 1, "queued": 4}
    assert len(smtp_server.received) == 1


def test_an_unreachable_smtp_server_pauses_the_worker_and_keeps_the_queue_as_it_was(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    # One failed connection says the server is down: trying the next row at once would only
    # fail again, once per queued row (thousands after a backlog), each with an error logged.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             smtp_opts={"port": closed_port}, outbox={"retry_base_seconds": 10})
    for raw in backlog(fresh_mailbox, 5, seed=14):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    attempts = 0

    def counting(acct: AccountContext) -> SmtpConnection:
        conn = SmtpConnection(acct.settings.smtp)
        send = conn.send

        async def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal attempts
            attempts += 1
            await send(*args, **kwargs)

        conn.send = counted  # type: ignore[method-assign]
        return conn

    daemon = Daemon(settings, smtp_factory=counting)
    run_once(daemon, send=False)
    before = {r.id: r.next_attempt_at for r in rows(daemon.engine, store.OUTBOX)}
    worker = daemon._outbox(daemon.accounts[0])

    async def run_briefly() -> None:
        stop, wake = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(worker.run(stop, wake))
        for _ in range(10):           # the ingest thread wakes the worker as mail is recorded
            await asyncio.sleep(0.15)
            wake.set()
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(run_briefly())
    assert attempts == 1
    after = rows(daemon.engine, store.OUTBOX)
    assert {r.state for r in after} == {"queued"} and {r.attempts for r in after} == {0}
    assert {r.id: r.next_attempt_at for r in after} == before     # the queue keeps its order


def _start(daemon: Daemon) -> tuple[asyncio.AbstractEventLoop, asyncio.Event, threading.Thread]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run(stop),), daemon=True)
    thread.start()
    return loop, stop, thread


def _stop(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    assert not thread.is_alive()
    loop.close()


def _wait_first_pass(daemon: Daemon) -> None:
    def fetched() -> bool:
        with daemon.engine.begin() as conn:
            status = store.account_status(conn, "acme")
        return bool(status["mailboxes"] and status["mailboxes"][0]["last_fetch_at"])

    wait_until(fetched, "the daemon to complete a first pass", timeout=10)
    time.sleep(0.2)


def test_idle_delivers_quickly_and_survives_imap_restart(tmp_path: Path, dovecot: DovecotServer,
                                                          fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                          smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, imap={"poll_seconds": 300})
    mails = backlog(fresh_mailbox, 2, seed=8)
    daemon = Daemon(settings)
    loop, stop, thread = _start(daemon)
    try:
        _wait_first_pass(daemon)                   # connected, first pass done: now idling
        dovecot.append(fresh_mailbox.user, "INBOX", mails[0])
        smtp_server.wait_for(1, timeout=10)       # poll is 300 s: only IDLE can explain this
        dovecot.restart()                          # the idling connection dies
        time.sleep(0.5)
        dovecot.append(fresh_mailbox.user, "INBOX", mails[1])
        got = smtp_server.wait_for(2, timeout=30)  # reconnected (backoff 1-2 s) and picked it up
        assert len(got) == 2
    finally:
        _stop(loop, stop, thread)
    assert outbox_states(daemon.engine) == {"sent": 2}


def test_mail_that_arrives_during_a_pass_does_not_wait_for_the_poll(tmp_path: Path, dovecot: DovecotServer,
                                                                   fresh_mailbox: SandboxAccount,
                                                                   staff: SandboxAccount,
                                                                   smtp_server: SandboxSMTP) -> None:
    # A server tells of mail that arrives during a pass in the pass's own command
    # responses, or not at all, and need not repeat it once IDLE begins (Dovecot
    # does not): only looking again before IDLE finds it in less than poll_seconds.
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, imap={"poll_seconds": 300},
                             account={"forward_existing": True})
    first, late = backlog(fresh_mailbox, 2, seed=12)
    dovecot.append(fresh_mailbox.user, "INBOX", first)
    daemon = Daemon(settings)
    ingest: AccountIngest

    def arrives_while_recording() -> None:
        if ingest.stats.recorded == 1 and len(dovecot.uids(fresh_mailbox.user)) == 1:
            dovecot.append(fresh_mailbox.user, "INBOX", late)

    ingest = AccountIngest(daemon.engine, daemon.accounts[0], on_committed=arrives_while_recording)
    stop = threading.Event()
    thread = threading.Thread(target=ingest.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: ingest.stats.recorded >= 2, "two messages recorded", 15)
        assert ingest.stats.recorded == 2
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.parametrize("question,flag", [
    ("Full refund", "[COURTESY REFUND]"),
    ("I will open an A-to-z claim if this is not solved today.", "[A-TO-Z CLAIM]"),
])
def test_courtesy_refund_and_claims_are_flagged_in_the_subject(tmp_path: Path, dovecot: DovecotServer,
                                                               fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                               smtp_server: SandboxSMTP, question: str,
                                                               flag: str) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    dovecot.append(fresh_mailbox.user, "INBOX", samples.amazon_buyer_message(
        buyer_alias="refundbuyer123", buyer_name="Sam", order="111-2223334-4445556", question=question,
        seller_address=fresh_mailbox.user, message_id="flag@email.amazon.com"))
    daemon = Daemon(settings)
    run_once(daemon)
    (got,) = smtp_server.wait_for(1)
    assert str(parsed(got)["Subject"]).startswith(flag)
    (conv,) = rows(daemon.engine, store.CONV)
    assert flag.strip("[]") in conv.flags
