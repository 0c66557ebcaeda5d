"""What every worker shares: backoff between failed passes, a heartbeat, and the id its claims carry.

A worker is a loop over one account with a stop flag it checks between steps
(a ``threading.Event`` for the ingest thread, whose imapclient calls block;
an ``asyncio.Event`` for the outbox task). Two things are the same for both
and live here:

- :class:`Backoff`: after a failed pass, wait longer each time (with jitter,
  so that many accounts failing together do not retry in step), and start
  again from the shortest wait once a pass succeeds.
- :class:`Heartbeat`: the worker beats after every step it completes (a batch
  recorded, a second of IDLE, a message sent, a wait between passes). A
  worker silent for longer than its longest legitimate step is stuck: a hung
  connection or a stuck thread. The supervisor reports that; a service
  manager's watchdog can act on it.
- :func:`holder_id`: the name a worker writes into the rows it claims.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from typing import Callable, Protocol


def holder_id(role: str) -> str:
    """``host:pid:role:random``, new for every worker at every start, readable in a row's ``claimed_by``.

    Never only host and pid: a restarted process may get its dead predecessor's pid (a
    container's is often 1), and would then take the claims that process left for its own
    and never release them (Procrastinate #1518). Claims are released as a dead process's
    only when the id is not the asker's, so the id must be new at every start.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:8]}"


class Backoff:
    """Exponential delay between failed attempts, with jitter; :meth:`reset` after a success."""

    def __init__(self, first: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={first}, cap={cap}")
        self.first = first
        self.cap = cap
        self.rng = rng or random.Random()
        self._next = first

    def next_delay(self, at_least: float = 0.0) -> float:
        """The wait before the next attempt (at least ``at_least``, before jitter); the one after doubles."""
        delay = max(self._next, at_least) * self.rng.uniform(0.8, 1.2)
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Heartbeat:
    """When a worker last showed it is alive, and how long it may legitimately stay silent.

    ``beat()`` is cheap and may be called from the worker's own thread while
    the supervisor reads :meth:`silent_for` from another: it only stores a float.
    """

    def __init__(self, name: str, allowed_silence: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if allowed_silence <= 0:
            raise ValueError(f"{name}: allowed_silence must be positive, got {allowed_silence}")
        self.name = name
        self.allowed_silence = allowed_silence
        self._monotonic = monotonic
        self._last = monotonic()
        self._due = self._last + allowed_silence   # one float, so a reader never sees half a beat

    def beat(self, within: float | None = None) -> None:
        """Alive now; the next beat is due within ``within`` seconds (default: ``allowed_silence``).

        A worker about to take a step shorter than its longest (waiting in IDLE,
        whose end the server must answer within the IMAP timeout) says so, and
        counts as stuck sooner when the step overruns.
        """
        now = self._monotonic()
        self._last = now
        self._due = now + (self.allowed_silence if within is None else within)

    def silent_for(self) -> float:
        return max(0.0, self._monotonic() - self._last)

    @property
    def stuck(self) -> bool:
        return self._monotonic() > self._due


class StuckReport:
    """Turns heartbeats into log-worthy changes: newly stuck, recovered. Used by the supervisor's timer."""

    def __init__(self, heartbeats: list[Heartbeat]) -> None:
        self.heartbeats = heartbeats
        self._stuck: set[str] = set()

    def changes(self) -> tuple[list[Heartbeat], list[Heartbeat]]:
        """(heartbeats stuck since the last call, heartbeats that beat again since the last call)."""
        newly, recovered = [], []
        for hb in self.heartbeats:
            if hb.stuck and hb.name not in self._stuck:
                self._stuck.add(hb.name)
                newly.append(hb)
            elif not hb.stuck and hb.name in self._stuck:
                self._stuck.discard(hb.name)
                recovered.append(hb)
        return newly, recovered

    @property
    def all_alive(self) -> bool:
        return not any(hb.stuck for hb in self.heartbeats)


class LeaseExpired(Exception):
    """An operation on an account was not started: this daemon's lease on it may end before it would finish.

    Raised by ``AccountLease.check`` (bridge.workers.leases); the keeper stops the
    account's workers, so a worker meeting it waits to be stopped.
    """


class Lease(Protocol):
    """What a worker asks of its daemon's lease on its account before an IMAP batch, a move or a send."""

    def may_start(self) -> bool: ...

    def check(self, what: str) -> None: ...


class Unleased:
    """For workers run outside a daemon's keeper (``run --once`` holds the leases for the whole pass)."""

    def may_start(self) -> bool:
        return True

    def check(self, what: str) -> None:
        return None
