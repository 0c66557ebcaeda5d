"""What the daemon tells its service manager: ready, status, watchdog pings, reloading, stopping.

- ``READY=1`` once the database is open and every account has connected or
  said why it could not (its first attempt logged and recorded an error).
- ``STATUS=`` one line: accounts connected, mail queued, the last error.
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, from the event loop, and only
  while every worker's heartbeat is alive (``StuckReport.all_alive``): a
  blocked event loop, a stuck thread or an account whose server went silent
  mid-IDLE stops the pings, and systemd restarts the service after
  ``WatchdogSec=``.
- ``RELOADING=1`` then ``READY=1`` around a reload; ``STOPPING=1`` on the way out.

The protocol itself is ``bridge.adapters.sdnotify``; outside systemd it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

from bridge.adapters.sdnotify import Notifier, watchdog_interval
from bridge.workers.base import StuckReport
from bridge.workers.running_account import RunningAccount

log = logging.getLogger(__name__)

#: How often readiness is looked at while the accounts make their first attempt.
READY_CHECK_SECONDS = 0.1
STATUS_ERROR_CHARS = 160


def status_line(accounts: Sequence[RunningAccount], queued: int | None) -> str:
    """``"2/3 accounts connected; 4 queued; last error: acme-de: ..."`` (one line)."""
    connected = sum(1 for r in accounts if r.ingest.connected)
    parts = [f"{connected}/{len(accounts)} accounts connected"]
    if queued is not None:
        parts.append(f"{queued} queued")
    errors = [(r.name, r.ingest.last_error) for r in accounts if r.ingest.last_error]
    if errors:
        name, error = errors[-1]
        text = " ".join(str(error).split())
        if len(text) > STATUS_ERROR_CHARS:
            text = text[:STATUS_ERROR_CHARS - 1] + "…"
        parts.append(f"last error: {name}: {text}")
    return "; ".join(parts)


class ServiceState:
    """The daemon's side of sd_notify; every method is a no-op outside systemd."""

    def __init__(self, notifier: Notifier | None = None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.notifier = notifier or Notifier.from_environment(env)
        self.watchdog_every = watchdog_interval(env, os.getpid()) if self.notifier.enabled else None
        self._withheld: set[str] = set()

    async def announce_ready(self, accounts: Callable[[], Sequence[RunningAccount]], stop: asyncio.Event,
                             status: Callable[[], Awaitable[str]]) -> None:
        """Wait until every account has connected or reported why not (or stop), then send READY=1."""
        while not stop.is_set() and not all(r.ingest.reported.is_set() for r in accounts()):
            try:
                await asyncio.wait_for(stop.wait(), READY_CHECK_SECONDS)
            except TimeoutError:
                pass
        if stop.is_set():
            return
        line = await status()
        log.info("ready: %s", line)
        self.notifier.send(READY=1, STATUS=line)

    def status(self, line: str) -> None:
        self.notifier.send(STATUS=line)

    def reloading(self) -> None:
        self.notifier.send(RELOADING=1, STATUS="reloading the configuration")

    def reloaded(self, line: str) -> None:
        self.notifier.send(READY=1, STATUS=line)

    def stopping(self) -> None:
        self.notifier.send(STOPPING=1, STATUS="stopping: finishing the work in hand")

    async def watchdog(self, health: Callable[[], StuckReport], stop: asyncio.Event) -> None:
        """Ping every ``watchdog_every`` seconds while every heartbeat is alive; returns at stop."""
        every = self.watchdog_every
        if every is None:
            return
        log.info("systemd watchdog on: a sign of life every %.1f s while every worker beats", every)
        while not stop.is_set():
            report = health()
            stuck = {hb.name for hb in report.heartbeats if hb.stuck}
            if not stuck:
                self.notifier.send(WATCHDOG=1)
            for name in sorted(stuck - self._withheld):
                log.error("watchdog: no sign of life to systemd while %s is silent; systemd restarts "
                          "mailbridge if it stays so for WatchdogSec", name)
            for name in sorted(self._withheld - stuck):
                log.warning("watchdog: %s beats again; signs of life to systemd resume", name)
            self._withheld = stuck
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass

    def close(self) -> None:
        self.notifier.close()
