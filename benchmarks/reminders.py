"""Response-time reminders: one timer tick with 100 reminders due, among few and among many scheduled.

The timer reads only the due rows (the index ix_reminder_due on account, state,
due time), so a tick's work should grow with what is due, not with how many
reminders wait. This fills two SQLite databases with the same 100 due
reminders, one beside ``--small`` and one beside ``--large`` reminders not yet
due, times one tick in each (best of ``--rounds``; each round starts from a
fresh copy of the due rows) and prints the ratio large/small (target <= 1.5).

    .venv/bin/python benchmarks/reminders.py [--small 10000] [--large 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import update

from bridge import store
from bridge.adapters.templates import Templates
from bridge.config import parse_settings
from bridge.services import reminders
from bridge.services.account import AccountContext
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
DUE = 100
CHUNK = 20_000


def account(db_url: str) -> AccountContext:
    settings = parse_settings({
        "database": {"url": db_url}, "outbox": {},
        "accounts": [{"name": "bench", "marketplace": "amazon.com", "seller_name": "Bench",
                      "seller_address": "seller@bench.example", "staff_address": "staff@bench.example",
                      "staff_senders": ["*@bench.example"],
                      "imap": {"host": "127.0.0.1", "security": "none", "username": "u", "password": "p"},
                      "smtp": {"host": "127.0.0.1", "security": "none", "username": ""}}],
    }, Path("bench.toml"), {}, lambda p: p.read_text())
    return AccountContext.build(settings.accounts[0], b"k" * 32, Templates(None))


def fill(db: Path, waiting: int) -> None:
    """``DUE`` conversations with a reminder due now, and ``waiting`` reminders due tomorrow."""
    engine = open_database(f"sqlite:///{db}")
    with engine.begin() as conn:
        total = DUE + waiting
        conn.execute(store.BUYER.insert(), [dict(account="bench", marketplace="marketplace.amazon.com",
                                                 alias=f"b{i}@marketplace.amazon.com", created_at=NOW)
                                            for i in range(DUE + 1)])
        conn.execute(store.CONV.insert(), [dict(account="bench", key=f"k{i}", buyer_id=i + 1, subject=f"Question {i}",
                                                created_at=NOW, last_message_at=NOW, message_count=1,
                                                staff_root_id=f"n{i}@bench", staff_last_id=f"n{i}@bench")
                                           for i in range(DUE + 1)])
        for start in range(0, total, CHUNK):
            ids = range(start, min(total, start + CHUNK))
            conn.execute(store.MESSAGE.insert(), [dict(
                account="bench", folder="INBOX", uidvalidity=1, uid=i + 1, content_hash=str(i), kind="buyer",
                rule_hits="[]", disposition="forwarded", from_addr="b@marketplace.amazon.com", to_addrs="[]",
                subject="Question", received_at=NOW - timedelta(hours=13), text="Where is my parcel?", size=1,
                conversation_id=(i + 1) if i < DUE else DUE + 1) for i in ids])
            conn.execute(store.REMINDER.insert(), [dict(
                account="bench", conversation_id=(i + 1) if i < DUE else DUE + 1, message_row=i + 1,
                after_hours=12, started_at=NOW - timedelta(hours=12 if i < DUE else 1),
                received_at=NOW - timedelta(hours=12 if i < DUE else 1),
                deadline_at=NOW + timedelta(hours=12 if i < DUE else 23),
                due_at=NOW if i < DUE else NOW + timedelta(hours=11), state="scheduled", created_at=NOW,
                updated_at=NOW) for i in ids])
    engine.dispose()


def tick(db: Path, rounds: int) -> float:
    """The best time of one tick sending the ``DUE`` reminders (each round on the due rows made due again)."""
    engine = open_database(f"sqlite:///{db}")
    acct = account(f"sqlite:///{db}")
    best = float("inf")
    for _ in range(rounds):
        with engine.begin() as conn:
            conn.execute(update(store.REMINDER).where(store.REMINDER.c.due_at == NOW).values(state="scheduled"))
            conn.execute(store.OUTBOX.delete())
        start = time.perf_counter()
        result = reminders.send_due(engine, acct, NOW, 20)
        best = min(best, time.perf_counter() - start)
        assert result.sent == DUE, result
    engine.dispose()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10_000, help="reminders not yet due beside the due ones")
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailbridge-bench-reminders-"))
    try:
        times = {}
        for name, waiting in (("small", args.small), ("large", args.large)):
            db = root / f"{name}.db"
            started = time.perf_counter()
            fill(db, waiting)
            print(f"{name}: {waiting:,} reminders not due + {DUE} due, filled in {time.perf_counter() - started:.1f} s")
            times[name] = tick(db, args.rounds)
            print(f"{name}: one tick sending {DUE} reminders: {times[name] * 1000:.0f} ms (best of {args.rounds})")
        print(f"ratio large / small: {times['large'] / times['small']:.2f}x (target <= 1.5x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
