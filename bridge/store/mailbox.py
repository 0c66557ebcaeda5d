"""Where ingest stands in each account's folders: the UID checkpoint and the last fetch's outcome.

One ``mailbox_state`` row per (account, folder). The checkpoint (``last_uid``
under ``uidvalidity``) moves only forward, and only in the transaction that
records the message it covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from bridge.store.dialects import upsert
from bridge.store.models import MAILBOX


@dataclass(frozen=True)
class MailboxCheckpoint:
    uidvalidity: int
    last_uid: int
    history_until_uid: int


def mailbox_checkpoint(conn: Connection, account: str, folder: str) -> MailboxCheckpoint | None:
    row = conn.execute(
        select(MAILBOX.c.uidvalidity, MAILBOX.c.last_uid, MAILBOX.c.history_until_uid)
        .where(MAILBOX.c.account == account, MAILBOX.c.folder == folder)
    ).first()
    # UIDVALIDITY is never 0 (RFC 3501 2.3.1.1): 0 marks a row made only to record an error.
    return None if row is None or row[0] == 0 else MailboxCheckpoint(row[0], row[1], row[2])


def start_mailbox(conn: Connection, account: str, folder: str, uidvalidity: int,
                  history_until_uid: int, now: datetime) -> None:
    """First sight of a folder, or a UIDVALIDITY change: checkpoint back to 0 under the new validity."""
    values = dict(uidvalidity=uidvalidity, last_uid=0, history_until_uid=history_until_uid, initialised_at=now)
    upsert(conn, MAILBOX, dict(account=account, folder=folder, **values), ["account", "folder"], values)


def mailbox_checkpoint_or_fail(engine: Engine, account: str, folder: str) -> MailboxCheckpoint:
    with engine.begin() as conn:
        checkpoint = mailbox_checkpoint(conn, account, folder)
    if checkpoint is None:
        raise RuntimeError(f"no mailbox state for {account}/{folder}")
    return checkpoint


def advance_checkpoint(conn: Connection, account: str, folder: str, uidvalidity: int, uid: int) -> None:
    """Move the checkpoint forward (never back) under the same UIDVALIDITY."""
    result = conn.execute(
        update(MAILBOX)
        .where(MAILBOX.c.account == account, MAILBOX.c.folder == folder,
               MAILBOX.c.uidvalidity == uidvalidity, MAILBOX.c.last_uid < uid)
        .values(last_uid=uid)
    )
    if result.rowcount != 1:
        row = mailbox_checkpoint(conn, account, folder)
        if row is None or row.uidvalidity != uidvalidity:
            raise RuntimeError(f"checkpoint for {account}/{folder} changed under us (now {row})")


def record_fetch(conn: Connection, account: str, folder: str, now: datetime, error: str | None) -> None:
    """Record a successful fetch (clears the error) or an error, for ``mailbridge status``."""
    values: dict[str, Any] = {"last_error": error, "last_error_at": now if error else None}
    if error is None:
        values["last_fetch_at"] = now
    upsert(conn, MAILBOX, dict(account=account, folder=folder, uidvalidity=0, last_uid=0, history_until_uid=0,
                               initialised_at=now, **values), ["account", "folder"], values)
