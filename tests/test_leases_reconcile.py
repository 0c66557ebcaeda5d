"""A taken-over account: rows its previous holder left in 'sending' are judged only once that holder's lease has
ended and reconcile_after_seconds more have passed (it could still have been sending until its lease ended)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from bridgekit import Clock, make_settings, outbox_states

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.workers.outbox import OutboxWorker
from bridge.workers.supervisor import Daemon


def test_the_previous_holders_sends_wait_for_its_lease_to_end(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    clock = Clock()
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True},
                             smtp_opts={"timeout_seconds": 4}, outbox={"reconcile_after_seconds": 5})
    daemon = Daemon(settings, clock=clock)
    with dovecot.imap_client(fresh_mailbox.user) as client:
        client.multiappend("INBOX", samples.buyer_backlog(3, seller_address=fresh_mailbox.user, seed=71))
    asyncio.run(daemon.run_once(send=False))
    # The previous holder claimed the three notifications, then went silent; its lease ran 30 s more.
    with daemon.engine.begin() as conn:
        assert len(store.claim_batch(conn, "acme", "other-host:1:x", clock(), 20)) == 3
    lease_end = clock() + timedelta(seconds=30)

    def drain() -> OutboxWorker:
        worker = OutboxWorker(daemon.engine, daemon.accounts[0], settings.outbox, clock=clock,
                              previous_holder_until=lease_end)

        async def go() -> None:
            try:
                await worker.reconcile()
                await worker.drain()
            finally:
                await worker.close()
        asyncio.run(go())
        return worker

    clock.advance(10)   # old enough by their claim (5 s), but the holder may still have been sending
    worker = drain()
    assert outbox_states(daemon.engine) == {"sending": 3}
    # The next look is planned for the end of its lease + reconcile_after_seconds (+ half a second).
    assert worker.seconds_until_due() == (lease_end + timedelta(seconds=5.5) - clock()).total_seconds()
    clock.advance(30)   # the lease ended 10 s ago
    drain()
    # No Sent folder to look in (sent_copies "none"): staff mail goes out again, with the same Message-ID.
    assert outbox_states(daemon.engine) == {"sent": 3}
    assert len(smtp_server.wait_for(3)) == 3
