"""Test helpers: settings for a sandbox account, a controllable clock, DB peeks, waits on a condition."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Update, event, select, update

from bridge import store
from bridge.config import Settings, parse_settings
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.services import guard
from bridge.workers.supervisor import Daemon


def make_settings(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
                  imap: dict[str, Any] | None = None, account: dict[str, Any] | None = None,
                  smtp_opts: dict[str, Any] | None = None, outbox: dict[str, Any] | None = None,
                  db_url: str | None = None, daemon: dict[str, Any] | None = None) -> Settings:
    domain = seller.user.rpartition("@")[2]
    data: dict[str, Any] = {
        "daemon": daemon or {},
        "database": {"url": db_url or f"sqlite:///{tmp_path}/mailbridge.db"},
        "outbox": {"retry_base_seconds": 1, "retry_max_seconds": 10, **(outbox or {})},
        "accounts": [{
            "name": "acme",
            "marketplace": "amazon.com",
            "seller_name": "Acme Outdoor",
            "seller_address": seller.user,
            "staff_address": staff.user,
            "staff_senders": [f"*@{domain}"],
            **(account or {}),
            "imap": {"host": "127.0.0.1", "port": seller.port, "security": "none", "username": seller.user,
                     "password": seller.password, "poll_seconds": 5, **(imap or {})},
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "username": "",
                     "sent_copies": "none", **(smtp_opts or {})},
        }],
    }
    return parse_settings(data, tmp_path / "mailbridge.toml", {}, lambda p: p.read_text())


def account_block(name: str, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP) -> dict[str, Any]:
    """One more [[accounts]] entry, for agency (many accounts) tests."""
    domain = seller.user.rpartition("@")[2]
    return {
        "name": name, "marketplace": "amazon.de", "seller_name": f"{name} GmbH", "seller_address": seller.user,
        "staff_address": staff.user, "staff_senders": [f"*@{domain}"], "forward_existing": True,
        "imap": {"host": "127.0.0.1", "port": seller.port, "security": "none", "username": seller.user,
                 "password": seller.password, "poll_seconds": 5},
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "username": "", "sent_copies": "none"},
    }


@dataclass
class Clock:
    """A clock tests move by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def rows(engine: Any, table: Any, **where: Any) -> list[Any]:
    with engine.begin() as conn:
        q = select(table)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        return list(conn.execute(q).all())


def outbox_states(engine: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows(engine, store.OUTBOX):
        out[r.state] = out.get(r.state, 0) + 1
    return out


@contextmanager
def row_moves_on_before_update(conn: Any, outbox_id: int, state: str, by: Any = None) -> Iterator[None]:
    """Before the next UPDATE of the outbox on ``conn``, the row is set to ``state``.

    What happens when the daemon or another operator changes a row between an
    operator action's read and its conditional write, made deterministic.
    ``by``: an engine whose own transaction makes the change and commits (a
    real concurrent writer; PostgreSQL only, SQLite's writers wait for each
    other); by default the change is made on ``conn`` itself.
    """
    fired = False
    move = update(store.OUTBOX).where(store.OUTBOX.c.id == outbox_id).values(state=state)

    def interfere(on: Any, clause: Any, *_: Any) -> None:
        nonlocal fired
        if not fired and isinstance(clause, Update) and clause.table is store.OUTBOX:
            fired = True
            if by is None:
                on.execute(move)
            else:
                with by.begin() as other:
                    other.execute(move)

    event.listen(conn, "before_execute", interfere)
    try:
        yield
    finally:
        event.remove(conn, "before_execute", interfere)
    assert fired, "the operator action never tried to update the row"


def hits(row: Any) -> list[str]:
    return [h["rule"] for h in json.loads(row.rule_hits)]


def crash_config(tmp_path: Path, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
                 batch_size: int) -> Path:
    """The config of the SIGKILL tests: Sent copies filed by the server, quick reconciliation."""
    from bridge.sandbox import config_toml

    (tmp_path / "password").write_text(seller.password + "\n")
    path = tmp_path / "mailbridge.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mailbridge.db", seller=seller.user, staff=staff.user,
        imap_port=seller.port, smtp_port=smtp.port, imap_password_file=f"{tmp_path}/password", smtp_login=True,
        staff_senders=[f"*@{seller.user.rpartition('@')[2]}"],
        # A whole send ends within smtp.timeout_seconds, which must stay under reconcile_after_seconds.
        sections={"outbox": {"retry_base_seconds": 1, "reconcile_after_seconds": 4},
                  "account": {"forward_existing": True},
                  "imap": {"poll_seconds": 5, "batch_size": batch_size, "processed_folder": "Processed"},
                  "smtp": {"password_file": f"{tmp_path}/password", "sent_copies": "server",
                           "timeout_seconds": 3}}))
    return path


def peek_count(db: Path, sql: str) -> int:
    """A count read on a plain read-only connection, 0 while the table does not exist yet.

    (The engine's transactions begin IMMEDIATE: they would queue for the write lock behind
    a running daemon's batches and see a count only once its backlog is done.)
    """
    if not db.exists():   # not created yet
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):   # not created yet
            return 0
        raise
    finally:
        conn.close()


T = TypeVar("T")


def _checked(check: Callable[[], T], what: str | Callable[[], str], timeout: float, deadline: float) -> T:
    """What ``check`` gives now; raises naming ``what`` if that is nothing true and the deadline has passed."""
    result = check()
    if not result and time.monotonic() > deadline:
        said = what() if callable(what) else what
        raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
    return result


def wait_until(check: Callable[[], T], what: str | Callable[[], str], timeout: float = 60,
               interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something true, and return that; fail naming ``what`` after ``timeout`` s.

    The timeout only bounds a hang (the test waits for a state, never asserts a duration), so
    make it generous. A callable ``what`` is called only on failure, so the message can say how
    things stand at the end rather than at the start.
    """
    deadline = time.monotonic() + timeout
    while not (result := _checked(check, what, timeout, deadline)):
        time.sleep(interval)
    return result


async def until(check: Callable[[], T], what: str | Callable[[], str], timeout: float = 60,
                interval: float = 0.05) -> T:
    """:func:`wait_until` for a test running daemons on its own event loop: it sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not (result := _checked(check, what, timeout, deadline)):
        await asyncio.sleep(interval)
    return result


def wait_for_progress(progress: Callable[[], Any], finished: Callable[[Any], bool], timeout: float = 60) -> None:
    """Wait until ``progress()`` gives something new (a daemon just started got going) or ``finished``.

    The SIGKILL tests kill at a random moment after this as well as blindly: how long
    start-up takes differs twofold between machines, so a fixed delay could always hit it.
    """
    before = progress()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = progress()
        if now != before or finished(now):
            return
        time.sleep(0.01)


def mailbridge_process(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A real ``mailbridge`` process in its own session (so SIGKILL reaches it whole), logging to ``log``."""
    import sys

    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(config), "--log-level", "INFO",
                                 *args], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


@contextmanager
def running_daemon(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``mailbridge run`` for the block; stopped with SIGTERM after it, which must exit 0."""
    import os
    import signal

    def started() -> int:
        return log.read_text(errors="replace").count("mailbridge running") if log.exists() else 0

    before = started()
    proc = mailbridge_process(config, log, "run")
    try:
        # Up before the block runs: a SIGTERM sent while Python is still starting (the block may
        # find its work done at once) would end the process before any handler exists (-15).
        deadline = time.monotonic() + 60
        while started() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started() != before, f"mailbridge run did not start: {log.read_text(errors='replace')[-3000:]}"
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- the relay flow: one account with a buyer message already forwarded to staff ---------------

RELAY = "@marketplace.amazon."


def parsed(data: bytes):  # type: ignore[no-untyped-def]
    return message_from_bytes(data, policy=policy.default)


def text_of(data: bytes) -> str:
    return parsed(data).get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def to_buyers(smtp: SandboxSMTP) -> list:  # type: ignore[type-arg]
    return [r for r in smtp.received if RELAY in r.rcpt_tos[0]]


def to_staff(smtp: SandboxSMTP, staff: SandboxAccount) -> list:  # type: ignore[type-arg]
    return [r for r in smtp.received if r.rcpt_tos[0] == staff.user]


def audit(of: "Flow") -> list[dict]:  # type: ignore[type-arg]
    with of.daemon.engine.begin() as conn:
        return guard.audit_rows(conn, ["acme"], None, 1000)


class Flow:
    """One seller account with a buyer message already forwarded to staff."""

    def __init__(self, tmp_path: Path, dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount,
                 smtp: SandboxSMTP, **settings_kw) -> None:  # type: ignore[no-untyped-def]
        self.dovecot, self.seller, self.staff, self.smtp = dovecot, seller, staff, smtp
        self.clock = Clock()
        self.settings = make_settings(tmp_path, seller, staff, smtp, account={"forward_existing": True},
                                      **settings_kw)
        self.daemon = Daemon(self.settings, clock=self.clock)
        self.buyer_mail = samples.amazon_buyer_message(
            buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556",
            question="Does the tent come with a footprint?", seller_address=seller.user,
            token="A1B2C3D4E5F6G", message_id="buyer.1@email.amazon.com")
        dovecot.append(seller.user, "INBOX", self.buyer_mail)
        self.run()
        (self.notification,) = smtp.wait_for(1)
        self.n = 0

    def run(self, **kw: Any):  # type: ignore[no-untyped-def]
        return asyncio.run(self.daemon.run_once(**kw))

    def reply(self, text: str, **kw) -> bytes:  # type: ignore[no-untyped-def]
        self.n += 1
        kw.setdefault("staff", self.staff.user)
        kw.setdefault("message_id", f"staff.{self.n}@{self.staff.user.rpartition('@')[2]}")
        raw = samples.staff_reply(self.notification.data, text=text, **kw)
        self.dovecot.append(self.seller.user, "INBOX", raw)
        return raw


# --- orders, as the orders import would leave them (the feedback schedule's input) ------------

def insert_order(engine: Any, order_id: str, *, account: str = "acme", status: str = "delivered",
                 buyer_alias: str | None = "k3j9x0qma2b7@marketplace.amazon.com", now: datetime | None = None,
                 items: tuple[tuple[str, str], ...] = (("TENT-2", "Trail Tent 2P"),), **columns: Any) -> int:
    """One row of ``orders`` (and its ``order_item`` lines: (sku, title)); returns its id.

    ``columns`` sets any other column (delivered_at, estimated_delivery_from, language, open_claim, ...).
    """
    now = now or datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    values = dict(account=account, order_id=order_id, status=status, buyer_alias=buyer_alias, marketplace="amazon.com",
                  purchased_at=now - timedelta(days=10), created_at=now, updated_at=now, open_claim=False)
    values.update(columns)
    with engine.begin() as conn:
        row_id = store.models.inserted_id(conn.execute(store.ORDERS.insert().values(**values)))
        for n, (sku, title) in enumerate(items):
            conn.execute(store.ORDER_ITEM.insert().values(order_row=row_id, item_key=f"{sku}-{n}", sku=sku,
                                                          title=title, quantity=1))
    return row_id


# --- PostgreSQL (127.0.0.1:5432, trust) --------------------------------------------------------

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A brand-new PostgreSQL database (its SQLAlchemy URL), dropped afterwards; skips the test
    when the server is not reachable (fails it on CI)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    name = f"mailbridge_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[Any]:
    """An opened, empty database of ``kind`` ("sqlite" or "postgresql"), its engine disposed afterwards."""
    from bridge.store.engine import open_database

    if kind == "sqlite":
        engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = open_database(url)
        yield engine
        engine.dispose()
