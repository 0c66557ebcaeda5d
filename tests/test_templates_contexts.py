"""Every template's context is documented and plain; the shipped feedback requests are neutral and pass the guard."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest

from bridge.adapters.templates import TemplateContextError, Templates, shipped_templates
from bridge.domain import policy
from bridge.domain.template_contexts import LANGUAGES, TEMPLATES, context_problems, reference, sample

SHIPPED = shipped_templates()
DOCS = Path(__file__).resolve().parent.parent / "docs" / "templates.md"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
SELLER = "seller@acme.example"
BUYER = "k3j9x0qma2b7@marketplace.amazon.de"


def shipped_files() -> list[Path]:
    return sorted(SHIPPED.glob("*.j2"))


def test_every_shipped_template_is_documented() -> None:
    names = {p.name.split(".")[0] for p in shipped_files()}
    assert names == set(TEMPLATES)


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.name)
def test_a_shipped_template_uses_only_documented_variables(path: Path) -> None:
    env = jinja2.Environment()
    used = jinja2.meta.find_undeclared_variables(env.parse(path.read_text(encoding="utf-8")))
    spec = TEMPLATES[path.name.split(".")[0]]
    assert used <= spec.names, f"{path.name} uses undocumented {sorted(used - spec.names)}"


@pytest.mark.parametrize(("name", "lang"), [(n, lang) for n in TEMPLATES for lang in LANGUAGES])
def test_every_template_renders_with_its_sample_in_every_language(name: str, lang: str) -> None:
    rendered = Templates().render_localized(name, lang, sample(name, lang))
    assert rendered.subject and rendered.text.strip() and not rendered.broken
    assert "\n" not in rendered.subject


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_samples_are_plain_and_complete(name: str) -> None:
    for lang, context in TEMPLATES[name].samples.items():
        assert context_problems(name, context) == [], lang


class Row:   # what a database row or a settings object would be
    password = "hunter2"


@pytest.mark.parametrize(("change", "problem"), [
    (lambda c: c.pop("order_id"), "documented but not given: order_id"),
    (lambda c: c.update(settings=None), "given but not documented: settings"),
    (lambda c: c.update(order_id=Row()), "order_id is a Row, not a plain value"),
    (lambda c: c.update(items=["a", Row()]), "items[1] is a Row"),
    (lambda c: c.update(items=[{"t": Row()}]), "items[0]['t'] is a Row"),
    (lambda c: c.update(items=[{1: "a"}]), "has a key 1 that is not a string"),
])
def test_a_context_that_is_not_plain_or_not_documented_is_refused(change: Any, problem: str) -> None:
    context = sample("feedback_request")
    change(context)
    with pytest.raises(TemplateContextError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Templates().render("feedback_request", context)


def test_the_docs_carry_the_reference_of_every_variable() -> None:
    assert reference() in DOCS.read_text(encoding="utf-8"), "regenerate docs/templates.md: see its header"


@pytest.mark.parametrize(("lang", "used"), [
    ("de", "feedback_request.de"), ("de-AT", "feedback_request.de"), ("ja_JP", "feedback_request.ja"),
    ("FR", "feedback_request.fr"), ("en", "feedback_request"), ("en-GB", "feedback_request"),
    ("nl", "feedback_request"), ("", "feedback_request"), (None, "feedback_request"),
])
def test_render_localized_picks_the_language_and_falls_back_to_english(lang: str | None, used: str) -> None:
    rendered = Templates().render_localized("feedback_request", lang, sample("feedback_request"))
    assert rendered.template == used


# --------------------------------------------------------------------------- the feedback requests

def guard(rendered: Any, category: policy.Category = policy.Category.UNSOLICITED) -> policy.Decision:
    draft = policy.Draft(from_addr=SELLER, to_addr=BUYER, subject=rendered.subject, text=rendered.text,
                         category=category)
    ctx = policy.PolicyContext(seller_address=SELLER, buyer_alias=BUYER, now=NOW, order_completed_at=NOW)
    return policy.check(draft, ctx, policy.PolicyConfig(link_allowlist=()))


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("buyer_name", [None, "", "Jane Doe"])
def test_each_feedback_request_passes_the_guard_as_unsolicited_mail(lang: str, buyer_name: str | None) -> None:
    context = {**sample("feedback_request", lang), "buyer_name": buyer_name}
    rendered = Templates().render_localized("feedback_request", lang, context)
    assert rendered.template == ("feedback_request" if lang == "en" else f"feedback_request.{lang}")
    decision = guard(rendered)
    assert decision.findings == (), policy.explain(decision, rendered.text)
    # The marketplace wants the order id in proactive mail; the buyer's name only when known.
    assert context["order_id"] in rendered.subject and context["order_id"] in rendered.text
    assert all(title in rendered.text for title in context["items"])
    assert (buyer_name in rendered.text) if buyer_name else "None" not in rendered.text
    assert not list(policy.find_links(rendered.text)) and not list(policy.find_links(rendered.subject))


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("feedback_request*.j2")), ids=lambda p: p.name)
def test_the_feedback_wording_is_neutral(path: Path) -> None:
    source = path.read_text(encoding="utf-8").lower()
    for word in ("positive", "positiv", "5 star", "five star", "http", "www.", "refund", "gift", "discount",
                 "coupon", "if you are happy", "if you're satisfied", "zufrieden", "satisfait", "satisfecho",
                 "soddisfatt", "高評価", "満足", "★"):
        assert word not in source, word


def test_a_feedback_request_that_asks_for_a_positive_review_is_blocked() -> None:
    # The same check the test above passes: it does look.
    bad = type("R", (), {"subject": "Order 302-1234567-7654321",
                         "text": "Please leave us a positive review for order 302-1234567-7654321.\n"})
    assert guard(bad).rule_ids == ("no_review_manipulation",)
