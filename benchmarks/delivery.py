#!/usr/bin/env python3
"""Delivery benchmark: the outbox draining a backlog against a bare aiosmtplib loop, in one run.

A real Dovecot (bridge.sandbox) and an SMTP sink that accepts and forgets
(benchkit.SmtpSink), both on 127.0.0.1 only, in a temporary folder. N buyer
messages of about 4 KB are ingested once by ``mailbridge run --once --no-send``
(N staff notifications queued); each measurement starts from a copy of that
database, so every drain sends the same N messages.

  (a) throughput: ``mailbridge run --once`` draining the N notifications, process
      start to exit, against a bare aiosmtplib loop in a child process that sends
      the same N messages (the outbox's own bytes and envelopes) over one
      connection to the same sink, process start to exit. Rounds alternate;
      ratio = mailbridge speed / bare loop speed (target >= 0.5x).
  (b) SIGKILL: the same drain killed when about half has gone, then
      ``mailbridge run --once`` again once the claims are old enough to judge
      (``reconcile_after_seconds`` = 3, above the SMTP timeout of 2.5 s). Counted per Message-ID at the sink:
      delivered once, delivered again with the same Message-ID (an interrupted
      send the Sent folder could not vouch for: sent_copies = "none" here),
      missing; and mail to buyers sent twice (must be 0).
  (c) a limit: M messages drained by ``run --once`` with ``max_per_minute = 120``
      against a sink that refuses ("451 4.7.0 ... rate") over 120 a minute, as a
      provider does. The drain must take the time the limit says (a sliding
      minute: ceil(M / 120) - 1 minutes) with no 4xx from the sink. Then
      (c') the same without telling mailbridge the limit: the sink's throttle
      replies pause the account, counted (no retry storm: about one per pause).

    python benchmarks/delivery.py                       # 5,000 messages, 3 rounds, (c) with 240
    python benchmarks/delivery.py --quick               # 500 messages, 1 round, (c) with 130
    python benchmarks/delivery.py --limited 0           # skip (c)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchkit import (
    PASSWORD,
    SmtpSink,
    bench_folder,
    child,
    fill,
    machine_line,
    mailbridge,
    run_benchmark,
    sized,
    stop_on_sigterm,
    until,
)

from bridge.sandbox import DovecotServer, config_toml

SELLER, LIMITED, STAFF = "seller@bench.example", "limited@bench.example", "staff@bench.example"
TARGET_RATIO = 0.5
LIMIT = 120

BARE_LOOP = r"""
import asyncio, json, sys, time
import aiosmtplib
port, path = int(sys.argv[1]), sys.argv[2]
with open(path) as f:
    mails = [(m["from"], m["to"], bytes.fromhex(m["raw"])) for m in map(json.loads, f)]

async def main():
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
    await smtp.connect()
    for sender, recipients, raw in mails:
        errors, _ = await smtp.sendmail(sender, recipients, raw)
        assert not errors, errors       # a partial refusal does not raise: check the result
    await smtp.quit()
    return len(mails)

print(asyncio.run(main()))
"""


def write_config(root: Path, name: str, db: Path, imap_port: int, smtp_port: int, seller: str,
                 smtp: dict[str, object] | None = None) -> Path:
    path = root / f"{name}.toml"
    path.write_text(config_toml(
        database=f"sqlite:///{db}", seller=seller, staff=STAFF, imap_port=imap_port, smtp_port=smtp_port,
        imap_password=PASSWORD, name="bench", seller_name="Bench Outdoor",
        sections={"account": {"forward_existing": True}, "outbox": {"reconcile_after_seconds": 3},
                  "smtp": {"sent_copies": "none", "timeout_seconds": 2.5, **(smtp or {})}}))
    return path


def copy_db(source: Path, target: Path) -> Path:
    """A copy of a closed SQLite database (its WAL folded in first)."""
    conn = sqlite3.connect(source)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return target


def outbox_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    finally:
        conn.close()


def queued_mail(db: Path, path: Path) -> int:
    """The queued rows' envelopes and bytes, one JSON line each, for the bare loop."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    n = 0
    with path.open("w") as out:
        for sender, recipients, raw in conn.execute(
                "SELECT envelope_from, recipients, raw FROM outbox WHERE state = 'queued' ORDER BY id"):
            out.write(json.dumps({"from": sender, "to": json.loads(recipients), "raw": bytes(raw).hex()}) + "\n")
            n += 1
    conn.close()
    return n


def prepare(root: Path, dovecot: DovecotServer, smtp: SmtpSink, seller: str, count: int, size: int,
            name: str) -> Path:
    """``count`` buyer messages ingested (notifications queued, nothing sent); the database to copy from."""
    fill(dovecot, seller, sized(count, size, seller, seed=17))
    db = root / f"{name}.db"
    config = write_config(root, name, db, dovecot.port, smtp.port, seller)
    run = child(mailbridge(config, "run", "--once", "--no-send"), root / f"{name}.log")
    counts = outbox_counts(db)
    if counts != {"queued": count}:
        raise SystemExit(f"benchmark: {name}: expected {count} queued notifications, found {counts}")
    print(f"    ingest: {count} messages recorded and notifications queued by run --once --no-send in "
          f"{run.seconds:.2f} s ({count / run.seconds:.0f} msg/s)", flush=True)
    return db


def throughput(root: Path, dovecot: DovecotServer, smtp: SmtpSink, queued: Path, count: int,
               rounds: int) -> tuple[list[float], list[float]]:
    mails = root / "mails.jsonl"
    if queued_mail(queued, mails) != count:
        raise SystemExit("benchmark: the queued mail could not be read back")
    bare, bridge = [], []
    for r in range(rounds):
        before = smtp.accepted
        run = child([sys.executable, "-c", BARE_LOOP, str(smtp.port), str(mails)], root / "bare.log")
        if int(run.stdout) != count or smtp.accepted - before != count:
            raise SystemExit(f"benchmark: the bare loop sent {run.stdout.strip()}, the sink took "
                             f"{smtp.accepted - before}")
        bare.append(run.seconds)
        db = copy_db(queued, root / f"drain{r}.db")
        config = write_config(root, f"drain{r}", db, dovecot.port, smtp.port, SELLER)
        before = smtp.accepted
        drained = child(mailbridge(config, "run", "--once"), root / f"drain{r}.log")
        if outbox_counts(db) != {"sent": count} or smtp.accepted - before != count:
            raise SystemExit(f"benchmark: run --once left {outbox_counts(db)}; the sink took {smtp.accepted - before}")
        bridge.append(drained.seconds)
        print(f"    round {r + 1}: bare aiosmtplib loop {run.seconds:.2f} s ({count / run.seconds:.0f} msg/s); "
              f"mailbridge run --once {drained.seconds:.2f} s ({count / drained.seconds:.0f} msg/s, CPU "
              f"{drained.cpu_seconds:.2f} s); ratio {run.seconds / drained.seconds:.2f}x", flush=True)
    return bare, bridge


def sigkill(root: Path, dovecot: DovecotServer, queued: Path, count: int) -> dict[str, object]:
    """Kill the drain at about half, finish it with another run --once, count per Message-ID."""
    with SmtpSink(record_ids=True) as sink:
        db = copy_db(queued, root / "killed.db")
        config = write_config(root, "killed", db, dovecot.port, sink.port, SELLER)
        log = root / "killed.log"
        with log.open("ab") as err:
            proc = subprocess.Popen(mailbridge(config, "run", "--once"), stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        try:
            until(lambda: sink.accepted >= count // 2 or proc.poll() is not None, 600, "half the drain")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        at_kill, left = sink.accepted, outbox_counts(db)
        time.sleep(3.5)        # reconcile_after_seconds = 3: the dead process's claims are judged
        child(mailbridge(config, "run", "--once", log_level="INFO"), log)
        assert sink.message_ids is not None
        ids = sink.message_ids
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = dict(conn.execute("SELECT message_id, audience FROM outbox").fetchall())
        conn.close()
        text = log.read_text(errors="replace")
        return {
            "accepted_at_kill": at_kill, "outbox_at_kill": left, "outbox_after": outbox_counts(db),
            "delivered_once": sum(1 for mid in rows if ids[mid] == 1),
            "delivered_again_same_message_id": sum(1 for mid in rows if ids[mid] > 1),
            "missing": sum(1 for mid in rows if ids[mid] == 0),
            "buyer_duplicates": sum(1 for mid, audience in rows.items() if audience == "buyer" and ids[mid] > 1),
            "foreign": sum(1 for mid in ids if mid not in rows),
            "reconciled_resent_to_staff": text.count("outcome unknown, resent to staff"),
            "reconciled_unknown": text.count("outcome unknown: a person must check"),
        }


def limited(root: Path, dovecot: DovecotServer, count: int, size: int, told: bool) -> dict[str, float]:
    """``count`` messages drained by run --once against a sink that allows 120 a minute."""
    with SmtpSink(limit_per_minute=LIMIT) as sink:
        name = "limited" if told else "untold"
        db = copy_db(root / "limited-queued.db", root / f"{name}.db")
        config = write_config(root, name, db, dovecot.port, sink.port, LIMITED,
                              {"max_per_minute": LIMIT} if told else None)
        if told:
            run = child(mailbridge(config, "run", "--once", log_level="INFO"), root / f"{name}.log")
            seconds, left = run.seconds, outbox_counts(db)
        else:
            # Not told the limit, run --once stops at the first throttle pause: a daemon sends the rest.
            log = root / f"{name}.log"
            with log.open("ab") as err:
                proc = subprocess.Popen(mailbridge(config, "run", log_level="INFO"), stdout=subprocess.DEVNULL,
                                        stderr=err, start_new_session=True)
            started = time.perf_counter()
            try:
                done = until(lambda: sink.accepted >= count, 900, f"{count} messages through the throttling sink",
                             interval=0.05)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
            seconds, left = done - started, outbox_counts(db)
        pauses = (root / f"{name}.log").read_text(errors="replace").count("sending paused for")
        return {"seconds": seconds, "accepted": sink.accepted, "refused": sink.refused, "pauses": pauses,
                "sent": left.get("sent", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000, help="backlog for (a) and (b) (default 5000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) (default 3)")
    ap.add_argument("--limited", type=int, default=240, help="messages for (c) (default 240; 0 skips (c))")
    ap.add_argument("--size", type=int, default=4096, help="average bytes per buyer message (default 4096)")
    ap.add_argument("--quick", action="store_true", help="500 messages, one round, 130 for (c): a smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.rounds, args.limited = 500, 1, 130
    stop_on_sigterm()
    print(machine_line(), flush=True)
    with bench_folder(args.keep) as root:
        with DovecotServer({SELLER: PASSWORD, LIMITED: PASSWORD, STAFF: PASSWORD}, root=root / "dovecot") as dovecot, \
                SmtpSink() as smtp:
            print(f"(a) {args.messages} staff notifications, drained {args.rounds}x", flush=True)
            queued = prepare(root, dovecot, smtp, SELLER, args.messages, args.size, "queued")
            bare, bridge = throughput(root, dovecot, smtp, queued, args.messages, args.rounds)
            print("(b) SIGKILL at about half the drain", flush=True)
            killed = sigkill(root, dovecot, queued, args.messages)
            print(f"    {killed}", flush=True)
            told = untold = None
            if args.limited:
                print(f"(c) {args.limited} messages, max_per_minute = {LIMIT}, the sink refusing over {LIMIT} a minute",
                      flush=True)
                prepare(root, dovecot, smtp, LIMITED, args.limited, args.size, "limited-queued")
                told = limited(root, dovecot, args.limited, args.size, told=True)
                print(f"    told the limit: {told}", flush=True)
                untold = limited(root, dovecot, args.limited, args.size, told=False)
                print(f"    not told: {untold}", flush=True)

    ratios = [b / m for b, m in zip(bare, bridge)]
    n = args.messages
    print()
    print(f"(a) {n} messages: ratio {min(bare) / min(bridge):.2f}x best-of (bare aiosmtplib loop best "
          f"{n / min(bare):.0f} msg/s, mailbridge run --once best {n / min(bridge):.0f} msg/s); per round "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x)")
    print(f"(b) SIGKILL after {killed['accepted_at_kill']} accepted: {killed['delivered_once']} delivered once, "
          f"{killed['delivered_again_same_message_id']} delivered again with the same Message-ID after "
          f"reconciliation ({killed['reconciled_resent_to_staff']} interrupted sends queued again for staff), "
          f"{killed['missing']} missing, {killed['buyer_duplicates']} duplicates to buyers; outbox after: "
          f"{killed['outbox_after']}")
    misses = []
    if told is not None and untold is not None:
        expected = (math.ceil(args.limited / LIMIT) - 1) * 60
        print(f"(c) {args.limited} at max_per_minute = {LIMIT}: {told['seconds']:.1f} s (the limit says about "
              f"{expected} s), {told['refused']:.0f} refusals (4xx) from the sink, {told['pauses']:.0f} pauses")
        print(f"(c') not told the limit: {untold['seconds']:.1f} s, {untold['refused']:.0f} refusals (4xx) for "
              f"{untold['accepted']:.0f} messages, {untold['pauses']:.0f} account pauses")
        if told["refused"] or told["seconds"] < expected:
            misses.append("(c) the limit was not kept")
    if min(bare) / min(bridge) < TARGET_RATIO:
        misses.append(f"(a) {min(bare) / min(bridge):.2f}x < {TARGET_RATIO}x")
    if killed["missing"] or killed["buyer_duplicates"]:
        misses.append("(b) mail missing or sent twice to a buyer")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("targets: " + ("all met" if not misses else "missed: " + "; ".join(misses)))


if __name__ == "__main__":
    run_benchmark(main)
