"""Several real daemons on one PostgreSQL share 20 accounts: leases, takeover, rebalance, exactly once.

Each test runs real ``mailbridge run`` processes (tests/clusterkit.py) on one
config with 20 ``[[accounts]]`` on one Dovecot and one recording SMTP server,
a small backlog (10 buyer messages per account, then 2 staff replies per
account), and judges by what reached the SMTP server and the database:

- every buyer message recorded once and forwarded to staff once, every staff
  reply relayed to its buyer once (per Message-ID and per answer text);
- no account held by two daemons at any moment: the ``lease_history`` holdings
  of an account never overlap, and no daemon logged a fetch, a recorded message
  or a send for an account outside its own holdings of it.

Nothing is excused, SIGSTOP included: a daemon frozen in the middle of an SMTP
send finds, on waking, its whole-send timeout passed and stops before another
byte; the new holder judges such a send only after that timeout (see
docs/architecture.md, "Several daemons").

Waits are on conditions with generous deadlines; durations are printed, never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from bridgekit import wait_until
from clusterkit import (
    RECONCILE_SECONDS,
    Cluster,
    Node,
    accounts_of,
    activity,
    assert_activity_within_leases,
    assert_exactly_once,
    assert_no_overlap,
    balanced,
    cluster,
    holdings,
    shares,
)

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from bridge import store
from bridge.sandbox import DovecotServer
from bridge.store.engine import open_database

pytestmark = pytest.mark.postgres

PER_ACCOUNT = 10      # buyer messages per account
REPLIES = 2           # staff replies per account
# Short leases so that takeovers happen within a test: still longer than a renewal round plus
# the longest operation plus the margin, as [cluster] requires (docs/architecture.md, "Several daemons").
LEASES = {"lease_seconds": 8, "renew_seconds": 1, "operation_seconds": 4}


@pytest.fixture
def bench(tmp_path: Path, dovecot: DovecotServer, pg_url: str) -> Iterator[Cluster]:
    with cluster(tmp_path, dovecot, pg_url, sections={"cluster": LEASES}) as c:
        yield c


def backlog_then_replies(c: Cluster, during: "callable[[], None] | None" = None) -> tuple[list[str], list[str]]:
    """The buyer backlog, forwarded; then the staff replies, relayed. ``during`` runs once the backlog is going."""
    buyer_ids = c.fill(PER_ACCOUNT)
    if during is not None:
        during()
    c.wait_settled(len(buyer_ids), len(buyer_ids), timeout=180)
    reply_ids = c.answer(c.buyer_ids_by_account(buyer_ids, PER_ACCOUNT), REPLIES)
    # Each relay also sends staff a confirmation.
    c.wait_settled(len(buyer_ids) + len(reply_ids), len(buyer_ids) + 2 * len(reply_ids), timeout=180)
    return buyer_ids, reply_ids


def stop_all(c: Cluster) -> None:
    for node in c.nodes:
        if node.alive():
            assert node.stop(60) == 0, node.tail()


def judge(c: Cluster, buyer_ids: list[str], reply_ids: list[str]) -> str:
    """The checks every test ends with; returns a line for the test's output."""
    hs = holdings(c.engine)
    assert_no_overlap(hs)
    audit = assert_activity_within_leases(c, hs)
    t = assert_exactly_once(c, buyer_ids, reply_ids)
    return (f"{len(hs)} holdings, none overlapping; {audit}; {len(t.smtp_duplicates)} mails delivered twice "
            f"(the same Message-ID){' ' + str(sorted(t.smtp_duplicates)) if t.smtp_duplicates else ''}")


def wait_balanced(c: Cluster, nodes: list[Node], what: str) -> float:
    started = time.monotonic()
    wait_until(lambda: balanced(c, nodes),
               lambda: f"{what}: accounts spread over {[n.name for n in nodes]} (now {shares(c)})", 120, interval=0.2)
    return time.monotonic() - started


def under_way(c: Cluster) -> None:
    """Wait until a tenth of the backlog is forwarded: recording is under way, most notifications still to send."""
    wait_until(lambda: len(c.smtp.received) >= PER_ACCOUNT * len(c.accounts) // 10, "the backlog under way", 120,
               interval=0.02)


@pytest.mark.parametrize("daemons", [2, 3])
def test_daemons_share_accounts_evenly_and_handle_everything_once(bench: Cluster, daemons: int) -> None:
    nodes = bench.start(daemons)
    spread = wait_balanced(bench, nodes, "start")
    buyer_ids, reply_ids = backlog_then_replies(bench)
    worked = {n.name: {account for account, _, _ in activity(n)} for n in nodes}
    stop_all(bench)
    print(f"\n{daemons} daemons: balanced {spread:.1f} s after start; accounts worked on per node "
          f"{ {k: len(v) for k, v in worked.items()} }; {judge(bench, buyer_ids, reply_ids)}")
    # Every node did its share of the mail, and no account was worked on by two of them.
    assert all(worked.values())
    assert sum(len(v) for v in worked.values()) == len(bench.accounts)


def test_sigkill_one_daemon_mid_backlog_its_accounts_are_taken_over(bench: Cluster) -> None:
    victim, survivor = bench.start(2)
    wait_balanced(bench, [victim, survivor], "start")
    kill: dict[str, object] = {}

    def kill_mid_backlog() -> None:
        under_way(bench)
        kill["held"] = accounts_of(bench, victim)
        kill["at"] = victim.kill()
        kill["recorded"], kill["sent"] = bench.recorded(), len(bench.smtp.received)

    buyer_ids, reply_ids = backlog_then_replies(bench, during=kill_mid_backlog)
    held = kill["held"]
    assert isinstance(held, set) and held
    # Every account of the dead daemon is now the survivor's.
    wait_until(lambda: held <= accounts_of(bench, survivor), "the survivor to hold every account", 120,
               interval=0.2)
    taken = [h for h in holdings(bench.engine) if h.account in held and h.of(survivor)
             and h.start.timestamp() >= float(kill["at"])]  # type: ignore[arg-type]
    stop_all(bench)
    takeover = max(h.start.timestamp() for h in taken) - float(kill["at"])  # type: ignore[arg-type]
    print(f"\nSIGKILL at {kill['recorded']} recorded / {kill['sent']} sent; {len(held)} accounts taken over, "
          f"the last {takeover:.1f} s after the kill; {judge(bench, buyer_ids, reply_ids)}")
    assert {h.account for h in taken} == held
    assert int(kill["sent"]) < len(buyer_ids)     # the kill did land mid-backlog  # type: ignore[call-overload]


def test_sigstop_past_the_lease_the_paused_daemon_stopped_acting_first(bench: Cluster) -> None:
    paused, other = bench.start(2)
    wait_balanced(bench, [paused, other], "start")
    stop: dict[str, object] = {}

    def partition() -> None:
        under_way(bench)
        stop["held"] = held = accounts_of(bench, paused)
        stop["at"] = paused.pause()
        # Longer than the lease: the other daemon takes every account of the paused one...
        wait_until(lambda: held <= accounts_of(bench, other), "the other daemon to take the paused one's accounts",
                   120, interval=0.2)
        stop["taken"] = time.time()
        # ...and judges the sends the paused one left under way (outbox reconcile_after_seconds).
        time.sleep(RECONCILE_SECONDS + 2)
        stop["resumed"] = paused.resume()

    buyer_ids, reply_ids = backlog_then_replies(bench, during=partition)
    assert isinstance(stop["held"], set) and stop["held"]   # the paused daemon held accounts: a takeover was tested
    # Back from the partition, it gets a fair share again, without overlapping anyone.
    wait_balanced(bench, [paused, other], "after SIGCONT")
    stop_all(bench)
    print(f"\nSIGSTOP for {float(stop['resumed']) - float(stop['at']):.1f} s; "  # type: ignore[arg-type]
          f"{len(stop['held'])} accounts taken over "  # type: ignore[arg-type]
          f"{float(stop['taken']) - float(stop['at']):.1f} s after it; "  # type: ignore[arg-type]
          f"{judge(bench, buyer_ids, reply_ids)}")


def test_a_daemon_joining_later_gets_its_fair_share(bench: Cluster) -> None:
    (first,) = bench.start(1)
    wait_balanced(bench, [first], "one daemon")
    joined: dict[str, float] = {}

    def join() -> None:
        under_way(bench)
        (late,) = bench.start(1)
        joined["spread"] = wait_balanced(bench, [first, late], "after a join")

    buyer_ids, reply_ids = backlog_then_replies(bench, during=join)
    late = bench.nodes[1]
    assert activity(late), "the daemon that joined never worked"
    stop_all(bench)
    print(f"\njoin: balanced {joined['spread']:.1f} s after the second daemon started; "
          f"{judge(bench, buyer_ids, reply_ids)}")


@pytest.mark.parametrize("frozen_in", ["a worker's fenced transaction", "the keeper's renewal",
                                       "a worker sending a statement"])
def test_a_daemon_frozen_inside_a_transaction_does_not_hold_off_the_takeover(pg_url: str, frozen_in: str) -> None:
    """A fenced transaction (FOR KEY SHARE) and a renewal (UPDATE) lock the lease row, which keeps a
    takeover waiting while the holder may write; a holder frozen inside one (SIGSTOP) must not keep it
    waiting forever. Idle in the transaction, the server ends it (fenced's stall_seconds,
    store.keeper_limits). Frozen halfway through sending a statement (here an executemany pipeline
    not yet synced), the server waits for the rest with no timeout: the taker ends that session."""
    engine = open_database(pg_url)
    try:
        with engine.begin() as conn:
            assert [t.account for t in store.take(conn, "host:1:frozen", ["acct01"], 1)] == ["acct01"]
        pipeline = None
        if frozen_in == "the keeper's renewal":
            frozen = engine.connect()
            frozen.begin()
            store.keeper_limits(frozen, 1, idle_seconds=0.5)                     # as the keeper begins
            assert list(store.renew(frozen, "host:1:frozen", 1)) == ["acct01"]   # the row is locked
        else:
            frozen = store.fenced(engine, "acct01", "host:1:frozen", stall_seconds=0.5).connect()
            frozen.begin()                                                       # locked FOR KEY SHARE
            if frozen_in == "a worker sending a statement":
                driver = frozen.connection.driver_connection
                pipeline = driver.pipeline()
                pipeline.__enter__()
                driver.cursor().execute("SELECT 1")   # sent, no Sync: the server waits for the rest
                driver.pgconn.flush()
        wait_until(lambda: not current_leases(engine), "the one-second lease to run out", 30, interval=0.1)

        def take() -> list[str]:
            with engine.begin() as conn:
                return [t.account for t in store.take(conn, "host:2:other", ["acct01"], 30)]

        assert wait_until(take, "the other daemon to take the frozen holder's lease", 30, interval=0.2) == ["acct01"]
        with pytest.raises((DBAPIError, psycopg.OperationalError)):   # and the frozen holder, awake, writes nothing
            if pipeline is not None:
                pipeline.__exit__(None, None, None)
            frozen.execute(select(1))
        frozen.invalidate()
    finally:
        engine.dispose()


def current_leases(engine: Engine) -> list[str]:
    with engine.begin() as conn:
        return [a for a, s in store.lease_states(conn).items() if s.live]
