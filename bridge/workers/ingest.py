"""Per-account ingest worker: select, fetch new UIDs in batches, record, move; IDLE or poll; reconnect.

Runs in its own thread with its own IMAP connection (imapclient is not
thread-safe). The UID checkpoint in the database, not ``\\Seen`` flags, says
what has been handled, so staff may read, flag or leave mail as they like.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sqlalchemy.engine import Engine

from bridge import store
from bridge.adapters.imap import (
    ClientFactory,
    ConnectionLost,
    ImapError,
    MailboxSession,
    default_client,
)
from bridge.config import ImapSettings
from bridge.domain.clock import Clock, utcnow
from bridge.services.account import AccountContext
from bridge.services.inbound import BatchResult, ingest_batch
from bridge.services.notify import queue_staff_alert
from bridge.workers.base import Backoff, Heartbeat, Lease, LeaseExpired, Unleased

if TYPE_CHECKING:  # prometheus_client only where metrics are served (not for `run --once`)
    from bridge.workers.metrics import Meter

log = logging.getLogger(__name__)

# An account whose OAuth2 grant was revoked waits for a new authorization: it looks this often
# (the token source answers from the database, without asking the provider).
REAUTHORIZE_POLL_SECONDS = 300.0
#: A worker whose lease may end before its next operation waits this long before looking again (the keeper stops it).
LEASE_WAIT_SECONDS = 1.0


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


def allowed_silence(imap: ImapSettings) -> float:
    """How long the ingest loop may go without a heartbeat before it counts as stuck.

    Its longest step is one batch: three FETCH commands (sizes, bodies, large
    mail's headers) and a MOVE, each bounded by the IMAP timeout, and the
    recording of the batch. Waiting (IDLE, poll, backoff) beats every second.
    """
    return 4 * imap.timeout_seconds + 30.0


#: While waiting in IDLE the loop beats every second, each beat saying the next is due within
#: the IMAP timeout plus this: the end of IDLE (DONE) must be answered within the timeout. The
#: margin is for a thread the machine is slow to schedule.
IDLE_GRACE_SECONDS = 5.0


def server_went_silent(exc: BaseException) -> bool:
    """Whether ``exc`` came from a server that stopped answering (a timeout), not one that said no.

    An account whose server went silent mid-IDLE or mid-command is hung: its loop
    stops beating until the server answers again, so the service manager's
    watchdog can restart the daemon. A refusal or a reset is a reported failure:
    the loop waits its backoff and keeps beating.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def uids_unseen(uidnext: int | None, seen_up_to: int, rechecked_for: int) -> bool:
    """Whether a folder whose UIDNEXT is ``uidnext`` has given out UIDs above ``seen_up_to`` that
    no extra pass has looked for yet (``rechecked_for``: the UIDNEXT that last caused one)."""
    return uidnext is not None and uidnext - 1 > seen_up_to and uidnext > rechecked_for


class AccountIngest:
    def __init__(self, engine: Engine, acct: AccountContext, *, factory: ClientFactory = default_client,
                 clock: Clock = utcnow, on_committed: Callable[[], None] = lambda: None,
                 forward_existing: bool | None = None, heartbeat: Heartbeat | None = None,
                 meter: Meter | None = None, lease: Lease | None = None) -> None:
        self.engine = engine
        # This daemon's hold on the account: no batch is fetched nor mail moved once it may end first.
        self.lease = lease or Unleased()
        self.acct = acct
        self.factory = factory
        self.clock = clock
        self.on_committed = on_committed
        self.forward_existing = acct.settings.forward_existing if forward_existing is None else forward_existing
        self.stats = IngestStats()
        self.heartbeat = heartbeat or Heartbeat(f"ingest-{acct.name}", allowed_silence(acct.settings.imap))
        # For the service manager (bridge.workers.service_state): logged in now, the last error,
        # and whether the first attempt has had an outcome (connected, or failed and said why).
        self.connected = False
        self.last_error: str | None = None
        self.reported = threading.Event()
        self.reauthorize_poll_seconds = REAUTHORIZE_POLL_SECONDS
        self.meter = meter
        self._seen_up_to = 0        # the highest UID the last pass saw in the folder, or its checkpoint
        self._rechecked_for = 0     # the UIDNEXT that last made a pass run again (see _may_have_missed_mail)

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
        self._seen_up_to = max([checkpoint.last_uid, *uids])
        if uids:
            log.info("account %s: %d new message(s) in %s", self.acct.name, len(uids), folder)
        size, limit = self.imap.batch_size, self.imap.max_message_bytes
        for start in range(0, len(uids), size):
            if stop is not None and stop.is_set():
                break
            self.lease.check("an IMAP batch")
            batch = session.fetch(uids[start:start + size], limit)
            result = ingest_batch(self.engine, self.acct, folder, info.uidvalidity, batch,
                                  checkpoint.history_until_uid, self.clock())
            self.stats.add(result)
            self._log_recorded(folder, result)
            if self.meter:
                self.meter.ingested(self.acct.name, result.kinds)
            if result.outbox_rows:
                self.on_committed()
            # Only now, after commit, may mail leave the folder.
            self._move(session, result.processed_uids, result.quarantined_uids)
            self.heartbeat.beat()
            if len(uids) > size:
                log.info("account %s: %d/%d recorded", self.acct.name, min(start + size, len(uids)), len(uids))
        if not uids:
            with self.engine.begin() as conn:
                store.record_fetch(conn, self.acct.name, folder, self.clock(), None)
        return self.stats

    def _log_recorded(self, folder: str, result: BatchResult) -> None:
        """One line per message, once its batch is committed: the ids an operator searches the log for."""
        if not log.isEnabledFor(logging.INFO):
            return
        for mail in result.recorded_mail:
            where = f"conversation {mail.conversation_id}" if mail.conversation_id else "no conversation"
            log.info("account %s: %s UID %d <%s> %s: %s (%s, message %d)", self.acct.name, folder, mail.uid,
                     mail.message_id or "no Message-ID", mail.kind, mail.disposition, where, mail.row_id,
                     extra={"conversation": mail.conversation_id, "message_id": mail.message_id, "uid": mail.uid})

    def _move(self, session: MailboxSession, processed: list[int], quarantined: list[int]) -> None:
        if processed or quarantined:
            self.lease.check("moving mail")
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
        self.last_error = message
        self.reported.set()
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
        backoff = Backoff(first=1.0, cap=300.0)
        while not stop.is_set():
            try:
                with MailboxSession(self.imap, self.factory) as session:
                    log.info("account %s: connected to %s (IDLE %s)", self.acct.name, self.imap.host,
                             "on" if session.can_idle and self.imap.idle else "off, polling")
                    self.connected, self.last_error = True, None
                    self.reported.set()
                    self.heartbeat.beat()
                    if self.meter:
                        self.meter.imap_session(self.acct.name)
                    self._ensure_folders(session)
                    while not stop.is_set():
                        handled = self.stats.recorded + self.stats.quarantined
                        self.sync(session, stop)
                        backoff.reset()   # only a completed pass proves the account healthy again
                        self.heartbeat.beat()
                        if self.stats.recorded + self.stats.quarantined > handled or \
                                self._may_have_missed_mail(session):
                            # Mail that arrived during this pass was announced in its command
                            # responses or not at all, and the server need not repeat it in IDLE
                            # (Dovecot does not): look again, and wait only after a pass that
                            # found nothing new and left no UID unseen.
                            continue
                        session.wait(self.imap.poll_seconds, stop, self._waiting_beat)
                        self.heartbeat.beat()   # the server answered the end of the wait
            except ImapError as exc:
                self.connected, silent = False, server_went_silent(exc)
                if exc.revoked:
                    # Logged once, as an error, where the revocation was found (services/access_tokens.py);
                    # status shows it. Look again now and then: `oauth2 authorize` needs no restart.
                    # Waiting for an operator is not being hung: the pause beats.
                    self.record_error(str(exc))
                    self._pause(self.reauthorize_poll_seconds, stop)
                    continue
                # A refused login or a missing folder will not mend itself within seconds.
                delay = backoff.next_delay(at_least=60.0 if exc.permanent else 0.0)
                log.warning("account %s: %s; retrying in %.0f s", self.acct.name, exc, delay)
                self.record_error(str(exc))
                if self.meter:
                    self.meter.imap_error(self.acct.name, "permanent" if exc.permanent else
                                          "connection" if isinstance(exc, ConnectionLost) else "command")
            except (LeaseExpired, store.LeaseLost) as exc:
                # The keeper stops the account's workers (bridge.workers.leases): wait for it, touching
                # nothing, not even logging in again, until it does or the lease is renewed after all.
                self.connected = False
                log.warning("%s; waiting to be stopped", exc)
                self._pause(LEASE_WAIT_SECONDS, stop)
                while not stop.is_set() and not self.lease.may_start():
                    self._pause(LEASE_WAIT_SECONDS, stop)
                continue
            except Exception as exc:  # noqa: BLE001 - keep the account alive whatever happened
                self.connected, silent = False, server_went_silent(exc)
                delay = backoff.next_delay()
                log.exception("account %s: ingest failed; retrying in %.0f s", self.acct.name, delay)
                self.record_error(f"{type(exc).__name__}: {exc}")
                if self.meter:
                    self.meter.imap_error(self.acct.name, "other")
            else:
                break
            self._pause(delay, stop, beat=not silent)

    def _may_have_missed_mail(self, session: MailboxSession) -> bool:
        """Whether the folder has given out UIDs above what the last pass saw: mail that came in
        while the pass ran (a SEARCH may miss a message whose APPEND ends meanwhile).

        Once per UIDNEXT value: a UID that was expunged before anyone saw it leaves a gap
        that no pass will fill, and it must not make the loop run again and again.
        """
        uidnext = session.uidnext_now()
        if not uids_unseen(uidnext, self._seen_up_to, self._rechecked_for):
            return False
        self._rechecked_for = uidnext or 0
        return True

    def _waiting_beat(self) -> None:
        self.heartbeat.beat(within=self.imap.timeout_seconds + IDLE_GRACE_SECONDS)

    def _pause(self, seconds: float, stop: threading.Event, beat: bool = True) -> None:
        """Wait ``seconds`` or until stopped, beating: waiting on purpose is not being stuck.

        Not beating (``beat=False``) after a server went silent: the account stays hung
        until its server answers again (see :func:`server_went_silent`).
        """
        end = time.monotonic() + seconds
        while not stop.wait(max(0.0, min(1.0, end - time.monotonic()))) and time.monotonic() < end:
            if beat:
                self.heartbeat.beat()
