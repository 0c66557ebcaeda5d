"""Delivery of what SandboxSMTP accepted into Dovecot, by IMAP APPEND on one thread."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from bridge.sandbox.dovecot import DovecotServer, close_quietly

# MULTIAPPEND (RFC 3502) of up to this many messages: the tests' bursts of
# hundreds of messages land in about half the time single APPENDs take.
_BATCH_SIZE: Final = 200
_LONE_LINE_END: Final = re.compile(rb"\r\n|\r(?!\n)|\n")


@dataclass(frozen=True)
class DeliveryFailure:
    """A message SandboxSMTP accepted but could not APPEND into Dovecot."""

    user: str
    folder: str
    message_id: str | None
    error: str


@dataclass(frozen=True)
class Delivery:
    """One copy of an accepted message for one user's folder."""

    user: str
    folder: str
    data: bytes
    flags: tuple[bytes, ...]
    message_id: str | None


class Deliverer:
    """One thread that APPENDs accepted mail, one cached IMAP connection per user."""

    def __init__(self, dovecot: DovecotServer) -> None:
        self._dovecot = dovecot
        self._queue: deque[Delivery | None] = deque()
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

    def submit(self, delivery: Delivery) -> None:
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
                close_quietly(client)
            self._clients.clear()

    def _next_batch(self) -> list[Delivery]:
        """The next deliveries for one (user, folder, flags), in order; empty
        when stopped. Batches turn 1000 APPENDs into a few MULTIAPPENDs."""
        with self._cond:
            while not self._queue:
                self._cond.wait()
            first = self._queue[0]
            if first is None:
                return []
            batch: list[Delivery] = []
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

    def _deliver(self, batch: list[Delivery]) -> None:
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
            close_quietly(stale)



def _crlf(data: bytes) -> bytes:
    """Line endings as imaplib's APPEND sends them (RFC 5322: CRLF only)."""
    return _LONE_LINE_END.sub(b"\r\n", data)
