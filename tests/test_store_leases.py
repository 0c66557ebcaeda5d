"""Account leases in the database (bridge.store.leases), on SQLite and the real PostgreSQL: taking, renewing,
releasing, the fence of a worker's transaction, and the history that shows holders never overlap."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from bridgekit import database, postgres_database, wait_until
from sqlalchemy import create_engine, func, make_url, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from bridge import store
from bridge.store.engine import open_database
from bridge.workers.leases import gone

LEASE = 20.0


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database(request.param, tmp_path) as opened:
        yield opened


def expire(engine: Engine, account: str) -> None:
    """As if the holder had stopped renewing long ago."""
    with engine.begin() as conn:
        conn.execute(update(store.LEASE).where(store.LEASE.c.account == account)
                     .values(expires_at=store.database_time(conn).replace(year=2000)))


def test_first_taker_wins_and_renews(engine: Engine) -> None:
    with engine.begin() as conn:
        assert [t.account for t in store.take(conn, "d1", ["a", "b"], LEASE)] == ["a", "b"]
        assert store.take(conn, "d2", ["a", "b"], LEASE) == []
        assert sorted(store.renew(conn, "d1", LEASE)) == ["a", "b"]
        assert store.renew(conn, "d2", LEASE) == {}
        states = store.lease_states(conn)
    assert {a: (s.holder, s.live) for a, s in states.items()} == {"a": ("d1", True), "b": ("d1", True)}


def test_an_expired_lease_is_taken_and_its_holder_can_neither_renew_nor_write(engine: Engine) -> None:
    with engine.begin() as conn:
        store.take(conn, "d1", ["a"], LEASE)
    expire(engine, "a")
    with engine.begin() as conn:
        assert store.renew(conn, "d1", LEASE) == {}
        [taken] = store.take(conn, "d2", ["a"], LEASE)
    assert taken.previous_holder == "d1" and taken.previous_until is not None
    if engine.dialect.name == "sqlite":
        return   # the taking above is all SQLite has: one daemon, kept alone by the file lock, is never fenced
    with pytest.raises(store.LeaseLost, match="account a: this daemon \\(d1\\) no longer holds"):
        with store.fenced(engine, "a", "d1").begin():
            pass
    with store.fenced(engine, "a", "d2").begin() as conn:
        assert store.lease_states(conn)["a"].holder == "d2"


def test_the_fence_knows_a_holding_from_an_earlier_one_of_the_same_daemon(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("no fence on SQLite: one daemon per database (store.leases.fenced)")
    with engine.begin() as conn:
        [first] = store.take(conn, "d1", ["a"], LEASE)
        store.release(conn, "d1", ["a"])
        [second] = store.take(conn, "d1", ["a"], LEASE)
    assert first.acquired_at is not None and second.acquired_at is not None
    with store.fenced(engine, "a", "d1", acquired_at=second.acquired_at).begin():
        pass
    with pytest.raises(store.LeaseLost):   # the workers of the first holding, still running somewhere
        with store.fenced(engine, "a", "d1", acquired_at=first.acquired_at).begin():
            pass


def test_release_frees_at_once_and_closes_the_holding(engine: Engine) -> None:
    with engine.begin() as conn:
        store.take(conn, "d1", ["a", "b"], LEASE)
        assert store.release(conn, "d1", ["a"]) == ["a"]
        assert [t.account for t in store.take(conn, "d2", ["a", "b"], LEASE)] == ["a"]
        assert store.release(conn, "d1") == ["b"]
        history = store.lease_history(conn, "a")
    assert [(h["holder"], h["released"]) for h in history] == [("d1", True), ("d2", False)]
    assert history[0]["until"] <= history[1]["acquired_at"]


def test_daemons_heartbeat_and_leave(engine: Engine) -> None:
    with engine.begin() as conn:
        store.beat(conn, "d2", LEASE)
        store.beat(conn, "d1", LEASE)
        store.beat(conn, "d1", LEASE)
        assert store.live_daemons(conn) == ["d1", "d2"]
        store.forget_daemon(conn, "d2")
        assert store.live_daemons(conn) == ["d1"]


def test_racing_takers_never_both_win(engine: Engine) -> None:
    """Eight threads (as eight daemons) take the same accounts again and again, expiring them in between."""
    accounts = [f"acct{i}" for i in range(6)]
    wins: list[tuple[int, str, str]] = []
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def daemon(name: str) -> None:
        try:
            for round_ in range(5):
                barrier.wait(timeout=60)
                with engine.begin() as conn:
                    wins.extend((round_, t.account, name) for t in store.take(conn, name, accounts, LEASE))
                barrier.wait(timeout=60)
                if name == "d0":
                    for a in accounts:
                        expire(engine, a)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=daemon, args=(f"d{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for round_ in range(5):
        won = sorted(a for r, a, _ in wins if r == round_)
        assert won == accounts, f"round {round_}: each account won exactly once"


def test_a_takeover_waits_for_the_fenced_transaction_in_flight(tmp_path: Path) -> None:
    """PostgreSQL: the old holder's transaction that passed the fence commits before the new holder takes the row."""
    with postgres_database() as url:
        engine = open_database(url)
        try:
            with engine.begin() as conn:
                store.take(conn, "d1", ["a"], LEASE)
            fenced = store.fenced(engine, "a", "d1")
            order: list[str] = []
            in_fence, taken = threading.Event(), threading.Event()

            def taker() -> None:
                in_fence.wait(timeout=60)
                expire_and_take()

            def expire_and_take() -> None:
                # Expiring needs no row lock a fence conflicts with (a no-key UPDATE) ...
                expire(engine, "a")
                # ... but taking locks the row FOR UPDATE: skipped while the fenced transaction runs.
                with engine.begin() as conn:
                    got = store.take(conn, "d2", ["a"], LEASE)
                order.append(f"take {len(got)}")
                taken.set()

            thread = threading.Thread(target=taker)
            thread.start()
            with fenced.begin():
                in_fence.set()
                assert taken.wait(timeout=60)
                order.append("fenced commit")
            thread.join(timeout=60)
            assert order == ["take 0", "fenced commit"]
            with engine.begin() as conn:   # once the fenced transaction is over, the next round takes it
                assert [t.account for t in store.take(conn, "d2", ["a"], LEASE)] == ["a"]
        finally:
            engine.dispose()


def test_a_stalled_fenced_transaction_is_ended_by_the_server_and_the_lease_taken() -> None:
    """PostgreSQL: a holder stopped (SIGSTOP) inside a transaction does not hold off a takeover for ever."""
    with postgres_database() as url:
        engine = open_database(url)
        try:
            with engine.begin() as conn:
                store.take(conn, "d1", ["a"], LEASE)
            expire(engine, "a")   # the stopped holder's lease runs out ...
            stalled = store.fenced(engine, "a", "d1", stall_seconds=1).connect()
            with pytest.raises(store.LeaseLost):   # (a fence after the expiry fails at once)
                stalled.begin()
            stalled.close()
            with engine.begin() as conn:   # ... while a transaction of it had passed the fence before:
                conn.execute(update(store.LEASE).where(store.LEASE.c.account == "a")
                             .values(expires_at=store.database_time(conn).replace(year=2100)))
            stalled = store.fenced(engine, "a", "d1", stall_seconds=1).connect()
            stalled.begin()
            expire(engine, "a")

            def take() -> list[store.Taken]:   # skipped while the stalled transaction holds its lock
                with engine.begin() as conn:
                    return store.take(conn, "d2", ["a"], LEASE)

            wait_until(take, "the server to end the stalled transaction so the lease is taken", 60, interval=0.1)
            with pytest.raises(DBAPIError, match="idle-in-transaction timeout"):   # the stalled holder can write nothing any more
                stalled.execute(select(1))
            stalled.close()
        finally:
            engine.dispose()


def test_a_holders_stuck_session_is_ended_by_a_taker_with_the_privileges_and_reported_by_one_without(
        caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL: a holder frozen halfway through sending a statement (here a pipeline not yet synced) is waited
    for by its server session with no timeout; the taker ends that session, or says which privileges it lacks."""
    with postgres_database() as url:
        engine = open_database(url)
        role = f"mailbridge_other_{os.getpid()}"
        stuck = store.fenced(engine, "a", "d1", stall_seconds=1).connect()
        try:
            with engine.begin() as conn:
                store.take(conn, "d1", ["a"], LEASE)
                conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
                conn.exec_driver_sql(f"GRANT SELECT ON account_lease TO {role}")
            stuck.begin()
            driver = stuck.connection.driver_connection
            pipeline = driver.pipeline()
            pipeline.__enter__()
            driver.cursor().execute("SELECT 1")
            driver.pgconn.flush()   # sent without a Sync: the server waits for the rest
            with engine.begin() as conn:   # the lease expires now: the session has not moved since before
                conn.execute(update(store.LEASE).where(store.LEASE.c.account == "a")
                             .values(expires_at=store.database_time(conn)))
            expired = store.LEASE.c.expires_at <= func.clock_timestamp()
            other = create_engine(make_url(url).set(username=role))
            try:
                for grant, said in [("", "may not see its state"), ("pg_read_all_stats", "could not end")]:
                    if grant:
                        with engine.begin() as conn:
                            conn.exec_driver_sql(f"GRANT {grant} TO {role}")
                    caplog.clear()
                    with other.begin() as conn:
                        assert store.end_stuck_sessions(conn, ["a"], expired) == 0
                        assert conn.execute(select(1)).scalar() == 1   # the take's transaction goes on
                    assert said in caplog.text and "pg_signal_backend" in caplog.text
            finally:
                other.dispose()
            with engine.begin() as conn:
                assert store.end_stuck_sessions(conn, ["a"], expired) == 1
            wait_until(lambda: store_take(engine, "d2", "a"), "the lease to be taken once the session ended", 30,
                       interval=0.1)
            with pytest.raises(psycopg.OperationalError):   # the stuck holder, awake, writes nothing
                pipeline.__exit__(None, None, None)
        finally:
            stuck.invalidate()
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
            engine.dispose()


def store_take(engine: Engine, holder: str, account: str) -> list[store.Taken]:
    with engine.begin() as conn:
        return store.take(conn, holder, [account], LEASE)


def test_keeper_limits_bound_statements_locks_and_idleness_for_its_transaction_only() -> None:
    """PostgreSQL: every limit of a keeper transaction is set by keeper_limits, and none outlives it."""
    names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
    with postgres_database() as url:
        engine = open_database(url)
        try:
            with engine.begin() as conn:
                store.keeper_limits(conn, 2.5, idle_seconds=30)
                assert [conn.exec_driver_sql(f"SHOW {n}").scalar() for n in names] == ["2500ms", "2500ms", "30s"]
            with engine.begin() as conn:
                assert [conn.exec_driver_sql(f"SHOW {n}").scalar() for n in names] == ["0", "0", "0"]
        finally:
            engine.dispose()


def test_a_dead_holders_live_lease_is_taken_and_its_holding_ends_then(engine: Engine) -> None:
    with engine.begin() as conn:
        store.take(conn, "dead", ["a"], LEASE)
        assert store.take(conn, "d2", ["a"], LEASE) == []
        [taken] = store.take(conn, "d2", ["a"], LEASE, dead_holders=["dead"])
        history = store.lease_history(conn, "a")
    assert taken.previous_holder == "dead"
    assert [h["holder"] for h in history] == ["dead", "d2"]
    assert history[0]["until"] <= history[1]["acquired_at"]


def test_gone_knows_an_ended_process_from_a_running_one() -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    host = socket.gethostname()
    assert gone(f"{host}:{ended.stdout.strip()}:abcd1234")
    assert not gone(f"{host}:{os.getpid()}:abcd1234")
    assert not gone(f"another-{host}:{ended.stdout.strip()}:abcd1234")   # another machine's: cannot tell
