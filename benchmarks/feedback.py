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

    python benchmarks/feedback.py                 # 100,000 rows, 3 rounds
    python benchmarks/feedback.py -n 20000 --rounds 1
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
            seconds, _, out = child([sys.executable, "-c", BASELINE, str(report), fresh_db(root, "base"),
                                     str(CHUNK_ROWS)], root / "base.log")
            assert int(out) == rows, out
            base_times.append(seconds)
            seconds, rss, out = child([sys.executable, "-c", IMPORT, str(report), fresh_db(root, "ours")],
                                      root / "ours.log")
            read, orders, items = map(int, out.split())
            assert read == rows, out
            ours_times.append(seconds)
            peak = max(peak, rss)
            print(f"  round {r + 1}: baseline {base_times[-1]:.2f} s, import_report {ours_times[-1]:.2f} s "
                  f"({orders:,} orders, {items:,} items)")
        base, ours = statistics.median(base_times), statistics.median(ours_times)
        print(f"baseline (csv + executemany INSERT): {rows / base:,.0f} rows/s (median {base:.2f} s)")
        print(f"import_report:                       {rows / ours:,.0f} rows/s (median {ours:.2f} s)")
        print(f"ratio import_report / baseline: {base / ours:.2f}x (target >= 0.5x)")
        print(f"peak RSS of import_report: {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--rows", type=int, default=100_000, help="report rows to import")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import_part(args.rows, args.rounds)
    # ----------------------------------------------------------------------------------------------
    # Dispatcher part (feedback schedule): the feedback engineer's measurement goes here, after the
    # import part (a tick with 100 due among 10,000 and among 1,000,000 scheduled; ratio <= 1.5).
    # ----------------------------------------------------------------------------------------------
