"""Per-account ingest worker: select, fetch new UIDs in batches, record, move; IDLE or poll; reconnect.

Runs in its own thread with its own IMAP connection (imapclient is not
thread-safe). The UID checkpoint in the database, not ``\\Seen`` flags, says
what has been handled, so staff may read, flag or leave mail as they like.
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Generator

from sqlalchemy.engine import Engine

from . import store
from .imap import ClientFactory, ConnectionLost, ImapError, MailboxSession, default_client
from .pipeline import AccountContext, BatchResult, ingest_batch, queue_staff_alert
from .prepare import FetchedMail, Prepared
from .prepare import context as prepare_context
from .reader import (READ_AHEAD_MIN_BATCHES, BacklogReader, ReaderFailed, ReaderJob, ReaderUnavailable,
                     spare_reads_ahead)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IngestStats:
    recorded: int = 0
    forwarded: int = 0
    history: int = 0
    duplicates: int = 0
    quarantined: int = 0
    relayed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, result: BatchResult) -> None:
        self.recorded += result.recorded
        self.forwarded += result.forwarded
        self.history += result.history
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined
        self.relayed += result.relayed
        for kind, n in result.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + n


class AccountIngest:
    def __init__(self, engine: Engine, acct: AccountContext, *, factory: ClientFactory = default_client,
                 clock: Clock = utcnow, on_committed: Callable[[], None] = lambda: None,
                 forward_existing: bool | None = None) -> None:
        self.engine = engine
        self.acct = acct
        self.factory = factory
        self.clock = clock
        self.on_committed = on_committed
        self.forward_existing = acct.settings.forward_existing if forward_existing is None else forward_existing
        self.stats = IngestStats()

    @property
    def imap(self):  # type: ignore[no-untyped-def]
        return self.acct.settings.imap

    def sync(self, session: MailboxSession, stop: threading.Event | None = None) -> IngestStats:
        """Record every message above the checkpoint. Safe to call any number of times."""
        folder = self.imap.folder
        info = session.select(folder)
        now = self.clock()
        with self.engine.begin() as conn:
            checkpoint = store.mailbox_checkpoint(conn, self.acct.name, folder)
        if checkpoint is None or checkpoint.uidvalidity != info.uidvalidity:
            history_until = 0
            if checkpoint is None and not self.forward_existing:
                # First run: mail already in the mailbox is recorded as history
                # (threaded, searchable) but not forwarded: no flood for staff.
                present = session.uids_after(0)
                history_until = present[-1] if present else 0
            with self.engine.begin() as conn:
                store.start_mailbox(conn, self.acct.name, folder, info.uidvalidity, history_until, now)
                if checkpoint is not None:
                    # RFC 3501 2.3.1.1: UIDs of the old validity mean nothing now. Re-read the
                    # folder; find_duplicate (Message-ID + content hash) keeps known mail from
                    # being forwarded again.
                    log.warning("account %s: UIDVALIDITY of %s changed from %s to %s; resynchronising",
                                self.acct.name, folder, checkpoint.uidvalidity, info.uidvalidity)
                    queue_staff_alert(conn, self.acct, f"Mailbox {folder} was rebuilt on the server",
                                      f"The IMAP server changed UIDVALIDITY of {folder} "
                                      f"({checkpoint.uidvalidity} -> {info.uidvalidity}). mailbridge re-reads the "
                                      "folder; mail it has already handled is recognised and not forwarded again.",
                                      now)
            checkpoint = store.mailbox_checkpoint_or_fail(self.engine, self.acct.name, folder)
            self.on_committed()
        self._move_leftovers(session, checkpoint)
        uids = session.uids_after(checkpoint.last_uid)
        if uids:
            log.info("account %s: %d new message(s) in %s", self.acct.name, len(uids), folder)
        batches = self._batches(session, uids, info.uidvalidity, stop)
        done = 0
        try:
            for batch in batches:
                if stop is not None and stop.is_set():
                    break
                result = ingest_batch(self.engine, self.acct, folder, info.uidvalidity, batch,
                                      checkpoint.history_until_uid, self.clock())
                self.stats.add(result)
                if result.outbox_rows:
                    self.on_committed()
                # Only now, after commit, may mail leave the folder (DESIGN.md invariants).
                self._move(session, result.processed_uids, result.quarantined_uids)
                done += len(batch)
                if len(uids) > self.imap.batch_size:
                    log.info("account %s: %d/%d recorded", self.acct.name, done, len(uids))
        finally:
            batches.close()   # stops a backlog reader still running
        if not uids:
            with self.engine.begin() as conn:
                store.record_fetch(conn, self.acct.name, folder, self.clock(), None)
        return self.stats

    def _batches(self, session: MailboxSession, uids: list[int], uidvalidity: int,
                 stop: threading.Event | None) -> Generator[list[FetchedMail] | list[Prepared], None, None]:
        """The new mail in UID order, a batch at a time.

        A large backlog is read ahead by a helper process (bridge.reader) while
        the caller records; this session fetches the first batch meanwhile, and
        everything the helper did not deliver if it fails.
        """
        size, limit = self.imap.batch_size, self.imap.max_message_bytes
        done = 0   # uids[:done] are handed out
        reader = None
        own_first = size   # the first batch is fetched here while the helper starts on the next
        if self._reads_ahead(uids):
            if spare_reads_ahead(self.imap):
                own_first = 0   # the spare helper has read the first batches already
            reader = self._start_reader(uids[own_first:], uidvalidity)
        if reader is not None:
            with reader:
                if own_first:
                    yield list(session.fetch(uids[:own_first], limit))
                    done = own_first
                try:
                    for last_uid, prepared in reader:
                        done = bisect.bisect_right(uids, last_uid, lo=done)
                        yield prepared
                    if reader.used_head_start:
                        log.info("account %s: %d of them were read before the daemon had started",
                                 self.acct.name, reader.used_head_start)
                except ReaderFailed as exc:
                    if stop is not None and stop.is_set():
                        return   # stopping: systemd's SIGTERM reached the helper too
                    log.warning("account %s: %s; fetching the remaining %d messages on the main connection",
                                self.acct.name, exc, len(uids) - done)
        for start in range(done, len(uids), size):
            yield list(session.fetch(uids[start:start + size], limit))

    def _reads_ahead(self, uids: list[int]) -> bool:
        return (self.imap.read_ahead and self.factory is default_client
                and len(uids) > READ_AHEAD_MIN_BATCHES * self.imap.batch_size)

    def _start_reader(self, uids: list[int], uidvalidity: int) -> BacklogReader | None:
        try:
            # No secret for the helper: it reads, the pipeline completes (bridge.prepare). The same
            # context as a head start's (cmd_run), which is used only if the two are equal.
            ctx = prepare_context(self.acct.settings, b"")
            reader = BacklogReader(ReaderJob(self.imap, uidvalidity, tuple(uids), ctx))
        except ReaderUnavailable as exc:   # one connection does it all
            log.log(logging.INFO if exc.busy else logging.WARNING, "account %s: %s; fetching %d messages on the "
                    "main connection", self.acct.name, exc, len(uids))
            return None
        log.info("account %s: reading %d messages ahead in process %s", self.acct.name, len(uids), reader.pid)
        return reader

    def _move(self, session: MailboxSession, processed: list[int], quarantined: list[int]) -> None:
        if self.imap.processed_folder and processed:
            session.move(processed, self.imap.processed_folder)
        if self.imap.quarantine_folder and quarantined:
            session.move(quarantined, self.imap.quarantine_folder)

    def _move_leftovers(self, session: MailboxSession, checkpoint: store.MailboxCheckpoint) -> None:
        """Mail recorded before a crash but not yet moved: move it now.

        A failure here is logged and recorded but does not stop new mail from
        being ingested: the leftovers are tried again on the next pass.
        """
        if not (self.imap.processed_folder or self.imap.quarantine_folder) or checkpoint.last_uid == 0:
            return
        try:
            present = session.uids_between(1, checkpoint.last_uid)
            if not present:
                return
            with self.engine.begin() as conn:
                quarantined = set(store.quarantined_uids(conn, self.acct.name, self.imap.folder,
                                                         checkpoint.uidvalidity))
            self._move(session, [u for u in present if u not in quarantined],
                       [u for u in present if u in quarantined])
        except ConnectionLost:
            raise
        except ImapError as exc:
            log.warning("account %s: cannot move already recorded mail: %s; new mail is still ingested",
                        self.acct.name, exc)
            self.record_error(str(exc))

    def record_error(self, message: str) -> None:
        try:
            with self.engine.begin() as conn:
                store.record_fetch(conn, self.acct.name, self.imap.folder, self.clock(), message)
        except Exception:  # noqa: BLE001 - the database may be what failed
            log.exception("account %s: cannot record the error in the database", self.acct.name)

    def _ensure_folders(self, session: MailboxSession) -> None:
        for folder in (self.imap.processed_folder, self.imap.quarantine_folder):
            if folder:
                session.ensure_folder(folder)

    def run_once(self) -> IngestStats:
        with MailboxSession(self.imap, self.factory) as session:
            self._ensure_folders(session)
            return self.sync(session)

    def run_forever(self, stop: threading.Event) -> None:
        """Sync, then wait with IDLE (or poll) until stopped; reconnect with backoff on failures."""
        backoff = 1.0
        while not stop.is_set():
            try:
                with MailboxSession(self.imap, self.factory) as session:
                    log.info("account %s: connected to %s (IDLE %s)", self.acct.name, self.imap.host,
                             "on" if session.can_idle and self.imap.idle else "off, polling")
                    self._ensure_folders(session)
                    while not stop.is_set():
                        self.sync(session, stop)
                        backoff = 1.0   # only a completed pass proves the account healthy again
                        session.wait(self.imap.poll_seconds, stop)
            except ImapError as exc:
                delay = max(backoff, 60.0) if exc.permanent else backoff
                log.warning("account %s: %s; retrying in %.0f s", self.acct.name, exc, delay)
                self.record_error(str(exc))
            except Exception as exc:  # noqa: BLE001 - keep the account alive whatever happened
                delay = backoff
                log.exception("account %s: ingest failed; retrying in %.0f s", self.acct.name, delay)
                self.record_error(f"{type(exc).__name__}: {exc}")
            else:
                break
            stop.wait(delay * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 300.0)
