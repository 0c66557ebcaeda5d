"""SIGKILL the real daemon while it drains a backlog in batches: every staff notification is delivered
once (same Message-ID) or, where the Sent folder cannot tell, delivered again with the same Message-ID
after reconciliation; nothing is lost."""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from pathlib import Path

import pytest
from bridgekit import mailbridge_process, running_daemon, wait_for_progress
from sqlalchemy import select

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples
from bridge.store.engine import open_database

BACKLOG = 600
KILLS = 6
RESENT = "send interrupted by a crash; outcome unknown, resent to staff"


@pytest.mark.slow
@pytest.mark.parametrize("sent_copies", ["server", "append"])
def test_sigkill_during_a_batched_drain(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                        staff: SandboxAccount, sent_copies: str) -> None:
    seller = fresh_mailbox
    with SandboxSMTP(dovecot, auth={seller.user: seller.password},
                     file_sent_copies=sent_copies == "server") as smtp:
        (tmp_path / "password").write_text(seller.password + "\n")
        config = tmp_path / "mailbridge.toml"
        config.write_text(config_toml(
            database=f"sqlite:///{tmp_path}/mailbridge.db", seller=seller.user, staff=staff.user,
            imap_port=seller.port, smtp_port=smtp.port, imap_password_file=f"{tmp_path}/password", smtp_login=True,
            sections={"outbox": {"retry_base_seconds": 1, "reconcile_after_seconds": 4, "batch_size": 20},
                      "account": {"forward_existing": True},
                      "imap": {"poll_seconds": 5},
                      "smtp": {"password_file": f"{tmp_path}/password", "sent_copies": sent_copies,
                               "timeout_seconds": 3}}))
        with dovecot.imap_client(seller.user) as client:
            client.multiappend("INBOX", samples.buyer_backlog(BACKLOG, seller_address=seller.user, seed=41))
        log = tmp_path / "daemon.log"
        ingest = mailbridge_process(config, log, "run", "--once", "--no-send")
        assert ingest.wait(120) == 0, log.read_text()[-3000:]
        engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
        with engine.begin() as conn:
            queued = {r.message_id for r in conn.execute(select(store.OUTBOX.c.message_id))}
        assert len(queued) == BACKLOG

        rng = random.Random(12)
        kills: list[int] = []    # SMTP transactions received at each kill
        while len(kills) < KILLS and len({r.message_id for r in smtp.received}) < BACKLOG:
            proc = mailbridge_process(config, log, "run")
            wait_for_progress(lambda: len(smtp.received), lambda n: n >= BACKLOG)
            time.sleep(rng.uniform(0, 0.3))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append(len(smtp.received))

        with running_daemon(config, log):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with engine.begin() as conn:
                    states = collections.Counter(r[0] for r in conn.execute(select(store.OUTBOX.c.state)))
                if states == {"sent": BACKLOG}:
                    break
                time.sleep(0.25)
        smtp.wait_delivered()

        with engine.begin() as conn:
            states = collections.Counter(r[0] for r in conn.execute(select(store.OUTBOX.c.state)))
            found = sum(1 for r in conn.execute(select(store.OUTBOX.c.last_error)) if r[0] and "found in the Sent" in r[0])
        # A row queued again is sent afterwards, which clears its note: the log keeps the count.
        resent = log.read_text(errors="replace").count(RESENT)
        per_id = collections.Counter(r.message_id for r in smtp.received)
        twice = sum(n - 1 for n in per_id.values() if n > 1)
        print(f"\nsent_copies={sent_copies}: SIGKILL x{len(kills)} (received at each kill: {kills}); "
              f"received {len(smtp.received)} ({len(per_id)} distinct Message-IDs, {twice} again with the "
              f"same Message-ID); outbox {dict(states)}; reconciled: {found} found in Sent, {resent} resent to staff")
        assert states == {"sent": BACKLOG}
        assert set(per_id) == queued                                   # every notification, and only ours
        assert len(dovecot.uids(staff.user, "INBOX")) == len(smtp.received)
        if sent_copies == "server":
            assert twice == 0                                          # the Sent folder told every time
        else:
            # Only a send the Sent folder could not vouch for goes again, with its Message-ID, at most
            # a batch per kill.
            assert twice <= resent <= len(kills) * 20
        assert sum(1 for n in kills if 0 < n < BACKLOG) >= 2, kills   # the kills did land mid-drain
