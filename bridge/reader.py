"""Backlog reader: a helper process that fetches and prepares a large backlog ahead of the writer.

When an account has more new mail than ``READ_AHEAD_MIN_BATCHES`` batches
(after downtime, on a first run with ``forward_existing``), fetching and
parsing cost more CPU than recording. The ingest thread then starts this
helper process: it opens a second IMAP connection, EXAMINEs the folder
(read-only: it can change nothing on the server, and fetches with
``BODY.PEEK``), fetches the given UIDs in batches and runs bridge.prepare.read
on each message, while the ingest thread records the previous batch (and
completes what the helper read: the origin checks need the HMAC key, which
stays in the daemon). A thread of the helper sends the batches in order while
it reads on, at most about ``AHEAD_BATCHES`` batches (``AHEAD_BYTES``) ahead of
the ingest thread, so memory stays bounded.

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

The spare also gets a head start (:class:`ReadAhead`): the first account's
mailbox and the checkpoint as the database file holds it, read before the
daemon has imported SQLAlchemy. While the daemon starts up, the spare logs in
and reads (bridge.prepare.read: everything that needs no secret) the mail above
that checkpoint, up to ``AHEAD_BATCHES`` batches. When the job comes, it uses
what it read for the job's UIDs and only those, under the same UIDVALIDITY
(EXAMINEd again, so its connection sees the mail that came meanwhile), and
fetches the rest as before. The job, from the daemon's own checkpoint, decides
what is read; the head start only saves time.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import pickle
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator
from urllib.parse import quote

from .config import ImapSettings

if TYPE_CHECKING:  # the daemon imports this module early, to start a spare helper; these come later
    from .prepare import FetchedMail, PrepareContext, Prepared
    from .rawimap import ReadOnlySession

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
# How much a spare reads before its job comes (about what it gets through while the daemon
# starts), and how far a helper's reading gets ahead of the daemon's recording: so many batches,
# and no more than so many bytes of mail (of pickled batches, when they wait to be sent).
AHEAD_BATCHES = 8
AHEAD_BYTES = 24 * 1024 * 1024
# How long the job waits for the head start to stop before it cuts its connection and starts afresh.
HEAD_START_STOP_SECONDS = 5.0
_MAX_UID = 4294967295   # RFC 3501: UIDs are 32-bit
_spare: "tuple[subprocess.Popen[bytes], float, ReadAhead | None] | None" = None
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
    # Without the secret: the helper only runs bridge.prepare.read, the daemon completes what it
    # sends (the origin checks and values). The HMAC key never leaves the daemon's process.
    prepare: "PrepareContext"


@dataclass(frozen=True)
class ReadAhead:
    """A spare helper's head start: one mailbox, read above a checkpoint before the job comes."""

    imap: ImapSettings
    prepare: "PrepareContext"    # without the secret: bridge.prepare.read needs none
    uidvalidity: int             # the checkpoint the database holds (0: none yet)
    after_uid: int


def _mailbox(imap: ImapSettings) -> tuple[object, ...]:
    return imap.host, imap.port, imap.username, imap.folder


def checkpoint_hint(database_url: str, account: str, folder: str) -> tuple[int, int] | None:
    """(UIDVALIDITY, last UID) of an account's checkpoint, read from a SQLite file with the standard
    library; (0, 0) when there is none yet; None when it cannot be told (another database, a file
    that cannot be read). For a head start only: bridge.store.mailbox_checkpoint is the truth.
    """
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url[len("sqlite:///"):]
    if not path or path == ":memory:" or "?" in path:   # URL parameters: leave such a file to SQLAlchemy
        return None
    if not os.path.exists(path):
        return 0, 0
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=1)
        try:
            row = db.execute("SELECT uidvalidity, last_uid FROM mailbox_state WHERE account = ? AND folder = ?",
                             (account, folder)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _write_message(pipe: IO[bytes], message: object) -> None:
    """The daemon to its helper: a length, then the pickle (the helper waits with a timeout)."""
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(len(blob).to_bytes(8, "big") + blob)
    pipe.flush()


def _read_message(fd: int, timeout: float) -> object | None:
    """The next message on ``fd``; None when none comes within ``timeout`` or the pipe closed."""
    def exactly(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            if not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return data
    head = exactly(8)
    body = exactly(int.from_bytes(head, "big")) if head is not None else None
    return pickle.loads(body) if body is not None else None


class _Sender:
    """In the helper: sends what the job read from a thread of its own, in order.

    The pipe holds 1 MiB at most (64 KiB by default) of a batch's megabytes,
    so a helper that sent each batch itself would wait, doing nothing, for as
    long as the daemon takes to record the batch before. With this one it reads
    on meanwhile, while fewer than ``AHEAD_BATCHES`` batches and ``AHEAD_BYTES``
    wait their turn (its memory bound, besides the batch being written and the
    one being read; one batch may always wait, however large). A batch is
    pickled before it is queued, so the thread only writes: one blocking
    write, all of it without the GIL (pickling into the pipe would take the
    GIL back from the reading thread after every 64 KiB).
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._waiting: collections.deque[bytes | None] = collections.deque()
        self._waiting_bytes = 0
        self._changed = threading.Condition()
        self.broken = False   # nothing more can be sent
        self._thread = threading.Thread(target=self._run, name="send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting:
                    self._changed.wait()
                blob = self._waiting.popleft()
                if blob is None:
                    return
                self._waiting_bytes -= len(blob)
                self._changed.notify_all()
            try:
                self._out.write(blob)
                self._out.flush()
            except OSError:   # BrokenPipeError above all: the daemon is gone or stopped reading
                self._break()
                return
            except BaseException:   # a bug: said on stderr, and the reading thread must not wait for ever
                self._break()
                raise

    def _break(self) -> None:
        with self._changed:
            self.broken = True
            self._changed.notify_all()

    def put(self, kind: str, payload: Any) -> None:
        """Queue a message; waits while the queue is full. Raises BrokenPipeError once sending failed."""
        self._put(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))

    def _put(self, blob: bytes | None) -> None:
        size = len(blob) if blob is not None else 0
        with self._changed:
            while not self.broken and self._waiting and (
                    len(self._waiting) >= AHEAD_BATCHES or self._waiting_bytes + size > AHEAD_BYTES):
                self._changed.wait()
            if self.broken:
                raise BrokenPipeError("the daemon stopped reading")
            self._waiting.append(blob)
            self._waiting_bytes += size
            self._changed.notify_all()

    def close(self) -> None:
        """Wait until everything queued is sent, or sending failed."""
        try:
            self._put(None)
        except BrokenPipeError:
            return
        self._thread.join()


class _HeadStart:
    """In the helper: a thread that reads a mailbox ahead (bridge.prepare.read) until stopped."""

    def __init__(self, hint: ReadAhead) -> None:
        self.hint = hint
        # By UID: read, or fetched but not yet read when the job came (it reads those).
        self.found: dict[int, Prepared | FetchedMail] = {}
        self.session: ReadOnlySession | None = None
        self.uidvalidity = 0
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from .prepare import read
        from .rawimap import ReadOnlySession

        try:
            imap = self.hint.imap
            self.session = ReadOnlySession(imap)
            self.uidvalidity = self.session.examine(imap.folder)
            after = self.hint.after_uid if self.uidvalidity == self.hint.uidvalidity else 0
            uids = self.session.uids_between(after + 1, _MAX_UID)
            size = imap.batch_size
            if len(uids) <= READ_AHEAD_MIN_BATCHES * size:
                self.session.close()   # the daemon reads this little itself: no login kept for nothing
                self.session = None
                return
            held = 0   # about the memory what was read takes: mail of MBs each must not fill it
            for start in range(0, min(len(uids), AHEAD_BATCHES * size), size):
                if self._stop.is_set() or held >= AHEAD_BYTES:
                    return
                for item in self.session.fetch(uids[start:start + size], imap.max_message_bytes):
                    self.found[item.uid] = item if self._stop.is_set() else read(self.hint.prepare, item)
                    held += 3 * len(item.raw)   # prepared, a message holds its text twice more
        except Exception:  # noqa: BLE001 - a head start only: the job does its own reading
            self.failed = True

    def _halt(self) -> bool:
        """Stop the thread; False when it is stuck on the server (its session is then cut)."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(HEAD_START_STOP_SECONDS)
            if self._thread.is_alive():
                self.failed = True
                if self.session is not None:
                    self.session.imap.shutdown()   # wakes the thread's read with an error
        return not self._thread.is_alive()

    def take(self, job: ReaderJob) -> "tuple[ReadOnlySession | None, dict[int, Prepared | FetchedMail]]":
        """Stop, and hand over the session and what was read when they are what the job reads."""
        session = self.session if self._halt() else None
        usable = (session is not None and not self.failed and _mailbox(self.hint.imap) == _mailbox(job.imap)
                  and self.uidvalidity == job.uidvalidity and self.hint.prepare == job.prepare)
        if usable and session is not None:
            # A session shows only the mail announced to it: EXAMINE again, so it sees what came
            # while it read (a FETCH of a UID it has not seen answers nothing).
            try:
                usable = session.examine(job.imap.folder) == job.uidvalidity
            except Exception:  # noqa: BLE001 - then the job starts afresh
                usable = False
        if usable:
            self.session = None   # the job's now
            return session, self.found
        self.close()
        return None, {}

    def close(self) -> None:
        if self.session is not None:
            if self._halt():
                self.session.close()
            self.session = None


def run_job(job: ReaderJob, out: IO[bytes], head_start: _HeadStart | None = None) -> None:
    """The helper's work: fetch and prepare batch after batch, while a thread sends them in order
    (reading waits only when ``AHEAD_BATCHES`` are waiting for the daemon)."""
    session, found = head_start.take(job) if head_start is not None else (None, {})
    sender = _Sender(out)
    try:
        _read_job(job, session, found, sender)
    finally:
        sender.close()


def _read_job(job: ReaderJob, session: "ReadOnlySession | None", found: "dict[int, Prepared | FetchedMail]",
              sender: _Sender) -> None:
    from .rawimap import ReadOnlySession

    used = 0
    try:
        folder, size = job.imap.folder, job.imap.batch_size
        if session is None:
            session = ReadOnlySession(job.imap)
            uidvalidity = session.examine(folder)
            if uidvalidity != job.uidvalidity:
                sender.put("error", f"UIDVALIDITY of {folder} changed ({job.uidvalidity} -> {uidvalidity})")
                return
        with session:
            for start in range(0, len(job.uids), size):
                batch = job.uids[start:start + size]
                used += sum(1 for uid in batch if uid in found)
                # Made and pickled here, and not held on to while the next batch is read.
                sender.put("batch", (batch[-1], _read_batch(job, session, batch, found)))
        sender.put("done", used)
    except BrokenPipeError:
        pass  # the daemon is gone or stopped listening: nothing to report to
    except Exception as exc:  # noqa: BLE001 - report any failure; the ingest thread takes over
        try:
            sender.put("error", f"{type(exc).__name__}: {exc}")
        except BrokenPipeError:
            pass


def _read_batch(job: ReaderJob, session: "ReadOnlySession", batch: tuple[int, ...],
                found: "dict[int, Prepared | FetchedMail]") -> "list[Prepared]":
    """One batch, in UID order: what the head start read (taken out of ``found``), the rest fetched."""
    from .imap import ImapError
    from .prepare import FetchedMail, read

    unread = [uid for uid in batch if uid not in found]
    fetched = {item.uid: read(job.prepare, item) for item in session.fetch(unread, job.prepare.max_message_bytes)}
    absent = [uid for uid in batch if uid not in found and uid not in fetched]
    if absent and set(absent) & set(session.uids_between(min(absent), max(absent))):
        # Never pass over mail the server still lists: the daemon would move its
        # checkpoint past it. It fetches this batch again itself.
        raise ImapError(f"the server returned nothing for UIDs it lists ({len(absent)} of them)")
    # In UID order; a UID the server no longer has (expunged) is in neither.
    prepared = []
    for uid in batch:
        if uid in found:
            done = found.pop(uid)
            prepared.append(read(job.prepare, done) if isinstance(done, FetchedMail) else done)
        elif uid in fetched:
            prepared.append(fetched[uid])
    return prepared


def main() -> None:
    """``python -m bridge.reader``: the job arrives pickled on stdin, batches leave pickled on stdout."""
    # The daemon decides when to stop; a terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import gctune

    gctune.hold()
    from . import prepare, rawimap  # noqa: F401 - imported before the job comes: what a spare helper is for

    gctune.settle()
    # Nothing within the time, or the pipe closed: a spare nobody needed.
    message = _read_message(sys.stdin.fileno(), SPARE_IDLE_SECONDS)
    head_start = None
    if isinstance(message, ReadAhead):
        head_start = _HeadStart(message)
        message = _read_message(sys.stdin.fileno(), SPARE_IDLE_SECONDS)
    try:
        if isinstance(message, ReaderJob):
            run_job(message, sys.stdout.buffer, head_start)
    finally:
        if head_start is not None:
            head_start.close()


def _spawn() -> "subprocess.Popen[bytes]":
    """A helper process, waiting for its job on stdin. Raises OSError when none can be started."""
    # A fresh interpreter (not fork: the daemon has threads, and a forked
    # child could inherit a held lock), found the same way as this package.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # -P: never import from the working directory (under systemd a folder the service can write to).
    proc = subprocess.Popen([sys.executable, "-P", "-m", "bridge.reader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, close_fds=True)
    _widen(proc.stdout)
    return proc


# The pipe the batches come through: Linux's largest for anyone (fs.pipe-max-size), instead of 64 KiB.
# A batch is megabytes; the fewer times each side waits for the other, the better.
PIPE_BYTES = 1024 * 1024


def _widen(pipe: IO[bytes] | None) -> None:
    """Make ``pipe`` hold ``PIPE_BYTES``, where the system lets us; otherwise it stays as it is."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)   # Linux only
    if pipe is None or setsize is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), setsize, PIPE_BYTES)
    except OSError:   # EPERM: fs.pipe-max-size is set lower here; the default pipe works, a little slower
        pass


def prestart() -> None:
    """Start the spare helper now, if there is none (``mailbridge run``, before its heavy imports)."""
    global _spare
    with _spare_lock:
        if _spare is not None:
            return
        try:
            _spare = (_spawn(), time.monotonic(), None)
        except OSError as exc:   # no process to be had now; the first backlog tries again
            log.debug("no spare backlog reader: %s", exc)


def give_head_start(hint: ReadAhead) -> None:
    """Let the spare helper start reading ``hint``'s mailbox while the daemon starts (once)."""
    global _spare
    with _spare_lock:
        if _spare is None or _spare[2] is not None:
            return
        process, started, _ = _spare
        assert process.stdin is not None
        try:
            _write_message(process.stdin, hint)
        except OSError:
            return   # it died; whoever takes it finds out
        _spare = (process, started, hint)


def spare_reads_ahead(imap: ImapSettings) -> bool:
    """Whether the spare helper has a head start on this mailbox (then it is best given all the backlog)."""
    with _spare_lock:
        return _spare is not None and _spare[2] is not None and _mailbox(_spare[2].imap) == _mailbox(imap)


def _take_spare() -> "tuple[subprocess.Popen[bytes], ReadAhead | None] | None":
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is None:
        return None
    process, started, hint = spare
    if process.poll() is None and time.monotonic() - started < _SPARE_TAKE_SECONDS:
        return process, hint
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
        spare = _take_spare()
        self.process = spare[0] if spare else _spawn()
        # Whether it has read ahead in this mailbox (what it read is used only if it is the job's).
        self.ahead = spare is not None and spare[1] is not None and _mailbox(spare[1].imap) == _mailbox(job.imap)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._out = self.process.stdout
        self._finished = False
        self.used_head_start = 0   # messages it had read before the job came (known at the end)
        try:
            _write_message(self.process.stdin, job)
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
                self.used_head_start = int(payload or 0)
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
    # Run as bridge.reader, not __main__: the messages that come pickled name that module's classes.
    from bridge.reader import main as _main

    _main()
