"""Alembic's environment: run the migrations on the connection ``bridge.store.schema`` hands over.

That connection is already in the transaction holding the migration lock
(``schema.take_migration_lock``), so the whole upgrade commits, or rolls back, as one.
There is no alembic.ini and no offline (``--sql``) mode: ``bridge.store.schema``
builds the configuration.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from bridge.store import models, schema

# Autogenerate compares the database with every table of the models.
target_metadata = SQLModel.metadata
assert models.INFO.metadata is target_metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError("mailbridge's migrations run through bridge.store.schema (mailbridge db upgrade), "
                           "on a connection it opens; scripts/new-migration makes a new revision")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most of a table: batch mode copies it into a new one (Alembic,
        # "Running Batch Migrations for SQLite"). Other databases get plain ALTER statements.
        render_as_batch=True,
        compare_type=True,
        include_object=schema.compared,   # expression indexes are written by hand (schema.compared says why)
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
