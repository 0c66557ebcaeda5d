"""The worker base: backoff between failed passes, heartbeats that tell a stuck worker from a waiting one."""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from bridgekit import make_settings

from bridge import store
from bridge.adapters.templates import Templates
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP
from bridge.services.account import AccountContext
from bridge.store.engine import open_database
from bridge.workers.base import Backoff, Heartbeat, StuckReport
from bridge.workers.ingest import AccountIngest


class FixedJitter(random.Random):
    """uniform() at one end of its range: the jitter is the case under test."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "mid": (a + b) / 2, "high": b}[self.end]


@pytest.mark.parametrize("first,cap,at_least,end,expected", [
    (1.0, 300.0, [0] * 6, "mid", [1, 2, 4, 8, 16, 32]),
    (1.0, 10.0, [0] * 6, "mid", [1, 2, 4, 8, 10, 10]),                     # capped
    (1.0, 300.0, [60, 0, 0], "mid", [60, 2, 4]),                           # a floor for one attempt only
    (5.0, 300.0, [0] * 3, "low", [4.0, 8.0, 16.0]),                        # jitter: 0.8x ...
    (5.0, 300.0, [0] * 3, "high", [6.0, 12.0, 24.0]),                      # ... to 1.2x
])
def test_backoff_doubles_up_to_its_cap(first: float, cap: float, at_least: list[float], end: str,
                                       expected: list[float]) -> None:
    backoff = Backoff(first, cap, FixedJitter(end))
    assert [round(backoff.next_delay(floor), 6) for floor in at_least] == expected


def test_backoff_starts_again_after_a_success() -> None:
    backoff = Backoff(1.0, 300.0, FixedJitter("mid"))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


@pytest.mark.parametrize("first,cap", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_refuses_nonsense(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(first, cap)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("silence,stuck", [(0.0, False), (9.9, False), (10.0, False), (10.1, True), (500, True)])
def test_heartbeat_is_stuck_only_past_its_allowed_silence(silence: float, stuck: bool) -> None:
    clock = FakeMonotonic()
    hb = Heartbeat("ingest-acme", 10.0, clock)
    clock.now += silence
    assert hb.stuck is stuck
    hb.beat()
    assert hb.stuck is False and hb.silent_for() == 0.0


def test_stuck_report_says_each_change_once() -> None:
    clock = FakeMonotonic()
    a, b = Heartbeat("ingest-a", 10.0, clock), Heartbeat("outbox-a", 60.0, clock)
    report = StuckReport([a, b])
    assert report.changes() == ([], []) and report.all_alive
    clock.now += 30
    assert report.changes() == ([a], []) and not report.all_alive
    assert report.changes() == ([], [])             # still stuck: said once
    a.beat()
    assert report.changes() == ([], [a]) and report.all_alive
    clock.now += 61
    assert report.changes() == ([a, b], [])


def _ingest(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
            heartbeat: Heartbeat, **imap: object) -> AccountIngest:
    settings = make_settings(tmp_path, seller, staff, smtp, imap=dict(imap))
    engine = open_database(settings.database.url)
    key = store.token_secret(engine, None)
    acct = AccountContext.build(settings.accounts[0], key, Templates(settings.templates_dir))
    return AccountIngest(engine, acct, heartbeat=heartbeat)


@pytest.mark.parametrize("idle", [True, False])
def test_an_idling_or_polling_ingest_loop_keeps_beating(tmp_path: Path, dovecot: DovecotServer,
                                                         fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                         smtp_server: SandboxSMTP, idle: bool) -> None:
    """Waiting for mail (IDLE, or the poll's sleep of 300 s) is not being stuck."""
    hb = Heartbeat("ingest-acme", 3.0)
    ingest = _ingest(tmp_path, fresh_mailbox, staff, smtp_server, hb, idle=idle, poll_seconds=300)
    stop = threading.Event()
    thread = threading.Thread(target=ingest.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 8
        worst = 0.0
        while time.monotonic() < deadline:
            worst = max(worst, hb.silent_for())
            time.sleep(0.1)
        assert worst < 2.5 and not hb.stuck
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_an_ingest_loop_hung_on_a_silent_server_goes_quiet(tmp_path: Path, fresh_mailbox: SandboxAccount,
                                                           staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    """A server that accepts the connection and never answers: the heartbeat stops, and that is seen."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        hb = Heartbeat("ingest-acme", 1.0)
        ingest = _ingest(tmp_path, replace(fresh_mailbox, port=port), staff, smtp_server, hb, timeout_seconds=5)
        report = StuckReport([hb])
        stop = threading.Event()
        thread = threading.Thread(target=ingest.run_forever, args=(stop,), daemon=True)
        thread.start()
        try:
            time.sleep(2.0)          # the greeting never comes; the login waits for its 5 s timeout
            newly, _ = report.changes()
            assert newly == [hb] and hb.silent_for() >= 1.0
        finally:
            stop.set()
            thread.join(15)
        assert not thread.is_alive()


UNSEEN = [
    # (case, uidnext, seen up to, rechecked for, another pass?)
    ("server does not say", None, 5, 0, False),
    ("nothing new", 6, 5, 0, False),
    ("empty folder", 1, 0, 0, False),
    ("a UID given out during the pass", 7, 5, 0, True),
    ("looked for it once already", 7, 5, 7, False),
    ("a later arrival after a recheck", 8, 5, 7, True),
    ("the pass saw past it", 7, 6, 0, False),
]


@pytest.mark.parametrize(("uidnext", "seen", "rechecked", "expected"), [c[1:] for c in UNSEEN],
                         ids=[c[0] for c in UNSEEN])
def test_a_pass_runs_again_once_for_uids_it_did_not_see(uidnext: int | None, seen: int, rechecked: int,
                                                         expected: bool) -> None:
    from bridge.workers.ingest import uids_unseen

    assert uids_unseen(uidnext, seen, rechecked) is expected
