"""Times as they come back from the database: UTC-aware datetimes, and ISO text for reports."""

from __future__ import annotations

from datetime import datetime, timezone


def utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """``dt`` to the second, as reports and JSON output show it; None stays None."""
    return dt.isoformat(timespec="seconds") if dt else None
