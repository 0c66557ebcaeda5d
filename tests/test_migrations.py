"""Schema migrations, on SQLite and on the real PostgreSQL: the previous release's database upgraded with
every row kept, models and migrations that agree, refusals that say what to do, and the migration lock.

The previous release's database is made from tests/data/schema_previous_release.*.sql,
the DDL that release's create_all ran (commit 6d668bb), never from its code.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from bridgekit import insert_order, postgres_database, wait_until
from sqlalchemy import (Boolean, DateTime, Integer, LargeBinary, MetaData, String, create_engine, inspect, select,
                        text)
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bridge import store
from bridge.cli.command import main
from bridge.sandbox import config_toml
from bridge.store import schema
from bridge.store.engine import open_database, schema_state, upgrade_database
from bridge.store.errors import SchemaNotCurrent

HEAD = schema.head_revision()   # this mailbridge's newest revision

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
TOKEN_SECRET = "5e" * 32   # the reply-token key the previous release generated and kept in schema_info
ROWS_PER_TABLE = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mailbridge.db"
        return
    with postgres_database() as pg:
        yield pg


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def mailbridge(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """Run ``mailbridge -c CONFIG ARGS...`` in this process (start-up of a new one costs seconds under load)."""
    def run(config: Path, *args: str) -> Ran:
        code = main(["-c", str(config), *args])
        out, err = capsys.readouterr()
        return Ran(code, out, err)
    return run


def write_config(tmp_path: Path, url: str) -> Path:
    """A configuration for ``url``; the commands run here never connect to its mail servers."""
    (tmp_path / "imap-password").write_text("unused\n")
    path = tmp_path / "mailbridge.toml"
    path.write_text(config_toml(database=url, seller="seller@acme.example", staff="support@acme.example",
                                imap_port=9, smtp_port=9, imap_password_file="imap-password"))
    return path


@contextmanager
def plain(url: str) -> Iterator[Engine]:
    """An engine without mailbridge's schema rule, as a tool outside mailbridge would open the database."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def make_previous_release(url: str) -> None:
    """The database as the previous release created it: its DDL, and the schema number it wrote."""
    with plain(url) as engine, engine.begin() as conn:
        ddl = (DATA / f"schema_previous_release.{engine.dialect.name}.sql").read_text()
        driver = conn.connection.driver_connection
        # Both drivers run a script of several statements as it is (psycopg: when given no parameters).
        driver.executescript(ddl) if engine.dialect.name == "sqlite" else driver.execute(ddl)  # type: ignore[union-attr]
        conn.execute(text("INSERT INTO schema_info (key, value) VALUES ('schema_version', '1')"))


def value_for(column: Any, table: str, n: int, ids: dict[str, list[int]]) -> Any:
    """A distinct value of ``column``'s type for row ``n``; a foreign key names a row of its table."""
    for fk in column.foreign_keys:
        return ids[fk.column.table.name][n % len(ids[fk.column.table.name])]
    kind = column.type
    if isinstance(kind, Boolean):
        return n % 2 == 0
    if isinstance(kind, Integer):
        return 1000 * n + len(column.name)
    if isinstance(kind, DateTime):
        return NOW - timedelta(days=n, minutes=len(column.name))
    if isinstance(kind, LargeBinary):
        return f"From: b{n}@x\r\n\r\n{table} {column.name} \u2713".encode() + bytes(range(256))
    if isinstance(kind, String):
        return f"{table}.{column.name} #{n} \u00fcml\u00e4ut \u2713"
    raise AssertionError(f"no test value for {table}.{column.name} ({kind!r})")


def fill_every_table(url: str) -> list[str]:
    """Rows in every table of the database (reflected, so every column is given a value); the tables' names."""
    meta = MetaData()
    ids: dict[str, list[int]] = {}
    with plain(url) as engine, engine.begin() as conn:
        meta.reflect(conn)
        for table in meta.sorted_tables:   # parents first: foreign keys name rows that exist
            ids[table.name] = []
            if table.name == "schema_info":
                conn.execute(table.insert().values(key="token_secret", value=TOKEN_SECRET))
                continue
            for n in range(ROWS_PER_TABLE):
                values = {c.name: value_for(c, table.name, n, ids) for c in table.columns
                          if not (c.primary_key and c.name == "id")}   # ids come from the database, as in use
                key = conn.execute(table.insert().values(**values)).inserted_primary_key
                ids[table.name].append(key[0] if key else n)
    assert all(ids[name] for name in ids if name != "schema_info")
    return sorted(ids)


def snapshot(url: str, tables: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of ``tables``, in the columns they had then."""
    meta = MetaData()
    with plain(url) as engine, engine.begin() as conn:
        meta.reflect(conn, only=tables)
        return {name: [dict(r._mapping) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
                for name, table in meta.tables.items()}


def table_names(url: str) -> set[str]:
    with plain(url) as engine:
        return set(inspect(engine).get_table_names())


def differences(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models (empty: they agree)."""
    with plain(url) as engine, engine.connect() as conn, warnings.catch_warnings():
        # SQLite's reflection cannot read the expression index (schema.compared leaves it out).
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
        return list(compare_metadata(MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": schema.compared}), SQLModel.metadata))


def migrate(url: str, revision: str) -> None:
    """Run the migrations themselves (not create_all) up or down to ``revision``."""
    with plain(url) as engine, engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        config = schema.alembic_config(conn)
        if revision == "base" or (current and current > revision):
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def test_the_previous_release_is_upgraded_with_every_row_kept(tmp_path: Path, url: str,
                                                              mailbridge: Callable[..., Ran]) -> None:
    make_previous_release(url)
    tables = fill_every_table(url)
    assert len(tables) == 9
    before = snapshot(url, tables)
    config = write_config(tmp_path, url)

    # The daemon (and every command but db) refuses, naming the command that fixes it.
    refused = subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), "run", "--once"],
                             capture_output=True, text=True, timeout=300)   # as an operator or systemd starts it
    assert refused.returncode == 2
    assert "made by a mailbridge from before schema migrations" in refused.stderr
    assert f"then run: mailbridge db upgrade -c {config}" in refused.stderr
    assert mailbridge(config, "status").returncode == 2
    current = mailbridge(config, "db", "current")
    assert current.returncode == 1, current.stderr
    assert "revision 0001" in current.stdout
    assert snapshot(url, tables) == before          # refusing touched nothing

    upgraded = mailbridge(config, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "made before schema migrations" in upgraded.stdout
    assert f"recorded as 0001 and upgraded to {schema.head_revision()}" in upgraded.stdout
    assert "ran revision 0002: Orders, their items and feedback requests" in upgraded.stdout

    after = snapshot(url, tables)
    # Every row of every table survived as it was, but the pre-migration schema number,
    # raised so that the previous release refuses the upgraded database.
    assert before["schema_info"] == [{"key": "schema_version", "value": "1"},
                                     {"key": "token_secret", "value": TOKEN_SECRET}]
    before["schema_info"][0]["value"] = "2"
    assert after == before
    assert sum(map(len, after.values())) == 8 * ROWS_PER_TABLE + 2
    assert differences(url) == []                   # the upgraded schema is the models'
    assert schema_state(url).status == "current"
    assert mailbridge(config, "db", "current").returncode == 0
    again = mailbridge(config, "db", "upgrade")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    # The daemon's store works on it, with the rows it had.
    engine = open_database(url)
    assert store.token_secret(engine, None) == TOKEN_SECRET.encode()   # the same reply-token key: old tokens verify
    with engine.begin() as conn:
        store.enqueue(conn, account="acme", message_id="new@x", purpose="staff_alert", audience="staff",
                      envelope_from="b@x", recipients=("s@x",), subject="s", raw=b"r", now=NOW)
        claimed = store.claim_due(conn, "acme", "worker-1", NOW)
        assert claimed is not None and claimed.message_id == "new@x"
    insert_order(engine, "111-0000000-0000001", now=NOW)
    with engine.begin() as conn:
        assert store.schedule_request(conn, "acme", "111-0000000-0000001", "k3@marketplace.amazon.com", NOW, NOW)
    engine.dispose()
    status = mailbridge(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"feedback"' in status.stdout


def test_models_and_migrations_agree(url: str) -> None:
    """Guards every schema change: the migrations from an empty database build exactly the models' tables,
    and create_all (a new database) is recorded at the same head. A model changed without a revision fails here:
    scripts/new-migration writes it."""
    migrate(url, "head")
    assert differences(url) == []
    assert schema_state(url).status == "current"
    migrate(url, "base")                               # the downgrades run too
    assert table_names(url) == {"alembic_version"}
    migrate(url, "head")
    assert differences(url) == []


def test_a_new_database_is_created_at_head(url: str) -> None:
    open_database(url).dispose()
    state = schema_state(url)
    assert (state.status, state.revision) == ("current", schema.head_revision())
    assert differences(url) == []
    with plain(url) as engine, engine.begin() as conn:
        assert conn.execute(select(store.INFO.c.value).where(store.INFO.c.key == "schema_version")).scalar() == "2"


def version_table(url: str) -> tuple[object, ...]:
    """Alembic's version table as the database describes it: columns, primary key, rows."""
    with plain(url) as engine, engine.connect() as conn:
        found = inspect(conn)
        columns = [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns("alembic_version")]
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        return columns, found.get_pk_constraint("alembic_version"), rows


def test_a_new_database_records_its_revision_as_alembic_does(url: str) -> None:
    """A new database is recorded at head without Alembic (schema.VERSION): the same table Alembic's stamp makes,
    which Alembic then reads and changes."""
    open_database(url).dispose()
    ours = version_table(url)
    with plain(url) as engine, engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        command.stamp(schema.alembic_config(conn), "head")
    assert ours == version_table(url)
    assert ours[2] == [HEAD]
    migrate(url, "0001")                               # Alembic's own downgrade runs on it
    assert schema_state(url).revision == "0001"


def test_migrations_form_one_line() -> None:
    """One head, and every revision numbered in order: two branches merged each with a new revision must be
    renumbered (docs/architecture.md, "Changing the schema")."""
    numbers = [revision.id for revision in schema.revisions()]
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]
    assert [revision.follows for revision in schema.revisions()] == [None, *numbers[:-1]]
    assert all(revision.doc for revision in schema.revisions())
    assert numbers[-1] == schema.head_revision()
    assert set(schema.UNVERSIONED) <= set(numbers)


def _sqlite_file(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mailbridge.db"


def behind(url: str) -> None:
    migrate(url, "0001")


def newer(url: str) -> None:
    open_database(url).dispose()
    with plain(url) as engine, engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))


def foreign(url: str) -> None:
    with plain(url) as engine, engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)"))


def main_before_migrations(url: str) -> None:
    """What this project's main made until migrations came: revision 0002's tables, no alembic_version."""
    migrate(url, "0002")
    with plain(url) as engine, engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))


@pytest.mark.parametrize(("make", "said", "upgradable", "upgrade_says"), [
    (behind, f"has schema revision 0001, older than this mailbridge's {HEAD}; back it up, then run: "
             "mailbridge db upgrade -c ", True, f"upgraded from revision 0001 to {HEAD}"),
    (newer, f"has schema revision 9999, which this mailbridge (newest revision {HEAD}) does not know: a newer "
            "mailbridge upgraded it", False, None),
    (foreign, "has tables that match no mailbridge schema", False, None),
    (main_before_migrations, "(its tables are those of revision 0002); back it up, then run: mailbridge db upgrade",
     True, f"recorded as 0002 and upgraded to {HEAD}"),
])
def test_a_schema_other_than_head_is_refused_with_what_to_do(tmp_path: Path, make: Any, said: str,
                                                             upgradable: bool, upgrade_says: str | None,
                                                             mailbridge: Callable[..., Ran]) -> None:
    url = _sqlite_file(tmp_path)
    make(url)
    config = write_config(tmp_path, url)
    with pytest.raises(SchemaNotCurrent) as refused:
        open_database(url, config=config)
    assert said in str(refused.value)
    assert refused.value.upgradable is upgradable
    current = mailbridge(config, "db", "current")
    assert current.returncode == (1 if upgradable else 2)
    upgrade = mailbridge(config, "db", "upgrade")
    if upgrade_says is None:
        assert upgrade.returncode == 2
        assert said in upgrade.stderr
        return
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade_says in upgrade.stdout
    open_database(url, config=config).dispose()
    assert differences(url) == []


def test_db_current_on_an_empty_database_creates_nothing(tmp_path: Path, mailbridge: Callable[..., Ran]) -> None:
    url = _sqlite_file(tmp_path)
    config = write_config(tmp_path, url)
    current = mailbridge(config, "db", "current")
    assert current.returncode == 1
    assert "empty: no tables yet" in current.stdout
    with sqlite3.connect(tmp_path / "mailbridge.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    upgraded = mailbridge(config, "db", "upgrade")
    assert upgraded.returncode == 0 and f"created at revision {HEAD}" in upgraded.stdout


# --- the migration lock on PostgreSQL ----------------------------------------------------------

def wait_for_lock_waiters(url: str, count: int, who: str) -> None:
    """Wait until ``count`` sessions wait for an advisory lock (120 s only bounds a hang)."""
    waiters = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")

    def waiting() -> bool:
        with plain(url) as engine, engine.connect() as conn:
            return int(conn.execute(waiters).scalar_one()) == count

    wait_until(waiting, f"{who} to wait for the lock", timeout=120, interval=0.02)


@pytest.mark.postgres
def test_opening_waits_for_the_migration_lock() -> None:
    """A daemon starting while another holds the lock (creating or upgrading) waits, then finds the schema done."""
    with postgres_database() as url:
        opened: list[Engine] = []
        with plain(url) as holder, holder.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": schema.MIGRATION_LOCK_KEY})
            opener = threading.Thread(target=lambda: opened.append(open_database(url)))
            opener.start()
            wait_for_lock_waiters(url, 1, "open_database")
            assert opener.is_alive() and not opened
            assert schema_state(url).status == "empty"      # nothing created while the lock is held elsewhere
        opener.join(timeout=120)
        assert opened and schema_state(url).status == "current"
        opened[0].dispose()


@pytest.mark.postgres
def test_two_upgrades_started_together_run_once() -> None:
    with postgres_database() as url:
        make_previous_release(url)
        tables = fill_every_table(url)
        before = snapshot(url, tables)
        done: list[str] = []
        with plain(url) as holder, holder.begin() as conn:   # both upgrades start while the lock is taken, then race for it
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": schema.MIGRATION_LOCK_KEY})
            upgraders = [threading.Thread(target=lambda: done.append(upgrade_database(url).action)) for _ in range(2)]
            for upgrader in upgraders:
                upgrader.start()
            wait_for_lock_waiters(url, 2, "both upgrades")
        for upgrader in upgraders:
            upgrader.join(timeout=120)
        assert sorted(done) == ["adopted", "none"]
        after = snapshot(url, tables)
        before["schema_info"][0]["value"] = "2"
        assert after == before
        assert differences(url) == []



def test_a_database_from_before_the_delivery_index_gets_it_on_upgrade(tmp_path: Path) -> None:
    """Revision 0003 writes the orders' expression index by hand (autogenerate cannot compare it)."""
    url = _sqlite_file(tmp_path)
    migrate(url, "0002")
    upgrade_database(url)
    with plain(url) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                    "name = 'ix_orders_account_delivery'").all()


@pytest.mark.postgres
def test_two_daemons_opening_a_new_database_together_create_it_once() -> None:
    """Both wait for the lock; the first creates the schema, the second finds it current (not empty: it reads
    the revision again after the lock) and creates nothing: no 'relation already exists', one schema_version."""
    with postgres_database() as url:
        opened: list[Engine] = []
        with plain(url) as holder, holder.begin() as conn:    # both start while the lock is taken, then race for it
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": schema.MIGRATION_LOCK_KEY})
            openers = [threading.Thread(target=lambda: opened.append(open_database(url))) for _ in range(2)]
            for opener in openers:
                opener.start()
            wait_for_lock_waiters(url, 2, "both daemons")
        for opener in openers:
            opener.join(timeout=120)
        assert len(opened) == 2 and schema_state(url).status == "current"
        with opened[0].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM schema_info WHERE key = 'schema_version'")).scalar_one() == 1
        for engine in opened:
            engine.dispose()
