"""The sandbox servers themselves: real Dovecot and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from imapclient import IMAPClient

from bridge import sandbox
from bridge.sandbox import (
    LOOPBACK,
    SANDBOX_FOLDERS,
    DovecotServer,
    SandboxAccount,
    SandboxDeliveryError,
    SandboxSMTP,
    SandboxStartError,
    SandboxUnavailable,
)


def make_message(to: str, n: int = 0, sender: str = "buyer@sandbox.invalid") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Order question {n}"
    message["Message-ID"] = f"<q{n}.{time.monotonic_ns()}@sandbox.invalid>"
    # A line starting with a dot exercises SMTP dot-stuffing end to end.
    message.set_content(f"Where is my parcel? #{n}\n.leading dot\n")
    return message


def send(server: SandboxSMTP, message: EmailMessage, **kwargs: Any) -> None:
    asyncio.run(
        aiosmtplib.send(message, hostname=server.host, port=server.port, timeout=10, **kwargs)
    )


def wait_for_idle_response(client: IMAPClient, kind: bytes, timeout: float = 5.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        responses = client.idle_check(timeout=max(0.05, deadline - time.monotonic()))
        seen.extend(responses)
        if any(kind in response for response in responses):
            return seen
    raise AssertionError(f"no {kind!r} during IDLE within {timeout} s; got {seen}")


def live_processes_in_group(pgid: int) -> list[int]:
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------- #
# Dovecot
# --------------------------------------------------------------------------- #


def test_fresh_mailbox_is_empty_with_sandbox_folders_and_capabilities(
    dovecot: DovecotServer, fresh_mailbox: SandboxAccount
) -> None:
    assert (fresh_mailbox.host, fresh_mailbox.port) == (LOOPBACK, dovecot.port)
    with IMAPClient(fresh_mailbox.host, fresh_mailbox.port, ssl=False, timeout=10) as client:
        client.login(fresh_mailbox.user, fresh_mailbox.password)
        folders = {name: flags for flags, _sep, name in client.list_folders()}
        capabilities = set(client.capabilities())
        separator = client.namespace().personal[0][1]
    assert set(folders) == set(SANDBOX_FOLDERS)
    assert b"\\Sent" in folders["Sent"]
    assert separator == "/"
    assert {b"IDLE", b"CONDSTORE", b"MOVE", b"UIDPLUS", b"SPECIAL-USE"} <= capabilities
    for folder in SANDBOX_FOLDERS:
        assert dovecot.uids(fresh_mailbox.user, folder) == []


def test_append_returns_uid_and_fetch_returns_the_bytes(
    dovecot: DovecotServer, fresh_mailbox: SandboxAccount
) -> None:
    raw = b"From: a@sandbox.invalid\r\nSubject: one\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"
    date = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    first = dovecot.append(fresh_mailbox.user, "INBOX", raw, flags=[b"\\Seen"], date=date)
    second = dovecot.append(fresh_mailbox.user, "INBOX", raw.replace(b"one", b"two"))

    assert (first, second) == (1, 2)
    assert dovecot.uids(fresh_mailbox.user) == [1, 2]
    assert dovecot.fetch_all(fresh_mailbox.user) == [raw, raw.replace(b"one", b"two")]
    with dovecot.imap_client(fresh_mailbox.user) as client:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch([1, 2], [b"FLAGS", b"INTERNALDATE"])
    assert b"\\Seen" in data[1][b"FLAGS"]
    assert b"\\Seen" not in data[2][b"FLAGS"]
    assert data[1][b"INTERNALDATE"].astimezone(dt.timezone.utc) == date


def test_fresh_mailboxes_do_not_share_mail(dovecot: DovecotServer) -> None:
    first, second = dovecot.new_account(), dovecot.new_account()
    dovecot.append(first.user, "Processed", b"Subject: mine\r\n\r\nx\r\n")
    assert dovecot.uids(first.user, "Processed") == [1]
    assert dovecot.uids(second.user, "Processed") == []
    assert first.user != second.user


def test_wrong_password_is_refused(dovecot: DovecotServer, fresh_mailbox: SandboxAccount) -> None:
    with IMAPClient(fresh_mailbox.host, fresh_mailbox.port, ssl=False, timeout=10) as client:
        with pytest.raises(IMAPClient.Error, match="AUTHENTICATIONFAILED"):
            client.login(fresh_mailbox.user, fresh_mailbox.password + "x")


def test_idle_reports_a_message_appended_by_another_connection(
    dovecot: DovecotServer, fresh_mailbox: SandboxAccount
) -> None:
    with dovecot.imap_client(fresh_mailbox.user) as idler:
        idler.select_folder("INBOX")
        idler.idle()
        started = time.monotonic()
        dovecot.append(fresh_mailbox.user, "INBOX", b"Subject: new\r\n\r\nx\r\n")
        responses = wait_for_idle_response(idler, b"EXISTS")
        elapsed = time.monotonic() - started
        idler.idle_done()
    assert (1, b"EXISTS") in responses
    assert elapsed < 3.0, f"IDLE notification took {elapsed:.2f} s"


def test_restart_keeps_port_and_mail_and_drops_idling_clients(
    dovecot: DovecotServer, fresh_mailbox: SandboxAccount
) -> None:
    raw = b"Subject: survives\r\n\r\nx\r\n"
    dovecot.append(fresh_mailbox.user, "INBOX", raw)
    port = dovecot.port
    idler = dovecot.imap_client(fresh_mailbox.user)
    try:
        idler.select_folder("INBOX")
        idler.idle()
        dovecot.restart()
        try:
            responses = idler.idle_check(timeout=5)
        except (OSError, IMAPClient.AbortError):
            responses = [(b"BYE",)]  # the socket was closed under it: also fine
        assert any(r and r[0] == b"BYE" for r in responses) or responses == [], responses
    finally:
        idler.shutdown()
    assert dovecot.port == port
    assert dovecot.fetch_all(fresh_mailbox.user) == [raw]


def test_stop_kills_every_dovecot_process_and_frees_the_port() -> None:
    server = DovecotServer({"solo@sandbox.invalid": "solo-pass"})
    server.start()
    root, port, pgid = server.root, server.port, server.pid
    assert pgid is not None
    idler = server.imap_client("solo@sandbox.invalid")
    try:
        idler.select_folder("INBOX")
        idler.idle()
        assert len(live_processes_in_group(pgid)) > 2  # master, log, auth, imap ...
        server.close()
        assert live_processes_in_group(pgid) == []
        assert port_is_free(port)
        assert not root.exists()
    finally:
        idler.shutdown()
        server.close()


def test_start_fails_clearly_when_the_port_was_taken() -> None:
    root = Path(tempfile.mkdtemp(prefix="mailbridge-test-"))
    try:
        with DovecotServer({"solo@sandbox.invalid": "solo-pass"}, root=root) as server:
            server.stop()
            with socket.socket() as squatter:
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                squatter.bind((LOOPBACK, server.port))
                squatter.listen()
                with pytest.raises(SandboxStartError, match=f"{LOOPBACK}:{server.port} is in use"):
                    server.start()
            server.start()  # the port is free again
            assert server.uids("solo@sandbox.invalid") == []
        assert (root / "log" / "dovecot.log").exists()  # a root given by the caller is kept
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Dovecot as other users")
def test_root_unreachable_for_dovecot_users_is_explained(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    server = DovecotServer({"solo@sandbox.invalid": "solo-pass"}, root=tmp_path / "dc")
    with pytest.raises(SandboxStartError, match=f"cannot enter {tmp_path} \\(mode 0700\\)"):
        server.start()
    assert server.pid is None


@pytest.mark.parametrize("folder", ["INBOX", "Processed"])
def test_recreate_folder_changes_uidvalidity_and_keeps_messages(
    dovecot: DovecotServer, fresh_mailbox: SandboxAccount, folder: str
) -> None:
    user = fresh_mailbox.user
    raws = [f"Subject: m{i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody {i}\r\n".encode() for i in range(3)]
    for i, raw in enumerate(raws):
        dovecot.append(user, folder, raw, flags=[b"\\Seen"] if i == 1 else [])
    # Gaps in the UIDs, so that "same UIDs again" would be visible.
    dovecot.append(user, folder, b"Subject: gone\r\n\r\nx\r\n")
    with dovecot.imap_client(user) as client:
        client.select_folder(folder)
        client.delete_messages([4])
        client.expunge()
    dovecot.append(user, folder, raws[0])
    before = dovecot.uids(user, folder)
    old = dovecot.uidvalidity(user, folder)

    new = dovecot.recreate_folder(user, folder)

    assert new != old
    assert dovecot.uidvalidity(user, folder) == new
    assert before == [1, 2, 3, 5]
    assert dovecot.uids(user, folder) == [1, 2, 3, 4]
    assert dovecot.fetch_all(user, folder) == [*raws, raws[0]]
    with dovecot.imap_client(user) as client:
        client.select_folder(folder, readonly=True)
        flags = client.fetch([1, 2], [b"FLAGS"])
    assert b"\\Seen" in flags[2][b"FLAGS"] and b"\\Seen" not in flags[1][b"FLAGS"]


@pytest.mark.parametrize(
    ("euid", "hint"),
    [
        (0, "run: apt-get install -y dovecot-imapd"),
        (1000, "ask an administrator to run: sudo apt-get install -y dovecot-imapd"),
    ],
)
def test_missing_dovecot_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, euid: int, hint: str
) -> None:
    # DovecotServer.start() looks the binary up in its own module.
    monkeypatch.setattr("bridge.sandbox.dovecot.find_dovecot", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert not sandbox.dovecot_available()
    server = DovecotServer({})
    with pytest.raises(SandboxUnavailable) as raised:
        server.start()
    assert str(raised.value).endswith(hint)


@pytest.mark.parametrize("user", ["Seller@acme.example", "a:b@x.example", "../etc", ""])
def test_unusable_usernames_are_refused_up_front(user: str) -> None:
    with pytest.raises(ValueError, match="sandbox username"):
        DovecotServer({user: "pw"})


# --------------------------------------------------------------------------- #
# SMTP
# --------------------------------------------------------------------------- #


def test_smtp_delivers_into_the_recipients_inbox(
    dovecot: DovecotServer, smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount
) -> None:
    message = make_message(fresh_mailbox.user)
    send(smtp_server, message, recipients=[fresh_mailbox.user, "nobody@elsewhere.invalid"])

    [mail] = smtp_server.received
    assert mail.mail_from == "buyer@sandbox.invalid"
    assert mail.rcpt_tos == (fresh_mailbox.user, "nobody@elsewhere.invalid")
    assert mail.message_id == message["Message-ID"].strip("<>")
    assert mail.delivered_to == (fresh_mailbox.user,)
    assert b"\r\n.leading dot\r\n" in mail.data
    assert smtp_server.messages_to(fresh_mailbox.user.upper()) == [mail]
    assert smtp_server.messages_to("nobody@elsewhere.invalid") == [mail]
    smtp_server.wait_delivered()
    assert dovecot.fetch_all(fresh_mailbox.user) == [mail.data]


def test_smtp_routes_by_address_wildcard_and_function(dovecot: DovecotServer) -> None:
    seller, staff, other = dovecot.new_account(), dovecot.new_account(), dovecot.new_account()
    route = {"Team@Acme.example": staff.user, "*@marketplace.example": seller.user}
    with SandboxSMTP(dovecot, route=route) as server:
        send(server, make_message("team@acme.example", 1))
        send(server, make_message("abc123@marketplace.example", 2))
        send(server, make_message("stranger@elsewhere.invalid", 3))
        server.wait_delivered()
    assert len(dovecot.uids(staff.user)) == 1
    assert len(dovecot.uids(seller.user)) == 1
    assert [m.delivered_to for m in server.received] == [(staff.user,), (seller.user,), ()]

    with SandboxSMTP(dovecot, route=lambda addr: other.user if "vip" in addr else None) as server:
        send(server, make_message("vip@x.example", 4), recipients=["vip@x.example", "vip2@x.example"])
        server.wait_delivered()
    assert len(dovecot.uids(other.user)) == 1  # one copy per mailbox


def test_smtp_auth_is_required_and_wrong_passwords_refused(dovecot: DovecotServer) -> None:
    staff = dovecot.new_account()
    with SandboxSMTP(dovecot, auth={staff.user: staff.password}) as server:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as no_auth:
            send(server, make_message(staff.user, 1))
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as bad_auth:
            send(server, make_message(staff.user, 2), username=staff.user, password="wrong")
        send(server, make_message(staff.user, 3), username=staff.user, password=staff.password)
    assert no_auth.value.code == 530
    assert bad_auth.value.code == 535
    [mail] = server.received
    assert mail.auth_user == staff.user


def test_fail_next_421_then_success(smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount) -> None:
    smtp_server.fail_next(421, "4.3.2 Service not available, try later")
    with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
        send(smtp_server, make_message(fresh_mailbox.user, 1))
    assert raised.value.code == 421
    send(smtp_server, make_message(fresh_mailbox.user, 2))

    assert [m.message_id for m in smtp_server.received] == [smtp_server.received[0].message_id]
    assert "Order question 2" in smtp_server.received[0].data.decode()
    assert smtp_server.rejected == 1


@pytest.mark.parametrize(
    ("stage", "error"),
    [
        ("MAIL", aiosmtplib.SMTPSenderRefused),
        ("RCPT", aiosmtplib.SMTPRecipientsRefused),
        ("DATA", aiosmtplib.SMTPDataError),
    ],
)
def test_fail_next_permanent_at_each_stage(
    dovecot: DovecotServer,
    smtp_server: SandboxSMTP,
    fresh_mailbox: SandboxAccount,
    stage: str,
    error: type[Exception],
) -> None:
    smtp_server.fail_next(550, "5.7.1 Rejected by policy", times=2, stage=stage)  # type: ignore[arg-type]
    for n in (1, 2):
        with pytest.raises(error):
            send(smtp_server, make_message(fresh_mailbox.user, n))
    send(smtp_server, make_message(fresh_mailbox.user, 3))
    assert smtp_server.rejected == 2
    assert len(smtp_server.received) == 1
    smtp_server.wait_delivered()
    assert len(dovecot.uids(fresh_mailbox.user)) == 1


def test_dropped_connection_after_accepting_is_an_unknown_outcome(
    dovecot: DovecotServer, smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount
) -> None:
    smtp_server.drop_connection_next(accept=True)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        send(smtp_server, make_message(fresh_mailbox.user, 1))
    smtp_server.drop_connection_next()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        send(smtp_server, make_message(fresh_mailbox.user, 2))

    assert len(smtp_server.received) == 1  # the client cannot know this one arrived
    assert smtp_server.rejected == 1
    smtp_server.wait_delivered()
    assert len(dovecot.uids(fresh_mailbox.user)) == 1


def test_file_sent_copies_like_gmail(dovecot: DovecotServer) -> None:
    staff, buyer = dovecot.new_account(), dovecot.new_account()
    with SandboxSMTP(dovecot, auth={staff.user: staff.password}, file_sent_copies=True) as server:
        send(server, make_message(buyer.user, sender=staff.user), username=staff.user, password=staff.password)
        server.wait_delivered()
    [mail] = server.received
    assert dovecot.fetch_all(staff.user, "Sent") == [mail.data]
    assert dovecot.fetch_all(buyer.user) == [mail.data]
    assert dovecot.uids(staff.user) == []
    with dovecot.imap_client(staff.user) as client:
        client.select_folder("Sent", readonly=True)
        assert b"\\Seen" in client.fetch([1], [b"FLAGS"])[1][b"FLAGS"]


def test_many_messages_quickly(
    dovecot: DovecotServer, smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount
) -> None:
    count = 1000

    async def blast() -> None:
        async with aiosmtplib.SMTP(hostname=smtp_server.host, port=smtp_server.port) as client:
            for n in range(count):
                await client.send_message(make_message(fresh_mailbox.user, n))

    asyncio.run(blast())
    assert len(smtp_server.wait_for(count, timeout=1)) == count
    smtp_server.wait_delivered(timeout=30)
    assert dovecot.fetch_all(fresh_mailbox.user) == [m.data for m in smtp_server.received]


def test_clients_that_vanish_do_not_hurt_the_server(
    smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount
) -> None:
    for cut_after in (b"", b"EHLO x\r\n", b"EHLO x\r\nMAIL FROM:<a@x.example>\r\n"):
        with socket.create_connection((smtp_server.host, smtp_server.port), timeout=5) as sock:
            sock.recv(1024)
            sock.sendall(cut_after)
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for line in (b"EHLO x", b"MAIL FROM:<a@x.example>", f"RCPT TO:<{fresh_mailbox.user}>".encode(), b"DATA"):
            sock.sendall(line + b"\r\n")
        sock.sendall(b"Subject: half\r\n\r\nonly half of a mess")
        time.sleep(0.05)
        reader.close()
    send(smtp_server, make_message(fresh_mailbox.user, 1))
    assert [m.rcpt_tos for m in smtp_server.received] == [(fresh_mailbox.user,)]


def test_stop_closes_connected_clients(dovecot: DovecotServer) -> None:
    server = SandboxSMTP(dovecot)
    server.start()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        assert sock.recv(1024).startswith(b"220 ")
        server.stop()
        assert sock.recv(1024) == b""
    assert port_is_free(server.port)


def test_wait_for_names_how_many_arrived(smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount) -> None:
    send(smtp_server, make_message(fresh_mailbox.user))
    with pytest.raises(TimeoutError, match="expected 2 messages, 1 arrived"):
        smtp_server.wait_for(2, timeout=0.1)
    smtp_server.clear()
    assert smtp_server.received == []


def test_failed_delivery_is_reported(dovecot: DovecotServer) -> None:
    with SandboxSMTP(dovecot, route=lambda addr: "ghost@sandbox.invalid") as server:
        send(server, make_message("anyone@x.example"))
        with pytest.raises(SandboxDeliveryError, match="ghost@sandbox.invalid"):
            server.wait_delivered()
    assert [f.user for f in server.delivery_errors] == ["ghost@sandbox.invalid"]


def test_delivery_survives_a_dovecot_restart(
    dovecot: DovecotServer, smtp_server: SandboxSMTP, fresh_mailbox: SandboxAccount
) -> None:
    send(smtp_server, make_message(fresh_mailbox.user, 1))
    smtp_server.wait_delivered()
    dovecot.restart()
    send(smtp_server, make_message(fresh_mailbox.user, 2))
    smtp_server.wait_delivered()
    assert len(dovecot.uids(fresh_mailbox.user)) == 2
