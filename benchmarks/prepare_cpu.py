#!/usr/bin/env python3
"""CPU per message of the pure part of ingest: parse, classify, flags, all of prepare().

No server and no database: what bridge.domain costs per message, on the sample
buyer backlog (bridge.sandbox.samples) and on the .eml corpus under tests/data.
Process CPU time, the best of several rounds (a shared machine only ever makes
a round slower). Compare two trees by running it in each, one after the other:

    python benchmarks/prepare_cpu.py              # 5,000 sample messages, 7 rounds
    python benchmarks/prepare_cpu.py -n 1000 --size 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge.domain.classify import ClassifyContext, classify
from bridge.domain.flags import conversation_flags
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
from bridge.domain.parse import ParsedMail, parse_mail
from bridge.domain.prepare import FetchedMail, PrepareContext, prepare
from bridge.sandbox import samples

SELLER = "seller@acme.example"
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data"
BASE: dict[str, Any] = dict(seller_address=SELLER, staff_address="support@acme.example",
                            staff_senders=("*@acme.example",), reply_address="seller+{token}@acme.example",
                            relay_domains=ALL_RELAY_DOMAINS)


def best_us(fn: Callable[[Any], object], items: Sequence[Any], rounds: int) -> float:
    """Microseconds of CPU per item, the best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=5000)
    ap.add_argument("--size", type=int, default=0, help="approximate bytes per sample message (0: about 1.2 KB)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    ctx = ClassifyContext(sent_by_us=False, replies_to_us=False, **BASE)
    pctx = PrepareContext("acme", b"k" * 32, BASE, 25 * 1024 * 1024, SELLER)
    sets = {
        f"{args.messages} sample buyer messages": samples.buyer_backlog(args.messages, seller_address=SELLER,
                                                                        seed=1, size=args.size),
        "tests/data .eml corpus": [p.read_bytes() for p in sorted(CORPUS.rglob("*.eml"))],
    }
    for name, raws in sets.items():
        mails = [parse_mail(raw) for raw in raws]

        def flags(mail: ParsedMail) -> object:
            return conversation_flags(mail.buyer_text or mail.text, mail.subject)

        parse = best_us(parse_mail, raws, args.rounds)
        cls = best_us(lambda mail: classify(mail, ctx), mails, args.rounds)
        both = best_us(lambda raw: classify(parse_mail(raw), ctx), raws, args.rounds)
        flag = best_us(flags, mails, args.rounds)
        whole = best_us(lambda item: prepare(pctx, item), [FetchedMail(i, len(r), r) for i, r in enumerate(raws)],
                        args.rounds)
        print(f"{name} ({sum(map(len, raws)) / len(raws) / 1024:.1f} KiB on average), us of CPU per message: "
              f"parse {parse:.0f}, classify {cls:.0f}, parse+classify {both:.0f}, flags {flag:.0f}, "
              f"prepare {whole:.0f}")


if __name__ == "__main__":
    main()
