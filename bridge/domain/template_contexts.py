"""What each template mailbridge renders is given: names, types, meaning and sample values (pure).

Every email mailbridge writes is a Jinja template (``templates/<name>.subject.j2``
and ``<name>.txt.j2``, overridable by ``[daemon] templates``). This module is the
one place that says which variables each template gets, so that:

- ``Templates.render`` refuses a context whose keys differ from the documented
  ones, or that holds anything but plain values (:func:`context_problems`):
  no ORM rows, no engine, no settings objects, nothing that leads to a secret;
- ``mailbridge templates lint`` renders every template with :func:`sample`,
  per language, and reports a template that uses an undocumented variable;
- ``docs/templates.md`` carries :func:`reference` verbatim (a test holds it to it).

``LANGUAGES`` are the buyer languages templates ship in. A localised template is
``<name>.<lang>.subject.j2``; ``Templates.render_localized`` falls back to
``<name>`` (the English default) when the language has no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.domain.policy import Category

#: Buyer languages the shipped buyer templates exist in; English is the default (no suffix).
LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "ja")
DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class Variable:
    name: str
    type: str          # as a reader writes it: "str", "str | None", "int", "bool", "list[str]"
    meaning: str


@dataclass(frozen=True)
class TemplateSpec:
    """One template: who reads it, what it gets, and sample values per language."""

    name: str
    purpose: str
    audience: str                                   # "buyer" | "staff"
    variables: tuple[Variable, ...]
    samples: Mapping[str, Mapping[str, Any]]        # language -> context; "en" always present
    category: Category | None = None                # for buyer templates: what the guard judges them as
    quoted: str | None = None                       # the variable holding the buyer's words (not ours: the
    #                                                 guard's content rules skip it, as the relay does)
    where: str = ""                                 # where mailbridge renders it
    _names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", frozenset(v.name for v in self.variables))

    @property
    def names(self) -> frozenset[str]:
        return self._names


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _plain_problem(value: Any, path: str) -> str | None:
    """Why ``value`` is not a plain value (str, int, float, bool, None, lists and str-keyed dicts of them)."""
    if isinstance(value, _PLAIN_SCALARS):
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _plain_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key {key!r} that is not a string"
            problem = _plain_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is a {type(value).__name__}, not a plain value (str, int, float, bool, None, list, dict)"


def context_problems(name: str, context: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``context`` for template ``name``: values that are not plain, and, for a
    documented template, keys missing from or added to its documented variables. Empty: all good."""
    problems = [p for key, value in context.items() if (p := _plain_problem(value, key))]
    spec = TEMPLATES.get(base_name(name))
    if spec is not None:
        given = set(context)
        if missing := sorted(spec.names - given):
            problems.append(f"documented but not given: {', '.join(missing)}")
        if extra := sorted(given - spec.names):
            problems.append(f"given but not documented: {', '.join(extra)} (document them in "
                            f"bridge/domain/template_contexts.py)")
    return problems


def base_name(name: str) -> str:
    """``feedback_request.de`` -> ``feedback_request``; a name without a language suffix is returned as is."""
    head, _, lang = name.rpartition(".")
    return head if head and lang in LANGUAGES else name


def sample(name: str, lang: str = DEFAULT_LANGUAGE) -> dict[str, Any]:
    """The sample context of template ``name`` (a documented one) in ``lang``, else in English."""
    spec = TEMPLATES[base_name(name)]
    return dict(spec.samples.get(lang) or spec.samples[DEFAULT_LANGUAGE])


def reference() -> str:
    """The variables of every template as Markdown (``docs/templates.md`` carries it verbatim)."""
    out: list[str] = []
    for spec in TEMPLATES.values():
        out.append(f"### `{spec.name}`\n")
        audience = "buyers" if spec.audience == "buyer" else "staff"
        extra = f"; judged by the guard as {spec.category.value} mail" if spec.category else ""
        out.append(f"{spec.purpose} Read by {audience}{extra}. Rendered in {spec.where}.\n")
        out.append("| variable | type | meaning |")
        out.append("|---|---|---|")
        # "|" inside a table cell must be escaped, also within code spans (GitHub Markdown).
        out.extend(f"| `{v.name}` | `{v.type.replace('|', chr(92) + '|')}` | {v.meaning} |" for v in spec.variables)
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- the templates

_ACCOUNT = Variable("account", "str", "the account's name in the configuration")
_TAG = "MB-42"

STAFF_NOTIFICATION = TemplateSpec(
    name="staff_notification", audience="staff", where="`bridge/services/inbound.py`",
    purpose="A buyer message (or unclassified mail) forwarded to the support team.",
    variables=(
        Variable("marker", "str", "the line staff write above; mailbridge cuts their reply there"),
        Variable("kind", "str", "what the mail is: `buyer`, `other` (unclassified), ..."),
        Variable("flags", "list[str]", "flags raised on the conversation (`A-TO-Z CLAIM`, `UNCLASSIFIED`, ...)"),
        Variable("tag", "str", "the conversation's tag, `MB-<id>`"),
        Variable("subject", "str", "the mail's subject, `(no subject)` when it has none"),
        Variable("original_subject", "str | None", "the mail's subject as it came"),
        Variable("from_display", "str", "the sender, `Name <address>`"),
        Variable("buyer_name", "str | None", "the buyer's name, when the marketplace gives it"),
        Variable("buyer_alias", "str | None", "the buyer's relay address"),
        Variable("order_id", "str | None", "the order the mail is about"),
        Variable("text", "str", "the buyer's own words (the marketplace's frame cut off)"),
        Variable("marketplace", "str", "the account's marketplace, e.g. `amazon.de`"),
        Variable("message_count", "int", "messages in the conversation, this one included"),
        Variable("received", "str", "when mailbridge received it, `YYYY-MM-DD HH:MM UTC`"),
        _ACCOUNT,
        Variable("seller_address", "str", "the seller's registered address replies leave from"),
        Variable("defects", "list[str]", "what is malformed in the mail (unclassified mail only)"),
    ),
    samples={
        "en": {"marker": "##- Please type your reply above this line -##", "kind": "buyer",
               "flags": ["A-TO-Z CLAIM"], "tag": _TAG, "subject": "Order delivery inquiry (Order: 111-2223334-4445556)",
               "original_subject": "Order delivery inquiry (Order: 111-2223334-4445556)",
               "from_display": "Jane - Amazon Marketplace <k3j9x0qma2b7@marketplace.amazon.com>",
               "buyer_name": "Jane", "buyer_alias": "k3j9x0qma2b7@marketplace.amazon.com",
               "order_id": "111-2223334-4445556", "text": "Where is my tent?\n\nIt was due on Monday.",
               "marketplace": "amazon.com", "message_count": 2, "received": "2026-11-24 09:30 UTC",
               "account": "acme", "seller_address": "seller@acme.example", "defects": []},
        "ja": {"marker": "##- Please type your reply above this line -##", "kind": "other", "flags": ["UNCLASSIFIED"],
               "tag": "MB-M7", "subject": "(no subject)", "original_subject": None,
               "from_display": "supplier@example.jp", "buyer_name": None, "buyer_alias": None, "order_id": None,
               "text": "請求書を添付いたします。", "marketplace": "amazon.co.jp", "message_count": 1,
               "received": "2026-11-24 09:30 UTC", "account": "acme", "seller_address": "seller@acme.example",
               "defects": ["missing boundary"]},
    },
)

STAFF_ALERT = TemplateSpec(
    name="staff_alert", audience="staff",
    where="`bridge/services/notify.py` (`queue_staff_alert`), for every alert",
    purpose="A problem staff must know about (mail set aside, a broken template, a restriction, ...).",
    variables=(
        Variable("title", "str", "one line: what happened"),
        Variable("body", "str", "what happened in detail and what to do"),
        _ACCOUNT,
    ),
    samples={"en": {"title": "Message set aside: Invoice 2026-118",
                    "body": "mailbridge could not process a message in the seller mailbox, so it was set aside.",
                    "account": "acme"}},
)

BUYER_REPLY = TemplateSpec(
    name="buyer_reply", audience="buyer", category=Category.REPLY, quoted="buyer_text",
    where="`bridge/services/relay.py`",
    purpose="A staff member's answer, sent to the buyer from the seller's registered address.",
    variables=(
        Variable("staff_text", "str", "the staff member's own words, cut out of their reply"),
        Variable("seller_name", "str", "the seller's name (`seller_name` of the account)"),
        Variable("buyer_name", "str | None", "the buyer's name, when known"),
        Variable("buyer_subject", "str", "the subject of the buyer's thread, without `Re:`"),
        Variable("buyer_text", "str", "the buyer's message, quoted below (the marketplace requires it)"),
        Variable("buyer_date", "str | None", "when the buyer wrote, `24 Nov 2026`"),
        Variable("order_id", "str | None", "the conversation's order"),
        Variable("comm_mgr_tok", "str | None", "Amazon's `commMgrTok` of the buyer's message, kept in the quote"),
    ),
    samples={
        "en": {"staff_text": "Hi Jane, the footprint is included in the box.", "seller_name": "Acme Outdoor",
               "buyer_name": "Jane", "buyer_subject": "Product details inquiry from Amazon customer Jane",
               "buyer_text": "Does the tent come with a footprint?", "buyer_date": "24 Nov 2026",
               "order_id": "111-2223334-4445556", "comm_mgr_tok": "A1B2C3D4E5F6G"},
        "de": {"staff_text": "Hallo Jana, die Zeltunterlage liegt bei.", "seller_name": "Acme Outdoor GmbH",
               "buyer_name": None, "buyer_subject": "Anfrage zu Produktdetails", "buyer_text": "Ist eine Unterlage dabei?",
               "buyer_date": None, "order_id": None, "comm_mgr_tok": None},
    },
)

REPLY_PROBLEM = TemplateSpec(
    name="reply_problem", audience="staff", where="`bridge/services/relay.py` (`_explain`)",
    purpose="Tells the staff member who wrote a reply why it did not (yet) reach the buyer.",
    variables=(
        Variable("verdict", "str", "`Not sent`, `Blocked` or `Held`"),
        Variable("subject", "str", "the subject of the staff member's email"),
        Variable("reason", "str", "why, with the guard's explanation when it blocked"),
        Variable("action", "str", "what to do about it"),
        Variable("staff_text", "str | None", "what the staff member wrote, when it was found"),
        Variable("held", "bool", "true when the reply is held (it may still go out)"),
        _ACCOUNT,
    ),
    samples={"en": {"verdict": "Blocked", "subject": "Re: Where is my tent? [MB-42]",
                    "reason": "it breaks the marketplace's messaging rules: a phone number.",
                    "action": "change the marked text and send your answer again.",
                    "staff_text": "Call us.", "held": False, "account": "acme"}},
)

STAFF_CONFIRMATION = TemplateSpec(
    name="staff_confirmation", audience="staff", where="`bridge/workers/outbox.py` (`_queue_confirmation`)",
    purpose="A copy of exactly what the buyer received, in the conversation's staff thread.",
    variables=(
        Variable("subject", "str", "the subject of the mail sent to the buyer"),
        Variable("buyer", "str", "the buyer's relay address(es), comma-separated"),
        Variable("sent", "str", "when it was handed to the mail server, `YYYY-MM-DD HH:MM UTC`"),
        Variable("sent_text", "str", "the text the buyer received"),
        Variable("attachments", "list[str]", "file names of the attachments sent"),
        Variable("tag", "str", "the conversation's tag, `MB-<id>` (`-` when none)"),
        _ACCOUNT,
        Variable("signature_cut", "list[str]", "lines of the staff member's signature left out because they "
                                               "carry contact details (phone, website...); empty when none"),
    ),
    samples={"en": {"subject": "Re: Product details inquiry", "buyer": "k3j9x0qma2b7@marketplace.amazon.com",
                    "sent": "2026-11-24 09:31 UTC", "sent_text": "Hi Jane, the footprint is included.",
                    "attachments": ["manual.pdf"], "tag": _TAG, "account": "acme",
                    "signature_cut": ["Tel +1 206 555 0100 | www.acme-outdoor.example"]}},
)


def _feedback(buyer_name: str | None, items: list[str], seller: str, language: str) -> dict[str, Any]:
    return {"buyer_name": buyer_name, "order_id": "302-1234567-7654321", "items": items, "seller_name": seller,
            "marketplace": "Amazon", "language": language}


FEEDBACK_REQUEST = TemplateSpec(
    name="feedback_request", audience="buyer", category=Category.UNSOLICITED,
    where="`bridge/services/feedback.py`, in the buyer's language (`feedback_request.<lang>`, else English)",
    purpose="The one neutral request per order for the buyer's feedback (docs/marketplaces.md, "
            "\"Feedback and review requests\").",
    variables=(
        Variable("order_id", "str", "the order asked about (the marketplace requires it in proactive mail)"),
        Variable("buyer_name", "str | None", "the buyer's name, when known"),
        Variable("items", "list[str]", "the titles of the order's items"),
        Variable("seller_name", "str", "the seller's name (`seller_name` of the account)"),
        Variable("marketplace", "str", "the marketplace's name as buyers know it, e.g. `Amazon`"),
        Variable("language", "str", "the buyer's language the request is written for: `en`, `de`, `ja`, ..."),
    ),
    samples={
        "en": _feedback("Jane Doe", ["Trail tent, 2 persons", "Tent footprint"], "Acme Outdoor", "en"),
        "de": _feedback("Jana Schmidt", ["Trekkingzelt für 2 Personen"], "Acme Outdoor GmbH", "de"),
        "fr": _feedback(None, ["Tente de randonnée 2 places"], "Acme Outdoor", "fr"),
        "es": _feedback("Lucía", ["Tienda de campaña para 2 personas", "Suelo para tienda"], "Acme Outdoor", "es"),
        "it": _feedback("Giulia Rossi", ["Tenda da trekking per 2 persone"], "Acme Outdoor", "it"),
        "ja": _feedback("山田太郎", ["2人用テント"], "Acme Outdoor", "ja"),
    },
)

#: Every template mailbridge renders, by name.
TEMPLATES: Mapping[str, TemplateSpec] = {t.name: t for t in (
    STAFF_NOTIFICATION, STAFF_ALERT, BUYER_REPLY, REPLY_PROBLEM, STAFF_CONFIRMATION, FEEDBACK_REQUEST)}
