"""RunningAccount.wait_stopped: one budget for the outbox task and the ingest thread, so a send stuck beyond
its timeouts cannot hang the daemon's stop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from bridge.workers.running_account import RunningAccount


class Ingest:
    """An ingest thread that stops when asked."""

    def run_forever(self, stop: threading.Event) -> None:
        stop.wait()


class StuckOutbox:
    """An outbox task in a send that does not return, whatever its stop flag says."""

    def __init__(self) -> None:
        self.never = asyncio.Event()

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        await self.never.wait()


class Account:
    name = "a1"


def test_wait_stopped_gives_up_on_an_outbox_task_at_the_deadline() -> None:
    async def scenario() -> None:
        outbox = StuckOutbox()
        running = RunningAccount(Account(), Ingest(), outbox, None, asyncio.Event())  # type: ignore[arg-type]
        running.start()
        running.signal_stop()
        loop = asyncio.get_running_loop()
        assert await running.wait_stopped(loop.time() + 0.2) is False
        outbox.never.set()             # the send returns at last: now it has stopped
        assert await running.wait_stopped(loop.time() + 30) is True

    asyncio.run(scenario())


def test_stop_is_true_once_both_have_stopped() -> None:
    async def scenario() -> None:
        class Outbox:
            async def run(self, stop: asyncio.Event, wake: Any) -> None:
                await stop.wait()

        running = RunningAccount(Account(), Ingest(), Outbox(), None, asyncio.Event())  # type: ignore[arg-type]
        running.start()
        assert await running.stop(30) is True

    asyncio.run(scenario())
