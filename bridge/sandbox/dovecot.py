"""A real Dovecot IMAP server on 127.0.0.1 for the demo and the tests.

:class:`DovecotServer` runs ``dovecot -F`` with the configuration of
:mod:`bridge.sandbox.dovecot_conf` (IDLE, CONDSTORE, QRESYNC, MOVE, UIDPLUS,
SPECIAL-USE; folders ``INBOX``, ``Sent``, ``Processed``, ``Quarantine``;
separator ``/``; plaintext login, no TLS) in a temporary directory, and offers
the few IMAP helpers tests need (append, fetch, UIDs, a forced UIDVALIDITY
change). Users (one passwd-file each) can be added while it runs.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import grp
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from imapclient import IMAPClient

from bridge.sandbox.dovecot_conf import (
    LOOPBACK,
    RunAs,
    check_credentials,
    check_reachable_by_others,
    render_config,
    render_oauth2_config,
    run_as_for_current_process,
)
from bridge.sandbox.errors import SandboxError, SandboxStartError, SandboxUnavailable
from bridge.sandbox.process_group import terminate_group

START_TIMEOUT: Final = 15.0
IMAP_TIMEOUT: Final = 10.0
_SBIN_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_APPENDUID_RE: Final = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
# Unix socket paths are limited to 108 bytes; Dovecot's longest socket name
# under base_dir is about 25 characters.
_MAX_BASE_DIR_LEN: Final = 80


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

    def __init__(self, users: Mapping[str, str], root: Path | None = None,
                 oauth2_introspection_url: str | None = None) -> None:
        # With an introspection URL the server also takes SASL XOAUTH2/OAUTHBEARER logins, each
        # token checked against that URL (an OAuth2 server the caller runs on 127.0.0.1).
        self._oauth2_introspection_url = oauth2_introspection_url
        self._users: dict[str, str] = {}
        for user, password in users.items():
            check_credentials(user, password)
            self._users[user] = password
        self._owns_root = root is None
        self._root: Path | None = Path(root) if root is not None else None
        self._base_dir: Path | None = None
        self._owns_base_dir = False
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._account_counter = 0
        self._run_as: RunAs | None = None

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
                _RUNNING.add(self)
                return

    def stop(self) -> None:
        """Stop every Dovecot process (master, login, imap, auth ...) and wait
        until the port is free. Mail data stays. Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            try:
                terminate_group(proc)
            finally:
                if self._port is not None:
                    _wait_port_free(self._port)
            _RUNNING.discard(self)

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
            _RUNNING.discard(self)

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
        check_credentials(user, password)
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
            close_quietly(client)
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
        self._run_as = run_as = run_as_for_current_process()
        if run_as.privileged:
            check_reachable_by_others(root.resolve())
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
        oauth2 = self._oauth2_introspection_url is not None
        if oauth2:
            assert self._oauth2_introspection_url is not None
            oauth2_conf = root / "dovecot-oauth2.conf.ext"
            oauth2_conf.write_text(render_oauth2_config(self._oauth2_introspection_url), encoding="utf-8")
            self._protect(oauth2_conf, 0o640)
        config.write_text(
            render_config(root=root, base_dir=self._base_dir, port=port, run_as=self._run_as, oauth2=oauth2),
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
            terminate_group(proc)
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


def close_quietly(client: IMAPClient) -> None:
    """Log out, or drop the socket when the server is already gone."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


# Servers still running, closed at interpreter exit so that no Dovecot outlives
# us. bridge.sandbox.smtp imports this module, so its own hook is registered
# later and runs earlier: SMTP deliveries stop before Dovecot does.
_RUNNING: set[DovecotServer] = set()


@atexit.register
def _close_all_at_exit() -> None:
    for server in list(_RUNNING):
        try:
            server.close()
        except Exception:
            pass
