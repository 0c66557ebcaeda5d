"""One daemon per SQLite database: a lock held for the life of ``mailbridge run``, refused to a second one.

SQLite is the database of one machine and one daemon. Two daemons on one file would
both ingest the same accounts and both send: the unique keys keep rows from being
recorded twice, but two IMAP sessions would move and flag the same mail, and the
operator would not learn that anything is wrong. So ``mailbridge run`` (and ``run
--once``, which ingests and sends just the same) takes an exclusive ``flock`` on a
file beside the database, ``DB.lock``, before it opens the database, and holds it until
the process ends; a second one is refused at once with what to do. Commands that only
read or act on single rows (``status``, ``outbox retry``, ``check-config``...) do not
take it: SQLite's own locking keeps them safe beside a running daemon.

Why flock on a file of our own, not the database file or a pid file:

- the kernel drops the lock when the process ends however it ends (SIGKILL, a power
  cut), so a lock is never stale and there is nothing to clean up at start;
- SQLite takes POSIX (fcntl) locks on the database file itself, and closing any other
  descriptor of that file in the same process drops them all (the POSIX trap of
  sqlite.org/howtocorrupt.html, section 2.2): the database file is not ours to lock;
- the holder writes its pid into the file, for the message only: the lock, not the
  pid, decides. The file is never deleted: deleting a lock file races with a process
  that has just opened it and would lock a file nobody else can find.

PostgreSQL needs none of this: several daemons on one PostgreSQL database is what it is
for (each account is leased to one of them).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bridge.store.engine import make_folder, sqlite_file
from bridge.store.errors import DatabaseError, DatabaseInUse


class DaemonLock:
    """The held lock: released by :meth:`release` or when the process ends."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the last descriptor of the file drops the flock
            self._fd = None

    def __enter__(self) -> DaemonLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def lock_database(url: str) -> DaemonLock | None:
    """Take the daemon lock of the SQLite database at ``url``; None for PostgreSQL (no lock needed).

    Raises DatabaseInUse, naming the database and the holder's pid, when another process
    holds it; DatabaseError when the lock file cannot be made.
    """
    database = sqlite_file(url)
    if database is None:
        return None
    make_folder(database)
    path = lock_path(database)
    try:
        # O_CLOEXEC is Python's default: a child process never inherits (and so never keeps) the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise DatabaseError(f"cannot open the lock file {str(path)!r} of the database {str(database)!r}: {exc}; "
                            "mailbridge needs to write in the database's folder") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise DatabaseInUse(
            f"another mailbridge daemon{f' (pid {holder})' if holder else ''} runs on {database}; stop it, or give "
            "this configuration its own [database] url; for several daemons on one database use PostgreSQL "
            f"(the lock is held on {path})") from None
    except OSError as exc:
        os.close(fd)
        raise DatabaseError(f"cannot lock {str(path)!r} for the database {str(database)!r}: {exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return DaemonLock(path, fd)


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, if it has (it writes just after locking)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
