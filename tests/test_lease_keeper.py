"""The lease keeper (bridge.workers.leases) round by round on the real PostgreSQL, its monotonic clock injected:
which accounts it starts and stops, and when, without mail servers or timing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

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

    async def start(self, name: str, lease: AccountLease) -> None:
        assert name not in self.running
        self.running[name] = lease

    async def stop(self, name: str) -> None:
        self.stops.append(name)
        self.running.pop(name)


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
