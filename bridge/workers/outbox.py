"""Outbox worker: claim a due row, send it, record the outcome. Retries are data, not sleeps.

Exactly-once rules:
- a row's Message-ID and bytes are fixed when it is queued; a retry sends the same bytes;
- a row is claimed (queued -> sending) by a conditional UPDATE before the SMTP
  conversation starts, and marked sent right after the server accepts it;
- a row found in ``sending`` at start-up was interrupted by a crash. It is
  never resent blindly: it is looked up by Message-ID in the Sent folder
  (``imap.sent_folder``). Found: sent. Not found and the server files sent
  mail itself (``smtp.sent_copies = "server"``): it was not sent, so it is
  queued again. Otherwise the outcome is unknown: mail to staff is queued
  again (same Message-ID, so their client shows one copy), mail to a buyer is
  marked ``unknown`` for a human to decide.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from bridge import store
from bridge.adapters.imap import (
    ClientFactory,
    ImapError,
    MailboxSession,
    default_client,
)
from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.adapters.templates import TemplateError
from bridge.config import OutboxSettings
from bridge.domain.clock import Clock, utcnow
from bridge.domain.policy import PROACTIVE
from bridge.services import feedback, guard, relay
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_alert, queue_staff_mail
from bridge.workers.base import Backoff, Heartbeat

log = logging.getLogger(__name__)


def retry_delay(attempts: int, settings: OutboxSettings, rng: random.Random) -> float:
    """Exponential backoff with full jitter in the upper half: base * 2^(n-1), capped."""
    delay = min(settings.retry_max_seconds, settings.retry_base_seconds * (2 ** max(0, attempts - 1)))
    return delay * rng.uniform(0.5, 1.0)


# The longest the worker waits between passes when nothing is due.
IDLE_PASS_SECONDS = 30.0


def allowed_silence(acct: AccountContext) -> float:
    """How long the outbox task may go without a heartbeat before it counts as stuck.

    It beats after every message and every pass. Its longest step is a wait
    between passes, or one message: connect, log in and send over SMTP, then
    append a copy to Sent or look for interrupted sends there over IMAP, each
    command bounded by its server's timeout.
    """
    s = acct.settings
    return IDLE_PASS_SECONDS + 4 * s.smtp.timeout_seconds + 2 * s.imap.timeout_seconds + 30.0


class OutboxWorker:
    def __init__(self, engine: Engine, acct: AccountContext, settings: OutboxSettings, *,
                 clock: Clock = utcnow, imap_factory: ClientFactory = default_client,
                 smtp_factory: Callable[[], SmtpConnection] | None = None, rng: random.Random | None = None,
                 heartbeat: Heartbeat | None = None) -> None:
        self.engine = engine
        self.acct = acct
        self.settings = settings
        self.clock = clock
        self.imap_factory = imap_factory
        self.smtp = (smtp_factory or (lambda: SmtpConnection(acct.settings.smtp)))()
        self.rng = rng or random.Random()
        # Unique per worker and process: a restarted process must not mistake a
        # dead predecessor's claims for its own.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sent = 0
        self.failed = 0
        self._session_failures = 0   # consecutive connect/login failures, for the worker's own backoff
        self.heartbeat = heartbeat or Heartbeat(f"outbox-{acct.name}", allowed_silence(acct))
        self._paused_until: datetime | None = None   # after a failed connect/login: the server is down

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
        found = await asyncio.to_thread(self._find_in_sent, [r.message_id for r in rows])
        await asyncio.to_thread(self._resolve, rows, found, now)

    def _interrupted(self, now: datetime) -> list[store.OutboxItem]:
        with self.engine.begin() as conn:
            return store.interrupted_sends(
                conn, self.acct.name, exclude_worker=self.worker_id,
                claimed_before=now - timedelta(seconds=self.settings.reconcile_after_seconds))

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
        """Which of these Message-IDs are in the Sent folder; None when we cannot tell."""
        imap = self.acct.settings.imap
        if not imap.sent_folder or self.acct.settings.smtp.sent_copies == "none":
            return None
        try:
            with MailboxSession(imap, self.imap_factory) as session:
                return {mid for mid in message_ids if session.contains_message_id(imap.sent_folder, mid)}
        except ImapError as exc:
            log.warning("account %s: cannot search the Sent folder to reconcile interrupted sends: %s",
                        self.acct.name, exc)
            return None

    # -- sending -----------------------------------------------------------------

    async def send_one_due(self) -> bool:
        """Claim one due row and send it. False when nothing is due (or the server is unreachable)."""
        if self._paused_until is not None and self.clock() < self._paused_until:
            return False
        item = await asyncio.to_thread(self._claim)
        if item is None:
            return False
        try:
            await self.smtp.send(item.envelope_from, item.recipients, item.raw)
        except SendError as exc:
            if exc.connection:
                # Not this message's fault: give the row back untouched and pause this worker.
                await asyncio.to_thread(self._release, item, exc)
                return False
            await asyncio.to_thread(self._record_failure, item, exc)
            return True
        await asyncio.to_thread(self._record_sent, item)
        self.sent += 1
        log.info("account %s: sent %s <%s> to %s", self.acct.name, item.purpose, item.message_id,
                 ", ".join(item.recipients), extra={"outbox_id": item.id, "message_id": item.message_id,
                                                    "conversation": item.conversation_id})
        if self.acct.settings.smtp.sent_copies == "append" and self.acct.settings.imap.sent_folder:
            await asyncio.to_thread(self._append_copy, item)
        return True

    def _claim(self) -> store.OutboxItem | None:
        while True:
            with self.engine.begin() as conn:
                item = store.claim_due(conn, self.acct.name, self.worker_id, self.clock())
                if item is None or item.audience != "buyer":
                    return item
                now = self.clock()
                if item.category in PROACTIVE:
                    # Eligibility is re-checked at send time (docs/marketplaces.md): the account may have been
                    # restricted, or the buyer opted out, since the message was queued.
                    until = guard.paused_until(conn, self.acct.name, now)
                    if until is not None:
                        store.finish_send(conn, item.id, worker=self.worker_id, state="queued", now=now,
                                          error=f"waiting: proactive sending paused until {until:%Y-%m-%d %H:%M}",
                                          next_attempt_at=until, refund_attempt=True)
                        continue
                    reason = guard.stale_eligibility(conn, self.acct.name, item.category, item.recipients, now)
                    if reason:
                        store.finish_send(conn, item.id, worker=self.worker_id, state="cancelled", now=now,
                                          error=f"cancelled at send time: {reason}")
                        guard.record(conn, account=self.acct.name, now=now, decision="cancelled",
                                     category=item.category, buyer=guard.base_alias(item.recipients[0]),
                                     message_id=item.message_id, actor="mailbridge", detail=reason)
                        if item.purpose == feedback.PURPOSE:
                            feedback.outbox_cancelled(conn, self.acct.name, item.message_id, reason, now)
                        continue
                if guard.may_send(conn, item.message_id):
                    return item
                # The single gate: nothing reaches a buyer without an allowing decision on record.
                store.finish_send(conn, item.id, worker=self.worker_id, state="blocked", now=now,
                                  error="no allowing compliance decision on record for this message")
                queue_staff_alert(conn, self.acct, f"Blocked: {item.subject}"[:150],
                                  f"Outbox row {item.id} to {', '.join(item.recipients)} has no compliance decision "
                                  "that allows it, so it was not sent. See `mailbridge audit`.", now)
                log.error("account %s: outbox %s to a buyer has no allowing decision; blocked", self.acct.name,
                          item.id)

    def _record_sent(self, item: store.OutboxItem) -> None:
        """Mark sent (and queue the staff confirmation) in one transaction; retried, since the mail is out."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    if store.finish_send(conn, item.id, worker=self.worker_id, state="sent", now=self.clock()):
                        self._confirm_to_staff(conn, item)
                return
            except OperationalError:
                if attempt == 4:
                    # The row stays 'sending' and is reconciled via the Sent folder after a restart.
                    log.exception("account %s: sent <%s> but cannot record it", self.acct.name, item.message_id)
                    raise
                time.sleep(0.5 * (attempt + 1))

    def _release(self, item: store.OutboxItem, exc: SendError) -> None:
        """Give the row back as it was (its place in the queue too) and pause the whole worker.

        The next row would only fail the same way: pausing the row alone made the worker
        try one connection per queued row, an error logged for each.
        """
        delay = retry_delay(self._session_failures + 1, self.settings, self.rng)
        self._session_failures += 1
        now = self.clock()
        self._paused_until = now + timedelta(seconds=delay)
        with self.engine.begin() as conn:
            store.finish_send(conn, item.id, worker=self.worker_id, state="queued", now=now, error=str(exc),
                              refund_attempt=True)
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

    def _record_failure(self, item: store.OutboxItem, exc: SendError) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
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

    def _append_copy(self, item: store.OutboxItem) -> None:
        imap = self.acct.settings.imap
        try:
            with MailboxSession(imap, self.imap_factory) as session:
                session.append(imap.sent_folder, item.raw)
        except ImapError as exc:
            log.warning("account %s: sent <%s> but could not copy it to %r: %s",
                        self.acct.name, item.message_id, imap.sent_folder, exc)
            return
        with self.engine.begin() as conn:
            store.mark_copied_to_sent(conn, item.id)

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Send everything due now (``while send_one_due(): pass``), or until ``stop`` is set.

        With ``stop`` set the message in hand is finished and the rest stays queued:
        a long queue must not hold up SIGTERM (systemd kills after TimeoutStopSec).
        """
        handled = 0
        while not (stop is not None and stop.is_set()) and await self.send_one_due():
            handled += 1
            self._session_failures = 0
            self.heartbeat.beat()
        return handled

    def seconds_until_due(self) -> float | None:
        """Until the next queued row is due, or an interrupted send becomes old enough to judge."""
        with self.engine.begin() as conn:
            due = store.next_due_time(conn, self.acct.name)
            claimed = store.oldest_foreign_claim(conn, self.acct.name, self.worker_id)
        if claimed is not None:
            judge_at = claimed + timedelta(seconds=self.settings.reconcile_after_seconds + 0.5)
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
                    wait = await asyncio.to_thread(self.seconds_until_due)
                    backoff.reset()
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
            await self.smtp.close()


async def _first(*events: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
