"""The feedback dispatcher of one account: schedule newly eligible orders, send the due requests.

The supervisor's one APScheduler interval job calls :meth:`FeedbackDispatcher.tick`
for every account with ``[accounts.feedback] enabled``; ``run --once`` calls it
once. The durable state is only the ``feedback_request`` table: the timer
holds nothing a restart could lose, and a tick that comes late (or twice)
finds the same rows. Scheduling reads the recent orders, so it runs at most
every :data:`SCHEDULE_EVERY` (and counts the last 30 days' orders for the daily
cap then); dispatching reads only the due rows, every tick.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy.engine import Engine

from bridge.domain.clock import Clock, utcnow
from bridge.services import feedback
from bridge.services.account import AccountContext
from bridge.workers.base import Heartbeat, holder_id

log = logging.getLogger(__name__)

#: How often the supervisor's timer fires the dispatchers (a tick with nothing due is one indexed query).
TICK_SECONDS = 15
#: How often newly eligible orders are looked for (an order's due time is days away, not seconds).
SCHEDULE_EVERY = timedelta(minutes=10)
#: Requests claimed at a time.
CLAIM_BATCH = 20


class FeedbackDispatcher:
    """One account's feedback requests; :meth:`tick` blocks (run it in a thread)."""

    def __init__(self, engine: Engine, acct: AccountContext, *, clock: Clock = utcnow,
                 on_queued: Callable[[], None] | None = None,
                 stale_after: timedelta = feedback.STALE_CLAIM) -> None:
        self.engine = engine
        self.stale_after = stale_after
        self.acct = acct
        self.clock = clock
        self.on_queued = on_queued
        self.worker_id = holder_id("feedback")
        self.last_scheduled: datetime | None = None
        # Counted with each scheduling pass, for the daily cap (an average over 30 days).
        self.orders_30_days: int | None = None
        self.sent = 0
        self.heartbeat = Heartbeat(f"feedback-{acct.name}", allowed_silence=40 * TICK_SECONDS)

    def tick(self) -> feedback.DispatchResult:
        """Schedule (when it is time to) and send what is due; wakes the outbox when something was queued."""
        now = self.clock()
        if self.last_scheduled is None or now - self.last_scheduled >= SCHEDULE_EVERY or now < self.last_scheduled:
            with self.engine.begin() as conn:
                made = feedback.schedule(conn, self.acct, now)
                self.orders_30_days = feedback.recent_orders(conn, self.acct, now)
            self.last_scheduled = now
            if made:
                log.info("account %s: %d feedback request(s) scheduled", self.acct.name, made)
        result = feedback.dispatch_due(self.engine, self.acct, now, CLAIM_BATCH, worker=self.worker_id,
                                       stale_after=self.stale_after, orders_30_days=self.orders_30_days)
        self.heartbeat.beat()
        if result.paused_until is not None:
            log.info("account %s: feedback requests paused until %s (account restricted)", self.acct.name,
                     result.paused_until.isoformat(timespec="minutes"))
        self.sent += result.sent
        if result.sent and self.on_queued is not None:
            self.on_queued()
        return result

