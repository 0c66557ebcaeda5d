"""eBay member messages relayed by email (pure data).

What docs/marketplaces.md knows, and so what is *verified*: buyers write from an alias at
``members.ebay.com``, and eBay, like every marketplace here, allows no
off-platform offers or contact details. That is all.

Everything else below is *unverified*, our reading of eBay's mail, and each is
a field of :data:`EBAY` that can be replaced without touching code:

- the alias's local part: docs/marketplaces.md writes only ``...@``; we accept a plain
  dot-atom (member ids hold letters, digits, ``.``, ``_`` and ``-``);
- whether sites other than ebay.com relay from other domains
  (``members.ebay.co.uk``?): every site is given ``members.ebay.com``;
- the order number, ``12-34567-89012`` (two, five and five digits); item
  numbers (12 digits) are not orders, so a question about an item before
  buying threads by the buyer alone;
- eBay's notification senders, notice subjects and "not delivered" notices:
  none is known, so none is recognised (such mail reaches staff as unclassified);
- the buyer's words: no frame around them is known, so staff get the whole text;
- reply rules: no window is stated; quoting the original is assumed (harmless);
- attachments: Amazon's limits, the strictest we know;
- time zones: each site's local time (eBay's official time is Pacific).
"""

from __future__ import annotations

import re

from bridge.domain.marketplaces.amazon import ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS
from bridge.domain.marketplaces.plain_relay import PlainRelay
from bridge.domain.marketplaces.protocol import GENERIC_LOCAL_RE, AttachmentRules, ReplyRules, Site

RELAY_DOMAIN = "members.ebay.com"   # docs/marketplaces.md

SITES: tuple[Site, ...] = tuple(
    Site(f"ebay.{tld}", "ebay", (RELAY_DOMAIN,), language, zone)
    for tld, language, zone in (
        ("com", "en", "America/Los_Angeles"), ("co.uk", "en", "Europe/London"), ("de", "de", "Europe/Berlin"),
        ("fr", "fr", "Europe/Paris"), ("it", "it", "Europe/Rome"), ("es", "es", "Europe/Madrid"),
        ("ca", "en", "America/Toronto"), ("com.au", "en", "Australia/Sydney"),
    )
)

# "12-34567-89012", not inside a longer run of digits or dashes (unverified).
ORDER_ID_RE = re.compile(r"(?<![\w-])\d{2}-\d{5}-\d{5}(?![\w-])")

EBAY = PlainRelay(
    family="ebay",
    name="eBay",
    sites=SITES,
    alias_local_re=GENERIC_LOCAL_RE,
    order_id_patterns=(ORDER_ID_RE,),
    reply=ReplyRules(quote_original=True, reply_window=None),
    attachments=AttachmentRules(ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, verified=False),
    link_domains=tuple(site.key for site in SITES),
    display_name_suffixes=(" via eBay",),
    lookalike_words=("ebay", "member"),
)
