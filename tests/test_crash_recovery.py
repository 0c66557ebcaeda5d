"""SIGKILL the real daemon process at random moments; nothing is lost, nothing is sent twice."""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from pathlib import Path

import pytest
from bridgekit import (
    crash_config,
    mailbridge_process,
    peek_count,
    running_daemon,
    wait_for_progress,
)
from sqlalchemy import func, select

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.store.engine import open_database

BACKLOG = 1000
KILLS = 8



@pytest.mark.slow
def test_sigkill_during_backlog_loses_and_duplicates_nothing(tmp_path: Path, dovecot: DovecotServer,
                                                             fresh_mailbox: SandboxAccount,
                                                             staff: SandboxAccount) -> None:
    seller = fresh_mailbox
    with SandboxSMTP(dovecot, auth={seller.user: seller.password}, file_sent_copies=True) as smtp:
        config = crash_config(tmp_path, seller, staff, smtp, batch_size=100)
        with dovecot.imap_client(seller.user) as client:
            for raw in samples.buyer_backlog(BACKLOG, seller_address=seller.user, seed=11):
                client.append("INBOX", raw)
        log = tmp_path / "daemon.log"
        engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
        rng = random.Random(2026)
        kills: list[tuple[int, int]] = []   # (messages recorded, staff mails received) at each kill
        db = tmp_path / "mailbridge.db"

        def recorded_now() -> int:
            return peek_count(db, "SELECT count(*) FROM message")

        while len(kills) < KILLS and len(smtp.received) < BACKLOG:
            proc = mailbridge_process(config, log, "run")
            if not kills:
                # The first kill lands while the backlog is being recorded: the whole of it takes
                # well under a second now, so a random moment could miss that window every time.
                wait_for_progress(recorded_now, lambda now: False)
                time.sleep(rng.uniform(0, 0.05))
            elif len(kills) % 2:   # every other kill soon after this run got going
                wait_for_progress(lambda: (recorded_now(), len(smtp.received)),
                                  lambda now: now == (BACKLOG, BACKLOG))
                time.sleep(rng.uniform(0, 0.2))
            else:
                time.sleep(rng.uniform(0.2, 1.2))  # anywhere, start-up included
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((recorded_now(), len(smtp.received)))
        with running_daemon(config, log):
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with engine.begin() as conn:
                    pending = conn.execute(select(func.count()).select_from(store.OUTBOX)
                                           .where(store.OUTBOX.c.state != "sent")).scalar_one()
                    recorded = conn.execute(select(func.count()).select_from(store.MESSAGE)).scalar_one()
                if recorded == BACKLOG and pending == 0:
                    break
                time.sleep(0.5)
        smtp.wait_delivered()

        with engine.begin() as conn:
            uids = [r[0] for r in conn.execute(select(store.MESSAGE.c.uid))]
            sources = [r[0] for r in conn.execute(select(store.OUTBOX.c.source_message_id)
                                                  .where(store.OUTBOX.c.purpose == "staff_notification"))]
            states = collections.Counter(r[0] for r in conn.execute(select(store.OUTBOX.c.state)))
            notes = [r[0] for r in conn.execute(select(store.OUTBOX.c.last_error)
                                                .where(store.OUTBOX.c.last_error.is_not(None)))]
        per_message_id = collections.Counter(r.message_id for r in smtp.received)
        interrupted = sum("interrupted by a crash" in (n or "") for n in notes)
        print(f"\nSIGKILL x{len(kills)} ((recorded, staff mails received) at each kill: {kills}); "
              f"recorded {len(uids)} messages ({len(set(uids))} distinct UIDs); "
              f"staff notifications queued {len(sources)} for {len(set(sources))} messages; "
              f"SMTP received {len(smtp.received)} ({len(per_message_id)} distinct Message-IDs); "
              f"outbox {dict(states)}; interrupted sends reconciled {interrupted}")
        assert sorted(uids) == list(range(1, BACKLOG + 1))              # every message once
        assert len(sources) == len(set(sources)) == BACKLOG             # one notification each
        assert states == {"sent": BACKLOG}
        assert len(smtp.received) == BACKLOG                            # nothing sent twice
        assert max(per_message_id.values()) == 1
        assert len(dovecot.uids(staff.user, "INBOX")) == BACKLOG
        # Recorded mail left the INBOX after commit, including what a kill left behind unmoved.
        assert dovecot.uids(seller.user, "INBOX") == []
        assert len(dovecot.uids(seller.user, "Processed")) == BACKLOG
        # The kills did land mid-work: some while ingesting, some while sending.
        assert sum(1 for recorded, _ in kills if 0 < recorded < BACKLOG) >= 1
        assert sum(1 for _, sent in kills if 0 < sent < BACKLOG) >= 2
