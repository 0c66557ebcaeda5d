"""A reload goes on renewing the account leases while it stops the accounts it changes (real PostgreSQL and
Dovecot): an account whose workers take longer than a whole lease to stop keeps one holding throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bridgekit import until

from bridge import store
from bridge.config import load_settings
from bridge.sandbox import SandboxAccount, SandboxSMTP, config_toml
from bridge.workers.supervisor import Daemon

pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres

CLUSTER = {"lease_seconds": 8, "renew_seconds": 0.5, "operation_seconds": 4}
WAIT = 90.0


def write(path: Path, url: str, seller: SandboxAccount, staff: SandboxAccount, smtp: SandboxSMTP,
          poll_seconds: int) -> None:
    path.write_text(config_toml(database=url, seller=seller.user, staff=staff.user, imap_port=seller.port,
                                smtp_port=smtp.port, imap_password=seller.password,
                                sections={"cluster": CLUSTER, "imap": {"poll_seconds": poll_seconds}}))


def test_a_reload_renews_the_lease_of_an_account_slower_to_stop_than_a_lease(
        tmp_path: Path, pg_url: str, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    config = tmp_path / "mailbridge.toml"
    write(config, pg_url, fresh_mailbox, staff, smtp_server, poll_seconds=5)
    daemon = Daemon(load_settings(config))

    def lease() -> store.LeaseState:
        with daemon.engine.begin() as conn:
            return store.lease_states(conn)["acme"]

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await until(lambda: "acme" in daemon.running, "the account running", timeout=WAIT)
        running = daemon.running["acme"]
        stop_workers = running.stop
        expiry_before = lease().expires_at

        async def slow_stop(seconds: float = 60.0) -> bool:
            # Workers that finish their work in hand only after the lease held when the reload began has
            # ended on the database's clock: unless renewed meanwhile, the lease is gone by then.
            def ended() -> bool:
                with daemon.engine.begin() as conn:
                    return store.database_time(conn) > expiry_before
            await until(ended, "the first lease's end", timeout=WAIT)
            return await stop_workers(seconds)

        running.stop = slow_stop  # type: ignore[method-assign]
        write(config, pg_url, fresh_mailbox, staff, smtp_server, poll_seconds=6)   # acme changes: restarted
        assert await daemon.reload()
        assert "acme" in daemon.running and daemon.running["acme"] is not running
        assert lease().live and lease().holder == daemon.keeper.holder  # type: ignore[union-attr]
        stop.set()
        await asyncio.wait_for(task, WAIT)

    asyncio.run(scenario())
    with daemon.engine.begin() as conn:
        history = store.lease_history(conn, "acme")
    daemon.engine.dispose()
    assert len(history) == 1, history   # one holding: never lost, never taken again
