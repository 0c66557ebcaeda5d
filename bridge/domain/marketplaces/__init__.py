"""Marketplaces as plug-ins: relay aliases, mail layouts, notices and reply rules (pure).

- :mod:`.protocol`: the :class:`Marketplace` protocol every marketplace meets,
  and the values it answers with;
- :mod:`.amazon`, :mod:`.ebay`, :mod:`.walmart`: the implementations (eBay and
  Walmart are :class:`~.plain_relay.PlainRelay` values: little is known of them);
- :mod:`.registry`: the :class:`Registry` generic code asks (``DEFAULT_REGISTRY``);
- :mod:`.layout`: text helpers the layouts share.

Contract kept for the rest of the package: ``MARKETPLACES`` maps an account's
``marketplace`` config key ("amazon.com", "amazon.de", "ebay.com",
"walmart.com", ...) to its :class:`Site`; ``ALL_RELAY_DOMAINS`` holds every relay
domain; ``ATTACHMENT_TYPES``, ``MAX_ATTACHMENT_BYTES`` and ``MAX_ATTACHMENTS``
are the default attachment limits (Amazon's, the strictest known).
"""

from __future__ import annotations

from bridge.domain.marketplaces.amazon import (
    AMAZON,
    AMAZON_TLDS,
    ATTACHMENT_TYPES,
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
)
from bridge.domain.marketplaces.ebay import EBAY
from bridge.domain.marketplaces.protocol import (
    AttachmentRules,
    Marketplace,
    MarketplaceFields,
    ReplyRules,
    Site,
    UndeliveredNotice,
)
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry
from bridge.domain.marketplaces.walmart import WALMART

MARKETPLACES: dict[str, Site] = DEFAULT_REGISTRY.sites

# Every relay domain we know, whatever the account's marketplace: a buyer of
# amazon.de may write to an amazon.com seller account's mailbox.
ALL_RELAY_DOMAINS: frozenset[str] = DEFAULT_REGISTRY.relay_domains

__all__ = [
    "ALL_RELAY_DOMAINS", "AMAZON", "AMAZON_TLDS", "ATTACHMENT_TYPES", "DEFAULT_REGISTRY", "EBAY", "MARKETPLACES",
    "MAX_ATTACHMENTS", "MAX_ATTACHMENT_BYTES", "WALMART", "AttachmentRules", "Marketplace", "MarketplaceFields",
    "Registry", "ReplyRules", "Site", "UndeliveredNotice",
]
