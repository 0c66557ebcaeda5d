"""SIGKILL ``mailbridge run --once`` while it reminds staff of 40 unanswered buyers: each buyer's 12-hour
reminder reaches staff exactly once, whatever the kills interrupted.

The buyer mail is dated 13 hours before the test runs (relative to the real clock the processes read,
never a calendar date), so the 12-hour reminder of every buyer is due at once and the 20-hour one is not.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import time
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from bridgekit import crash_config, mailbridge_process, peek_count, rows, wait_for_progress

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.store.engine import open_database

BUYERS = 40
KILLS = 6
SENT_REMINDERS = "SELECT count(*) FROM response_reminder WHERE state = 'sent'"
TAG = re.compile(r"\[(MB-\d+)\] - unanswered for 12 h")


def _subject(data: bytes) -> str:
    return str(message_from_bytes(data, policy=policy.default)["Subject"])


@pytest.mark.slow
def test_sigkill_while_reminding_never_sends_a_threshold_twice(tmp_path: Path, dovecot: DovecotServer,
                                                              fresh_mailbox: SandboxAccount,
                                                              staff: SandboxAccount) -> None:
    seller = fresh_mailbox
    log = tmp_path / "daemon.log"
    wrote = datetime.now(timezone.utc) - timedelta(hours=13)
    with SandboxSMTP(dovecot, auth={seller.user: seller.password}, file_sent_copies=True) as smtp:
        config = crash_config(tmp_path, seller, staff, smtp, batch_size=10)
        with dovecot.imap_client(seller.user) as client:
            client.multiappend("INBOX", [samples.amazon_buyer_message(
                buyer_alias=f"crashbuyer{i:04d}", buyer_name=f"Buyer {i}", order=f"111-0000000-{i:07d}",
                question=f"Question {i}: where is my order?", seller_address=seller.user,
                message_id=f"crash.{i}@email.amazon.com", date=wrote + timedelta(seconds=i)) for i in range(BUYERS)])

        def reminders() -> list[str]:
            return [m.group(1) for r in smtp.received if r.rcpt_tos == (staff.user,)
                    for m in [TAG.search(_subject(r.data))] if m]

        db = tmp_path / "mailbridge.db"
        rng = random.Random(1312)
        kills: list[tuple[int, int]] = []   # (reminders marked sent, reminders received) at each kill
        while len(kills) < KILLS and len(set(reminders())) < BUYERS:
            proc = mailbridge_process(config, log, "run", "--once")
            if len(kills) % 2:   # every other kill once this run got going (reminders marked or mailed)
                wait_for_progress(lambda: (peek_count(db, SENT_REMINDERS), len(reminders())),
                                  lambda now: now[1] >= BUYERS)
                time.sleep(rng.uniform(0, 0.3))
            else:
                time.sleep(rng.uniform(0.3, 3.0))   # anywhere: start-up, ingest, the reminder tick, the sending
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((peek_count(db, SENT_REMINDERS), len(reminders())))
        time.sleep(2.5)                          # interrupted sends become old enough to reconcile
        for _ in range(2):
            done = mailbridge_process(config, log, "run", "--once")
            assert done.wait(120) == 0, log.read_text(errors="replace")[-3000:]
        smtp.wait_delivered()

        got = collections.Counter(reminders())
        per_message_id = collections.Counter(r.message_id for r in smtp.received)
        print(f"\nSIGKILL x{len(kills)} ((marked sent, received) at each kill: {kills}); reminders {sum(got.values())} "
              f"for {len(got)} conversations")
        assert len(got) == BUYERS and set(got.values()) == {1}, got     # each buyer's reminder exactly once
        assert all(n == 1 for n in per_message_id.values())
        assert not [r for r in smtp.received if "@marketplace.amazon." in r.rcpt_tos[0]]
        engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
        states = collections.Counter((r.after_hours, r.state) for r in rows(engine, store.REMINDER))
        engine.dispose()
        assert states == {(12, "sent"): BUYERS, (20, "scheduled"): BUYERS}
