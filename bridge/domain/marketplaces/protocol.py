"""What every marketplace tells the generic code: the :class:`Marketplace` protocol and its values (pure).

Generic parsing, classification, threading, bounce analysis and the policy
ask a marketplace, through :mod:`bridge.domain.marketplaces.registry`, what they
need to know; they never import one marketplace's module.

Why a ``typing.Protocol`` and not one frozen dataclass of callables: the three
implementations differ widely in how much logic they carry (Amazon: marker
layouts, customer-service relays, thirty localised notice fingerprints; eBay
and Walmart: little more than an alias shape and an order-number pattern). A
dataclass of callables would push Amazon's logic into loose module functions
and lambdas all the same and lose the docstrings on what each call promises.
The protocol keeps the contract in one place, checked by mypy. Each
implementation is itself a frozen dataclass whose fields are the facts, so a
fact that docs/marketplaces.md marks *unverified* is a field that can be replaced
(``dataclasses.replace(WALMART, order_id_patterns=...)``) and handed to the
code that uses it in a :class:`~bridge.domain.marketplaces.registry.Registry`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


@dataclass(frozen=True)
class Site:
    """One marketplace site an account can be on: the value of an account's ``marketplace`` config key."""

    key: str                        # "amazon.de": the config key
    family: str                     # "amazon" | "ebay" | "walmart": the Marketplace that reads its mail
    relay_domains: tuple[str, ...]  # exact domains whose addresses are this site's buyer relay aliases
    language: str                   # default buyer language (proactive mail must be in the buyer's language)
    time_zone: str                  # IANA name the site's dates and windows are reckoned in (see each module)


@dataclass(frozen=True)
class LocalisedText:
    language: str
    text: str
    verified: bool


@dataclass(frozen=True)
class MarketplaceFields:
    """What a marketplace's layouts find in one mail (all ``None``/empty when nothing is found)."""

    order_id: str | None = None
    comm_mgr_tok: str | None = None     # Amazon's thread token; other marketplaces have none we know of
    buyer_text: str | None = None       # the buyer's own words, without the relay's frame
    buyer_name: str | None = None
    asins: tuple[str, ...] = ()


@dataclass(frozen=True)
class UndeliveredNotice:
    """The marketplace told the seller a message did not reach the buyer."""

    reason: str        # "opted_out" | "guidelines" | "restricted" | "not_delivered"
    language: str
    phrase: str        # the fingerprint that matched
    verified: bool
    marketplace: str   # the family whose fingerprint matched ("amazon")


@dataclass(frozen=True)
class NoticeItem:
    """One item line of an order notice."""

    title: str | None = None
    sku: str | None = None
    quantity: int = 1


@dataclass(frozen=True)
class OrderNotice:
    """What a marketplace's own notice says about one order.

    ``topic`` is the notice's (:meth:`Marketplace.notice_topic`): "sold_ship_now",
    "refund", "return", "cancellation", "claim"; what it means for the order's
    status is decided generically (:func:`bridge.domain.orders.order_from_notice`).
    """

    topic: str
    order_id: str
    ordered_at: datetime | None = None    # UTC
    items: tuple[NoticeItem, ...] = ()


@dataclass(frozen=True)
class ReplyRules:
    """How a reply to a buyer must look and when it is due."""

    quote_original: bool              # the buyer's message must be quoted below the reply
    reply_window: timedelta | None    # replies are expected within this time of the buyer's message; None: none stated


@dataclass(frozen=True)
class AttachmentRules:
    """What files a message to a buyer may carry."""

    types: tuple[str, ...]    # allowed file name extensions, lowercased
    max_bytes: int            # all attachments of one message together
    max_count: int
    verified: bool = True


class Marketplace(Protocol):
    """One marketplace family's messaging rules and mail layouts.

    Every call is pure (values in, values out) and never raises for odd input.
    """

    @property
    def family(self) -> str:
        """Stable id: "amazon", "ebay", "walmart" (what a Site.family and an UndeliveredNotice name)."""
        ...

    @property
    def name(self) -> str:
        """The name staff read: "Amazon"."""
        ...

    @property
    def sites(self) -> tuple[Site, ...]:
        """The sites an account can be on, each a ``marketplace`` config key."""
        ...

    @property
    def relay_domains(self) -> frozenset[str]:
        """Every exact domain whose well-formed addresses are buyer aliases."""
        ...

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages its layouts and fingerprints know (the first is its default)."""
        ...

    @property
    def reply(self) -> ReplyRules: ...

    @property
    def attachments(self) -> AttachmentRules: ...

    @property
    def notification_domains(self) -> frozenset[str]:
        """The exact domains its own notifications come from (a look-alike sub-domain never counts)."""
        ...

    @property
    def link_domains(self) -> tuple[str, ...]:
        """Its own web domains: a link there (the buyer's order page) does not lead off the platform."""
        ...

    @property
    def display_name_suffixes(self) -> tuple[str, ...]:
        """What the relay appends to a buyer's display name ("Jane - Amazon Marketplace"), longest first."""
        ...

    @property
    def lookalike_words(self) -> tuple[str, ...]:
        """Words that, all in one sender domain that is not a relay domain, make it a look-alike."""
        ...

    def split_alias(self, address: str) -> tuple[str, str | None] | None:
        """``(buyer key, case suffix)`` for a relay alias of this marketplace, else ``None``.

        The domain must be exactly one of :attr:`relay_domains` and the local part
        must have this marketplace's alias shape; ``alias+case@domain`` reduces to
        ``alias@domain`` (lowercased). See :func:`split_alias`.
        """
        ...

    def extract_fields(self, *, subject: str, text: str, html: str | None,
                       from_addr: str = "", from_name: str = "") -> MarketplaceFields:
        """Order id, thread token, the buyer's own words and name, item ids, from its layouts."""
        ...

    def find_order_id(self, subject: str, text: str) -> str | None:
        """An order id in a subject and body (a returned message, a notice)."""
        ...

    def notice_topic(self, subject: str) -> str | None:
        """"sold_ship_now", "feedback", "claim", ... for one of its notification subjects, else ``None``."""
        ...

    def find_undelivered_notice(self, text: str, buyer_text: str | None = None,
                                sender: str = "") -> UndeliveredNotice | None:
        """Its opt-out / not-delivered / guidelines / restricted notice, recognised by wording.

        Never by sender alone; the buyer's own words and quoted history are not searched.
        ``sender``: the From address, which may let a marketplace trust vocabulary where
        it would otherwise need its known sentences (its own notification domains only).
        """
        ...

    def read_order_notices(self, subject: str, text: str) -> tuple[OrderNotice, ...]:
        """The orders one of its own notices (sold, refund, return, cancellation, claim) tells of; ``()`` else.

        The caller has checked that the mail comes from one of its notification domains.
        """
        ...


# The case suffix after "+": letters, digits and a few separators.
_SUFFIX_RE = re.compile(r"[a-z0-9][a-z0-9._=-]{0,63}")
# A plain, dot-atom-ish local part (no quotes, no spaces, no second "@"): eBay
# member aliases and any relay domain an operator configures.
GENERIC_LOCAL_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9_-])?")


def split_alias(address: str, domains: frozenset[str], local_re: re.Pattern[str]) -> tuple[str, str | None] | None:
    """Split ``local[+case]@domain`` into ``("local@domain", "case" | None)``, lowercased.

    ``None`` unless the domain is exactly one of ``domains`` (a look-alike such as
    ``<domain>.evil.example`` or ``evil-<domain>`` never is) and the part before
    ``+`` fully matches ``local_re`` (docs/marketplaces.md: the part before ``+`` is the buyer key).
    """
    addr = address.strip().lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or domain not in domains:
        return None
    base, plus, suffix = local.partition("+")
    if plus and suffix and not _SUFFIX_RE.fullmatch(suffix):
        return None
    if not local_re.fullmatch(base):
        return None
    return f"{base}@{domain}", (suffix or None)


def address_domain(address: str) -> str:
    """The lowercased domain of ``address`` ("" when it has no local part or no "@")."""
    local, at, domain = address.strip().lower().rpartition("@")
    return domain if at and local else ""
