"""``mailbridge policy check FILE``: test draft wording against the marketplace's messaging rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.cli.settings import load
from bridge.config import ConfigError, PolicySettings, RelaySettings
from bridge.domain import policy
from bridge.services import guard

#: The buyer a draft is checked as addressed to.
SAMPLE_BUYER = "buyeralias123@marketplace.amazon.com"


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"mailbridge: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        settings = load(args)
        config = guard.policy_config(settings.policy, settings.relay)
        seller = settings.accounts[0].seller_address
    except ConfigError as exc:   # no (valid) configuration: check against the default rules
        print(f"mailbridge: checking against the default rules; the configuration: {exc}", file=sys.stderr)
        config, seller = guard.policy_config(PolicySettings(), RelaySettings()), "seller@example.com"
    category = policy.Category(args.category)
    quoted = args.quoted if category == policy.Category.REPLY else None
    draft = policy.Draft(from_addr=seller, to_addr=SAMPLE_BUYER, subject=args.subject, text=text, category=category,
                         quoted_original=quoted)
    ctx = policy.PolicyContext(seller_address=seller, buyer_alias=SAMPLE_BUYER, now=args.clock(),
                               buyer_original_text=quoted, order_completed_at=args.clock())
    decision = policy.check(draft, ctx, config)
    print(policy.explain(decision, text))
    return 0 if decision.allowed else 1
