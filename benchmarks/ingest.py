#!/usr/bin/env python3
"""Ingest benchmark: mailbridge against a plain fetch+parse baseline, in one run.

Fills a real Dovecot mailbox (sandbox, 127.0.0.1) with N generated buyer
messages, then measures, each in its own child process so start-up and peak
memory are counted alike:

  (a) baseline: imapclient fetches every message in batches and parses each
      with the stdlib email package (policy.default);
  (b) ``mailbridge run --once --no-send``: ingest, classify, thread and record
      every message in SQLite with its staff notification queued.

It prints messages per second for both, their ratio (b/a; higher is better),
and the peak RSS of (b) with its backlog reader process (bridge.reader) added
in. (b) starts from nothing: interpreter, imports, an empty SQLite database. Then it measures arrival latency: a running daemon
(IDLE) and an SMTP sink; 20 messages appended one at a time; median and max
from APPEND to the staff notification reaching the SMTP server.

    python benchmarks/ingest.py              # 5,000 messages of ~5 KB
    python benchmarks/ingest.py -n 1000 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchkit import PASSWORD, child, fill, mailbridge, running_daemon, write_config

from bridge.sandbox import DovecotServer, SandboxSMTP, samples

SELLER, STAFF, LIVE = "seller@bench.example", "staff@bench.example", "live@bench.example"

BASELINE = r"""
import sys, email, email.policy
from imapclient import IMAPClient
port, user, password, batch = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = IMAPClient("127.0.0.1", port=port, ssl=False)
c.login(user, password)
c.select_folder("INBOX", readonly=True)
uids = c.search(["ALL"])
n = 0
for i in range(0, len(uids), batch):
    for uid, data in c.fetch(uids[i:i + batch], ["BODY.PEEK[]"]).items():
        email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
        n += 1
c.logout()
print(n)
"""



def latency(root: Path, dovecot: DovecotServer, smtp: SandboxSMTP, count: int) -> list[float]:
    config = write_config(root, "live", dovecot.port, smtp.port, LIVE, STAFF, 200)
    with running_daemon(config, root / "live.log"):
        smtp.clear()
        out = []
        for i, raw in enumerate(samples.buyer_backlog(count, seller_address=LIVE, seed=99)):
            sent_at = time.time()
            dovecot.append(LIVE, "INBOX", raw)
            got = smtp.wait_for(i + 1, timeout=30)
            out.append(got[i].received_at - sent_at)
            time.sleep(0.2)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=5000)
    ap.add_argument("--size", type=int, default=5000, help="approximate bytes per message")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a) and (b); best of each")
    ap.add_argument("--latency", type=int, default=20, help="messages for the latency test (0 skips it)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        users = {SELLER: PASSWORD, STAFF: PASSWORD, LIVE: PASSWORD}
        with DovecotServer(users, root=root / "dovecot") as dovecot, SandboxSMTP(dovecot=None) as smtp:
            messages = samples.buyer_backlog(args.messages, seller_address=SELLER, seed=5, size=args.size)
            avg = sum(map(len, messages)) / len(messages)
            t = time.perf_counter()
            fill(dovecot, SELLER, messages)
            print(f"filled {len(messages)} messages of {avg / 1024:.1f} KiB on average in "
                  f"{time.perf_counter() - t:.1f} s (Dovecot on 127.0.0.1:{dovecot.port})")
            base, bridge, rss = [], [], []
            for r in range(args.rounds):
                secs, _, out = child([sys.executable, "-c", BASELINE, str(dovecot.port), SELLER, PASSWORD,
                                      str(args.batch)], root / "baseline.log")
                assert int(out) == args.messages, out
                base.append(args.messages / secs)
                config = write_config(root, "bench", dovecot.port, smtp.port, SELLER, STAFF, args.batch)
                secs, maxrss, _ = child(mailbridge(config, "run", "--once", "--no-send"), root / "bench.log")
                bridge.append(args.messages / secs)
                rss.append(maxrss / 1024)
                print(f"round {r + 1}: baseline {base[-1]:.0f} msg/s, mailbridge {bridge[-1]:.0f} msg/s, "
                      f"mailbridge peak RSS {rss[-1]:.0f} MiB (with its backlog reader)")
            print(f"(a) baseline fetch + policy.default parse: {max(base):.0f} msg/s")
            print(f"(b) mailbridge run --once (ingest, classify, thread, record, queue): {max(bridge):.0f} msg/s")
            print(f"ratio b/a: {max(bridge) / max(base):.2f}x   peak RSS of (b): {max(rss):.0f} MiB")
            # Each round's two runs are neighbours in time, so their ratio is less at the mercy of
            # a machine whose speed changes between rounds than the ratio of the two bests.
            paired = sorted(b / a for a, b in zip(base, bridge))
            print(f"ratio b/a within each round: median {statistics.median(paired):.2f}x "
                  f"(lowest {paired[0]:.2f}x, highest {paired[-1]:.2f}x)")
            if args.latency:
                lat = latency(root, dovecot, smtp, args.latency)
                print(f"APPEND -> staff notification at the SMTP server, {len(lat)} messages, IDLE: "
                      f"median {statistics.median(lat):.3f} s, max {max(lat):.3f} s")


if __name__ == "__main__":
    main()
