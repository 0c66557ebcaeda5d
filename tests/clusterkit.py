"""Several real ``mailbridge run`` processes on one PostgreSQL database: the scale-out test bench.

- :class:`Cluster`: 20 (by default) seller mailboxes on one Dovecot, one SMTP
  server on 127.0.0.1 that records every transaction (staff notifications go to
  an address that is not a Dovecot user: recorded, not delivered), one config
  file with an ``[[accounts]]`` table per seller, and the database URL.
  SMTP AUTH with each seller's login and Sent copies filed by the server, so a
  send a SIGKILL interrupted is reconciled from the Sent folder, not resent.
- :class:`Node`: one ``mailbridge run`` process of the cluster, in its own
  session, logging JSON lines to its own file.
- The checks every scale-out test makes: each buyer message recorded once and
  forwarded once, each staff reply relayed once (per Message-ID at the SMTP
  server and per outbox dedupe key).
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from bridgekit import wait_until
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from bridge import store
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.sandbox.config import TomlValue, toml_table

STAFF = "team@agency.example"         # not a Dovecot user: the SMTP server records, does not deliver
STAFF_DOMAIN = STAFF.rpartition("@")[2]
BUYER_RELAY = "@marketplace.amazon.com"
ANSWER = re.compile(r"\bAnswer ([\w-]+):")

# A whole SMTP send ends within its timeout, which must stay under reconcile_after_seconds: the
# new holder of an account judges its predecessor's sends only once they cannot be under way.
SMTP_TIMEOUT = 3
RECONCILE_SECONDS = 4


@dataclass
class Node:
    """One ``mailbridge run`` of the cluster."""

    name: str
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] = field(init=False)
    started_at: float = field(init=False)

    def start(self) -> "Node":
        self.started_at = time.time()
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(self.config),
                                          "--log-level", "INFO", "run"],
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL to the whole process group; returns the wall-clock time of the kill."""
        at = time.time()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        return at

    def pause(self) -> float:
        """SIGSTOP: the process is frozen as by a network partition (its sockets stay open)."""
        at = time.time()
        os.killpg(self.proc.pid, signal.SIGSTOP)
        return at

    def resume(self) -> float:
        at = time.time()
        os.killpg(self.proc.pid, signal.SIGCONT)
        return at

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (finish the work in hand, give leases up, exit 0); SIGKILL after ``timeout``."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)   # a paused node could not hear SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (a line cut by SIGKILL is skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Cluster:
    """Seller mailboxes, one recording SMTP server, one config, one PostgreSQL database; nodes on demand."""

    def __init__(self, root: Path, dovecot: DovecotServer, url: str, *, accounts: int = 20,
                 sections: Mapping[str, Mapping[str, TomlValue]] | None = None,
                 account_keys: Mapping[str, TomlValue] | None = None) -> None:
        self.root, self.dovecot, self.url = root, dovecot, url
        self.sellers: dict[str, SandboxAccount] = {f"acct{i:02d}": dovecot.new_account(f"seller{i:02d}")
                                                   for i in range(1, accounts + 1)}
        self.smtp = SandboxSMTP(dovecot, auth={s.user: s.password for s in self.sellers.values()},
                                file_sent_copies=True)
        self.smtp.start()
        self.config = root / "cluster.toml"
        self.write_config(sections or {}, account_keys or {})
        self.nodes: list[Node] = []
        self.engine: Engine = create_engine(url, pool_size=2, max_overflow=2)
        self.replies: dict[str, str] = {}   # staff reply Message-ID -> its answer tag

    @property
    def accounts(self) -> list[str]:
        return list(self.sellers)

    def write_config(self, sections: Mapping[str, Mapping[str, TomlValue]],
                     account_keys: Mapping[str, TomlValue]) -> None:
        """One ``[[accounts]]`` per seller; every key not given is the shipped default."""
        extra = {k: dict(v) for k, v in sections.items()}
        lines = toml_table("[daemon]", {"log_format": "json", **extra.pop("daemon", {})})
        lines += toml_table("[database]", {"url": self.url})
        lines += toml_table("[outbox]", {"retry_base_seconds": 1, "reconcile_after_seconds": RECONCILE_SECONDS,
                                         **extra.pop("outbox", {})})
        imap_keys, smtp_keys = extra.pop("imap", {}), extra.pop("smtp", {})
        for table, values in extra.items():
            lines += toml_table(f"[{table}]", values)
        for name, seller in self.sellers.items():
            lines += toml_table("[[accounts]]", {
                "name": name, "marketplace": "amazon.com", "seller_name": f"Seller {name}",
                "seller_address": seller.user, "staff_address": STAFF, "staff_senders": [f"*@{STAFF_DOMAIN}"],
                "forward_existing": True, **account_keys})
            lines += toml_table("[accounts.imap]", {
                "host": "127.0.0.1", "port": seller.port, "security": "none", "username": seller.user,
                "password": seller.password, "poll_seconds": 5, "processed_folder": "Processed", **imap_keys})
            lines += toml_table("[accounts.smtp]", {
                "host": "127.0.0.1", "port": self.smtp.port, "security": "none", "username": seller.user,
                "password": seller.password, "sent_copies": "server", "timeout_seconds": SMTP_TIMEOUT, **smtp_keys})
        self.config.write_text("\n".join(lines))

    # --- mail ----------------------------------------------------------------------------

    def fill(self, per_account: int, seed: int = 1) -> list[str]:
        """``per_account`` buyer messages into every seller's INBOX; returns their Message-IDs."""
        ids = []
        for n, seller in enumerate(self.sellers.values()):
            backlog = samples.buyer_backlog(per_account, seller_address=seller.user, seed=seed * 1000 + n)
            with self.dovecot.imap_client(seller.user) as client:
                client.multiappend("INBOX", backlog)
            ids += [str(message_from_bytes(raw, policy=policy.default)["Message-ID"]).strip("<>") for raw in backlog]
        return ids

    def notifications(self) -> dict[str, bytes]:
        """Staff notifications received, by the buyer Message-ID they forward (read back from the outbox)."""
        by_outbox = notification_sources(self)
        return {by_outbox[r.message_id]: r.data for r in self.smtp.received if r.message_id in by_outbox}

    def answer(self, buyer_ids_by_account: Mapping[str, list[str]], per_account: int) -> list[str]:
        """Staff answer the first ``per_account`` buyer messages of each account; returns the replies' ids."""
        notes = self.notifications()
        out = []
        for account, ids in buyer_ids_by_account.items():
            seller = self.sellers[account]
            replies = []
            for k, buyer_id in enumerate(ids[:per_account]):
                tag = f"{account}-{k}"
                mid = f"answer.{tag}@{STAFF_DOMAIN}"
                replies.append(samples.staff_reply(notes[buyer_id], staff=STAFF, message_id=mid,
                                                   text=f"Answer {tag}: thank you, your parcel leaves tomorrow."))
                self.replies[mid] = tag
                out.append(mid)
            with self.dovecot.imap_client(seller.user) as client:
                client.multiappend("INBOX", replies)
        return out

    def buyer_ids_by_account(self, ids: list[str], per_account: int) -> dict[str, list[str]]:
        return {account: ids[n * per_account:(n + 1) * per_account] for n, account in enumerate(self.sellers)}

    # --- nodes ---------------------------------------------------------------------------

    def start(self, count: int = 1) -> list[Node]:
        started = []
        for _ in range(count):
            node = Node(f"node{len(self.nodes) + 1}", self.config, self.root / f"node{len(self.nodes) + 1}.log")
            self.nodes.append(node.start())
            started.append(node)
        return started

    def close(self) -> None:
        for node in self.nodes:
            if hasattr(node, "proc"):
                node.stop(30)
        self.engine.dispose()
        self.smtp.stop()

    # --- what the database says -----------------------------------------------------------

    def count(self, query: Any) -> int:
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(query).scalar_one())
        except ProgrammingError:   # the first daemon has not created the schema yet
            return 0

    def recorded(self) -> int:
        return self.count(select(func.count()).select_from(store.MESSAGE))

    def open_outbox(self) -> int:
        return self.count(select(func.count()).select_from(store.OUTBOX)
                          .where(store.OUTBOX.c.state.in_(("queued", "sending", "held"))))

    def settled(self, recorded: int, sent: int) -> bool:
        """``recorded`` messages in the database, nothing left to send, ``sent`` mails at the SMTP server."""
        return self.recorded() >= recorded and self.open_outbox() == 0 and len(self.smtp.received) >= sent

    def wait_settled(self, recorded: int, sent: int, timeout: float = 120) -> None:
        def done() -> bool:
            for node in self.nodes:
                if hasattr(node, "proc") and node.proc.poll() not in (None, 0, -signal.SIGKILL):
                    raise AssertionError(f"{node.name} exited with {node.proc.returncode}:\n{node.tail()}")
            return self.settled(recorded, sent)
        wait_until(done, lambda: f"{recorded} messages recorded and {sent} mails sent (now {self.recorded()} "
                                 f"recorded, {len(self.smtp.received)} sent, {self.open_outbox()} open)",
                   timeout, interval=0.2)
        self.smtp.wait_delivered()


@contextmanager
def cluster(root: Path, dovecot: DovecotServer, url: str, **kw: Any) -> Iterator[Cluster]:
    c = Cluster(root, dovecot, url, **kw)
    try:
        yield c
    finally:
        c.close()


# --- the exactly-once checks ---------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What reached the SMTP server and the database, counted for duplicates and losses."""

    recorded: collections.Counter[str]            # buyer/staff Message-ID -> message rows
    notifications: collections.Counter[str]       # buyer Message-ID -> staff_notification outbox rows
    relays: collections.Counter[str]              # staff reply Message-ID -> buyer_reply outbox rows
    relay_states: dict[str, str]                  # staff reply Message-ID -> its buyer_reply row's state
    per_message_id: collections.Counter[str]      # Message-ID -> SMTP transactions
    forwarded: collections.Counter[str]           # buyer Message-ID -> notifications the SMTP server took
    answers: collections.Counter[str]             # answer tag -> buyer mails carrying it

    @property
    def smtp_duplicates(self) -> dict[str, int]:
        return {mid: n for mid, n in self.per_message_id.items() if n > 1}


def _sources(c: Cluster, purpose: str) -> dict[str, str]:
    """Outbox Message-ID -> the Message-ID of the mail it comes from, for the rows of ``purpose``."""
    with c.engine.begin() as conn:
        return dict(conn.execute(
            select(store.OUTBOX.c.message_id, store.MESSAGE.c.message_id)
            .join(store.MESSAGE, store.MESSAGE.c.id == store.OUTBOX.c.source_message_id)
            .where(store.OUTBOX.c.purpose == purpose)).all())


def notification_sources(c: Cluster) -> dict[str, str]:
    """Staff notification Message-ID -> the buyer Message-ID it forwards."""
    return _sources(c, "staff_notification")


def tally(c: Cluster) -> Tally:
    with c.engine.begin() as conn:
        recorded = collections.Counter(r[0] for r in conn.execute(select(store.MESSAGE.c.message_id)))
        rows = conn.execute(select(store.OUTBOX.c.purpose, store.OUTBOX.c.message_id, store.OUTBOX.c.state,
                                   store.MESSAGE.c.message_id.label("source"))
                            .join(store.MESSAGE, store.MESSAGE.c.id == store.OUTBOX.c.source_message_id)).all()
    notifications = collections.Counter(r.source for r in rows if r.purpose == "staff_notification")
    relays = collections.Counter(r.source for r in rows if r.purpose == "buyer_reply")
    relay_states = {r.source: r.state for r in rows if r.purpose == "buyer_reply"}
    note_source = {r.message_id: r.source for r in rows if r.purpose == "staff_notification"}
    received = c.smtp.received
    per_message_id = collections.Counter(r.message_id or "" for r in received)
    forwarded = collections.Counter(note_source[r.message_id] for r in received if r.message_id in note_source)
    answers: collections.Counter[str] = collections.Counter()
    for r in received:
        if any(t.lower().endswith(BUYER_RELAY) for t in r.rcpt_tos):
            body = message_from_bytes(r.data, policy=policy.default).get_body(preferencelist=("plain",))
            found = ANSWER.search(body.get_content() if body is not None else "")  # type: ignore[attr-defined]
            answers[found.group(1) if found else "?"] += 1
    return Tally(recorded, notifications, relays, relay_states, per_message_id, forwarded, answers)


def assert_exactly_once(c: Cluster, buyer_ids: list[str], reply_ids: list[str]) -> Tally:
    """Every buyer message recorded once and forwarded once; every staff reply relayed once; nothing twice.

    No exception, SIGSTOP included: a send a daemon had under way when it was frozen is bounded
    by the SMTP timeout (one ``asyncio.wait_for`` around the whole send), and the new holder
    judges it only ``reconcile_after_seconds`` (more than that timeout) after the old lease
    ended. So on waking the old holder's send is cancelled before it writes another byte, or
    the server had taken it already and filed its copy in Sent, where the new holder finds it.
    """
    t = tally(c)
    missing = [m for m in buyer_ids if t.recorded[m] == 0]
    assert not missing, f"{len(missing)} buyer messages never recorded: {missing[:5]}"
    assert all(t.recorded[m] == 1 for m in [*buyer_ids, *reply_ids]), \
        [(m, n) for m, n in t.recorded.items() if n > 1]
    assert all(t.notifications[m] == 1 for m in buyer_ids), \
        [(m, t.notifications[m]) for m in buyer_ids if t.notifications[m] != 1][:5]
    assert all(t.forwarded[m] == 1 for m in buyer_ids), \
        [(m, t.forwarded[m]) for m in buyer_ids if t.forwarded[m] != 1][:5]
    assert not t.smtp_duplicates, t.smtp_duplicates
    assert all(t.relays[m] == 1 and t.relay_states[m] == "sent" for m in reply_ids), \
        [(m, t.relays[m], t.relay_states.get(m)) for m in reply_ids if t.relays[m] != 1 or
         t.relay_states.get(m) != "sent"][:5]
    assert sorted(t.answers.elements()) == sorted(c.replies[m] for m in reply_ids), t.answers
    return t


def when(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["time"]))


# --- leases: who held which account when ---------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """One row of ``lease_history``: ``holder`` held ``account`` from ``start`` to ``end`` (database clock).

    A holding ends at its clean release if there was one, else at its last ``valid_until``.
    """

    account: str
    holder: str
    start: datetime
    end: datetime
    released: bool

    def of(self, node: Node) -> bool:
        return held_by(self.holder, node)


def holdings(engine: Engine) -> list[Holding]:
    """Every row of ``lease_history`` on the database behind ``engine``."""
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT account, holder, acquired_at, valid_until, released_at "
                                 "FROM lease_history ORDER BY account, acquired_at, id")).all()
    return [Holding(r.account, r.holder, r.acquired_at, r.released_at or r.valid_until, r.released_at is not None)
            for r in rows]


def current_holders(c: Cluster) -> dict[str, str]:
    """Account -> holder of its lease now (expired leases left out), by the database's clock."""
    try:
        with c.engine.begin() as conn:
            return dict(conn.execute(text("SELECT account, holder FROM account_lease "
                                          "WHERE expires_at > now()")).all())
    except ProgrammingError:   # the schema is not there yet
        return {}


def held_by(holder: str, node: Node) -> bool:
    """Whether ``holder`` is this node's: holders are ``host:pid:random``, unique per process start."""
    return str(node.pid) in holder.split(":")


def node_of(c: Cluster, holder: str) -> Node | None:
    return next((n for n in c.nodes if held_by(holder, n)), None)


def accounts_of(c: Cluster, node: Node) -> set[str]:
    """The accounts whose lease ``node`` holds now."""
    return {a for a, h in current_holders(c).items() if held_by(h, node)}


def shares(c: Cluster) -> dict[str, int]:
    """Node name -> accounts it holds now."""
    out = {n.name: 0 for n in c.nodes}
    for holder in current_holders(c).values():
        node = node_of(c, holder)
        out[node.name if node else holder] = out.get(node.name if node else holder, 0) + 1
    return out


def balanced(c: Cluster, nodes: list[Node]) -> bool:
    """Every account held, each of ``nodes`` holding its fair share (floor or ceiling of accounts / nodes)."""
    now = current_holders(c)
    if len(now) != len(c.accounts):
        return False
    got = shares(c)
    low, high = len(c.accounts) // len(nodes), -(-len(c.accounts) // len(nodes))
    return all(low <= got.get(n.name, 0) <= high for n in nodes) and sum(got[n.name] for n in nodes) == len(now)


def assert_no_overlap(hs: list[Holding]) -> None:
    """No account held by two daemons at any moment: per account, each holding ends before the next begins."""
    by_account: dict[str, list[Holding]] = collections.defaultdict(list)
    for h in hs:
        by_account[h.account].append(h)
    overlaps = []
    for account, held in by_account.items():
        held.sort(key=lambda h: h.start)
        for a, b in zip(held, held[1:]):
            if b.start < a.end:
                overlaps.append((account, a, b))
    assert not overlaps, f"{len(overlaps)} overlapping holdings, e.g. {overlaps[:3]}"


#: Log lines that show a daemon touching an account: a fetch, a message recorded, a mail sent.
ACTIVITY = re.compile(r"^account \S+: (\d+ new message\(s\) in|\S+ UID \d+ <|sent \S+ <)")
SENT = re.compile(r"^account \S+: sent \S+ <([^>]+)>")
RECORDED = re.compile(r"^account \S+: \S+ UID \d+ <([^>]+)>")


def activity(node: Node) -> list[tuple[str, datetime, str]]:
    """(account, time, message) of every activity line in the node's log."""
    return [(str(e["account"]), when(e), str(e["message"])) for e in node.events()
            if e.get("account") and ACTIVITY.match(str(e.get("message", "")))]


@dataclass
class LeaseAudit:
    checked: int = 0            # activity lines looked at
    logged_late: int = 0        # sends and records inside a holding whose line came after it (frozen in between)

    def __str__(self) -> str:
        return (f"{self.checked} activity lines inside the holdings ({self.logged_late} logged late, timed by the "
                "SMTP server or the message row)")


def assert_activity_within_leases(c: Cluster, hs: list[Holding]) -> LeaseAudit:
    """Every fetch/record/send a node logged for an account happened inside one of its holdings of it.

    Log times and lease times come from the same machine's clock (the database server is local).
    A line is written just after its act, so a daemon frozen between the two (SIGSTOP) writes
    it late: a send is then timed by the SMTP server, which took the message at the end of DATA,
    and a recorded message by its row's ``received_at`` (the daemon's clock as it processed the
    batch, whose transaction the lease fenced).
    """
    accepted = {r.message_id: datetime.fromtimestamp(r.received_at, timezone.utc) for r in c.smtp.received}
    with c.engine.begin() as conn:   # when the daemon processed each message (its clock), before the commit
        processed = {(r.account, r.message_id): r.received_at for r in conn.execute(
            select(store.MESSAGE.c.account, store.MESSAGE.c.message_id, store.MESSAGE.c.received_at))}
    audit, outside = LeaseAudit(), []
    for node in c.nodes:
        held: dict[str, list[Holding]] = collections.defaultdict(list)
        for h in hs:
            if h.of(node):
                held[h.account].append(h)
        for account, at, message in activity(node):
            audit.checked += 1
            if any(h.start <= at <= h.end for h in held[account]):
                continue
            sent, recorded = SENT.match(message), RECORDED.match(message)
            server_at = accepted.get(sent.group(1)) if sent else None
            if recorded:   # a recorded message commits in a fenced transaction: it began inside a holding
                server_at = processed.get((account, recorded.group(1)))
            if server_at is not None and server_at <= at and any(h.start <= server_at <= h.end
                                                                 for h in held[account]):
                audit.logged_late += 1
                continue
            outside.append((node.name, at.isoformat(), server_at.isoformat() if server_at else None,
                            message[:120], [(h.start.isoformat(), h.end.isoformat()) for h in held[account]]))
    assert not outside, f"{len(outside)} activity lines outside the node's leases, e.g. {outside[:3]}"
    return audit
