"""The marketplaces the generic code asks, by sender, relay domain, site or family (pure).

Generic code (parsing, classification, threading, bounce analysis, the policy)
holds a :class:`Registry` (the default one unless it is handed another) and
never imports one marketplace's module. The first marketplace of a registry is
its default: mail no marketplace claims by its sender (a DSN, a forwarded or
quoted message, a notice from an unknown address) is read with the default's
layout, which is what mailbridge did before there was more than one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from bridge.domain.marketplaces.amazon import AMAZON
from bridge.domain.marketplaces.ebay import EBAY
from bridge.domain.marketplaces.protocol import Marketplace, MarketplaceFields, Site, UndeliveredNotice, address_domain
from bridge.domain.marketplaces.walmart import WALMART


@dataclass(frozen=True, eq=False)   # compared and hashed by identity (its lookup tables are dicts)
class Registry:
    """Marketplaces in the order they are asked; the first is the default."""

    marketplaces: tuple[Marketplace, ...]
    sites: dict[str, Site] = field(init=False, repr=False)           # config key -> Site
    relay_domains: frozenset[str] = field(init=False, repr=False)    # every relay domain of every marketplace
    _by_family: dict[str, Marketplace] = field(init=False, repr=False)
    _by_relay_domain: dict[str, Marketplace] = field(init=False, repr=False)
    _by_notification_domain: dict[str, Marketplace] = field(init=False, repr=False)
    _language_of_domain: dict[str, str | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.marketplaces:
            raise ValueError("a marketplace registry needs at least one marketplace")
        by_family: dict[str, Marketplace] = {}
        by_domain: dict[str, Marketplace] = {}
        by_notifier: dict[str, Marketplace] = {}
        sites: dict[str, Site] = {}
        languages: dict[str, set[str]] = {}
        for m in self.marketplaces:
            if m.family in by_family:
                raise ValueError(f"two marketplaces of family {m.family!r}")
            by_family[m.family] = m
            for domain in m.relay_domains:
                if domain in by_domain:
                    raise ValueError(f"relay domain {domain} claimed by {by_domain[domain].family} and {m.family}")
                by_domain[domain] = m
            for domain in m.notification_domains:
                if domain in by_notifier or domain in by_domain:
                    raise ValueError(f"notification domain {domain} of {m.family} is claimed twice")
                by_notifier[domain] = m
            for site in m.sites:
                if site.key in sites:
                    raise ValueError(f"site {site.key} of {m.family} is also a site of {sites[site.key].family}")
                sites[site.key] = site
                for domain in site.relay_domains:
                    languages.setdefault(domain, set()).add(site.language)
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "relay_domains", frozenset(by_domain))
        object.__setattr__(self, "_by_family", by_family)
        object.__setattr__(self, "_by_relay_domain", by_domain)
        object.__setattr__(self, "_by_notification_domain", by_notifier)
        # A relay domain several sites in different languages share (members.ebay.com) says no language.
        object.__setattr__(self, "_language_of_domain", {
            d: next(iter(langs)) if len(langs) == 1 else None for d, langs in languages.items()})

    def __iter__(self) -> Iterator[Marketplace]:
        return iter(self.marketplaces)

    @property
    def default(self) -> Marketplace:
        return self.marketplaces[0]

    # ------------------------------------------------------------------ lookups

    def family(self, family: str) -> Marketplace:
        """The marketplace of a family ("walmart"); ``KeyError`` for an unknown one."""
        return self._by_family[family]

    def for_site(self, key: str) -> Marketplace:
        """The marketplace of a ``marketplace`` config key ("walmart.com"); ``KeyError`` for an unknown one."""
        return self._by_family[self.sites[key].family]

    def for_relay_domain(self, domain: str) -> Marketplace | None:
        """The marketplace one of whose relay domains ``domain`` is exactly (lowercase it first)."""
        return self._by_relay_domain.get(domain)

    def for_address(self, address: str) -> Marketplace | None:
        """The marketplace of a relay address, by its exact domain (the alias's shape is not checked)."""
        return self._by_relay_domain.get(address_domain(address))

    def for_sender(self, address: str) -> Marketplace | None:
        """The marketplace that wrote this mail: by relay domain, else by notification domain (exact)."""
        domain = address_domain(address)
        return self._by_relay_domain.get(domain) or self._by_notification_domain.get(domain)

    def notification_marketplace(self, address: str) -> Marketplace | None:
        """The marketplace ``address`` is a notification sender of (exact domains), else ``None``."""
        return self._by_notification_domain.get(address_domain(address))

    def is_notification_sender(self, address: str) -> bool:
        return self.notification_marketplace(address) is not None

    def language_of_relay_domain(self, domain: str) -> str | None:
        """The buyer language of a relay domain, when every site using it agrees."""
        return self._language_of_domain.get(domain)

    def looks_like_relay(self, domain: str) -> bool:
        """A sender domain holding all of some marketplace's look-alike words ("marketplace-amazon.com")."""
        return any(m.lookalike_words and all(w in domain for w in m.lookalike_words) for m in self.marketplaces)

    @property
    def display_name_suffixes(self) -> tuple[str, ...]:
        """What relays append to buyers' display names, in registry order."""
        return tuple(s for m in self.marketplaces for s in m.display_name_suffixes)

    # ------------------------------------------------------------------ asking every marketplace

    def extract_fields(self, *, subject: str, text: str, html: str | None,
                       from_addr: str = "", from_name: str = "") -> MarketplaceFields:
        """Fields by the layout of the marketplace that sent the mail, else the default's."""
        m = self.for_sender(from_addr) if from_addr else None
        return (m or self.default).extract_fields(subject=subject, text=text, html=html,
                                                   from_addr=from_addr, from_name=from_name)

    def find_order_id(self, subject: str, text: str, alias: str | None = None) -> str | None:
        """An order id by the layout of ``alias``'s marketplace, else the default's."""
        m = self.for_address(alias) if alias else None
        return (m or self.default).find_order_id(subject, text)

    def find_undelivered_notice(self, text: str, buyer_text: str | None = None,
                                sender: str = "") -> UndeliveredNotice | None:
        """The first marketplace's notice whose wording ``text`` carries (by content, never by sender alone)."""
        for m in self.marketplaces:
            notice = m.find_undelivered_notice(text, buyer_text, sender)
            if notice is not None:
                return notice
        return None

    def notice_topic(self, subject: str) -> str | None:
        """The topic of any marketplace's notification subject (for mail not from that marketplace)."""
        for m in self.marketplaces:
            topic = m.notice_topic(subject)
            if topic is not None:
                return topic
        return None


DEFAULT_REGISTRY = Registry((AMAZON, EBAY, WALMART))
