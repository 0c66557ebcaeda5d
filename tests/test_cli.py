"""The mailbridge command as an operator runs it (real processes, real servers)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli.command import build_parser, main
from bridge.sandbox import (
    DovecotServer,
    SandboxAccount,
    SandboxSMTP,
    config_toml,
    samples,
)


def mailbridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def write_config(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp_port: int) -> Path:
    (tmp_path / "imap-password").write_text(seller.password + "\n")
    path = tmp_path / "mailbridge.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mb.db", seller=seller.user, staff=staff.user, imap_port=seller.port,
        smtp_port=smtp_port, imap_password_file="imap-password",   # relative: next to the config file
        sections={"account": {"forward_existing": True}, "smtp": {"sent_copies": "none"}}))
    return path


@pytest.mark.parametrize(("argv", "config", "log_level"), [
    (["check-config"], None, None),
    (["-c", "F", "check-config"], "F", None),
    (["check-config", "-c", "F"], "F", None),
    (["check-config", "--connect", "--config", "F"], "F", None),
    (["--config=F", "status", "--json"], "F", None),
    (["status", "--config=F", "--json"], "F", None),
    (["run", "-c", "F", "--once"], "F", None),
    (["run", "--once", "-c", "F", "--no-send"], "F", None),
    (["--log-level", "DEBUG", "run", "-c", "F"], "F", "DEBUG"),
    (["run", "--log-level", "DEBUG", "-c", "F"], "F", "DEBUG"),
    # commands with their own actions: before the action, after it, or both
    (["outbox", "list", "-c", "F"], "F", None),
    (["outbox", "-c", "F", "list", "--json"], "F", None),
    (["outbox", "--account", "acme", "retry", "7", "8", "-c", "F"], "F", None),
    (["-c", "F", "outbox", "cancel", "7"], "F", None),
    (["optout", "add", "abc@marketplace.amazon.com", "--dns", "-c", "F"], "F", None),
    (["optout", "-c", "F", "list"], "F", None),
    (["policy", "check", "draft.txt", "-c", "F", "--category", "critical"], "F", None),
    (["audit", "--since", "7d", "-c", "F", "--log-level", "ERROR"], "F", "ERROR"),
    # given twice, the later one counts
    (["-c", "A", "run", "-c", "B"], "B", None),
    (["-c", "A", "-c", "B", "status"], "B", None),
    (["status", "-c", "A", "--config", "B"], "B", None),
    (["-c", "A", "outbox", "-c", "B", "list", "-c", "C"], "C", None),
    (["-c", "A", "outbox", "-c", "B", "list"], "B", None),
    (["--log-level", "DEBUG", "audit", "--log-level", "ERROR"], None, "ERROR"),
])
def test_config_and_log_level_stand_before_or_after_the_command(argv: list[str], config: str | None,
                                                                log_level: str | None) -> None:
    args = build_parser().parse_args(argv)
    assert (args.config, args.log_level) == (config, log_level)


def test_the_options_of_a_command_are_kept_when_c_follows() -> None:
    args = build_parser().parse_args(["outbox", "--account", "acme", "retry", "7", "8", "-c", "F"])
    assert (args.module, args.action, args.account, args.ids) == ("outbox", "retry", "acme", [7, 8])
    args = build_parser().parse_args(["run", "--once", "-c", "F", "--no-send"])
    assert (args.module, args.once, args.no_send) == ("run", True, True)


def test_every_command_has_its_module() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    for name, sub in commands.choices.items():
        module = importlib.import_module(f"bridge.cli.{sub.get_default('module')}")
        assert callable(module.run), name


def test_help_says_where_config_may_stand() -> None:
    for argv in (["--help"], ["outbox", "list", "--help"]):
        result = mailbridge(*argv)
        assert result.returncode == 0
        assert "before or after the command" in result.stdout and "the later one counts" in result.stdout


def test_config_errors_name_file_key_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[accounts]]\nname = "Bad Name"\nmarketplace = "amazon.moon"\n[accounts.imap]\npol_seconds = 3\n')
    result = mailbridge("-c", str(path), "check-config")
    assert result.returncode == 2
    err = result.stderr
    assert str(path) in err
    assert "accounts[0].marketplace" in err and "amazon.com" in err     # names the valid choices
    assert "did you mean 'poll_seconds'" in err
    assert "Traceback" not in err


def test_missing_config_file_says_where_it_looked(tmp_path: Path) -> None:
    result = mailbridge("-c", str(tmp_path / "nope.toml"), "status")
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "Traceback" not in result.stderr


def test_run_once_then_status(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                              smtp_server: SandboxSMTP, staff: SandboxAccount) -> None:
    for raw in samples.buyer_backlog(4, seller_address=fresh_mailbox.user, seed=21, buyers=3):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    config = write_config(tmp_path, fresh_mailbox, staff, smtp_server.port)

    checked = mailbridge("check-config", "--connect", "-c", str(config))        # -c after the command too
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "IMAP login OK" in checked.stdout and "SMTP login OK" in checked.stdout
    assert fresh_mailbox.password not in checked.stdout + checked.stderr

    ran = mailbridge("run", "-c", str(config), "--once")
    assert ran.returncode == 0, ran.stderr
    assert len(smtp_server.wait_for(4)) == 4
    assert fresh_mailbox.password not in ran.stderr                   # secrets never logged

    status = mailbridge("-c", str(config), "status", "--json")
    assert status.returncode == 0, status.stderr
    (acct,) = json.loads(status.stdout)["accounts"]
    assert acct["messages"] == 4 and acct["conversations"] == 3
    assert acct["outbox"]["sent"] == 4 and acct["outbox"]["failed"] == 0
    assert acct["mailboxes"][0]["last_uid"] == 4 and acct["mailboxes"][0]["last_fetch_at"]
    # run --once held the account's lease for its pass and released it at the end.
    assert acct["lease"]["holder"].count(":") == 3 and acct["lease"]["live"] is False
    human = mailbridge("-c", str(config), "status")
    assert "conversations: 3" in human.stdout and "sent 4" in human.stdout
    assert "held by: nobody (last " in human.stdout


def test_run_once_reports_unreachable_server(tmp_path: Path, dovecot: DovecotServer,
                                             fresh_mailbox: SandboxAccount, staff: SandboxAccount) -> None:
    broken = SandboxAccount(fresh_mailbox.user, "wrong-password", fresh_mailbox.host, fresh_mailbox.port)
    config = write_config(tmp_path, broken, staff, 9)
    ran = mailbridge("-c", str(config), "run", "--once")
    assert ran.returncode == 1
    assert "login" in ran.stderr and "refused" in ran.stderr and "password_file" in ran.stderr
    status_out = mailbridge("-c", str(config), "status", "--json").stdout
    status = json.loads(status_out)
    assert "refused" in status["accounts"][0]["mailboxes"][0]["last_error"]
    assert "wrong-password" not in ran.stderr + ran.stdout + status_out   # never the secret itself


def test_outbox_list_retry_cancel(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                  smtp_server: SandboxSMTP, staff: SandboxAccount) -> None:
    for raw in samples.buyer_backlog(2, seller_address=fresh_mailbox.user, seed=22, buyers=2):
        dovecot.append(fresh_mailbox.user, "INBOX", raw)
    config = write_config(tmp_path, fresh_mailbox, staff, smtp_server.port)
    smtp_server.fail_next(550, "5.7.1 rejected", times=2)
    assert mailbridge("-c", str(config), "run", "--once").returncode == 0
    listed = json.loads(mailbridge("outbox", "list", "--json", "-c", str(config)).stdout)
    assert sorted(r["state"] for r in listed) == ["failed", "failed"]
    first, second = sorted(r["id"] for r in listed)

    retried = mailbridge("-c", str(config), "outbox", "retry", str(first))
    assert retried.returncode == 0 and "failed -> queued again" in retried.stdout
    cancelled = mailbridge("-c", str(config), "outbox", "cancel", str(second))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = mailbridge("-c", str(config), "outbox", "retry", str(second))   # cancelled is final
    assert again.returncode == 1 and "not in a state that allows retry" in again.stderr

    assert mailbridge("-c", str(config), "run", "--once").returncode == 0
    assert len(smtp_server.wait_for(1)) == 1
    states = {r["id"]: r["state"] for r in json.loads(mailbridge(
        "-c", str(config), "outbox", "list", "--json", "--state", "sent", "--state", "cancelled").stdout)}
    assert states == {first: "sent", second: "cancelled"}
    human = mailbridge("-c", str(config), "outbox", "list", "--state", "cancelled")
    assert "cancelled by" in human.stdout


def test_optout_add_list_remove(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                staff: SandboxAccount) -> None:
    config = write_config(tmp_path, fresh_mailbox, staff, 9)
    alias = "abcdef123456@marketplace.amazon.de"
    added = mailbridge("-c", str(config), "optout", "add", "ABCDEF123456+case9@marketplace.amazon.de")
    assert added.returncode == 0 and f"{alias}: opted out" in added.stdout
    dns = mailbridge("-c", str(config), "optout", "add", "zyx987654321@marketplace.amazon.com", "--dns",
                     "--until", "2027-11-23")
    assert dns.returncode == 0 and "until 2027-11-23" in dns.stdout
    listed = json.loads(mailbridge("-c", str(config), "optout", "list", "--json").stdout)
    assert {(r["buyer"], bool(r["opted_out_at"]), r["do_not_solicit_until"]) for r in listed} == {
        (alias, True, None), ("zyx987654321@marketplace.amazon.com", False, "2027-11-23T00:00:00+00:00")}
    assert mailbridge("-c", str(config), "optout", "remove", alias).returncode == 0
    listed = json.loads(mailbridge("-c", str(config), "optout", "list", "--json").stdout)
    assert [r["buyer"] for r in listed] == ["zyx987654321@marketplace.amazon.com"]
    bad = mailbridge("-c", str(config), "optout", "add", "someone@gmail.com")
    assert bad.returncode == 2 and "not a marketplace relay address" in bad.stderr
    trail = json.loads(mailbridge("-c", str(config), "audit", "--json").stdout)
    assert [(a["event"], a["decision"]) for a in trail] == [
        ("optout", "opted_out"), ("optout", "do_not_solicit"), ("optout", "opted_in")]
    assert all(a["actor"].startswith("operator ") for a in trail)


def test_sigterm_during_startup_exits_cleanly(tmp_path: Path, dovecot: DovecotServer,
                                              fresh_mailbox: SandboxAccount, staff: SandboxAccount) -> None:
    import signal
    import time

    config = write_config(tmp_path, fresh_mailbox, staff, 9)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(config), "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.4)       # past interpreter start-up, before the daemon installs its own handlers
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()


def test_check_config_connect_reports_a_refused_smtp_login(tmp_path: Path, dovecot: DovecotServer,
                                                            fresh_mailbox: SandboxAccount,
                                                            staff: SandboxAccount) -> None:
    (tmp_path / "imap-password").write_text(fresh_mailbox.password + "\n")
    config = tmp_path / "mailbridge.toml"
    with SandboxSMTP(dovecot, auth={fresh_mailbox.user: "not-the-imap-password"}) as smtp:
        config.write_text(config_toml(database=f"sqlite:///{tmp_path}/mb.db", seller=fresh_mailbox.user,
                                      staff=staff.user, imap_port=fresh_mailbox.port, smtp_port=smtp.port,
                                      imap_password_file="imap-password", smtp_login=True))
        checked = mailbridge("check-config", "-c", str(config), "--connect")
    assert checked.returncode == 1
    assert "IMAP login OK" in checked.stdout
    assert "SMTP FAILED" in checked.stdout and "refused" in checked.stdout and "password_file" in checked.stdout
    assert fresh_mailbox.password not in checked.stdout + checked.stderr


def test_run_puts_back_the_signal_handlers_it_found(tmp_path: Path) -> None:
    """`run` installs start-up handlers for SIGTERM and SIGHUP; a process that calls main() and goes
    on (this test process) gets its own back, so a later SIGTERM is not taken for mailbridge's."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    assert main(["-c", str(tmp_path / "missing.toml"), "run", "--once"]) == 2
    assert {sig: signal.getsignal(sig) for sig in before} == before
