"""Engine, SQLite pragmas, and opening the database under the schema rule of ``schema.py``.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so a
committed checkpoint survives power loss as well as a crash: a checkpoint lost
after its staff notification went out would mean a duplicate notification.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine

from bridge.store import leases, schema
from bridge.store.errors import DatabaseError, SchemaNotCurrent
from bridge.store.schema import SchemaState, Upgrade

log = logging.getLogger(__name__)


# A new SQLite database gets 16 KiB pages (SQLite's default is 4 KiB): a message row
# (the buyer's text) and an outbox row (the whole notification) are 4-10 KiB each, which
# on 4 KiB pages spill into chains of overflow pages. With 16 KiB pages they stay in
# their leaf, and SQLite handles a quarter as many pages and WAL frames: recording a
# 5,000-message backlog took about 5% less time and CPU (the bytes written are the
# same). An existing database keeps the page size it was created with.
SQLITE_PAGE_SIZE = 16384
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide where transactions start: pysqlite's
    # implicit BEGIN breaks SAVEPOINT (SQLAlchemy docs, "Serializable isolation /
    # Savepoints / Transactional DDL" for pysqlite).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")   # takes effect only in a new, empty database
    cur.execute("PRAGMA journal_mode=WAL")
    # Checkpoint the WAL after about 4 MiB, whatever the page size (SQLite counts pages:
    # its default of 1000 was 4 MiB with 4 KiB pages), so the WAL file stays as small as before.
    page_size = cur.execute("PRAGMA page_size").fetchone()[0]
    cur.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_CHECKPOINT_BYTES // page_size)}")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_foreign_keys_off(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA foreign_keys=OFF")   # outside any transaction, where SQLite honours it


# The connection pool of a daemon, sized from the accounts it may come to hold: all of its
# configuration's (several daemons share the accounts of one configuration, and when the others
# stop, one holds them all). An account has at most two transactions open at once, its ingest
# thread's and its outbox task's (each runs one at a time); beside them the daemon has at most
# SHARED_CONNECTIONS: the feedback and the reminder timers (each goes through its accounts one
# after the other), a /metrics scrape and the lease keeper: 2 x accounts + 4 at the busiest.
# The pool keeps one connection per account and the shared ones open (an account's ingest and
# outbox seldom write at the same moment) and opens as many again for bursts, closed once
# returned: the busiest moment never waits, with a margin of 4 for what this count missed
# (SQLAlchemy's own default, 5 + 10, was the same for 1 account and for 50). At most
# 2 x (accounts + 4) per daemon: PostgreSQL's max_connections (100 by default) must allow that
# for every daemon sharing the database, or put a pooler (PgBouncer) in front. When the pool is
# exhausted anyway (accounts added by a reload) a worker waits for a connection, 30 s at most.
SHARED_CONNECTIONS = 4


def pool_limits(accounts: int) -> dict[str, int]:
    """SQLAlchemy's QueuePool ``pool_size`` and ``max_overflow`` for a daemon of ``accounts`` accounts."""
    kept = max(accounts, 1) + SHARED_CONNECTIONS
    return {"pool_size": kept, "max_overflow": kept}


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite ``url``; None for any other database, or SQLite in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def make_folder(database: Path) -> None:
    """Create the folder of the SQLite file ``database`` if needed."""
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the folder for the database {str(database)!r}: {exc}; "
            "set [database] url to a writable location"
        ) from exc


#: libpq connection parameters (psycopg passes them on): without them a half-open connection (a peer
#: gone without a FIN, a dropped route) hangs a statement until the kernel gives up, some 15 minutes,
#: far past any lease. A lease renewal or a worker's transaction must fail in seconds instead.
POSTGRES_TIMEOUTS: dict[str, int] = {
    "connect_timeout": 10,          # seconds to connect
    "keepalives": 1,                # an idle connection's peer is probed...
    "keepalives_idle": 10,          # ...after 10 s of silence,
    "keepalives_interval": 3,       # every 3 s,
    "keepalives_count": 3,          # and the connection dropped after 3 unanswered probes
    "tcp_user_timeout": 15_000,     # ms: data sent and not acknowledged for this long drops the connection
}


def make_engine(url: str, *, foreign_keys: bool = True, accounts: int = 1) -> Engine:
    """Create the engine for ``url``, its pool sized for ``accounts``; creates the SQLite file's folder if needed.

    ``foreign_keys=False`` (SQLite only) is for migrations: see ``schema.upgrade``.
    Raises DatabaseError naming ``mailbridge[postgres]`` when the URL is PostgreSQL's and psycopg is missing.
    """
    if url.startswith("sqlite:///"):
        path = sqlite_file(url)
        if path is not None:
            make_folder(path)
        # hide_parameters: error messages must not carry mail text, addresses or keys into logs.
        # (SQLite in memory, for tests only, has a pool of its own kind: one connection per thread.)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True,
                               **(pool_limits(accounts) if path is not None else {}))
        event.listen(engine, "connect", _sqlite_pragmas)
        if not foreign_keys:
            event.listen(engine, "connect", _sqlite_foreign_keys_off)
        # BEGIN IMMEDIATE takes the write lock up front: two writers (ingest and
        # outbox) then wait on busy_timeout instead of failing on lock upgrade.
        # A reader() begins deferred: in WAL mode it reads a snapshot and waits for no writer.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(
            "BEGIN" if conn.get_execution_options().get(_READER) else "BEGIN IMMEDIATE"))
    else:
        require_driver(url)
        given = make_url(url).query   # what the URL sets itself wins
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, **pool_limits(accounts),
                               connect_args={k: v for k, v in POSTGRES_TIMEOUTS.items() if k not in given})
    # After BEGIN (IMMEDIATE): a worker's transaction first checks that its daemon still holds the account.
    event.listen(engine, "begin", leases.fence_on_begin)
    return engine


def require_driver(url: str) -> None:
    """Raise DatabaseError, naming the extra to install, when the driver of ``url`` is missing.

    psycopg is an optional dependency (``mailbridge[postgres]``): a daemon on SQLite does not need it.
    Nothing is connected to.
    """
    try:
        make_url(url).get_dialect().import_dbapi()
    except ModuleNotFoundError as exc:
        if exc.name != "psycopg":
            raise
        raise DatabaseError(
            f"the database {display_url(url)} is PostgreSQL, and its driver, psycopg 3, is not installed; "
            "install mailbridge with its postgres extra: pip install 'mailbridge[postgres]'") from exc


_READER = "mailbridge_reader"


def reader(engine: Engine) -> Engine:
    """``engine`` for transactions that only read (``/metrics`` scrapes): on SQLite they do not take
    the write lock, so they neither wait behind an ingest batch nor hold up a writer."""
    return engine.execution_options(**{_READER: True})


def upgrade_command(config: Path | str | None) -> str:
    """The command that upgrades the database of the configuration file ``config``, to show an operator."""
    return f"mailbridge db upgrade -c {shlex.quote(str(config)) if config else 'FILE'}"


def display_url(url: str) -> str:
    """``url`` as messages show it: without its password."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _said(engine: Engine, doing: str, after: str = "") -> Iterator[None]:
    """SQLAlchemy's and Alembic's many errors as one DatabaseError naming the database; the engine closed."""
    try:
        yield
    except Exception as exc:
        engine.dispose()
        if isinstance(exc, DatabaseError):
            raise
        raise DatabaseError(f"cannot {doing} the database {display_url(str(engine.url))}: {exc}{after}") from exc


def open_database(url: str, *, config: Path | str | None = None, accounts: int = 1) -> Engine:
    """The engine for ``url``, its schema checked: a new, empty database is created at the newest revision.

    ``accounts``: how many accounts the daemon may hold, for the size of its connection pool.

    Raises SchemaNotCurrent, naming ``mailbridge db upgrade -c <config>``, for a schema
    that is behind or unknown; DatabaseError when the database cannot be opened.
    """
    engine = make_engine(url, accounts=accounts)
    with _said(engine, "open"), engine.begin() as conn:
        schema.open_schema(conn, display_url(url), upgrade_command(config))
    return engine


def schema_state(url: str) -> SchemaState:
    """The schema of the database at ``url``, changing nothing (``mailbridge db current``)."""
    engine = make_engine(url)
    with _said(engine, "read"), engine.connect() as conn:
        state = schema.read_state(conn)
    engine.dispose()
    return state


def upgrade_database(url: str) -> Upgrade:
    """Bring the database at ``url`` to the newest revision, in one transaction (``mailbridge db upgrade``)."""
    engine = make_engine(url, foreign_keys=False)
    with _said(engine, "upgrade", "; nothing was changed"), engine.begin() as conn:
        done = schema.upgrade(conn, display_url(url))
    engine.dispose()
    return done


__all__ = ["DatabaseError", "SchemaNotCurrent", "display_url", "make_engine", "open_database", "schema_state",
           "upgrade_command", "upgrade_database"]
