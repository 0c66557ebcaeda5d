"""The HMAC key that signs reply tokens, when the config does not give one: made once, kept in ``schema_info``."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.engine import Engine

from bridge.store.dialects import upsert
from bridge.store.models import INFO


def token_secret(engine: Engine, configured: str | None) -> bytes:
    """The HMAC key: the configured one, else one generated once and kept in the database.

    Several daemons starting together on one database all get the same key: each offers
    a new one with ``ON CONFLICT DO NOTHING`` and then reads the one that is there, so
    the first offer kept wins and nobody fails on the unique key.
    """
    if configured:
        return configured.encode("utf-8")
    with engine.begin() as conn:
        upsert(conn, INFO, {"key": "token_secret", "value": secrets.token_hex(32)}, ["key"])
        return str(conn.execute(select(INFO.c.value).where(INFO.c.key == "token_secret")).scalar_one()).encode(
            "ascii")
