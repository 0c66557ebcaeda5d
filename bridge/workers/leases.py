"""The lease keeper: every ``renew_seconds``, the daemon's heartbeat, its leases renewed, accounts taken and given up.

Several daemons share one database; each account is worked by the one holding its
lease (docs/architecture.md, "Several daemons"). One keeper per daemon, on the event
loop, one round at a time:

1. **Heartbeat and renewal**, one transaction: the daemon's row in ``daemon`` and
   every lease it holds, in one UPDATE. The local deadline of each renewed lease is
   counted from the monotonic time taken *before* the round trip.
2. **What to stop now** (``domain.leases.to_stop``): a lease the renewal did not keep
   (taken over: its workers stop at once); when the renewal failed (database
   unreachable), the accounts on which no operation may start any more, long
   before any other daemon may take them. Workers also check the deadline themselves before every
   IMAP batch, move and SMTP send (:meth:`AccountLease.check`), so nothing new starts
   between the deadline and the keeper's next look.
3. **Balance** (``domain.leases.plan_round``): free leases taken up to the daemon's
   share of the live daemons; above it (a daemon joined) the surplus is given up
   cleanly: the account's workers are stopped, *then* the lease is released.

An account whose workers are stopping (lost, handed over, changed or removed by a
reload) is never taken again, and a lease it still holds is renewed rather than
released, until those workers have really stopped. A reload pauses only step 3.

Heartbeats and claims never share a statement (pgqueuer #430): a worker's claim is
fenced by the lease row (``store.leases.fence``), not by the heartbeat.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from sqlalchemy.engine import Engine

from bridge import store
from bridge.domain.leases import LeaseTiming, plan_round, to_stop
from bridge.workers.base import LeaseExpired, holder_id

log = logging.getLogger(__name__)


def _lease_clock() -> Callable[[], float]:
    """The clock of the local lease deadlines: one that keeps counting while the machine is suspended.

    CLOCK_MONOTONIC stops during a host suspend (and some VM pauses), while the database's
    clock, which ends the lease for the other daemons, does not: a daemon resumed after an
    hour would still think its lease had most of its time left and start operations on an
    account another daemon has taken meanwhile. CLOCK_BOOTTIME (Linux) counts the
    suspended time too; elsewhere there is only the monotonic clock.
    """
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    return functools.partial(time.clock_gettime, boottime)


#: Now, on the clock of the local lease deadlines (see _lease_clock).
lease_clock: Callable[[], float] = _lease_clock()

T = TypeVar("T")


def gone(holder: str) -> bool:
    """Whether the process of ``holder`` (host:pid:id) is known to have ended: on this host, no such pid.

    Asked on SQLite only, where every process sharing the database file runs on one
    machine: a daemon restarted after a crash takes its dead predecessor's leases at
    once instead of waiting for them to expire. A reused pid only makes it wait.
    """
    host, _, rest = holder.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # exists, another user's
        return False
    return False


class AccountLease:
    """This daemon's hold on one account, as its workers see it: may an operation start now?

    ``deadline`` is on :data:`lease_clock` (monotonic, suspend included); the keeper moves it on
    at each renewal. ``local`` False (SQLite: one daemon on one machine, kept alone by the
    database file's lock) makes the deadline never come: nobody else could take the account.
    """

    def __init__(self, account: str, holder: str, timing: LeaseTiming, deadline: float, *,
                 previous_until: datetime | None = None, acquired_at: datetime | None = None, local: bool = True,
                 monotonic: Callable[[], float] = lease_clock) -> None:
        self.account = account
        self.holder = holder
        self.timing = timing
        self.deadline = deadline if local else math.inf
        self.local = local
        # Until when the previous holder may have been acting (None: nobody, or SQLite): what it left
        # half done is judged only some time after that (bridge.workers.outbox, reconcile).
        self.previous_until = previous_until if local else None
        self.acquired_at = acquired_at   # names this holding for the fence (store.leases.fence)
        self._monotonic = monotonic
        self.lost = False

    def renewed(self, round_started: float) -> None:
        if self.local and not self.lost:
            self.deadline = self.timing.deadline(round_started)

    def lose(self) -> None:
        """The renewal did not keep this lease (taken over, or expired): no operation may start on it again."""
        self.lost = True
        self.deadline = -math.inf

    def may_start(self) -> bool:
        return self.timing.may_start(self.deadline, self._monotonic())

    def check(self, what: str) -> None:
        """Raise LeaseExpired unless ``what`` (an operation of at most ``operation_seconds``) may start now."""
        if not self.may_start():
            left = self.deadline - self._monotonic()
            raise LeaseExpired(f"account {self.account}: not starting {what}: the lease has {max(0.0, left):.1f} s "
                               f"left, less than operation_seconds ({self.timing.operation_seconds:g}); it was not "
                               "renewed in time (database unreachable, or this process was paused)")


Start = Callable[[str, AccountLease], Awaitable[None]]
Stop = Callable[[str], Awaitable[bool]]


class LeaseKeeper:
    """Holds this daemon's leases and starts and stops accounts' workers as they come and go.

    ``accounts()``: the configured account names (a reload may change them);
    ``start(name, lease)``: start the account's workers; ``stop(name)``: stop them, True once
    they have, False when they are still busy after a while (it is then asked again).

    An account whose workers are stopping is never taken again, and a lease whose workers
    are stopping is never released, until they have really stopped: the fence checks the
    holder, so workers of an old holding of this daemon would pass it.
    """

    def __init__(self, engine: Engine, timing: LeaseTiming, accounts: Callable[[], list[str]],
                 start: Start, stop: Stop, *, holder: str | None = None, balance: bool = True,
                 monotonic: Callable[[], float] = lease_clock) -> None:
        # Every transaction begins with store.keeper_limits: its renewals lock every lease row it holds,
        # and a keeper frozen mid-round must not keep them locked for longer than a dead daemon's lease
        # lasts (as the workers' fence, supervisor.py).
        self.engine = engine
        self.timing = timing
        self.accounts = accounts
        self._start = start
        self._stop = stop
        self.holder = holder or holder_id("daemon")   # new at every start (Procrastinate #1518)
        self.monotonic = monotonic
        # SQLite: one daemon, kept alone by the file lock; no local deadlines, no fence (store.leases.fenced).
        self.local = engine.dialect.name != "sqlite"
        self.held: dict[str, AccountLease] = {}       # accounts whose workers run
        self.leaving: dict[str, AccountLease] = {}    # workers stopping, lease kept and renewed until they have
        self.stopping: set[str] = set()               # workers stopping (lease kept or lost): not taken again
        self._stopping: set[asyncio.Future[object]] = set()
        self.lock = asyncio.Lock()   # one round, or one change of the accounts by a reload, at a time
        self.paused = False   # a reload is stopping accounts: leases renewed, none taken or given up
        self.rounds = 0
        self._dead: set[str] = set()   # SQLite: holders whose process is gone (see gone())
        # False (``run --once``): renew what is held, take and give up nothing. Set ``closing``
        # when the daemon stops: its leases are renewed while the workers finish, no more are taken.
        self.balance = balance
        self.closing = False
        # Its own thread: renewals never queue behind workers' calls in the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease-keeper")

    def _db(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """``fn(*args)`` (a short transaction of the keeper's) in the keeper's own thread."""
        return asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    # -- one round -----------------------------------------------------------------

    async def round(self) -> None:
        async with self.lock:
            await self._round()
        self.rounds += 1

    async def _round(self) -> None:
        started = self.monotonic()
        try:
            renewed: list[str] | None = sorted(await self._db(self._renew))
        except Exception as exc:  # noqa: BLE001 - the database may be down: the deadlines decide
            log.warning("cannot renew the account leases (%s); each account stops at its lease's deadline "
                        "unless a renewal gets through first", exc)
            renewed = None
        for lease in list(self.held.values()) + list(self.leaving.values()):
            if renewed is not None and lease.account in renewed:
                lease.renewed(started)
            elif renewed is not None:
                lease.lose()
        deadlines = {name: lease.deadline for name, lease in self.held.items()}
        for name in to_stop(deadlines, renewed, self.monotonic(), self.timing.operation_seconds):
            self.held.pop(name)
            why = "its lease was not renewed in time" if renewed is None else "its lease is no longer this daemon's"
            log.warning("account %s: stopping: %s (holder %s)", name, why, self.holder)
            self.retire(name, None)
        if renewed is None or self.closing or self.paused or not self.balance:
            return
        configured = self.accounts()
        strays = [a for a in renewed if a not in self.held and a not in self.leaving and a not in self.stopping]
        if strays:   # held in the database but not worked here: a reload removed it, or a round was cut short
            await self._db(self._release, strays)
        try:
            daemons, others = await self._db(self._view, configured)
        except Exception as exc:  # noqa: BLE001 - next round
            log.warning("cannot read the other daemons' leases (%s); trying again in %g s", exc,
                        self.timing.renew_seconds)
            return
        # Accounts whose old workers are still stopping are not free, whoever holds their lease now.
        plan = plan_round(self.holder, configured, list(self.held), others + sorted(self.stopping), daemons)
        for name in plan.give_up:
            log.info("account %s: handing over to another daemon (%d live, this one's share is %d)",
                     name, len(daemons), plan.target)
            self.retire(name, self.held.pop(name), release=True)
        if plan.take:
            await self._take(plan.take)

    def _renew(self) -> list[str]:
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            store.beat(conn, self.holder, self.timing.lease_seconds, balances=self.balance)
            return list(store.renew(conn, self.holder, self.timing.lease_seconds))

    def _view(self, accounts: list[str]) -> tuple[list[str], list[str]]:
        """(the live daemons, the accounts others hold live); on SQLite, gone processes count for neither."""
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            daemons = store.live_daemons(conn)
            states = store.lease_states(conn, accounts)
        self._dead = set() if self.local else {h for h in daemons + [s.holder for s in states.values()] if gone(h)}
        return ([d for d in daemons if d not in self._dead],
                [a for a, s in states.items() if s.live and s.holder != self.holder and s.holder not in self._dead])

    async def _take(self, accounts: tuple[str, ...]) -> None:
        started = self.monotonic()
        try:
            taken = await self._db(self._take_in, accounts)
        except Exception as exc:  # noqa: BLE001 - next round
            log.warning("cannot take account leases (%s); trying again in %g s", exc, self.timing.renew_seconds)
            return
        for t in taken:
            lease = AccountLease(t.account, self.holder, self.timing, self.timing.deadline(started),
                                 previous_until=t.previous_until, acquired_at=t.acquired_at, local=self.local,
                                 monotonic=self.monotonic)
            if self.closing:
                # The daemon began stopping during the round trip and has signalled every worker it
                # had: workers started now would never be told to stop. Checked with no await before
                # the start, so the shutdown (on the same loop) cannot slip in between.
                log.info("account %s: lease given back at once: the daemon is stopping", t.account)
                await self._db(self._release, [t.account])
                continue
            self.held[t.account] = lease
            log.info("account %s: lease taken by %s%s", t.account, self.holder,
                     f" (after {t.previous_holder})" if t.previous_holder and t.previous_holder != self.holder
                     else "")
            try:
                await self._start(t.account, lease)
            except Exception:  # noqa: BLE001 - an account nobody works must not stay leased to this daemon
                log.exception("account %s: cannot start its workers; giving its lease back", t.account)
                self.held.pop(t.account, None)
                await self._db(self._release, [t.account])

    def _take_in(self, accounts: tuple[str, ...]) -> list[store.Taken]:
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            return store.take(conn, self.holder, accounts, self.timing.lease_seconds, dead_holders=self._dead)

    def _release(self, accounts: list[str] | None) -> list[str]:
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            return store.release(conn, self.holder, accounts)

    def retire(self, name: str, lease: AccountLease | None, *, release: bool = False,
               keep: bool = False) -> asyncio.Future[object]:
        """Stop the account's workers in the background; ``lease`` (still this daemon's) is kept and renewed until
        they have stopped, then released when ``release`` (a hand-over), or left in :attr:`leaving` when
        ``keep`` (a reload restarts the account: :meth:`resume`).

        Until then the account is not taken again (:attr:`stopping`). Workers that do not stop
        are waited for again and again; at the daemon's stop their lease is kept (see
        :meth:`leave`) and runs out by itself.
        """
        self.stopping.add(name)
        if lease is not None:
            self.leaving[name] = lease
        return self._in_background(self._retire(name, lease, release, keep))

    async def _retire(self, name: str, lease: AccountLease | None, release: bool, keep: bool = False) -> None:
        try:
            while not await self._stop(name):
                if self.closing:
                    log.warning("account %s: its workers are still busy as the daemon stops; its lease is kept "
                                "and runs out by itself", name)
                    return   # still in stopping: leave() keeps the lease
                log.warning("account %s: its workers are still busy; %s until they stop", name,
                            "its lease is kept" if lease is not None else "it is not taken again")
        except Exception:  # noqa: BLE001 - the lease then runs out by itself
            log.exception("account %s: cannot stop its workers; its lease runs out by itself", name)
            return
        self.stopping.discard(name)
        if not keep:
            self.leaving.pop(name, None)
        if release and lease is not None and not lease.lost:
            try:
                await self._db(self._release, [name])
            except Exception:  # noqa: BLE001 - the lease then runs out by itself
                log.exception("account %s: cannot release its lease; another daemon takes it when it expires",
                              name)

    def _in_background(self, work: Awaitable[object]) -> asyncio.Future[object]:
        task = asyncio.ensure_future(work)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    def give_back(self, name: str) -> None:
        """The account's workers could not start: release its lease (in the background) for another daemon."""
        self.held.pop(name, None)
        self._in_background(self._db(self._release, [name]))

    # -- reload and stop -----------------------------------------------------------

    async def set_aside(self, names: Iterable[str], *, release: bool) -> None:
        """A reload: stop the workers of ``names`` and return once they have; their leases are renewed meanwhile.

        Then released when ``release`` (accounts removed); otherwise kept in :attr:`leaving`
        for :meth:`resume` (accounts changed, started again with their new settings). Called
        without :attr:`lock` held, and with :attr:`paused` set: rounds go on renewing every
        lease while the workers stop, but take and give up nothing.
        """
        async with self.lock:
            waits = [self.retire(n, self.held.pop(n), release=release, keep=not release)
                     for n in names if n in self.held]
        await asyncio.gather(*waits, return_exceptions=True)

    def resume(self, name: str) -> AccountLease | None:
        """After :meth:`set_aside` (``release=False``): the account's lease, held again, if its workers have
        stopped and it is still this daemon's; else None (the lease, if any, is left to run out or be released)."""
        if name in self.stopping or self.closing:   # the daemon is stopping: nothing starts
            return None
        lease = self.leaving.pop(name, None)
        if lease is None or lease.lost or not lease.may_start():
            return None
        self.held[name] = lease
        return lease

    async def run(self, stop: asyncio.Event) -> None:
        """A round now, then every ``renew_seconds`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.round()
            except Exception:  # noqa: BLE001 - the keeper must go on renewing whatever one round did
                log.exception("lease round failed; next one in %g s", self.timing.renew_seconds)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.timing.renew_seconds)
            except TimeoutError:
                pass

    async def take_for_pass(self) -> tuple[dict[str, AccountLease], dict[str, str]]:
        """``run --once``: the leases of every configured account nobody else holds live.

        Returns (the leases taken, {account: holder} of those another daemon holds).
        The holders of the accounts skipped are read after the take, not before it: on PostgreSQL
        another daemon may take an account between the two, and the holder named must be the one
        that kept the pass from it. SQLite reads the leases before the take too, for the holders
        whose process is gone (whose leases it takes); PostgreSQL needs no such read.
        """
        accounts = self.accounts()
        started = self.monotonic()
        await self._db(self._beat)
        if not self.local:   # SQLite: which holders are gone (never judged on PostgreSQL: _view leaves _dead empty)
            await self._db(self._view, accounts)
        taken = {t.account: t for t in await self._db(self._take_in, tuple(accounts))}
        for name, t in taken.items():
            self.held[name] = AccountLease(name, self.holder, self.timing, self.timing.deadline(started),
                                           previous_until=t.previous_until, acquired_at=t.acquired_at, local=self.local,
                                           monotonic=self.monotonic)
        states = await self._db(self._states, accounts)
        skipped = {a: states[a].holder for a in accounts if a not in taken and a in states}
        return dict(self.held), skipped

    def _beat(self) -> None:
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            store.beat(conn, self.holder, self.timing.lease_seconds, balances=self.balance)

    def _states(self, accounts: list[str]) -> dict[str, store.LeaseState]:
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            return store.lease_states(conn, accounts)

    async def leave(self, keep: Iterable[str] = (), within: float | None = None) -> None:
        """Clean stop, after the workers have stopped: every lease released but ``keep``'s (workers that did
        not stop in time) and those of accounts whose workers are still stopping; the daemon row gone.

        ``within``: how long to wait for the stops still in progress (hand-overs, reloads); None:
        until they end. A standby daemon then takes the accounts at its next round, not a lease later.
        """
        self.closing = True
        async with self.lock:
            if self._stopping:   # closing is set: each gives up after its current wait
                done, _ = await asyncio.wait(set(self._stopping), timeout=within)
                for task in done:   # retrieved: what failed was logged where it failed, or runs out anyway
                    if not task.cancelled():
                        task.exception()
            kept = set(keep) | self.stopping
            try:
                released = await self._db(self._leave, kept)
            except Exception as exc:  # noqa: BLE001 - the leases then run out by themselves
                log.warning("cannot release the account leases at stop (%s); other daemons take the accounts "
                            "when the leases expire", exc)
                return
            self.held.clear()
            if released:
                log.info("released the leases of %s", ", ".join(released))
            if kept:
                log.warning("kept the leases of %s (workers still busy): they run out by themselves",
                            ", ".join(sorted(kept)))
        self._executor.shutdown(wait=False)

    def _leave(self, kept: set[str]) -> list[str]:
        with self.engine.begin() as conn:
            store.keeper_limits(conn, self.timing.renew_seconds, self.timing.lease_seconds)
            released = store.release(conn, self.holder, keep=kept)
            store.forget_daemon(conn, self.holder)
        return released
