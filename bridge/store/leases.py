"""Account leases: which daemon may touch an account, until when; the daemons' heartbeats; the history.

Every time here is the database's clock: ``clock_timestamp()`` on PostgreSQL, so
daemons on machines whose clocks disagree still agree on whether a lease has
expired. SQLite serves one daemon on one machine (a file lock keeps a second one
out), whose own clock is then the database's.

Why each statement is shaped as it is (docs/architecture.md, "Several daemons"):

- Renewal is one UPDATE of every lease the daemon holds and has not let expire;
  taking a lease is a conditional UPDATE (or INSERT ... ON CONFLICT DO NOTHING for
  an account never leased) whose WHERE re-reads the expiry under the row lock, so
  two daemons never both win an account.
- :func:`fence` is the check a worker's transaction makes first: the lease row read
  as still ours ``FOR KEY SHARE``. The holder's own renewals (a no-key UPDATE) do
  not wait for it, but a takeover locks the row ``FOR UPDATE`` and so waits until
  every transaction that passed the fence has committed or rolled back: no write of
  the old holder can land after the new holder has begun.
- A fenced transaction is named for its holder in ``pg_stat_activity``
  (``application_name``, for that transaction only). A holder frozen while it sends
  a statement (a large INSERT, an executemany pipeline not yet synced) leaves its
  server session waiting for the rest: no server timeout ends a session in that
  state, and its lock would keep the account from every other daemon for as long
  as the freeze lasts. :func:`take` ends such sessions of a holder whose lease has
  expired (:func:`end_stuck_sessions`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import DateTime, delete, func, insert, literal, or_, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from bridge.store.dialects import dialect_insert, skip_locked
from bridge.store.errors import LeaseLost
from bridge.store.models import DAEMON, LEASE, LEASE_HISTORY
from bridge.store.times import iso, utc

log = logging.getLogger(__name__)

_TS = DateTime(timezone=True)


def _now(conn: Connection) -> ColumnElement[Any]:
    """The database's clock, read when the statement runs."""
    if conn.dialect.name == "postgresql":
        return func.clock_timestamp()   # not now(): that is the transaction's start, which may be old
    return literal(datetime.now(timezone.utc), _TS)


def _in(conn: Connection, seconds: float) -> ColumnElement[Any]:
    """The database's clock plus ``seconds``."""
    if conn.dialect.name == "postgresql":
        return func.clock_timestamp() + literal(timedelta(seconds=seconds))
    return literal(datetime.now(timezone.utc) + timedelta(seconds=seconds), _TS)


def database_time(conn: Connection) -> datetime:
    """The database's clock now (UTC)."""
    value = utc(conn.execute(select(_now(conn))).scalar_one())
    assert value is not None
    return value


def keeper_limits(conn: Connection, seconds: float, idle_seconds: float) -> None:
    """Bound each statement of this transaction (the lease keeper's) to ``seconds``, lock waits included, and the
    transaction left idle to ``idle_seconds``; its first statement.

    A renewal stuck behind a lock or a slow server must fail in time for the keeper to
    judge the deadlines (and try again next round) rather than hold its round for a lease.
    A renewal locks every lease row its daemon holds until it commits; a keeper frozen
    between the UPDATE and the COMMIT (SIGSTOP, a paused VM, a partition that leaves the
    socket open) would keep all of them from being taken over, lease expired or not, for as
    long as it is frozen: the server ending the idle transaction
    (``idle_in_transaction_session_timeout``, as :func:`fence` does with ``stall_seconds``)
    lets the takeover go on. All three for this transaction only, in one statement.
    PostgreSQL only: SQLite has one daemon, whose leases nobody else may take.
    """
    if conn.dialect.name == "postgresql":
        value = str(round(max(1.0, seconds) * 1000))   # at least a second: a busy server is not a dead one
        conn.execute(select(func.set_config("statement_timeout", value, True),
                            func.set_config("lock_timeout", value, True),
                            func.set_config("idle_in_transaction_session_timeout",
                                            str(max(1, int(idle_seconds * 1000))), True)))


# -- daemons ------------------------------------------------------------------------

def beat(conn: Connection, holder: str, seconds: float, *, balances: bool = True) -> None:
    """The daemon ``holder`` is alive for ``seconds`` more, and counts for the fair share when ``balances``.

    ``run --once`` beats with ``balances`` False: it takes no share of the accounts, so the
    running daemons must not give up theirs to make room for it.
    """
    statement = dialect_insert(conn.dialect.name, DAEMON).values(
        holder=holder, started_at=_now(conn), last_seen=_now(conn), expires_at=_in(conn, seconds), balances=balances)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[DAEMON.c.holder],
        set_={"last_seen": statement.excluded.last_seen, "expires_at": statement.excluded.expires_at}))


def live_daemons(conn: Connection) -> list[str]:
    """The holders of every daemon that takes a share and whose heartbeat has not expired, sorted."""
    return list(conn.execute(select(DAEMON.c.holder).where(DAEMON.c.expires_at > _now(conn),
                                                           DAEMON.c.balances.is_(True))
                             .order_by(DAEMON.c.holder)).scalars())


def forget_daemon(conn: Connection, holder: str) -> None:
    """A daemon stopping cleanly: it no longer counts for the fair share."""
    conn.execute(delete(DAEMON).where(DAEMON.c.holder == holder))


# -- leases -------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaseState:
    """An account's lease as the table has it: ``live`` when it has not expired (the database's clock)."""

    account: str
    holder: str
    expires_at: datetime
    live: bool


@dataclass(frozen=True)
class Taken:
    """A lease just taken; ``previous_*``: the holding it follows (None for an account never leased).

    The previous holder may have been acting until ``previous_until``: what it left
    half done (a send in 'sending') is judged only some time after that. ``acquired_at``
    names this holding: the workers' fence checks it, so workers of an earlier holding of
    the same daemon do not pass.
    """

    account: str
    expires_at: datetime
    previous_holder: str | None
    previous_until: datetime | None
    acquired_at: datetime | None = None


def lease_states(conn: Connection, accounts: Iterable[str] | None = None) -> dict[str, LeaseState]:
    """The lease of each account that has one (all accounts when ``accounts`` is None)."""
    query = select(LEASE.c.account, LEASE.c.holder, LEASE.c.expires_at,
                   (LEASE.c.expires_at > _now(conn)).label("live"))
    if accounts is not None:
        query = query.where(LEASE.c.account.in_(list(accounts)))
    return {r.account: LeaseState(r.account, r.holder, utc(r.expires_at), bool(r.live))  # type: ignore[arg-type]
            for r in conn.execute(query)}


def renew(conn: Connection, holder: str, seconds: float) -> dict[str, datetime]:
    """Extend every lease ``holder`` holds and has not let expire; {account: new expiry}.

    A lease that expired is not renewed, even if nobody took it yet: the holder has
    stopped its workers by then, and takes it again as a new holding.
    """
    renewed = conn.execute(
        update(LEASE).where(LEASE.c.holder == holder, LEASE.c.expires_at > _now(conn))
        .values(expires_at=_in(conn, seconds), renewed_at=_now(conn))
        .returning(LEASE.c.account, LEASE.c.expires_at, LEASE.c.history_id)).all()
    history = [r.history_id for r in renewed if r.history_id is not None]
    if history:
        conn.execute(update(LEASE_HISTORY).where(LEASE_HISTORY.c.id.in_(history)).values(
            valid_until=select(LEASE.c.expires_at).where(LEASE.c.history_id == LEASE_HISTORY.c.id)
            .scalar_subquery()))
    return {r.account: utc(r.expires_at) for r in renewed}  # type: ignore[misc]


def take(conn: Connection, holder: str, accounts: Iterable[str], seconds: float,
         dead_holders: Iterable[str] = ()) -> list[Taken]:
    """Take the leases of ``accounts`` that are free: never leased, expired, released, or held by one of
    ``dead_holders`` (processes known to be gone: see bridge.workers.leases).

    Returns the ones won; an account another daemon holds, or takes first, is left out.
    On PostgreSQL a lease row is locked before it is judged (``FOR UPDATE SKIP
    LOCKED``): one a transaction of its holder has fenced is skipped until that
    transaction ends, and is tried again at the next round.
    """
    wanted = sorted(set(accounts))
    if not wanted:
        return []
    won: list[Taken] = []
    fresh = conn.execute(
        dialect_insert(conn.dialect.name, LEASE).values(
            [{"account": a, "holder": holder, "expires_at": _in(conn, seconds), "acquired_at": _now(conn),
              "renewed_at": _now(conn)} for a in wanted])
        .on_conflict_do_nothing(index_elements=[LEASE.c.account])
        .returning(LEASE.c.account, LEASE.c.expires_at, LEASE.c.acquired_at)).all()
    won += [Taken(r.account, utc(r.expires_at), None, None, utc(r.acquired_at))  # type: ignore[arg-type]
            for r in fresh]
    rest = [a for a in wanted if a not in {t.account for t in won}]
    if rest:
        dead = sorted(set(dead_holders))
        free = or_(LEASE.c.expires_at <= _now(conn), LEASE.c.holder.in_(dead)) if dead \
            else LEASE.c.expires_at <= _now(conn)
        expired = skip_locked(select(LEASE.c.account, LEASE.c.holder, LEASE.c.expires_at, LEASE.c.history_id)
                              .where(LEASE.c.account.in_(rest), free), conn)
        before = {r.account: r for r in conn.execute(expired)}
        if conn.dialect.name == "postgresql" and len(before) < len(rest):
            # Skipped: held live by another daemon, or expired with a transaction of its holder still
            # in the way. A stuck one is ended now, and its lease taken at the next round.
            end_stuck_sessions(conn, [a for a in rest if a not in before], free)
        if before:
            taken = conn.execute(
                update(LEASE).where(LEASE.c.account.in_(list(before)), free)
                .values(holder=holder, expires_at=_in(conn, seconds), acquired_at=_now(conn),
                        renewed_at=_now(conn), history_id=None)
                .returning(LEASE.c.account, LEASE.c.expires_at, LEASE.c.acquired_at)).all()
            won += [Taken(r.account, utc(r.expires_at), before[r.account].holder,  # type: ignore[arg-type]
                          utc(before[r.account].expires_at), utc(r.acquired_at)) for r in taken]
            # A dead holder's holding ends now, not when its lease would have run out.
            ended = [before[r.account].history_id for r in taken if before[r.account].history_id is not None]
            if ended:
                conn.execute(update(LEASE_HISTORY).where(LEASE_HISTORY.c.id.in_(ended),
                                                         LEASE_HISTORY.c.valid_until > _now(conn))
                             .values(valid_until=_now(conn)))
    for t in won:
        history_id = conn.execute(insert(LEASE_HISTORY).values(
            account=t.account, holder=holder, acquired_at=_now(conn), valid_until=t.expires_at)
            .returning(LEASE_HISTORY.c.id)).scalar_one()
        conn.execute(update(LEASE).where(LEASE.c.account == t.account).values(history_id=history_id))
    return sorted(won, key=lambda t: t.account)


def release(conn: Connection, holder: str, accounts: Iterable[str] | None = None,
            keep: Iterable[str] = ()) -> list[str]:
    """Give up ``holder``'s live leases of ``accounts`` (all of them when None) but ``keep``'s: free for others
    at once.

    The caller has stopped the accounts' workers first: a released lease may be taken
    by another daemon the next moment.
    """
    cond = [LEASE.c.holder == holder, LEASE.c.expires_at > _now(conn)]
    if accounts is not None:
        cond.append(LEASE.c.account.in_(list(accounts)))
    kept = sorted(set(keep))
    if kept:
        cond.append(LEASE.c.account.not_in(kept))
    released = conn.execute(update(LEASE).where(*cond).values(expires_at=_now(conn))
                            .returning(LEASE.c.account, LEASE.c.expires_at, LEASE.c.history_id)).all()
    for r in released:
        if r.history_id is not None:
            conn.execute(update(LEASE_HISTORY).where(LEASE_HISTORY.c.id == r.history_id)
                         .values(released_at=r.expires_at, valid_until=r.expires_at))
    return sorted(r.account for r in released)


def fence(conn: Connection, account: str, holder: str, stall_seconds: float | None = None,
          acquired_at: datetime | None = None) -> None:
    """Raise LeaseLost unless ``holder`` holds ``account``'s lease now (the holding taken at ``acquired_at``, when
    given); the first statement of a fenced transaction.

    On PostgreSQL the row stays locked ``FOR KEY SHARE`` until the transaction ends, so
    nobody takes the lease while the transaction may still write. ``stall_seconds``: a
    transaction left idle longer than that (its process stopped, paused, cut off) is
    ended by the server (``idle_in_transaction_session_timeout``, for this transaction
    only), so its lock does not keep the account from being taken over for longer.
    """
    columns: list[Any] = [LEASE.c.expires_at]
    if conn.dialect.name == "postgresql":
        # In the same statement: no extra round trip per transaction.
        columns.append(func.set_config("application_name", session_name(holder), True))
        if stall_seconds is not None:
            columns.append(func.set_config("idle_in_transaction_session_timeout",
                                           str(max(1, round(stall_seconds * 1000))), True))
    query = select(*columns).where(LEASE.c.account == account, LEASE.c.holder == holder,
                                   LEASE.c.expires_at > _now(conn))
    if acquired_at is not None:   # this holding, not an earlier one of the same daemon
        query = query.where(LEASE.c.acquired_at == acquired_at)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(key_share=True, read=True)
    if conn.execute(query).first() is None:
        raise LeaseLost(f"account {account}: this daemon ({holder}) no longer holds its lease; "
                        "another daemon may have taken it, so nothing was written")


def session_name(holder: str) -> str:
    """The ``application_name`` of a holder's fenced transactions (PostgreSQL keeps 63 bytes of it)."""
    name = f"mailbridge {holder}"
    # Holder ids end with what makes them unique (pid, random part): keep the end when cutting.
    return name if len(name.encode()) <= 63 else "mailbridge " + holder.encode()[-52:].decode(errors="ignore")


_SESSIONS = text("SELECT pid, state, state_change FROM pg_stat_activity "
                 "WHERE application_name = :session AND pid <> pg_backend_pid()")
_END_SESSION = text("SELECT pg_terminate_backend(:pid)")
# Inside a transaction: waiting on the client for the rest of a statement ('active', ClientRead), or idle in it.
_IN_TRANSACTION = frozenset({"active", "idle in transaction", "idle in transaction (aborted)"})
_PRIVILEGES = "connect every daemon as one role, or grant theirs pg_read_all_stats and pg_signal_backend"


def end_stuck_sessions(conn: Connection, accounts: list[str], expired: ColumnElement[bool]) -> int:
    """End (``pg_terminate_backend``) the stuck sessions of the holders of ``accounts``' expired leases.

    ``accounts``: leases a take found locked, a transaction of their holder having them
    fenced. A holder whose lease expired has stopped every operation by then (its local
    deadline runs out first), so a transaction of it that has not moved since the expiry
    is stuck: frozen while it sent a statement, which no server timeout ends. Ending the
    session rolls the transaction back (nothing of it is written) and frees the lease row
    soon after; the next take finds it free. Returns how many sessions were ended.
    Another role's sessions can be seen and ended only with the privileges
    :data:`_PRIVILEGES` names; without them this logs why and the take waits as before.
    """
    ended = 0
    held: dict[str, list[str]] = {}
    expiry: dict[str, datetime] = {}
    for lease in conn.execute(select(LEASE.c.account, LEASE.c.holder, LEASE.c.expires_at)
                              .where(LEASE.c.account.in_(accounts), expired)):
        held.setdefault(lease.holder, []).append(lease.account)
        expiry[lease.holder] = max(expiry.get(lease.holder, lease.expires_at), lease.expires_at)
    for holder, names in held.items():
        what = ", ".join(sorted(names))
        for r in conn.execute(_SESSIONS, {"session": session_name(holder)}).all():
            if r.state is None:   # another role's session: its state is hidden from this one
                log.warning("a database session of %s (pid %s) may be holding %s, and this daemon may not see "
                            "its state: %s", holder, r.pid, what, _PRIVILEGES)
                continue
            if r.state not in _IN_TRANSACTION or r.state_change >= expiry[holder]:
                continue
            try:
                with conn.begin_nested():
                    ended += bool(conn.execute(_END_SESSION, {"pid": r.pid}).scalar())
            except DBAPIError as exc:
                log.warning("could not end the stuck database session %s of %s holding %s (%s): %s", r.pid,
                            holder, what, str(exc.orig).strip(), _PRIVILEGES)
                continue
            log.warning("ended database session %s of %s (%s since before its lease expired): a holder stopped "
                        "inside a transaction was keeping %s from other daemons", r.pid, holder, r.state, what)
    return ended


_FENCE_OPTION = "mailbridge_lease"


def fenced(engine: Engine, account: str, holder: str, stall_seconds: float | None = None,
           acquired_at: datetime | None = None) -> Engine:
    """``engine`` whose every transaction begins with :func:`fence` for ``account`` (a worker's engine).

    SQLite: ``engine`` itself. One daemon works a SQLite database (the file lock keeps a
    second one out), so there is nobody to fence off, and a renewal held up behind a long
    write must not stop the daemon's own accounts.
    """
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(**{_FENCE_OPTION: (account, holder, stall_seconds, acquired_at)})


def fence_on_begin(conn: Connection) -> None:
    """The engine's ``begin`` listener (``store.engine``): fence the transactions that ask for it."""
    lease = conn.get_execution_options().get(_FENCE_OPTION)
    if lease is not None:
        fence(conn, *lease)


# -- what status and the tests read --------------------------------------------------

def lease_history(conn: Connection, account: str | None = None) -> list[dict[str, Any]]:
    """Every holding of the account (all accounts when None), oldest first; ``until`` is when it ended or ends."""
    query = select(LEASE_HISTORY).order_by(LEASE_HISTORY.c.account, LEASE_HISTORY.c.acquired_at)
    if account is not None:
        query = query.where(LEASE_HISTORY.c.account == account)
    return [{"account": r.account, "holder": r.holder, "acquired_at": utc(r.acquired_at),
             "until": utc(r.released_at or r.valid_until), "released": r.released_at is not None}
            for r in conn.execute(query)]


def account_lease(conn: Connection, account: str) -> dict[str, Any] | None:
    """For ``mailbridge status``: the account's lease holder, its expiry, whether it is live and whether the
    holder daemon's heartbeat is; None when no daemon has held the account yet."""
    state = lease_states(conn, [account]).get(account)
    if state is None:
        return None
    beating = conn.execute(select(DAEMON.c.holder).where(DAEMON.c.holder == state.holder,
                                                         DAEMON.c.expires_at > _now(conn))).first() is not None
    return {"holder": state.holder, "expires_at": iso(state.expires_at), "live": state.live,
            "holder_live": beating}


__all__ = ["LeaseLost", "LeaseState", "Taken", "account_lease", "beat", "database_time", "fence",
           "fence_on_begin", "fenced", "forget_daemon", "keeper_limits", "lease_history", "lease_states",
           "live_daemons", "release", "renew", "take"]
