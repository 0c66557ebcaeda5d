"""SIGKILL the real daemon while it dispatches feedback requests: no order is ever asked twice.

Each order's request is queued in the outbox and marked sent in one transaction;
a claim a killed process left is released once it is as old as
``[outbox] reconcile_after_seconds``; an outbox send interrupted by a kill is
looked up in the Sent folder. So every order ends with one request row, at most
one mail at the SMTP server, and a mail for each request whose send is known.
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
from bridgekit import crash_config, insert_order, mailbridge_process, peek_count, running_daemon, wait_for_progress
from sqlalchemy import select

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP
from bridge.store.engine import open_database

ORDERS = 150
KILLS = 5
ORDER_ID = re.compile(r"\b\d{3}-\d{7}-\d{7}\b")
SENT_REQUESTS = "SELECT count(*) FROM feedback_request WHERE state = 'sent'"


@pytest.mark.slow
def test_sigkill_while_dispatching_feedback_never_asks_twice(tmp_path: Path, dovecot: DovecotServer,
                                                             fresh_mailbox: SandboxAccount,
                                                             staff: SandboxAccount) -> None:
    seller = fresh_mailbox
    log = tmp_path / "daemon.log"
    with SandboxSMTP(dovecot, auth={seller.user: seller.password}, file_sent_copies=True) as smtp:
        config = crash_config(tmp_path, seller, staff, smtp, batch_size=50)
        config.write_text(config.read_text() + '\n[accounts.feedback]\nenabled = true\nsend_window = "00:00-24:00"\n')
        db = tmp_path / "mailbridge.db"
        engine = open_database(f"sqlite:///{db}")
        now = datetime.now(timezone.utc)
        order_ids = [f"111-{i:07d}-0000001" for i in range(ORDERS)]
        for i, order_id in enumerate(order_ids):
            insert_order(engine, order_id, buyer_alias=f"fb{i:08d}buyer@marketplace.amazon.com", now=now,
                         delivered_at=now - timedelta(days=7))

        def asked() -> collections.Counter[str]:
            return collections.Counter(m.group(0) for r in smtp.received if r.rcpt_tos[0].endswith(".amazon.com")
                                       for m in [ORDER_ID.search(str(message_from_bytes(
                                           r.data, policy=policy.default)["Subject"]))] if m)

        rng = random.Random(1213)
        kills: list[tuple[int, int]] = []          # (requests sent, mails at the SMTP server) at each kill
        while len(kills) < KILLS and sum(asked().values()) < ORDERS:
            proc = mailbridge_process(config, log, "run")
            if not kills:
                # The first kill lands as soon as a request is dispatched: a fast machine dispatches
                # all 150 within a second of start-up, so a blind delay could miss the dispatch.
                wait_for_progress(lambda: peek_count(db, SENT_REQUESTS), lambda n: n >= ORDERS)
            elif len(kills) % 2:
                wait_for_progress(lambda: peek_count(db, SENT_REQUESTS), lambda n: n >= ORDERS)
                time.sleep(rng.uniform(0, 0.1))
            else:
                time.sleep(rng.uniform(0.3, 1.5))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((peek_count(db, SENT_REQUESTS), sum(asked().values())))

        with running_daemon(config, log):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with engine.begin() as conn:
                    requests = collections.Counter(r[0] for r in conn.execute(select(store.FEEDBACK.c.state)))
                    open_rows = conn.execute(select(store.OUTBOX.c.id).where(
                        store.OUTBOX.c.state.in_(("queued", "sending")))).all()
                if requests == {"sent": ORDERS} and not open_rows:
                    break
                time.sleep(0.25)
        smtp.wait_delivered()

        with engine.begin() as conn:
            requests = collections.Counter(r[0] for r in conn.execute(select(store.FEEDBACK.c.state)))
            outbox = {r.dedupe_key: r.state for r in conn.execute(
                select(store.OUTBOX.c.dedupe_key, store.OUTBOX.c.state).where(
                    store.OUTBOX.c.purpose == "feedback_request"))}
        got = asked()
        print(f"\nSIGKILL x{len(kills)} ((requests sent, mails received) at each kill: {kills}); requests "
              f"{dict(requests)}; outbox {dict(collections.Counter(outbox.values()))}; mails {sum(got.values())}")
        assert requests == {"sent": ORDERS}
        assert len(outbox) == ORDERS and set(outbox.values()) <= {"sent", "unknown"}
        assert max(got.values()) == 1                                   # nobody asked twice
        for order_id in order_ids:
            if outbox[f"feedback:acme:{order_id}"] == "sent":
                assert got[order_id] == 1, order_id
        assert any(0 < sent < ORDERS for sent, _ in kills), kills       # the kills did land mid-dispatch
