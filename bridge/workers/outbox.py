"""Outbox worker: claim a batch of due rows, send them over one connection, record the outcomes.
Retries are data, not sleeps.

Exactly-once rules:
- a row's Message-ID and bytes are fixed when it is queued; a retry sends the same bytes;
- rows are claimed (queued -> sending) by a conditional UPDATE, a small batch
  (``[outbox] batch_size``) in one transaction, before the SMTP conversation
  starts; they are sent one after another over the reused connection and the
  outcomes recorded together right after the batch, in the transaction that
  claims the next batch (one fsync per batch, not two per message). Where the Sent folder cannot tell whether a
  send happened (``sent_copies`` other than "server"), a batch holds at most one
  message to a buyer, so a crash leaves at most one buyer message of unknown outcome;
- a row found in ``sending`` at start-up was interrupted by a crash. It is
  never resent blindly: it is looked up by Message-ID in the Sent folder
  (``imap.sent_folder``). Found: sent. Not found and the server files sent
  mail itself (``smtp.sent_copies = "server"``): it was not sent, so it is
  queued again. Otherwise the outcome is unknown: mail to staff is queued
  again (same Message-ID, so their client shows one copy), mail to a buyer is
  marked ``unknown`` for a human to decide. The rows of a batch are looked up
  together (one IMAP SEARCH for many Message-IDs).

Pace (bridge.domain.delivery): the queue goes in priority order; a batch is
never larger than what the account's sending limits allow now, counted from the
outbox's own records; a throttle reply pauses the whole account (kept in the
database), not the one row.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from bridge import store
from bridge.adapters.imap import ClientFactory, ImapError, SentFolder, default_client
from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.adapters.templates import TemplateError
from bridge.config import OutboxSettings
from bridge.domain.clock import Clock, utcnow
from bridge.domain.delivery import is_throttle, throttle_pause
from bridge.domain.policy import PROACTIVE
from bridge.domain.threads import base_alias
from bridge.services import feedback, guard, pace, relay
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_alert, queue_staff_mail
from bridge.workers.base import Backoff, Heartbeat, Lease, Unleased, holder_id

log = logging.getLogger(__name__)
T = TypeVar("T")


def retry_delay(attempts: int, settings: OutboxSettings, rng: random.Random) -> float:
    """Exponential backoff with full jitter in the upper half: base * 2^(n-1), capped."""
    # int ** int is typed Any (a negative exponent gives a float); here the result is a float either way.
    delay: float = min(settings.retry_max_seconds, settings.retry_base_seconds * (2 ** max(0, attempts - 1)))
    return delay * rng.uniform(0.5, 1.0)


# The longest the worker waits between passes when nothing is due.
IDLE_PASS_SECONDS = 30.0


def allowed_silence(acct: AccountContext) -> float:
    """How long the outbox task may go without a heartbeat before it counts as stuck.

    It beats after every message and every pass. Its longest step is a wait
    between passes, or one message: connect, log in and send over SMTP, then
    record the batch, wait for the last batch's copies in Sent or look for
    interrupted sends there over IMAP, each command bounded by its server's timeout.
    """
    s = acct.settings
    return IDLE_PASS_SECONDS + 4 * s.smtp.timeout_seconds + 2 * s.imap.timeout_seconds + 30.0


@dataclass
class _Batch:
    """One claimed batch on its way: what went, what failed, what is given back, and why the send stopped."""

    items: list[store.OutboxItem]
    sent: list[tuple[store.OutboxItem, datetime]] = field(default_factory=list)
    failed: list[tuple[store.OutboxItem, SendError]] = field(default_factory=list)
    halted: SendError | None = None   # the session failed or the server throttled: the rest goes back


@dataclass(frozen=True)
class _Claim:
    items: list[store.OutboxItem]
    handled: int                      # rows taken off the queue, including those the checks settled
    wait_until: datetime | None       # nothing claimed because of a limit or a pause: until when


class OutboxWorker:
    def __init__(self, engine: Engine, acct: AccountContext, settings: OutboxSettings, *,
                 clock: Clock = utcnow, imap_factory: ClientFactory = default_client,
                 smtp_factory: Callable[[], SmtpConnection] | None = None, rng: random.Random | None = None,
                 heartbeat: Heartbeat | None = None, lease: Lease | None = None,
                 previous_holder_until: datetime | None = None) -> None:
        self.engine = engine
        self.acct = acct
        # This daemon's hold on the account: no send starts once it may end first.
        self.lease = lease or Unleased()
        # Until when the daemon that held the account before may have been sending (a takeover): its
        # rows left in 'sending' are judged only reconcile_after_seconds after that, when its last send
        # has certainly ended one way or the other.
        self.previous_holder_until = previous_holder_until
        self.settings = settings
        self.clock = clock
        self.smtp = (smtp_factory or (lambda: SmtpConnection(acct.settings.smtp)))()
        self.rng = rng or random.Random()
        self.worker_id = holder_id("outbox")
        self.sent = 0
        self.failed = 0
        self._session_failures = 0   # consecutive connect/login failures, for the worker's own backoff
        self.heartbeat = heartbeat or Heartbeat(f"outbox-{acct.name}", allowed_silence(acct))
        self._paused_until: datetime | None = None   # after a failed connect/login: the server is down
        s = acct.settings
        self.limits = pace.limits_of(s.smtp)
        if self.limits.any:
            log.info("account %s: sending limits %s", acct.name, self.limits.describe())
        self.limited_until: datetime | None = None   # the last claim found the limits (or a pause) reached
        # The Sent folder: one IMAP connection kept for the worker's life, used from one
        # thread of its own (imapclient is blocking and not thread-safe).
        self.sent_folder = SentFolder(s.imap, imap_factory) if s.imap.sent_folder else None
        self._imap_thread = ThreadPoolExecutor(1, thread_name_prefix=f"sent-{acct.name}")
        self._copies: asyncio.Future[None] | None = None   # the last batch's copies, being appended
        self._copy_problem: str | None = None               # logged once, until copies work again
        # Where the Sent folder cannot tell whether a send happened, a crash must leave at most one
        # buyer message of unknown outcome: a batch then holds at most one.
        self._max_buyer = None if s.smtp.sent_copies == "server" and s.imap.sent_folder else 1
        self._next: _Claim | None = None    # the next batch, claimed in the transaction that recorded the last

    async def _imap(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._imap_thread, call)

    async def close(self) -> None:
        """Give back a batch claimed ahead, wait for the copies in hand, then close both connections."""
        await self.release_next()
        await self.flush_copies()
        await self.smtp.close()
        if self.sent_folder is not None:
            await self._imap(self.sent_folder.close)
        self._imap_thread.shutdown(wait=False)

    # -- start-up ----------------------------------------------------------------

    async def reconcile(self) -> None:
        """Resolve rows a crashed process left in 'sending' (see the module docstring).

        Only rows claimed more than ``reconcile_after_seconds`` ago are judged:
        a server files its copy in Sent a little after accepting the message.
        Younger ones are left for a later call (the run loop calls this often).
        """
        now = self.clock()
        rows = await asyncio.to_thread(self._interrupted, now)
        if not rows:
            return
        found = await self._imap(lambda: self._find_in_sent([r.message_id for r in rows]))
        await asyncio.to_thread(self._resolve, rows, found, now)

    def _interrupted(self, now: datetime) -> list[store.OutboxItem]:
        if self._judge_from(self.previous_holder_until) > now:
            return []
        with self.engine.begin() as conn:
            return store.interrupted_sends(
                conn, self.acct.name, exclude_worker=self.worker_id,
                claimed_before=now - timedelta(seconds=self.settings.reconcile_after_seconds))

    def _judge_from(self, when: datetime | None) -> datetime:
        """When a send begun at ``when`` (or by the previous holder until then) may be judged."""
        if when is None:
            return datetime.min.replace(tzinfo=timezone.utc)
        return when + timedelta(seconds=self.settings.reconcile_after_seconds)

    def _resolve(self, rows: list[store.OutboxItem], found: set[str] | None, now: datetime) -> None:
        copies = self.acct.settings.smtp.sent_copies
        with self.engine.begin() as conn:
            for row in rows:
                if found is not None and row.message_id in found:
                    state, note = "sent", "send interrupted by a crash; found in the Sent folder afterwards"
                elif found is not None and copies == "server":
                    state, note = "queued", "send interrupted by a crash; not in the Sent folder, so not sent"
                elif row.audience == "staff":
                    state, note = "queued", "send interrupted by a crash; outcome unknown, resent to staff"
                else:
                    state, note = "unknown", "send interrupted by a crash; outcome unknown: a person must check"
                if store.resolve_interrupted(conn, row.id, state, note, now):
                    log.warning("account %s: outbox %s (%s): %s", self.acct.name, row.id, row.message_id, note)
                    if state == "sent":
                        self._confirm_to_staff(conn, row)   # the buyer has it: staff see what they got
                    if state == "unknown":
                        queue_staff_alert(conn, self.acct, "A message may or may not have been sent",
                                          f"mailbridge was stopped while sending message <{row.message_id}> "
                                          f"({row.purpose}, subject \"{row.subject}\") and cannot tell whether it "
                                          "went out. It will not send it again by itself.\n\n"
                                          + self._unknown_advice(row.id), now)

    def _unknown_advice(self, outbox_id: int) -> str:
        """What a person can do about a send of unknown outcome, for this account's set-up.

        Only a server that files sent mail itself can answer the question: our own
        appended copy comes after a recorded success, so it is never there for these.
        """
        folder = self.acct.settings.imap.sent_folder
        if self.acct.settings.smtp.sent_copies == "server" and folder:
            return (f"Look for it in the folder {folder!r}. If it is there, it was sent: run `mailbridge outbox "
                    f"cancel {outbox_id}`. If it is not, run `mailbridge outbox retry {outbox_id}`.")
        return ("The Sent folder cannot tell (mailbridge files its own copy only after a recorded success). "
                "Check the buyer's thread in the marketplace's message centre; only if it is missing there, run "
                f"`mailbridge outbox retry {outbox_id}`, otherwise `mailbridge outbox cancel {outbox_id}`.")

    def _find_in_sent(self, message_ids: list[str]) -> set[str] | None:
        """Which of these Message-IDs are in the Sent folder (one search for all); None when we cannot tell."""
        if self.sent_folder is None or self.acct.settings.smtp.sent_copies == "none":
            return None
        try:
            return self.sent_folder.find(message_ids)
        except ImapError as exc:
            log.warning("account %s: cannot search the Sent folder to reconcile interrupted sends: %s",
                        self.acct.name, exc)
            return None

    # -- sending -----------------------------------------------------------------

    async def send_batch(self, stop: asyncio.Event | None = None) -> int:
        """Claim a batch of due rows, send them over the one connection, record the outcomes.

        Returns the rows handled; 0 when nothing is due, or none may go now (a
        sending limit, a throttle pause, the server unreachable). With ``stop``
        set, the message in hand is finished and the rest of the batch goes back.
        """
        now = self.clock()
        if self._paused_until is not None and now < self._paused_until:
            return 0
        if not self.lease.may_start():
            return 0
        # The batch claimed ahead by the last record, else a fresh claim. Spelled out rather than
        # `self._next or ...`, which mypy types `_Claim | None` (it infers to_thread's result from the left).
        claim = self._next
        self._next = None
        if claim is None:
            claim = await asyncio.to_thread(self._claim, now)
        self.limited_until = claim.wait_until
        if not claim.items:
            return claim.handled
        batch = _Batch(claim.items)
        finished = False
        try:
            for item in claim.items:
                if (stop is not None and stop.is_set()) or not self.lease.may_start():
                    break     # the rest goes back to the queue
                try:
                    # Asked again once the server is ready for the data: a pause while waiting for it
                    # (SIGSTOP) may have outlived the lease, and the send must then not finish.
                    await self.smtp.send(item.envelope_from, item.recipients, item.raw,
                                         may_finish=self.lease.may_start)
                except SendError as exc:
                    if exc.connection or is_throttle(exc.code, exc.reply):
                        batch.halted = exc    # not this message's fault: it and the rest go back
                        break
                    batch.failed.append((item, exc))
                else:
                    batch.sent.append((item, self.clock()))
                    log.info("account %s: sent %s <%s> to %s", self.acct.name, item.purpose, item.message_id,
                             ", ".join(item.recipients), extra={"outbox_id": item.id, "message_id": item.message_id,
                                                                "conversation": item.conversation_id})
                self.heartbeat.beat()
            finished = True
        finally:
            # Also when cancelled: what went out is recorded, what did not goes back. The next batch is
            # claimed in the same transaction (one commit per batch, not two), unless the worker stops.
            go_on = finished and batch.halted is None and not (stop is not None and stop.is_set()) \
                and self.lease.may_start()
            self._next = await asyncio.to_thread(self._record, batch, go_on)
        self.sent += len(batch.sent)
        if batch.sent and self.acct.settings.smtp.sent_copies == "append" and self.sent_folder is not None:
            await self._copy_to_sent([item for item, _ in batch.sent])
        return len(batch.sent) + len(batch.failed)

    def _claim(self, now: datetime) -> _Claim:
        with self.engine.begin() as conn:
            return self._claim_in(conn, now)

    def _claim_in(self, conn: Connection, now: datetime) -> _Claim:
        """Claim what the limits allow now, up to a batch; settle the buyer rows' checks."""
        pause = store.send_pause(conn, self.acct.name)
        if pause is not None and now < pause.until:
            return _Claim([], 0, pause.until)
        budget = pace.budget(conn, self.acct.name, self.limits, now)
        if budget.allowed == 0:
            # Held back only if something is due: an empty queue must not make `run --once` wait a minute.
            due = store.next_due_time(conn, self.acct.name)
            return _Claim([], 0, budget.next_at if due is not None and due <= now else None)
        size = self.settings.batch_size if budget.allowed is None else min(self.settings.batch_size, budget.allowed)
        claimed = store.claim_batch(conn, self.acct.name, self.worker_id, now, size, max_buyer=self._max_buyer)
        items = [item for item in claimed if item.audience != "buyer" or self._may_go(conn, item, now)]
        return _Claim(items, len(claimed), None)

    async def release_next(self) -> None:
        """Give back a batch claimed ahead that will not be sent now (the worker stops)."""
        claim, self._next = self._next, None
        if claim is not None and claim.items:
            await asyncio.to_thread(self._release_rows, [item.id for item in claim.items])

    def _release_rows(self, ids: list[int]) -> None:
        with self.engine.begin() as conn:
            store.release_claims(conn, ids, self.worker_id)

    def _may_go(self, conn: Connection, item: store.OutboxItem, now: datetime) -> bool:
        """The checks a buyer row passes when claimed; False when they settled it (waiting, cancelled, blocked)."""
        if item.category in PROACTIVE:
            # Eligibility is re-checked at send time (docs/marketplaces.md): the account may have been
            # restricted, or the buyer opted out, since the message was queued.
            until = guard.paused_until(conn, self.acct.name, now)
            if until is not None:
                store.finish_send(conn, item.id, worker=self.worker_id, state="queued", now=now,
                                  error=f"waiting: proactive sending paused until {until:%Y-%m-%d %H:%M}",
                                  next_attempt_at=until, refund_attempt=True)
                return False
            reason = guard.stale_eligibility(conn, self.acct.name, item.category, item.recipients, now)
            if reason:
                store.finish_send(conn, item.id, worker=self.worker_id, state="cancelled", now=now,
                                  error=f"cancelled at send time: {reason}")
                guard.record(conn, account=self.acct.name, now=now, decision="cancelled",
                             category=item.category, buyer=base_alias(item.recipients[0]),
                             message_id=item.message_id, actor="mailbridge", detail=reason)
                if item.purpose == feedback.PURPOSE:
                    feedback.outbox_cancelled(conn, self.acct.name, item.message_id, reason, now)
                return False
        if guard.may_send(conn, item.message_id):
            return True
        # The single gate: nothing reaches a buyer without an allowing decision on record.
        store.finish_send(conn, item.id, worker=self.worker_id, state="blocked", now=now,
                          error="no allowing compliance decision on record for this message")
        queue_staff_alert(conn, self.acct, f"Blocked: {item.subject}"[:150],
                          f"Outbox row {item.id} to {', '.join(item.recipients)} has no compliance decision "
                          "that allows it, so it was not sent. See `mailbridge audit`.", now)
        log.error("account %s: outbox %s to a buyer has no allowing decision; blocked", self.acct.name, item.id)
        return False

    def _record(self, batch: _Batch, claim_next: bool) -> _Claim | None:
        """Every outcome of a batch in one transaction, and the next batch claimed in it; retried, since
        the mail is out.

        Sent rows are marked sent (with their staff confirmations), failures
        retried later or failed, and what was not sent goes back to the queue as
        it was. Only rows still claimed by this worker are changed. A crash before
        the commit leaves the batch in 'sending' and the next one unclaimed, as if
        it had come before a separate claim.
        """
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    self._record_in(conn, batch)
                    return self._claim_in(conn, self.clock()) if claim_next else None
            except OperationalError:
                if attempt == 4:
                    # The rows stay 'sending' and are reconciled via the Sent folder after a restart.
                    log.exception("account %s: sent %d message(s) but cannot record it", self.acct.name,
                                  len(batch.sent))
                    raise
                time.sleep(0.5 * (attempt + 1))
        return None

    def _record_in(self, conn: Connection, batch: _Batch) -> None:
        now = self.clock()
        for item, at in batch.sent:
            if store.finish_send(conn, item.id, worker=self.worker_id, state="sent", now=at):
                self._confirm_to_staff(conn, item)
        for item, exc in batch.failed:
            self._record_failure(conn, item, exc, now)
        done = {item.id for item, _ in batch.sent} | {item.id for item, _ in batch.failed}
        unsent = [item.id for item in batch.items if item.id not in done]
        halted = batch.halted
        store.release_claims(conn, unsent, self.worker_id, str(halted) if halted else None)
        if batch.sent and store.send_pause(conn, self.acct.name) is not None:
            store.end_pause(conn, self.acct.name)     # the server takes mail again
        if halted is not None and is_throttle(halted.code, halted.reply):
            self._pause_account(conn, halted, now)
        elif halted is not None:
            self._pause_worker(halted, now)

    def _pause_account(self, conn: Connection, exc: SendError, now: datetime) -> None:
        """The server said to slow down: the whole account waits, the queue keeps its order.

        Per-row backoff would have each queued row try again on its own schedule,
        a stream of attempts the provider answers with more 4xx and then 5xx.
        """
        previous = store.send_pause(conn, self.acct.name)
        in_a_row = (previous.in_a_row + 1) if previous is not None else 1
        seconds = throttle_pause(in_a_row)
        store.pause_sending(conn, self.acct.name, now + timedelta(seconds=seconds), str(exc), in_a_row)
        self.limited_until = now + timedelta(seconds=seconds)
        log.warning("account %s: %s is throttling (%s); sending paused for %.0f s", self.acct.name,
                    self.acct.settings.smtp.host, exc, seconds)

    def _pause_worker(self, exc: SendError, now: datetime) -> None:
        """The session failed (connect, TLS, login): pause the whole worker, not the row.

        The next row would only fail the same way: pausing the row alone made the worker
        try one connection per queued row, an error logged for each.
        """
        delay = retry_delay(self._session_failures + 1, self.settings, self.rng)
        self._session_failures += 1
        self._paused_until = now + timedelta(seconds=delay)
        log.error("account %s: cannot send through %s: %s; trying again in %.0f s", self.acct.name,
                  self.acct.settings.smtp.host, exc, delay)

    def _confirm_to_staff(self, conn: Connection, item: store.OutboxItem) -> None:
        """Tell the staff thread exactly what the buyer received (same transaction as 'sent').

        Only for a relayed staff reply, and when [relay] confirm_to_staff is on.
        Never lets a problem here undo 'sent': the buyer has the mail. A broken
        template is logged and replaced by a plain alert (or only logged).
        """
        if item.purpose != "buyer_reply" or not self.acct.relay.confirm_to_staff:
            return
        try:
            with conn.begin_nested():
                self._queue_confirmation(conn, item)
        except TemplateError as exc:
            log.error("account %s: cannot render the confirmation for <%s>: %s", self.acct.name, item.message_id,
                      exc)
            try:
                with conn.begin_nested():
                    queue_staff_alert(conn, self.acct, f"Sent to the buyer: {item.subject}"[:150],
                                      f"The reply <{item.message_id}> reached the mail server for "
                                      f"{', '.join(item.recipients)}. (The confirmation template is broken: "
                                      f"{exc}; fix it so staff see the full text again.)", self.clock())
            except TemplateError:
                log.error("account %s: the staff alert template is broken too; staff were not told", self.acct.name)

    def _queue_confirmation(self, conn: Connection, item: store.OutboxItem) -> None:
        s = self.acct.settings
        text, attachments = relay.sent_text(item.raw)
        conv = store.conversation_info(conn, s.name, item.conversation_id) if item.conversation_id else None
        now = self.clock()
        chain = tuple(dict.fromkeys(i for i in ((conv.staff_root_id, conv.staff_last_id) if conv else ()) if i))
        queue_staff_mail(conn, self.acct, "staff_confirmation", {
            "subject": item.subject, "buyer": ", ".join(item.recipients), "sent": now.strftime("%Y-%m-%d %H:%M UTC"),
            "sent_text": text.strip(), "attachments": attachments, "tag": f"MB-{conv.id}" if conv else "-",
            "account": s.name, "signature_cut": store.signature_cut(conn, item.message_id),
        }, now, purpose="staff_confirmation", in_reply_to=chain[-1] if chain else None, references=chain,
            conversation_id=item.conversation_id)

    def _record_failure(self, conn: Connection, item: store.OutboxItem, exc: SendError, now: datetime) -> None:
        if exc.ambiguous and item.audience == "buyer":
            store.finish_send(conn, item.id, worker=self.worker_id, state="unknown", now=now, error=str(exc))
            queue_staff_alert(conn, self.acct, "A message may or may not have been sent",
                              f"The connection to the mail server broke while sending <{item.message_id}> "
                              f"(subject \"{item.subject}\"): {exc}. mailbridge will not send it again by "
                              "itself.\n\n" + self._unknown_advice(item.id), now)
            log.error("account %s: outbox %s outcome unknown: %s", self.acct.name, item.id, exc)
        elif exc.permanent or item.attempts >= self.settings.max_attempts:
            store.finish_send(conn, item.id, worker=self.worker_id, state="failed", now=now, error=str(exc))
            self.failed += 1
            if item.audience == "buyer":
                queue_staff_alert(conn, self.acct, f"Not delivered: {item.subject}"[:150],
                                  f"The mail server would not take the reply to {', '.join(item.recipients)} "
                                  f"after {item.attempts} attempt(s): {exc}\n\nNothing more will be tried. "
                                  "Check the account's SMTP settings and the buyer's address; to try again "
                                  f"run `mailbridge outbox retry {item.id}`.", now, purpose="reply_failed")
            log.error("account %s: outbox %s (%s to %s) failed for good after %d attempt(s): %s",
                      self.acct.name, item.id, item.purpose, ", ".join(item.recipients), item.attempts, exc)
        else:
            delay = retry_delay(item.attempts, self.settings, self.rng)
            store.finish_send(conn, item.id, worker=self.worker_id, state="queued", now=now, error=str(exc),
                              next_attempt_at=now + timedelta(seconds=delay))
            log.warning("account %s: outbox %s attempt %d failed (%s); retrying in %.1f s",
                        self.acct.name, item.id, item.attempts, exc, delay)

    # -- copies in the Sent folder -----------------------------------------------------

    async def _copy_to_sent(self, items: list[store.OutboxItem]) -> None:
        """Append a batch's copies on the IMAP thread while the next batch is sent (one batch in hand)."""
        await self.flush_copies()
        self._copies = asyncio.ensure_future(self._imap(lambda: self._append_copies(items)))

    async def flush_copies(self) -> None:
        """Wait for the copies being appended, if any."""
        copies, self._copies = self._copies, None
        if copies is not None:
            await copies

    def _append_copies(self, items: list[store.OutboxItem]) -> None:
        """One APPEND (MULTIAPPEND) for the batch on the kept connection; a problem is logged once, not per message.

        A copy that cannot be stored is not retried: the mail went out, and the copy
        only serves people reading Sent (reconciliation never relies on our copies).
        """
        assert self.sent_folder is not None
        try:
            self.sent_folder.append([item.raw for item in items])
        except ImapError as exc:
            if self._copy_problem is None:    # servers vary the text (Dovecot adds timings): said once in all
                log.warning("account %s: sent mail is not being copied to %r: %s (said once until it works again)",
                            self.acct.name, self.sent_folder.folder, exc)
            self._copy_problem = str(exc)
            return
        if self._copy_problem is not None:
            log.info("account %s: copies of sent mail reach %r again", self.acct.name, self.sent_folder.folder)
            self._copy_problem = None
        with self.engine.begin() as conn:
            store.mark_copied_to_sent(conn, [item.id for item in items])

    # -- the loop --------------------------------------------------------------------------

    async def drain(self, stop: asyncio.Event | None = None, wait_for_limits: bool = False) -> int:
        """Send everything due now, a batch at a time, or until ``stop`` is set.

        With ``stop`` set the message in hand is finished and the rest stays queued:
        a long queue must not hold up SIGTERM (systemd kills after TimeoutStopSec).
        ``wait_for_limits`` (``run --once``): when a sending limit holds the queue back,
        wait until it lets more go instead of returning; a throttle pause still returns.
        """
        handled = 0
        while not (stop is not None and stop.is_set()):
            done = await self.send_batch(stop)
            if done:
                handled += done
                self._session_failures = 0
                self.heartbeat.beat()
                continue
            wait = self._limit_wait() if wait_for_limits else None
            if wait is None:
                break
            await asyncio.sleep(wait)
            self.heartbeat.beat()
        await self.release_next()
        await self.flush_copies()
        return handled

    def _limit_wait(self) -> float | None:
        """Seconds until a sending limit lets the next message go; None when no limit holds the queue."""
        if self.limited_until is None:
            return None
        with self.engine.begin() as conn:
            pause = store.send_pause(conn, self.acct.name)
        if pause is not None and pause.until >= self.limited_until:
            return None     # the server throttled: for a later pass
        return max(0.05, (self.limited_until - self.clock()).total_seconds())

    def seconds_until_due(self) -> float | None:
        """Until the next queued row may go (due, and the limits allow it), or an interrupted send
        becomes old enough to judge."""
        with self.engine.begin() as conn:
            due = store.next_due_time(conn, self.acct.name)
            claimed = store.oldest_foreign_claim(conn, self.acct.name, self.worker_id)
        if due is not None and self.limited_until is not None:
            due = max(due, self.limited_until)
        if claimed is not None:
            judge_at = self._judge_from(max(claimed, self.previous_holder_until or claimed)) + timedelta(seconds=0.5)
            due = judge_at if due is None else min(due, judge_at)
        if due is None:
            return None
        if self._paused_until is not None:
            due = max(due, self._paused_until)
        return max(0.0, (due - self.clock()).total_seconds())

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        backoff = Backoff(first=5.0, cap=300.0, rng=self.rng)
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                    await self.drain(stop)
                    # Holding the lease no longer long enough to send: idle until the keeper stops this worker.
                    wait = await asyncio.to_thread(self.seconds_until_due) if self.lease.may_start() else 1.0
                    backoff.reset()
                except store.LeaseLost as exc:   # the keeper stops this worker: wait for it, touching nothing
                    log.warning("%s; waiting to be stopped", exc)
                    wait = 1.0
                except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                    wait = backoff.next_delay()
                    log.exception("account %s: outbox worker error; retrying in %.0f s", self.acct.name, wait)
                self.heartbeat.beat()
                wake.clear()
                timeout = IDLE_PASS_SECONDS if wait is None else min(IDLE_PASS_SECONDS, wait)
                if timeout > 0:
                    try:
                        await asyncio.wait_for(_first(stop, wake), timeout=timeout)
                    except TimeoutError:
                        pass
                self.heartbeat.beat()
        finally:
            await self.close()


async def _first(*events: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
