"""What the benchmarks share: a sandbox, a config, a real daemon process, a read-only view of its database.

Everything listens on 127.0.0.1 and lives in one temporary folder. Every wait
has a deadline. A daemon started here runs in its own session, so Ctrl-C at
the terminal reaches only the benchmark, which then stops the daemon itself
(SIGTERM, then SIGKILL) before the sandbox and the folder are removed.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient

from bridge.sandbox import DovecotServer, config_toml, samples

PASSWORD = "bench-pass"
ACCOUNT = "bench"


def mailbridge(config: Path, *args: str, log_level: str = "WARNING") -> list[str]:
    return [sys.executable, "-m", "bridge.cli", "-c", str(config), "--log-level", log_level, *args]


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark like Ctrl-C does: every ``finally`` runs, nothing is left behind."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)


def until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> float:
    """Poll ``check`` until it holds; returns the perf_counter() reading when it did. Raises after ``timeout``."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise SystemExit(f"benchmark: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def machine_line() -> str:
    """What the machine is doing as a benchmark starts: the figures that matter are ratios within a run."""
    return (f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
            f"at the start; Python {sys.version.split()[0]}")


@contextmanager
def bench_folder(keep: bool) -> Iterator[Path]:
    """A temporary folder for a benchmark's servers, configs and databases; removed after unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix="mailbridge-bench-"))
    try:
        root.chmod(0o755)   # Dovecot's processes must reach the mail folders under it
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_benchmark(main: Callable[[], None]) -> None:
    """Run ``main``; Ctrl-C (or SIGTERM, with :func:`stop_on_sigterm`) ends it with status 130."""
    try:
        main()
    except KeyboardInterrupt:
        print("\nbenchmark: interrupted; daemons stopped and the temporary folder removed", file=sys.stderr)
        sys.exit(130)


# --- mail --------------------------------------------------------------------------------


def sized(count: int, size: int, seller: str, seed: int) -> list[bytes]:
    """``count`` buyer messages averaging about ``size`` bytes (samples pads the buyer's text)."""
    trial = samples.buyer_backlog(20, seller_address=seller, seed=seed, size=size)
    pad = size + (size - sum(map(len, trial)) // len(trial))
    return samples.buyer_backlog(count, seller_address=seller, seed=seed, size=pad)



def client(dovecot: DovecotServer, user: str) -> IMAPClient:
    """A logged-in IMAP connection of our own (the sandbox helpers log in anew on every call)."""
    return dovecot.imap_client(user, timeout=60)


def fill(dovecot: DovecotServer, user: str, messages: list[bytes], chunk: int = 500) -> None:
    """Put ``messages`` into INBOX, ``chunk`` to one MULTIAPPEND (RFC 3502)."""
    with client(dovecot, user) as c:
        for i in range(0, len(messages), chunk):
            c.multiappend("INBOX", messages[i:i + chunk])


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 that accepts every message and keeps none (RFC 5321 subset).

    The sandbox's SMTP server parses and keeps each message for the tests; a daemon
    forwarding thousands would measure that server as much as the daemon. Here a
    message costs a few lines of reading. Runs its own event loop in a thread.
    """

    def __init__(self, record_ids: bool = False, limit_per_minute: int | None = None) -> None:
        self.accepted = 0
        # ``record_ids``: count the Message-IDs accepted (to find duplicates). ``limit_per_minute``:
        # refuse MAIL with "451 4.7.0" once that many were accepted in the last 60 s, as a provider does.
        self.message_ids: collections.Counter[str] | None = collections.Counter() if record_ids else None
        self.limit_per_minute = limit_per_minute
        self.refused = 0
        self._accepted_at: collections.deque[float] = collections.deque()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-sink", daemon=True)
        self._thread.start()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 sink ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == b"MAIL" and self._over_limit():
                    self.refused += 1
                    writer.write(b"451 4.7.0 Message rate exceeded, try again later\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    in_header, message_id = True, None
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        if in_header and self.message_ids is not None:
                            if data == b"\r\n":
                                in_header = False
                            elif data[:11].lower() == b"message-id:":
                                message_id = data[11:].strip().strip(b"<>").decode("ascii", "replace")
                    self.accepted += 1
                    if self.limit_per_minute is not None:
                        self._accepted_at.append(time.monotonic())
                    if self.message_ids is not None and message_id:
                        self.message_ids[message_id] += 1
                    writer.write(b"250 2.0.0 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:   # HELO, MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _over_limit(self) -> bool:
        if self.limit_per_minute is None:
            return False
        while self._accepted_at and self._accepted_at[0] < time.monotonic() - 60:
            self._accepted_at.popleft()
        return len(self._accepted_at) >= self.limit_per_minute

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in sessions:   # a client still connected (a daemon killed mid-send)
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> "SmtpSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- configuration -----------------------------------------------------------------------


def write_config(root: Path, name: str, imap_port: int, smtp_port: int, seller: str, staff: str,
                 batch: int, forward_existing: bool = True) -> Path:
    """A config for account "bench" with a fresh SQLite database ``<name>.db`` in ``root``.

    Everything else is the shipped default (IDLE on, log level INFO), as an operator would run it.
    """
    db = database_path(root, name)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    path = root / f"{name}.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{db}", seller=seller, staff=staff, imap_port=imap_port, smtp_port=smtp_port,
        imap_password=PASSWORD, name=ACCOUNT, seller_name="Bench Outdoor",
        sections={"account": {"forward_existing": forward_existing}, "imap": {"batch_size": batch},
                  "smtp": {"sent_copies": "none"}}))
    return path


def database_path(root: Path, name: str) -> Path:
    return root / f"{name}.db"


# --- watching the daemon -----------------------------------------------------------------


class Peek:
    """Read-only look at a daemon's SQLite database, as ``mailbridge status`` would see it.

    A plain read-only sqlite3 connection, not the engine: the engine's transactions
    begin IMMEDIATE and would queue behind the daemon's writes. Each query is its own
    short read transaction under WAL, so the daemon never waits for us.
    """

    def __init__(self, db: Path) -> None:
        self.db = db
        self._conn: sqlite3.Connection | None = None

    def _query(self, sql: str, *params: object) -> tuple[object, ...] | None:
        if self._conn is None:
            if not self.db.exists():
                return None
            self._conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30,
                                         isolation_level=None, check_same_thread=False)
        try:
            return self._conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):   # the daemon has not created its schema yet
                return None
            raise

    def checkpoint(self) -> int | None:
        """The INBOX UID checkpoint: every UID up to it is recorded (None before the first pass)."""
        row = self._query("SELECT last_uid FROM mailbox_state WHERE account = ? AND folder = 'INBOX'", ACCOUNT)
        return int(row[0]) if row else None  # type: ignore[call-overload]

    def idle(self) -> bool:
        """The first pass is done (last fetch recorded) and nothing waits in the outbox."""
        row = self._query("SELECT last_fetch_at FROM mailbox_state WHERE account = ? AND folder = 'INBOX'", ACCOUNT)
        return bool(row and row[0]) and self.count("SELECT count(*) FROM outbox WHERE state IN "
                                                   "('queued', 'sending')") == 0

    def count(self, sql: str, *params: object) -> int:
        row = self._query(sql, *params)
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class DaemonProcess:
    """``mailbridge run`` as a real process in its own session; its stderr goes to ``log``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.started = time.perf_counter()
        with log.open("ab") as err:
            self.proc = subprocess.Popen(mailbridge(config, "run", log_level="INFO"), stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> bool:
        """For :func:`until`: False while running, an error as soon as the daemon has exited."""
        if not self.alive():
            raise SystemExit(f"benchmark: the daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
        return False

    def peak_rss_mib(self) -> float:
        """The kernel's high-water mark of the daemon's resident memory (VmHWM), in MiB.

        Exact, unlike sampling VmRSS, which can miss a short peak. Read while it runs.
        """
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        except (OSError, StopIteration, ValueError):
            return float("nan")

    def cpu_seconds(self) -> float:
        """CPU time the daemon has used so far, all threads, user + system."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (finish the work in hand, exit 0); SIGKILL to the whole session after ``timeout``."""
        if not self.alive():
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"benchmark: the daemon did not stop within {timeout:.0f} s; killing it", file=sys.stderr)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.returncode:
            print(f"benchmark: warning: the daemon exited with {self.proc.returncode}; see {self.log}",
                  file=sys.stderr)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def daemon(config: Path, log: Path) -> Iterator[DaemonProcess]:
    """A running ``mailbridge run`` for the duration of the block; stopped however the block ends."""
    proc = DaemonProcess(config, log)
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def running_daemon(config: Path, log: Path, db: Path, timeout: float = 60) -> Iterator[DaemonProcess]:
    """A daemon that has finished its first pass and is idle (waiting in IDLE), for the duration."""
    with daemon(config, log) as proc:
        peek = Peek(db)
        try:
            until(lambda: peek.idle() or proc.check_alive(), timeout, "the daemon to finish its first pass",
                  interval=0.05)
        finally:
            peek.close()
        # The pass is recorded just before the IDLE command goes out: give it a moment to be sent.
        time.sleep(0.3)
        yield proc


# --- plain children ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    seconds: float           # from start to exit
    cpu_seconds: float       # user + system
    peak_rss_kib: int
    stdout: str


def child(argv: list[str], log: Path, timeout: float = 900) -> ChildRun:
    """Run a child to its end and measure it. Its stderr goes to ``log``."""
    out_path = log.with_suffix(".out")
    started = time.perf_counter()
    with log.open("ab") as err, out_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
        try:
            while True:
                done, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if done:
                    break
                if time.perf_counter() - started > timeout:
                    raise SystemExit(f"benchmark: {argv[:6]} still running after {timeout:.0f} s")
                time.sleep(0.002)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            raise
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{argv[:6]} failed ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}")
    return ChildRun(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out_path.read_text())
