"""Daemon lifecycle: per account one ingest thread and one outbox task; a timer; clean stop.

- Each account's ingest runs in its own thread (imapclient is blocking and
  not thread-safe) and wakes that account's outbox task when it commits mail.
- APScheduler fires one timer that wakes every outbox worker, so rows whose
  retry time has come are claimed even when nothing else happens. The durable
  schedule is the rows' ``next_attempt_at``, in our own tables.
- Another timer fires the feedback dispatcher of every account with feedback
  requests on (``bridge.workers.feedback``); its durable state is the
  ``feedback_request`` table, and it wakes the account's outbox when it queues.
- SIGTERM/SIGINT set a stop flag: the ingest threads finish the batch in hand
  (it commits or rolls back as a whole), the outbox tasks finish the message in
  hand, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable

from sqlalchemy.engine import Engine

from bridge import store
from bridge.adapters.imap import ClientFactory, default_client
from bridge.adapters.templates import Templates
from bridge.config import Settings
from bridge.domain.clock import Clock, utcnow
from bridge.services.account import AccountContext
from bridge.store.engine import open_database
from bridge.workers.base import StuckReport
from bridge.workers.ingest import AccountIngest, IngestStats

if TYPE_CHECKING:  # imported where used: `run --once --no-send` starts faster without them
    from bridge.adapters.smtp import SmtpConnection
    from bridge.workers.outbox import OutboxWorker

log = logging.getLogger(__name__)


@dataclass
class OnceReport:
    ingest: dict[str, IngestStats] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    feedback: dict[str, int] = field(default_factory=dict)   # feedback requests queued, per account


class Daemon:
    def __init__(self, settings: Settings, engine: Engine | None = None, *, clock: Clock = utcnow,
                 imap_factory: ClientFactory = default_client,
                 smtp_factory: "Callable[[AccountContext], SmtpConnection] | None" = None) -> None:
        self.settings = settings
        self.engine = engine or open_database(settings.database.url)
        self.clock = clock
        self.imap_factory = imap_factory
        self.smtp_factory = smtp_factory
        secret = settings.security.secret.reveal() if settings.security.secret else None
        key = store.token_secret(self.engine, secret)
        templates = Templates(settings.templates_dir)
        self.health = StuckReport([])   # the running workers' heartbeats, once run() starts them
        self.accounts = [AccountContext.build(a, key, templates, settings.relay, settings.policy)
                         for a in settings.accounts]

    def _outbox(self, acct: AccountContext) -> "OutboxWorker":
        from bridge.workers.outbox import OutboxWorker

        factory = (lambda: self.smtp_factory(acct)) if self.smtp_factory else None  # type: ignore[misc]
        return OutboxWorker(self.engine, acct, self.settings.outbox, clock=self.clock,
                            imap_factory=self.imap_factory, smtp_factory=factory)

    @property
    def _stale_claim(self) -> timedelta:
        """When a claim of a feedback request counts as a dead process's: as for interrupted sends."""
        return timedelta(seconds=self.settings.outbox.reconcile_after_seconds)

    # -- one pass ------------------------------------------------------------------

    async def run_once(self, send: bool = True, wait_for_limits: bool = False) -> OnceReport:
        """Ingest all new mail of every account, then drain the outboxes; for cron and tests.

        ``wait_for_limits``: drain what the sending limits hold back too, at their pace
        (``mailbridge run --once``), rather than leave it for the next pass.
        """
        report = OnceReport()

        async def one(acct: AccountContext) -> None:
            ingest = AccountIngest(self.engine, acct, factory=self.imap_factory, clock=self.clock)
            try:
                report.ingest[acct.name] = await asyncio.to_thread(ingest.run_once)
            except Exception as exc:  # noqa: BLE001 - report per account, keep the others going
                log.error("account %s: ingest failed: %s", acct.name, exc)
                ingest.record_error(str(exc))
                report.errors[acct.name] = str(exc)
            if send and acct.settings.feedback.enabled:
                from bridge.workers.feedback import FeedbackDispatcher

                dispatcher = FeedbackDispatcher(self.engine, acct, clock=self.clock, stale_after=self._stale_claim)
                report.feedback[acct.name] = (await asyncio.to_thread(dispatcher.tick)).sent
            if send:
                worker = self._outbox(acct)
                try:
                    await worker.reconcile()
                    await worker.drain(wait_for_limits=wait_for_limits)
                finally:
                    await worker.close()
                report.sent[acct.name] = worker.sent
                report.failed[acct.name] = worker.failed

        await asyncio.gather(*(one(a) for a in self.accounts))
        return report

    # -- forever -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig, stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: log.info(
                "SIGHUP: templates are re-read automatically when their files change; "
                "restart to apply configuration changes"))
        except (NotImplementedError, RuntimeError):
            pass

        thread_stop = threading.Event()
        wakes = {a.name: asyncio.Event() for a in self.accounts}
        threads = []
        heartbeats = []
        for acct in self.accounts:
            wake = wakes[acct.name]
            ingest = AccountIngest(self.engine, acct, factory=self.imap_factory, clock=self.clock,
                                   on_committed=lambda w=wake: loop.call_soon_threadsafe(w.set))
            heartbeats.append(ingest.heartbeat)
            t = threading.Thread(target=ingest.run_forever, args=(thread_stop,), name=f"ingest-{acct.name}",
                                 daemon=True)
            t.start()
            threads.append(t)
        workers = [self._outbox(a) for a in self.accounts]
        heartbeats += [w.heartbeat for w in workers]
        self.health = StuckReport(heartbeats)
        tasks = [asyncio.create_task(w.run(stop, wakes[w.acct.name]), name=f"outbox-{w.acct.name}")
                 for w in workers]

        async def wake_outboxes() -> None:
            # A coroutine job runs on the loop itself: asyncio.Event is not thread-safe.
            for event in wakes.values():
                event.set()

        async def report_stuck_workers() -> None:
            newly, recovered = self.health.changes()
            for hb in newly:
                log.error("%s has shown no sign of life for %.0f s (its longest step may take %.0f s): a hung "
                          "connection or a stuck thread; restart mailbridge if it does not recover",
                          hb.name, hb.silent_for(), hb.allowed_silence)
            for hb in recovered:
                log.warning("%s is working again", hb.name)

        from bridge.workers.feedback import TICK_SECONDS, dispatchers

        feedback = dispatchers(self.engine, self.accounts, self.clock,
                               on_queued=lambda name: loop.call_soon_threadsafe(wakes[name].set),
                               stale_after=self._stale_claim)
        heartbeats += [d.heartbeat for d in feedback]

        async def dispatch_feedback() -> None:
            for dispatcher in feedback:
                try:
                    await asyncio.to_thread(dispatcher.tick)
                except Exception:  # noqa: BLE001 - one account's failure must not stop the others
                    log.exception("account %s: feedback dispatch failed; trying again next tick",
                                  dispatcher.acct.name)

        scheduler = AsyncIOScheduler(event_loop=loop)
        # misfire_grace_time: APScheduler's default (1 s) silently skips a run the loop was too busy to start.
        for job, name in ((wake_outboxes, "outbox-due"), (report_stuck_workers, "heartbeats")):
            scheduler.add_job(job, "interval", seconds=15, id=name, coalesce=True, max_instances=1,
                              misfire_grace_time=30)
        if feedback:
            # None: a late tick runs however late it is (never dropped); coalesce: missed ticks run once.
            # The first tick at start: requests that fell due while the daemon was down go out now.
            scheduler.add_job(dispatch_feedback, "interval", seconds=TICK_SECONDS, id="feedback-dispatch",
                              coalesce=True, max_instances=1, misfire_grace_time=None,
                              next_run_time=datetime.now(timezone.utc))
        scheduler.start()
        log.info("mailbridge running: %d account(s)", len(self.accounts))
        try:
            await stop.wait()
        finally:
            log.info("stopping: finishing the work in hand")
            scheduler.shutdown(wait=False)
            thread_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            deadline = loop.time() + 60   # one budget for all accounts (systemd's TimeoutStopSec is 90)
            for t in threads:
                await asyncio.to_thread(t.join, max(0.1, deadline - loop.time()))
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                log.warning("stopping without waiting for %s", ", ".join(stuck))
            log.info("stopped")

    @staticmethod
    def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
        log.info("received %s", sig.name)
        stop.set()
