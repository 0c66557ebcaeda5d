"""One account's workers in the running daemon, started and stopped together.

An account runs an ingest thread, an outbox task and (when feedback requests
or response-time reminders are on) a feedback dispatcher and a reminder timer
the supervisor's timers tick. Each account has
its own stop flags, so a reload can stop one account (removed from the
configuration, or changed) while the others go on: the ingest thread finishes
the batch in hand, the outbox task the message in hand.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from bridge.workers.base import Heartbeat
from bridge.workers.ingest import AccountIngest

if TYPE_CHECKING:
    from bridge.services.account import AccountContext
    from bridge.workers.feedback import FeedbackDispatcher
    from bridge.workers.outbox import OutboxWorker
    from bridge.workers.reminders import ReminderTimer

log = logging.getLogger(__name__)


class RunningAccount:
    """The ingest thread, outbox task, feedback dispatcher and reminder timer of one account."""

    def __init__(self, acct: "AccountContext", ingest: AccountIngest, outbox: "OutboxWorker",
                 feedback: "FeedbackDispatcher | None", wake: asyncio.Event,
                 reminders: "ReminderTimer | None" = None) -> None:
        self.acct = acct
        self.ingest = ingest
        self.outbox = outbox
        self.feedback = feedback
        self.reminders = reminders
        self.wake = wake
        self._thread_stop = threading.Event()
        self._task_stop = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.acct.name

    @property
    def heartbeats(self) -> list[Heartbeat]:
        beats = [self.ingest.heartbeat, self.outbox.heartbeat]
        if self.feedback is not None:
            beats.append(self.feedback.heartbeat)
        if self.reminders is not None:
            beats.append(self.reminders.heartbeat)
        return beats

    def start(self) -> None:
        self._thread = threading.Thread(target=self.ingest.run_forever, args=(self._thread_stop,),
                                        name=f"ingest-{self.name}", daemon=True)
        self._thread.start()
        self._task = asyncio.create_task(self.outbox.run(self._task_stop, self.wake), name=f"outbox-{self.name}")

    def signal_stop(self) -> None:
        """Ask both workers to stop after the work in hand; :meth:`wait_stopped` waits for them."""
        self._thread_stop.set()
        self._task_stop.set()

    async def wait_stopped(self, deadline: float) -> bool:
        """Wait for the outbox task, then the ingest thread, until ``deadline`` (loop time); False if either is
        still busy (a send stuck beyond its timeouts must not hang the daemon's stop)."""
        loop = asyncio.get_running_loop()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=max(0.1, deadline - loop.time()))
            if not self._task.done():
                return False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, max(0.1, deadline - loop.time()))
            return not self._thread.is_alive()
        return True

    async def stop(self, seconds: float = 60.0) -> bool:
        self.signal_stop()
        stopped = await self.wait_stopped(asyncio.get_running_loop().time() + seconds)
        if not stopped:
            log.warning("account %s: its workers are still busy after %.0f s", self.name, seconds)
        return stopped
