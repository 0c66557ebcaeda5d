"""A marketplace known only by its relay alias and an order-number pattern (pure).

eBay and Walmart relay buyer mail the way Amazon does, through aliases at their
own domains, but docs/marketplaces.md knows little more than their alias shapes. This
is the :class:`~bridge.domain.marketplaces.protocol.Marketplace` for such a
relay: every fact is a field, so what is unverified can be replaced
(``dataclasses.replace``) without touching code, and what is unknown is empty
and recognises nothing. Unknown layouts cost nothing: the whole text reaches
staff (``buyer_text`` stays ``None``) and unknown notices are forwarded as
unclassified, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bridge.domain.marketplaces import layout
from bridge.domain.marketplaces.protocol import (
    AttachmentRules,
    LocalisedText,
    MarketplaceFields,
    OrderNotice,
    ReplyRules,
    Site,
    UndeliveredNotice,
    split_alias,
)


@dataclass(frozen=True)
class PlainRelay:
    """A relay whose mail is the buyer's plain text; see the module docstring."""

    family: str                                  # "ebay"
    name: str                                    # "eBay"
    sites: tuple[Site, ...]
    alias_local_re: re.Pattern[str]              # the local part of a buyer alias, before any "+case"
    # Order ids: each pattern in turn, on the subject then the body; the id is
    # the last group that took part in the match (or the whole match).
    order_id_patterns: tuple[re.Pattern[str], ...]
    reply: ReplyRules
    attachments: AttachmentRules
    link_domains: tuple[str, ...]
    display_name_suffixes: tuple[str, ...] = ()
    lookalike_words: tuple[str, ...] = ()
    notification_domains: frozenset[str] = frozenset()
    notice_subjects: tuple[tuple[str, re.Pattern[str]], ...] = ()      # (topic, subject regex)
    # (reason, text) of "not delivered" notices, most specific first (see layout.first_fingerprint).
    undelivered_fingerprints: tuple[tuple[str, LocalisedText], ...] = ()
    relay_domains: frozenset[str] = field(init=False, repr=False, compare=False)
    languages: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _squashed: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "relay_domains", frozenset(d for s in self.sites for d in s.relay_domains))
        known = [s.language for s in self.sites] + [lt.language for _, lt in self.undelivered_fingerprints]
        object.__setattr__(self, "languages", tuple(dict.fromkeys(known)))
        object.__setattr__(self, "_squashed", tuple((reason, layout.squash(lt.text))
                                                    for reason, lt in self.undelivered_fingerprints))

    def split_alias(self, address: str) -> tuple[str, str | None] | None:
        return split_alias(address, self.relay_domains, self.alias_local_re)

    def extract_fields(self, *, subject: str, text: str, html: str | None,
                       from_addr: str = "", from_name: str = "") -> MarketplaceFields:
        # No frame around the buyer's words is known: buyer_text stays None and
        # staff see the whole text. The buyer's name is the display name, which
        # the generic fallback (bridge.domain.prepare) already shows.
        return MarketplaceFields(order_id=self.find_order_id(subject, text))

    def find_order_id(self, subject: str, text: str) -> str | None:
        for pattern in self.order_id_patterns:
            for source in (subject, text):
                m = pattern.search(source)
                if m is not None:
                    return m.group(m.lastindex or 0)
        return None

    def notice_topic(self, subject: str) -> str | None:
        return next((topic for topic, pattern in self.notice_subjects if pattern.search(subject)), None)

    def find_undelivered_notice(self, text: str, buyer_text: str | None = None,
                                sender: str = "") -> UndeliveredNotice | None:
        if not self._squashed:
            return None
        index = layout.first_fingerprint(layout.notice_region(text, buyer_text), self._squashed)
        if index is None:
            return None
        reason, lt = self.undelivered_fingerprints[index]
        return UndeliveredNotice(reason, lt.language, lt.text, lt.verified, self.family)

    def read_order_notices(self, subject: str, text: str) -> tuple[OrderNotice, ...]:
        # No layout of its order notices is known (docs/marketplaces.md): they stay recorded notices.
        return ()
