"""bridge.domain.marketplaces: the Marketplace protocol, the registry, and eBay and Walmart as real implementations.

What docs/marketplaces.md knows of eBay and Walmart is tested as fact (relay domains, alias
shapes, Walmart's 48-hour reply window); what is our reading (order-number
patterns, the absence of known notices) is tested as the default of a field
that can be replaced, and the replacement is tested to take effect.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.domain import bounces, policy
from bridge.domain.classify import ClassifyContext, Kind, classify
from bridge.domain.marketplaces import (
    ALL_RELAY_DOMAINS,
    AMAZON,
    DEFAULT_REGISTRY,
    EBAY,
    MARKETPLACES,
    WALMART,
    Marketplace,
    Registry,
    ReplyRules,
)
from bridge.domain.marketplaces.protocol import LocalisedText
from bridge.domain.parse import parse_mail
from bridge.domain.prepare import FetchedMail, PrepareContext, prepare
from bridge.domain.threads import conversation_key, relay_family, split_relay_address

CORPUS = Path(__file__).parent / "data" / "inbound"
WALMART_ALIAS = "0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com"
EBAY_ALIAS = "lakeside_buyer.x7k2@members.ebay.com"
AMAZON_ALIAS = "k7m2x9q4t1v8w3z5@marketplace.amazon.com"
SELLER = "seller@acme.example"
CTX = ClassifyContext(seller_address=SELLER, staff_address="support@acme.example", staff_senders=("*@acme.example",),
                      reply_address="seller+{token}@acme.example", relay_domains=ALL_RELAY_DOMAINS,
                      sent_by_us=False, replies_to_us=False)


def _mail(from_header: str, subject: str = "Question", body: str = "Hello, where is my parcel?\n") -> bytes:
    return (f"From: {from_header}\nTo: {SELLER}\nSubject: {subject}\nMessage-ID: <m1@x.example>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}").encode()


# ------------------------------------------------------------------ the registry and its sites


def test_every_marketplace_meets_the_protocol() -> None:
    members = [name for name in dir(Marketplace) if not name.startswith("_")]
    for marketplace in DEFAULT_REGISTRY:
        for name in members:
            assert hasattr(marketplace, name), f"{marketplace.family} lacks {name}"
    assert [m.family for m in DEFAULT_REGISTRY] == ["amazon", "ebay", "walmart"]
    assert DEFAULT_REGISTRY.default is AMAZON


def test_config_keys_are_the_sites_of_the_marketplaces() -> None:
    assert {MARKETPLACES[k].family for k in MARKETPLACES} == {"amazon", "ebay", "walmart"}
    assert MARKETPLACES["walmart.com"].relay_domains == ("relay.walmart.com",)
    assert MARKETPLACES["ebay.de"].relay_domains == ("members.ebay.com",)
    for key, site in MARKETPLACES.items():
        assert site.key == key
        assert DEFAULT_REGISTRY.for_site(key).family == site.family
        assert set(site.relay_domains) <= DEFAULT_REGISTRY.for_site(key).relay_domains
        ZoneInfo(site.time_zone)    # a real IANA zone
        assert site.language in DEFAULT_REGISTRY.for_site(key).languages
    assert ALL_RELAY_DOMAINS == AMAZON.relay_domains | EBAY.relay_domains | WALMART.relay_domains


def test_a_registry_refuses_two_owners_of_one_relay_domain() -> None:
    with pytest.raises(ValueError, match="relay.walmart.com"):
        Registry((AMAZON, replace(EBAY, sites=EBAY.sites + WALMART.sites), WALMART))
    with pytest.raises(ValueError, match="site amazon.com"):
        Registry((AMAZON, replace(EBAY, sites=EBAY.sites + (replace(EBAY.sites[0], key="amazon.com"),))))
    with pytest.raises(ValueError, match="family"):
        Registry((AMAZON, AMAZON))
    with pytest.raises(ValueError):
        Registry(())


@pytest.mark.parametrize(("domain", "family"), [
    ("members.ebay.com", "ebay"), ("relay.walmart.com", "walmart"), ("marketplace.amazon.de", "amazon"),
    ("members.ebay.de", "other"),          # docs/marketplaces.md names members.ebay.com only
    ("relay.walmart.com.evil.example", "other"), ("walmart.com", "other"),
])
def test_relay_family(domain: str, family: str) -> None:
    assert relay_family(domain) == family


# ------------------------------------------------------------------ alias rules: recognised, rejected, reduced to a key


@pytest.mark.parametrize(("addr", "key"), [
    # Walmart: exactly 32 hex digits (docs/marketplaces.md)
    (WALMART_ALIAS, (WALMART_ALIAS, None)),
    ("0F1E2D3C4B5A69788796A5B4C3D2E1F0@RELAY.WALMART.COM", (WALMART_ALIAS, None)),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0+po77@relay.walmart.com", (WALMART_ALIAS, "po77")),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f@relay.walmart.com", None),             # 31
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f00@relay.walmart.com", None),           # 33
    ("gf1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com", None),            # g is not hex
    ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0@relay.walmart.com", None),        # a UUID is not the shape
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com.evil.example", None),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@evil-relay.walmart.com", None),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@sub.relay.walmart.com", None),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay-walmart.com", None),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@walmart.com", None),
    # eBay: any plain member alias at members.ebay.com
    (EBAY_ALIAS, (EBAY_ALIAS, None)),
    ("Lakeside_Buyer.X7K2@Members.eBay.com", (EBAY_ALIAS, None)),
    ("lakeside_buyer.x7k2+case-9@members.ebay.com", (EBAY_ALIAS, "case-9")),
    ("lakeside_buyer.x7k2@members.ebay.com.evil.example", None),
    ("lakeside_buyer.x7k2@evil-members.ebay.com", None),
    ("lakeside_buyer.x7k2@members-ebay.com", None),
    ("lakeside_buyer.x7k2@members.ebay.de", None),
    ("lakeside_buyer.x7k2@ebay.com", None),
    (".lakeside@members.ebay.com", None),
    ('"lakeside buyer"@members.ebay.com', None),
    ("@members.ebay.com", None),
])
def test_alias_key(addr: str, key: tuple[str, str | None] | None) -> None:
    assert split_relay_address(addr, ALL_RELAY_DOMAINS) == key
    marketplace = DEFAULT_REGISTRY.for_address(addr)
    if key is not None:
        assert marketplace is not None and marketplace.split_alias(addr) == key


@pytest.mark.parametrize(("from_header", "kind", "alias", "lookalike"), [
    (f'"Walmart Customer" <{WALMART_ALIAS}>', Kind.BUYER, WALMART_ALIAS, False),
    (f"<{EBAY_ALIAS}>", Kind.BUYER, EBAY_ALIAS, False),
    ("lakeside_buyer.x7k2@members.ebay.com.evil.example", Kind.OTHER, None, True),
    ("lakeside_buyer.x7k2@ebay-members.example", Kind.OTHER, None, True),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com.evil.example", Kind.OTHER, None, True),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@walmart-relay.example", Kind.OTHER, None, True),
    ("not-hex-at-all@relay.walmart.com", Kind.OTHER, None, True),            # malformed alias
    ("orders@walmart.com", Kind.OTHER, None, False),
])
def test_recognised_as_buyer_mail(from_header: str, kind: Kind, alias: str | None, lookalike: bool) -> None:
    result = classify(parse_mail(_mail(from_header)), CTX)
    assert (result.kind, result.buyer_alias) == (kind, alias)
    assert ("relay_lookalike_sender" in [h.rule for h in result.hits]) is lookalike


# ------------------------------------------------------------------ layouts: order ids (our reading, unverified)


@pytest.mark.parametrize(("marketplace", "subject", "text", "order_id"), [
    (EBAY, "Question about order 23-10456-78901", "", "23-10456-78901"),
    (EBAY, "Question", "Order number: 23-10456-78901\n", "23-10456-78901"),
    (EBAY, "Question about item #364512345678", "Can you combine shipping?", None),   # an item, not an order
    (EBAY, "Question", "Call me on 123-45678-901234", None),
    (EBAY, "Question", "Ref 1-23-10456-78901", None),
    (EBAY, "Question about order 23-10456-78901", "also 24-11111-22222", "23-10456-78901"),   # subject first
    (WALMART, "Customer inquiry about PO# 1234567890123", "", "1234567890123"),
    (WALMART, "Customer inquiry", "Purchase Order Number: 9876543210987", "9876543210987"),
    (WALMART, "Customer inquiry", "PO 1234567890123 and order # 200011112222333", "1234567890123"),   # PO wins
    (WALMART, "Customer inquiry", "Customer Order #: 200011112222333", "200011112222333"),
    (WALMART, "Customer inquiry", "PO# 12345", None),                    # too short for a PO number
    (WALMART, "Customer inquiry", "Call 555 123 4567 please", None),
    (WALMART, "Customer inquiry", "Order 111-2223334-4445556", None),    # an Amazon order is not Walmart's
])
def test_order_ids(marketplace: Marketplace, subject: str, text: str, order_id: str | None) -> None:
    assert marketplace.find_order_id(subject, text) == order_id
    fields = marketplace.extract_fields(subject=subject, text=text, html=None)
    assert fields.order_id == order_id
    # No frame around the buyer's words is known: staff get the whole text.
    assert fields.buyer_text is None and fields.comm_mgr_tok is None and fields.asins == ()


def test_fields_come_from_the_senders_marketplace() -> None:
    subject = "Question about PO# 1234567890123 and order 111-2223334-4445556"
    walmart = parse_mail(_mail(f"<{WALMART_ALIAS}>", subject))
    assert walmart.order_id == "1234567890123"
    # Mail no marketplace claims by its sender is read with the default (Amazon's) layout, as before.
    unknown = parse_mail(_mail("someone@example.com", subject))
    assert unknown.order_id == "111-2223334-4445556"


# ------------------------------------------------------------------ threading


def _prepared(name: str):  # type: ignore[no-untyped-def]
    raw = (CORPUS / name).read_bytes()
    base = {k: getattr(CTX, k) for k in ("seller_address", "staff_address", "staff_senders", "reply_address",
                                         "relay_domains")}
    return prepare(PrepareContext("acme", b"k" * 32, base, 10_000_000, SELLER), FetchedMail(1, len(raw), raw))


@pytest.mark.parametrize(("first", "second", "same"), [
    ("ebay_order_question.eml", "ebay_order_followup.eml", True),     # one buyer, one order (the second in mixed case)
    ("ebay_order_question.eml", "ebay_other_order.eml", False),       # one buyer, two orders
    ("ebay_order_question.eml", "ebay_member.eml", False),            # another buyer, no order
    ("walmart_relay.eml", "walmart_po_followup.eml", True),           # one buyer, one PO (the second in upper case)
    ("walmart_relay.eml", "walmart_other_po.eml", False),             # one buyer, two POs
    ("walmart_relay.eml", "ebay_order_question.eml", False),
])
def test_threading(first: str, second: str, same: bool) -> None:
    a, b = _prepared(first), _prepared(second)
    assert a.cls.kind is Kind.BUYER and b.cls.kind is Kind.BUYER
    assert a.recording.conversation_key is not None
    assert (a.recording.conversation_key == b.recording.conversation_key) is same


def test_conversation_keys_of_the_fixtures() -> None:
    assert _prepared("walmart_po_followup.eml").recording.conversation_key == f"{WALMART_ALIAS}#1234567890123"
    assert _prepared("ebay_other_order.eml").recording.conversation_key == f"{EBAY_ALIAS}#23-10456-99002"
    assert _prepared("ebay_member.eml").recording.conversation_key == conversation_key(
        "gardenfan_2010.ab12cd@members.ebay.com", None)


def test_buyer_name_falls_back_to_the_display_name() -> None:
    assert _prepared("ebay_order_question.eml").recording.buyer_name == "lakeside_buyer"
    assert _prepared("walmart_relay.eml").recording.buyer_name == "Walmart Customer"


# ------------------------------------------------------------------ the reply window in the policy

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
ORIGINAL = "Where is my second box?"


def _draft(to: str = WALMART_ALIAS, category: policy.Category = policy.Category.REPLY) -> policy.Draft:
    text = "Hello,\nthe second box left our warehouse today.\nAcme Store"
    return policy.Draft(from_addr=SELLER, to_addr=to, subject="Re: Customer inquiry", text=text, category=category,
                        quoted_original=f"> {ORIGINAL}" if category is policy.Category.REPLY else None)


def _ctx(to: str = WALMART_ALIAS, wrote_hours_ago: float | None = 10, **changes: object) -> policy.PolicyContext:
    wrote = NOW - timedelta(hours=wrote_hours_ago) if wrote_hours_ago is not None else None
    ctx = policy.PolicyContext(seller_address=SELLER, buyer_alias=to, now=NOW, buyer_original_text=ORIGINAL,
                               buyer_message_at=wrote, order_completed_at=NOW - timedelta(days=3))
    return replace(ctx, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("to", "hours", "category", "finding"), [
    (WALMART_ALIAS, 1, policy.Category.REPLY, False),
    (WALMART_ALIAS, 47.9, policy.Category.REPLY, False),
    (WALMART_ALIAS, 48, policy.Category.REPLY, False),                 # at the edge: still within
    (WALMART_ALIAS, 48.1, policy.Category.REPLY, True),
    (WALMART_ALIAS, 400, policy.Category.REPLY, True),
    (WALMART_ALIAS, None, policy.Category.REPLY, False),              # unknown: cannot judge
    (WALMART_ALIAS, 400, policy.Category.CRITICAL, False),            # a window for replies only
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0+po1@relay.walmart.com", 72, policy.Category.REPLY, True),
    (EBAY_ALIAS, 400, policy.Category.REPLY, False),                  # no window stated
    (AMAZON_ALIAS, 400, policy.Category.REPLY, False),                # no window stated
])
def test_reply_window(to: str, hours: float | None, category: policy.Category, finding: bool) -> None:
    decision = policy.check(_draft(to, category), _ctx(to, hours))
    window = [f for f in decision.findings if f.rule == "reply_within_window"]
    assert bool(window) is finding, decision.findings
    assert ("reply_within_window" in decision.evaluated) is to.endswith("@relay.walmart.com")
    if finding:
        # A stated window, not a refusal: warned by default, the reply still goes.
        assert decision.allowed and window[0].severity is policy.Severity.WARN
        assert "Walmart expects replies within 48 hours" in window[0].reason
    assert decision.rule_ids in ((), ("reply_within_window",))


def test_amazon_messages_are_judged_by_the_same_rules_as_before() -> None:
    decision = policy.check(_draft(AMAZON_ALIAS), _ctx(AMAZON_ALIAS, 400))
    assert decision.evaluated == policy.RULE_IDS
    assert "reply_within_window" not in policy.RULE_IDS and "reply_within_window" in policy.ALL_RULE_IDS


def test_the_reply_window_rule_can_block_or_be_off() -> None:
    late = _ctx(WALMART_ALIAS, 60)
    blocked = policy.check(_draft(), late, policy.PolicyConfig(modes={"reply_within_window": "block"}))
    assert not blocked.allowed and blocked.rule_ids == ("reply_within_window",)
    off = policy.check(_draft(), late, policy.PolicyConfig(modes={"reply_within_window": "off"}))
    assert off.allowed and off.findings == () and "reply_within_window" not in off.evaluated
    assert policy.PolicyConfig().mode("reply_within_window") is policy.Mode.WARN


def test_naive_buyer_time_is_utc() -> None:
    ctx = _ctx(WALMART_ALIAS, None, buyer_message_at=datetime(2024, 2, 27, 11, 0))   # 49 hours before NOW
    assert policy.check(_draft(), ctx).rule_ids == ("reply_within_window",)


def test_the_reply_window_is_configurable() -> None:
    # docs/marketplaces.md states 48 h; a registry with another window judges by it.
    registry = Registry((AMAZON, EBAY, replace(WALMART, reply=ReplyRules(True, timedelta(hours=24)))))
    assert policy.check(_draft(), _ctx(WALMART_ALIAS, 30)).findings == ()
    late = policy.check(_draft(), _ctx(WALMART_ALIAS, 30, marketplaces=registry))
    assert late.rule_ids == ("reply_within_window",) and "within 24 hours" in late.findings[0].reason


def test_policy_names_the_buyers_marketplace() -> None:
    draft = replace(_draft(), text="Hello,\nwrite to help@acme.example instead.\nAcme Store")
    (finding,) = policy.check(draft, _ctx()).blocking
    assert finding.rule == "no_contact_details" and "through Walmart" in finding.reason


# ------------------------------------------------------------------ notices and bounces


@pytest.mark.parametrize(("addr", "family"), [
    ("seller-notification@amazon.com", "amazon"), ("Notices@SellerCentral.Amazon.DE", "amazon"),
    ("seller-notification@amazon.com.evil.example", None), ("x@evil-amazon.com", None), ("@amazon.com", None),
    (WALMART_ALIAS, None),                        # a relay alias is a buyer, not a notification sender
    ("notices@ebay.com", None), ("notices@walmart.com", None),   # unknown for eBay and Walmart: not trusted
])
def test_notification_senders_are_exact_domains(addr: str, family: str | None) -> None:
    found = DEFAULT_REGISTRY.notification_marketplace(addr)
    assert (found.family if found else None) == family
    assert DEFAULT_REGISTRY.is_notification_sender(addr) is (family is not None)


def test_ebay_and_walmart_recognise_no_notice_by_default() -> None:
    # Nothing in docs/marketplaces.md says what their notices look like: such mail reaches staff.
    for marketplace in (EBAY, WALMART):
        assert marketplace.notification_domains == frozenset() and marketplace.notice_subjects == ()
        assert marketplace.find_undelivered_notice("the buyer has chosen to opt out of receiving unsolicited "
                                                   "messages") is None
        assert marketplace.notice_topic("Sold, ship now: Acme Widget") is None


def test_notice_fingerprints_and_senders_are_configurable() -> None:
    ebay = replace(EBAY, notification_domains=frozenset({"ebay.example"}),
                   notice_subjects=(("sold_ship_now", re.compile(r"^You made the sale\b")),),
                   undelivered_fingerprints=(("opted_out", LocalisedText("en", "This member does not accept "
                                                                                "messages from sellers", False)),))
    registry = Registry((AMAZON, ebay, WALMART))
    notice = _mail("eBay <notices@ebay.example>", "You made the sale for Acme Widget", "Ship by Friday.\n")
    assert classify(parse_mail(notice, registry), replace(CTX, marketplaces=registry)).kind is Kind.NOTICE
    assert classify(parse_mail(notice), CTX).kind is Kind.OTHER     # by default: unclassified, for staff
    optout = _mail("eBay <notices@ebay.example>", "Message not sent",
                   f"Your message to {EBAY_ALIAS} about order 23-10456-78901 was not sent.\n"
                   "This member does not accept messages from sellers.\n")
    report = bounces.analyse(optout, marketplaces=registry)
    assert report is not None and report.kind is bounces.BounceKind.OPTOUT
    assert (report.buyer_alias, report.order_id, report.verified) == (EBAY_ALIAS, "23-10456-78901", False)
    assert report.evidence.startswith("eBay opted_out notice") and report.reason.startswith("eBay did not deliver")
    assert bounces.analyse(optout) is None


def _dsn(to: str, subject: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.acme.example\nTo: {SELLER}\nSubject: Undelivered Mail Returned to Sender\n"
            "Message-ID: <dsn1@mx.acme.example>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
            "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.acme.example\n\n"
            f"Final-Recipient: rfc822; {to}\nAction: failed\nStatus: 5.1.1\n\n"
            f"--B\nContent-Type: message/rfc822\n\nFrom: {SELLER}\nTo: {to}\nSubject: {subject}\n"
            "Message-ID: <reply1@acme.example>\n\nThe box is on its way.\n\n--B--\n").encode()


@pytest.mark.parametrize(("to", "subject", "alias", "order_id", "language"), [
    (WALMART_ALIAS, "Re: Customer inquiry about PO# 1234567890123", WALMART_ALIAS, "1234567890123", "en"),
    (EBAY_ALIAS, "Re: Question about order 23-10456-78901", EBAY_ALIAS, "23-10456-78901", None),  # shared domain
    (AMAZON_ALIAS, "Re: Inquiry (Order: 111-2223334-4445556)", AMAZON_ALIAS, "111-2223334-4445556", "en"),
])
def test_a_bounce_names_the_buyer_order_and_language_by_the_buyers_marketplace(
        to: str, subject: str, alias: str, order_id: str, language: str | None) -> None:
    report = bounces.analyse(_dsn(to, subject))
    assert report is not None and report.kind is bounces.BounceKind.DSN
    assert (report.buyer_alias, report.order_id, report.marketplace_language) == (alias, order_id, language)
