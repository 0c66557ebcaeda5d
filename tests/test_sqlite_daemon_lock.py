"""One daemon per SQLite database: a second ``mailbridge run`` (or ``run --once``) is refused with what to do;
a lock a killed daemon held is gone with it; commands that do not ingest or send run beside a daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bridgekit import mailbridge_process, running_daemon, wait_until

from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml
from bridge.store.daemon_lock import lock_database, lock_path


def write_config(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP) -> Path:
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(database="sqlite:///state/mailbridge.db", seller=seller.user, staff=staff.user,
                                  imap_port=seller.port, smtp_port=smtp.port, imap_password=seller.password))
    return config


def mailbridge(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), *args], capture_output=True,
                          text=True, timeout=120)


def holding_the_lock(database: Path, pid: int) -> bool:
    lock = lock_path(database)
    return lock.exists() and lock.read_text().strip() == str(pid)


def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path, dovecot: DovecotServer,
                                                       fresh_mailbox: SandboxAccount, smtp_server: SandboxSMTP,
                                                       staff: SandboxAccount) -> None:
    config = write_config(tmp_path, fresh_mailbox, staff, smtp_server)
    database = tmp_path / "state" / "mailbridge.db"
    with running_daemon(config, tmp_path / "first.log") as first:
        wait_until(lambda: holding_the_lock(database, first.pid), "the first daemon to take the lock")
        for args in (["run"], ["run", "--once"], ["run", "--once", "--no-send"]):
            second = mailbridge(config, *args)
            assert second.returncode == 2, second.stderr
            said = second.stderr.strip()
            assert said == (f"mailbridge: another mailbridge daemon (pid {first.pid}) runs on {database}; stop it, "
                            "or give this configuration its own [database] url; for several daemons on one "
                            f"database use PostgreSQL (the lock is held on {database}.lock)"), said
        # What neither ingests nor sends runs beside it.
        assert mailbridge(config, "status").returncode == 0
        assert mailbridge(config, "check-config").returncode == 0
        assert first.poll() is None
    assert "another mailbridge daemon" not in (tmp_path / "first.log").read_text()


def test_the_lock_of_a_killed_daemon_is_gone_with_it(tmp_path: Path, dovecot: DovecotServer,
                                                     fresh_mailbox: SandboxAccount, smtp_server: SandboxSMTP,
                                                     staff: SandboxAccount) -> None:
    config = write_config(tmp_path, fresh_mailbox, staff, smtp_server)
    database = tmp_path / "state" / "mailbridge.db"
    killed = mailbridge_process(config, tmp_path / "killed.log", "run")
    wait_until(lambda: holding_the_lock(database, killed.pid), "the daemon to take the lock")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert lock_path(database).read_text().strip() == str(killed.pid)    # the file stays, the lock does not
    once = mailbridge(config, "run", "--once")
    assert once.returncode == 0, once.stderr
    with running_daemon(config, tmp_path / "next.log") as following:
        wait_until(lambda: holding_the_lock(database, following.pid), "the next daemon to take the lock")


def test_run_once_is_refused_while_another_process_holds_the_lock(tmp_path: Path, dovecot: DovecotServer,
                                                                   fresh_mailbox: SandboxAccount,
                                                                   smtp_server: SandboxSMTP,
                                                                   staff: SandboxAccount) -> None:
    """Held by this process (a daemon in all but name): `run --once` says so at once, naming this pid."""
    config = write_config(tmp_path, fresh_mailbox, staff, smtp_server)
    database = tmp_path / "state" / "mailbridge.db"
    lock = lock_database(f"sqlite:///{database}")
    assert lock is not None
    with lock:
        refused = mailbridge(config, "run", "--once")
        assert refused.returncode == 2 and f"(pid {os.getpid()}) runs on {database};" in refused.stderr
    assert mailbridge(config, "run", "--once").returncode == 0       # released: the next one runs


def test_postgresql_needs_no_daemon_lock() -> None:
    assert lock_database("postgresql+psycopg://postgres@127.0.0.1:5432/anything") is None
