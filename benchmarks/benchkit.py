"""What both benchmarks need: run a child and measure it, fill a mailbox, write a config, run the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.sandbox import DovecotServer, config_toml

PASSWORD = "bench-pass"


def mailbridge(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bridge.cli", "-c", str(config), "--log-level", "WARNING", *args]


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants now, in KiB (0 once it is gone)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(tree_rss_kib(int(c)) for c in f.read().split())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return total


def child(argv: list[str], log: Path) -> tuple[float, int, str]:
    """Run a child to its end: (seconds, peak RSS in KiB of it and its helpers together, stdout).

    Its stderr goes to ``log``. ru_maxrss would count only the largest process,
    not the backlog reader beside it, so the process tree is sampled every 10 ms.
    """
    started = time.perf_counter()
    with log.open("ab") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        peak = 0
        while True:
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            peak = max(peak, tree_rss_kib(proc.pid))
            time.sleep(0.01)
    elapsed = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{argv[:6]} failed ({code}):\n{log.read_text(errors='replace')[-2000:]}")
    return elapsed, max(peak, usage.ru_maxrss), out


def fill(dovecot: DovecotServer, user: str, messages: list[bytes]) -> None:
    with dovecot.imap_client(user) as client:
        for i in range(0, len(messages), 500):
            client.multiappend("INBOX", messages[i:i + 500])


def write_config(root: Path, name: str, imap_port: int, smtp_port: int, seller: str, staff: str,
                 batch: int) -> Path:
    """A config for account "bench" with a fresh SQLite database ``<name>.db`` in ``root``."""
    db = root / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    path = root / f"{name}.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{db}", seller=seller, staff=staff, imap_port=imap_port, smtp_port=smtp_port,
        imap_password=PASSWORD, name="bench", seller_name="Bench Outdoor",
        sections={"account": {"forward_existing": True}, "imap": {"batch_size": batch, "poll_seconds": 60},
                  "smtp": {"sent_copies": "none"}}))
    return path


@contextmanager
def running_daemon(config: Path, log: Path) -> Iterator[None]:
    """``mailbridge run`` for the duration, given 2 s to connect and idle; stopped with SIGTERM."""
    with log.open("wb") as err:
        proc = subprocess.Popen(mailbridge(config, "run"), stdout=subprocess.DEVNULL, stderr=err)
        try:
            time.sleep(2.0)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            if proc.wait(60):
                print(f"warning: the daemon exited with {proc.returncode}; see {log}", file=sys.stderr)
