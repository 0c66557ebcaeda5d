#!/usr/bin/env python3
"""Orders and feedback benchmark, in one run.

Import part: N generated rows of an *Amazon Fulfilled Shipments* report (tab-
separated, written to a temporary file; about 1.4 rows per order, a tenth of
them with an estimated arrival) are imported into a fresh SQLite database, in
alternating rounds, by

  (a) baseline: the csv module reads the file and an ``executemany`` INSERT of
      every row goes into one plain table of the same SQLite database kind
      (``bridge.store.engine.open_database``: same pragmas), in transactions of
      the same number of rows as the import's chunks;
  (b) ``bridge.services.orders.import_report``: the layout detected, each row
      read and checked, rows merged per order, orders and items upserted.

Each runs in its own child process, so start-up and peak memory are counted
alike. It prints rows per second for both, their ratio (b/a; target >= 0.5) and
the peak RSS of (b).

Dispatcher part: two fresh databases are filled (by the benchmark's own
executemany INSERTs) with 10,000 and 1,000,000 orders and scheduled feedback
requests, 100 of them due at each measured tick. A child process runs
``FeedbackDispatcher.tick()`` (claim, check every rule again, render, guard,
queue in the outbox: one transaction per request) once to warm up, then five
times, each with the next 100 due; tick times exclude start-up. It prints the
median tick per size, their ratio (big/small; target <= 1.5, the work grows with
the due rows, not with all rows), the ten-minute scheduling pass (which reads
every order in the marketplace's window: shown, not part of the ratio) and the
child's peak RSS.

    python benchmarks/feedback.py                 # 100,000 rows, 3 rounds; ticks among 10,000 and 1,000,000
    python benchmarks/feedback.py -n 20000 --rounds 1 --scheduled 1000 20000 --ticks 2    # a quick look
    python benchmarks/feedback.py --only dispatcher
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

from benchkit import child

HEADER = ["amazon-order-id", "merchant-order-id", "shipment-id", "shipment-item-id", "amazon-order-item-id",
          "merchant-order-item-id", "purchase-date", "payments-date", "shipment-date", "reporting-date",
          "buyer-email", "buyer-name", "buyer-phone-number", "sku", "product-name", "quantity-shipped", "currency",
          "item-price", "item-tax", "shipping-price", "shipping-tax", "ship-service-level", "recipient-name",
          "ship-city", "ship-state", "ship-postal-code", "ship-country", "carrier", "tracking-number",
          "estimated-arrival-date", "fulfillment-center-id", "fulfillment-channel", "sales-channel"]
PRODUCTS = [("TENT-2P", "Trailhead Tent 2P, Olive"), ("FOOT-2P", "Trailhead Footprint 2P"),
            ("STOVE-1", "Trailhead Camp Stove"), ("MUG-1", "Enamel Mug 350 ml"), ("LAMP-1", "Headlamp 300 lm"),
            ("PEGS-10", "Aluminium Pegs (10 pack)"), ("BAG-20", "Dry Bag 20 l"), ("CHAIR-1", "Folding Chair")]
CHUNK_ROWS = 2000


def write_report(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    with path.open("w", encoding="utf-8") as f:
        f.write("\t".join(HEADER) + "\n")
        n = order = 0
        while n < rows:
            order += 1
            order_id = f"{111 + order % 3:03d}-{order // 10_000_000:07d}-{order % 10_000_000:07d}"
            alias = "".join(rnd.choice(alphabet) for _ in range(16))
            day = 1 + order % 28
            for line in range(min(rows - n, 1 if rnd.random() < 0.7 else rnd.randint(2, 3))):
                sku, title = PRODUCTS[rnd.randrange(len(PRODUCTS))]
                arrival = f"2026-11-{min(day + 3, 28):02d}T20:00:00-08:00" if rnd.random() < 0.1 else ""
                values = {
                    "amazon-order-id": order_id, "shipment-id": f"D{order:09d}", "amazon-order-item-id":
                    f"{order:010d}{line:04d}", "purchase-date": f"2026-11-{day:02d}T10:15:00-08:00",
                    "payments-date": f"2026-11-{day:02d}T10:16:00-08:00",
                    "shipment-date": f"2026-11-{min(day + 1, 28):02d}T09:00:00-08:00",
                    "reporting-date": f"2026-11-{min(day + 1, 28):02d}T12:00:00-08:00",
                    "buyer-email": f"{alias}@marketplace.amazon.com", "buyer-name": "Jane Doe", "sku": sku,
                    "product-name": title, "quantity-shipped": str(rnd.randint(1, 3)), "currency": "USD",
                    "item-price": "29.00", "ship-service-level": "Standard", "recipient-name": "Jane Doe",
                    "ship-city": "Seattle", "ship-state": "WA", "ship-postal-code": "98101", "ship-country": "US",
                    "carrier": "UPS", "tracking-number": f"1Z{order:016d}", "estimated-arrival-date": arrival,
                    "fulfillment-center-id": "SEA8", "fulfillment-channel": "Amazon", "sales-channel": "Amazon.com",
                }
                f.write("\t".join(values.get(h, "") for h in HEADER) + "\n")
                n += 1


BASELINE = r"""
import csv, sys
from sqlalchemy import Column, Integer, MetaData, Table, Text
from bridge.store.engine import open_database
path, url, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = open_database(url)
with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    table = Table("baseline_rows", MetaData(), Column("id", Integer, primary_key=True),
                  *(Column(f"c{i}", Text) for i in range(len(header))))
    table.create(engine)
    n, batch = 0, []
    for row in reader:
        batch.append({f"c{i}": v for i, v in enumerate(row)})
        n += 1
        if len(batch) == chunk:
            with engine.begin() as conn:
                conn.execute(table.insert(), batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(table.insert(), batch)
print(n)
"""

IMPORT = r"""
import sys
from bridge.services.orders import import_report
from bridge.store.engine import open_database
path, url = sys.argv[1], sys.argv[2]
s = import_report(open_database(url), "bench", path)
assert s.bad == 0, s.bad_rows[:3]
print(s.rows_read, s.orders_created, s.items_created)
"""


def fresh_db(root: Path, name: str) -> str:
    db = root / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{db}"


def import_part(rows: int, rounds: int) -> None:
    """Measure (a) and (b) in alternating rounds and print the figures."""
    with tempfile.TemporaryDirectory(prefix="mb-feedback-bench-") as tmp:
        root = Path(tmp)
        report = root / "shipments.txt"
        write_report(report, rows)
        print(f"import: {rows:,} rows of Amazon Fulfilled Shipments ({report.stat().st_size / 1e6:.1f} MB), "
              f"{rounds} alternating rounds, SQLite")
        base_times: list[float] = []
        ours_times: list[float] = []
        peak = 0
        for r in range(rounds):
            base_run = child([sys.executable, "-c", BASELINE, str(report), fresh_db(root, "base"),
                              str(CHUNK_ROWS)], root / "base.log")
            assert int(base_run.stdout) == rows, base_run.stdout
            base_times.append(base_run.seconds)
            ours = child([sys.executable, "-c", IMPORT, str(report), fresh_db(root, "ours")], root / "ours.log")
            read, orders, items = map(int, ours.stdout.split())
            assert read == rows, ours.stdout
            ours_times.append(ours.seconds)
            peak = max(peak, ours.peak_rss_kib)
            print(f"  round {r + 1}: baseline {base_times[-1]:.2f} s, import_report {ours_times[-1]:.2f} s "
                  f"({orders:,} orders, {items:,} items)")
        base, mine = statistics.median(base_times), statistics.median(ours_times)
        print(f"baseline (csv + executemany INSERT): {rows / base:,.0f} rows/s (median {base:.2f} s)")
        print(f"import_report:                       {rows / mine:,.0f} rows/s (median {mine:.2f} s)")
        print(f"ratio import_report / baseline: {base / mine:.2f}x (target >= 0.5x)")
        print(f"peak RSS of import_report: {peak / 1024:.0f} MiB")


# --------------------------------------------------------------------------- the dispatcher

# Fills a fresh database with N orders and N feedback requests by executemany (the benchmark's own
# INSERTs: the fill is not what is measured). ROUNDS+1 batches of DUE requests fall due one minute
# apart from T0; every other request is due days later. Every order was delivered in the window.
FILL = r"""
import sys
from datetime import datetime, timedelta, timezone
from bridge.store import FEEDBACK, ORDER_ITEM, ORDERS
from bridge.store.engine import open_database
url, total, due, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
engine = open_database(url)
STEP = 50_000
for start in range(0, total, STEP):
    orders, requests = [], []
    for i in range(start, min(start + STEP, total)):
        batch = i // due if i < due * batches else None
        order_id = f"111-{i // 10_000_000:07d}-{i % 10_000_000:07d}"
        alias = f"b{i:013d}@marketplace.amazon.com"
        delivered = T0 - timedelta(days=8 if batch is not None else 1 + i % 20, minutes=i % 1440)
        orders.append(dict(account="bench", order_id=order_id, marketplace="amazon.com", buyer_alias=alias,
                           buyer_name="Jane Doe", status="delivered", open_claim=False, language="en",
                           purchased_at=delivered - timedelta(days=3), delivered_at=delivered,
                           created_at=T0, updated_at=T0))
        requests.append(dict(account="bench", order_id=order_id, buyer_alias=alias, state="scheduled",
                             due_at=T0 + (timedelta(minutes=batch) if batch is not None
                                          else timedelta(days=6 - i % 20 / 4)),
                             created_at=T0, updated_at=T0))
    with engine.begin() as conn:
        conn.execute(ORDERS.insert(), orders)
        conn.execute(FEEDBACK.insert(), requests)
with engine.begin() as conn:
    rows = conn.execute(ORDERS.select().where(ORDERS.c.order_id.in_(
        [f"111-0000000-{i:07d}" for i in range(due * batches)]))).all()
    conn.execute(ORDER_ITEM.insert(), [dict(order_row=r.id, item_key="TENT-2P", sku="TENT-2P",
                                            title="Trailhead Tent 2P, Olive", quantity=1) for r in rows])
print(total)
"""

# Measures, in one process, FeedbackDispatcher.tick() at T0 + r minutes + 30 s for r = 0..ROUNDS:
# each tick finds exactly DUE requests due (the earlier batches are sent). Tick 0 is the warm-up
# (templates compiled, caches filled) and also runs the 10-minute scheduling pass, timed alone
# first; ticks 1..ROUNDS only dispatch. Prints the scheduling time and each tick's time and count.
TICK = r"""
import sys, time
from datetime import datetime, timedelta, timezone
from bridge.config import load_settings
from bridge.services import feedback
from bridge.workers.feedback import FeedbackDispatcher
from bridge.workers.supervisor import Daemon
config, rounds = sys.argv[1], int(sys.argv[2])
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
now = [T0]
daemon = Daemon(load_settings(__import__("pathlib").Path(config)), clock=lambda: now[0])
acct = daemon.accounts[0]
started = time.perf_counter()
with daemon.engine.begin() as conn:
    made = feedback.schedule(conn, acct, T0)
print("schedule", time.perf_counter() - started, made)
dispatcher = FeedbackDispatcher(daemon.engine, acct, clock=lambda: now[0])
for r in range(rounds + 1):
    now[0] = T0 + timedelta(minutes=r, seconds=30)
    started = time.perf_counter()
    result = dispatcher.tick()
    print("tick", time.perf_counter() - started, result.sent, result.skipped)
"""


def dispatcher_part(sizes: list[int], due: int, rounds: int) -> None:
    """A dispatcher tick with ``due`` requests due among each size of scheduled requests; their ratio."""
    from bridge.sandbox import config_toml

    print(f"\ndispatcher: one tick with {due} due among N scheduled requests (SQLite), median of {rounds} ticks "
          f"after a warm-up tick")
    medians: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="mb-feedback-tick-") as tmp:
        root = Path(tmp)
        for size in sizes:
            url = fresh_db(root, f"tick{size}")
            fill = child([sys.executable, "-c", FILL, url, str(size), str(due), str(rounds + 1)], root / "fill.log",
                         timeout=3600)
            config = root / f"tick{size}.toml"
            config.write_text(config_toml(
                database=url, seller="seller@acme.example", staff="support@acme.example", imap_port=1143,
                smtp_port=2525, imap_password="x", name="bench",
                sections={"feedback": {"enabled": True, "send_window": "00:00-24:00"}}))
            run = child([sys.executable, "-c", TICK, str(config), str(rounds)], root / "tick.log")
            lines = [line.split() for line in run.stdout.splitlines()]
            schedule = float(lines[0][1])
            ticks = [(float(t), int(sent)) for _, t, sent, _ in lines[1:]]
            assert all(sent == due for _, sent in ticks), ticks
            medians[size] = statistics.median(t for t, _ in ticks[1:])
            print(f"  N = {size:>9,}: tick median {medians[size] * 1000:7.1f} ms "
                  f"({', '.join(f'{t * 1000:.0f}' for t, _ in ticks[1:])} ms; warm-up {ticks[0][0] * 1000:.0f} ms), "
                  f"fill {fill.seconds:.1f} s, scheduling pass {schedule * 1000:.0f} ms, "
                  f"peak RSS {run.peak_rss_kib / 1024:.0f} MiB")
    small, big = min(sizes), max(sizes)
    print(f"ratio tick(N = {big:,}) / tick(N = {small:,}): {medians[big] / medians[small]:.2f} (target <= 1.5)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--rows", type=int, default=100_000, help="report rows to import")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scheduled", type=int, nargs=2, default=[10_000, 1_000_000], metavar=("SMALL", "BIG"),
                    help="scheduled requests in the two dispatcher runs")
    ap.add_argument("--due", type=int, default=100, help="requests due at each tick")
    ap.add_argument("--ticks", type=int, default=5, help="measured ticks per size")
    ap.add_argument("--only", choices=["import", "dispatcher"], help="run one part only")
    args = ap.parse_args()
    if args.only != "dispatcher":
        import_part(args.rows, args.rounds)
    if args.only != "import":
        dispatcher_part(args.scheduled, args.due, args.ticks)
