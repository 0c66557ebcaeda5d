"""Walmart Marketplace customer messages relayed by email (pure data).

What docs/marketplaces.md knows, and so what is *verified*: buyers write from
``<32 hex digits>@relay.walmart.com``; sellers reply within 48 hours; no
off-platform offers or contact details.

What docs/marketplaces.md does not say, and so is *unverified* here (each a field of
:data:`WALMART` that can be replaced without touching code):

- what happens to a reply after 48 hours. The window is stated, not that late
  replies are refused, so the policy rule ``reply_within_window`` only *warns*
  by default (a late answer is better than none); an operator may make it block;
- the order id: Walmart's purchase order number, labelled "PO#" / "Purchase
  Order", of 9 to 20 digits, else a labelled "Order #"; the first pattern that
  matches wins;
- Walmart's notification senders, notice subjects and "not delivered" notices:
  none is known, so none is recognised (such mail reaches staff as unclassified);
- the buyer's words: no frame around them is known, so staff get the whole text;
- quoting the original in replies (assumed, harmless); attachments (Amazon's
  limits, the strictest we know); the time zone (Central, Walmart's home).
"""

from __future__ import annotations

import re
from datetime import timedelta

from bridge.domain.marketplaces.amazon import ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS
from bridge.domain.marketplaces.plain_relay import PlainRelay
from bridge.domain.marketplaces.protocol import AttachmentRules, ReplyRules, Site

RELAY_DOMAIN = "relay.walmart.com"   # docs/marketplaces.md
ALIAS_LOCAL_RE = re.compile(r"[0-9a-f]{32}")   # docs/marketplaces.md: 32 hex digits
REPLY_WINDOW = timedelta(hours=48)           # docs/marketplaces.md: replies within 48 h

SITES: tuple[Site, ...] = (Site("walmart.com", "walmart", (RELAY_DOMAIN,), "en", "America/Chicago"),)

# Unverified (see the module docstring).
ORDER_ID_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?:PO|Purchase\s+Order)\s*(?:#|No\.?|Number)?\s*[:#]?\s*(\d{9,20})(?!\d)", re.IGNORECASE),
    re.compile(r"\bOrder\s*(?:#|No\.?|Number)\s*[:#]?\s*(\d{9,20})(?!\d)", re.IGNORECASE),
)

WALMART = PlainRelay(
    family="walmart",
    name="Walmart",
    sites=SITES,
    alias_local_re=ALIAS_LOCAL_RE,
    order_id_patterns=ORDER_ID_PATTERNS,
    reply=ReplyRules(quote_original=True, reply_window=REPLY_WINDOW),
    attachments=AttachmentRules(ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, verified=False),
    link_domains=("walmart.com",),
    display_name_suffixes=(" via Walmart",),
    lookalike_words=("walmart", "relay"),
)
