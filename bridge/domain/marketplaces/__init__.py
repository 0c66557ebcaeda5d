"""Marketplaces: relay domains, subjects and notice fingerprints (pure data + functions).

Contract: ``MARKETPLACES`` maps a config ``marketplace`` key ("amazon.com",
"amazon.de", "ebay.com", "walmart.com", ...) to a :class:`Marketplace`.
"""

from __future__ import annotations

from dataclasses import dataclass

AMAZON_TLDS = (
    "com", "ca", "com.mx", "com.br", "co.uk", "de", "fr", "it", "es", "nl", "se", "pl",
    "com.be", "ie", "com.tr", "ae", "sa", "eg", "in", "sg", "com.au", "co.jp",
)

# Buyer-Seller Messaging attachment limits (DOMAIN.md "Content rules"): the
# defaults of both [relay] and the guard's attachments_within_limits rule.
ATTACHMENT_TYPES = ("pdf", "jpg", "jpeg", "png", "gif", "txt")   # file name extensions
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024                           # all attachments of one message together
MAX_ATTACHMENTS = 5

# The language a marketplace's buyers write in by default (DOMAIN.md: proactive
# mail must be in the buyer's language; templates are chosen by it later).
_AMAZON_LANGUAGE = {
    "com": "en", "ca": "en", "com.mx": "es", "com.br": "pt", "co.uk": "en", "de": "de",
    "fr": "fr", "it": "it", "es": "es", "nl": "nl", "se": "sv", "pl": "pl", "com.be": "fr",
    "ie": "en", "com.tr": "tr", "ae": "en", "sa": "ar", "eg": "ar", "in": "en", "sg": "en",
    "com.au": "en", "co.jp": "ja",
}


@dataclass(frozen=True)
class Marketplace:
    key: str                       # "amazon.de"
    family: str                    # "amazon" | "ebay" | "walmart"
    relay_domains: tuple[str, ...]  # exact domains whose addresses are buyer relay aliases
    language: str                  # default buyer language


def _build() -> dict[str, Marketplace]:
    out: dict[str, Marketplace] = {}
    for tld in AMAZON_TLDS:
        key = f"amazon.{tld}"
        out[key] = Marketplace(key, "amazon", (f"marketplace.amazon.{tld}",), _AMAZON_LANGUAGE[tld])
    for tld, lang in (("com", "en"), ("co.uk", "en"), ("de", "de"), ("fr", "fr"), ("it", "it"),
                      ("es", "es"), ("ca", "en"), ("com.au", "en")):
        out[f"ebay.{tld}"] = Marketplace(f"ebay.{tld}", "ebay", ("members.ebay.com",), lang)
    out["walmart.com"] = Marketplace("walmart.com", "walmart", ("relay.walmart.com",), "en")
    return out


MARKETPLACES: dict[str, Marketplace] = _build()

# Every relay domain we know, whatever the account's marketplace: a buyer of
# amazon.de may write to an amazon.com seller account's mailbox.
ALL_RELAY_DOMAINS: frozenset[str] = frozenset(
    d for m in MARKETPLACES.values() for d in m.relay_domains
)
