#!/usr/bin/env python3
"""Scale-out benchmark: 1, 2 and 3 daemons on one PostgreSQL against one daemon on SQLite, in one run.

A real Dovecot with 20 seller mailboxes and an SMTP sink that counts every
Message-ID (benchkit.SmtpSink), both on 127.0.0.1; PostgreSQL on
127.0.0.1:5432 (trust auth, as the tests use it), one new database per
measurement, dropped after. Daemons are started as an operator starts them
(``mailbridge run``, shipped defaults: IDLE on, log level INFO, lease lengths
as shipped), on one config with 20 ``[[accounts]]`` and
``forward_existing = true``.

  (a) throughput: N daemons are started on empty mailboxes and left to spread
      the 20 accounts between them (every account held, each daemon holding its
      fair share, every account's first pass done); then a backlog of M buyer
      messages per account, APPENDed beforehand to another folder, is MOVEd
      into the 20 INBOXes at once; from the first MOVE to the last staff
      notification accepted by the sink. Messages
      recorded and forwarded per second, for: SQLite with 1 daemon,
      PostgreSQL with 1, 2 and 3 daemons. The four alternate, round after round,
      on a machine that may be busy: the figures that matter are ratios within
      a round, and their medians over the rounds.
      Target: 2 daemons on PostgreSQL >= 1.6x one daemon on PostgreSQL.
  (b) takeover: 2 daemons share the 20 accounts; one is SIGKILLed when about a
      third of a backlog is forwarded. From the kill to the survivor's lease
      on the last of the dead daemon's accounts (lease_history), and to the
      first message of those accounts the survivor records or sends (its log).
      Then the whole backlog must be forwarded: counted per Message-ID at the
      sink (sends the kill left unconfirmed are resent to staff, with their
      Message-ID kept: sent_copies = "none" here, see benchmarks/delivery.py).

    python benchmarks/scaleout.py            # 100 messages per account (2,000), 3 rounds
    python benchmarks/scaleout.py --quick    # 25 per account (500), 1 round: a smoke test
    python benchmarks/scaleout.py --per-account 50 --rounds 5 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchkit import (
    PASSWORD,
    DaemonProcess,
    SmtpSink,
    bench_folder,
    client,
    machine_line,
    run_benchmark,
    sized,
    stop_on_sigterm,
    until,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from bridge.sandbox import DovecotServer

ACCOUNTS = 20
STAFF = "staff@bench.example"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORK = re.compile(r"UID \d+ <|: sent ")     # a daemon's log line for a recorded message or a sent mail
TARGET_TWO = 1.6
SETUPS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3))


def label(kind: str, daemons: int) -> str:
    return f"{'SQLite' if kind == 'sqlite' else 'PostgreSQL'} x{daemons}"


# --- databases -----------------------------------------------------------------------------


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database for one measurement (its SQLAlchemy URL), dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"benchmark: PostgreSQL on 127.0.0.1:5432 is not reachable ({exc}); start it "
                         "(.ci/run does) and run again") from None
    name = f"mailbridge_bench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class Peek:
    """Read-only counts from the daemons' database (SQLite or PostgreSQL), zero until its schema exists."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, pool_size=1, max_overflow=0) if url.startswith("postgresql") \
            else create_engine(url.replace("sqlite:///", "sqlite:///file:") + "?mode=ro&uri=true")

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        try:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql)).all()]
        except (ProgrammingError, OperationalError):   # not created yet (or SQLite's file not there yet)
            return []

    def count(self, sql: str) -> int:
        found = self.rows(sql)
        return int(found[0][0]) if found else 0  # type: ignore[call-overload]

    def holders(self) -> dict[str, str]:
        """Account -> its lease's holder now (PostgreSQL; nothing on SQLite, where one daemon holds all)."""
        return {str(a): str(h) for a, h in self.rows("SELECT account, holder FROM account_lease "
                                                     "WHERE expires_at > now()")}

    def has_leases(self) -> bool:
        return bool(self.rows("SELECT 1 FROM information_schema.tables WHERE table_name = 'account_lease'"))

    def close(self) -> None:
        self.engine.dispose()


# --- the cluster ---------------------------------------------------------------------------


@dataclass
class Cluster:
    """20 new seller mailboxes, a config on one database, N daemons."""

    root: Path
    name: str
    url: str
    sellers: list[str]
    config: Path
    daemons: list[DaemonProcess] = field(default_factory=list)

    def start(self, count: int) -> None:
        for _ in range(count):
            n = len(self.daemons) + 1
            self.daemons.append(DaemonProcess(self.config, self.root / f"{self.name}.d{n}.log"))

    def stop(self) -> None:
        for d in self.daemons:
            d.stop()

    def check_alive(self) -> bool:
        for d in self.daemons:
            d.check_alive()
        return False


def write_config(root: Path, name: str, url: str, sellers: list[str], imap_port: int, smtp_port: int) -> Path:
    lines = ['[daemon]', 'log_format = "json"', '', '[database]', f'url = "{url}"', '']
    for n, seller in enumerate(sellers):
        lines += ['[[accounts]]', f'name = "acct{n + 1:02d}"', 'marketplace = "amazon.com"',
                  f'seller_name = "Seller {n + 1}"', f'seller_address = "{seller}"', f'staff_address = "{STAFF}"',
                  'staff_senders = ["*@bench.example"]', 'forward_existing = true', '',
                  '[accounts.imap]', 'host = "127.0.0.1"', f'port = {imap_port}', 'security = "none"',
                  f'username = "{seller}"', f'password = "{PASSWORD}"', '',
                  '[accounts.smtp]', 'host = "127.0.0.1"', f'port = {smtp_port}', 'security = "none"',
                  'username = ""', 'sent_copies = "none"', '']
    path = root / f"{name}.toml"
    path.write_text("\n".join(lines))
    return path


@contextmanager
def cluster(root: Path, dovecot: DovecotServer, sink: SmtpSink, name: str, kind: str) -> Iterator[Cluster]:
    sellers = [f"{name}-{n + 1:02d}@bench.example" for n in range(ACCOUNTS)]
    for seller in sellers:
        dovecot.add_user(seller, PASSWORD)
    with ExitStack() as stack:
        url = f"sqlite:///{root / name}.db" if kind == "sqlite" else stack.enter_context(postgres_database())
        c = Cluster(root, name, url, sellers, write_config(root, name, url, sellers, dovecot.port, sink.port))
        try:
            yield c
        finally:
            c.stop()


def spread(c: Cluster, peek: Peek, timeout: float) -> float:
    """Wait until every account is held by the fair share and has had its first pass; returns the seconds."""
    started = time.perf_counter()
    low, high = ACCOUNTS // len(c.daemons), -(-ACCOUNTS // len(c.daemons))

    def ready() -> bool:
        c.check_alive()
        first_pass = peek.count("SELECT count(*) FROM mailbox_state WHERE folder = 'INBOX' "
                                "AND last_fetch_at IS NOT NULL") >= ACCOUNTS
        if not first_pass or c.url.startswith("sqlite"):
            return first_pass
        if not peek.has_leases():   # a mailbridge without leases: every daemon works every account
            return True
        held = peek.holders()
        per: dict[str, int] = {}
        for holder in held.values():
            per[holder] = per.get(holder, 0) + 1
        return len(held) == ACCOUNTS and len(per) == len(c.daemons) and all(low <= n <= high for n in per.values())

    until(ready, timeout, f"{len(c.daemons)} daemon(s) to spread {ACCOUNTS} accounts", interval=0.1)
    time.sleep(1.0)   # the accounts that moved last: their new holder logs in and enters IDLE
    return time.perf_counter() - started


STAGING = "Staging"


def in_parallel(c: Cluster, each: Callable[[str], None]) -> None:
    threads = [threading.Thread(target=each, args=(s,)) for s in c.sellers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def stage(dovecot: DovecotServer, c: Cluster, per_account: int, seed: int) -> None:
    """APPEND every mailbox's backlog to a folder the daemons do not watch, before the clock starts.

    APPENDing 2,000 messages costs Dovecot and this process as much CPU as a daemon
    spends on them: done during the measurement, on two cores, it would be measured too.
    """
    backlogs = {s: sized(per_account, 4096, s, seed=seed + n) for n, s in enumerate(c.sellers)}

    def one(seller: str) -> None:
        with client(dovecot, seller) as conn:
            conn.create_folder(STAGING)
            conn.multiappend(STAGING, backlogs[seller])
    in_parallel(c, one)


def release(dovecot: DovecotServer, c: Cluster) -> None:
    """MOVE (RFC 6851) every staged backlog into its INBOX, the 20 mailboxes at once: the backlog arrives."""
    def one(seller: str) -> None:
        with client(dovecot, seller) as conn:
            conn.select_folder(STAGING)
            conn.move(conn.search(["ALL"]), "INBOX")
    in_parallel(c, one)


def fill_all(dovecot: DovecotServer, c: Cluster, per_account: int, seed: int) -> None:
    stage(dovecot, c, per_account, seed)
    release(dovecot, c)


def forwarded_all(sink: SmtpSink, before: int, total: int, c: Cluster) -> Callable[[], bool]:
    return lambda: sink.accepted - before >= total or c.check_alive()


# --- (a) throughput --------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, /proc/stat), to tell what bounds the run."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measure:
    seconds: float
    messages: int
    spread_seconds: float
    daemon_cores: float      # CPU seconds of the daemons per second of the measurement
    machine_cores: float     # busy CPU seconds of the whole machine per second (2 on a saturated 2-core machine)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        """The daemons' CPU per message: what each further daemon needs a core of its own for."""
        return self.daemon_cores * self.seconds / self.messages * 1000


def throughput(root: Path, dovecot: DovecotServer, sink: SmtpSink, kind: str, daemons: int, per_account: int,
               round_no: int, timeout: float) -> Measure:
    name = f"r{round_no}-{kind}{daemons}"
    total = per_account * ACCOUNTS
    with cluster(root, dovecot, sink, name, kind) as c:
        peek = Peek(c.url)
        try:
            c.start(daemons)
            spread_seconds = spread(c, peek, timeout)
            stage(dovecot, c, per_account, seed=round_no * 100)
            before = sink.accepted
            cpu, busy = sum(d.cpu_seconds() for d in c.daemons), busy_seconds()
            started = time.perf_counter()
            release(dovecot, c)
            done = until(forwarded_all(sink, before, total, c), timeout, f"{total} notifications", interval=0.01)
            cpu, busy = sum(d.cpu_seconds() for d in c.daemons) - cpu, busy_seconds() - busy
            recorded = peek.count("SELECT count(*) FROM message")
            if recorded != total or sink.accepted - before != total:
                raise SystemExit(f"benchmark: {name}: {recorded} recorded, {sink.accepted - before} forwarded, "
                                 f"expected {total} of each")
        finally:
            peek.close()
    return Measure(done - started, total, spread_seconds, cpu / (done - started), busy / (done - started))


# --- (b) takeover ------------------------------------------------------------------------------


def log_events(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:   # a line cut by SIGKILL
                continue
    return out


def takeover(root: Path, dovecot: DovecotServer, per_account: int, timeout: float) -> dict[str, object]:
    total = per_account * ACCOUNTS
    with SmtpSink(record_ids=True) as sink, cluster(root, dovecot, sink, "takeover", "postgresql") as c:
        peek = Peek(c.url)
        try:
            c.start(2)
            spread(c, peek, timeout)
            victim, survivor = c.daemons
            fill_all(dovecot, c, per_account, seed=7000)
            until(lambda: sink.accepted >= total // 3 or c.check_alive(), timeout, "a third of the backlog",
                  interval=0.01)
            held = {a for a, h in peek.holders().items() if f":{victim.proc.pid}:" in h}
            killed_at = time.time()
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(30)
            at_kill = sink.accepted
            c.daemons.remove(victim)
            until(lambda: sink.accepted >= total or c.check_alive(), timeout + 120,
                  "the survivor to forward the whole backlog", interval=0.05)
            time.sleep(2)   # a resend after reconciliation would come now
            taken = peek.rows(f"SELECT account, extract(epoch FROM acquired_at) FROM lease_history "
                              f"WHERE holder LIKE '%:{survivor.proc.pid}:%'")
            lease_at = [float(t) for a, t in taken if a in held and float(t) >= killed_at]  # type: ignore[arg-type]
            work = [(datetime.fromisoformat(str(e["time"])).timestamp(), str(e.get("message", "")))
                    for e in log_events(survivor.log) if e.get("account") in held]
            first_work = min((t for t, m in work if t >= killed_at and WORK.search(m)), default=float("nan"))
            recorded = peek.count("SELECT count(*) FROM message")
        finally:
            peek.close()
    assert sink.message_ids is not None
    return {
        "accounts": len(held), "taken": len(lease_at), "forwarded_at_kill": at_kill,
        "lease_seconds": max(lease_at) - killed_at if lease_at else float("nan"),
        "first_work_seconds": first_work - killed_at,
        "recorded": recorded, "distinct_forwarded": len(sink.message_ids),
        "sent_twice": sum(1 for n in sink.message_ids.values() if n > 1), "total": total,
    }


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-account", type=int, default=100, help="buyer messages per account (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the four set-ups (default 3)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds any one wait may take (default 600)")
    ap.add_argument("--no-takeover", action="store_true", help="skip (b)")
    ap.add_argument("--quick", action="store_true", help="25 messages per account, one round: a smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, configs)")
    args = ap.parse_args()
    if args.quick:
        args.per_account, args.rounds = 25, 1
    stop_on_sigterm()
    print(machine_line(), flush=True)
    results: dict[tuple[str, int], list[Measure]] = {s: [] for s in SETUPS}
    with bench_folder(args.keep) as root:
        with DovecotServer({STAFF: PASSWORD}, root=root / "dovecot") as dovecot, SmtpSink() as sink:
            total = args.per_account * ACCOUNTS
            print(f"(a) {total} buyer messages over {ACCOUNTS} accounts, {args.rounds} round(s)", flush=True)
            for r in range(args.rounds):
                line = []
                for kind, daemons in SETUPS:
                    m = throughput(root, dovecot, sink, kind, daemons, args.per_account, r, args.timeout)
                    results[(kind, daemons)].append(m)
                    line.append(f"{label(kind, daemons)} {m.rate:.0f} msg/s ({m.seconds:.2f} s, daemons "
                                f"{m.daemon_cores:.2f} / machine {m.machine_cores:.2f} cores busy; accounts spread "
                                f"in {m.spread_seconds:.1f} s)")
                print(f"    round {r + 1}: " + "; ".join(line), flush=True)
            took = None
            if not args.no_takeover:
                print("(b) SIGKILL one of 2 daemons at about a third of the backlog", flush=True)
                took = takeover(root, dovecot, args.per_account, args.timeout)
                print(f"    {took}", flush=True)

    pg1 = results[("postgresql", 1)]
    print()
    for kind, daemons in SETUPS:
        ms = results[(kind, daemons)]
        ratios = [m.rate / base.rate for m, base in zip(ms, pg1)]
        print(f"(a) {label(kind, daemons):14} median {statistics.median(m.rate for m in ms):6.0f} msg/s "
              f"(rounds {', '.join(f'{m.rate:.0f}' for m in ms)}); against PostgreSQL x1 per round "
              f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}x); cores busy: "
              f"daemons {statistics.median(m.daemon_cores for m in ms):.2f}, machine "
              f"{statistics.median(m.machine_cores for m in ms):.2f} of {os.cpu_count()}; daemons' CPU "
              f"{statistics.median(m.cpu_ms_per_message for m in ms):.2f} ms per message")
    two = statistics.median(m.rate / base.rate for m, base in zip(results[("postgresql", 2)], pg1))
    misses = []
    if two < TARGET_TWO:
        misses.append(f"(a) 2 daemons {two:.2f}x < {TARGET_TWO}x one daemon on PostgreSQL")
    if took is not None:
        print(f"(b) SIGKILL after {took['forwarded_at_kill']} of {took['total']} forwarded: the survivor held the "
              f"last of the dead daemon's {took['accounts']} accounts {took['lease_seconds']:.1f} s after the kill "
              f"and first recorded or sent mail of theirs {took['first_work_seconds']:.1f} s after it; "
              f"{took['recorded']} recorded, {took['distinct_forwarded']} distinct Message-IDs forwarded, "
              f"{took['sent_twice']} of them twice to staff (sends the kill left unconfirmed: with sent_copies = "
              f"\"none\" nothing can vouch for them, so they are resent to staff with their Message-ID)")
        if took["taken"] != took["accounts"] or took["recorded"] != took["total"] \
                or took["distinct_forwarded"] != took["total"]:
            misses.append("(b) accounts not taken over or messages lost")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("targets: " + ("all met" if not misses else "missed: " + "; ".join(misses)))


if __name__ == "__main__":
    run_benchmark(main)
