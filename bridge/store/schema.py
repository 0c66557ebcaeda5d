"""Which schema the database has, and the one rule for opening it: Alembic migrations shipped in the package.

The migration scripts live in ``bridge/store/migrations`` (``env.py``, ``versions/``)
and ship in the wheel. The rule, applied each time mailbridge opens the database:

- **empty** (no tables): created at the newest revision ("head") in one step,
  ``create_all`` from the models, then ``stamp head``. Alembic's own advice for a new
  database ("Building an Up to Date Database from Scratch" in its cookbook): one
  statement per table, instead of replaying every revision for each new database (every
  test makes several). That create_all and the migrations build the same schema is
  checked by tests/test_migrations.py on SQLite and PostgreSQL.
- **current** (its revision is head): used as it is.
- anything else is refused with what to do. **behind** (an older revision), or
  **unversioned** with the tables of a revision that existed before migrations did (the
  previous release's, see ``UNVERSIONED``): ``mailbridge db upgrade``. **unknown** (a
  revision this code has never heard of: a newer mailbridge upgraded it), or
  unversioned tables that match no revision: refused, nothing touched.

Each of these runs in one transaction that first takes the migration lock: on
PostgreSQL a transaction-level advisory lock (``pg_advisory_xact_lock``: released by
commit or rollback, so it holds behind PgBouncer's transaction pooling, where a session
lock can be left on, or released from, a server connection another client then gets);
on SQLite the database's write lock, which every transaction takes first (BEGIN
IMMEDIATE, engine.py). So two daemons starting together on one new database do not
race: one creates it, the other waits and then finds it current; and an upgrade is
never seen half done.

Alembic is imported only when a database is not at head, or to upgrade it: an ordinary
start (a database at head, or a new one) reads and writes Alembic's version table itself
(``VERSION``) and knows the head from the revisions' file names (``head_revision``).
Importing Alembic and loading its scripts cost more than the rest of opening the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, create_engine, inspect, select, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from bridge.store import models
from bridge.store.errors import DatabaseError, SchemaNotCurrent

if TYPE_CHECKING:   # Alembic itself is imported where it is used (see the module's docstring)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = "bridge.store:migrations"   # Alembic's script_location, as a package resource
# The advisory lock's key on PostgreSQL: any 64-bit number no other application on the
# same database uses for its own locks. These are the bytes of "mailbrdg".
MIGRATION_LOCK_KEY = int.from_bytes(b"mailbrdg", "big")
# Revisions whose tables a database without an alembic_version table may have, because a
# mailbridge made them with create_all before migrations existed: 0001 is the previous
# release's (commit 6d668bb); 0002 is what main made after orders and feedback requests
# came, until this change. New revisions never belong here: they come with migrations.
UNVERSIONED = ("0001", "0002")

Status = Literal["empty", "current", "behind", "unknown", "unversioned"]
Action = Literal["created", "upgraded", "adopted", "none"]
Tables = Mapping[str, frozenset[str]]   # table name -> its column names

# Alembic's version table as Alembic makes it (alembic.runtime.migration.MigrationContext,
# default options): one row, the revision the database is at. Its own MetaData: it is not
# one of the models, and autogenerate leaves it out of its comparisons.
VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
# A revision's file in versions/: its four-digit id, then what it changes (scripts/new-migration).
REVISION_FILE = re.compile(r"(\d{4})_\w+\.py")


@dataclass(frozen=True)
class SchemaState:
    """What a database holds: ``revision`` from alembic_version (None when it has none)."""

    status: Status
    revision: str | None
    head: str
    matches: str | None = None   # unversioned: the revision whose tables it has, else None

    @property
    def upgradable(self) -> bool:
        return self.status == "behind" or (self.status == "unversioned" and self.matches is not None)


@dataclass(frozen=True)
class Upgrade:
    """What ``upgrade`` did: ``action`` is created | upgraded | adopted (unversioned, stamped, upgraded) | none."""

    action: Action
    before: SchemaState
    revision: str
    ran: tuple[Revision, ...] = ()   # the revisions run, oldest first


def _expression_indexes() -> frozenset[str]:
    return frozenset(str(index.name) for table in SQLModel.metadata.tables.values() for index in table.indexes
                     if not all(isinstance(e, Column) for e in index.expressions))


def compared(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's ``include_object`` for autogenerate and the models-versus-migrations test.

    Indexes on an expression (``ix_orders_account_delivery``) are left out: Alembic cannot
    reflect them on SQLite, and renders them differently on PostgreSQL. The revision that
    adds one writes it by hand (``op.create_index`` with ``sa.text``), and the test of the
    query that needs it (tests/test_feedback_store.py, EXPLAIN QUERY PLAN) shows it is there.
    """
    return not (type_ == "index" and name in _expression_indexes())


def alembic_config(conn: Connection) -> Config:
    """Alembic's configuration for mailbridge's migrations, run on ``conn`` (and in its transaction)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = conn   # env.py runs the migrations on it
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return ScriptDirectory.from_config(config)


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision: the highest number among the revisions' files, found without Alembic.

    Revisions are numbered in one line, each the one before plus one, and each file is named
    after its number; tests/test_migrations.py checks that Alembic finds the same head.
    """
    folder = resources.files("bridge.store.migrations").joinpath("versions")
    numbers = [m.group(1) for f in folder.iterdir() if (m := REVISION_FILE.fullmatch(f.name))]
    assert numbers, "bridge/store/migrations/versions has no revisions"
    return max(numbers)


@dataclass(frozen=True)
class Revision:
    id: str
    follows: str | Sequence[str] | None   # down_revision: the one before (several for a merge)
    doc: str                              # the first line of its docstring


def revisions() -> list[Revision]:
    """Every revision, oldest first."""
    return [Revision(script.revision, script.down_revision, script.doc)
            for script in reversed(list(_scripts().walk_revisions()))]


def take_migration_lock(conn: Connection) -> None:
    """Wait for, then hold until this transaction ends, the right to create or change the schema."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # SQLite: this transaction began with BEGIN IMMEDIATE (engine.py) and holds the write lock already.


def table_columns(conn: Connection) -> dict[str, frozenset[str]]:
    """Every table of the database but Alembic's own, with its column names."""
    inspector = inspect(conn)
    return {name: frozenset(c["name"] for c in inspector.get_columns(name))
            for name in inspector.get_table_names() if name != VERSION.name}


@lru_cache(maxsize=None)
def tables_at(revision: str) -> Tables:
    """The tables and columns the migrations make up to ``revision``, built in a scratch in-memory SQLite.

    Only names are compared (not types), so the answer holds on PostgreSQL too.
    """
    from alembic import command

    scratch = create_engine("sqlite://")
    try:
        with scratch.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
            return table_columns(conn)
    finally:
        scratch.dispose()


def stored_revisions(conn: Connection) -> list[str]:
    """The rows of Alembic's version table: one revision; none when the table is missing or empty."""
    if not inspect(conn).has_table(VERSION.name):
        return []
    return list(conn.execute(select(VERSION.c.version_num)).scalars())


def read_state(conn: Connection) -> SchemaState:
    head = head_revision()
    stored = stored_revisions(conn)
    if stored == [head]:
        return SchemaState("current", head, head)
    if stored:
        revision: str | None    # Alembic's answer may be None; SchemaState.revision allows it
        if len(stored) == 1:
            revision = stored[0]
        else:   # Alembic says what is wrong with a table of several (its error names them)
            from alembic.runtime.migration import MigrationContext

            revision = MigrationContext.configure(conn).get_current_revision()
        known = {known.id for known in revisions()}
        return SchemaState("behind" if revision in known else "unknown", revision, head)
    tables = table_columns(conn)
    if not tables:
        return SchemaState("empty", None, head)
    matches = next((r for r in UNVERSIONED if tables_at(r) == tables), None)
    return SchemaState("unversioned", None, head, matches)


def create_at_head(conn: Connection) -> None:
    """Make every table of the models in an empty database and record it as head."""
    SQLModel.metadata.create_all(conn)
    conn.execute(models.INFO.insert().values(key="schema_version", value=str(models.SCHEMA_VERSION)))
    # What Alembic's "stamp head" writes into an empty database.
    VERSION.create(conn, checkfirst=True)   # Alembic's downgrade to base leaves it, empty
    conn.execute(VERSION.insert().values(version_num=head_revision()))


def open_schema(conn: Connection, where: str, upgrade_command: str) -> SchemaState:
    """Check the schema before use: create an empty database at head, else refuse anything but head.

    ``where`` names the database and ``upgrade_command`` the command to run, for the message.
    """
    take_migration_lock(conn)
    state = read_state(conn)
    if state.status == "empty":
        create_at_head(conn)
    elif state.status != "current":
        raise SchemaNotCurrent(refusal(state, where, upgrade_command), upgradable=state.upgradable)
    return state


def upgrade(conn: Connection, where: str) -> Upgrade:
    """Bring the database to head, in ``conn``'s transaction: all of it, or (on an error) none of it."""
    from alembic import command

    take_migration_lock(conn)
    state = read_state(conn)
    config = alembic_config(conn)
    broken_before = _broken_references(conn)
    if state.status == "empty":
        create_at_head(conn)
        action: Action = "created"
    elif state.status == "current":
        action = "none"
    elif state.status == "behind":
        command.upgrade(config, "head")
        action = "upgraded"
    elif state.status == "unversioned" and state.matches is not None:
        command.stamp(config, state.matches)
        command.upgrade(config, "head")
        action = "adopted"
    else:
        raise SchemaNotCurrent(refusal(state, where, "mailbridge db upgrade"), upgradable=False)
    broken = _broken_references(conn) - broken_before
    if broken:
        table, row, parent, _ = sorted(broken)[0]
        raise DatabaseError(f"upgrading {where} would leave {len(broken)} broken references (first: table {table}, "
                            f"row {row}, to {parent}); nothing was changed")
    start = state.revision or state.matches
    ids = [r.id for r in revisions()]
    ran = revisions()[ids.index(start) + 1:] if action in ("upgraded", "adopted") and start else []
    return Upgrade(action, state, head_revision(), tuple(ran))


def _broken_references(conn: Connection) -> set[tuple[str, int, str, int]]:
    # On SQLite migrations run with foreign keys off, as SQLite's own procedure for
    # rebuilding a table wants (https://sqlite.org/lang_altertable.html, "Making Other
    # Kinds Of Table Schema Changes"): a batch rebuild of a table that others refer to must
    # neither cascade nor fail halfway. So the upgrade checks, before its commit, that it
    # broke no reference (PostgreSQL checks every statement itself).
    if conn.dialect.name != "sqlite":
        return set()
    return {tuple(row) for row in conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()}


def refusal(state: SchemaState, where: str, upgrade_command: str) -> str:
    """Why ``state`` cannot be used as it is, and what to do: one line."""
    then_run = f"back it up, then run: {upgrade_command}"
    if state.status == "behind":
        return (f"the database {where} has schema revision {state.revision}, older than this mailbridge's "
                f"{state.head}; {then_run}")
    if state.status == "unknown":
        return (f"the database {where} has schema revision {state.revision}, which this mailbridge (newest "
                f"revision {state.head}) does not know: a newer mailbridge upgraded it; run that version or a newer "
                "one, or restore the backup taken before the upgrade")
    if state.status == "unversioned" and state.matches is not None:
        return (f"the database {where} was made by a mailbridge from before schema migrations (its tables are "
                f"those of revision {state.matches}); {then_run}")
    if state.status == "unversioned":
        return (f"the database {where} has tables that match no mailbridge schema, and no alembic_version table: "
                "it is not a mailbridge database, or it was changed by hand; point [database] url at mailbridge's "
                "database (or an empty one)")
    return f"the database {where} is {state.status} at revision {state.revision}"

