"""The service-manager side in isolation: sd_notify datagrams, the watchdog interval, reload plans, log lines."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.adapters import logformat
from bridge.adapters.sdnotify import Notifier, watchdog_interval
from bridge.config import parse_settings
from bridge.workers.base import Heartbeat
from bridge.workers.ingest import server_went_silent
from bridge.workers.reload import ReloadPlan, one_line, plan_reload


def _receiver(tmp_path: Path, abstract: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"@mailbridge-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name[1:].encode())
    else:
        name = str(tmp_path / "notify")
        sock.bind(name)
    sock.settimeout(5)
    return sock, name


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_one_datagram_of_assignments(tmp_path: Path, abstract: bool) -> None:
    sock, name = _receiver(tmp_path, abstract)
    with sock:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": name})
        assert notifier.enabled
        assert notifier.send(READY=1, STATUS="2/2 accounts connected\nand a second line")
        assert sock.recv(4096) == b"READY=1\nSTATUS=2/2 accounts connected and a second line"
        notifier.close()


def test_without_a_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled and notifier.send(READY=1) is False


def test_a_vanished_notify_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING):
        assert notifier.send(WATCHDOG=1) is False
        assert notifier.send(WATCHDOG=1) is False
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "2000000"}, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "OWN"}, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),      # meant for another process
    ({"WATCHDOG_USEC": "90000000"}, 45.0),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(env: dict[str, str],
                                                                      expected: float | None) -> None:
    env = {k: (str(os.getpid()) if v == "OWN" else v) for k, v in env.items()}
    assert watchdog_interval(env, os.getpid()) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("within,after,stuck", [
    (None, 59.0, False), (None, 61.0, True),      # the default allowance: allowed_silence (60)
    (7.0, 6.0, False), (7.0, 8.0, True),          # a step announced as short overruns sooner
])
def test_a_beat_may_announce_a_shorter_next_step(within: float | None, after: float, stuck: bool) -> None:
    clock = Clock()
    hb = Heartbeat("ingest-acme", 60.0, clock)
    hb.beat(within=within)
    clock.now += after
    assert hb.stuck is stuck


def _timed_out() -> Exception:
    try:
        try:
            raise TimeoutError("timed out")
        except TimeoutError as inner:
            raise OSError("ending IDLE failed") from inner
    except OSError as outer:
        return outer


@pytest.mark.parametrize("exc,silent", [
    (TimeoutError("timed out"), True),
    (socket.timeout("timed out"), True),
    (_timed_out(), True),
    (ConnectionRefusedError("refused"), False),
    (ConnectionResetError("reset"), False),
    (ValueError("bad"), False),
])
def test_only_a_server_that_stopped_answering_counts_as_silent(exc: Exception, silent: bool) -> None:
    assert server_went_silent(exc) is silent


# --- reload plans ---------------------------------------------------------------------------

def _account(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "marketplace": "amazon.com", "seller_name": name, "seller_address": f"{name}@s.example",
            "staff_address": f"team-{name}@t.example", "staff_senders": ["*@t.example"], **extra,
            "imap": {"host": "127.0.0.1", "security": "none", "username": name, "password": "pw"},
            "smtp": {"host": "127.0.0.1", "security": "none", "username": ""}}


def _settings(*accounts: dict[str, Any], **top: Any) -> Any:
    data = {"database": {"url": "sqlite:///x.db"}, "accounts": list(accounts), **top}
    return parse_settings(data, Path("/etc/mailbridge/mailbridge.toml"), {}, lambda p: "")


A, B, C = _account("a"), _account("b"), _account("c")


@pytest.mark.parametrize("old,new,plan", [
    ((A,), (A,), ReloadPlan()),
    ((A,), (A, B), ReloadPlan(start=("b",))),
    ((A, B), (B,), ReloadPlan(stop=("a",))),
    ((A, B), (_account("a", seller_name="Acme"), B), ReloadPlan(restart=("a",))),
    ((A, B), (A, C), ReloadPlan(start=("c",), stop=("b",))),
])
def test_reload_plan_by_account(old: tuple[dict[str, Any], ...], new: tuple[dict[str, Any], ...],
                                plan: ReloadPlan) -> None:
    assert plan_reload(_settings(*old), _settings(*new)) == plan


def test_a_new_password_restarts_the_account() -> None:
    changed = _account("a")
    changed["imap"] = {**changed["imap"], "password": "new"}
    assert plan_reload(_settings(A, B), _settings(changed, B)) == ReloadPlan(restart=("a",))


def test_shared_settings_restart_every_account_and_a_new_database_is_refused() -> None:
    old = _settings(A, B)
    assert plan_reload(old, _settings(A, B, policy={"max_text_chars": 500})) == ReloadPlan(restart=("a", "b"))
    assert plan_reload(old, _settings(A, B, daemon={"log_level": "DEBUG"})) == ReloadPlan()
    moved = replace(old, database=replace(old.database, url="sqlite:///elsewhere.db"))
    assert "restart" in plan_reload(old, moved).refused


def test_a_config_error_becomes_one_log_line() -> None:
    assert one_line("f.toml: accounts[1].name: duplicate\nf.toml: database.url: bad\n") == \
        "f.toml: accounts[1].name: duplicate; f.toml: database.url: bad"


# --- log lines --------------------------------------------------------------------------

def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bridge.workers.outbox", logging.INFO, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


@pytest.mark.parametrize("journal", [False, True])
def test_json_lines_carry_the_event_ids_and_no_time_under_the_journal(journal: bool) -> None:
    env = {"JOURNAL_STREAM": "8:1234"} if journal else {}
    fmt = logformat.formatter("json", env)
    line = fmt.format(_record("account %s: sent %s <%s>", "acme", "staff_notification", "m1@x",
                              conversation=12, message_id="m1@x", outbox_id=7))
    assert "\n" not in line
    out = json.loads(line)
    assert out["account"] == "acme" and out["conversation"] == 12 and out["message_id"] == "m1@x"
    assert out["outbox_id"] == 7 and out["level"] == "INFO"
    assert out["message"] == "account acme: sent staff_notification <m1@x>"
    assert ("time" in out) is not journal


@pytest.mark.parametrize("journal,stamped", [(False, True), (True, False)])
def test_text_lines_leave_the_time_to_the_journal(journal: bool, stamped: bool) -> None:
    env = {"JOURNAL_STREAM": "8:1234"} if journal else {}
    line = logformat.formatter("text", env).format(_record("account %s: connected", "acme"))
    assert line.endswith("INFO bridge.workers.outbox: account acme: connected")
    assert (line != "INFO bridge.workers.outbox: account acme: connected") is stamped
