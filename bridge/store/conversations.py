"""Conversations: threading buyer mail into one per buyer and key, and what the reply relay reads back.

A conversation belongs to one buyer and remembers the Message-IDs of its staff
notifications, so each new notification chains References to the last one
(RFC 5322 3.6.4) and a staff reply can be traced back to it. The threading
statements run for every buyer message and are built once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from bridge.store.buyers import buyers_by_alias, insert_buyer, rename_buyer, upsert_buyer
from bridge.store.models import BUYER, CONV, MESSAGE, OUTBOX, inserted_id
from bridge.store.times import utc

_CONVS = select(CONV.c.key, CONV.c.id, CONV.c.staff_root_id, CONV.c.staff_last_id, CONV.c.message_count,
                BUYER.c.id, BUYER.c.name).join(BUYER, BUYER.c.id == CONV.c.buyer_id).where(
    CONV.c.account == bindparam("account"), CONV.c.key.in_(bindparam("keys", expanding=True)))
_CONV_INSERT = CONV.insert()
# ``n`` messages of one batch joined the conversation: the same as ``n`` single touches in their order
# (``tok``: the first token any of them gave; ``first_staff``/``last_staff``: the first and last
# notification Message-IDs among them). Relative to what is stored, so nothing another writer did is lost.
_CONV_TOUCH = update(CONV).where(CONV.c.id == bindparam("conv_id")).values(
    last_message_at=bindparam("now", type_=CONV.c.last_message_at.type), status="open",
    message_count=CONV.c.message_count + bindparam("n", type_=CONV.c.message_count.type),
    comm_mgr_tok=func.coalesce(CONV.c.comm_mgr_tok, bindparam("tok", type_=CONV.c.comm_mgr_tok.type)),
    staff_last_id=func.coalesce(bindparam("last_staff", type_=CONV.c.staff_last_id.type), CONV.c.staff_last_id),
    staff_root_id=func.coalesce(CONV.c.staff_root_id, bindparam("first_staff", type_=CONV.c.staff_root_id.type)),
)


@dataclass(frozen=True)
class ConversationRef:
    """A conversation as it was *before* the message being recorded joined it."""

    id: int
    staff_root_id: str | None
    staff_last_id: str | None
    message_count: int
    opened_in_batch: bool = False   # opened by a message of the batch being recorded (this one or an earlier)


@dataclass
class _Known:
    """A conversation as the batch has made it so far (stored, plus the touches not yet written)."""

    ref: ConversationRef
    buyer_id: int


@dataclass
class _Touch:
    n: int = 0
    tok: str | None = None
    first_staff: str | None = None
    last_staff: str | None = None


class BatchThreads:
    """Threading for one inbound batch: the batch's conversations read in one SELECT, touches written in one.

    :meth:`thread` finds or opens the buyer's conversation for a key and counts
    a message in it. A new conversation (and buyer) is inserted at once (its id is
    needed); a known one is touched in memory, and :meth:`flush` writes all touches
    with one executemany UPDATE. Flush before anything else reads the conversations
    (a staff reply, a bounce) and before the transaction commits.
    After a SAVEPOINT rolls back, call :meth:`forget`: what the batch knows is no
    longer sure, so each key is read again from the database.

    ``aliases``: the buyer aliases of the batch's mail. Their buyers are read with
    the conversations, so opening a conversation needs no lookup of its buyer.
    """

    def __init__(self, conn: Connection, account: str, keys: Iterable[str], aliases: Iterable[str] = ()) -> None:
        self.account = account
        self._known: dict[str, _Known] = {}
        self._absent: set[str] = set()        # keys known to have no conversation yet
        self._touches: dict[int, _Touch] = {}
        self._names: dict[int, str | None] = {}    # buyer id -> display name as stored, where known
        self._load(conn, set(keys))
        wanted = set(aliases)
        self._buyer_ids: dict[str, int] = {}        # alias -> buyer id
        for alias, (buyer_id, name) in buyers_by_alias(conn, account, wanted).items():
            self._buyer_ids[alias] = buyer_id
            self._names[buyer_id] = name
        self._no_buyer = wanted - self._buyer_ids.keys()   # aliases known to have no buyer yet

    def _load(self, conn: Connection, keys: set[str]) -> None:
        if not keys:
            return
        for key, conv_id, root, last, count, buyer_id, name in conn.execute(
                _CONVS, {"account": self.account, "keys": list(keys)}):
            self._known[key] = _Known(ConversationRef(int(conv_id), root, last, int(count)), int(buyer_id))
            self._names[int(buyer_id)] = name
        self._absent |= keys - self._known.keys()

    def thread(self, conn: Connection, *, marketplace: str, alias: str, buyer_name: str | None, key: str,
               order_id: str | None, comm_mgr_tok: str | None, subject: str, now: datetime,
               staff_message_id: str | None = None) -> ConversationRef:
        """Find or open the buyer's conversation for ``key`` and count the new message in it.

        ``staff_message_id``: the Message-ID of the staff notification about to be
        queued for this message; it becomes the newest of the staff thread (and
        its root when it is the first), so the next one chains to it.
        """
        if key not in self._known and key not in self._absent:
            self._load(conn, {key})
        known = self._known.get(key)
        if known is None:
            buyer_id = self._buyer(conn, marketplace, alias, buyer_name, now)
            conv_id = inserted_id(conn.execute(_CONV_INSERT, {
                "account": self.account, "key": key, "buyer_id": buyer_id, "order_id": order_id,
                "comm_mgr_tok": comm_mgr_tok, "subject": subject, "status": "open", "created_at": now,
                "last_message_at": now, "message_count": 1, "staff_root_id": staff_message_id,
                "staff_last_id": staff_message_id,
            }))
            self._absent.discard(key)
            self._known[key] = _Known(ConversationRef(conv_id, staff_message_id, staff_message_id, 1, True),
                                      buyer_id)
            return ConversationRef(conv_id, None, None, 0, True)
        before = known.ref
        touch = self._touches.setdefault(before.id, _Touch())
        touch.n += 1
        touch.tok = touch.tok or comm_mgr_tok
        touch.first_staff = touch.first_staff or staff_message_id
        touch.last_staff = staff_message_id or touch.last_staff
        known.ref = ConversationRef(before.id, before.staff_root_id or staff_message_id,
                                    staff_message_id or before.staff_last_id, before.message_count + 1,
                                    before.opened_in_batch)
        self._rename_if_new(conn, known.buyer_id, buyer_name)
        return before

    def _buyer(self, conn: Connection, marketplace: str, alias: str, name: str | None, now: datetime) -> int:
        """The buyer's id (made if new, renamed if ``name`` is new), from what the batch read when it can."""
        buyer_id = self._buyer_ids.get(alias)
        if buyer_id is not None:
            self._rename_if_new(conn, buyer_id, name)
            return buyer_id
        if alias in self._no_buyer:
            buyer_id = insert_buyer(conn, self.account, marketplace, alias, name, now)
            self._no_buyer.discard(alias)
        else:
            buyer_id = upsert_buyer(conn, self.account, marketplace, alias, name, now)
        if name:   # what upsert_buyer keeps; without a name, the stored one is not known here
            self._names[buyer_id] = name
        self._buyer_ids[alias] = buyer_id
        return buyer_id

    def _rename_if_new(self, conn: Connection, buyer_id: int, name: str | None) -> None:
        if name and self._names.get(buyer_id) != name:
            rename_buyer(conn, buyer_id, name)
            self._names[buyer_id] = name

    def flush(self, conn: Connection, now: datetime) -> None:
        """Write the touches made since the last flush (one statement)."""
        # What the caller does after a flush may make buyers (a bounce opting one out): that an alias
        # has no buyer is not sure any more (the buyers known to exist stay so).
        self._no_buyer.clear()
        if self._touches:
            conn.execute(_CONV_TOUCH, [{"conv_id": conv_id, "now": now, "n": t.n, "tok": t.tok,
                                        "first_staff": t.first_staff, "last_staff": t.last_staff}
                                       for conv_id, t in self._touches.items()])
            self._touches.clear()

    def forget(self) -> None:
        """Drop what the batch knows and the touches not written (a SAVEPOINT rolled them back)."""
        self._known.clear()
        self._absent.clear()
        self._touches.clear()
        self._names.clear()
        self._buyer_ids.clear()   # a buyer made in the rolled-back savepoint is gone
        self._no_buyer.clear()


def raise_flags(conn: Connection, conversation_id: int, flags: list[str]) -> None:
    """Add flags to a conversation (they stay until staff deal with them)."""
    row = conn.execute(select(CONV.c.flags).where(CONV.c.id == conversation_id)).first()
    if row is None:
        raise LookupError(f"conversation {conversation_id} does not exist")
    merged = list(dict.fromkeys([*json.loads(row[0] or "[]"), *flags]))
    conn.execute(update(CONV).where(CONV.c.id == conversation_id).values(flags=json.dumps(merged)))


def close_conversation(conn: Connection, conversation_id: int) -> bool:
    """Close an open conversation (the buyer's next message opens it again); False when it was not open."""
    result = conn.execute(update(CONV).where(CONV.c.id == conversation_id, CONV.c.status == "open")
                          .values(status="closed"))
    return result.rowcount == 1


# --- read back, for the reply relay -------------------------------------------------

@dataclass(frozen=True)
class ConversationInfo:
    id: int
    status: str
    subject: str
    order_id: str | None
    comm_mgr_tok: str | None
    staff_root_id: str | None
    staff_last_id: str | None
    buyer_alias: str
    buyer_name: str | None


_INFO_COLUMNS = (CONV.c.id, CONV.c.status, CONV.c.subject, CONV.c.order_id, CONV.c.comm_mgr_tok,
                 CONV.c.staff_root_id, CONV.c.staff_last_id, BUYER.c.alias, BUYER.c.name)


def conversation_info(conn: Connection, account: str, conversation_id: int) -> ConversationInfo | None:
    row = conn.execute(select(*_INFO_COLUMNS).join(BUYER, BUYER.c.id == CONV.c.buyer_id)
                       .where(CONV.c.id == conversation_id, CONV.c.account == account)).first()
    return None if row is None else ConversationInfo(*row)


def newest_conversation(conn: Connection, account: str) -> ConversationInfo | None:
    """The conversation opened last in an account (the demo's buyer who then opts out), or None."""
    row = conn.execute(select(*_INFO_COLUMNS).join(BUYER, BUYER.c.id == CONV.c.buyer_id)
                       .where(CONV.c.account == account).order_by(CONV.c.id.desc()).limit(1)).first()
    return None if row is None else ConversationInfo(*row)


def conversation_of_notification(conn: Connection, account: str, ids: Iterable[str | None]) -> int | None:
    """The conversation of the newest staff notification (or response-time reminder) among these Message-IDs.

    Only those count: a reply to a confirmation ("replies are not read") or to a
    buyer reply (whose Message-ID the buyer has seen, so anyone could cite it)
    must never become mail to a buyer.
    """
    wanted = [i for i in ids if i]
    if not wanted:
        return None
    row = conn.execute(select(OUTBOX.c.conversation_id).where(
        OUTBOX.c.account == account, OUTBOX.c.message_id.in_(wanted), OUTBOX.c.conversation_id.is_not(None),
        OUTBOX.c.purpose.in_(("staff_notification", "response_reminder")))
        .order_by(OUTBOX.c.id.desc()).limit(1)).first()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class BuyerMessage:
    id: int
    message_id: str | None
    subject: str
    text: str
    buyer_address: str | None
    order_id: str | None
    comm_mgr_tok: str | None
    sent_date: datetime | None
    references: tuple[str, ...]


def buyer_message_to_quote(conn: Connection, account: str, conversation_id: int,
                           answered_ids: Iterable[str | None]) -> BuyerMessage | None:
    """The buyer message staff answered: the one behind the notification they replied to, else the newest."""
    columns = (MESSAGE.c.id, MESSAGE.c.message_id, MESSAGE.c.subject, MESSAGE.c.text, MESSAGE.c.buyer_address,
               MESSAGE.c.order_id, MESSAGE.c.comm_mgr_tok, MESSAGE.c.sent_date, MESSAGE.c.references)
    wanted = [i for i in answered_ids if i]
    row = None
    if wanted:
        row = conn.execute(select(*columns).join(OUTBOX, OUTBOX.c.source_message_id == MESSAGE.c.id).where(
            OUTBOX.c.account == account, OUTBOX.c.message_id.in_(wanted),
            MESSAGE.c.conversation_id == conversation_id, MESSAGE.c.kind == "buyer")
            .order_by(MESSAGE.c.id.desc()).limit(1)).first()
    if row is None:
        row = conn.execute(select(*columns).where(
            MESSAGE.c.account == account, MESSAGE.c.conversation_id == conversation_id,
            MESSAGE.c.kind == "buyer").order_by(MESSAGE.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return BuyerMessage(row[0], row[1], row[2], row[3], row[4], row[5], row[6], utc(row[7]),
                        tuple(json.loads(row[8] or "[]")))
