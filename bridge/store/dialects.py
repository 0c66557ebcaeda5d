"""The database's own INSERT, for ``ON CONFLICT`` clauses (SQLite's and PostgreSQL's are the same), the
race-free "insert, or update the row that is there" built on it, and a claim's ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import Select, Table
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import FromClause

_S = TypeVar("_S", bound=Select[Any])

UPSERT_DIALECTS = ("sqlite", "postgresql")


def dialect_insert(dialect: str, table: Table) -> Any:
    """``sqlalchemy.dialects.<dialect>.insert(table)``: an INSERT that can say ``ON CONFLICT``."""
    return _module(dialect).insert(table)


@functools.cache
def _module(dialect: str) -> ModuleType:
    # Imported on first use, not at start: a daemon on SQLite need not load PostgreSQL's
    # dialect and its driver modules (about 0.1 s of start-up), nor the other way round;
    # the engine has loaded its own already.
    if dialect not in UPSERT_DIALECTS:
        raise ValueError(f"no ON CONFLICT insert for the database {dialect!r}; mailbridge supports "
                         f"{' and '.join(UPSERT_DIALECTS)}")
    return importlib.import_module(f"sqlalchemy.dialects.{dialect}")


def upsert(conn: Connection, table: Table, values: Mapping[str, Any], keys: Sequence[str],
           update: Mapping[str, Any] | None = None) -> int:
    """Insert ``values``; where a row with the same ``keys`` (a unique constraint) exists, set ``update``
    on it instead, or leave it as it is when ``update`` is empty. Returns how many rows it wrote (0 or 1).

    One statement, so it is safe where several daemons share one database: a "select, then
    insert if missing" lets two of them both find nothing and then both insert, and the second
    one's unique violation aborts its whole transaction on PostgreSQL.
    """
    statement = dialect_insert(conn.dialect.name, table).values(**values)
    statement = (statement.on_conflict_do_update(index_elements=list(keys), set_=dict(update)) if update
                 else statement.on_conflict_do_nothing(index_elements=list(keys)))
    return int(conn.execute(statement).rowcount)


def skip_locked(query: _S, conn: Connection, of: FromClause | None = None) -> _S:
    """``query`` with ``FOR UPDATE SKIP LOCKED`` (``FOR UPDATE OF of``, when given) on PostgreSQL, else ``query``.

    A claim's read: the rows it returns stay locked until its transaction ends, and another
    daemon's claim skips them instead of waiting for them (only to find them taken). SQLite
    has no row locks (one writer at a time) and no such clause.
    """
    if conn.dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=True, of=of)
