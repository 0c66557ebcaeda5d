"""The id a worker writes into the rows it claims: readable, and new at every start (Procrastinate #1518)."""

from __future__ import annotations

import os
import re
import socket

import pytest

from bridge.workers.base import holder_id


@pytest.mark.parametrize("role", ["outbox", "feedback"])
def test_a_holder_id_names_host_pid_and_role(role: str) -> None:
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:{role}:[0-9a-f]{{8}}", holder_id(role))


def test_two_workers_of_one_process_never_share_an_id() -> None:
    # Host and pid alone would not do: a restarted process may get its predecessor's pid (in a container,
    # every start is pid 1), so the random part is what makes the id new at each start.
    assert len({holder_id("outbox") for _ in range(1000)}) == 1000

