"""The lease keeper (bridge.workers.leases) round by round on the real PostgreSQL, its monotonic clock injected:
which accounts it starts and stops, and when, without mail servers or timing."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from bridgekit import postgres_database
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from bridge import store
from bridge.domain.leases import LeaseTiming
from bridge.store.engine import open_database
from bridge.workers.leases import AccountLease, LeaseKeeper

pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres

ACCOUNTS = ["a1", "a2", "a3", "a4"]
TIMING = LeaseTiming(lease_seconds=60, renew_seconds=5, operation_seconds=10)   # local deadline: 58 s


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgres_database() as url:
        eng = open_database(url)
        yield eng
        eng.dispose()


class Tick:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The supervisor's side: which accounts run."""

    def __init__(self) -> None:
        self.running: dict[str, AccountLease] = {}
        self.stops: list[str] = []
        self.starts: list[str] = []
        self.busy: set[str] = set()   # accounts whose workers do not stop (the stop times out) until removed
        self.stop_asked = asyncio.Event()

    async def start(self, name: str, lease: AccountLease) -> None:
        self.starts.append(name)   # twice while the first workers run: the test's checks of starts see it
        self.running[name] = lease

    async def stop(self, name: str) -> bool:
        self.stop_asked.set()
        await asyncio.sleep(0)
        if name in self.busy:
            return False
        self.stops.append(name)
        self.running.pop(name)
        return True


def keeper(engine: Engine, holder: str, tick: Tick) -> tuple[LeaseKeeper, Recorder]:
    rec = Recorder()
    return LeaseKeeper(engine, TIMING, lambda: list(ACCOUNTS), rec.start, rec.stop, holder=holder,
                       monotonic=tick), rec


async def settle(*keepers: LeaseKeeper) -> None:
    """A round of each, then the hand-overs they began."""
    for k in keepers:
        await k.round()
        await asyncio.gather(*k._stopping)


def test_rounds_balance_join_and_leave(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, one_runs = keeper(engine, "host:1:daemon:aaaa", tick)
        two, two_runs = keeper(engine, "host:2:daemon:bbbb", tick)
        await settle(one)
        assert sorted(one_runs.running) == ACCOUNTS           # alone: everything
        await settle(two, one, two)                           # two joins: one hands two accounts over
        assert len(one_runs.running) == 2 and len(two_runs.running) == 2
        assert set(one_runs.running).isdisjoint(two_runs.running)
        assert sorted(one_runs.stops) == sorted(two_runs.running)   # stopped before they were handed over
        await one.leave()                                     # a clean stop: released at once
        await settle(two)
        assert sorted(two_runs.running) == ACCOUNTS

    asyncio.run(scenario())


def test_unrenewed_accounts_stop_when_no_operation_may_start_and_before_the_lease_ends(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        cut, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        await settle(cut)
        assert sorted(runs.running) == ACCOUNTS
        lease = runs.running["a1"]
        assert lease.deadline == 1000.0 + 58 and lease.may_start()

        def unreachable() -> list[str]:
            raise OperationalError("renew", {}, ConnectionRefusedError("unreachable"))

        cut._renew = unreachable  # type: ignore[method-assign]
        tick.now += 48                         # 10 s left: the longest operation may still start
        await settle(cut)
        assert sorted(runs.running) == ACCOUNTS and lease.may_start()
        tick.now += 0.5                        # less than one operation left: stopped, the lease still live
        await settle(cut)
        assert runs.running == {} and sorted(runs.stops) == ACCOUNTS
        assert not lease.may_start()
        with pytest.raises(Exception, match="not starting an SMTP send: the lease has 9.5 s left"):
            lease.check("an SMTP send")
        with engine.begin() as conn:
            assert all(s.live and s.holder == "host:1:daemon:aaaa" for s in store.lease_states(conn).values())

    asyncio.run(scenario())


def test_a_lease_taken_away_stops_its_account_at_the_next_round(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        await settle(one)
        with engine.begin() as conn:   # e.g. an operator, or a lease that expired while this process was stopped
            conn.execute(store.LEASE.update().where(store.LEASE.c.account == "a2")
                         .values(holder="elsewhere:9:daemon:cccc"))
        await settle(one)
        assert runs.stops == ["a2"] and "a2" not in runs.running

    asyncio.run(scenario())


def lease_row(engine: Engine, account: str) -> store.LeaseState:
    with engine.begin() as conn:
        return store.lease_states(conn, [account])[account]


def test_an_account_whose_workers_are_still_stopping_is_not_taken_again(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        await settle(one)
        runs.busy.add("a1")
        with engine.begin() as conn:   # its lease ran out (e.g. this process was paused) and nobody took it
            conn.execute(store.LEASE.update().where(store.LEASE.c.account == "a1")
                         .values(expires_at=store.LEASE.c.acquired_at))
        await one.round()              # not renewed: stopping; and free: but its old workers still run
        await asyncio.sleep(0.01)
        assert "a1" in one.stopping and runs.starts.count("a1") == 1 and "a1" not in one.held
        await one.round()
        assert runs.starts.count("a1") == 1
        runs.busy.clear()              # they stop at last: taken again at the next round
        await asyncio.gather(*one._stopping)
        await one.round()
        assert runs.starts.count("a1") == 2 and "a1" in one.held

    asyncio.run(scenario())


def test_a_lease_handed_over_is_released_only_once_its_workers_have_stopped(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, one_runs = keeper(engine, "host:1:daemon:aaaa", tick)
        two, two_runs = keeper(engine, "host:2:daemon:bbbb", tick)
        await settle(one)
        one_runs.busy.update(ACCOUNTS)
        await two.round()
        await one.round()              # two joined: one gives two accounts up, whose workers do not stop
        await asyncio.sleep(0.01)
        leaving = sorted(one.leaving)
        assert len(leaving) == 2 and set(leaving) <= one.stopping
        tick.now += 30
        await one.round()              # still renewed, by the same round as the others
        assert all(one.leaving[a].deadline == tick.now + 58 for a in leaving)
        assert all(lease_row(engine, a).holder == one.holder and lease_row(engine, a).live for a in leaving)
        await two.round()
        assert two_runs.running == {}
        one_runs.busy.clear()
        await asyncio.gather(*one._stopping)
        assert all(not lease_row(engine, a).live for a in leaving)
        await two.round()
        assert sorted(two_runs.running) == leaving

    asyncio.run(scenario())


def test_leases_are_renewed_while_a_reload_stops_accounts(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        await settle(one)
        runs.busy.add("a1")
        one.paused = True
        aside = asyncio.create_task(one.set_aside(["a1", "a2"], release=False))
        await runs.stop_asked.wait()
        for _ in range(3):             # a minute and a half of rounds while a1's workers do not stop
            tick.now += 30
            await asyncio.wait_for(one.round(), timeout=30)
        assert not aside.done()
        assert all(lease.deadline == tick.now + 58 for lease in list(one.held.values()) + list(one.leaving.values()))
        assert sorted(one.held) == ["a3", "a4"] and sorted(one.leaving) == ["a1", "a2"]
        runs.busy.clear()
        await aside
        one.paused = False
        lease = one.resume("a1")
        assert lease is not None and one.held["a1"] is lease
        assert one.resume("a2") is not None and not one.leaving
        await one.round()              # nothing released as a stray, nothing taken twice
        assert all(lease_row(engine, a).holder == one.holder and lease_row(engine, a).live for a in ACCOUNTS)

    asyncio.run(scenario())


def test_no_account_starts_once_the_daemon_is_closing(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        take_in = one._take_in

        def stop_arrives_meanwhile(accounts: tuple[str, ...]) -> list[store.Taken]:
            one.closing = True         # SIGTERM during the round trip that takes the leases
            return take_in(accounts)

        one._take_in = stop_arrives_meanwhile  # type: ignore[method-assign]
        await one.round()
        assert runs.starts == [] and one.held == {}
        assert all(not lease_row(engine, a).live for a in ACCOUNTS)

    asyncio.run(scenario())


def test_a_run_once_pass_takes_no_share_from_the_running_daemons(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        one, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        await settle(one)
        rec = Recorder()
        once = LeaseKeeper(engine, TIMING, lambda: list(ACCOUNTS), rec.start, rec.stop,
                           holder="host:2:once:bbbb", balance=False, monotonic=tick)
        leases, skipped = await once.take_for_pass()
        assert leases == {} and sorted(skipped) == ACCOUNTS
        await once.round()             # renews what it holds: its heartbeat too
        await settle(one)
        assert sorted(runs.running) == ACCOUNTS and runs.stops == []
        with engine.begin() as conn:
            assert store.live_daemons(conn) == ["host:1:daemon:aaaa"]

    asyncio.run(scenario())


def test_rounds_do_not_queue_behind_the_workers_threads(engine: Engine) -> None:
    tick = Tick()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        busy = ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(busy)   # every to_thread of the workers, here one blocked call
        release = threading.Event()
        blocked = loop.run_in_executor(None, release.wait)
        one, runs = keeper(engine, "host:1:daemon:aaaa", tick)
        try:
            await asyncio.wait_for(one.round(), timeout=60)
            assert sorted(runs.running) == ACCOUNTS
        finally:
            release.set()
            await blocked

    asyncio.run(scenario())


def test_postgres_connections_cannot_hang_for_the_kernels_timeout(engine: Engine) -> None:
    with engine.connect() as conn:
        params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    assert params["connect_timeout"] == "10" and params["tcp_user_timeout"] == "15000"
    assert params["keepalives"] == "1"


def test_lease_deadlines_count_the_time_the_machine_was_suspended() -> None:
    from bridge.workers.leases import lease_clock

    keeper_default = LeaseKeeper.__init__.__kwdefaults__["monotonic"]  # type: ignore[index]
    lease_default = AccountLease.__init__.__kwdefaults__["monotonic"]  # type: ignore[index]
    assert keeper_default is lease_clock and lease_default is lease_clock
    if hasattr(time, "CLOCK_BOOTTIME"):   # Linux: the clock that keeps counting through a suspend
        # Which clock it reads, not what it returns: on a machine never suspended, CLOCK_MONOTONIC
        # reads the same, and a comparison of values could not tell the two apart.
        assert isinstance(lease_clock, functools.partial)
        assert (lease_clock.func, lease_clock.args) == (time.clock_gettime, (time.CLOCK_BOOTTIME,))
