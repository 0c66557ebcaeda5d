"""What goes into the compliance guard and what comes out of it (pure values).

A :class:`Draft` and a :class:`PolicyContext` go in; a :class:`Decision` made of
:class:`Finding` values comes out. The rules (:mod:`.rules`) yield :class:`Hit`
values, and the engine (:mod:`.engine`) turns them into findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from bridge.domain.marketplaces.protocol import Marketplace
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry

# --------------------------------------------------------------------------- values


class Category(StrEnum):
    """Why we write to the buyer (docs/marketplaces.md, "Critical vs unsolicited")."""

    REPLY = "reply"                # a reply on a thread the buyer started: always allowed, even after opt-out
    CRITICAL = "critical"          # proactive, needed to complete the order (customisation, delivery, address)
    UNSOLICITED = "unsolicited"    # proactive, anything else (feedback/review request, manuals, ...)


PROACTIVE = frozenset({Category.CRITICAL, Category.UNSOLICITED})


class Mode(StrEnum):
    """What a rule's hit does: stop the message, only record it, or nothing."""

    BLOCK = "block"
    WARN = "warn"
    OFF = "off"


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"


@dataclass(frozen=True, kw_only=True)
class AttachmentInfo:
    filename: str
    content_type: str
    size: int                      # bytes, decoded


@dataclass(frozen=True, kw_only=True)
class Draft:
    """One outbound message to a buyer, as it would be sent."""

    from_addr: str
    to_addr: str
    subject: str
    text: str                      # our own words (no quoted original)
    category: Category
    attachments: tuple[AttachmentInfo, ...] = ()
    quoted_original: str | None = None   # the buyer's message as quoted below our text (replies)


@dataclass(frozen=True, kw_only=True)
class PolicyContext:
    """What the store knows about the account, the buyer and the order at send time."""

    seller_address: str                         # the account's registered BSM address
    buyer_alias: str | None                     # relay alias of this conversation's/order's buyer
    now: datetime
    buyer_opted_out: bool = False
    buyer_do_not_solicit: bool = False
    order_completed_at: datetime | None = None
    account_restricted_until: datetime | None = None
    buyer_original_text: str | None = None      # the buyer's own words we reply to
    buyer_message_at: datetime | None = None    # when the buyer wrote the message we reply to (reply windows)
    marketplaces: Registry = DEFAULT_REGISTRY   # whose rules hold for the buyer's relay alias

    @property
    def buyer_marketplace(self) -> Marketplace:
        """The marketplace of the buyer's relay alias; the registry's default when it is unknown."""
        found = self.marketplaces.for_address(self.buyer_alias) if self.buyer_alias else None
        return found or self.marketplaces.default


@dataclass(frozen=True)
class Finding:
    rule: str                           # stable rule id
    severity: Severity
    reason: str                         # what is wrong and how to fix it
    excerpt: str | None = None          # the offending text
    span: tuple[int, int] | None = None  # offsets of ``excerpt`` in draft.text


@dataclass(frozen=True)
class Decision:
    allowed: bool
    findings: tuple[Finding, ...]
    evaluated: tuple[str, ...] = ()     # rule ids that ran (mode not ``off``), for the audit log

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.BLOCK)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARN)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the rules that objected, in rule order, once each."""
        return tuple(dict.fromkeys(f.rule for f in self.findings))


@dataclass(frozen=True)
class Hit:
    """What a rule function yields; :func:`check` adds the rule id and severity."""

    reason: str
    excerpt: str | None = None
    span: tuple[int, int] | None = None


class RuleSettings(Protocol):
    """The operator settings a rule reads (:class:`.engine.PolicyConfig` has them all).

    A protocol, so that the rules need not import the engine that runs them.
    """

    @property
    def link_allowlist(self) -> tuple[str, ...]: ...
    @property
    def allowed_attachment_types(self) -> tuple[str, ...]: ...
    @property
    def max_attachment_bytes(self) -> int: ...
    @property
    def max_attachments(self) -> int: ...
    @property
    def max_text_chars(self) -> int: ...
    @property
    def proactive_window_days(self) -> int: ...


RuleCheck = Callable[[Draft, PolicyContext, RuleSettings], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    check: RuleCheck
    summary: str
    # A marketplace rule runs only where this says it applies (the buyer's
    # marketplace states what it checks); None: every message.
    applies: Callable[[PolicyContext], bool] | None = None
    default_mode: Mode = Mode.BLOCK              # the mode when the operator names none
