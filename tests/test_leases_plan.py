"""The pure lease decisions (bridge.domain.leases): shares, one keeper round's plan, deadlines, what to stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import Settings, parse_settings

from bridge.domain.leases import LeaseTiming, Plan, fair_share, plan_round, share, to_stop
from bridge.workers.reload import plan_reload

ACCOUNTS = ["a1", "a2", "a3", "a4"]


@pytest.mark.parametrize("accounts, daemons, me, expected", [
    (4, ["d1", "d2"], "d1", 2),
    (4, ["d1", "d2"], "d2", 2),
    (4, ["d1", "d2", "d3"], "d1", 2),   # 4 = 2 + 1 + 1: the first in holder order takes the extra one
    (4, ["d1", "d2", "d3"], "d2", 1),
    (4, ["d1", "d2", "d3"], "d3", 1),
    (4, [], "d1", 4),                   # alone (its own heartbeat not yet seen): everything
    (4, ["d2"], "d1", 2),               # not yet among the live: counts itself
    (0, ["d1", "d2"], "d1", 0),
    (1, ["d1", "d2"], "d2", 0),
    (20, ["d1", "d2", "d3"], "d3", 6),
])
def test_share(accounts: int, daemons: list[str], me: str, expected: int) -> None:
    assert share(accounts, daemons, me) == expected


@pytest.mark.parametrize("n, daemons", [(n, d) for n in range(0, 25) for d in range(1, 6)])
def test_shares_add_up_and_stay_within_the_fair_share(n: int, daemons: int) -> None:
    names = [f"d{i}" for i in range(daemons)]
    shares = [share(n, names, me) for me in names]
    assert sum(shares) == n
    assert max(shares) == fair_share(n, daemons)
    assert max(shares) - min(shares) <= 1


@pytest.mark.parametrize("me, held, others, daemons, expected", [
    # alone: takes everything free
    ("d1", [], [], ["d1"], Plan(4, take=("a1", "a2", "a3", "a4"))),
    # two starting together reach first for different accounts
    ("d1", [], [], ["d1", "d2"], Plan(2, take=("a1", "a2"))),
    ("d2", [], [], ["d1", "d2"], Plan(2, take=("a3", "a4"))),
    # at its share: nothing to do
    ("d1", ["a1", "a2"], ["a3", "a4"], ["d1", "d2"], Plan(2)),
    # a daemon joined: the surplus is given up, the last ones in name order
    ("d1", ACCOUNTS, [], ["d1", "d2"], Plan(2, give_up=("a3", "a4"))),
    ("d2", ACCOUNTS, [], ["d1", "d2", "d3"], Plan(1, give_up=("a2", "a3", "a4"))),
    # the other daemon left (its leases released or expired): take the rest
    ("d1", ["a1", "a2"], [], ["d1"], Plan(4, take=("a3", "a4"))),
    # below the share, but everything free is fewer than the gap: take what there is
    ("d2", [], ["a1", "a2", "a3"], ["d1", "d2"], Plan(2, take=("a4",))),
    # nothing free
    ("d3", [], ACCOUNTS, ["d1", "d2", "d3"], Plan(1)),
    # a lease held for an account no longer configured does not count
    ("d1", ["old"], [], ["d1"], Plan(4, take=("a1", "a2", "a3", "a4"))),
])
def test_plan_round(me: str, held: list[str], others: list[str], daemons: list[str], expected: Plan) -> None:
    assert plan_round(me, ACCOUNTS, held, others, daemons) == expected


def test_rounds_converge_to_an_even_split_without_two_holders() -> None:
    """Three daemons applying their plans in turn, each seeing the others' last moves, end balanced."""
    holders: dict[str, str] = {}
    daemons = ["d1", "d2", "d3"]
    accounts = [f"acct{i:02d}" for i in range(10)]
    for _ in range(5):
        for me in daemons:
            held = [a for a, h in holders.items() if h == me]
            others = [a for a, h in holders.items() if h != me]
            plan = plan_round(me, accounts, held, others, daemons)
            for a in plan.give_up:
                del holders[a]
            for a in plan.take:
                assert a not in holders
                holders[a] = me
    counts = sorted(sum(1 for h in holders.values() if h == d) for d in daemons)
    assert counts == [3, 3, 4] and len(holders) == 10


@pytest.mark.parametrize("lease, renew, operation, ok", [
    (20, 5, 10, True),
    (17, 5, 10, False),   # no margin left
    (17.5, 5, 10, True),
    (10, 5, 10, False),
    (30, 10, 10, True),
])
def test_timing_problem(lease: float, renew: float, operation: float, ok: bool) -> None:
    problem = LeaseTiming(lease, renew, operation).problem()
    assert (problem is None) == ok
    if problem:
        assert "lease_seconds" in problem and "renew_seconds" in problem


@pytest.mark.parametrize("round_started, now, may", [
    (100.0, 100.0, True),     # just renewed: 18 s left
    (100.0, 108.0, True),     # 10 s left: exactly the longest operation
    (100.0, 108.5, False),
    (100.0, 130.0, False),    # e.g. woken by SIGCONT long after: the deadline has passed
])
def test_deadline_and_may_start(round_started: float, now: float, may: bool) -> None:
    timing = LeaseTiming(20, 5, 10)
    deadline = timing.deadline(round_started)
    assert deadline == 118.0
    assert timing.may_start(deadline, now) is may


def test_defaults_take_over_within_thirty_seconds() -> None:
    assert LeaseTiming(20, 5, 10).takeover_seconds <= 30


@pytest.mark.parametrize("deadlines, renewed, now, expected", [
    ({"a1": 118.0, "a2": 118.0}, ["a1", "a2"], 200.0, []),    # renewed: kept whatever the old deadline
    ({"a1": 118.0, "a2": 118.0}, ["a1"], 101.0, ["a2"]),      # renewed away: stop at once
    ({"a1": 118.0, "a2": 125.0}, None, 100.0, []),            # renewal failed: go on while operations may start
    ({"a1": 118.0, "a2": 125.0}, None, 108.0, []),            # exactly one operation left
    ({"a1": 118.0, "a2": 125.0}, None, 108.5, ["a1"]),
    ({"a1": 118.0, "a2": 125.0}, None, 300.0, ["a1", "a2"]),  # e.g. after SIGSTOP: everything at once
])
def test_to_stop(deadlines: dict[str, float], renewed: list[str] | None, now: float, expected: list[str]) -> None:
    assert to_stop(deadlines, renewed, now, operation_seconds=10) == expected


def test_a_reload_refuses_new_lease_times(tmp_path: Path) -> None:
    def settings(cluster: dict[str, float]) -> Settings:
        data = {"database": {"url": f"sqlite:///{tmp_path}/m.db"}, "cluster": cluster,
                "accounts": [{"name": "acme", "marketplace": "amazon.com", "seller_name": "Acme",
                              "seller_address": "seller@acme.example", "staff_address": "team@acme.example",
                              "staff_senders": ["*@acme.example"],
                              "imap": {"host": "127.0.0.1", "username": "u", "password": "p"},
                              "smtp": {"host": "127.0.0.1", "username": ""}}]}
        return parse_settings(data, tmp_path / "mailbridge.toml", {}, lambda p: p.read_text())

    old = settings({"lease_seconds": 20})
    assert plan_reload(old, settings({"lease_seconds": 20})).refused == ""
    assert "[cluster] changed; restart mailbridge" in plan_reload(old, settings({"lease_seconds": 30})).refused
