"""Is mailbridge healthy? Named checks over what the database says, for ``mailbridge health``.

Pure: the figures and the time come in, findings go out. The exit status
follows the monitoring-plugin convention (Nagios, Icinga, Sensu, Zabbix's
agents all read it): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check
itself could not run). Each check says what it saw and what to do.

- ``fetch``: an account's folder not fetched successfully for longer than its
  threshold: the mail of that seller is not being read (CRITICAL).
- ``outbox``: rows due, or claimed for sending, longer ago than the threshold:
  mail is not going out (CRITICAL). Rows that wait for a person (``unknown``
  outcome, ``held``) are a WARNING: nothing is lost, but someone must decide.
- ``quarantine``: mail that could not be processed and that no operator has
  acknowledged yet (``mailbridge quarantine ack``) (WARNING).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum


class Status(IntEnum):
    """The exit status of ``mailbridge health``: the monitoring-plugin convention."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Finding:
    status: Status
    check: str            # fetch | outbox | quarantine
    account: str
    reason: str           # one line: what is wrong and what to do


# A healthy ingest loop records a fetch at least every poll interval (IDLE or not, the
# poll is the safety net). Three intervals plus the time a slow pass may take leaves
# room for a reconnect; never less than 15 minutes, so a short outage does not page.
FETCH_AGE_FLOOR = timedelta(minutes=15)
OUTBOX_DELAY_DEFAULT = timedelta(hours=1)


def default_fetch_age(poll_seconds: float, timeout_seconds: float) -> timedelta:
    """The fetch threshold of an account when none is given: 15 min, or longer for slow polls."""
    return max(FETCH_AGE_FLOOR, timedelta(seconds=3 * poll_seconds + 4 * timeout_seconds))


_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta | None:
    """``"90"``/``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` -> a positive timedelta; None for anything else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        return None
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


def ago(delta: timedelta) -> str:
    """A duration as people say it: "40 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def check_fetch(account: str, folder: str, last_fetch_at: datetime | None, last_error: str | None,
                now: datetime, max_age: timedelta, *, started_at: datetime | None = None) -> Finding | None:
    """CRITICAL when ``folder`` of ``account`` has not been fetched for longer than ``max_age``.

    ``started_at``: when the account's state was first recorded; an account never
    fetched is only overdue once that is ``max_age`` ago (None: never seen at all).
    """
    since = last_fetch_at or started_at
    if since is not None and now - since <= max_age:
        return None
    if last_fetch_at is None:
        what = "has never been fetched"
    else:
        what = f"not fetched for {ago(now - last_fetch_at)} (threshold {ago(max_age)})"
    cause = f"; last error: {last_error}" if last_error else ("; is `mailbridge run` running?" if since else
                                                              "; start the daemon (`mailbridge run`)")
    return Finding(Status.CRITICAL, "fetch", account, f"account {account}: {folder} {what}{cause}")


def check_outbox(account: str, overdue: dict[str, tuple[int, datetime]], waiting: dict[str, int],
                 now: datetime, max_delay: timedelta) -> list[Finding]:
    """Overdue rows per state (``queued``: due since; ``sending``: claimed since) and rows that wait for a person.

    ``overdue`` holds only rows already past ``max_delay`` (the store's query says so).
    """
    out = []
    for state, what in (("queued", "due and not sent"), ("sending", "claimed for sending and not finished")):
        if state in overdue:
            count, since = overdue[state]
            out.append(Finding(Status.CRITICAL, "outbox", account,
                               f"account {account}: {count} outbox row(s) {what} for more than {ago(max_delay)} "
                               f"(the oldest for {ago(now - since)}); see `mailbridge outbox list` and the log"))
    for state, what in (("unknown", "of unknown outcome"), ("held", "held")):
        if waiting.get(state):
            out.append(Finding(Status.WARNING, "outbox", account,
                               f"account {account}: {waiting[state]} outbox row(s) {what} wait for a person: "
                               f"`mailbridge outbox list --state {state}`, then retry or cancel"))
    return out


def check_quarantine(account: str, unacknowledged: int) -> Finding | None:
    if not unacknowledged:
        return None
    return Finding(Status.WARNING, "quarantine", account,
                   f"account {account}: {unacknowledged} quarantined message(s) not acknowledged; see "
                   f"`mailbridge quarantine list`, then `mailbridge quarantine ack --account {account} --all`")


def overall(findings: list[Finding]) -> Status:
    return max((f.status for f in findings), default=Status.OK)


def summary(findings: list[Finding]) -> str:
    """The line a monitoring system shows: ``MAILBRIDGE CRITICAL - worst reason (and 2 more)``."""
    if not findings:
        return "MAILBRIDGE OK - every account fetched recently, the outbox is moving, no unacknowledged quarantine"
    worst_first = sorted(findings, key=lambda f: -f.status)
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    return f"MAILBRIDGE {overall(findings).name} - {worst_first[0].reason}{more}"
