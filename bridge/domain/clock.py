"""The one clock type: every reader of the time takes one, so tests pass their own."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, in UTC: the default :data:`Clock`."""
    return datetime.now(timezone.utc)
