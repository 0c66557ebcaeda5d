"""The HMAC key that signs reply tokens, when the config does not give one: made once, kept in ``schema_info``."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bridge.store.models import INFO


def token_secret(engine: Engine, configured: str | None) -> bytes:
    """The HMAC key: the configured one, else one generated once and kept in the database."""
    if configured:
        return configured.encode("utf-8")
    query = select(INFO.c.value).where(INFO.c.key == "token_secret")
    with engine.begin() as conn:
        row = conn.execute(query).first()
        if row is not None:
            return str(row[0]).encode("ascii")
    try:
        with engine.begin() as conn:
            conn.execute(INFO.insert().values(key="token_secret", value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # several daemons started at once on one database: another one's key won
    with engine.begin() as conn:
        return str(conn.execute(query).scalar_one()).encode("ascii")
