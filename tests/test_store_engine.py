"""The engine: a connection pool sized from the accounts, and PostgreSQL's driver as an optional extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.store.engine import make_engine, pool_limits


@pytest.mark.parametrize(("accounts", "kept", "burst"), [
    # kept = accounts + 4 shared (timers, /metrics, lease keeper); as many again for bursts
    (0, 5, 5),      # a command (status, outbox ...) without accounts is given the pool of one
    (1, 5, 5),
    (3, 7, 7),
    (20, 24, 24),   # at the busiest 2 per account + 4 = 44 at once; at most 48
])
def test_the_pool_is_sized_from_the_accounts(accounts: int, kept: int, burst: int) -> None:
    assert pool_limits(accounts) == {"pool_size": kept, "max_overflow": burst}


def test_a_daemon_of_20_accounts_gets_its_44_connections_at_once(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/mailbridge.db", accounts=20)
    held = [engine.connect() for _ in range(2 * 20 + 4)]       # the busiest moment waits for none of them
    assert engine.pool.size() == 24 and engine.pool.overflow() == 20 and engine.pool.checkedout() == 44
    for conn in held:
        conn.close()
    engine.dispose()


def test_a_postgresql_engine_has_the_same_pool(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1/unused", accounts=20)   # connects to nothing yet
    assert engine.pool.size() == 24
    engine.dispose()


@pytest.mark.parametrize("command", ["status", "check-config", "run"])
def test_postgresql_without_psycopg_names_the_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               command: str) -> None:
    """A mailbridge installed without the postgres extra, given a PostgreSQL URL: one line, exit status 2."""
    monkeypatch.setitem(sys.modules, "psycopg", None)      # what `import psycopg` does when it is not installed
    config = tmp_path / "mailbridge.toml"
    config.write_text('[database]\nurl = "postgresql://mailbridge@db.example/mailbridge"\n'
                      '[[accounts]]\nname = "acme"\nmarketplace = "amazon.com"\nseller_name = "Acme"\n'
                      'seller_address = "s@acme.example"\nstaff_address = "t@acme.example"\n'
                      'staff_senders = ["*@acme.example"]\n'
                      '[accounts.imap]\nhost = "imap.acme.example"\nusername = "s"\npassword = "p"\n'
                      '[accounts.smtp]\nhost = "smtp.acme.example"\n')
    assert main(["-c", str(config), command]) == 2
    said = capsys.readouterr().err
    assert said == ("mailbridge: the database postgresql+psycopg://mailbridge@db.example/mailbridge is PostgreSQL, "
                    "and its driver, psycopg 3, is not installed; install mailbridge with its postgres extra: "
                    "pip install 'mailbridge[postgres]'\n"), said
