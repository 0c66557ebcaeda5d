"""What the services need to know about one account, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.adapters.templates import Templates
from bridge.config import AccountSettings, PolicySettings, RelaySettings
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
from bridge.domain.policy import PolicyConfig
from bridge.domain.prepare import PrepareContext
from bridge.services import guard


@dataclass
class AccountContext:
    """What the pipeline needs to know about one account, built once at start."""

    settings: AccountSettings
    secret: bytes
    templates: Templates
    relay: RelaySettings = field(default_factory=RelaySettings)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Derived from settings and secret once: the inbound service reads it for every message.
    prepare_context: PrepareContext = field(init=False)

    def __post_init__(self) -> None:
        self.prepare_context = context(self.settings, self.secret)

    @classmethod
    def build(cls, settings: AccountSettings, secret: bytes, templates: Templates,
              relay_settings: RelaySettings | None = None,
              policy_settings: PolicySettings | None = None) -> "AccountContext":
        relay_settings = relay_settings or RelaySettings()
        return cls(settings, secret, templates, relay_settings,
                   guard.policy_config(policy_settings or PolicySettings(), relay_settings))

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def classify_base(self) -> dict[str, Any]:
        """The account's part of every ClassifyContext (as in its prepare context)."""
        return self.prepare_context.classify_base


def classify_base(settings: AccountSettings) -> dict[str, Any]:
    """The account's part of every :class:`bridge.domain.classify.ClassifyContext`."""
    return dict(
        seller_address=settings.seller_address.lower(),
        staff_address=settings.staff_address.lower(),
        staff_senders=tuple(s.lower() for s in settings.staff_senders),
        reply_address=settings.reply_address.lower(),
        relay_domains=ALL_RELAY_DOMAINS,
    )


def context(settings: AccountSettings, secret: bytes) -> PrepareContext:
    """The account's :class:`PrepareContext`."""
    return PrepareContext(settings.name, secret, classify_base(settings), settings.imap.max_message_bytes,
                          settings.seller_address)
