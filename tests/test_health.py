"""``mailbridge health``: the checks as tables, the command on a database, and on a running daemon.

One injected clock per test: the daemon records its fetches at that clock's
time and ``health`` judges at it, so "down for longer than the threshold" is
the clock moved on, never a wait.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bridgekit import Clock, wait_until

from bridge import store
from bridge.cli.command import main
from bridge.config import load_settings
from bridge.domain.health import (
    Finding,
    Status,
    ago,
    check_fetch,
    check_outbox,
    check_quarantine,
    default_fetch_age,
    overall,
    parse_duration,
    summary,
)
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples
from bridge.store.engine import open_database
from bridge.workers.supervisor import Daemon

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)


# --- the checks, pure ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("90", timedelta(seconds=90)), ("90s", timedelta(seconds=90)), ("15m", 15 * MIN), (" 15M ", 15 * MIN),
    ("2h", timedelta(hours=2)), ("1d", timedelta(days=1)), ("15 m", 15 * MIN),
    ("0", None), ("0m", None), ("", None), ("1.5h", None), ("-5m", None), ("5x", None), ("5mm", None), ("m", None),
])
def test_durations(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("seconds", "said"), [
    (0, "0 s"), (40, "40 s"), (119, "119 s"), (120, "2 min"), (16 * 60 + 59, "16 min"), (7199, "119 min"),
    (7200, "2 h"), (3 * 3600 + 5 * 60, "3 h 5 min"), (48 * 3600, "2 d"), (52 * 3600 + 59, "2 d 4 h"), (-5, "0 s"),
])
def test_ago(seconds: int, said: str) -> None:
    assert ago(timedelta(seconds=seconds)) == said


@pytest.mark.parametrize(("poll", "timeout", "expected"), [
    (60, 60, 15 * MIN),                              # the floor
    (5, 10, 15 * MIN),
    (600, 60, timedelta(seconds=3 * 600 + 4 * 60)),  # slow polls: three of them and the timeouts
    (3600, 60, timedelta(seconds=3 * 3600 + 240)),
])
def test_default_fetch_age(poll: int, timeout: float, expected: timedelta) -> None:
    assert default_fetch_age(poll, timeout) == expected


FETCH_CASES = [
    # (what, last fetch, last error, first recorded, expected status, words in the reason)
    ("fetched just now", NOW, None, NOW - 9 * MIN, None, ""),
    ("at the threshold", NOW - 15 * MIN, None, NOW - 60 * MIN, None, ""),
    ("past it, no error", NOW - 16 * MIN, None, NOW - 60 * MIN, Status.CRITICAL,
     "account acme: INBOX not fetched for 16 min (threshold 15 min); is `mailbridge run` running?"),
    ("past it, server down", NOW - 3 * 60 * MIN, "cannot connect to IMAP server imap.example:993: refused",
     NOW - 600 * MIN, Status.CRITICAL,
     "not fetched for 3 h (threshold 15 min); last error: cannot connect to IMAP server imap.example:993: refused"),
    ("error within the threshold", NOW - 5 * MIN, "connection lost", NOW - 60 * MIN, None, ""),
    ("never fetched, only just started", None, "login refused", NOW - 2 * MIN, None, ""),
    ("never fetched, for long", None, "login refused", NOW - 20 * MIN, Status.CRITICAL,
     "account acme: INBOX has never been fetched; last error: login refused"),
    ("never seen at all", None, None, None, Status.CRITICAL,
     "INBOX has never been fetched; start the daemon (`mailbridge run`)"),
]


@pytest.mark.parametrize(("what", "last", "error", "started", "status", "words"), FETCH_CASES,
                         ids=[c[0] for c in FETCH_CASES])
def test_fetch_check(what: str, last: datetime | None, error: str | None, started: datetime | None,
                     status: Status | None, words: str) -> None:
    finding = check_fetch("acme", "INBOX", last, error, NOW, 15 * MIN, started_at=started)
    if status is None:
        assert finding is None
    else:
        assert finding is not None and finding.status == status and finding.check == "fetch"
        assert words in finding.reason


OUTBOX_CASES = [
    ("nothing", {}, {}, []),
    ("sent and failed rows are no one's business here", {}, {"sent": 9, "failed": 2, "cancelled": 1}, []),
    ("queued past the delay", {"queued": (3, NOW - 95 * MIN)}, {"queued": 3}, [
        (Status.CRITICAL, "account acme: 3 outbox row(s) due and not sent for more than 60 min (the oldest for 95 min)")]),
    ("a send never finished", {"sending": (1, NOW - 5 * 60 * MIN)}, {}, [
        (Status.CRITICAL, "1 outbox row(s) claimed for sending and not finished for more than 60 min (the oldest "
                          "for 5 h)")]),
    ("a person must decide", {}, {"unknown": 1, "held": 2}, [
        (Status.WARNING, "1 outbox row(s) of unknown outcome wait for a person: `mailbridge outbox list --state unknown`"),
        (Status.WARNING, "2 outbox row(s) held wait for a person")]),
]


@pytest.mark.parametrize(("what", "overdue", "by_state", "expected"), OUTBOX_CASES, ids=[c[0] for c in OUTBOX_CASES])
def test_outbox_check(what: str, overdue: dict[str, tuple[int, datetime]], by_state: dict[str, int],
                      expected: list[tuple[Status, str]]) -> None:
    findings = check_outbox("acme", overdue, by_state, NOW, 60 * MIN)
    assert [f.status for f in findings] == [s for s, _ in expected]
    for f, (_, words) in zip(findings, expected):
        assert words in f.reason and f.check == "outbox"


@pytest.mark.parametrize(("unacknowledged", "status"), [(0, None), (1, Status.WARNING), (7, Status.WARNING)])
def test_quarantine_check(unacknowledged: int, status: Status | None) -> None:
    finding = check_quarantine("acme", unacknowledged)
    assert (finding.status if finding else None) == status
    if finding:
        assert f"{unacknowledged} quarantined message(s) not acknowledged" in finding.reason
        assert "mailbridge quarantine ack --account acme --all" in finding.reason


W = Finding(Status.WARNING, "quarantine", "acme", "w")
C = Finding(Status.CRITICAL, "fetch", "acme", "c")


@pytest.mark.parametrize(("findings", "status", "line"), [
    ([], Status.OK, "MAILBRIDGE OK - "),
    ([W], Status.WARNING, "MAILBRIDGE WARNING - w"),
    ([W, C], Status.CRITICAL, "MAILBRIDGE CRITICAL - c (and 1 more)"),
    ([C, W, C], Status.CRITICAL, "MAILBRIDGE CRITICAL - c (and 2 more)"),
])
def test_overall_status_is_the_worst_and_leads_the_line(findings: list[Finding], status: Status, line: str) -> None:
    assert overall(findings) == status
    assert summary(findings).startswith(line)


# --- the command on a database, without a daemon -----------------------------------------------------

def write_config(tmp_path: Path, imap_port: int = 1143, smtp_port: int = 1025, seller: str = "seller@acme.example",
                 staff: str = "staff@acme.example", password: str = "x", **sections: Any) -> Path:
    path = tmp_path / "mailbridge.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mb.db", seller=seller, staff=staff, imap_port=imap_port, smtp_port=smtp_port,
        imap_password=password, sections={"smtp": {"sent_copies": "none"}, **sections}))
    return path


def health(config: Path, now: datetime | Clock, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    clock = now if isinstance(now, Clock) else (lambda: now)
    code = main(["health", "-c", str(config), *args], clock=clock)
    return code, capsys.readouterr().out


def quarantine(engine: Any, uid: int, account: str = "acme") -> int:
    with engine.begin() as conn:
        return store.insert_quarantine(conn, account=account, folder="INBOX", uidvalidity=1, uid=uid,
                                       message_id=f"q{uid}@example.org", size=10, reason="too large",
                                       created_at=NOW - 60 * MIN)


def outbox_row(engine: Any, n: int, state: str, due: datetime, claimed: datetime | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(store.OUTBOX.insert().values(
            account="acme", message_id=f"m{n}@mailbridge", purpose="staff_notification", audience="staff",
            envelope_from="seller@acme.example", recipients='["staff@acme.example"]', subject="s", raw=b"x",
            state=state, next_attempt_at=due, created_at=due, claimed_at=claimed))


@pytest.fixture
def fetched(tmp_path: Path) -> tuple[Path, Any]:
    """A config and its database, in which account acme fetched INBOX at NOW."""
    config = write_config(tmp_path)
    engine = open_database(load_settings(config).database.url)
    with engine.begin() as conn:
        store.start_mailbox(conn, "acme", "INBOX", 7, 0, NOW - 60 * MIN)
        store.record_fetch(conn, "acme", "INBOX", NOW, None)
    return config, engine


def test_health_without_a_database_row_for_the_account_is_critical(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out = health(write_config(tmp_path), NOW, capsys=capsys)
    assert code == 2
    assert out.startswith("MAILBRIDGE CRITICAL - account acme: INBOX has never been fetched; start the daemon")


def test_health_reads_outbox_and_quarantine_and_an_ack_clears_the_warning(
        fetched: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    config, engine = fetched
    assert health(config, NOW, capsys=capsys) == (0, "MAILBRIDGE OK - every account fetched recently, the outbox is "
                                                     "moving, no unacknowledged quarantine\n")
    first, second = quarantine(engine, 5), quarantine(engine, 6)
    outbox_row(engine, 1, "queued", NOW - 30 * MIN)                      # due, not yet overdue
    outbox_row(engine, 2, "queued", NOW + 5 * 60 * MIN)                  # a retry later: waiting on purpose
    code, out = health(config, NOW, "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 1 and report["status"] == "WARNING" and report["exit_code"] == 1
    assert [(f["status"], f["check"]) for f in report["findings"]] == [("WARNING", "quarantine")]
    assert "2 quarantined message(s) not acknowledged" in report["summary"]

    # One row overdue (due 70 min ago), with the default delay of 1 h: critical; 2 h tolerated: not.
    outbox_row(engine, 3, "queued", NOW - 70 * MIN)
    code, out = health(config, NOW, capsys=capsys)
    assert code == 2
    assert out.splitlines()[0] == ("MAILBRIDGE CRITICAL - account acme: 1 outbox row(s) due and not sent for more "
                                   "than 60 min (the oldest for 70 min); see `mailbridge outbox list` and the log "
                                   "(and 1 more)")
    assert out.splitlines()[1:] == [
        "CRITICAL outbox: account acme: 1 outbox row(s) due and not sent for more than 60 min (the oldest for 70 min); "
        "see `mailbridge outbox list` and the log",
        "WARNING quarantine: account acme: 2 quarantined message(s) not acknowledged; see `mailbridge quarantine "
        "list`, then `mailbridge quarantine ack --account acme --all`"]
    assert health(config, NOW, "--max-outbox-delay", "2h", capsys=capsys)[0] == 1

    # Acknowledge one by id, then the rest: the warning goes; the mail stays listed with --all.
    assert main(["quarantine", "-c", str(config), "ack", str(first)], clock=lambda: NOW) == 0
    assert f"acknowledged 1 quarantined message(s): {first}" in capsys.readouterr().out
    assert main(["quarantine", "-c", str(config), "list", "--json"], clock=lambda: NOW) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [second]
    assert main(["quarantine", "-c", str(config), "ack", "--all"], clock=lambda: NOW) == 0
    capsys.readouterr()
    assert health(config, NOW, "--max-outbox-delay", "2h", capsys=capsys)[0] == 0
    assert main(["quarantine", "-c", str(config), "list", "--all", "--json"], clock=lambda: NOW) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["acknowledged_at"]) for r in listed] == [(first, NOW.isoformat()), (second, NOW.isoformat())]
    assert all(r["acknowledged_by"].endswith("(mailbridge quarantine ack)") for r in listed)


def test_quarantine_ack_says_what_it_could_not_do(fetched: tuple[Path, Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config, engine = fetched
    mine, other = quarantine(engine, 5), quarantine(engine, 6, account="another")
    assert main(["quarantine", "-c", str(config), "ack"], clock=lambda: NOW) == 2
    assert "name the ids to acknowledge" in capsys.readouterr().err
    # Another account's mail (not in this configuration) and ids that do not exist are left alone.
    assert main(["quarantine", "-c", str(config), "ack", str(mine), str(other), "999"], clock=lambda: NOW) == 1
    out, err = capsys.readouterr()
    assert f"acknowledged 1 quarantined message(s): {mine}" in out
    assert f"not acknowledged (no such quarantined mail of acme, or acknowledged before): {other}, 999" in err
    assert main(["quarantine", "-c", str(config), "ack", str(mine)], clock=lambda: NOW) == 1   # twice: said
    assert main(["quarantine", "-c", str(config), "--account", "nope", "list"], clock=lambda: NOW) == 2


@pytest.mark.parametrize(("config_text", "words"), [
    ("[database]\nurl = 5\n", "database.url: expected a string"),
    (None, "configuration file not found"),
])
def test_health_that_cannot_check_is_unknown(tmp_path: Path, config_text: str | None, words: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mailbridge.toml"
    if config_text is not None:
        config.write_text(config_text)
    code, out = health(config, NOW, capsys=capsys)
    assert code == 3
    assert out.startswith("MAILBRIDGE UNKNOWN - cannot check: ") and words in out


def test_health_thresholds_must_be_durations(fetched: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = fetched
    with pytest.raises(SystemExit):
        main(["health", "-c", str(config), "--max-fetch-age", "soon"])
    assert "'soon': expected a duration such as 90s, 15m, 2h or 1d" in capsys.readouterr().err


# --- a running daemon -----------------------------------------------------------------------------

def _mailbox(engine: Any) -> Any:
    with store.engine.reader(engine).begin() as conn:
        return next(iter(store.mailbox_fetches(conn)), None)


def test_health_is_ok_on_a_running_daemon_and_critical_once_its_imap_server_is_down_past_the_threshold(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, fresh_mailbox.port, smtp_server.port, fresh_mailbox.user, staff.user,
                          fresh_mailbox.password, imap={"poll_seconds": 5}, account={"forward_existing": True})
    dovecot.append(fresh_mailbox.user, "INBOX", samples.amazon_buyer_message(
        buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556", question="Is it waterproof?",
        seller_address=fresh_mailbox.user, token="A1B2C3D4E5F6G", message_id="buyer.1@email.amazon.com"))
    clock = Clock()
    daemon = Daemon(load_settings(config), clock=clock)
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run(stop),), daemon=True)
    thread.start()
    try:
        smtp_server.wait_for(1, timeout=30)     # the buyer's message reached staff
        wait_until(lambda: (m := _mailbox(daemon.engine)) is not None and m.last_fetch_at is not None,
                   "the daemon to record a fetch", timeout=30)
        assert health(config, clock, capsys=capsys)[0] == 0

        dovecot.stop()
        # The first error is the dropped IDLE; the next, a reconnect refused.
        wait_until(lambda: "cannot connect" in (_mailbox(daemon.engine).last_error or ""),
                   "the daemon to record a refused reconnect", timeout=30)
        code, out = health(config, clock, capsys=capsys)
        assert code == 0, out      # down, but not for longer than the threshold yet

        clock.advance(16 * 60)     # the default threshold is 15 minutes (poll_seconds 5)
        code, out = health(config, clock, capsys=capsys)
        assert code == 2
        assert out.startswith(f"MAILBRIDGE CRITICAL - account acme: INBOX not fetched for 16 min (threshold 15 min); "
                              f"last error: cannot connect to IMAP server 127.0.0.1:{fresh_mailbox.port}")
        code, out = health(config, clock, "--json", "--max-fetch-age", "20m", capsys=capsys)
        assert (code, json.loads(out)["status"]) == (0, "OK")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()
    assert not thread.is_alive()
