"""Who may be written to: buyers, their opt-out, Do-Not-Solicit and bounce state, and account restrictions.

A buyer is one base relay alias per account (``+case`` removed). The policy
check (``bridge.services.guard``) reads the state kept here and decides; the
statements it runs for every outbound message are built once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection

from bridge.store.dialects import dialect_insert, upsert
from bridge.store.models import ACCOUNT_STATE, BUYER, CONV, inserted_id
from bridge.store.times import iso, utc

_BUYERS = select(BUYER.c.alias, BUYER.c.id, BUYER.c.name).where(
    BUYER.c.account == bindparam("account"), BUYER.c.alias.in_(bindparam("aliases", expanding=True)))
_BUYER_INSERT = BUYER.insert()
_BUYER_RENAME = update(BUYER).where(BUYER.c.id == bindparam("buyer_id")).values(name=bindparam("name"))
_CONTACT_STATE = select(BUYER.c.opted_out_at, BUYER.c.do_not_solicit_until).where(
    BUYER.c.account == bindparam("account"), BUYER.c.alias == bindparam("alias"))
_RESTRICTED_UNTIL = select(ACCOUNT_STATE.c.restricted_until).where(ACCOUNT_STATE.c.account == bindparam("account"))


def upsert_buyer(conn: Connection, account: str, marketplace: str, alias: str, name: str | None,
                 now: datetime) -> int:
    """The id of the buyer with this alias, made if new; a changed display name is kept (an empty one is not)."""
    return int(conn.execute(_buyer_upsert(conn.dialect.name), {
        "account": account, "marketplace": marketplace, "alias": alias, "name": name, "created_at": now,
    }).scalar_one())


@functools.cache
def _buyer_upsert(dialect: str) -> Any:
    # One statement: a buyer another connection made meanwhile (`mailbridge optout add`, a
    # Do-Not-Solicit) is found, not inserted again; a unique violation would abort the whole
    # transaction on PostgreSQL. DO UPDATE, not DO NOTHING, so the row's id is always returned.
    statement = dialect_insert(dialect, BUYER)
    return statement.on_conflict_do_update(
        index_elements=[BUYER.c.account, BUYER.c.alias],
        set_={"name": func.coalesce(func.nullif(statement.excluded.name, ""), BUYER.c.name)},
    ).returning(BUYER.c.id)


def insert_buyer(conn: Connection, account: str, marketplace: str, alias: str, name: str | None,
                 now: datetime) -> int:
    """A new buyer's id: for a caller that knows the alias has no buyer yet (else :func:`upsert_buyer`)."""
    return inserted_id(conn.execute(_BUYER_INSERT, {
        "account": account, "marketplace": marketplace, "alias": alias, "name": name, "created_at": now,
    }))


def buyers_by_alias(conn: Connection, account: str, aliases: Iterable[str]) -> dict[str, tuple[int, str | None]]:
    """alias -> (buyer id, display name) of those of ``aliases`` that have a buyer."""
    wanted = list(set(aliases))
    if not wanted:
        return {}
    return {alias: (int(buyer_id), name)
            for alias, buyer_id, name in conn.execute(_BUYERS, {"account": account, "aliases": wanted})}


def rename_buyer(conn: Connection, buyer_id: int, name: str) -> None:
    conn.execute(_BUYER_RENAME, {"buyer_id": buyer_id, "name": name})


def buyer_by_order(conn: Connection, account: str, order_id: str) -> str | None:
    """The relay alias of the buyer of an order, from the conversations we know."""
    row = conn.execute(select(BUYER.c.alias).join(CONV, CONV.c.buyer_id == BUYER.c.id).where(
        CONV.c.account == account, CONV.c.order_id == order_id).order_by(CONV.c.id.desc()).limit(1)).first()
    return None if row is None else str(row[0])


# --- opt-out, Do-Not-Solicit, delivery failures -------------------------------------

@dataclass(frozen=True)
class ContactState:
    """What a buyer asked about unsolicited mail, as stored (UTC); the guard decides what it means now."""

    opted_out_at: datetime | None
    do_not_solicit_until: datetime | None


def buyer_contact_state(conn: Connection, account: str, alias: str) -> ContactState | None:
    """The opt-out and Do-Not-Solicit state of a base alias; None for a buyer we have never seen."""
    row = conn.execute(_CONTACT_STATE, {"account": account, "alias": alias}).first()
    return None if row is None else ContactState(utc(row[0]), utc(row[1]))


def set_opt_out(conn: Connection, account: str, alias: str, *, opted_out: bool, source: str, now: datetime,
                marketplace: str | None = None) -> bool:
    """Mark a buyer opted out (or back in). Creates the buyer row if needed. True when the state changed."""
    query = select(BUYER.c.id, BUYER.c.opted_out_at).where(BUYER.c.account == account, BUYER.c.alias == alias)
    row = conn.execute(query).first()
    if row is None:
        if not opted_out:
            return False
        # `mailbridge optout add` and the daemon's bounce handling may both make the buyer at once.
        if upsert(conn, BUYER, dict(account=account, alias=alias, created_at=now, opted_out_at=now,
                                    opted_out_source=source, marketplace=marketplace or alias.rpartition("@")[2]),
                  ["account", "alias"]):
            return True
        row = conn.execute(query).one()   # made meanwhile by the other one
    if (row[1] is not None) == opted_out:
        return False
    conn.execute(update(BUYER).where(BUYER.c.id == row[0]).values(
        opted_out_at=now if opted_out else None, opted_out_source=source if opted_out else None))
    return True


def set_do_not_solicit(conn: Connection, account: str, alias: str, until: datetime | None, now: datetime) -> None:
    """Do-Not-Solicit: ``until`` None removes it; far future for "no expiry"."""
    upsert(conn, BUYER, dict(account=account, alias=alias, created_at=now, marketplace=alias.rpartition("@")[2]),
           ["account", "alias"])
    conn.execute(update(BUYER).where(BUYER.c.account == account, BUYER.c.alias == alias).values(
        do_not_solicit_until=until))


def record_buyer_bounce(conn: Connection, account: str, alias: str, reason: str, now: datetime) -> None:
    conn.execute(update(BUYER).where(BUYER.c.account == account, BUYER.c.alias == alias).values(
        bounced_at=now, bounce_reason=reason))


def list_optouts(conn: Connection, accounts: Iterable[str]) -> list[dict[str, Any]]:
    rows = conn.execute(select(BUYER.c.account, BUYER.c.alias, BUYER.c.name, BUYER.c.opted_out_at,
                               BUYER.c.opted_out_source, BUYER.c.do_not_solicit_until).where(
        BUYER.c.account.in_(list(accounts)),
        or_(BUYER.c.opted_out_at.is_not(None), BUYER.c.do_not_solicit_until.is_not(None))).order_by(BUYER.c.alias))
    return [{"account": r[0], "buyer": r[1], "name": r[2], "opted_out_at": iso(utc(r[3])), "source": r[4],
             "do_not_solicit_until": iso(utc(r[5]))} for r in rows]


# --- account restrictions ---------------------------------------------------------

def restrict_account(conn: Connection, account: str, until: datetime, reason: str) -> None:
    """The marketplace restricted the account: proactive mail waits until ``until``."""
    values = {"restricted_until": until, "restricted_reason": reason}
    upsert(conn, ACCOUNT_STATE, {"account": account, **values}, ["account"], values)


def restricted_until(conn: Connection, account: str) -> datetime | None:
    """The end of the account's last recorded restriction (maybe past), or None."""
    row = conn.execute(_RESTRICTED_UNTIL, {"account": account}).first()
    return utc(row[0]) if row else None
