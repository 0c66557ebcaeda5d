"""Local sandbox mail servers: a real Dovecot IMAP server and a real SMTP server.

Used by the test suite (``tests/conftest.py``) and by ``mailbridge demo``. Both
servers listen on 127.0.0.1 only, on a free port picked at start, and keep all
their state in a temporary directory.

- :class:`DovecotServer` runs ``dovecot -F`` with a generated configuration
  (IDLE, CONDSTORE, QRESYNC, MOVE, UIDPLUS, SPECIAL-USE; folders ``INBOX``,
  ``Sent``, ``Processed``, ``Quarantine``; separator ``/``; plaintext login,
  no TLS). Users (one passwd-file each) can be added while it runs.
- :class:`SandboxSMTP` is an aiosmtpd server that records every accepted
  transaction and delivers it into Dovecot with IMAP APPEND, with optional
  AUTH, Gmail-style "Sent" copies and injected failures.

Nothing here is meant for production mail: passwords are stored in plain text
in the sandbox directory and nothing is encrypted.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import datetime as dt
import email.parser
import email.policy
import grp
import hmac
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

__all__ = [
    "LOOPBACK",
    "SANDBOX_FOLDERS",
    "SENT_FOLDER",
    "DeliveryFailure",
    "DovecotServer",
    "ReceivedMail",
    "Route",
    "SandboxAccount",
    "SandboxDeliveryError",
    "SandboxError",
    "SandboxSMTP",
    "SandboxStartError",
    "SandboxUnavailable",
    "Stage",
    "dovecot_available",
    "find_dovecot",
]

LOOPBACK: Final = "127.0.0.1"
SENT_FOLDER: Final = "Sent"
#: Folders every sandbox user has from the first login on.
SANDBOX_FOLDERS: Final = ("INBOX", SENT_FOLDER, "Processed", "Quarantine")

START_TIMEOUT: Final = 15.0
IMAP_TIMEOUT: Final = 10.0
_SBIN_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# Dovecot's default auth_username_chars, minus upper case: its default
# auth_username_format (%Lu) lowercases logins, so upper case could never match.
_USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._@-]*")
_APPENDUID_RE: Final = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
# Unix socket paths are limited to 108 bytes; Dovecot's longest socket name
# under base_dir is about 25 characters.
_MAX_BASE_DIR_LEN: Final = 80


class SandboxError(RuntimeError):
    """A sandbox server could not do what was asked (see the message)."""


class SandboxUnavailable(SandboxError):
    """Dovecot is not installed or cannot run here; the message says what to do."""


class SandboxStartError(SandboxError):
    """Dovecot was found but did not start; the message ends with its log tail."""


class SandboxDeliveryError(SandboxError):
    """SandboxSMTP accepted a message but could not APPEND it into Dovecot."""


# --------------------------------------------------------------------------- #
# Dovecot
# --------------------------------------------------------------------------- #


def find_dovecot() -> str | None:
    """Path of the ``dovecot`` binary, also looked for in the sbin directories
    that a non-root PATH usually lacks; ``None`` when it is not installed."""
    found = shutil.which("dovecot")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / "dovecot"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def dovecot_available() -> bool:
    """True when :class:`DovecotServer` can be started on this machine."""
    return find_dovecot() is not None


def _install_hint() -> str:
    if os.geteuid() == 0:
        return "run: apt-get install -y dovecot-imapd"
    return "ask an administrator to run: sudo apt-get install -y dovecot-imapd"


@dataclass(frozen=True)
class SandboxAccount:
    """Login data of one sandbox IMAP user (plaintext IMAP, no TLS)."""

    user: str
    password: str
    host: str
    port: int


@dataclass(frozen=True)
class _RunAs:
    """Who Dovecot's processes and mail files belong to."""

    privileged: bool
    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int


def _run_as_for_current_process() -> _RunAs:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        internal = _existing_user("dovecot") or nobody
        login = _existing_user("dovenull") or nobody
        return _RunAs(
            privileged=True,
            internal_user=internal.pw_name,
            internal_group=grp.getgrgid(internal.pw_gid).gr_name,
            login_user=login.pw_name,
            mail_uid=nobody.pw_uid,
            mail_gid=nobody.pw_gid,
        )
    # Unprivileged Dovecot: every process runs as us, nothing is chrooted.
    try:
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        raise SandboxUnavailable(
            f"uid {os.geteuid()} / gid {os.getegid()} have no name in /etc/passwd or "
            "/etc/group; an unprivileged Dovecot needs both (default_internal_user)"
        ) from None
    return _RunAs(
        privileged=False,
        internal_user=me.pw_name,
        internal_group=group,
        login_user=me.pw_name,
        mail_uid=os.geteuid(),
        mail_gid=os.getegid(),
    )


def _existing_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _render_config(
    *, root: Path, base_dir: Path, port: int, run_as: _RunAs
) -> str:
    """The whole dovecot.conf for one sandbox (no file from /etc is read)."""
    if run_as.privileged:
        userdb_args = f"uid={run_as.mail_uid} gid={run_as.mail_gid} home={root}/home/%u"
        chroot = ""
    else:
        userdb_args = f"home={root}/home/%u"
        # chroot() needs root; the defaults chroot anvil and the login processes.
        chroot = "  chroot =\n"
    return f"""\
# Generated by bridge.sandbox: a throwaway Dovecot on {LOOPBACK} only.
base_dir = {base_dir}
state_dir = {root}/state
log_path = {root}/log/dovecot.log
info_log_path = {root}/log/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap
listen = {LOOPBACK}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Wrong passwords answer at once instead of after the default 2 s (see also
# nodelay below and the anvil penalty switched off further down).
auth_failure_delay = 0
default_internal_user = {run_as.internal_user}
default_internal_group = {run_as.internal_group}
default_login_user = {run_as.login_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_fsync = never
mailbox_list_index = yes
# IDLE sees new mail through inotify (about 0.5 s); this is the fallback poll.
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = 100

# One passwd-file per user: Dovecot re-reads a known passwd-file at most once
# a second, but opens the file of a user it has not seen yet at once.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users/%u
  override_fields = nodelay=yes
}}
userdb {{
  driver = static
  args = {userdb_args}
}}

service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{chroot}}}
# Dovecot delays every login from an IP for 2-15 s after one failed login
# from it; tests that check a refused password would slow all later tests.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}

namespace inbox {{
  inbox = yes
  separator = /
  mailbox {SENT_FOLDER} {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Processed {{
    auto = create
  }}
  mailbox Quarantine {{
    auto = create
  }}
}}
"""


class DovecotServer:
    """A real Dovecot IMAP server on 127.0.0.1, all state in one directory.

    ``users`` maps lower-case usernames (email addresses) to passwords. The
    port is chosen by the first :meth:`start` and kept by :meth:`restart` and
    later starts, so clients can reconnect to the same address. Mail survives
    :meth:`stop`/:meth:`start`; :meth:`close` (and leaving the ``with`` block)
    also deletes the directory when the server created it (``root=None``).

    Works as root (mail owned by ``nobody``) and unprivileged (every Dovecot
    process runs as the current user). Raises :class:`SandboxUnavailable` when
    Dovecot is not installed. The helpers open one short-lived IMAP connection
    per call and are safe to call from any thread.
    """

    def __init__(self, users: Mapping[str, str], root: Path | None = None) -> None:
        self._users: dict[str, str] = {}
        for user, password in users.items():
            _check_credentials(user, password)
            self._users[user] = password
        self._owns_root = root is None
        self._root: Path | None = Path(root) if root is not None else None
        self._base_dir: Path | None = None
        self._owns_base_dir = False
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._account_counter = 0
        self._run_as: _RunAs | None = None

    # -- properties --------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The IMAP port; known once :meth:`start` has succeeded once."""
        if self._port is None:
            raise SandboxError("DovecotServer has no port yet: call start() first")
        return self._port

    @property
    def root(self) -> Path:
        """The sandbox directory (config, users/, log/, mail/)."""
        if self._root is None:
            raise SandboxError("DovecotServer has no directory yet: call start() first")
        return self._root

    @property
    def log_path(self) -> Path:
        """Dovecot's own log file (logins, errors, disconnect reasons)."""
        return self.root / "log" / "dovecot.log"

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the Dovecot master while running; it is also the process
        group of every Dovecot process of this sandbox."""
        return self._proc.pid if self._proc is not None else None

    @property
    def users(self) -> dict[str, str]:
        """A copy of the username -> password map."""
        with self._lock:
            return dict(self._users)

    def account(self, user: str) -> SandboxAccount:
        """Login data for ``user`` (needs a started server for the port)."""
        with self._lock:
            try:
                password = self._users[user]
            except KeyError:
                raise SandboxError(
                    f"unknown sandbox user {user!r}; known users: {sorted(self._users)}"
                ) from None
        return SandboxAccount(user=user, password=password, host=self.host, port=self.port)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start Dovecot and wait (up to 15 s) until a login succeeds.

        Raises :class:`SandboxUnavailable` when Dovecot is missing and
        :class:`SandboxStartError` (with the end of Dovecot's log) when it
        does not come up. The first start retries with another port when the
        chosen one was taken in the meantime; later starts insist on the same
        port.
        """
        with self._lock:
            if self.running:
                raise SandboxError("DovecotServer is already running")
            if self._proc is not None:
                self.stop()  # the master died: reap it and kill its orphans
            binary = find_dovecot()
            if binary is None:
                raise SandboxUnavailable(f"Dovecot is not installed; {_install_hint()}")
            self._prepare_directories()
            fixed_port = self._port is not None
            attempts = 1 if fixed_port else 5
            for attempt in range(attempts):
                port = self._port if self._port is not None else _free_port()
                try:
                    self._spawn(binary, port)
                except _PortTaken:
                    if attempt + 1 < attempts:
                        continue
                    raise SandboxStartError(
                        f"port {LOOPBACK}:{port} is in use by another program; "
                        f"Dovecot could not listen on it.\n{self.log_tail()}"
                    ) from None
                self._port = port
                _LIVE.add(self)
                return

    def stop(self) -> None:
        """Stop every Dovecot process (master, login, imap, auth ...) and wait
        until the port is free. Mail data stays. Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            try:
                _terminate_group(proc)
            finally:
                if self._port is not None:
                    _wait_port_free(self._port)
            _LIVE.discard(self)

    def restart(self) -> None:
        """Stop and start again on the same port with the same mail; connected
        clients are disconnected (IDLE gets ``BYE`` or a closed socket)."""
        with self._lock:
            self.stop()
            self.start()

    def close(self) -> None:
        """Stop, then delete the sandbox directory if this object created it."""
        with self._lock:
            self.stop()
            if self._owns_root and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
            if self._owns_base_dir and self._base_dir is not None:
                shutil.rmtree(self._base_dir, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DovecotServer {LOOPBACK}:{self._port} {state} root={self._root}>"

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of Dovecot's log and console output."""
        parts = []
        if self._root is not None:
            for path in (self._root / "log" / "dovecot.log", self._root / "dovecot.out"):
                text = _tail(path, lines)
                if text:
                    parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or "(Dovecot wrote no log)"

    # -- users -------------------------------------------------------------

    def add_user(self, user: str, password: str) -> SandboxAccount:
        """Add (or change the password of) a user, also while running.

        A new user can log in at once; a changed password may take up to a
        second (Dovecot re-reads a passwd-file at most once a second). The
        user's folders are created at the first login. Returns the login data
        (``port`` is 0 before the first start).
        """
        _check_credentials(user, password)
        with self._lock:
            self._users[user] = password
            if self._root is not None and (self._root / "users").is_dir():
                self._write_passwd(user)
            if self._port is None:
                return SandboxAccount(user=user, password=password, host=LOOPBACK, port=0)
        return self.account(user)

    def new_account(self, prefix: str = "user", domain: str = "sandbox.invalid") -> SandboxAccount:
        """Create a brand-new user with a random password and empty folders.

        Cheap (one small file rewrite, no restart): this is how tests get a
        mailbox nobody else writes to.
        """
        with self._lock:
            self._account_counter += 1
            user = f"{prefix}-{self._account_counter}-{secrets.token_hex(3)}@{domain}"
        return self.add_user(user, secrets.token_urlsafe(12))

    # -- IMAP helpers ------------------------------------------------------

    def imap_client(self, user: str, timeout: float = IMAP_TIMEOUT) -> IMAPClient:
        """A logged-in :class:`IMAPClient` for ``user``; the caller logs out
        (``with server.imap_client(u) as client: ...`` does it)."""
        account = self.account(user)
        client = IMAPClient(account.host, account.port, ssl=False, timeout=timeout)
        try:
            client.login(account.user, account.password)
        except BaseException:
            _close_quietly(client)
            raise
        return client

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Sequence[str | bytes] = (),
        date: dt.datetime | None = None,
    ) -> int | None:
        """APPEND ``raw`` to ``folder``; returns the new UID (from APPENDUID).

        Line endings are normalised to CRLF by the IMAP client. ``date`` sets
        INTERNALDATE (a naive datetime is taken as local time).
        """
        with self.imap_client(user) as client:
            response = client.append(folder, raw, flags=tuple(flags), msg_time=date)
        return _appenduid(response)

    def fetch_all(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Every message of ``folder`` in UID order, without setting \\Seen."""
        with self.imap_client(user) as client:
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search("ALL"))
            if not uids:
                return []
            fetched = client.fetch(uids, [b"BODY.PEEK[]"])
            return [fetched[uid][b"BODY[]"] for uid in uids]

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        """The UIDs in ``folder``, ascending."""
        with self.imap_client(user) as client:
            client.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in client.search("ALL"))

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """The folder's current UIDVALIDITY."""
        with self.imap_client(user) as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
            return int(status[b"UIDVALIDITY"])

    def recreate_folder(self, user: str, folder: str = "INBOX") -> int:
        """Force a UIDVALIDITY change on ``folder`` keeping its messages.

        The messages (bytes, flags, INTERNALDATE) are re-appended in their old
        order and get UIDs starting again from 1, under a new UIDVALIDITY,
        which is returned: the worst case a client must survive (RFC 3501
        section 2.3.1.1). Any other folder is deleted and created again live.
        Dovecot refuses to delete INBOX, so for INBOX the messages are expunged,
        the server is stopped, INBOX's index files are removed and the server
        restarted: every connected client is disconnected, as real servers
        often do when UIDVALIDITY changes. Do not deliver into the folder
        while this runs.
        """
        old = self.uidvalidity(user, folder)
        with self.imap_client(user) as client:
            client.select_folder(folder)
            uids = sorted(client.search("ALL"))
            saved: list[tuple[bytes, tuple[bytes, ...], dt.datetime]] = []
            if uids:
                fetched = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
                for uid in uids:
                    item = fetched[uid]
                    flags = tuple(f for f in item[b"FLAGS"] if f.lower() != b"\\recent")
                    saved.append((item[b"BODY[]"], flags, item[b"INTERNALDATE"]))
            if folder.upper() == "INBOX":
                if uids:
                    client.delete_messages(uids)
                    client.expunge()
                client.unselect_folder()
            else:
                client.unselect_folder()
                client.delete_folder(folder)
                client.create_folder(folder)
        if folder.upper() == "INBOX":
            self._reset_inbox_index(user)
        with self.imap_client(user) as client:
            for raw, flags, date in saved:
                client.append(folder, raw, flags=flags, msg_time=date)
            new = int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
        if new == old:
            raise SandboxError(f"UIDVALIDITY of {user}/{folder} did not change ({old})")
        return new

    # -- internals ---------------------------------------------------------

    def _reset_inbox_index(self, user: str) -> None:
        with self._lock:
            was_running = self.running
            self.stop()
            maildir = self.root / "mail" / user
            # The uidlist holds UIDVALIDITY and the next UID; the indexes cache
            # them. dovecot-uidvalidity (the per-user counter) must stay so the
            # new value differs from every previous one.
            for path in maildir.glob("dovecot*"):
                if path.name == "dovecot-uidlist" or path.name.startswith(
                    ("dovecot.index", "dovecot.list.index")
                ):
                    path.unlink()
            if was_running:
                self.start()

    def _prepare_directories(self) -> None:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="mailbridge-dovecot-"))
        root = self._root
        root.mkdir(parents=True, exist_ok=True)
        # Dovecot's auth and mail processes run as other users and must reach
        # the passwd-files and the maildirs.
        root.chmod(0o755)
        self._run_as = run_as = _run_as_for_current_process()
        if run_as.privileged:
            _check_reachable_by_others(root.resolve())
        for name in ("log", "state"):
            (root / name).mkdir(exist_ok=True)
        for name in ("mail", "home"):
            path = root / name
            path.mkdir(exist_ok=True)
            if run_as.privileged:
                os.chown(path, run_as.mail_uid, run_as.mail_gid)
        if self._base_dir is None:
            base_dir = root / "run"
            if len(str(base_dir)) > _MAX_BASE_DIR_LEN:
                base_dir = Path(tempfile.mkdtemp(prefix="mbdc-"))
                self._owns_base_dir = True
            self._base_dir = base_dir
        self._base_dir.mkdir(exist_ok=True)
        self._base_dir.chmod(0o755)
        users_dir = root / "users"
        users_dir.mkdir(exist_ok=True)
        self._protect(users_dir, 0o750)
        for user in self._users:
            self._write_passwd(user)

    def _protect(self, path: Path, mode: int) -> None:
        # Only Dovecot's auth process (the internal user) may read passwords.
        assert self._run_as is not None
        if self._run_as.privileged:
            os.chown(path, 0, grp.getgrnam(self._run_as.internal_group).gr_gid)
        path.chmod(mode if self._run_as.privileged else mode & 0o700)

    def _write_passwd(self, user: str) -> None:
        users_dir = self.root / "users"
        tmp = users_dir / f".{user}.tmp"
        tmp.write_text(f"{user}:{{PLAIN}}{self._users[user]}::::::\n", encoding="utf-8")
        self._protect(tmp, 0o640)
        # Dovecot notices a change by mtime (whole seconds) or size, at most
        # once a second: a changed password may need up to a second to count.
        os.replace(tmp, users_dir / user)

    def _spawn(self, binary: str, port: int) -> None:
        root = self.root
        assert self._base_dir is not None and self._run_as is not None
        config = root / "dovecot.conf"
        config.write_text(
            _render_config(root=root, base_dir=self._base_dir, port=port, run_as=self._run_as),
            encoding="utf-8",
        )
        (self._base_dir / "master.pid").unlink(missing_ok=True)
        log_offset = _file_size(self.log_path)
        with open(root / "dovecot.out", "ab") as console:
            proc = subprocess.Popen(
                [binary, "-c", str(config), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills all of it
                close_fds=True,
            )
        self._proc = proc
        try:
            self._wait_ready(proc, port, log_offset)
        except BaseException:
            self._proc = None
            _terminate_group(proc)
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_offset: int) -> None:
        probe_user = next(iter(sorted(self._users.items())), None)
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                new_log = _read_from(self.log_path, log_offset)
                new_log += _tail(self.root / "dovecot.out", 5)
                if "Address already in use" in new_log:
                    raise _PortTaken(port)
                raise SandboxStartError(
                    f"Dovecot exited with status {proc.returncode} while starting."
                    f"\n{self.log_tail()}"
                )
            try:
                if _probe_login(port, probe_user):
                    return
                last_error = "login refused"
            except OSError as error:
                last_error = str(error)
            time.sleep(0.02)
        raise SandboxStartError(
            f"Dovecot did not accept a login on {LOOPBACK}:{port} within "
            f"{START_TIMEOUT:.0f} s ({last_error}).\n{self.log_tail()}"
        )


class _PortTaken(Exception):
    pass


def _check_reachable_by_others(root: Path) -> None:
    for directory in [root, *root.parents]:
        mode = directory.stat().st_mode
        if not mode & 0o001:
            raise SandboxStartError(
                f"Dovecot's processes run as other users and cannot enter {directory} "
                f"(mode {mode & 0o777:04o}) on the way to {root}; choose a root under "
                f"a directory everyone may traverse, e.g. {tempfile.gettempdir()}, "
                f"or leave root=None"
            )


def _check_credentials(user: str, password: str) -> None:
    if not _USERNAME_RE.fullmatch(user) or ".." in user:
        raise ValueError(
            f"sandbox username {user!r} must be lower case and use only a-z 0-9 . _ @ -"
        )
    if not password or any(c in password for c in ":\r\n\0"):
        raise ValueError(f"password of {user!r} must be non-empty without ':' or line breaks")


def _probe_login(port: int, user: tuple[str, str] | None) -> bool:
    """True once Dovecot greets (and, with a user, accepts its password)."""
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
        reader = sock.makefile("rb")
        with reader:
            greeting = reader.readline()
            if not greeting.startswith(b"* OK"):
                return False
            if user is None:
                return True
            name, password = user
            token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
            sock.sendall(f"a AUTHENTICATE PLAIN {token}\r\n".encode())
            while True:
                line = reader.readline()
                if not line:
                    return False
                if line.startswith(b"a "):
                    ok = line.startswith(b"a OK")
                    sock.sendall(b"b LOGOUT\r\n")
                    return ok


def _terminate_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, SIGKILL what is left, reap the master.

    Dovecot's imap processes outlive the master on purpose (so a restart
    keeps sessions): only signalling the group really stops the server. Once
    its children are gone the master still idles up to a second before it
    exits; it holds no data by then, so it is killed instead of waited for.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while proc.poll() is None and set(_live_group_members(pgid)) - {pgid}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    try:
        proc.wait(timeout=0.05)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not _wait_group_gone(pgid, 3.0):
        _signal_group(pgid, signal.SIGKILL)
        if not _wait_group_gone(pgid, 3.0):
            raise SandboxError(f"Dovecot processes of group {pgid} survived SIGKILL")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _live_group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies.

    Orphaned children are reparented to PID 1, which in some containers never
    reaps them; a zombie holds no socket, so it does not count.
    """
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:  # not Linux: zombies count, but so be it
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    alive = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry))
    return alive


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_port_free(port: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"{LOOPBACK}:{port} is still bound after stopping Dovecot"
                    ) from None
        time.sleep(0.02)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, _file_size(path) - 16384))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _appenduid(response: bytes | str) -> int | None:
    raw = response.encode() if isinstance(response, str) else response
    match = _APPENDUID_RE.search(raw)
    return int(match.group(2)) if match else None


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


# --------------------------------------------------------------------------- #
# SMTP
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ReceivedMail:
    """One SMTP transaction that SandboxSMTP answered with 250.

    ``data`` is exactly what the client sent after DATA (CRLF line endings,
    dot-stuffing removed). ``received_at`` is ``time.time()``.
    ``delivered_to`` lists the Dovecot users whose INBOX gets a copy and
    ``auth_user`` the SMTP AUTH login (``None`` without AUTH).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None
    received_at: float
    auth_user: str | None = None
    delivered_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliveryFailure:
    """A message SandboxSMTP accepted but could not APPEND into Dovecot."""

    user: str
    folder: str
    message_id: str | None
    error: str


Stage = Literal["MAIL", "RCPT", "DATA"]
Route = Mapping[str, str] | Callable[[str], str | None]


@dataclass
class _Fault:
    stage: Stage
    code: int | None  # None: drop the connection without a reply
    message: str
    accept: bool = False  # drop only: record and deliver the message first


@dataclass
class _Transaction:
    fault: _Fault | None
    counted: bool = False


@dataclass(frozen=True)
class _Delivery:
    user: str
    folder: str
    data: bytes
    flags: tuple[bytes, ...]
    message_id: str | None


class _SMTPServerLike(Protocol):
    transport: asyncio.Transport | None


class SandboxSMTP:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that delivers into Dovecot.

    - ``route`` maps a recipient (compared in lower case) to the Dovecot user
      whose INBOX receives the message: exact addresses, ``*@domain`` and
      ``*`` keys, or a function returning a username or ``None``. Without
      ``route``, a recipient that is itself a Dovecot username is delivered
      to that user. Unrouted recipients are accepted and recorded only. A
      message goes once to each target user, however many recipients map
      to it.
    - ``auth`` (login -> password) makes AUTH PLAIN/LOGIN mandatory before
      MAIL (plaintext: loopback only).
    - ``file_sent_copies=True`` also files a \\Seen copy in the authenticated
      user's ``Sent`` folder, as Gmail and Microsoft 365 do (needs ``auth``
      logins that are Dovecot users).

    Every transaction answered with 250 is in :attr:`received` before the
    client sees the 250; the IMAP APPENDs run on a background thread, so call
    :meth:`wait_delivered` before reading the mailboxes.
    """

    def __init__(
        self,
        dovecot: DovecotServer | None,
        route: Route | None = None,
        auth: Mapping[str, str] | None = None,
        file_sent_copies: bool = False,
    ) -> None:
        if route is not None and dovecot is None:
            raise ValueError("route needs a DovecotServer to deliver into")
        if file_sent_copies and (dovecot is None or not auth):
            raise ValueError("file_sent_copies needs a DovecotServer and auth logins")
        if isinstance(route, Mapping):
            route = {key.lower(): user for key, user in route.items()}
            assert dovecot is not None
            unknown = sorted(set(route.values()) - set(dovecot.users))
            if unknown:
                raise ValueError(f"route targets {unknown} are not Dovecot users")
        self._dovecot = dovecot
        self._route = route
        self._auth = dict(auth) if auth else None
        self._file_sent_copies = file_sent_copies
        self._lock = threading.Condition()
        self._received: list[ReceivedMail] = []
        self._rejected = 0
        self._faults: deque[_Fault] = deque()
        self._transactions: weakref.WeakKeyDictionary[object, _Transaction] = (
            weakref.WeakKeyDictionary()
        )
        self._controller: Any = None  # aiosmtpd is imported lazily
        self._deliverer: _Deliverer | None = None
        self._last_failures: list[DeliveryFailure] = []
        self._port: int | None = None

    # -- properties --------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The SMTP port (a new free one at every start)."""
        if self._port is None:
            raise SandboxError("SandboxSMTP has no port yet: call start() first")
        return self._port

    @property
    def received(self) -> list[ReceivedMail]:
        """A snapshot of every accepted transaction, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def rejected(self) -> int:
        """How many transactions an injected fault refused or dropped."""
        with self._lock:
            return self._rejected

    @property
    def delivery_errors(self) -> list[DeliveryFailure]:
        """Accepted messages that could not be APPENDed into Dovecot."""
        if self._deliverer is not None:
            return self._deliverer.failures
        return list(self._last_failures)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Listen on a free loopback port; returns once it answers."""
        if self._controller is not None:
            raise SandboxError("SandboxSMTP is already running")
        if self._dovecot is not None:
            self._deliverer = _Deliverer(self._dovecot)
            self._deliverer.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            controller = _new_controller(
                _Handler(self),
                sock=sock,
                hostname=LOOPBACK,
                port=port,
                server_hostname="sandbox-smtp.invalid",  # skips a slow getfqdn()
                authenticator=self._authenticate if self._auth else None,
                # AUTH is enforced in handle_MAIL: aiosmtpd's auth_required
                # warns on every connection when TLS is not required.
                auth_required=False,
                auth_require_tls=False,
            )
            controller.start()
        except BaseException:
            sock.close()
            if self._deliverer is not None:
                self._deliverer.stop()
                self._deliverer = None
            raise
        self._controller = controller
        self._port = port
        _LIVE.add(self)

    def stop(self) -> None:
        """Close client connections, stop listening, finish pending deliveries
        and close the IMAP connections. Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.close_connections()
            controller.stop()
        deliverer, self._deliverer = self._deliverer, None
        if deliverer is not None:
            deliverer.stop()
            self._last_failures = deliverer.failures
        _LIVE.discard(self)

    close = stop

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SandboxSMTP {LOOPBACK}:{self._port} received={len(self._received)}>"

    # -- inspection --------------------------------------------------------

    def messages_to(self, addr: str) -> list[ReceivedMail]:
        """Accepted transactions with ``addr`` (any case) among the recipients."""
        wanted = addr.lower()
        return [m for m in self.received if any(r.lower() == wanted for r in m.rcpt_tos)]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least ``count`` transactions were accepted; returns
        them all. Raises TimeoutError saying how many arrived."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} messages, {len(self._received)} arrived "
                        f"within {timeout} s"
                    )
                self._lock.wait(remaining)
            return list(self._received)

    def wait_delivered(self, timeout: float = 10.0) -> None:
        """Block until every accepted message is in Dovecot. Raises
        TimeoutError, or :class:`SandboxDeliveryError` if any APPEND failed."""
        if self._deliverer is not None:
            self._deliverer.flush(timeout)
            failures = self._deliverer.failures
            if failures:
                raise SandboxDeliveryError(
                    f"{len(failures)} deliveries failed, first: {failures[0]}"
                )

    def clear(self) -> None:
        """Forget received messages and the rejected count (faults stay)."""
        with self._lock:
            self._received.clear()
            self._rejected = 0

    # -- fault injection ---------------------------------------------------

    def fail_next(self, code: int, message: str, times: int = 1, stage: Stage = "DATA") -> None:
        """Answer the next ``times`` transactions with ``code message`` at
        ``stage`` (``"MAIL"``, ``"RCPT"`` for every recipient, or ``"DATA"``
        after the content was sent). A 421 also closes the connection, as
        RFC 5321 section 3.8 says. Refused transactions are not recorded in
        :attr:`received`; they count in :attr:`rejected`."""
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        if not 400 <= code <= 599:
            raise ValueError(f"fail_next needs a 4xx or 5xx code, not {code}")
        with self._lock:
            self._faults.extend(_Fault(stage, code, message) for _ in range(times))

    def drop_connection_next(self, stage: Stage = "DATA", accept: bool = False) -> None:
        """Close the next transaction's connection at ``stage`` without a reply.

        With ``accept=True`` (DATA only) the message is first recorded and
        delivered: the client cannot know it was sent, which is the "outcome
        unknown" case an outbox must reconcile instead of resending blindly.
        """
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        if accept and stage != "DATA":
            raise ValueError("accept=True only makes sense at the DATA stage")
        with self._lock:
            self._faults.append(_Fault(stage, None, "", accept=accept))

    # -- called on aiosmtpd's loop thread ----------------------------------

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if self._auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = self._auth.get(login)
        ok = expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), auth_data.password
        )
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _begin(self, envelope: object) -> _Transaction:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        transaction = _Transaction(fault)
        self._transactions[envelope] = transaction
        return transaction

    def _fault_at(self, envelope: object, stage: Stage) -> _Fault | None:
        transaction = self._transactions.get(envelope)
        if transaction is None or transaction.fault is None:
            return None
        fault = transaction.fault
        if fault.stage != stage:
            return None
        if not transaction.counted and not fault.accept:
            transaction.counted = True
            with self._lock:
                self._rejected += 1
        return fault

    def _accept(self, envelope: Any, auth_user: str | None) -> ReceivedMail:
        data = bytes(envelope.original_content or b"")
        rcpt_tos = tuple(envelope.rcpt_tos)
        targets = self._targets(rcpt_tos)
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=rcpt_tos,
            data=data,
            message_id=_message_id(data),
            received_at=time.time(),
            auth_user=auth_user,
            delivered_to=targets,
        )
        if self._deliverer is not None:
            for user in targets:
                self._deliverer.submit(_Delivery(user, "INBOX", data, (), mail.message_id))
            if self._file_sent_copies and auth_user:
                self._deliverer.submit(
                    _Delivery(auth_user, SENT_FOLDER, data, (b"\\Seen",), mail.message_id)
                )
        with self._lock:
            self._received.append(mail)
            self._lock.notify_all()
        return mail

    def _targets(self, rcpt_tos: Sequence[str]) -> tuple[str, ...]:
        if self._dovecot is None:
            return ()
        targets: list[str] = []
        known = self._dovecot.users if self._route is None else None
        for rcpt in rcpt_tos:
            addr = rcpt.lower()
            user: str | None
            if self._route is None:
                user = addr if known is not None and addr in known else None
            elif callable(self._route):
                user = self._route(addr)
            else:
                domain = addr.rpartition("@")[2]
                user = (
                    self._route.get(addr)
                    or self._route.get(f"*@{domain}")
                    or self._route.get("*")
                )
            if user is not None and user not in targets:
                targets.append(user)
        return tuple(targets)


def _message_id(data: bytes) -> str | None:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    value = headers.get("Message-ID")
    if value is None:
        return None
    text = str(value).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text or None


class _Handler:
    """aiosmtpd hooks; everything here runs on the controller's loop thread."""

    def __init__(self, sandbox: SandboxSMTP) -> None:
        self._sandbox = sandbox

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self._sandbox._auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        self._sandbox._begin(envelope)
        fault = self._sandbox._fault_at(envelope, "MAIL")
        if fault is not None:
            return await _apply(server, fault)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self._sandbox._fault_at(envelope, "RCPT")
        if fault is not None:
            return await _apply(server, fault)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        fault = self._sandbox._fault_at(envelope, "DATA")
        auth_user = session.auth_data if isinstance(session.auth_data, str) else None
        if fault is not None:
            if fault.accept:
                self._sandbox._accept(envelope, auth_user)
            return await _apply(server, fault)
        mail = self._sandbox._accept(envelope, auth_user)
        return f"250 2.0.0 OK queued as {mail.message_id or 'sandbox'}"


async def _apply(server: _SMTPServerLike, fault: _Fault) -> str:
    transport = server.transport
    if fault.code is None:
        if transport is not None:
            transport.abort()
        # connection_lost() cancels this handler task; never reply.
        await asyncio.Event().wait()
    if fault.code == 421 and transport is not None:
        # Runs after the reply was written (push() writes synchronously).
        asyncio.get_running_loop().call_soon(transport.close)
    return f"{fault.code} {fault.message}"


class _DropLoginDataNotice(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation WARNING on every successful AUTH
    because it sets its own deprecated ``Session.login_data``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


def _make_controller_class() -> type:
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP
    except ImportError:
        raise SandboxUnavailable(
            "aiosmtpd is not installed; run: pip install 'aiosmtpd>=1.4.6,<2'"
        ) from None

    logging.getLogger("mail.log").addFilter(_DropLoginDataNotice())

    class SandboxController(Controller):
        """aiosmtpd Controller on a pre-bound socket that can close live clients."""

        def __init__(self, handler: Any, *, sock: socket.socket, **kwargs: Any) -> None:
            super().__init__(handler, **kwargs)
            self._sock = sock
            self._servers: weakref.WeakSet[SMTP] = weakref.WeakSet()

        def _create_server(self) -> Any:
            # A socket bound before start() cannot be taken by anyone else.
            return self.loop.create_server(self._factory_invoker, sock=self._sock)

        def factory(self) -> SMTP:
            server: SMTP = super().factory()  # type: ignore[no-untyped-call]
            self._servers.add(server)
            return server

        def close_connections(self) -> None:
            async def close_all() -> None:
                for server in list(self._servers):
                    if server.transport is not None:
                        server.transport.close()
                await asyncio.sleep(0.01)  # let connection_lost() run

            if self.loop.is_running():
                asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(5)

    return SandboxController


_controller_class: type | None = None


def _new_controller(handler: Any, **kwargs: Any) -> Any:
    # aiosmtpd is a test extra: import it only when an SMTP sandbox is made.
    global _controller_class
    if _controller_class is None:
        _controller_class = _make_controller_class()
    return _controller_class(handler, **kwargs)


class _Deliverer:
    """One thread that APPENDs accepted mail, one cached IMAP connection per user."""

    def __init__(self, dovecot: DovecotServer) -> None:
        self._dovecot = dovecot
        self._queue: deque[_Delivery | None] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._failures: list[DeliveryFailure] = []
        self._clients: dict[str, IMAPClient] = {}
        self._thread = threading.Thread(target=self._run, name="sandbox-smtp-delivery", daemon=True)

    @property
    def failures(self) -> list[DeliveryFailure]:
        with self._cond:
            return list(self._failures)

    def start(self) -> None:
        self._thread.start()

    def submit(self, delivery: _Delivery) -> None:
        with self._cond:
            self._pending += 1
            self._queue.append(delivery)
            self._cond.notify_all()

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self._pending} messages still waiting for delivery into "
                        f"Dovecot after {timeout} s"
                    )
                self._cond.wait(remaining)

    def stop(self) -> None:
        with self._cond:
            self._queue.append(None)
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if not batch:
                    return
                try:
                    self._deliver(batch)
                except Exception as error:  # recorded, reported by wait_delivered()
                    with self._cond:
                        self._failures.extend(
                            DeliveryFailure(d.user, d.folder, d.message_id, repr(error))
                            for d in batch
                        )
                finally:
                    with self._cond:
                        self._pending -= len(batch)
                        self._cond.notify_all()
        finally:
            for client in self._clients.values():
                _close_quietly(client)
            self._clients.clear()

    def _next_batch(self) -> list[_Delivery]:
        """The next deliveries for one (user, folder, flags), in order; empty
        when stopped. Batches turn 1000 APPENDs into a few MULTIAPPENDs."""
        with self._cond:
            while not self._queue:
                self._cond.wait()
            first = self._queue[0]
            if first is None:
                return []
            batch: list[_Delivery] = []
            while self._queue and len(batch) < _BATCH_SIZE:
                item = self._queue[0]
                if item is None or (item.user, item.folder, item.flags) != (
                    first.user,
                    first.folder,
                    first.flags,
                ):
                    break
                batch.append(item)
                self._queue.popleft()
            return batch

    def _deliver(self, batch: list[_Delivery]) -> None:
        # A restarting Dovecot breaks cached connections: reconnect for a
        # while. A retried APPEND whose first answer was lost may duplicate
        # messages; acceptable in a sandbox.
        user, folder, flags = batch[0].user, batch[0].folder, batch[0].flags
        deadline = time.monotonic() + 10.0
        while True:
            try:
                client = self._clients.get(user)
                if client is None:
                    client = self._dovecot.imap_client(user)
                    self._clients[user] = client
                if len(batch) == 1:
                    client.append(folder, batch[0].data, flags=flags)
                else:  # RFC 3502; imaplib's CRLF normalisation is not applied here
                    client.multiappend(
                        folder, [{"msg": _crlf(d.data), "flags": flags} for d in batch]
                    )
                return
            except (OSError, IMAPClientAbortError):
                self._forget(user)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            except IMAPClientError:
                self._forget(user)
                raise

    def _forget(self, user: str) -> None:
        stale = self._clients.pop(user, None)
        if stale is not None:
            _close_quietly(stale)


_BATCH_SIZE: Final = 200
_LONE_LINE_END: Final = re.compile(rb"\r\n|\r(?!\n)|\n")


def _crlf(data: bytes) -> bytes:
    """Line endings as imaplib's APPEND sends them (RFC 5322: CRLF only)."""
    return _LONE_LINE_END.sub(b"\r\n", data)


# --------------------------------------------------------------------------- #
# Cleanup at interpreter exit
# --------------------------------------------------------------------------- #


# Servers still running; closed at interpreter exit so no Dovecot outlives us.
_LIVE: set[DovecotServer | SandboxSMTP] = set()


@atexit.register
def _close_all_at_exit() -> None:
    # SMTP first: its delivery thread still writes into Dovecot.
    for server in sorted(_LIVE, key=lambda s: isinstance(s, DovecotServer)):
        try:
            server.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- #
# mailbridge configuration for a sandbox account
# --------------------------------------------------------------------------- #

TomlValue = str | int | float | bool | list[str]


def config_toml(*, database: str, seller: str, staff: str, imap_port: int, smtp_port: int,
                imap_password_file: str | None = None, imap_password: str | None = None,
                smtp_login: bool = False, name: str = "acme", seller_name: str = "Acme Outdoor",
                staff_senders: list[str] | None = None,
                sections: Mapping[str, Mapping[str, TomlValue]] | None = None) -> str:
    """A complete mailbridge TOML file for one account served by this sandbox (loopback, no TLS).

    ``sections`` adds or overrides keys per table: ``{"outbox": {...}, "account": {...},
    "imap": {...}, "smtp": {...}}``; "account" holds the ``[[accounts]]`` keys themselves.
    With ``smtp_login`` mailbridge authenticates to SandboxSMTP with the IMAP credentials.
    """
    extra = {k: dict(v) for k, v in (sections or {}).items()}
    password = {"password_file": imap_password_file} if imap_password_file else {"password": imap_password or ""}
    tables: dict[str, dict[str, TomlValue]] = {
        "database": {"url": database},
        **{k: v for k, v in extra.items() if k not in ("account", "imap", "smtp")},
    }
    account: dict[str, TomlValue] = {
        "name": name, "marketplace": "amazon.com", "seller_name": seller_name, "seller_address": seller,
        "staff_address": staff, "staff_senders": staff_senders or [f"*@{staff.rpartition('@')[2]}"],
        **extra.get("account", {}),
    }
    imap: dict[str, TomlValue] = {"host": LOOPBACK, "port": imap_port, "security": "none", "username": seller,
                                  **password, **extra.get("imap", {})}
    smtp: dict[str, TomlValue] = {"host": LOOPBACK, "port": smtp_port, "security": "none",
                                  **({} if smtp_login else {"username": ""}), **extra.get("smtp", {})}
    lines = ["# mailbridge configuration for a sandbox on 127.0.0.1 (security \"none\" is loopback-only)"]
    for table, values in tables.items():
        lines += [f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
    lines += ["[[accounts]]", *(f"{k} = {_toml(v)}" for k, v in account.items()), ""]
    for table, values in (("accounts.imap", imap), ("accounts.smtp", smtp)):
        lines += [f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
    return "\n".join(lines)


def _toml(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a JSON string or array of strings is valid TOML
