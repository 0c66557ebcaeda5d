"""Stopping a server that runs as a whole process group (Dovecot), Linux-first."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from bridge.sandbox.errors import SandboxError


def terminate_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, SIGKILL what is left, reap the master.

    Dovecot's imap processes outlive the master on purpose (so a restart
    keeps sessions): only signalling the group really stops the server. Once
    its children are gone the master still idles up to a second before it
    exits; it holds no data by then, so it is killed instead of waited for.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while proc.poll() is None and set(live_group_members(pgid)) - {pgid}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    try:
        proc.wait(timeout=0.05)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not _wait_group_gone(pgid, 3.0):
        _signal_group(pgid, signal.SIGKILL)
        if not _wait_group_gone(pgid, 3.0):
            raise SandboxError(f"Dovecot processes of group {pgid} survived SIGKILL")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while live_group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies.

    Orphaned children are reparented to PID 1, which in some containers never
    reaps them; a zombie holds no socket, so it does not count.
    """
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:  # not Linux: zombies count, but so be it
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    alive = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry))
    return alive
