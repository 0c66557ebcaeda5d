"""Conversation keys and relay addresses (pure).

A marketplace hides each buyer behind a relay alias that is stable for one
buyer and one seller account (docs/marketplaces.md). A conversation is that alias, split
by order id when the mail names one: the same buyer asking about two orders
gets two threads, and staff replies go back on the right one.
"""

from __future__ import annotations

import re

from bridge.domain.marketplaces.protocol import GENERIC_LOCAL_RE, address_domain, split_alias
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry

# Reply prefixes of common clients (en, de, fr, es, it, nl/nordic), optionally
# counted ("Re[2]:", "AW(3):"), with ASCII or full-width colon, and our own
# "[MB-123]" tag wherever it sits.
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:re|aw|fwd?|wg|tr|rv|r|sv|vs|antw)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*"
    r"|\[MB-\d+\]\s*)+",
    re.IGNORECASE,
)
_TAG_RE = re.compile(r"\s*\[MB-\d+\]\s*", re.IGNORECASE)


def relay_family(domain: str, marketplaces: Registry = DEFAULT_REGISTRY) -> str:
    """"amazon", "walmart", "ebay" (the marketplace's family) or "other" for a relay domain (lowercased)."""
    marketplace = marketplaces.for_relay_domain(domain)
    return marketplace.family if marketplace is not None else "other"


def base_alias(address: str) -> str:
    """``abc+case@marketplace.amazon.com`` -> ``abc@marketplace.amazon.com`` (the buyer key)."""
    local, _, domain = address.lower().rpartition("@")
    return f"{local.split('+')[0]}@{domain}"


def split_relay_address(addr: str, relay_domains: frozenset[str],
                        marketplaces: Registry = DEFAULT_REGISTRY) -> tuple[str, str | None] | None:
    """Split a relay address into (base alias, case suffix).

    ``"ABC12345+Case9@marketplace.amazon.com"`` -> ``("abc12345@marketplace.amazon.com", "case9")``.
    Returns ``None`` when ``addr`` is not a relay address: the domain must be
    *exactly* one of ``relay_domains`` (``marketplace.amazon.com.evil.example``
    and ``evil-marketplace.amazon.com`` are not relays) and the local part must
    have the alias shape of the marketplace that owns the domain (see
    :meth:`~bridge.domain.marketplaces.protocol.Marketplace.split_alias`); a
    domain no marketplace owns (one an operator configured) takes any plain
    dot-atom local part. Input is lowercased first.
    """
    domain = address_domain(addr)
    if domain not in relay_domains:
        return None
    marketplace = marketplaces.for_relay_domain(domain)
    if marketplace is None:
        return split_alias(addr, relay_domains, GENERIC_LOCAL_RE)
    return marketplace.split_alias(addr)


def conversation_key(buyer_alias: str, order_id: str | None) -> str:
    """The stable key of one conversation: ``"<alias>#<order id>"``, ``"<alias>#-"`` without an order.

    ``buyer_alias`` is the base alias from :func:`split_relay_address`.
    """
    order = order_id.strip().upper() if order_id and order_id.strip() else "-"
    return f"{buyer_alias.strip().lower()}#{order}"


def thread_subject(subject: str) -> str:
    """The subject without reply/forward prefixes (Re:, AW:, Fwd:, WG:, TR:, RV:, R: ...)
    and without our ``[MB-123]`` tag, whitespace folded."""
    stripped = _TAG_RE.sub(" ", _PREFIX_RE.sub("", subject))
    return " ".join(stripped.split())
