"""The figures ``mailbridge health`` judges, read in the caller's transaction and judged by ``domain/health.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from bridge import store
from bridge.domain.health import Finding, check_fetch, check_outbox, check_quarantine


@dataclass(frozen=True)
class Watched:
    """One account as the configuration names it, with its fetch threshold."""

    account: str
    folder: str
    max_fetch_age: timedelta


def assess(conn: Connection, accounts: list[Watched], now: datetime, max_outbox_delay: timedelta) -> list[Finding]:
    """Every finding about ``accounts``: fetch, then outbox, then quarantine, account by account."""
    fetches = {(f.account, f.folder): f for f in store.mailbox_fetches(conn)}
    overdue = store.overdue_outbox(conn, due_before=now - max_outbox_delay, claimed_before=now - max_outbox_delay)
    by_state = store.outbox_by_state(conn)
    quarantined = store.quarantine_counts(conn)
    findings: list[Finding] = []
    for w in accounts:
        fetch = fetches.get((w.account, w.folder))
        finding = check_fetch(w.account, w.folder, fetch.last_fetch_at if fetch else None,
                              fetch.last_error if fetch else None, now, w.max_fetch_age,
                              started_at=fetch.initialised_at if fetch else None)
        findings += [finding] if finding else []
        findings += check_outbox(
            w.account, {s: (o.count, o.since) for (a, s), o in overdue.items() if a == w.account},
            {s: n for (a, s), n in by_state.items() if a == w.account}, now, max_outbox_delay)
        finding = check_quarantine(w.account, quarantined.get((w.account, False), 0))
        findings += [finding] if finding else []
    return findings
