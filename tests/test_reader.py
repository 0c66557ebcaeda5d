"""The backlog reader process, against a real Dovecot on 127.0.0.1: it speeds a backlog up,
and whatever happens to it, every message is recorded once."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge import ingest, reader, samples, store
from bridge.daemon import Daemon
from bridge.ingest import AccountIngest
from bridge.reader import BacklogReader
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP

from bridgekit import make_settings, outbox_states, rows

MESSAGES, BATCH = 40, 5   # 8 batches: read ahead (more than 3 batches)


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[BacklogReader]:
    """Every BacklogReader the ingest starts, to look at its process afterwards."""
    started: list[BacklogReader] = []

    class Recorded(BacklogReader):
        def __init__(self, job: Any) -> None:
            super().__init__(job)
            started.append(self)

    monkeypatch.setattr(ingest, "BacklogReader", Recorded)
    return started


def fill(dovecot: DovecotServer, seller: SandboxAccount, n: int = MESSAGES) -> list[bytes]:
    mails = samples.buyer_backlog(n, seller_address=seller.user, seed=11, buyers=7)
    with dovecot.imap_client(seller.user) as client:
        client.multiappend("INBOX", mails)
    return mails


def settings_for(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
                 **imap: Any) -> Any:
    return make_settings(tmp_path, seller, staff, smtp, account={"forward_existing": True},
                         imap={"batch_size": BATCH, "processed_folder": "Processed", **imap})


def assert_all_recorded_once(daemon: Daemon, dovecot: DovecotServer, seller: SandboxAccount,
                             n: int = MESSAGES) -> None:
    messages = rows(daemon.engine, store.MESSAGE)
    assert sorted(m.uid for m in messages) == list(range(1, n + 1))          # every UID, once
    assert {m.disposition for m in messages} == {"forwarded"}
    notifications = rows(daemon.engine, store.OUTBOX)
    assert sorted(o.source_message_id for o in notifications) == sorted(m.id for m in messages)  # one each
    assert dovecot.uids(seller.user, "INBOX") == []
    assert len(dovecot.uids(seller.user, "Processed")) == n


def ingest_backlog(tmp_path: Path, dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount,
                   smtp: SandboxSMTP, caplog: pytest.LogCaptureFixture, n: int = MESSAGES,
                   level: int = logging.WARNING) -> tuple[Daemon, Any]:
    """Fill the mailbox with ``n`` buyer messages and run one ingest pass; returns the daemon and its stats."""
    fill(dovecot, seller, n)
    daemon = Daemon(settings_for(tmp_path, seller, staff, smtp))
    with caplog.at_level(level, logger="bridge"):
        stats = AccountIngest(daemon.engine, daemon.accounts[0]).run_once()
    assert stats.recorded == n
    return daemon, stats


def test_a_backlog_is_read_ahead_by_a_helper_process(tmp_path: Path, dovecot: DovecotServer,
                                                     fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                     smtp_server: SandboxSMTP, readers: list[BacklogReader],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    daemon, stats = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog, level=logging.INFO)
    assert stats.forwarded == MESSAGES
    assert len(readers) == 1 and readers[0].process.returncode == 0     # it finished, and is gone
    assert f"reading {MESSAGES - BATCH} messages ahead" in caplog.text
    assert "fetching the remaining" not in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)
    assert outbox_states(daemon.engine) == {"queued": MESSAGES}


@pytest.mark.parametrize("backlog,read_ahead", [(3 * BATCH, True), (MESSAGES, False)])
def test_small_backlogs_and_read_ahead_off_use_one_connection(tmp_path: Path, dovecot: DovecotServer,
                                                              fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                              smtp_server: SandboxSMTP,
                                                              readers: list[BacklogReader], backlog: int,
                                                              read_ahead: bool) -> None:
    fill(dovecot, fresh_mailbox, backlog)
    daemon = Daemon(settings_for(tmp_path, fresh_mailbox, staff, smtp_server, read_ahead=read_ahead))
    assert AccountIngest(daemon.engine, daemon.accounts[0]).run_once().recorded == backlog
    assert readers == []
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox, backlog)


def test_reader_that_cannot_log_in_leaves_the_work_to_the_main_connection(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # As when the server refuses a second connection (a per-user connection limit).
    real_job = ingest.ReaderJob

    def refused_job(imap: Any, *args: Any) -> Any:
        return real_job(dataclasses.replace(imap, password=dataclasses.replace(imap.password, value="wrong")),
                        *args)

    monkeypatch.setattr(ingest, "ReaderJob", refused_job)
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert "the backlog reader failed: ImapError: IMAP login" in caplog.text
    assert f"fetching the remaining {MESSAGES - BATCH} messages on the main connection" in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)


def test_reader_that_finds_another_uidvalidity_leaves_the_work_to_the_main_connection(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_job = ingest.ReaderJob

    def stale_job(imap: Any, uidvalidity: int, *args: Any) -> Any:
        return real_job(imap, uidvalidity + 1, *args)   # as if the folder were rebuilt meanwhile

    monkeypatch.setattr(ingest, "ReaderJob", stale_job)
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert "the backlog reader failed: UIDVALIDITY of INBOX changed" in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)


def test_reader_killed_mid_backlog_loses_and_repeats_nothing(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    total = 200   # 39 helper batches: far more than a pipe holds, so it cannot be done when killed
    delivered = 0

    class KilledAtFirstBatch(BacklogReader):
        def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
            nonlocal delivered
            for batch in super().__iter__():
                if delivered == 0:
                    os.kill(self.pid, signal.SIGKILL)
                delivered += 1
                yield batch

    monkeypatch.setattr(ingest, "BacklogReader", KilledAtFirstBatch)
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog, n=total)
    # Batches already in the pipe still arrive; the rest is fetched on the main connection.
    assert 1 <= delivered < total // BATCH - 1
    assert "ended unexpectedly (killed by signal 9); fetching the remaining" in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox, total)


def test_stopping_mid_backlog_stops_the_reader(tmp_path: Path, dovecot: DovecotServer,
                                              fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                              smtp_server: SandboxSMTP, readers: list[BacklogReader],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fill(dovecot, fresh_mailbox)
    daemon = Daemon(settings_for(tmp_path, fresh_mailbox, staff, smtp_server))
    worker = AccountIngest(daemon.engine, daemon.accounts[0])
    stop = threading.Event()
    real_move = worker._move

    def move_then_stop(*args: Any) -> None:
        real_move(*args)
        if worker.stats.recorded >= 2 * BATCH:
            stop.set()   # as SIGTERM would, while the reader is still ahead

    monkeypatch.setattr(worker, "_move", move_then_stop)
    from bridge.imap import MailboxSession

    with MailboxSession(daemon.accounts[0].settings.imap) as session:
        worker._ensure_folders(session)
        worker.sync(session, stop)
    assert worker.stats.recorded == 2 * BATCH
    assert len(readers) == 1 and readers[0].process.poll() is not None   # not left running
    # The rest is recorded by the next pass, once.
    assert AccountIngest(daemon.engine, daemon.accounts[0]).run_once().recorded == MESSAGES - 2 * BATCH
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)


@pytest.mark.parametrize("folder", ["INBOX", "Käufer \"2026\" Eingang"])
def test_read_only_session_fetches_what_the_main_session_fetches(dovecot: DovecotServer,
                                                                fresh_mailbox: SandboxAccount, folder: str) -> None:
    from bridge.config import ImapSettings, Secret
    from bridge.imap import MailboxSession
    from bridge.rawimap import ReadOnlySession

    mails = samples.buyer_backlog(12, seller_address=fresh_mailbox.user, seed=2)
    mails[3] = mails[3] + b"x" * 2_000_000          # over the limit below: header only
    with dovecot.imap_client(fresh_mailbox.user) as client:
        if folder != "INBOX":
            client.create_folder(folder)
        client.multiappend(folder, mails)
        client.select_folder(folder)
        client.delete_messages([5])
        client.expunge()                              # UID 5 is gone: asked for, not returned
    imap = ImapSettings(host="127.0.0.1", port=fresh_mailbox.port, security="none", username=fresh_mailbox.user,
                        password=Secret(fresh_mailbox.password))
    with MailboxSession(imap) as main, ReadOnlySession(imap) as reader:
        validity = main.select(folder).uidvalidity
        assert reader.examine(folder) == validity
        uids = list(range(1, 14))                     # 13 does not exist either
        expected = list(main.fetch(uids, 1_048_576))
        assert reader.fetch(uids, 1_048_576) == expected
        assert [m.uid for m in expected] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
        assert [m.uid for m in expected if m.header_only] == [4]
        assert reader.uids_between(2, 7) == [2, 3, 4, 6, 7]
    with dovecot.imap_client(fresh_mailbox.user) as client:   # EXAMINE and BODY.PEEK: nothing marked \Seen
        client.select_folder(folder)
        assert all(b"\\Seen" not in flags for flags in client.get_flags(client.search(["ALL"])).values())


@pytest.mark.parametrize("data,expected", [
    # Dovecot's order: UID before the body.
    ([(b"1 (UID 7 BODY[] {5}", b"hello"), b")", (b"2 (UID 9 BODY[] {3}", b"abc"), b")"], {7: b"hello", 9: b"abc"}),
    # UID after the body (RFC 3501 allows any order; some servers do this).
    ([(b"1 (BODY[] {5}", b"hello"), b" UID 7)"], {7: b"hello"}),
    # An unsolicited FLAGS update from another session in between.
    ([b"3 (FLAGS (\\Seen) UID 12)", (b"1 (UID 7 BODY[] {2}", b"hi"), b")"], {7: b"hi"}),
    # Header-only fetches answer BODY[HEADER], not BODY[].
    ([(b"1 (UID 7 BODY[HEADER] {2}", b"hi"), b")"], {}),
    # No UID anywhere: not guessed from the sequence number (MOVEs elsewhere shift those).
    ([(b"1 (BODY[] {2}", b"hi"), b")"], {}),
])
def test_fetch_responses_are_read_by_uid_wherever_it_stands(data: list[Any], expected: dict[int, bytes]) -> None:
    from bridge.rawimap import literals_by_uid

    assert literals_by_uid(data, b"BODY[]") == expected


def test_no_process_for_the_reader_means_one_connection_does_it_all(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import subprocess

    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")   # as under a systemd TasksMax limit

    monkeypatch.setattr(subprocess, "Popen", no_process)
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert "cannot start the backlog reader: [Errno 11] Resource temporarily unavailable" in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)
    assert reader._slots.acquire(blocking=False)   # the slot was given back
    reader._slots.release()


def test_readers_are_limited_per_daemon(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                        staff: SandboxAccount, smtp_server: SandboxSMTP,
                                        readers: list[BacklogReader], monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    # As when other accounts' backlogs hold every helper: this one reads on its own connection.
    monkeypatch.setattr(reader, "_slots", threading.BoundedSemaphore(1))
    assert reader._slots.acquire(blocking=False)
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog, level=logging.INFO)
    assert readers == []
    assert "backlog reader(s) are busy; fetching 35 messages on the main connection" in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)


# --- the spare helper `mailbridge run` starts before its imports -------------------------------------

@pytest.fixture
def no_spare() -> Iterator[None]:
    reader.discard_spare()
    yield
    reader.discard_spare()


def spare_process() -> Any:
    return reader._spare[0] if reader._spare else None


def test_the_first_backlog_takes_the_spare_helper(tmp_path: Path, dovecot: DovecotServer,
                                                  fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                  smtp_server: SandboxSMTP, readers: list[BacklogReader],
                                                  caplog: pytest.LogCaptureFixture, no_spare: None) -> None:
    reader.prestart()
    spare = spare_process()
    assert spare is not None and spare.poll() is None
    reader.prestart()
    assert spare_process() is spare                      # one spare, not one per call
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert [r.pid for r in readers] == [spare.pid]       # the spare did the reading
    assert spare_process() is None
    assert spare.wait(10) == 0                           # and ended by itself when done
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)


def test_a_spare_nobody_needs_is_stopped_at_the_end_of_the_pass(tmp_path: Path, dovecot: DovecotServer,
                                                                fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                                smtp_server: SandboxSMTP, no_spare: None) -> None:
    import asyncio

    fill(dovecot, fresh_mailbox, 3)                      # one batch: no reading ahead
    daemon = Daemon(settings_for(tmp_path, fresh_mailbox, staff, smtp_server))
    reader.prestart()
    spare = spare_process()
    report = asyncio.run(daemon.run_once(send=False))
    assert report.ingest[daemon.accounts[0].name].recorded == 3
    assert spare_process() is None and spare.poll() is not None


def test_a_spare_without_a_job_exits_by_itself(monkeypatch: pytest.MonkeyPatch, no_spare: None) -> None:
    import subprocess
    import sys

    # The helper's own idle limit, shortened: it has imported what it needs, waited, and left.
    code = ("import sys; from bridge import reader; reader.SPARE_IDLE_SECONDS = 0.5; reader.main(); "
            "print('exited', file=sys.stderr)")
    idle = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert idle.wait(30) == 0                          # its stdin still open: no job came, and it left
        assert idle.stderr is not None and idle.stderr.read().decode().strip() == "exited"
    finally:
        idle.kill()
        for pipe in (idle.stdin, idle.stderr):
            pipe.close()                                   # type: ignore[union-attr]
    # A closed pipe (the daemon is gone, or closed it) ends it at once too.
    proc = subprocess.run([sys.executable, "-m", "bridge.reader"], input=b"", capture_output=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == b""


def test_an_old_or_dead_spare_is_not_taken(monkeypatch: pytest.MonkeyPatch, no_spare: None) -> None:
    reader.prestart()
    spare = spare_process()
    spare.kill()
    spare.wait(10)
    assert reader._take_spare() is None                 # dead: a fresh helper is started instead
    reader.prestart()
    spare = spare_process()
    monkeypatch.setattr(reader, "_SPARE_TAKE_SECONDS", 0.0)
    assert reader._take_spare() is None                 # it may be about to leave: not trusted with a job
    assert spare.returncode is not None and spare_process() is None   # stopped and reaped


# --- the head start: a spare reads the first account's new mail while the daemon starts --------------

def head_start(settings: Any, checkpoint: tuple[int, int] | None = None, **imap: Any) -> None:
    """What `mailbridge run` does before its imports: a spare, told where the checkpoint stands."""
    from bridge.prepare import context

    acct = settings.accounts[0]
    checkpoint = checkpoint or reader.checkpoint_hint(settings.database.url, acct.name, acct.imap.folder)
    assert checkpoint is not None
    reader.prestart()
    reader.give_head_start(reader.ReadAhead(dataclasses.replace(acct.imap, **imap), context(acct, b""), *checkpoint))


def origins_verify(daemon: Daemon) -> None:
    """Every queued notification carries an origin header this account made for its Message-ID."""
    from email import message_from_bytes

    from bridge import tokens

    acct = daemon.accounts[0]
    for row in rows(daemon.engine, store.OUTBOX):
        msg = message_from_bytes(bytes(row.raw))
        assert tokens.verify_origin(acct.secret, msg["X-Mailbridge-Origin"], row.message_id, acct.name), row.id


def run_with_head_start(tmp_path: Path, dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount,
                        smtp: SandboxSMTP, caplog: pytest.LogCaptureFixture, wait: float = 1.5,
                        **hint: Any) -> tuple[Daemon, BacklogReader | None]:
    import time

    settings = settings_for(tmp_path, seller, staff, smtp)
    head_start(settings, **hint)
    time.sleep(wait)   # the daemon's start-up, during which the spare reads
    daemon = Daemon(settings)
    started: list[BacklogReader] = []
    real = ingest.BacklogReader

    class Recorded(real):  # type: ignore[misc, valid-type]
        def __init__(self, job: Any) -> None:
            super().__init__(job)
            started.append(self)

    ingest.BacklogReader = Recorded   # type: ignore[misc]
    try:
        with caplog.at_level(logging.INFO, logger="bridge"):
            assert AccountIngest(daemon.engine, daemon.accounts[0]).run_once().recorded >= MESSAGES - 10
    finally:
        ingest.BacklogReader = real   # type: ignore[misc]
    return daemon, (started[0] if started else None)


def test_a_spare_with_a_head_start_has_read_the_backlog_when_the_job_comes(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture, no_spare: None) -> None:
    fill(dovecot, fresh_mailbox)
    daemon, used = run_with_head_start(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert used is not None and used.ahead
    assert f"reading {MESSAGES} messages ahead" in caplog.text                  # the first batch too
    assert 0 < used.used_head_start <= MESSAGES                                  # read before the job came
    assert "of them were read before the daemon had started" in caplog.text
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)
    origins_verify(daemon)                                                       # completed with the secret


def test_mail_that_arrives_while_the_spare_reads_is_not_passed_over(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture, no_spare: None) -> None:
    """The spare's connection saw the mailbox before this mail came; the job must see it all the same."""
    import time

    fill(dovecot, fresh_mailbox)
    settings = settings_for(tmp_path, fresh_mailbox, staff, smtp_server)
    head_start(settings)
    time.sleep(1.5)                                   # it has read the 40 messages (8 batches) by now
    late = samples.buyer_backlog(7, seller_address=fresh_mailbox.user, seed=13, buyers=2)
    with dovecot.imap_client(fresh_mailbox.user) as client:
        client.multiappend("INBOX", late)            # UIDs 41-47: across a batch boundary
    daemon = Daemon(settings)
    assert AccountIngest(daemon.engine, daemon.accounts[0]).run_once().recorded == MESSAGES + 7
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox, MESSAGES + 7)


@pytest.mark.parametrize("hint,reused", [
    ({"checkpoint": 20}, True),            # a checkpoint ahead of the real one: the rest is fetched in the job
    ({"folder": "Archive"}, False),        # another mailbox: what it read is not used
])
def test_a_head_start_only_saves_time(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                      staff: SandboxAccount, smtp_server: SandboxSMTP,
                                      caplog: pytest.LogCaptureFixture, no_spare: None, hint: dict[str, Any],
                                      reused: bool) -> None:
    fill(dovecot, fresh_mailbox)
    if "checkpoint" in hint:
        hint = {"checkpoint": (dovecot.uidvalidity(fresh_mailbox.user), hint["checkpoint"])}
    if "folder" in hint:
        with dovecot.imap_client(fresh_mailbox.user) as client:
            client.create_folder("Archive")
            client.multiappend("Archive", samples.buyer_backlog(MESSAGES, seller_address=fresh_mailbox.user,
                                                                 seed=12, buyers=3))
    daemon, used = run_with_head_start(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog, **hint)
    assert used is not None
    assert (0 < used.used_head_start <= MESSAGES - 20) if reused else used.used_head_start == 0
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)
    origins_verify(daemon)


def test_a_head_start_under_another_uidvalidity_is_not_used(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        no_spare: None) -> None:
    fill(dovecot, fresh_mailbox)
    real_job = ingest.ReaderJob

    def other_validity(imap: Any, uidvalidity: int, *args: Any) -> Any:
        return real_job(imap, uidvalidity + 1, *args)   # the folder was rebuilt after the spare read it

    monkeypatch.setattr(ingest, "ReaderJob", other_validity)
    daemon, used = run_with_head_start(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert "the backlog reader failed: UIDVALIDITY of INBOX changed" in caplog.text
    assert used is not None and used.used_head_start == 0
    assert_all_recorded_once(daemon, dovecot, fresh_mailbox)


def test_mail_with_our_origin_header_is_classified_once_the_secret_is_known(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture, no_spare: None) -> None:
    """Our own mail in the backlog is read ahead without the secret and recognised with it."""
    from datetime import datetime, timezone

    from bridge import compose, tokens

    settings = settings_for(tmp_path, fresh_mailbox, staff, smtp_server)
    secret = store.token_secret(Daemon(settings).engine, None)
    mails = samples.buyer_backlog(MESSAGES, seller_address=fresh_mailbox.user, seed=11, buyers=7)
    own_id = "mb.own@acme.example"
    own = compose.build_mail(account="acme", origin=tokens.make_origin(secret, "acme", own_id), message_id=own_id,
                             date=datetime.now(timezone.utc), from_name="x", from_addr=fresh_mailbox.user,
                             to_addr="a@b.example",
                             subject="ours", text="ours\n").raw
    mails[7] = own
    with dovecot.imap_client(fresh_mailbox.user) as client:
        client.multiappend("INBOX", mails)
    daemon, used = run_with_head_start(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert used is not None and used.used_head_start > 0
    kinds = {m.uid: m.kind for m in rows(daemon.engine, store.MESSAGE)}
    assert kinds[8] == "own" and sum(1 for k in kinds.values() if k == "buyer") == MESSAGES - 1


def test_checkpoint_hint_reads_what_the_store_holds(tmp_path: Path, dovecot: DovecotServer,
                                                    fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                    smtp_server: SandboxSMTP, caplog: pytest.LogCaptureFixture,
                                                    no_spare: None) -> None:
    url = f"sqlite:///{tmp_path}/mailbridge.db"
    assert reader.checkpoint_hint(url, "acme", "INBOX") == (0, 0)              # no database yet
    assert reader.checkpoint_hint("postgresql://x@127.0.0.1/db", "acme", "INBOX") is None
    assert reader.checkpoint_hint("sqlite:///:memory:", "acme", "INBOX") is None
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    with daemon.engine.begin() as conn:
        checkpoint = store.mailbox_checkpoint(conn, "acme", "INBOX")
    assert checkpoint is not None
    assert reader.checkpoint_hint(url, "acme", "INBOX") == (checkpoint.uidvalidity, checkpoint.last_uid)
    assert reader.checkpoint_hint(url, "acme", "Other") == (0, 0)
    assert reader.checkpoint_hint(url, "other", "INBOX") == (0, 0)
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 100)
    assert reader.checkpoint_hint(f"sqlite:///{tmp_path}/garbage.db", "acme", "INBOX") is None


def test_messages_to_the_helper_time_out_and_end_with_the_pipe() -> None:
    import os

    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as pipe:
        reader._write_message(pipe, {"a": 1})
        assert reader._read_message(read_fd, 1) == {"a": 1}
        assert reader._read_message(read_fd, 0.05) is None                      # nothing more: times out
    assert reader._read_message(read_fd, 1) is None                             # closed: none
    os.close(read_fd)


def big_backlog_job(dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
                    tmp_path: Path) -> reader.ReaderJob:
    """A job over MESSAGES buyer messages of 8 KB each: a batch of them is more than the pipe holds."""
    from bridge import prepare

    with dovecot.imap_client(seller.user) as client:
        client.multiappend("INBOX", samples.buyer_backlog(MESSAGES, seller_address=seller.user, seed=11, size=8000))
    acct = settings_for(tmp_path, seller, staff, smtp).accounts[0]
    return reader.ReaderJob(acct.imap, dovecot.uidvalidity(seller.user), tuple(range(1, MESSAGES + 1)),
                            prepare.context(acct, b""))


@pytest.mark.parametrize("ahead,ahead_bytes,reads_before", [
    (reader.AHEAD_BATCHES, reader.AHEAD_BYTES, MESSAGES),    # all of it
    (2, reader.AHEAD_BYTES, 4 * BATCH),    # one batch being sent, two waiting, one read that waits to be
    (8, 1, 3 * BATCH),                     # bytes bound it: one batch may always wait
])
def test_the_helper_reads_on_while_the_daemon_records(dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                                      staff: SandboxAccount, smtp_server: SandboxSMTP,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      ahead: int, ahead_bytes: int, reads_before: int) -> None:
    """Nobody takes its batches for a while (the daemon is recording): it reads on, as far as its bounds
    let it, then sends them all in order."""
    import pickle
    import time

    from bridge import prepare

    monkeypatch.setattr(reader, "AHEAD_BATCHES", ahead)
    monkeypatch.setattr(reader, "AHEAD_BYTES", ahead_bytes)
    job = big_backlog_job(dovecot, fresh_mailbox, staff, smtp_server, tmp_path)
    reads: list[int] = []
    real_read = prepare.read
    monkeypatch.setattr(prepare, "read", lambda ctx, item: reads.append(item.uid) or real_read(ctx, item))
    read_fd, write_fd = os.pipe()   # 64 KiB: less than one batch of these
    with os.fdopen(write_fd, "wb") as out, os.fdopen(read_fd, "rb") as pipe:
        helper = threading.Thread(target=reader.run_job, args=(job, out))
        helper.start()
        deadline = time.monotonic() + 30
        while len(reads) < reads_before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)                                       # and then no further
        assert len(reads) == reads_before, reads            # without anything taken
        received = []
        while True:
            kind, payload = pickle.load(pipe)
            received.append(kind)
            if kind != "batch":
                break
            last_uid, batch = payload
            assert [p.item.uid for p in batch] == list(range(last_uid - BATCH + 1, last_uid + 1))
        helper.join(10)
    assert received == ["batch"] * (MESSAGES // BATCH) + ["done"]
    assert sorted(reads) == list(range(1, MESSAGES + 1))                  # each read once


def test_the_batch_pipe_is_widened_where_the_system_allows() -> None:
    import fcntl

    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("pipe sizes are Linux's")
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as pipe:
        reader._widen(pipe)
        size = fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ)
    os.close(write_fd)
    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert size == reader.PIPE_BYTES or (allowed < reader.PIPE_BYTES and os.geteuid() != 0)   # else: left as is


@pytest.mark.parametrize("ahead_bytes,read", [(reader.AHEAD_BYTES, MESSAGES), (1, BATCH)])
def test_a_head_start_holds_no_more_than_its_bytes(dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                                   staff: SandboxAccount, smtp_server: SandboxSMTP,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   ahead_bytes: int, read: int) -> None:
    from bridge import prepare

    monkeypatch.setattr(reader, "AHEAD_BATCHES", MESSAGES // BATCH)
    monkeypatch.setattr(reader, "AHEAD_BYTES", ahead_bytes)
    fill(dovecot, fresh_mailbox)
    acct = settings_for(tmp_path, fresh_mailbox, staff, smtp_server).accounts[0]
    head_start = reader._HeadStart(reader.ReadAhead(acct.imap, prepare.context(acct, b""), 0, 0))
    head_start._thread.join(30)
    try:
        assert not head_start.failed
        assert sorted(head_start.found) == list(range(1, read + 1))
    finally:
        head_start.close()


@pytest.mark.parametrize("how", [
    "stops reading",
    # Not an OSError: a bug, whose traceback the sending thread leaves on stderr as it ends.
    pytest.param("cannot be written to",
                 marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")),
])
def test_a_helper_whose_daemon_stops_reading_ends(dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                                  staff: SandboxAccount, smtp_server: SandboxSMTP,
                                                  tmp_path: Path, how: str) -> None:
    """Mid-backlog, its reading waiting for room to send: it ends, it does not wait for ever."""
    import time

    job = big_backlog_job(dovecot, fresh_mailbox, staff, smtp_server, tmp_path)
    read_fd, write_fd = os.pipe()
    out = os.fdopen(write_fd, "wb")
    if how == "cannot be written to":
        out.close()                        # writing raises ValueError, not an OSError
    helper = threading.Thread(target=reader.run_job, args=(job, out))
    helper.start()
    time.sleep(1)                          # it has read as far as it may, and waits
    os.close(read_fd)                      # the daemon is gone
    helper.join(20)
    assert not helper.is_alive()
    if not out.closed:
        out.close()


def test_the_helper_is_never_given_the_secret(tmp_path: Path, dovecot: DovecotServer,
                                              fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                              smtp_server: SandboxSMTP, readers: list[BacklogReader],
                                              caplog: pytest.LogCaptureFixture) -> None:
    daemon, _ = ingest_backlog(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, caplog)
    assert readers and all(r.job.prepare.secret == b"" for r in readers)
    assert daemon.accounts[0].secret                          # the daemon has one, and signs with it
    origins_verify(daemon)


class _Scripted:
    """What _exchange uses of imaplib: send() and the file it reads responses from."""

    def __init__(self, answer: bytes) -> None:
        import io

        self.sent = b""
        self.file = io.BufferedReader(io.BytesIO(answer))   # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.sent += data


def _session(answer: bytes) -> Any:
    from bridge.rawimap import ReadOnlySession

    session = ReadOnlySession.__new__(ReadOnlySession)
    session._tag = 0
    session.imap = _Scripted(answer)
    return session


def test_fetch_responses_are_read_as_imaplib_shapes_them() -> None:
    from bridge.rawimap import literals_by_uid

    session = _session(b"* 2 EXISTS\r\n"
                       b"* 1 FETCH (UID 5 BODY[] {5}\r\nhello)\r\n"
                       b"* 1 FETCH (FLAGS (\\Seen))\r\n"
                       b"* 2 FETCH (BODY[] {7}\r\nwor\r\nld UID 9)\r\n"
                       b"MBR1 OK FETCH completed\r\n"
                       b"* 3 EXISTS\r\n")
    data = session._exchange("UID FETCH 5,9 (BODY.PEEK[])")
    assert session.imap.sent == b"MBR1 UID FETCH 5,9 (BODY.PEEK[])\r\n"
    assert data == [b"* 2 EXISTS", (b"* 1 FETCH (UID 5 BODY[] {5}", b"hello"), b")", b"* 1 FETCH (FLAGS (\\Seen))",
                    (b"* 2 FETCH (BODY[] {7}", b"wor\r\nld"), b" UID 9)"]
    assert literals_by_uid(data, b"BODY[]") == {5: b"hello", 9: b"wor\r\nld"}
    assert session.imap.file.readline() == b"* 3 EXISTS\r\n"      # nothing read past the command's end


@pytest.mark.parametrize("answer,error", [
    (b"MBR1 NO [SERVERBUG] try later\r\n", "FETCH failed: MBR1 NO [SERVERBUG] try later"),
    (b"MBR1 BAD syntax\r\n", "FETCH failed: MBR1 BAD syntax"),
    (b"* 1 FETCH (UID 5 BODY[] {50}\r\ntoo short", "closed the connection in the middle of a message"),
    (b"* 1 FETCH (UID 5 RFC822.SIZE 10)\r\n", "closed the connection during FETCH"),
    (b"* " + b"x" * 1_000_001 + b"\r\n", "a line of over 1000000 bytes"),
])
def test_fetch_responses_that_go_wrong_say_how(answer: bytes, error: str) -> None:
    from bridge.imap import ImapError

    with pytest.raises(ImapError, match=re.escape(error)):
        _session(answer)._exchange("UID FETCH 5 (BODY.PEEK[])")


def test_no_head_start_for_a_database_url_with_parameters(tmp_path: Path) -> None:
    (tmp_path / "mb.db").write_bytes(b"")
    assert reader.checkpoint_hint(f"sqlite:///{tmp_path}/mb.db?timeout=5", "acme", "INBOX") is None
