"""Inbound mail as recorded: message rows, quarantined mail, and duplicates found by content hash.

Every UID ingest sees ends as exactly one ``message`` row or one ``quarantine``
row under (account, folder, UIDVALIDITY, UID); that is how a message is never
recorded twice. The ingest hot path runs these statements for every message,
so they are built once (building a Core statement costs several times its
execution).
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from bridge.store.models import MESSAGE, QUARANTINE, inserted_id

_RECORDED_UIDS = select(MESSAGE.c.uid).where(
    MESSAGE.c.account == bindparam("account"), MESSAGE.c.folder == bindparam("folder"),
    MESSAGE.c.uidvalidity == bindparam("uidvalidity"), MESSAGE.c.uid.in_(bindparam("uids", expanding=True)),
).union_all(select(QUARANTINE.c.uid).where(
    QUARANTINE.c.account == bindparam("account"), QUARANTINE.c.folder == bindparam("folder"),
    QUARANTINE.c.uidvalidity == bindparam("uidvalidity"), QUARANTINE.c.uid.in_(bindparam("uids", expanding=True)),
))
_INSERT = MESSAGE.insert()
_BY_HASH = select(MESSAGE.c.id, MESSAGE.c.message_id, MESSAGE.c.content_hash).where(
    MESSAGE.c.account == bindparam("account"), MESSAGE.c.content_hash.in_(bindparam("hashes", expanding=True)),
).order_by(MESSAGE.c.id)


def recorded_uids(conn: Connection, account: str, folder: str, uidvalidity: int, uids: list[int]) -> set[int]:
    """Which of ``uids`` are already recorded (as a message or in quarantine)."""
    if not uids:
        return set()
    return {int(r[0]) for r in conn.execute(_RECORDED_UIDS, {
        "account": account, "folder": folder, "uidvalidity": uidvalidity, "uids": uids})}


class SeenContent:
    """Messages already recorded with given content hashes, for duplicate detection in one batch.

    A duplicate (resync after a UIDVALIDITY change, the same mail in two
    folders) has the same content hash *and* the same Message-ID; without a
    Message-ID the hash alone decides. Two different mails may share a
    Message-ID (broken senders): the hash keeps them apart, so both reach staff.
    """

    def __init__(self, conn: Connection, account: str, hashes: Iterable[str]) -> None:
        self._by_hash: dict[str, list[tuple[int, str | None]]] = {}
        wanted = list(set(hashes))
        if wanted:
            for row_id, message_id, content_hash in conn.execute(_BY_HASH, {"account": account, "hashes": wanted}):
                self.add(content_hash, message_id, int(row_id))

    def add(self, content_hash: str, message_id: str | None, row_id: int) -> None:
        self._by_hash.setdefault(content_hash, []).append((row_id, message_id))

    def find(self, content_hash: str, message_id: str | None) -> int | None:
        for row_id, known_id in self._by_hash.get(content_hash, ()):
            if not message_id or known_id == message_id:
                return row_id
        return None


def insert_message(conn: Connection, **values: Any) -> int:
    return inserted_id(conn.execute(_INSERT, values))


def set_disposition(conn: Connection, message_row: int, disposition: str) -> None:
    conn.execute(update(MESSAGE).where(MESSAGE.c.id == message_row).values(disposition=disposition))


# --- quarantine -------------------------------------------------------------------

def quarantined_uids(conn: Connection, account: str, folder: str, uidvalidity: int) -> list[int]:
    return [int(r[0]) for r in conn.execute(select(QUARANTINE.c.uid).where(
        QUARANTINE.c.account == account, QUARANTINE.c.folder == folder, QUARANTINE.c.uidvalidity == uidvalidity))]


def quarantined_before(conn: Connection, account: str, content_hash: str, message_id: str | None) -> bool:
    cond = [QUARANTINE.c.account == account, QUARANTINE.c.content_hash == content_hash]
    if message_id:
        cond.append(QUARANTINE.c.message_id == message_id)
    return conn.execute(select(QUARANTINE.c.id).where(*cond).limit(1)).first() is not None


def insert_quarantine(conn: Connection, **values: Any) -> int:
    return inserted_id(conn.execute(QUARANTINE.insert(), values))
