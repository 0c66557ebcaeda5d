"""Bad input and broken pieces, against the real servers: each gets a clear outcome, nothing is lost."""

from __future__ import annotations

import asyncio
import shutil
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from bridgekit import account_block, make_settings, outbox_states, rows

from bridge import store
from bridge.adapters.templates import TemplateError
from bridge.config import parse_settings
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.store.engine import open_database
from bridge.workers.supervisor import Daemon

SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def subjects(smtp: SandboxSMTP) -> list[str]:
    return [str(message_from_bytes(r.data, policy=policy.default)["Subject"]) for r in smtp.received]


@pytest.mark.parametrize("bad", [
    b"\r\n\r\nA body with no header block at all\r\n",
    b"just some text that is not a mail message\r\n",
    b"Subject : space before the colon\r\n\r\nbody\r\n",
])
def test_unreadable_mail_is_quarantined_and_the_rest_goes_on(tmp_path: Path, dovecot: DovecotServer,
                                                             fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                             smtp_server: SandboxSMTP, bad: bytes) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             imap={"processed_folder": "Processed", "quarantine_folder": "Quarantine"})
    good = samples.buyer_backlog(2, seller_address=fresh_mailbox.user, seed=41)
    for raw in (good[0], bad, good[1]):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = asyncio.run(daemon.run_once())
    stats = report.ingest["acme"]
    assert (stats.forwarded, stats.quarantined) == (2, 1)
    (q,) = rows(daemon.engine, store.QUARANTINE)
    assert q.uid == 2 and "not a mail message" in q.reason and bytes(q.raw) == bad   # kept, with the reason
    got = smtp_server.wait_for(3)
    assert len(got) == 3
    assert sum(s.startswith("[mailbridge] Message set aside") for s in subjects(smtp_server)) == 1
    assert dovecot.uids(fresh_mailbox.user, "Quarantine") and len(dovecot.uids(fresh_mailbox.user, "Processed")) == 2
    # The checkpoint is past all three: nothing is fetched again, nothing is told twice.
    asyncio.run(daemon.run_once())
    assert len(smtp_server.received) == 3


def test_our_own_mail_coming_back_is_not_forwarded(tmp_path: Path, dovecot: DovecotServer,
                                                   fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                   smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    dovecot.append(fresh_mailbox.user, "INBOX", samples.buyer_backlog(1, seller_address=fresh_mailbox.user,
                                                                      seed=42)[0])
    daemon = Daemon(settings)
    asyncio.run(daemon.run_once())
    (notification,) = smtp_server.wait_for(1)
    # The staff address forwards to the seller mailbox (a common alias mistake), or a copy bounces back.
    dovecot.append(fresh_mailbox.user, "INBOX", notification.data)
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme"].kinds == {"own": 1}
    assert report.ingest["acme"].forwarded == 0
    assert len(smtp_server.received) == 1


def test_broken_template_stops_the_batch_and_loses_nothing(tmp_path: Path, dovecot: DovecotServer,
                                                           fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                           smtp_server: SandboxSMTP) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    notification = templates / "staff_notification.txt.j2"
    good_text = notification.read_text()
    notification.write_text(good_text + "{{ no_such_variable }}\n")     # an admin's typo
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             daemon={"templates": str(templates)})
    for raw in samples.buyer_backlog(3, seller_address=fresh_mailbox.user, seed=43):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = asyncio.run(daemon.run_once())
    assert "no_such_variable" in report.errors["acme"]                  # said, with the culprit named
    assert rows(daemon.engine, store.MESSAGE) == [] and rows(daemon.engine, store.QUARANTINE) == []
    assert smtp_server.received == []
    notification.write_text(good_text)                                  # fixed: picked up without restart
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme"].forwarded == 3
    assert len(smtp_server.wait_for(3)) == 3


def test_template_error_names_the_file() -> None:
    from bridge.adapters.templates import Templates

    with pytest.raises(TemplateError, match="staff_nothing.subject.j2"):
        Templates(SHIPPED_TEMPLATES).render("staff_nothing", {})


def test_one_daemon_serves_many_accounts(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                         staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    seller_de = dovecot.new_account("sellerde")
    staff_de = dovecot.new_account("staffde")
    settings = parse_settings(
        {"database": {"url": f"sqlite:///{tmp_path}/mailbridge.db"}, "accounts": [
            account_block("acme-us", fresh_mailbox, staff, smtp_server),
            account_block("acme-de", seller_de, staff_de, smtp_server)]},
        tmp_path / "mailbridge.toml", {}, lambda p: "")
    for raw in samples.buyer_backlog(2, seller_address=fresh_mailbox.user, seed=44):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    for raw in samples.buyer_backlog(3, seller_address=seller_de.user, seed=45):
        dovecot.append(seller_de.user, "INBOX", raw)
    daemon = Daemon(settings)
    report = asyncio.run(daemon.run_once())
    assert report.ingest["acme-us"].forwarded == 2 and report.ingest["acme-de"].forwarded == 3
    got = smtp_server.wait_for(5)
    assert sorted(r.rcpt_tos[0] for r in got) == sorted([staff.user] * 2 + [staff_de.user] * 3)
    assert outbox_states(daemon.engine) == {"sent": 5}
    # Each account's mail went out from its own registered address.
    assert {r.mail_from for r in got if r.rcpt_tos[0] == staff_de.user} == {seller_de.user}


def test_missing_processed_folder_is_created(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                             staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             imap={"processed_folder": "Done/Buyers"})
    dovecot.append(fresh_mailbox.user, "INBOX", samples.buyer_backlog(1, seller_address=fresh_mailbox.user)[0])
    asyncio.run(Daemon(settings).run_once())
    assert dovecot.uids(fresh_mailbox.user, "INBOX") == [] and dovecot.uids(fresh_mailbox.user, "Done/Buyers")


def test_a_reply_to_us_does_not_make_its_batch_neighbours_staff_replies(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    daemon = Daemon(settings)
    dovecot.append(fresh_mailbox.user, "INBOX", samples.unclassified(sender="billing@parcel.example",
                                                                     to=fresh_mailbox.user, message_id="inv@x"))
    asyncio.run(daemon.run_once())
    (alert,) = smtp_server.wait_for(1)                     # an unclassified forward: not a buyer conversation
    domain = staff.user.rpartition("@")[2]
    # In one batch: a staff answer to that forward, and a colleague's unrelated mail.
    dovecot.append(fresh_mailbox.user, "INBOX", samples.staff_reply(alert.data, staff=staff.user, text="ok",
                                                                    message_id="s1@x", to=fresh_mailbox.user))
    dovecot.append(fresh_mailbox.user, "INBOX", (
        f"From: Colleague <pat@{domain}>\r\nTo: {fresh_mailbox.user}\r\nSubject: Lunch?\r\n"
        "Message-ID: <lunch@x>\r\n\r\nLunch at noon?\r\n").encode())
    asyncio.run(daemon.run_once())
    by_id = {r.message_id: r for r in rows(daemon.engine, store.MESSAGE)}
    assert by_id["s1@x"].kind == "staff_reply" and by_id["s1@x"].disposition == "explained"
    assert by_id["lunch@x"].kind == "other" and by_id["lunch@x"].disposition == "forwarded"


def test_repeated_4xx_fails_after_max_attempts(tmp_path: Path, dovecot: DovecotServer,
                                               fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                               smtp_server: SandboxSMTP) -> None:
    from bridgekit import Clock

    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             outbox={"max_attempts": 3})
    dovecot.append(fresh_mailbox.user, "INBOX", samples.buyer_backlog(1, seller_address=fresh_mailbox.user)[0])
    clock = Clock()
    daemon = Daemon(settings, clock=clock)
    smtp_server.fail_next(451, "4.3.0 busy", times=5)
    for _ in range(5):
        asyncio.run(daemon.run_once())
        clock.advance(3600)
    (row,) = rows(daemon.engine, store.OUTBOX)
    assert row.state == "failed" and row.attempts == 3 and smtp_server.received == []


def test_smtp_login_refused_keeps_mail_queued(tmp_path: Path, dovecot: DovecotServer,
                                              fresh_mailbox: SandboxAccount, staff: SandboxAccount) -> None:
    from bridgekit import Clock

    with SandboxSMTP(dovecot, auth={fresh_mailbox.user: fresh_mailbox.password}) as smtp:
        def settings_with(password: str):  # type: ignore[no-untyped-def]
            return make_settings(tmp_path, fresh_mailbox, staff, smtp, account={"forward_existing": True},
                                 smtp_opts={"username": fresh_mailbox.user, "password": password})
        for raw in samples.buyer_backlog(3, seller_address=fresh_mailbox.user, seed=47):
            dovecot.append(fresh_mailbox.user, "INBOX", raw)
        clock = Clock()
        asyncio.run(Daemon(settings_with("not-the-password"), clock=clock).run_once())
        engine = open_database(settings_with("x").database.url)
        assert [(r.state, r.attempts) for r in rows(engine, store.OUTBOX)] == [("queued", 0)] * 3  # no attempt used up
        (row, *_) = rows(engine, store.OUTBOX)
        assert "login" in row.last_error and "not-the-password" not in row.last_error
        clock.advance(3600)                                 # the operator fixed the password
        asyncio.run(Daemon(settings_with(fresh_mailbox.password), clock=clock).run_once())
        assert len(smtp.wait_for(3)) == 3
