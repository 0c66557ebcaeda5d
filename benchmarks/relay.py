#!/usr/bin/env python3
"""Relay benchmark: staff reply -> buyer, latency and throughput, in one run.

Starts a real Dovecot and an SMTP sink (sandbox, 127.0.0.1) and drives the
``mailbridge`` command in child processes, as an operator would:

  (a) latency: one conversation per reply is prepared first (buyer messages
      forwarded by ``mailbridge run --once``, the staff notifications taken
      from the SMTP sink). Then a running daemon (``mailbridge run``, IDLE)
      gets N staff replies APPENDed to the seller INBOX one at a time; it
      prints the median and max time from each APPEND to the buyer's
      message reaching the SMTP server (target: median under 1.5 s).
  (b) throughput: M conversations prepared the same way, then a backlog of
      M staff replies relayed by one ``mailbridge run --once`` (ingest,
      verify, compose, policy check, send, and the confirmations to staff);
      it prints replies per second, the peak RSS of the child, the buyer
      mails received (must be M) and the duplicates (must be 0).

    python benchmarks/relay.py                     # 20 live replies, a backlog of 1,000
    python benchmarks/relay.py -n 200 --latency 5  # quicker
    python benchmarks/relay.py --latency 0         # throughput only
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import tempfile
import time
from email import message_from_bytes, policy
from pathlib import Path

from benchkit import PASSWORD, child, database_path, fill, mailbridge, running_daemon, stop_on_sigterm, write_config

from bridge.sandbox import DovecotServer, ReceivedMail, SandboxSMTP, samples

SELLER, LIVE, STAFF = "seller@bench.example", "live@bench.example", "staff@bench.example"
BUYER_DOMAIN = "@marketplace.amazon.com"
ANSWER = re.compile(r"\bAnswer (\d+):")



def to_buyers(mails: list[ReceivedMail]) -> list[ReceivedMail]:
    return [m for m in mails if any(r.lower().endswith(BUYER_DOMAIN) for r in m.rcpt_tos)]


def answer_of(mail: ReceivedMail) -> int | None:
    body = message_from_bytes(mail.data, policy=policy.default).get_body(preferencelist=("plain",))
    found = ANSWER.search(body.get_content() if body is not None else "")  # type: ignore[attr-defined]
    return int(found.group(1)) if found else None


def prepare(root: Path, dovecot: DovecotServer, smtp: SandboxSMTP, config: Path, seller: str, count: int,
            seed: int) -> list[bytes]:
    """``count`` buyers write once each; forward them; return one staff reply per notification."""
    fill(dovecot, seller, samples.buyer_backlog(count, buyers=count, seller_address=seller, seed=seed))
    smtp.clear()
    child(mailbridge(config, "run", "--once"), root / "prepare.log")
    notes = [m for m in smtp.received if m.rcpt_tos == (STAFF,)]
    if len(notes) != count:
        raise SystemExit(f"expected {count} staff notifications, got {len(notes)}")
    smtp.clear()
    return [samples.staff_reply(note.data, staff=STAFF, message_id=f"answer.{seed}.{i}@bench.example",
                                text=f"Answer {i}: thank you for your message. Your order is packed and leaves "
                                     "our warehouse tomorrow morning.")
            for i, note in enumerate(notes)]


def wait_for_answer(smtp: SandboxSMTP, i: int, timeout: float = 30.0) -> ReceivedMail:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        mails = smtp.received
        for mail in to_buyers(mails[seen:]):
            if answer_of(mail) == i:
                return mail
        seen = len(mails)
        time.sleep(0.005)
    raise SystemExit(f"reply {i} did not reach the buyer within {timeout:.0f} s")


def latency(root: Path, dovecot: DovecotServer, smtp: SandboxSMTP, count: int, interval: float,
            batch: int) -> list[float]:
    config = write_config(root, "live", dovecot.port, smtp.port, LIVE, STAFF, batch)
    replies = prepare(root, dovecot, smtp, config, LIVE, count, seed=31)
    with running_daemon(config, root / "live.log", database_path(root, "live")):
        out = []
        for i, raw in enumerate(replies):
            appended_at = time.time()
            dovecot.append(LIVE, "INBOX", raw)
            out.append(wait_for_answer(smtp, i).received_at - appended_at)
            time.sleep(interval)
        return out


def throughput(root: Path, dovecot: DovecotServer, smtp: SandboxSMTP, count: int,
               batch: int) -> tuple[float, int, int, int, int]:
    """Returns (seconds, peak RSS KiB, buyer mails received, duplicates, staff confirmations)."""
    config = write_config(root, "backlog", dovecot.port, smtp.port, SELLER, STAFF, batch)
    replies = prepare(root, dovecot, smtp, config, SELLER, count, seed=37)
    fill(dovecot, SELLER, replies)
    run = child(mailbridge(config, "run", "--once"), root / "backlog.log")
    mails = smtp.received
    buyers = to_buyers(mails)
    per_id = collections.Counter(m.message_id for m in mails)
    per_answer = collections.Counter(answer_of(m) for m in buyers)
    duplicates = sum(n - 1 for n in per_id.values() if n > 1) + sum(n - 1 for n in per_answer.values() if n > 1)
    confirmations = sum(1 for m in mails if m.rcpt_tos == (STAFF,))
    return run.seconds, run.peak_rss_kib, len(buyers), duplicates, confirmations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--replies", type=int, default=1000, help="staff replies in the backlog (0 skips it)")
    ap.add_argument("--latency", type=int, default=20, help="replies APPENDed one at a time (0 skips it)")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between two live replies")
    ap.add_argument("--batch", type=int, default=200, help="imap.batch_size")
    args = ap.parse_args()
    stop_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="mailbridge-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        users = {SELLER: PASSWORD, LIVE: PASSWORD, STAFF: PASSWORD}
        # The sink records mail without delivering it: the figures are mailbridge's, not Dovecot's.
        with DovecotServer(users, root=root / "dovecot") as dovecot, SandboxSMTP(dovecot=None) as smtp:
            print(f"Dovecot on 127.0.0.1:{dovecot.port}, SMTP sink on 127.0.0.1:{smtp.port}")
            if args.latency:
                lat = latency(root, dovecot, smtp, args.latency, args.interval, args.batch)
                print(f"(a) APPEND -> buyer mail at the SMTP server, {len(lat)} replies, IDLE: "
                      f"median {statistics.median(lat):.3f} s, max {max(lat):.3f} s (target: median < 1.5 s)")
            if args.replies:
                secs, maxrss, received, duplicates, confirmations = throughput(root, dovecot, smtp, args.replies,
                                                                               args.batch)
                print(f"(b) mailbridge run --once, backlog of {args.replies} staff replies: "
                      f"{args.replies / secs:.0f} replies/s ({secs:.1f} s), peak RSS {maxrss / 1024:.0f} MiB; "
                      f"buyer mails received {received} (want {args.replies}), duplicates {duplicates} (want 0), "
                      f"staff confirmations {confirmations}")


if __name__ == "__main__":
    main()
