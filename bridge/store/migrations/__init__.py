"""Alembic's migration scripts for mailbridge's schema: ``env.py``, ``script.py.mako``, ``versions/``.

Run through ``bridge.store.schema`` (``mailbridge db upgrade``), never with an alembic.ini.
To add a revision: ``scripts/new-migration "what changes"`` (docs/architecture.md, "Changing the schema").
"""
