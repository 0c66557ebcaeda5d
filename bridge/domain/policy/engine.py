"""The compliance guard's engine: operator settings, :func:`check` and :func:`explain` (pure).

``check`` runs every rule of :data:`.rules.RULES`, and each of
:data:`.rules.MARKETPLACE_RULES` that applies to the buyer's marketplace, whose
mode is not ``off``; every occurrence a rule objects to becomes one
:class:`.values.Finding`, so staff see all problems at once. ``explain`` words
a decision for staff.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY
from bridge.domain.policy.rules import ALL_RULE_IDS, ALL_RULES
from bridge.domain.policy.values import (
    Decision,
    Draft,
    Finding,
    Mode,
    PolicyContext,
    Severity,
)


def _default_link_allowlist() -> tuple[str, ...]:
    return DEFAULT_REGISTRY.default.link_domains   # Amazon's own sites: amazon.com, amazon.de, ...


_DEFAULT_ATTACHMENTS = DEFAULT_REGISTRY.default.attachments
_DEFAULT_MODES = {rule.id: rule.default_mode for rule in ALL_RULES}


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Operator settings. ``modes`` maps a rule id to ``block`` | ``warn`` | ``off``
    (absent: the rule's default, ``block`` for every rule of :data:`.rules.RULES`,
    ``warn`` for ``reply_within_window``). Unknown rule ids and bad values raise
    ``ValueError`` naming the key, so a typo in the TOML fails at start."""

    modes: Mapping[str, str] = field(default_factory=dict, hash=False)
    link_allowlist: tuple[str, ...] = field(default_factory=_default_link_allowlist)
    allowed_attachment_types: tuple[str, ...] = _DEFAULT_ATTACHMENTS.types   # file extensions
    max_attachment_bytes: int = _DEFAULT_ATTACHMENTS.max_bytes               # all attachments together
    max_attachments: int = _DEFAULT_ATTACHMENTS.max_count
    max_text_chars: int = 2000
    proactive_window_days: int = 30

    def __post_init__(self) -> None:
        known = set(ALL_RULE_IDS)
        modes: dict[str, Mode] = {}
        for rule_id, value in self.modes.items():
            if rule_id not in known:
                raise ValueError(f"policy.modes: unknown rule id {rule_id!r} (known: {', '.join(ALL_RULE_IDS)})")
            try:
                modes[rule_id] = Mode(str(value).strip().lower())
            except ValueError:
                raise ValueError(f"policy.modes.{rule_id}: {value!r} is not one of block, warn, off") from None
        object.__setattr__(self, "modes", MappingProxyType(modes))
        object.__setattr__(self, "link_allowlist", tuple(
            d.strip().lower().lstrip(".").removeprefix("www.") for d in self.link_allowlist if d.strip()))
        object.__setattr__(self, "allowed_attachment_types", tuple(
            t.strip().lower().lstrip(".") for t in self.allowed_attachment_types if t.strip()))
        for name in ("max_attachment_bytes", "max_attachments", "max_text_chars", "proactive_window_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"policy.{name}: must be a whole number >= 0, got {value!r}")

    def mode(self, rule_id: str) -> Mode:
        return Mode(self.modes.get(rule_id, _DEFAULT_MODES.get(rule_id, Mode.BLOCK)))


DEFAULT_CONFIG = PolicyConfig()


def check(draft: Draft, ctx: PolicyContext, config: PolicyConfig = DEFAULT_CONFIG) -> Decision:
    """Run every rule on ``draft``; blocked as soon as one rule in ``block`` mode objects."""
    findings: list[Finding] = []
    evaluated: list[str] = []
    for rule in ALL_RULES:
        if rule.applies is not None and not rule.applies(ctx):
            continue
        mode = config.mode(rule.id)
        if mode is Mode.OFF:
            continue
        evaluated.append(rule.id)
        severity = Severity.BLOCK if mode is Mode.BLOCK else Severity.WARN
        for hit in rule.check(draft, ctx, config):
            findings.append(Finding(rule.id, severity, hit.reason, hit.excerpt, hit.span))
    allowed = not any(f.severity is Severity.BLOCK for f in findings)
    return Decision(allowed, tuple(findings), tuple(evaluated))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def explain(decision: Decision, text: str | None = None) -> str:
    """A multi-line explanation for staff: verdict, then each finding with its rule id,
    the offending text marked ``>>>like this<<<`` (in context when ``text`` — the
    draft's text — is given) and what to change."""
    blocking, warnings = decision.blocking, decision.warnings
    if not decision.findings:
        return "Allowed: the message passed every rule."
    if decision.allowed:
        head = f"Allowed, with {len(warnings)} warning{'s' if len(warnings) != 1 else ''}."
    else:
        head = (f"Blocked: {len(blocking)} problem{'s' if len(blocking) != 1 else ''} must be fixed before this "
                f"message can be sent" + (f" ({len(warnings)} more only warned)." if warnings else "."))
    lines = [head]
    for number, finding in enumerate(decision.findings, 1):
        lines.append(f"{number}. [{finding.severity}] {finding.rule}: {finding.reason}")
        marked = _marked(finding, text)
        if marked:
            lines.append(f"   {marked}")
    return "\n".join(lines)


def _marked(finding: Finding, text: str | None) -> str | None:
    if text is not None and finding.span is not None:
        start, end = finding.span
        if 0 <= start <= end <= len(text):
            before = text[max(0, start - 40):start]
            after = text[end:end + 40]
            prefix = "..." if start > 40 else ""
            suffix = "..." if end + 40 < len(text) else ""
            return (f"{prefix}{_one_line(before)}>>>{_one_line(text[start:end])}<<<"
                    f"{_one_line(after)}{suffix}")
    if finding.excerpt:
        return f">>>{_one_line(finding.excerpt)}<<<"
    return None
