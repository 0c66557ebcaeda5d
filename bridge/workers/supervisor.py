"""Daemon lifecycle: per account one ingest thread and one outbox task; a timer; clean stop.

- Each account's ingest runs in its own thread (imapclient is blocking and
  not thread-safe) and wakes that account's outbox task when it commits mail.
- APScheduler fires one timer that wakes every outbox worker, so rows whose
  retry time has come are claimed even when nothing else happens. The durable
  schedule is the rows' ``next_attempt_at``, in our own tables.
- Another timer fires the feedback dispatcher of every account with feedback
  requests on (``bridge.workers.feedback``); its durable state is the
  ``feedback_request`` table, and it wakes the account's outbox when it queues.
- A third timer fires the response-time reminders of every account that has
  them (``bridge.workers.reminders``); their durable state is the
  ``response_reminder`` table.
- With ``[metrics] listen`` set, ``/metrics`` is served for as long as the
  workers run (``bridge.workers.metrics``): started before them, stopped after.
- SIGTERM/SIGINT set a stop flag: the ingest threads finish the batch in hand
  (it commits or rolls back as a whole), the outbox tasks finish the message in
  hand, and the process exits 0.
- SIGHUP re-reads the configuration (``bridge.workers.reload``): accounts added
  start, removed ones stop after the work in hand, changed ones restart; a file
  that does not load is refused with one log line and the daemon runs on.
- Each account runs only in the daemon holding its lease (``bridge.workers.leases``):
  the keeper starts an account's workers when it takes the lease and stops them
  when the lease is given up or lost. Alone (SQLite, or the only daemon on a
  PostgreSQL database) a daemon holds every lease; on a clean stop it releases them
  all, so another daemon takes the accounts over at once.
- The service manager hears of it all (``bridge.workers.service_state``): ready,
  a status line, watchdog pings while every worker beats, reloading, stopping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, Sequence

from sqlalchemy.engine import Engine

from bridge import store
from bridge.adapters.imap import ClientFactory, default_client, oauth2_client
from bridge.adapters.templates import TemplateError, Templates
from bridge.config import AccountSettings, Settings
from bridge.domain.clock import Clock, utcnow
from bridge.services.access_tokens import AccessTokens, grant_name, smtp_has_own_grant
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_alert
from bridge.store.engine import open_database
from bridge.workers.base import StuckReport
from bridge.workers.ingest import AccountIngest, IngestStats
from bridge.workers.leases import AccountLease, LeaseKeeper
from bridge.workers.running_account import RunningAccount
from bridge.workers.service_state import ServiceState, status_line

if TYPE_CHECKING:  # imported where used: `run --once --no-send` starts faster without them
    from bridge.adapters.smtp import SmtpConnection
    from bridge.workers.metrics import DatabaseCollector, Meter
    from bridge.workers.outbox import OutboxWorker
    from bridge.workers.reload import ReloadPlan

log = logging.getLogger(__name__)


@dataclass
class OnceReport:
    ingest: dict[str, IngestStats] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    feedback: dict[str, int] = field(default_factory=dict)   # feedback requests queued, per account
    reminders: dict[str, int] = field(default_factory=dict)  # response-time reminders queued, per account
    skipped: dict[str, str] = field(default_factory=dict)    # accounts another daemon holds: its holder id


class _Ticking(Protocol):
    acct: AccountContext

    def tick(self) -> object: ...


def _tick_each(workers: Callable[[], Sequence[_Ticking]], what: str) -> Callable[[], Awaitable[None]]:
    """A timer job that ticks each account's worker in a thread, one after the other.

    ``workers`` is asked at every tick: a reload may add or remove accounts."""
    async def tick_all() -> None:
        for worker in workers():
            try:
                await asyncio.to_thread(worker.tick)
            except Exception:  # noqa: BLE001 - one account's failure must not stop the others
                log.exception("account %s: %s failed; trying again next tick", worker.acct.name, what)
    return tick_all


class Daemon:
    def __init__(self, settings: Settings, engine: Engine | None = None, *, clock: Clock = utcnow,
                 imap_factory: ClientFactory = default_client,
                 smtp_factory: "Callable[[AccountContext], SmtpConnection] | None" = None) -> None:
        self.settings = settings
        self.engine = engine or open_database(settings.database.url, config=settings.path,
                                              accounts=len(settings.accounts))
        self.clock = clock
        self.imap_factory = imap_factory
        self.smtp_factory = smtp_factory
        self._key = self._token_key(settings)
        self._templates_dir, self._templates = settings.templates_dir, Templates(settings.templates_dir)
        self.health = StuckReport([])   # the running workers' heartbeats, once run() starts them
        # One token source per OAuth2 login, shared by all connections of its account.
        self.tokens: dict[str, AccessTokens] = {}
        self.meter: Meter | None = None  # the event counters of /metrics, once run() starts and serves it
        self._collector: DatabaseCollector | None = None   # /metrics' database reads
        self.accounts = [self._context(a) for a in settings.accounts]
        self.running: dict[str, RunningAccount] = {}   # by account name, while run() runs
        self.service = ServiceState()
        self.log_level_override: str | None = None   # --log-level: a reload keeps it
        self.keeper: LeaseKeeper | None = None   # the account leases, while run() runs

    def _token_key(self, settings: Settings) -> bytes:
        secret = settings.security.secret.reveal() if settings.security.secret else None
        return store.token_secret(self.engine, secret)

    def _context(self, acct: AccountSettings) -> AccountContext:
        ctx = AccountContext.build(acct, self._key, self._templates, self.settings.relay, self.settings.policy)
        self._add_tokens(ctx)
        return ctx

    def _add_tokens(self, acct: AccountContext) -> None:
        """The account's OAuth2 token sources (a reload that changes the account makes them anew)."""
        s = acct.settings
        if s.imap.auth == "oauth2" and s.imap.oauth2 is not None:
            self.tokens[grant_name(acct.name)] = AccessTokens(
                self.engine, acct.name, s.imap.oauth2, clock=self.clock, on_revoked=_alert_staff(acct))
        if smtp_has_own_grant(s) and s.smtp.oauth2 is not None:
            self.tokens[grant_name(acct.name, smtp=True)] = AccessTokens(
                self.engine, acct.name, s.smtp.oauth2, smtp=True, clock=self.clock, on_revoked=_alert_staff(acct))

    def imap_factory_for(self, acct: AccountContext) -> ClientFactory:
        """How this account's IMAP connections log in: the factory given, else password or XOAUTH2."""
        tokens = self.tokens.get(grant_name(acct.name))
        if self.imap_factory is not default_client or tokens is None:
            return self.imap_factory
        return oauth2_client(tokens)

    def smtp_connection_for(self, acct: AccountContext) -> "SmtpConnection":
        from bridge.adapters.smtp import SmtpConnection

        s = acct.settings
        tokens = None
        if s.smtp.auth == "oauth2":
            tokens = self.tokens.get(grant_name(acct.name, smtp=smtp_has_own_grant(s)))
        if self.meter is not None:
            from bridge.workers.metrics import MeteredSmtp

            return MeteredSmtp(s.smtp, self.meter, acct.name, tokens=tokens)
        return SmtpConnection(s.smtp, tokens=tokens)

    def _outbox(self, acct: AccountContext, lease: AccountLease | None = None) -> "OutboxWorker":
        from bridge.workers.outbox import OutboxWorker

        factory = ((lambda: self.smtp_factory(acct)) if self.smtp_factory  # type: ignore[misc]
                   else (lambda: self.smtp_connection_for(acct)))
        return OutboxWorker(self._engine_for(acct, lease), acct, self.settings.outbox, clock=self.clock,
                            imap_factory=self.imap_factory_for(acct), smtp_factory=factory, lease=lease,
                            previous_holder_until=lease.previous_until if lease else None)

    def _engine_for(self, acct: AccountContext, lease: AccountLease | None) -> Engine:
        """The engine of an account's workers: every transaction fenced by the lease (store.leases.fenced).

        The account's OAuth2 token sources are switched to it too: a daemon that lost the account
        must not write a refreshed (possibly rotated) refresh token over the new holder's.
        """
        # A transaction stalled for a whole lease (the process stopped) is ended by the server: its
        # fence lock must not hold off a takeover for longer than a dead daemon's would.
        engine = self.engine if lease is None else store.fenced(self.engine, acct.name, lease.holder,
                                                                stall_seconds=lease.timing.lease_seconds,
                                                                acquired_at=lease.acquired_at)
        for grant in (grant_name(acct.name), grant_name(acct.name, smtp=True)):
            if grant in self.tokens:
                self.tokens[grant].engine = engine
        return engine

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
        keeper = LeaseKeeper(self.engine, self.settings.cluster.timing, lambda: [a.name for a in self.accounts],
                             _started, _not_stopped, balance=False)
        leases, report.skipped = await keeper.take_for_pass()
        for name, holder in report.skipped.items():
            log.warning("account %s: skipped: daemon %s holds it", name, holder)
        renewing = asyncio.Event()
        renewals = asyncio.create_task(keeper.run(renewing), name="lease-renewals")

        async def one(acct: AccountContext) -> None:
            lease = leases[acct.name]
            engine = self._engine_for(acct, lease)
            ingest = AccountIngest(engine, acct, factory=self.imap_factory_for(acct), clock=self.clock, lease=lease)
            try:
                report.ingest[acct.name] = await asyncio.to_thread(ingest.run_once)
            except Exception as exc:  # noqa: BLE001 - report per account, keep the others going
                log.error("account %s: ingest failed: %s", acct.name, exc)
                ingest.record_error(str(exc))
                report.errors[acct.name] = str(exc)
            if send and acct.settings.feedback.enabled:
                from bridge.workers.feedback import FeedbackDispatcher

                dispatcher = FeedbackDispatcher(engine, acct, clock=self.clock, stale_after=self._stale_claim)
                report.feedback[acct.name] = (await asyncio.to_thread(dispatcher.tick)).sent
            if send and acct.settings.reminders.after_hours:
                from bridge.workers.reminders import ReminderTimer

                timer = ReminderTimer(engine, acct, clock=self.clock)
                report.reminders[acct.name] = (await asyncio.to_thread(timer.tick)).sent
            if send:
                worker = self._outbox(acct, lease)
                try:
                    await worker.reconcile()
                    await worker.drain(wait_for_limits=wait_for_limits)
                finally:
                    await worker.close()
                report.sent[acct.name] = worker.sent
                report.failed[acct.name] = worker.failed

        try:
            await asyncio.gather(*(one(a) for a in self.accounts if a.name in leases))
        finally:
            renewing.set()
            await renewals
            await keeper.leave()
        return report

    # -- forever -------------------------------------------------------------------

    def _start_account(self, acct: AccountContext, loop: asyncio.AbstractEventLoop,
                       lease: AccountLease) -> RunningAccount:
        from bridge.workers.feedback import FeedbackDispatcher
        from bridge.workers.reminders import ReminderTimer

        wake = asyncio.Event()

        def wake_outbox() -> None:
            # Called from the ingest thread and the timers' threads: asyncio.Event is not thread-safe.
            loop.call_soon_threadsafe(wake.set)

        engine = self._engine_for(acct, lease)
        ingest = AccountIngest(engine, acct, factory=self.imap_factory_for(acct), clock=self.clock,
                               on_committed=wake_outbox, meter=self.meter, lease=lease)
        feedback = FeedbackDispatcher(engine, acct, clock=self.clock, stale_after=self._stale_claim,
                                      on_queued=wake_outbox) \
            if acct.settings.feedback.enabled else None
        reminders = ReminderTimer(engine, acct, clock=self.clock, on_queued=wake_outbox) \
            if acct.settings.reminders.after_hours else None
        running = RunningAccount(acct, ingest, self._outbox(acct, lease), feedback, wake, reminders)
        running.start()
        return running

    def _heartbeats_changed(self) -> None:
        self.health.heartbeats = [hb for r in self.running.values() for hb in r.heartbeats]

    async def run(self, stop: asyncio.Event | None = None) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from bridge.workers.feedback import TICK_SECONDS
        from bridge.workers.reminders import TICK_SECONDS as REMINDER_TICK_SECONDS

        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        metrics = None
        if self.settings.metrics.listen:
            # Only here: prometheus_client is not imported, nor anything counted, when nobody reads the
            # figures (a reload does not start the server: changing [metrics] takes a restart).
            from bridge.workers.metrics import DatabaseCollector, Meter, MetricsServer

            meter = self.meter = Meter()
            self._collector = DatabaseCollector(self.engine, [a.name for a in self.accounts], self.clock)
            meter.registry.register(self._collector)
            metrics = MetricsServer(self.settings.metrics.listen, meter.registry, self.settings.path)
            metrics.start()   # before any worker: a port in use stops the start, with nothing begun
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig, stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        reloads: asyncio.Queue[None] = asyncio.Queue()
        try:
            loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
        except (NotImplementedError, RuntimeError):
            pass

        async def start_account(name: str, lease: AccountLease) -> None:
            acct = next(a for a in self.accounts if a.name == name)
            self.running[name] = self._start_account(acct, loop, lease)
            self._heartbeats_changed()

        stopping: dict[str, RunningAccount] = {}   # workers asked to stop that had not yet when last waited for

        async def stop_account(name: str) -> bool:
            # Asked again (by the keeper) while an account's workers are still busy: wait for them again.
            running = self.running.pop(name, None) or stopping.get(name)
            if running is None:
                return True
            stopping[name] = running
            self._heartbeats_changed()
            stopped = await running.stop()
            if stopped:
                stopping.pop(name, None)
            return stopped

        keeper = self.keeper = LeaseKeeper(self.engine, self.settings.cluster.timing,
                                           lambda: [a.name for a in self.accounts], start_account, stop_account)
        log.info("holder id %s", keeper.holder)
        await keeper.round()   # the first leases before "running": alone, that is every account
        keeping = asyncio.Event()
        keeper_task = asyncio.create_task(keeper.run(keeping), name="leases")

        async def wake_outboxes() -> None:
            # A coroutine job runs on the loop itself: asyncio.Event is not thread-safe.
            for r in self.running.values():
                r.wake.set()

        async def report_stuck_workers() -> None:
            newly, recovered = self.health.changes()
            for hb in newly:
                log.error("%s has shown no sign of life for %.0f s (its longest step may take %.0f s): a hung "
                          "connection or a stuck thread; restart mailbridge if it does not recover",
                          hb.name, hb.silent_for(), hb.allowed_silence)
            for hb in recovered:
                log.warning("%s is working again", hb.name)
            if self.service.notifier.enabled:
                self.service.status(await self._status_line())

        dispatch_feedback = _tick_each(lambda: [r.feedback for r in self.running.values() if r.feedback],
                                       "feedback dispatch")
        remind_staff = _tick_each(lambda: [r.reminders for r in self.running.values() if r.reminders],
                                  "response-time reminders")

        scheduler = AsyncIOScheduler(event_loop=loop)
        # misfire_grace_time: APScheduler's default (1 s) silently skips a run the loop was too busy to start.
        for job, name in ((wake_outboxes, "outbox-due"), (report_stuck_workers, "heartbeats")):
            scheduler.add_job(job, "interval", seconds=15, id=name, coalesce=True, max_instances=1,
                              misfire_grace_time=30)
        # None: a late tick runs however late it is (never dropped); coalesce: missed ticks run once.
        # The first tick at start: requests that fell due while the daemon was down go out now.
        # Always scheduled (they do nothing without feedback or reminder accounts): a reload may add one.
        scheduler.add_job(dispatch_feedback, "interval", seconds=TICK_SECONDS, id="feedback-dispatch",
                          coalesce=True, max_instances=1, misfire_grace_time=None,
                          next_run_time=datetime.now(timezone.utc))
        scheduler.add_job(remind_staff, "interval", seconds=REMINDER_TICK_SECONDS, id="response-reminders",
                          coalesce=True, max_instances=1, misfire_grace_time=None,
                          next_run_time=datetime.now(timezone.utc))
        scheduler.start()
        log.info("mailbridge running: %d account(s)", len(self.running))
        service_tasks = [
            asyncio.create_task(self.service.announce_ready(lambda: list(self.running.values()), stop,
                                                            self._status_line), name="sd-ready"),
            asyncio.create_task(self.service.watchdog(lambda: self.health, stop), name="sd-watchdog"),
            asyncio.create_task(self._serve_reloads(reloads, stop), name="reload"),
        ]
        try:
            await stop.wait()
        finally:
            log.info("stopping: finishing the work in hand")
            self.service.stopping()
            scheduler.shutdown(wait=False)
            # Leases still renewed while the work in hand finishes; none taken. No await between these
            # lines: the keeper checks closing just before it starts an account (on this same loop), so
            # every account it ever starts is either signalled here or never started.
            keeper.closing = True
            for r in self.running.values():
                r.signal_stop()
            await asyncio.gather(*service_tasks, return_exceptions=True)
            deadline = loop.time() + 60   # one budget for all accounts (systemd's TimeoutStopSec is 90)
            # A copy: the keeper, still renewing, may stop an account whose lease was lost meanwhile.
            stuck = [f"account {r.name}" for r in list(self.running.values()) if not await r.wait_stopped(deadline)]
            if stuck:
                log.warning("stopping without waiting for %s", ", ".join(stuck))
            keeping.set()
            await keeper_task
            # Workers stopped: another daemon may take the accounts now. A stuck one's lease runs out instead.
            await keeper.leave(keep=[r.name for r in self.running.values() if f"account {r.name}" in stuck],
                               within=max(1.0, deadline - loop.time()))
            if metrics is not None:
                await asyncio.to_thread(metrics.stop)
            self.service.close()
            log.info("stopped")

    # -- reload (SIGHUP) -----------------------------------------------------------------

    async def _serve_reloads(self, requests: "asyncio.Queue[None]", stop: asyncio.Event) -> None:
        """Reload once per SIGHUP, one at a time, until stop."""
        while not stop.is_set():
            getter = asyncio.ensure_future(requests.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait((getter, stopper), return_when=asyncio.FIRST_COMPLETED)
            getter.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            await self.reload()

    async def reload(self) -> bool:
        """Re-read the configuration file and apply it (see ``bridge.workers.reload``); False when refused."""
        from bridge.adapters import logformat
        from bridge.config import ConfigError, load_settings
        from bridge.workers.reload import one_line, plan_reload

        self.service.reloading()
        loop = asyncio.get_running_loop()
        path = self.settings.path
        log.info("SIGHUP: reloading %s", path)
        try:
            new = await asyncio.to_thread(load_settings, path)
            plan = plan_reload(self.settings, new)
            if plan.refused:
                raise ConfigError(f"{path}: {plan.refused}")
            # Everything the new accounts need is built before any account stops: a failure
            # here leaves the daemon as it was.
            key = await asyncio.to_thread(self._token_key, new) if new.security != self.settings.security \
                else self._key
            templates = Templates(new.templates_dir) if new.templates_dir != self._templates_dir else self._templates
            contexts = [AccountContext.build(a, key, templates, new.relay, new.policy) for a in new.accounts]
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the daemon runs on
            log.error("reload refused, still running the configuration loaded before: %s", one_line(exc))
            self.service.reloaded(await self._status_line())
            return False
        keeper = self.keeper
        assert keeper is not None, "reload() runs while run() does"
        # The keeper's rounds go on renewing every lease while the workers of the accounts removed or
        # changed stop (up to a minute each): holding its lock meanwhile would let every lease expire.
        keeper.paused = True
        try:
            await self._apply_reload(plan, new, key, templates, contexts, keeper, loop)
        finally:
            keeper.paused = False
        await keeper.round()      # accounts added are taken now, not a round later
        logformat.configure(self.log_level_override or new.log_level, new.log_format, os.environ)
        log.info("reloaded %s: %s", path, plan.summary())
        self.service.reloaded(await self._status_line())
        return True

    async def _apply_reload(self, plan: "ReloadPlan", new: Settings, key: bytes, templates: Templates,
                            contexts: list[AccountContext], keeper: LeaseKeeper,
                            loop: asyncio.AbstractEventLoop) -> None:
        # Signalled together, waited for together; their leases stay held and renewed until they have stopped.
        for name in plan.stop + plan.restart:
            if name in self.running:
                self.running[name].signal_stop()
        await asyncio.gather(keeper.set_aside(plan.stop, release=True),
                             keeper.set_aside(plan.restart, release=False))
        async with keeper.lock:   # the accounts change between two rounds
            self._switch(plan, new, key, templates, contexts, keeper, loop)

    def _switch(self, plan: "ReloadPlan", new: Settings, key: bytes, templates: Templates,
                contexts: list[AccountContext], keeper: LeaseKeeper, loop: asyncio.AbstractEventLoop) -> None:
        self.settings, self._key = new, key
        self._templates_dir, self._templates = new.templates_dir, templates
        self.accounts = contexts
        if self._collector is not None:   # /metrics fills zeros for the configured accounts
            self._collector.accounts = [a.name for a in self.accounts]
        for name in plan.stop:
            for grant in (grant_name(name), grant_name(name, smtp=True)):
                self.tokens.pop(grant, None)
        for acct in self.accounts:
            if acct.name in plan.start or acct.name in plan.restart:
                self._add_tokens(acct)   # an OAuth2 account added or changed logs in with its own tokens
            if acct.name not in plan.restart:
                continue
            lease = keeper.resume(acct.name)   # None: lost meanwhile, or its workers are still busy
            if lease is None:
                continue
            try:
                self.running[acct.name] = self._start_account(acct, loop, lease)
            except Exception:  # noqa: BLE001 - an account nobody works must not stay leased to this daemon
                log.exception("account %s: cannot start its workers; giving its lease back", acct.name)
                keeper.give_back(acct.name)
        # The file's order; accounts added start when the keeper takes their leases.
        self.running = {a.name: self.running[a.name] for a in self.accounts if a.name in self.running}
        self._heartbeats_changed()

    # -- what systemd is told ------------------------------------------------------------

    async def _status_line(self) -> str:
        try:
            queued: int | None = await asyncio.to_thread(self._queued)
        except Exception:  # noqa: BLE001 - the status line must not fail for a busy database
            queued = None
        return status_line(list(self.running.values()), queued)

    def _queued(self) -> int:
        with self.engine.begin() as conn:
            return store.queued_outbox(conn)

    @staticmethod
    def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
        log.info("received %s", sig.name)
        stop.set()


async def _started(name: str, lease: AccountLease) -> None:
    """``run --once`` starts no workers when it takes a lease: the pass itself works the account."""


async def _not_stopped(name: str) -> bool:
    """``run --once`` cannot stop a pass in hand; its lease checks stop the account's operations."""
    log.warning("account %s: lease lost during the pass; its remaining operations are not started", name)
    return True


def _alert_staff(acct: AccountContext) -> Callable[..., None]:
    """Tell staff, in the transaction that marks the grant revoked, that the account stopped.

    The alert goes out through the account's own SMTP server: when SMTP shares the revoked
    grant it waits in the outbox until the account is authorized again (the operator error
    in the log and in `mailbridge status` is what reaches someone at once).
    """
    def alert(conn: object, text: str, now: datetime) -> None:
        try:
            queue_staff_alert(conn, acct, "Mailbox login stopped: OAuth2 authorization revoked",  # type: ignore[arg-type]
                              text, now)
        except TemplateError as exc:
            log.error("account %s: cannot render the staff alert about the revoked grant: %s", acct.name, exc)

    return alert
