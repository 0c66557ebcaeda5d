"""The newest refresh token of each OAuth2 login, and whether the provider revoked it.

Writes are conditional on the refresh token the caller used (compare and set):
two processes refreshing at once (the daemon and ``check-config --connect``)
never overwrite a newer token with an older one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bridge.store.dialects import upsert
from bridge.store.models import OAUTH2_GRANT


@dataclass(frozen=True)
class GrantState:
    refresh_token: str = field(repr=False)
    seed: str | None
    revoked_at: datetime | None
    revoked_reason: str | None


def grant_state(conn: Connection, grant: str) -> GrantState | None:
    row = conn.execute(select(OAUTH2_GRANT).where(OAUTH2_GRANT.c.grant == grant)).first()
    if row is None:
        return None
    return GrantState(row.refresh_token, row.seed, row.revoked_at, row.revoked_reason)


def seed_grant(conn: Connection, grant: str, account: str, refresh_token: str, seed: str | None,
               now: datetime) -> None:
    """Start (or start again) from a refresh token given by the operator: the file's, or `oauth2 authorize`'s."""
    values = dict(refresh_token=refresh_token, seed=seed, updated_at=now, revoked_at=None, revoked_reason=None)
    upsert(conn, OAUTH2_GRANT, {"grant": grant, "account": account, **values}, ["grant"], values)


def rotate_refresh_token(conn: Connection, grant: str, used: str, new: str, now: datetime) -> bool:
    """Keep ``new`` where ``used`` is still the newest; False when another process rotated it first."""
    return bool(conn.execute(
        OAUTH2_GRANT.update()
        .where(OAUTH2_GRANT.c.grant == grant, OAUTH2_GRANT.c.refresh_token == used)
        .values(refresh_token=new, updated_at=now)).rowcount)


def revoke_grant(conn: Connection, grant: str, used: str, reason: str, now: datetime) -> bool:
    """Mark ``used`` revoked; True only for the call that made the change (one alert, one error)."""
    return bool(conn.execute(
        OAUTH2_GRANT.update()
        .where(OAUTH2_GRANT.c.grant == grant, OAUTH2_GRANT.c.refresh_token == used,
               OAUTH2_GRANT.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)).rowcount)
