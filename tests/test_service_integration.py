"""``mailbridge run`` as systemd runs it: sd_notify, the watchdog, SIGHUP reloads.

A real daemon process against the real Dovecot and SMTP fixtures, with a
test-owned unix datagram socket as ``$NOTIFY_SOCKET`` and
``WATCHDOG_USEC=2000000`` (a ping due every second).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bridgekit import wait_until

from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples

WAIT = 60.0   # how long a test waits for something that should happen in seconds; never asserted as a speed


class NotifySocket:
    """A unix datagram socket standing in for systemd's; keeps every datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.received.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, d in self.received for line in d.split("\n")]

    def times_of(self, line: str) -> list[float]:
        with self._lock:
            return [t for t, d in self.received if line in d.split("\n")]

    def wait_for(self, line: str, count: int = 1, timeout: float = WAIT) -> None:
        wait_until(lambda: len(self.times_of(line)) >= count, lambda: f"{count} x {line!r}; got {self.lines()}",
                   timeout)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()


def _config(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
            name: str = "acme", **imap: object) -> str:
    return config_toml(database=f"sqlite:///{tmp_path}/mailbridge.db", seller=seller.user, staff=staff.user,
                       imap_port=seller.port, smtp_port=smtp.port, imap_password=seller.password, name=name,
                       staff_senders=[f"*@{staff.user.rpartition('@')[2]}"],
                       sections={"account": {"forward_existing": True},
                                 "imap": {"poll_seconds": 5, **imap}, "smtp": {"sent_copies": "none"}})


def _accounts_part(toml: str) -> str:
    """The ``[[accounts]]`` block (with its imap/smtp tables) of a one-account file, to add to another."""
    return toml[toml.index("[[accounts]]"):]


@contextmanager
def daemon(config: Path, log: Path, notify: NotifySocket) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    env.pop("JOURNAL_STREAM", None)
    with log.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(config), "--log-level", "INFO", "run"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_log(log: Path, text: str, proc: subprocess.Popen[bytes], count: int = 1) -> None:
    def logged() -> bool:
        if log.read_text(errors="replace").count(text) >= count:
            return True
        assert proc.poll() is None, f"the daemon exited:\n{log.read_text(errors='replace')[-3000:]}"
        return False

    wait_until(logged, lambda: f"{text!r} in the log:\n{log.read_text(errors='replace')[-3000:]}", WAIT)


def _buyer_mail(seller: SandboxAccount, n: int) -> bytes:
    return samples.amazon_buyer_message(
        buyer_alias=f"k3j9x0qma2b{n}", buyer_name="Jane", order=f"111-2223334-444555{n}",
        question="Does the tent come with a footprint?", seller_address=seller.user,
        message_id=f"buyer.{n}.{seller.user}@email.amazon.com")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.close()


def test_ready_status_and_a_watchdog_ping_every_second(tmp_path: Path, notify: NotifySocket,
                                                       fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                       smtp_server: SandboxSMTP) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(_config(tmp_path, fresh_mailbox, staff, smtp_server))
    log = tmp_path / "daemon.log"
    with daemon(config, log, notify):
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1", count=6)
        ready = notify.lines()[notify.lines().index("READY=1") + 1]
        assert ready == "STATUS=1/1 accounts connected; 0 queued"
        pings = notify.times_of("WATCHDOG=1")
        gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
        # Half of WATCHDOG_USEC: one a second. The median, so that a loaded machine's hiccup does not count.
        assert 0.5 < gaps[len(gaps) // 2] < 1.5, gaps
        assert "a sign of life every 1.0 s" in log.read_text()
    assert notify.lines()[-1] in ("STOPPING=1", "STATUS=stopping: finishing the work in hand")
    assert "STOPPING=1" in notify.lines()


def test_pings_stop_while_the_imap_server_stops_answering_mid_idle(
        tmp_path: Path, notify: NotifySocket, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    """Dovecot frozen (SIGSTOP to its process group) while the account idles: no more WATCHDOG=1, so
    systemd would restart mailbridge; the pings come back once the server answers again."""
    config = tmp_path / "mailbridge.toml"
    config.write_text(_config(tmp_path, fresh_mailbox, staff, smtp_server, timeout_seconds=2))
    log = tmp_path / "daemon.log"
    assert dovecot.pid is not None
    with daemon(config, log, notify) as proc:
        notify.wait_for("READY=1")
        _wait_log(log, "connected to 127.0.0.1 (IDLE on)", proc)
        notify.wait_for("WATCHDOG=1", count=3)
        frozen_at = time.monotonic()
        os.killpg(dovecot.pid, signal.SIGSTOP)
        try:
            # Pings stop: a gap of several intervals (one per second while healthy) opens and stays.
            deadline = frozen_at + WAIT
            while True:
                last = max(notify.times_of("WATCHDOG=1"))
                if time.monotonic() - last > 5.0:
                    break
                assert time.monotonic() < deadline, "the pings went on while the IMAP server was frozen"
                time.sleep(0.1)
            _wait_log(log, "watchdog: no sign of life to systemd while ingest-acme is silent", proc)
            before = len(notify.times_of("WATCHDOG=1"))
            time.sleep(3.0)   # still frozen: still no ping
            assert len(notify.times_of("WATCHDOG=1")) == before
            print(f"pings stopped {last - frozen_at:.1f} s after the freeze (poll 5 s, IMAP timeout 2 s)")
        finally:
            os.killpg(dovecot.pid, signal.SIGCONT)
        _wait_log(log, "signs of life to systemd resume", proc)
        notify.wait_for("WATCHDOG=1", count=before + 2)


def test_sighup_adds_an_account_and_a_broken_file_leaves_the_running_one(
        tmp_path: Path, notify: NotifySocket, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    config = tmp_path / "mailbridge.toml"
    first = _config(tmp_path, fresh_mailbox, staff, smtp_server)
    config.write_text(first)
    second = dovecot.new_account("beta")
    log = tmp_path / "daemon.log"
    with daemon(config, log, notify) as proc:
        notify.wait_for("READY=1")

        # A broken file: refused in one line, the daemon runs on with what it had.
        config.write_text(first + "\n[daemon]\nlog_level = \"LOUD\"\n")
        proc.send_signal(signal.SIGHUP)
        _wait_log(log, "reload refused, still running the configuration loaded before", proc)
        refused = [line for line in log.read_text().splitlines() if "reload refused" in line]
        assert len(refused) == 1 and "daemon.log_level" in refused[0] and "LOUD" in refused[0]
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1", count=2)
        dovecot.append(fresh_mailbox.user, "INBOX", _buyer_mail(fresh_mailbox, 1))
        smtp_server.wait_for(1, timeout=WAIT)
        assert smtp_server.messages_to(staff.user)

        # A second account added: it starts, and its mail is forwarded, with no restart.
        config.write_text(first + "\n" + _accounts_part(_config(tmp_path, second, staff, smtp_server, name="beta")))
        proc.send_signal(signal.SIGHUP)
        _wait_log(log, "reloaded", proc)
        assert "started beta" in log.read_text()
        notify.wait_for("READY=1", count=3)
        dovecot.append(second.user, "INBOX", _buyer_mail(second, 2))
        received = smtp_server.wait_for(2, timeout=WAIT)
        assert any(b"buyer.2." in m.data or b"k3j9x0qma2b2" in m.data for m in received)
        _wait_log(log, "account beta: connected", proc)

        # And removed again: it stops, the first account goes on.
        config.write_text(first)
        proc.send_signal(signal.SIGHUP)
        _wait_log(log, "stopped beta", proc)
        dovecot.append(fresh_mailbox.user, "INBOX", _buyer_mail(fresh_mailbox, 3))
        smtp_server.wait_for(3, timeout=WAIT)
    assert "mailbridge running: 1 account(s)" in log.read_text()
    assert log.read_text().count("mailbridge running") == 1   # never restarted


def test_mailbridge_reload_checks_the_file_then_signals_the_daemon(
        tmp_path: Path, notify: NotifySocket, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    config = tmp_path / "mailbridge.toml"
    good = _config(tmp_path, fresh_mailbox, staff, smtp_server)
    config.write_text(good)
    log = tmp_path / "daemon.log"

    def reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), "reload"],
                              capture_output=True, text=True, timeout=WAIT)

    with daemon(config, log, notify) as proc:
        notify.wait_for("READY=1")
        config.write_text(good.replace('poll_seconds = 5', 'poll_seconds = 2'))   # below the minimum of 5
        refused = reload()
        assert refused.returncode == 2 and "imap.poll_seconds: got 2" in refused.stderr, refused
        config.write_text(good.replace('poll_seconds = 5', 'poll_seconds = 6'))
        done = reload()
        assert done.returncode == 0 and f"pid {proc.pid}" in done.stdout, done
        _wait_log(log, "restarted acme", proc)
        assert log.read_text().count("SIGHUP: reloading") == 1   # the refused file was never sent
    config.write_text(good)
    gone = reload()
    assert gone.returncode == 1 and "no running mailbridge daemon" in gone.stderr


def test_json_log_lines_name_the_ids_and_never_a_secret_or_a_buyer_body(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(_config(tmp_path, fresh_mailbox, staff, smtp_server).replace(
        "[database]", '[daemon]\nlog_format = "json"\n\n[database]'))
    question = "Does the tent come with a footprint?"
    dovecot.append(fresh_mailbox.user, "INBOX", _buyer_mail(fresh_mailbox, 7))
    env = {**os.environ, "JOURNAL_STREAM": "8:12345"}
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), "--log-level", "INFO",
                             "run", "--once"], capture_output=True, text=True, timeout=WAIT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stderr.splitlines()]   # every line is one JSON object
    assert lines and all("time" not in line for line in lines)         # the journal stamps them
    (recorded,) = [line for line in lines if "UID" in line["message"] and "forwarded" in line["message"]]
    assert recorded["account"] == "acme" and recorded["uid"] == 1
    assert recorded["message_id"] == f"buyer.7.{fresh_mailbox.user}@email.amazon.com"
    assert isinstance(recorded["conversation"], int)
    (sent,) = [line for line in lines if line["message"].startswith("account acme: sent staff_notification")]
    assert sent["conversation"] == recorded["conversation"] and isinstance(sent["outbox_id"], int)
    assert len(fresh_mailbox.password) >= 6
    assert fresh_mailbox.password not in result.stderr
    assert question not in result.stderr and "footprint" not in result.stderr.lower()
