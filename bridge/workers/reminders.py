"""The response-time reminder timer of one account (rules: bridge.domain.reminders).

The supervisor's APScheduler interval job calls :meth:`ReminderTimer.tick` for
every account with ``[accounts.reminders] after_hours``; ``run --once`` calls
it once. The durable state is only the ``response_reminder`` table: the timer
holds nothing a restart could lose, a late tick sends what fell due meanwhile,
and a doubled one finds the rows already ``sent``.
"""

from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy.engine import Engine

from bridge.domain.clock import Clock, utcnow
from bridge.services import reminders
from bridge.services.account import AccountContext
from bridge.workers.base import Heartbeat

log = logging.getLogger(__name__)

#: How often the supervisor's timer fires (a tick with nothing due is one indexed query per account).
TICK_SECONDS = 30
#: Due reminders handled per transaction.
BATCH = 20


class ReminderTimer:
    """One account's reminders; :meth:`tick` blocks (run it in a thread)."""

    def __init__(self, engine: Engine, acct: AccountContext, *, clock: Clock = utcnow,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.acct = acct
        self.clock = clock
        self.on_queued = on_queued
        self.sent = 0
        self.heartbeat = Heartbeat(f"reminders-{acct.name}", allowed_silence=20 * TICK_SECONDS)

    def tick(self) -> reminders.ReminderResult:
        """Queue the reminders due now; wakes the outbox when something was queued."""
        result = reminders.send_due(self.engine, self.acct, self.clock(), BATCH)
        self.heartbeat.beat()
        if result.sent:
            log.info("account %s: %d response-time reminder(s) queued", self.acct.name, result.sent)
            self.sent += result.sent
            if self.on_queued is not None:
                self.on_queued()
        return result


def timers(engine: Engine, accounts: list[AccountContext], clock: Clock,
           on_queued: Callable[[str], None] | None = None) -> list[ReminderTimer]:
    """A timer for every account with reminders on (``after_hours`` not empty); ``on_queued(account name)``."""
    def waker(name: str) -> Callable[[], None] | None:
        return None if on_queued is None else lambda: on_queued(name)

    return [ReminderTimer(engine, a, clock=clock, on_queued=waker(a.name))
            for a in accounts if a.settings.reminders.after_hours]
