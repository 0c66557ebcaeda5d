"""An account's sending pace: how many messages its limits let go now, and the report ``mailbridge status`` shows.

The rules are pure (bridge.domain.delivery); this reads what they need from the
outbox's own records, inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from bridge import store
from bridge.config import SmtpSettings
from bridge.domain.delivery import (
    DAY,
    MINUTE,
    Budget,
    SendLimits,
    WindowUse,
    drain_seconds,
    effective_limits,
    send_budget,
)
from bridge.store.times import iso


def limits_of(smtp: SmtpSettings) -> SendLimits:
    """The account's limits: its settings, else the provider's documented ones for a known host."""
    return effective_limits(smtp.max_per_minute, smtp.max_per_day, smtp.host, smtp.username)


def _use(conn: Connection, account: str, limits: SendLimits, now: datetime) -> tuple[WindowUse, WindowUse]:
    minute = store.window_use(conn, account, now - MINUTE, limits.per_minute)
    day = store.window_use(conn, account, now - DAY, limits.per_day)
    return minute, day


def budget(conn: Connection, account: str, limits: SendLimits, now: datetime) -> Budget:
    """How many messages may go now (None: no limit), and when more may when none may now."""
    if not limits.any:
        return Budget(None, None)
    return send_budget(limits, *_use(conn, account, limits, now), now)


def sending_status(conn: Connection, account: str, smtp: SmtpSettings, now: datetime) -> dict[str, Any]:
    """The current rate, the limits, a throttle pause and about how long until the queue is sent."""
    limits = limits_of(smtp)
    minute, day = _use(conn, account, limits, now)
    allowance = send_budget(limits, minute, day, now)
    pause = store.send_pause(conn, account)
    paused = pause is not None and pause.until > now
    queued = store.queued_count(conn, account)
    drain = drain_seconds(queued, limits, minute, day, now)
    if paused and drain is not None:
        assert pause is not None
        drain += (pause.until - now).total_seconds()
    return {
        "sent_last_minute": minute.count,
        "sent_last_day": day.count,
        "limit_per_minute": limits.per_minute,
        "limit_per_day": limits.per_day,
        "queued": queued,
        "may_send_now": allowance.allowed,
        "limited_until": iso(allowance.next_at),
        "paused_until": iso(pause.until) if paused and pause is not None else None,
        "pause_reason": pause.reason if paused and pause is not None else None,
        "drain_seconds": None if drain is None else round(drain, 1),
    }
