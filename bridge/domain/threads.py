"""Conversation keys and relay addresses (pure).

A marketplace hides each buyer behind a relay alias that is stable for one
buyer and one seller account (DOMAIN.md). A conversation is that alias, split
by order id when the mail names one: the same buyer asking about two orders
gets two threads, and staff replies go back on the right one.
"""

from __future__ import annotations

import functools
import re

# Amazon: "<8-32 lowercase letters/digits>@marketplace.amazon.<tld>", optionally
# "+<case id>" (mostly seen in To/Cc/Reply-To); the part before "+" is the buyer.
_AMAZON_LOCAL_RE = re.compile(r"[a-z0-9]{8,32}")
# Walmart: 32 hex digits @relay.walmart.com.
_WALMART_LOCAL_RE = re.compile(r"[0-9a-f]{32}")
# eBay member aliases and any relay domain an operator configures: a plain,
# dot-atom-ish local part (no quotes, no spaces, no second "@").
_GENERIC_LOCAL_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9_-])?")
# The case suffix after "+": letters, digits and a few separators.
_SUFFIX_RE = re.compile(r"[a-z0-9][a-z0-9._=-]{0,63}")

# Reply prefixes of common clients (en, de, fr, es, it, nl/nordic), optionally
# counted ("Re[2]:", "AW(3):"), with ASCII or full-width colon, and our own
# "[MB-123]" tag wherever it sits.
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:re|aw|fwd?|wg|tr|rv|r|sv|vs|antw)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*"
    r"|\[MB-\d+\]\s*)+",
    re.IGNORECASE,
)
_TAG_RE = re.compile(r"\s*\[MB-\d+\]\s*", re.IGNORECASE)


def relay_family(domain: str) -> str:
    """"amazon", "walmart", "ebay" or "other" for a relay domain (lowercased)."""
    if domain.startswith("marketplace.amazon."):
        return "amazon"
    if domain == "relay.walmart.com":
        return "walmart"
    if domain.startswith("members.ebay."):
        return "ebay"
    return "other"


def base_alias(address: str) -> str:
    """``abc+case@marketplace.amazon.com`` -> ``abc@marketplace.amazon.com`` (the buyer key)."""
    local, _, domain = address.lower().rpartition("@")
    return f"{local.split('+')[0]}@{domain}"


@functools.lru_cache(maxsize=4096)   # classification asks about the same sender several times
def split_relay_address(addr: str, relay_domains: frozenset[str]) -> tuple[str, str | None] | None:
    """Split a relay address into (base alias, case suffix).

    ``"ABC12345+Case9@marketplace.amazon.com"`` -> ``("abc12345@marketplace.amazon.com", "case9")``.
    Returns ``None`` when ``addr`` is not a relay address: the domain must be
    *exactly* one of ``relay_domains`` (``marketplace.amazon.com.evil.example``
    and ``evil-marketplace.amazon.com`` are not relays) and the local part must
    have the marketplace's alias shape. Input is lowercased first.
    """
    addr = addr.strip().lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or domain not in relay_domains:
        return None
    base, plus, suffix = local.partition("+")
    if plus and suffix and not _SUFFIX_RE.fullmatch(suffix):
        return None
    family = relay_family(domain)
    pattern = (_AMAZON_LOCAL_RE if family == "amazon"
               else _WALMART_LOCAL_RE if family == "walmart"
               else _GENERIC_LOCAL_RE)
    if not pattern.fullmatch(base):
        return None
    return f"{base}@{domain}", (suffix or None)


def conversation_key(buyer_alias: str, order_id: str | None) -> str:
    """The stable key of one conversation: ``"<alias>#<order id>"``, ``"<alias>#-"`` without an order.

    ``buyer_alias`` is the base alias from :func:`split_relay_address`.
    """
    order = order_id.strip().upper() if order_id and order_id.strip() else "-"
    return f"{buyer_alias.strip().lower()}#{order}"


def thread_subject(subject: str) -> str:
    """The subject without reply/forward prefixes (Re:, AW:, Fwd:, WG:, TR:, RV:, R: ...)
    and without our ``[MB-123]`` tag, whitespace folded."""
    # The prefix pattern is anchored at the start: one match, cut off (what sub() did, quicker).
    prefix = _PREFIX_RE.match(subject)
    stripped = subject[prefix.end():] if prefix else subject
    if "[" in stripped:   # a tag needs one
        stripped = _TAG_RE.sub(" ", stripped)
    return " ".join(stripped.split())   # = \s+ -> " ", stripped
