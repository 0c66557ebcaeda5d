#!/usr/bin/env python3
"""Ingest benchmark: a real ``mailbridge run`` against a plain fetch + parse baseline, in one run.

A real Dovecot (bridge.sandbox) and an SMTP sink that accepts and forgets
(benchkit.SmtpSink), both on 127.0.0.1 only, in a temporary folder; generated
Amazon buyer messages of about 4 KB (bridge.sandbox.samples).
The daemon is started as an operator starts it (``mailbridge run``, shipped
defaults: IDLE on, log level INFO, SQLite), with ``forward_existing = true`` so
every message is forwarded to staff, as after a downtime. Its progress is read
from its database, read-only: the UID checkpoint moves in the same transaction
as a message's row and its staff notification (outbox row).

The baseline is what any client must do with the same mail: imapclient fetches
it in batches (``BODY.PEEK[]``) and the stdlib parses each message
(``email.message_from_bytes(..., policy=policy.default)``, then its text body).
Baseline and daemon alternate, round after round, on a machine that may be
busy, so the figures that matter are the ratios within the run:
ratio = mailbridge speed / baseline speed (> 1: faster than the baseline).

  (a) backlog: ``mailbridge run`` started on a mailbox of N messages; from
      process start to the last message recorded. Baseline: a process that
      starts, logs in, fetches and parses the same N; from start to exit.
  (b) steady state: an idle daemon (first pass done, in IDLE) receives a burst
      of B messages, APPENDed 50 to a command; from the first APPEND to the
      last staff notification queued. Baseline: fetch + parse of those B once
      they are in the mailbox (timed from SELECT to the last parse: the daemon
      was started and logged in already).
  (c) arrival latency: 20 messages APPENDed one at a time to an idle daemon;
      from each APPEND to its staff notification queued.

It also prints the daemon's peak resident memory (the kernel's high-water
mark, VmHWM), and to tell where time goes: CPU seconds per message of both
sides, when the first batch was recorded (start-up), when a burst's last
notification was sent, and how long the IMAP server itself takes to announce
an APPEND to a bare idling client (Dovecot: about 0.5 s, part of every (c)).
Targets: (a) >= 0.8x, (c) median <= 0.6 s, peak RSS <= 200 MiB.

    python benchmarks/ingest.py                 # 5,000 / 2,000 / 20, three rounds
    python benchmarks/ingest.py --quick         # 500 / 200 / 5, one round: a smoke test
    python benchmarks/ingest.py --messages 1000 --burst 500 --rounds 2 --latency 10
    python benchmarks/ingest.py --quick --keep  # keep the logs and databases to look into
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchkit import (
    PASSWORD,
    Peek,
    SmtpSink,
    child,
    client,
    daemon,
    database_path,
    fill,
    running_daemon,
    sized,
    stop_on_sigterm,
    until,
    write_config,
)

from bridge.sandbox import DovecotServer

SELLER, STAFF = "seller@bench.example", "staff@bench.example"
BURST_CHUNK = 50          # messages per MULTIAPPEND in the burst
TARGET_BACKLOG, TARGET_LATENCY, TARGET_RSS = 0.8, 0.6, 200.0

BASELINE = r"""
import sys, time
import email, email.policy
from imapclient import IMAPClient
port, user, password, batch = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
c.login(user, password)
started, cpu = time.perf_counter(), time.process_time()
c.select_folder("INBOX", readonly=True)
uids = sorted(c.search(["ALL"]))
n = 0
for i in range(0, len(uids), batch):
    for uid, data in c.fetch(uids[i:i + batch], ["BODY.PEEK[]"]).items():
        msg = email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        n += 1
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
c.logout()
print(n, elapsed, cpu)
"""


@dataclass
class Rounds:
    """Seconds (and CPU seconds) per round for the baseline and for mailbridge, on the same messages."""

    messages: int
    baseline: list[float] = field(default_factory=list)
    bridge: list[float] = field(default_factory=list)
    baseline_cpu: list[float] = field(default_factory=list)
    bridge_cpu: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        # Each round's two runs are neighbours in time, so their ratio is less at the mercy
        # of a machine whose speed changes between rounds than the ratio of the two bests.
        return [b / m for b, m in zip(self.baseline, self.bridge)]

    def best_ratio(self) -> float:
        return min(self.baseline) / min(self.bridge)

    def report(self, label: str) -> str:
        rates = f"baseline best {self.messages / min(self.baseline):.0f} msg/s, " \
                f"mailbridge best {self.messages / min(self.bridge):.0f} msg/s"
        per_round = ", ".join(f"{r:.2f}" for r in self.ratios())
        cpu = (f"CPU per message: baseline {min(self.baseline_cpu) / self.messages * 1000:.2f} ms, "
               f"mailbridge {min(self.bridge_cpu) / self.messages * 1000:.2f} ms (least of the rounds)")
        return (f"{label}: ratio {self.best_ratio():.2f}x best-of ({rates}); per round {per_round} "
                f"(median {statistics.median(self.ratios()):.2f}x)\n    {cpu}")


@dataclass(frozen=True)
class Baseline:
    seconds: float            # process start to exit
    cpu_seconds: float
    work_seconds: float       # SELECT to the last parse (no interpreter start-up, no login)
    work_cpu_seconds: float


def baseline(root: Path, port: int, user: str, batch: int, expect: int) -> Baseline:
    """Run the baseline in a fresh process."""
    run = child([sys.executable, "-c", BASELINE, str(port), user, PASSWORD, str(batch)], root / "baseline.log")
    n, work, work_cpu = run.stdout.split()
    if int(n) != expect:
        raise SystemExit(f"benchmark: the baseline read {n} messages, expected {expect}")
    return Baseline(run.seconds, run.cpu_seconds, float(work), float(work_cpu))


def check_recorded(db: Path, count: int) -> None:
    peek = Peek(db)
    try:
        messages = peek.count("SELECT count(*) FROM message")
        notes = peek.count("SELECT count(*) FROM outbox WHERE purpose = 'staff_notification'")
    finally:
        peek.close()
    if messages != count or notes != count:
        raise SystemExit(f"benchmark: {db.name}: {messages} messages recorded and {notes} notifications queued, "
                         f"expected {count} of each")


def backlog(root: Path, dovecot: DovecotServer, smtp: SmtpSink, args: argparse.Namespace,
            rss: list[float]) -> Rounds:
    messages = sized(args.messages, args.size, SELLER, seed=5)
    t = time.perf_counter()
    fill(dovecot, SELLER, messages)
    print(f"(a) filled {len(messages)} messages of {sum(map(len, messages)) / len(messages) / 1024:.1f} KiB "
          f"on average in {time.perf_counter() - t:.1f} s")
    last_uid = max(dovecot.uids(SELLER))
    result = Rounds(len(messages))
    for r in range(args.rounds):
        base = baseline(root, dovecot.port, SELLER, args.batch, len(messages))
        result.baseline.append(base.seconds)
        result.baseline_cpu.append(base.cpu_seconds)
        name = f"backlog{r}"
        config = write_config(root, name, dovecot.port, smtp.port, SELLER, STAFF, args.batch)
        peek = Peek(database_path(root, name))
        first_batch = 0.0

        def recorded_all() -> bool:
            nonlocal first_batch
            checkpoint = peek.checkpoint()
            if checkpoint and not first_batch:
                first_batch = time.perf_counter()
            return checkpoint == last_uid or proc.check_alive()

        try:
            with daemon(config, root / f"{name}.log") as proc:
                done = until(recorded_all, args.timeout, f"the daemon to record {len(messages)} messages")
                result.bridge.append(done - proc.started)
                result.bridge_cpu.append(proc.cpu_seconds())
                rss.append(proc.peak_rss_mib())
        finally:
            peek.close()
        check_recorded(database_path(root, name), len(messages))
        print(f"    round {r + 1}: baseline {base.seconds:.2f} s (CPU {base.cpu_seconds:.2f} s); mailbridge "
              f"{result.bridge[-1]:.2f} s (CPU {result.bridge_cpu[-1]:.2f} s; first batch recorded at "
              f"{first_batch - proc.started:.2f} s); ratio {result.ratios()[-1]:.2f}x; peak RSS {rss[-1]:.0f} MiB",
              flush=True)
    return result


def steady(root: Path, dovecot: DovecotServer, smtp: SmtpSink, args: argparse.Namespace,
           rss: list[float]) -> Rounds:
    result = Rounds(args.burst)
    for r in range(args.rounds):
        user = f"burst{r}@bench.example"
        dovecot.add_user(user, PASSWORD)
        burst = sized(args.burst, args.size, user, seed=100 + r)
        name = f"steady{r}"
        config = write_config(root, name, dovecot.port, smtp.port, user, STAFF, args.batch)
        db = database_path(root, name)
        with running_daemon(config, root / f"{name}.log", db) as proc, client(dovecot, user) as c:
            peek = Peek(db)
            try:
                cpu_before = proc.cpu_seconds()
                first = time.perf_counter()
                for i in range(0, len(burst), BURST_CHUNK):
                    c.multiappend("INBOX", burst[i:i + BURST_CHUNK])
                appended = time.perf_counter() - first
                c.select_folder("INBOX", readonly=True)
                last_uid = max(c.search(["ALL"]))
                done = until(lambda: peek.checkpoint() == last_uid or proc.check_alive(), args.timeout,
                             f"the daemon to record a burst of {len(burst)}")
                result.bridge.append(done - first)
                result.bridge_cpu.append(proc.cpu_seconds() - cpu_before)
                # Let it send the notifications first: the baseline gets a quiet machine too.
                sent = until(lambda: peek.idle() or proc.check_alive(), args.timeout, "the outbox to drain", 0.05)
                rss.append(proc.peak_rss_mib())
            finally:
                peek.close()
        check_recorded(db, len(burst))
        base = baseline(root, dovecot.port, user, args.batch, len(burst))
        result.baseline.append(base.work_seconds)
        result.baseline_cpu.append(base.work_cpu_seconds)
        print(f"    round {r + 1}: baseline {base.work_seconds:.2f} s (CPU {base.work_cpu_seconds:.2f} s); mailbridge "
              f"{result.bridge[-1]:.2f} s (CPU {result.bridge_cpu[-1]:.2f} s; the APPENDs took {appended:.2f} s; "
              f"all notifications sent at {sent - first:.2f} s); ratio {result.ratios()[-1]:.2f}x; "
              f"peak RSS {rss[-1]:.0f} MiB", flush=True)
    return result


def latency(root: Path, dovecot: DovecotServer, smtp: SmtpSink, args: argparse.Namespace,
            rss: list[float]) -> list[float]:
    user = "live@bench.example"
    dovecot.add_user(user, PASSWORD)
    config = write_config(root, "live", dovecot.port, smtp.port, user, STAFF, args.batch)
    db = database_path(root, "live")
    out = []
    with running_daemon(config, root / "live.log", db) as proc, client(dovecot, user) as c:
        peek = Peek(db)
        try:
            for i, raw in enumerate(sized(args.latency, args.size, user, seed=99)):
                appended = time.perf_counter()
                c.append("INBOX", raw)
                done = until(lambda: (peek.checkpoint() or 0) >= i + 1 or proc.check_alive(), 30,
                             f"message {i + 1} to be recorded", interval=0.001)
                out.append(done - appended)
                until(lambda: peek.idle() or proc.check_alive(), 30, "the notification to be sent", 0.02)
                time.sleep(0.2)
            rss.append(proc.peak_rss_mib())
        finally:
            peek.close()
    return out


def server_notice_delay(dovecot: DovecotServer, count: int, size: int) -> list[float]:
    """APPEND to the server's EXISTS on a bare idling imapclient: the part of (c) that is the server's."""
    user = "probe@bench.example"
    dovecot.add_user(user, PASSWORD)
    out = []
    with client(dovecot, user) as watcher, client(dovecot, user) as writer:
        watcher.select_folder("INBOX", readonly=True)
        for raw in sized(count, size, user, seed=98):
            watcher.idle()
            appended = time.perf_counter()
            writer.append("INBOX", raw)
            deadline = appended + 30
            while not any(len(r) > 1 and r[1] == b"EXISTS" for r in watcher.idle_check(timeout=1)):
                if time.perf_counter() > deadline:
                    raise SystemExit("benchmark: the IMAP server never announced an APPEND in IDLE")
            out.append(time.perf_counter() - appended)
            watcher.idle_done()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000, help="backlog size for (a) (default 5000)")
    ap.add_argument("--burst", type=int, default=2000, help="burst size for (b) (default 2000; 0 skips it)")
    ap.add_argument("--latency", type=int, default=20, help="messages for (c) (default 20; 0 skips it)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) and of (b) (default 3)")
    ap.add_argument("--size", type=int, default=4096, help="average bytes per message (default 4096)")
    ap.add_argument("--batch", type=int, default=200, help="imap.batch_size, and the baseline's batch (default 200)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds any one measurement may take (default 600)")
    ap.add_argument("--quick", action="store_true", help="500 / 200 / 5 messages, one round: a smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases) to look into")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.burst, args.latency, args.rounds = 500, 200, 5, 1
    if args.messages < 1 or args.rounds < 1:
        ap.error("--messages and --rounds must be at least 1")
    stop_on_sigterm()

    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"at the start; Python {sys.version.split()[0]}", flush=True)
    rss: list[float] = []
    root = Path(tempfile.mkdtemp(prefix="mailbridge-bench-"))
    try:
        root.chmod(0o755)   # Dovecot's processes must reach the mail folders under it
        with DovecotServer({SELLER: PASSWORD, STAFF: PASSWORD}, root=root / "dovecot") as dovecot, \
                SmtpSink() as smtp:
            print(f"Dovecot on 127.0.0.1:{dovecot.port}, SMTP sink on 127.0.0.1:{smtp.port}", flush=True)
            a = backlog(root, dovecot, smtp, args, rss)
            b = steady(root, dovecot, smtp, args, rss) if args.burst else None
            lat = latency(root, dovecot, smtp, args, rss) if args.latency else []
            server = server_notice_delay(dovecot, min(args.latency, 10), args.size) if args.latency else []
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(a.report(f"(a) backlog of {a.messages}, process start to last recorded"))
    if b is not None:
        print(b.report(f"(b) burst of {b.messages} into an idle daemon, first APPEND to last notification queued"))
    if lat:
        print(f"(c) IDLE arrival, APPEND to notification queued, {len(lat)} messages: "
              f"median {statistics.median(lat):.3f} s, max {max(lat):.3f} s")
        print(f"    of which the IMAP server's own notice: a bare imapclient in IDLE sees an APPEND after "
              f"median {statistics.median(server):.3f} s, max {max(server):.3f} s ({len(server)} messages)")
    print(f"peak RSS of the daemon: {max(rss):.0f} MiB (highest of {len(rss)} daemons)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    misses = []
    if a.best_ratio() < TARGET_BACKLOG:
        misses.append(f"(a) {a.best_ratio():.2f}x < {TARGET_BACKLOG}x")
    if lat and statistics.median(lat) > TARGET_LATENCY:
        misses.append(f"(c) median {statistics.median(lat):.3f} s > {TARGET_LATENCY} s")
    if max(rss) > TARGET_RSS:
        misses.append(f"peak RSS {max(rss):.0f} MiB > {TARGET_RSS:.0f} MiB")
    print("targets: " + ("all met" if not misses else "missed: " + "; ".join(misses)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nbenchmark: interrupted; daemons stopped and the temporary folder removed", file=sys.stderr)
        sys.exit(130)
