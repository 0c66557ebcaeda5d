"""The database's own INSERT, for ``ON CONFLICT`` clauses (SQLite's and PostgreSQL's are the same)."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

from sqlalchemy import Table

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
