"""The compliance guard: every email to a buyer passes :func:`check` (pure).

Contract for the outbox (and for ``mailbridge policy check FILE``):

- ``check(draft, ctx, config) -> Decision``. No I/O, no clock: ``ctx.now`` is
  passed in. Every rule of :data:`RULES` runs (unless its mode is ``off``),
  and each of :data:`MARKETPLACE_RULES` where the buyer's marketplace states
  what it checks; every occurrence a rule objects to becomes one
  :class:`Finding`, so staff see all problems at once, not one per round trip.
- ``Decision.allowed`` is False as soon as one finding has severity ``block``.
  Findings of rules in ``warn`` mode are kept (audit log, staff notice) but
  never stop the message.
- Rule ids are stable: they are stored in the audit log and named in config
  (``PolicyConfig(modes={"no_links": "warn"})``). Renaming one is a migration.
  ``RULE_IDS`` are the rules of every message; ``ALL_RULE_IDS`` adds the
  marketplace rules (``reply_within_window``), which config may name too.
- Content rules look at ``draft.text`` (our own words) only. The buyer's quoted
  original (``draft.quoted_original``) is the buyer's text: it may contain
  their phone number or a link, and quoting it is required, not a violation.

Source of every rule: Amazon's Buyer-Seller Messaging guidelines as summarised
in docs/marketplaces.md ("Replying", "Content rules", "Critical vs unsolicited", "Buyer
opt-out"), and for ``reply_within_window`` Walmart's 48-hour reply window
("Other marketplaces"). Wording lists in languages other than English are our own
renderings, kept as data below so a reviewer can extend them without touching
the logic.

Decisions taken here (documented so the wiring and the operator know):

- ``no_links``: the default allowlist holds Amazon's own marketplace domains
  (``amazon.com``, ``amazon.de``, ... and their sub-domains). A link to the
  buyer's order page or Amazon's returns centre is "needed by the order" and
  does not lead off the platform; any other domain must be allowlisted by the
  operator. Set ``link_allowlist=()`` to forbid every link.
- ``text_length`` counts ``draft.text`` only (the quoted original is not ours
  to shorten) and also blocks an empty message.
- ``proactive_window``: an unknown completion date blocks unsolicited mail
  (we cannot prove it is inside the window) but not critical mail, which is
  typically needed *before* the order completes (customisation, address).
- ``reply_within_window`` warns by default: docs/marketplaces.md states the window, not
  that a late reply is refused, and a late answer beats none. It needs
  ``ctx.buyer_message_at``; without it the rule cannot judge and stays silent.
- Naive datetimes are taken as UTC.

Where things are: :mod:`.values` (what goes in and comes out), :mod:`.rules`
(the named rules, in order), :mod:`.phrases` (the wording they look for),
:mod:`.engine` (settings, ``check``, ``explain``). Import from this package.
"""

from bridge.domain.policy.engine import DEFAULT_CONFIG, PolicyConfig, check, explain
from bridge.domain.policy.phrases import (
    MARKETING_PATTERNS,
    OPT_OUT_LINK_PATTERNS,
    REVIEW_MANIPULATION_PATTERNS,
)
from bridge.domain.policy.rules import (
    ALL_RULE_IDS,
    ALL_RULES,
    LINK_TLDS,
    MARKETPLACE_RULE_IDS,
    MARKETPLACE_RULES,
    RULE_IDS,
    RULES,
    account_not_restricted,
    attachments_within_limits,
    find_links,
    find_phone_numbers,
    no_contact_details,
    no_important_unless_critical,
    no_links,
    no_marketing,
    no_opt_out_links,
    no_review_manipulation,
    no_unsolicited_to_opted_out,
    not_thank_you_only,
    proactive_window,
    recipient_is_conversation_buyer,
    reply_quotes_original,
    reply_within_window,
    sender_is_registered,
    text_length,
)
from bridge.domain.policy.values import (
    PROACTIVE,
    AttachmentInfo,
    Category,
    Decision,
    Draft,
    Finding,
    Hit,
    Mode,
    PolicyContext,
    Rule,
    RuleCheck,
    RuleSettings,
    Severity,
)

__all__ = [
    "ALL_RULES", "ALL_RULE_IDS", "DEFAULT_CONFIG", "LINK_TLDS", "MARKETING_PATTERNS", "MARKETPLACE_RULES",
    "MARKETPLACE_RULE_IDS", "OPT_OUT_LINK_PATTERNS", "PROACTIVE", "REVIEW_MANIPULATION_PATTERNS", "RULES",
    "RULE_IDS", "AttachmentInfo", "Category", "Decision", "Draft",
    "Finding", "Hit", "Mode", "PolicyConfig", "PolicyContext", "Rule", "RuleCheck", "RuleSettings", "Severity",
    "account_not_restricted", "attachments_within_limits", "check", "explain", "find_links", "find_phone_numbers",
    "no_contact_details", "no_important_unless_critical", "no_links", "no_marketing", "no_opt_out_links",
    "no_review_manipulation", "no_unsolicited_to_opted_out", "not_thank_you_only", "proactive_window",
    "recipient_is_conversation_buyer", "reply_quotes_original", "reply_within_window", "sender_is_registered",
    "text_length",
]
