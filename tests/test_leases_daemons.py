"""Account leases between daemons sharing the real PostgreSQL (127.0.0.1:5432) and one Dovecot.

In-process Daemon objects on one event loop, with short lease times so that takeovers
take seconds. Every wait is on a condition with a generous timeout; no test asserts a
duration. Each test ends by checking the lease history: no two holdings of an account
overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from bridgekit import account_block, rows, until
from clusterkit import assert_no_overlap, holdings
from sqlalchemy import insert, update
from sqlalchemy.exc import OperationalError

from bridge import store
from bridge.config import Settings, parse_settings
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.workers.supervisor import Daemon

pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres

NAMES = ["a1", "a2", "a3", "a4"]
# Renewed twice a second; a daemon that cannot renew stops its accounts 4 s before its lease ends.
CLUSTER = {"lease_seconds": 8, "renew_seconds": 0.5, "operation_seconds": 4}
WAIT = 90.0   # seconds: generous, for a loaded machine


@pytest.fixture
def mailboxes(dovecot: DovecotServer) -> list[SandboxAccount]:
    return [dovecot.new_account(name) for name in NAMES]


def settings(tmp_path: Path, url: str, mailboxes: list[SandboxAccount], staff: SandboxAccount,
             smtp: SandboxSMTP) -> Settings:
    data: dict[str, Any] = {
        "database": {"url": url},
        "outbox": {"retry_base_seconds": 1, "retry_max_seconds": 10},
        "cluster": CLUSTER,
        "accounts": [account_block(name, box, staff, smtp) for name, box in zip(NAMES, mailboxes)],
    }
    return parse_settings(data, tmp_path / "mailbridge.toml", {}, lambda p: p.read_text())


def deliver(dovecot: DovecotServer, mailboxes: list[SandboxAccount], each: int, seed: int) -> int:
    for n, box in enumerate(mailboxes):
        for raw in samples.buyer_backlog(each, seller_address=box.user, seed=seed + n, buyers=1):
            dovecot.append(box.user, "INBOX", raw)
    return each * len(mailboxes)


class Running:
    """A daemon running on the test's loop until stopped."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(daemon.run(self.stop))

    @property
    def accounts(self) -> set[str]:
        return set(self.daemon.running)

    async def ready(self) -> None:
        await until(lambda: self.daemon.keeper is not None and self.daemon.keeper.rounds > 0, "a first lease round",
                    timeout=WAIT)

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT)


def holders(daemon: Daemon) -> dict[str, str]:
    with daemon.engine.begin() as conn:
        return {a: s.holder for a, s in store.lease_states(conn).items() if s.live}


def assert_each_forwarded_once(daemon: Daemon, smtp: SandboxSMTP, total: int) -> None:
    """Every message recorded once (one row per account and UID) and forwarded to staff once."""
    held = holdings(daemon.engine)
    assert {h.account for h in held} == set(NAMES), f"held at some time: {sorted({h.account for h in held})}"
    assert_no_overlap(held)
    messages = rows(daemon.engine, store.MESSAGE)
    assert len(messages) == total
    assert len({(m.account, m.uid) for m in messages}) == total
    assert len(smtp.received) == total


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_two_daemons_split_the_accounts_and_one_takes_all_when_the_other_stops(
        tmp_path: Path, pg_url: str, dovecot: DovecotServer, mailboxes: list[SandboxAccount],
        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    config = settings(tmp_path, pg_url, mailboxes, staff, smtp_server)
    first = deliver(dovecot, mailboxes, 2, seed=40)

    async def scenario() -> None:
        one = Running(Daemon(config))
        await one.ready()
        assert len(one.accounts) == 4   # alone: everything; the second daemon joining takes half
        two = Running(Daemon(config))
        await until(lambda: len(one.accounts) == 2 and len(two.accounts) == 2, "two accounts each", timeout=WAIT)
        assert one.accounts.isdisjoint(two.accounts)
        assert set(holders(one.daemon).values()) == {one.daemon.keeper.holder, two.daemon.keeper.holder}  # type: ignore[union-attr]
        await until(lambda: len(smtp_server.received) >= first, "the first mail forwarded", timeout=WAIT)
        await one.halt()
        await until(lambda: len(two.accounts) == 4, "the remaining daemon holds every account", timeout=WAIT)
        more = deliver(dovecot, mailboxes, 1, seed=60)
        await until(lambda: len(smtp_server.received) >= first + more, "the later mail forwarded", timeout=WAIT)
        await two.halt()
        assert holders(two.daemon) == {}   # a clean stop releases everything
        assert_each_forwarded_once(two.daemon, smtp_server, first + more)
        for r in (one, two):
            r.daemon.engine.dispose()

    run(scenario)


def test_an_expired_lease_is_taken_and_a_live_one_is_not(
        tmp_path: Path, pg_url: str, dovecot: DovecotServer, mailboxes: list[SandboxAccount],
        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    config = settings(tmp_path, pg_url, mailboxes, staff, smtp_server)
    daemon = Daemon(config)
    with daemon.engine.begin() as conn:
        now = store.database_time(conn)
        # A daemon that died long ago held a1 and a2; a live one (another machine) holds a3.
        conn.execute(insert(store.LEASE), [
            {"account": "a1", "holder": "dead:1:00000000", "expires_at": now.replace(year=2020),
             "acquired_at": now.replace(year=2020), "renewed_at": now.replace(year=2020)},
            {"account": "a2", "holder": "dead:1:00000000", "expires_at": now.replace(year=2020),
             "acquired_at": now.replace(year=2020), "renewed_at": now.replace(year=2020)},
            {"account": "a3", "holder": "other:2:11111111", "expires_at": now.replace(year=now.year + 1),
             "acquired_at": now, "renewed_at": now},
        ])
        conn.execute(insert(store.DAEMON).values(holder="other:2:11111111", started_at=now, last_seen=now,
                                                 expires_at=now.replace(year=now.year + 1)))

    async def scenario() -> None:
        running = Running(daemon)
        # Two live daemons, four accounts: a share of two, from the three free ones.
        await until(lambda: len(running.accounts) == 2, "two accounts taken", timeout=WAIT)
        assert "a3" not in running.accounts
        # The other daemon goes away without releasing: its lease and heartbeat expire.
        with daemon.engine.begin() as conn:
            conn.execute(update(store.LEASE).where(store.LEASE.c.account == "a3")
                         .values(expires_at=now.replace(year=2020)))
            conn.execute(update(store.DAEMON).where(store.DAEMON.c.holder == "other:2:11111111")
                         .values(expires_at=now.replace(year=2020)))
        await until(lambda: running.accounts == set(NAMES), "every account taken", timeout=WAIT)
        await running.halt()

    run(scenario)
    with daemon.engine.begin() as conn:
        history = store.lease_history(conn)
    assert {h["holder"] for h in history} == {daemon.keeper.holder}  # type: ignore[union-attr]
    daemon.engine.dispose()


def test_a_daemon_that_cannot_renew_stops_its_accounts_before_its_leases_end(
        tmp_path: Path, pg_url: str, dovecot: DovecotServer, mailboxes: list[SandboxAccount],
        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    config = settings(tmp_path, pg_url, mailboxes, staff, smtp_server)
    first = deliver(dovecot, mailboxes, 1, seed=80)

    async def scenario() -> None:
        cut_off = Running(Daemon(config))
        await until(lambda: len(cut_off.accounts) == 4, "the first daemon holds everything", timeout=WAIT)
        other = Running(Daemon(config))
        await other.ready()
        keeper = cut_off.daemon.keeper
        assert keeper is not None

        def unreachable() -> list[str]:
            raise OperationalError("renew", {}, ConnectionRefusedError("the database is unreachable"))

        # Its renewals fail from now on (a partition between it and the database): the other
        # daemon, which still reaches the database, sees its leases run out.
        keeper._renew = unreachable  # type: ignore[method-assign]
        stopped_while_held: list[bool] = []

        def stopped() -> bool:
            if cut_off.accounts:
                return False
            if not stopped_while_held:   # the first moment its workers are all gone: were its leases still live?
                states = holders(other.daemon)
                stopped_while_held.append(sum(1 for h in states.values() if h == keeper.holder) > 0)
            return True

        await until(stopped, "the cut-off daemon's accounts stopped", timeout=WAIT)
        assert stopped_while_held == [True], "its accounts stopped only after its leases had expired"
        await until(lambda: len(other.accounts) == 4, "the other daemon takes every account", timeout=WAIT)
        more = deliver(dovecot, mailboxes, 1, seed=90)
        await until(lambda: len(smtp_server.received) >= first + more, "the later mail forwarded", timeout=WAIT)
        await other.halt()
        await cut_off.halt()
        assert_each_forwarded_once(other.daemon, smtp_server, first + more)
        for r in (cut_off, other):
            r.daemon.engine.dispose()

    run(scenario)


def test_run_once_skips_the_accounts_a_running_daemon_holds_and_status_names_the_holder(
        tmp_path: Path, pg_url: str, dovecot: DovecotServer, mailboxes: list[SandboxAccount],
        staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    config = settings(tmp_path, pg_url, mailboxes, staff, smtp_server)

    async def scenario() -> None:
        running = Running(Daemon(config))
        await until(lambda: len(running.accounts) == 4, "the daemon holds every account", timeout=WAIT)
        holder = running.daemon.keeper.holder  # type: ignore[union-attr]
        once = Daemon(config)
        report = await once.run_once()
        assert report.skipped == {name: holder for name in NAMES}
        assert report.ingest == {}
        with once.engine.begin() as conn:
            lease = store.account_status(conn, "a1")["lease"]
        assert lease["holder"] == holder and lease["live"] and lease["holder_live"]
        await running.halt()
        # Nobody holds them now: a pass takes them all, and gives them back at its end.
        report = await once.run_once()
        assert report.skipped == {} and sorted(report.ingest) == NAMES
        assert holders(once) == {}
        for d in (running.daemon, once):
            d.engine.dispose()

    run(scenario)
