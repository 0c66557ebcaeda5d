"""Thin IMAP adapter over imapclient: one connection, one thread.

imapclient is synchronous and not thread-safe, so each account's ingest runs
in its own thread with its own :class:`MailboxSession`. Everything here is
protocol; what to do with the mail is the pipeline's business.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

from bridge.adapters.oauth2 import TokenProvider, TokenUnavailable
from bridge.config import ImapSettings
from bridge.domain.prepare import FetchedMail

log = logging.getLogger(__name__)

MOVE_CHUNK = 500
# Message-IDs per SEARCH when looking for sent mail: a line of about 3 KB, well within servers' limits.
SEARCH_CHUNK = 50

# RFC 2177: servers may drop an IDLE after 30 minutes of inactivity; re-issue well before.
IDLE_REISSUE_SECONDS = 25 * 60


class ImapError(Exception):
    """An IMAP operation failed. ``permanent`` errors (bad login, missing folder) need an operator;
    ``revoked``: the account's OAuth2 grant was revoked and it waits for a new authorization."""

    def __init__(self, message: str, permanent: bool = False, revoked: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.revoked = revoked


class ConnectionLost(ImapError):
    """The connection died (server restart, network drop, dead socket under IDLE)."""


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    uidnext: int | None
    exists: int


ClientFactory = Callable[[ImapSettings], imapclient.IMAPClient]
T = TypeVar("T")


def tls_context(settings: ImapSettings) -> ssl.SSLContext | None:
    """The context a tls/starttls connection verifies the server with; None for security = none.

    Only TLS needs the CA store (about 20 ms to load). Made outside the connection's error
    handling: a store that cannot be loaded is the machine's problem, not a connection to retry.
    """
    return ssl.create_default_context() if settings.security != "none" else None


def connect(settings: ImapSettings) -> imapclient.IMAPClient:
    """Connect (TLS by default, certificate verified), not yet logged in."""
    context = tls_context(settings)
    try:
        if settings.security == "tls":
            client = imapclient.IMAPClient(settings.host, port=settings.port, ssl=True, ssl_context=context,
                                           timeout=settings.timeout_seconds)
        else:
            client = imapclient.IMAPClient(settings.host, port=settings.port, ssl=False,
                                           timeout=settings.timeout_seconds)
            if settings.security == "starttls":
                client.starttls(context)
    except (OSError, IMAPClientError) as exc:
        raise ConnectionLost(f"cannot connect to IMAP server {settings.host}:{settings.port}: {exc}") from exc
    return client


def default_client(settings: ImapSettings) -> imapclient.IMAPClient:
    """Connect and log in with the password."""
    client = connect(settings)
    try:
        client.login(settings.username, settings.password.reveal())
    except LoginError as exc:
        _quiet_logout(client)
        raise ImapError(
            f"IMAP login as {settings.username} at {settings.host} was refused: {_text(exc)}; "
            "check the username and password_file in the account's [imap] settings", permanent=True) from exc
    except (OSError, IMAPClientError) as exc:
        _quiet_logout(client)
        raise ConnectionLost(f"IMAP login at {settings.host} failed: {exc}") from exc
    return client


def oauth2_client(tokens: TokenProvider) -> ClientFactory:
    """A factory that logs in with SASL XOAUTH2 (imapclient's ``oauth2_login``) and ``tokens``' access token.

    A refused token is replaced by a freshly refreshed one once (it may have been revoked
    early, or the server's clock is ahead); refused again, the login is a permanent error.
    """
    def connect_and_login(settings: ImapSettings) -> imapclient.IMAPClient:
        client = connect(settings)
        try:
            _xoauth2_login(client, settings, tokens)
        except BaseException:
            _quiet_logout(client)
            raise
        return client

    return connect_and_login


def _xoauth2_login(client: imapclient.IMAPClient, settings: ImapSettings, tokens: TokenProvider) -> None:
    for fresh in (False, True):
        try:
            token = tokens(fresh)
        except TokenUnavailable as exc:
            if exc.permanent:
                raise ImapError(str(exc), permanent=True, revoked=exc.revoked) from None
            raise ConnectionLost(str(exc)) from None      # the token endpoint is down: retried with backoff
        try:
            client.oauth2_login(settings.username, token)
            return
        except LoginError as exc:
            if fresh:
                raise ImapError(
                    f"IMAP login (XOAUTH2) as {settings.username} at {settings.host} was refused even with a "
                    f"freshly refreshed access token: {_text(exc)}; check the username, that the app registration "
                    "has the IMAP scope and that IMAP is enabled for the mailbox", permanent=True) from None
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"IMAP login at {settings.host} failed: {exc}") from exc


def _text(exc: BaseException) -> str:
    return str(exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc)


def _quiet_logout(client: imapclient.IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - closing a connection that is already broken
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


def split_by_size(uids: Sequence[int], sizes: dict[int, int], max_bytes: int) -> tuple[list[int], list[int]]:
    """The UIDs whose body may be fetched, and those over ``max_bytes`` (their header only)."""
    listed = [u for u in uids if u in sizes]
    return [u for u in listed if sizes[u] <= max_bytes], [u for u in listed if sizes[u] > max_bytes]


def assemble(uids: Sequence[int], sizes: dict[int, int], bodies: dict[int, bytes], headers: dict[int, bytes],
             uids_between: Callable[[int, int], list[int]]) -> list[FetchedMail]:
    """A fetch's answers in UID order: the body, the header of oversize mail, or "missing".

    A UID the server listed but sent nothing for is asked about again: still
    there, it is returned as missing (never skipped silently); expunged
    meanwhile, there is nothing to record.
    """
    unanswered = [u for u in uids if u in sizes and u not in bodies and u not in headers]
    still_there = set(uids_between(min(unanswered), max(unanswered))) if unanswered else set()
    out = []
    for uid in uids:
        if uid in bodies:
            out.append(FetchedMail(uid=uid, size=sizes[uid], raw=bodies[uid]))
        elif uid in headers:
            out.append(FetchedMail(uid=uid, size=sizes[uid], raw=headers[uid], header_only=True))
        elif uid in still_there:
            out.append(FetchedMail(uid=uid, size=sizes.get(uid, 0), raw=b"", missing=True))
    return out


class MailboxSession:
    """One logged-in IMAP connection. Not thread-safe: use it from one thread."""

    def __init__(self, settings: ImapSettings, factory: ClientFactory = default_client) -> None:
        self.settings = settings
        self.client = factory(settings)
        caps = {c.decode().upper() if isinstance(c, bytes) else str(c).upper() for c in self.client.capabilities()}
        self.can_idle = "IDLE" in caps
        self.can_move = "MOVE" in caps
        self.can_uidplus = "UIDPLUS" in caps
        self.can_multiappend = "MULTIAPPEND" in caps
        self.folder: str | None = None

    def close(self) -> None:
        _quiet_logout(self.client)

    def __enter__(self) -> "MailboxSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------

    def select(self, folder: str) -> FolderInfo:
        try:
            info = self.client.select_folder(folder, readonly=False)
        except IMAPClientError as exc:
            raise ImapError(f"cannot open folder {folder!r}: {_text(exc)}; check imap.folder", permanent=True) from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost selecting {folder!r}: {exc}") from exc
        self.folder = folder
        return FolderInfo(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    def uidnext_now(self) -> int | None:
        """The selected folder's UIDNEXT as the server has it now (STATUS), None if it does not say.

        Mail that arrives while a command runs is announced (EXISTS) in that command's
        responses, which imapclient does not hand back for SEARCH or FETCH, and the server
        need not announce it again in IDLE (Dovecot does not): a UIDNEXT above the highest UID
        a pass saw tells that something may have come in meanwhile.
        """
        if self.folder is None:
            return None
        try:
            status = self.client.folder_status(self.folder, [b"UIDNEXT"])
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"STATUS failed: {exc}") from exc
        value = status.get(b"UIDNEXT")
        return int(value) if value is not None else None

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than ``last_uid``, ascending.

        ``UID n:*`` always matches the highest UID even when it is below n
        (RFC 3501 6.4.8), so the result is filtered.
        """
        try:
            uids = self.client.search(["UID", f"{last_uid + 1}:*"])
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"UID SEARCH failed: {exc}") from exc
        return sorted(u for u in uids if u > last_uid)

    def uids_between(self, first: int, last: int) -> list[int]:
        """UIDs present from ``first`` to ``last`` inclusive."""
        try:
            uids = self.client.search(["UID", f"{first}:{last}"])
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"UID SEARCH failed: {exc}") from exc
        return sorted(u for u in uids if first <= u <= last)

    def fetch(self, uids: Sequence[int], max_bytes: int) -> Iterator[FetchedMail]:
        """Fetch ``uids`` (a batch): sizes first, then bodies of those within ``max_bytes``.

        ``BODY.PEEK[]`` leaves ``\\Seen`` alone: staff reading the mailbox keep their flags.
        Mail over the size limit is fetched as its header only.
        """
        if not uids:
            return
        try:
            sizes = {uid: int(data.get(b"RFC822.SIZE", 0)) for uid, data in self.client.fetch(list(uids), ["RFC822.SIZE"]).items()}
            small, large = split_by_size(uids, sizes, max_bytes)
            bodies = self.client.fetch(small, ["BODY.PEEK[]"]) if small else {}
            headers = self.client.fetch(large, ["BODY.PEEK[HEADER]"]) if large else {}
        except (OSError, IMAPClientError, socket.timeout) as exc:
            raise ConnectionLost(f"FETCH failed: {exc}") from exc
        yield from assemble(uids, sizes, {u: bytes(d[b"BODY[]"]) for u, d in bodies.items() if b"BODY[]" in d},
                            {u: bytes(d.get(b"BODY[HEADER]", b"")) for u, d in headers.items()}, self.uids_between)

    # -- writing ---------------------------------------------------------------

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move mail that is already safely recorded. MOVE (RFC 6851) when offered.

        In chunks: servers refuse over-long command lines (Dovecot: "Too long
        argument" somewhere past 10,000 UIDs).
        """
        try:
            for start in range(0, len(uids), MOVE_CHUNK):
                chunk = list(uids[start:start + MOVE_CHUNK])
                if self.can_move:
                    self.client.move(chunk, folder)
                else:
                    self.client.copy(chunk, folder)
                    self.client.delete_messages(chunk)
                    if self.can_uidplus:
                        self.client.uid_expunge(chunk)
                    else:
                        self.client.expunge()
        except IMAPClientError as exc:
            raise ImapError(f"cannot move mail to {folder!r}: {_text(exc)}; does the folder exist?") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost moving mail: {exc}") from exc

    def ensure_folder(self, folder: str) -> None:
        try:
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)
        except IMAPClientError as exc:
            raise ImapError(f"cannot create folder {folder!r}: {_text(exc)}", permanent=True) from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost creating {folder!r}: {exc}") from exc

    def append(self, folder: str, raw: bytes, flags: Sequence[bytes] = (b"\\Seen",)) -> None:
        try:
            self.client.append(folder, raw, flags=list(flags))
        except IMAPClientError as exc:
            raise ImapError(f"cannot append to {folder!r}: {_text(exc)}") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost appending to {folder!r}: {exc}") from exc

    def multiappend(self, folder: str, messages: Sequence[bytes], flags: Sequence[bytes] = (b"\\Seen",)) -> None:
        """APPEND several messages in one command (RFC 3502: all or none are stored)."""
        try:
            # imapclient returns a NO answer to MULTIAPPEND (such as [TRYCREATE]) instead of raising it.
            typ, data = self.client.multiappend(folder, [{"msg": raw, "flags": list(flags)} for raw in messages])
            if typ != "OK":
                text = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
                raise ImapError(f"cannot append to {folder!r}: {typ} {text}")
        except IMAPClientError as exc:
            raise ImapError(f"cannot append to {folder!r}: {_text(exc)}") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost appending to {folder!r}: {exc}") from exc

    def find_message_ids(self, folder: str, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs are in ``folder``: one SEARCH per chunk of IDs, not one per ID.

        (Selects the folder read-only.) SEARCH HEADER is a substring match
        (RFC 3501 6.4.4), so the Message-ID headers of the hits are fetched and
        compared exactly. A missing folder raises: "not found" must mean "not
        there", never "we looked in the wrong place".
        """
        wanted = {mid.strip("<>") for mid in message_ids}
        if not wanted:
            return set()
        try:
            if not self.client.folder_exists(folder):
                raise ImapError(f"the Sent folder {folder!r} does not exist; set imap.sent_folder to the folder "
                                "where sent mail is kept", permanent=True)
            self.client.select_folder(folder, readonly=True)
            self.folder = None
            found: set[str] = set()
            ordered = sorted(wanted)
            for start in range(0, len(ordered), SEARCH_CHUNK):
                chunk = ordered[start:start + SEARCH_CHUNK]
                # OR is binary and prefix (RFC 3501 6.4.4): OR OR a b c matches any of a, b, c.
                criteria: list[str] = ["OR"] * (len(chunk) - 1)
                for mid in chunk:
                    criteria += ["HEADER", "Message-ID", f"<{mid}>"]
                hits = self.client.search(criteria)
                if hits:
                    headers = self.client.fetch(hits, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
                    for data in headers.values():
                        found |= _message_ids_in(next((v for k, v in data.items() if k.startswith(b"BODY[")), b""))
            return found & wanted
        except IMAPClientError as exc:
            raise ImapError(f"cannot search {folder!r}: {_text(exc)}") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost searching {folder!r}: {exc}") from exc

    # -- waiting ---------------------------------------------------------------

    def wait(self, seconds: float, stop: threading.Event, beat: Callable[[], None] = lambda: None) -> None:
        """Wait up to ``seconds`` for new mail: IDLE when offered and enabled, else sleep (poll).

        Returns early when the server reports a change or ``stop`` is set.
        Raises :class:`ConnectionLost` when the connection is dead. ``beat`` is
        called about every second while waiting: the caller's heartbeat.
        """
        deadline = time.monotonic() + min(seconds, IDLE_REISSUE_SECONDS)
        if not (self.can_idle and self.settings.idle):
            try:
                self.client.noop()
            except (OSError, IMAPClientError) as exc:
                raise ConnectionLost(f"NOOP failed: {exc}") from exc
            while not stop.wait(max(0.0, min(1.0, deadline - time.monotonic()))) and time.monotonic() < deadline:
                beat()
            return
        try:
            self.client.idle()
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"IDLE failed: {exc}") from exc
        changed = False
        try:
            while not stop.is_set() and not changed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                step = min(1.0, remaining)
                started = time.monotonic()
                responses = self.client.idle_check(timeout=step)
                beat()
                if responses:
                    changed = any(_is_change(r) for r in responses)
                    if any(_is_bye(r) for r in responses):
                        raise ConnectionLost("server said BYE during IDLE")
                elif time.monotonic() - started < step / 4:
                    # idle_check returned nothing long before its timeout: the
                    # socket is readable with no data, i.e. closed by the peer.
                    raise ConnectionLost("connection closed during IDLE")
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"IDLE wait failed: {exc}") from exc
        try:
            self.client.idle_done()
        except (OSError, IMAPClientError) as exc:
            raise ConnectionLost(f"ending IDLE failed: {exc}") from exc


def _message_ids_in(header: bytes) -> set[str]:
    """The Message-IDs in a fetched ``Message-ID:`` header field (unfolded, brackets removed)."""
    text = header.decode("ascii", errors="replace")
    return {m.strip() for m in re.findall(r"<([^<>\s]+)>", text)}


def _is_change(response: tuple[object, ...]) -> bool:
    return len(response) >= 2 and response[1] in (b"EXISTS", b"EXPUNGE", b"RECENT", b"FETCH")


def _is_bye(response: tuple[object, ...]) -> bool:
    return bool(response) and response[0] == b"BYE"


class SentFolder:
    """The account's Sent folder over one long-lived IMAP connection, for the outbox.

    Copies of sent mail are appended in batches (MULTIAPPEND, RFC 3502, when
    offered) and interrupted sends are looked up by Message-ID, all on one
    connection opened when first needed and kept: a login per message cost more
    than the send. A dropped connection is opened again once per call.

    A missing folder answers an APPEND with ``[TRYCREATE]`` (RFC 3501 6.3.11):
    it is created, once, and the APPEND tried again.

    Not thread-safe: the outbox calls it from one thread of its own.
    """

    def __init__(self, settings: ImapSettings, factory: ClientFactory = default_client) -> None:
        self.settings = settings
        self.factory = factory
        self.folder = settings.sent_folder
        self._session: MailboxSession | None = None
        self.create_tried = False     # the folder is created at most once in this object's life

    def _open(self) -> MailboxSession:
        if self._session is None:
            self._session = MailboxSession(self.settings, self.factory)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _again_after_drop(self, action: Callable[[MailboxSession], T]) -> T:
        try:
            return action(self._open())
        except ConnectionLost:
            self.close()              # a connection kept open may have timed out on the server's side
            return action(self._open())

    def find(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs are in the Sent folder. Raises ImapError."""
        return self._again_after_drop(lambda session: session.find_message_ids(self.folder, message_ids))

    def append(self, messages: Sequence[bytes]) -> None:
        """Append copies (seen) of ``messages``; creates the folder on TRYCREATE, once. Raises ImapError."""
        if messages:
            self._again_after_drop(lambda session: self._append(session, messages))

    def _append(self, session: MailboxSession, messages: Sequence[bytes]) -> None:
        try:
            _append_all(session, self.folder, messages)
        except ImapError as exc:
            if self.create_tried or "TRYCREATE" not in str(exc).upper():
                raise
            self.create_tried = True
            log.info("the Sent folder %r does not exist; creating it", self.folder)
            session.ensure_folder(self.folder)
            _append_all(session, self.folder, messages)


def _append_all(session: MailboxSession, folder: str, messages: Sequence[bytes]) -> None:
    if len(messages) > 1 and session.can_multiappend:
        session.multiappend(folder, messages)
    else:
        for raw in messages:
            session.append(folder, raw)
