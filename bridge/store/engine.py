"""Engine, sessions and schema creation.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so a
committed checkpoint survives power loss as well as a crash: a checkpoint lost
after its staff notification went out would mean a duplicate notification.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from bridge.store import models

log = logging.getLogger(__name__)


class DatabaseError(Exception):
    """Raised when the database cannot be opened or has an unknown schema."""


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


def make_engine(url: str) -> Engine:
    """Create the engine for ``url``; creates the SQLite file's folder if needed."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the folder for the database {path!r}: {exc}; "
                    "set [database] url to a writable location"
                ) from exc
        # hide_parameters: error messages must not carry mail text, addresses or keys into logs.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        # BEGIN IMMEDIATE takes the write lock up front: two writers (ingest and
        # outbox) then wait on busy_timeout instead of failing on lock upgrade.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    else:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    return engine


def init_schema(engine: Engine) -> None:
    """Create missing tables and check the schema version."""
    SQLModel.metadata.create_all(engine)
    # create_all makes the indexes of new tables only: an index added to an existing
    # table (ix_outbox_sent) is made here, once, on a database created before it.
    for index in models.OUTBOX.indexes:
        index.create(engine, checkfirst=True)
    info = models.INFO
    with engine.begin() as conn:
        row = conn.execute(select(info.c.value).where(info.c.key == "schema_version")).first()
        if row is None:
            conn.execute(info.insert().values(key="schema_version", value=str(models.SCHEMA_VERSION)))
        elif int(row[0]) > models.SCHEMA_VERSION:
            raise DatabaseError(
                f"the database has schema version {row[0]}, newer than this mailbridge "
                f"({models.SCHEMA_VERSION}); upgrade mailbridge"
            )


def open_database(url: str) -> Engine:
    engine = make_engine(url)
    try:
        init_schema(engine)
    except DatabaseError:
        raise
    except Exception as exc:  # sqlalchemy raises many kinds; say which database failed
        raise DatabaseError(f"cannot open the database {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    return engine
