"""Backlog reader: a helper process that fetches and prepares a large backlog ahead of the writer.

When an account has more new mail than ``READ_AHEAD_MIN_BATCHES`` batches
(after downtime, on a first run with ``forward_existing``), fetching and
parsing cost more CPU than recording. The ingest thread then starts this
helper process: it opens a second IMAP connection, EXAMINEs the folder
(read-only: it can change nothing on the server, and fetches with
``BODY.PEEK``), fetches the given UIDs in batches and runs bridge.prepare on
each message, while the ingest thread records the previous batch. One batch
travels through the pipe at a time, so the helper is at most one batch ahead
and memory stays bounded.

Nothing about safety moves here: recording, the checkpoint and MOVE stay in
the ingest thread, in the same order. The helper only reads. If it fails
(connection refused, killed, UIDVALIDITY changed) the ingest thread goes on
fetching itself from the first UID it has not recorded, so nothing is lost and
nothing is recorded twice. The helper exits when the backlog is done, when
asked, or when the pipe breaks because the daemon died.

Starting a helper (interpreter, imports) takes about 0.15 s of CPU, which
would delay the first read-ahead batch. So ``mailbridge run`` starts one spare
helper at once, before its own heavy imports: it does its imports on the
other core while the daemon starts, then waits for a job. The first
BacklogReader takes it. A spare that is not needed (no backlog) is stopped at
the end of the pass, and exits by itself after ``SPARE_IDLE_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

from .config import ImapSettings

if TYPE_CHECKING:  # the daemon imports this module early, to start a spare helper; these come later
    from .prepare import PrepareContext, Prepared

log = logging.getLogger(__name__)

# A backlog of more than this many batches is read ahead; a few messages are
# cheaper to fetch in the ingest thread than to start a process for.
READ_AHEAD_MIN_BATCHES = 3
# Helpers at once in one daemon: an agency catching up on fifty accounts must not
# start fifty processes. One core stays for recording; the other accounts fetch
# on their own connections meanwhile.
MAX_READERS = max(1, (os.cpu_count() or 2) - 1)
_slots = threading.BoundedSemaphore(MAX_READERS)
# A spare helper that gets no job within this time exits; one is taken only while
# it is clearly younger than that, so it cannot exit just as its job is written.
SPARE_IDLE_SECONDS = 60.0
_SPARE_TAKE_SECONDS = SPARE_IDLE_SECONDS - 15.0
_spare: "tuple[subprocess.Popen[bytes], float] | None" = None
_spare_lock = threading.Lock()


class ReaderFailed(Exception):
    """The helper stopped before the end of its backlog; the text says why."""


class ReaderUnavailable(Exception):
    """No helper could be started; ``busy`` when all are at work for other accounts."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


@dataclass(frozen=True)
class ReaderJob:
    imap: ImapSettings           # its folder and batch_size are the ones read
    uidvalidity: int
    uids: tuple[int, ...]
    prepare: "PrepareContext"


def _send(out: IO[bytes], kind: str, payload: Any) -> None:
    pickle.dump((kind, payload), out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()


def run_job(job: ReaderJob, out: IO[bytes]) -> None:
    """The helper's work: fetch, prepare, send one batch at a time (blocks while the reader is behind)."""
    from .prepare import prepare
    from .rawimap import ReadOnlySession

    try:
        with ReadOnlySession(job.imap) as session:
            folder, size = job.imap.folder, job.imap.batch_size
            uidvalidity = session.examine(folder)
            if uidvalidity != job.uidvalidity:
                _send(out, "error", f"UIDVALIDITY of {folder} changed ({job.uidvalidity} -> {uidvalidity})")
                return
            for start in range(0, len(job.uids), size):
                batch = job.uids[start:start + size]
                prepared = [prepare(job.prepare, item) for item in session.fetch(batch, job.prepare.max_message_bytes)]
                _send(out, "batch", (batch[-1], prepared))
        _send(out, "done", None)
    except BrokenPipeError:
        pass  # the daemon is gone or stopped listening: nothing to report to
    except Exception as exc:  # noqa: BLE001 - report any failure; the ingest thread takes over
        try:
            _send(out, "error", f"{type(exc).__name__}: {exc}")
        except OSError:
            pass


def main() -> None:
    """``python -m bridge.reader``: the job arrives pickled on stdin, batches leave pickled on stdout."""
    # The daemon decides when to stop; a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import gctune, prepare, rawimap  # noqa: F401 - imported before the job comes: what a spare helper is for

    gctune.settle()
    if not select.select([sys.stdin], [], [], SPARE_IDLE_SECONDS)[0]:
        return   # a spare nobody needed
    try:
        job = pickle.load(sys.stdin.buffer)
    except EOFError:
        return   # the daemon closed the pipe: not needed after all
    run_job(job, sys.stdout.buffer)


def _spawn() -> "subprocess.Popen[bytes]":
    """A helper process, waiting for its job on stdin. Raises OSError when none can be started."""
    # A fresh interpreter (not fork: the daemon has threads, and a forked
    # child could inherit a held lock), found the same way as this package.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # -P: never import from the working directory (under systemd a folder the service can write to).
    return subprocess.Popen([sys.executable, "-P", "-m", "bridge.reader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, close_fds=True)


def prestart() -> None:
    """Start the spare helper now, if there is none (``mailbridge run``, before its heavy imports)."""
    global _spare
    with _spare_lock:
        if _spare is not None:
            return
        try:
            _spare = (_spawn(), time.monotonic())
        except OSError as exc:   # no process to be had now; the first backlog tries again
            log.debug("no spare backlog reader: %s", exc)


def _take_spare() -> "subprocess.Popen[bytes] | None":
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is None:
        return None
    process, started = spare
    if process.poll() is None and time.monotonic() - started < _SPARE_TAKE_SECONDS:
        return process
    _stop(process)
    return None


def discard_spare() -> None:
    """Stop the spare helper if nobody took it (end of a pass, daemon stop)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        _stop(spare[0])


def _stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.terminate()  # it only reads: stopping it anywhere is safe
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a helper stuck in a system call
            process.kill()
            process.wait(5)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


class BacklogReader:
    """The ingest thread's end of one helper process.

    Iterate to get ``(last_uid_of_batch, [Prepared, ...])`` in UID order. The
    iteration raises :class:`ReaderFailed` when the helper fails; ``close()``
    (also on leaving a ``with`` block) stops the helper whatever state it is in.
    """

    def __init__(self, job: ReaderJob) -> None:
        self.job = job
        if not _slots.acquire(blocking=False):
            raise ReaderUnavailable(f"all {MAX_READERS} backlog reader(s) are busy", busy=True)
        self._slot = True
        try:
            self._start(job)
        except OSError as exc:   # no process to be had: a task limit, memory, a broken interpreter path
            self._release()
            raise ReaderUnavailable(f"cannot start the backlog reader: {exc}") from exc

    def _release(self) -> None:
        if self._slot:
            self._slot = False
            _slots.release()

    def _start(self, job: ReaderJob) -> None:
        self.process = _take_spare() or _spawn()
        assert self.process.stdin is not None and self.process.stdout is not None
        self._out = self.process.stdout
        self._finished = False
        try:
            pickle.dump(job, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.close()
        except OSError:
            pass  # it died at once; iterating says so

    @property
    def pid(self) -> int:
        return self.process.pid

    def __iter__(self) -> Iterator[tuple[int, list[Prepared]]]:
        while True:
            try:
                kind, payload = pickle.load(self._out)
            except (EOFError, OSError, pickle.UnpicklingError):
                try:
                    code = self.process.wait(10)
                except subprocess.TimeoutExpired:   # the stream broke but it lives on: stop it
                    self.process.kill()
                    code = self.process.wait()
                how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                raise ReaderFailed(f"the backlog reader process ended unexpectedly ({how})") from None
            if kind == "batch":
                yield payload
            elif kind == "done":
                self._finished = True
                return
            else:
                raise ReaderFailed(f"the backlog reader failed: {payload}")

    def close(self) -> None:
        if self._finished:
            try:
                self.process.wait(5)   # it has logged out and is exiting by itself
            except subprocess.TimeoutExpired:
                pass
        _stop(self.process)
        self._release()

    def __enter__(self) -> "BacklogReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
