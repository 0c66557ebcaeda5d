"""A read-only IMAP session on the standard library's imaplib, for bulk fetching.

imapclient parses every FETCH response with a Python tokenizer, which costs
about 60 us a message: more than fetching and reading the bytes. The backlog
reader (bridge.reader) fetches thousands of messages and asks for only two
shapes of response, ``* n FETCH (UID u RFC822.SIZE s)`` and
``* n FETCH (UID u BODY[] {len}`` followed by the message, so this session
reads them with regular expressions instead, and reads FETCH responses itself
(imaplib logs in, EXAMINEs, searches and logs out).

It can only EXAMINE a folder and fetch with ``BODY.PEEK``: nothing it does can
change the mailbox. ``fetch()`` puts the answers together with the same
:func:`bridge.imap.assemble` as :meth:`bridge.imap.MailboxSession.fetch`.
"""

from __future__ import annotations

import imaplib
import re
import socket
from typing import IO, Sequence, cast

from imapclient import imap_utf7

from .config import ImapSettings
from .imap import ConnectionLost, ImapError, assemble, split_by_size, tls_context
from .prepare import FetchedMail

_UID_RE = re.compile(rb"\bUID (\d+)")
_SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_LITERAL_RE = re.compile(rb"\{(\d+)\}\r?\n\Z")
_MAX_LINE = 1_000_000   # as imaplib: a longer response line is an error, not a reason to read on
_ERRORS = (imaplib.IMAP4.error, OSError, socket.timeout)


def _quote(folder: str) -> str:
    """The folder as an IMAP quoted string, in modified UTF-7 (RFC 3501 5.1.3): plain ASCII."""
    name = str(imap_utf7.encode(folder).decode("ascii"))
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(u) for u in uids)


class ReadOnlySession:
    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self._tag = 0
        context = tls_context(settings)
        try:
            if settings.security == "tls":
                self.imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=context,
                                                             timeout=settings.timeout_seconds)
            else:
                self.imap = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout_seconds)
                if settings.security == "starttls":
                    self.imap.starttls(ssl_context=context)
        except _ERRORS as exc:
            raise ConnectionLost(f"cannot connect to IMAP server {settings.host}:{settings.port}: {exc}") from exc
        try:
            self.imap.login(settings.username, settings.password.reveal())
        except imaplib.IMAP4.abort as exc:
            self.close()
            raise ConnectionLost(f"IMAP login at {settings.host} failed: {exc}") from exc
        except (imaplib.IMAP4.error, UnicodeError) as exc:
            self.close()
            raise ImapError(f"IMAP login as {settings.username} at {settings.host} was refused: {exc}",
                            permanent=True) from exc
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"IMAP login at {settings.host} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self.imap.logout()
        except Exception:  # noqa: BLE001 - closing a connection that may be broken already
            try:
                self.imap.shutdown()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> "ReadOnlySession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ok(self, what: str, typ: str, data: Sequence[object]) -> Sequence[object]:
        if typ != "OK":
            raise ImapError(f"{what} failed: {data!r}")
        return data

    def examine(self, folder: str) -> int:
        """EXAMINE ``folder`` (read-only); returns its UIDVALIDITY."""
        try:
            self._ok(f"EXAMINE {folder!r}", *self.imap.select(_quote(folder), readonly=True))
            _, validity = self.imap.response("UIDVALIDITY")
        except _ERRORS as exc:
            raise ConnectionLost(f"EXAMINE {folder!r} failed: {exc}") from exc
        if not validity or validity[0] is None:
            raise ImapError(f"the server sent no UIDVALIDITY for {folder!r}")
        return int(validity[-1])

    def uids_between(self, first: int, last: int) -> list[int]:
        try:
            data = self._ok("UID SEARCH", *self.imap.uid("SEARCH", f"UID {first}:{last}"))
        except _ERRORS as exc:
            raise ConnectionLost(f"UID SEARCH failed: {exc}") from exc
        found = [int(u) for line in data if isinstance(line, bytes) for u in line.split()]
        return sorted(u for u in found if first <= u <= last)

    def _exchange(self, command: str) -> list[bytes | tuple[bytes, bytes]]:
        """Send one command; its untagged responses, shaped as imaplib's command methods return them.

        imaplib's response machinery (a regular expression per line, bookkeeping
        for every kind of response) cost three quarters of a FETCH. A FETCH
        answer needs less: lines, and after a line ending in ``{n}`` the n
        bytes of a literal, paired with that line. Our own tags keep imaplib's
        state apart; the tagged reply ends the exchange (NO/BAD: ImapError).
        """
        self._tag += 1
        tag = b"MBR%d " % self._tag
        self.imap.send(tag + command.encode("ascii") + b"\r\n")
        file = cast(IO[bytes], self.imap.file)   # imaplib opens it in binary mode
        data: list[bytes | tuple[bytes, bytes]] = []
        while True:
            line = file.readline(_MAX_LINE + 1)
            if not line:
                raise ConnectionLost(f"the IMAP server closed the connection during {command.split()[1]}")
            if len(line) > _MAX_LINE:
                raise ImapError(f"the IMAP server sent a line of over {_MAX_LINE} bytes")
            if line.startswith(tag):
                if not line.startswith(b"OK", len(tag)):
                    raise ImapError(f"{command.split()[1]} failed: {line.decode('ascii', 'replace').strip()}")
                return data
            literal = _LITERAL_RE.search(line)
            if literal is None:
                data.append(line.rstrip(b"\r\n"))
                continue
            size = int(literal.group(1))
            body = file.read(size)
            if len(body) < size:
                raise ConnectionLost("the IMAP server closed the connection in the middle of a message")
            data.append((line.rstrip(b"\r\n"), body))

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[FetchedMail]:
        """Sizes first, then bodies within ``max_bytes`` and headers of the rest (as MailboxSession.fetch)."""
        if not uids:
            return []
        try:
            sizes: dict[int, int] = {}
            for line in self._exchange(f"UID FETCH {_uid_set(uids)} (RFC822.SIZE)"):
                head = line[0] if isinstance(line, tuple) else line
                if not isinstance(head, bytes):
                    continue
                uid_m, size_m = _UID_RE.search(head), _SIZE_RE.search(head)
                if uid_m and size_m:   # other lines: unsolicited FLAGS updates from other sessions
                    sizes[int(uid_m.group(1))] = int(size_m.group(1))
            small, large = split_by_size(uids, sizes, max_bytes)
            bodies = self._literals(small, "BODY.PEEK[]", b"BODY[]")
            headers = self._literals(large, "BODY.PEEK[HEADER]", b"BODY[HEADER]")
        except _ERRORS as exc:
            raise ConnectionLost(f"FETCH failed: {exc}") from exc
        return assemble(uids, sizes, bodies, headers, self.uids_between)

    def _literals(self, uids: list[int], item: str, answer: bytes) -> dict[int, bytes]:
        if not uids:
            return {}
        return literals_by_uid(self._exchange(f"UID FETCH {_uid_set(uids)} ({item})"), answer)


def literals_by_uid(data: Sequence[object], answer: bytes) -> dict[int, bytes]:
    """The ``answer`` literal (``b"BODY[]"``) of each FETCH response in imaplib's ``data``, by UID.

    imaplib gives a response with a literal as ``(text before it, literal)``
    followed by the text after it (``b")"`` or ``b" UID 7)"``): RFC 3501 lets the
    server put UID on either side of the body, so both are read. Responses
    without the literal (unsolicited FLAGS updates) are skipped.
    """
    out: dict[int, bytes] = {}
    for index, line in enumerate(data):
        if not (isinstance(line, tuple) and len(line) == 2 and isinstance(line[0], bytes)
                and answer + b" {" in line[0]):
            continue
        uid = _UID_RE.search(line[0])
        after = data[index + 1] if index + 1 < len(data) else None
        if uid is None and isinstance(after, bytes):
            uid = _UID_RE.search(after)
        if uid is not None:
            out[int(uid.group(1))] = bytes(line[1])
    return out
