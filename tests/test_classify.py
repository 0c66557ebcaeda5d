"""bridge.domain.classify: the corpus table, the rule list, and one table per rule group."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.domain.classify import (
    FALLBACK_RULE,
    RULE_NAMES,
    RULES,
    Classification,
    ClassifyContext,
    Kind,
    classify,
)
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS, amazon
from bridge.domain.parse import ParsedMail, parse_mail

CORPUS = Path(__file__).parent / "data" / "inbound"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((CORPUS / "expected.toml").read_text("utf-8"))
FILES = sorted(p.name for p in CORPUS.glob("*.eml"))

CTX = ClassifyContext(
    seller_address="seller@acme.example",
    staff_address="support@acme.example",
    staff_senders=("*@acme.example",),
    reply_address="seller+{token}@acme.example",
    relay_domains=ALL_RELAY_DOMAINS,
    sent_by_us=False,
    replies_to_us=False,
)

RELAY = '"Jane - Amazon Marketplace" <k7m2x9q4t1v8w3z5@marketplace.amazon.com>'
CLASSIC_BODY = ("Order ID 111-2223334-4445556:\n\n------------- Begin message -------------\n\n{words}\n\n"
                "------------- End message -------------\n\n[commMgrTok:A1B2C3D4E5F6G]\n")


def _mail(headers: str, body: str = "hello\n") -> ParsedMail:
    return parse_mail((headers.strip("\n") + "\n\n" + body).encode())


def _classify(headers: str, body: str = "hello\n", **ctx: Any) -> Classification:
    return classify(_mail(headers, body), replace(CTX, **ctx))


def _names(result: Classification) -> list[str]:
    return [h.rule for h in result.hits]


# --------------------------------------------------------------------------- corpus

@pytest.mark.parametrize("name", FILES)
def test_corpus_classification(name: str) -> None:
    exp = EXPECTED[name]
    ctx = replace(CTX, sent_by_us=exp.get("sent_by_us", False), replies_to_us=exp.get("replies_to_us", False))
    result = classify(parse_mail((CORPUS / name).read_bytes()), ctx)
    assert result.kind == Kind(exp["kind"]), result.hits
    assert result.decided_by == exp["decided_by"]
    assert result.buyer_alias == exp.get("buyer_alias")
    assert result.buyer_address == exp.get("buyer_address")
    assert result.reply_token == exp.get("reply_token")
    for rule in exp.get("hits", []):
        assert rule in _names(result), result.hits


@pytest.mark.parametrize("name", FILES)
def test_corpus_decision_invariants(name: str) -> None:
    result = classify(parse_mail((CORPUS / name).read_bytes()), CTX)
    decision = result.decision
    assert decision is not None and decision.kind == result.kind and decision.rule == result.decided_by
    assert all(h.rule in RULE_NAMES for h in result.hits)
    order = [RULE_NAMES.index(h.rule) for h in result.hits]
    assert order == sorted(order), "hits are recorded in rule order"
    assert (result.buyer_alias is not None) == (result.kind is Kind.BUYER)
    assert result.reply_token is None or result.kind is Kind.STAFF_REPLY


# --------------------------------------------------------------------------- the rule list

def test_rule_order() -> None:
    assert RULE_NAMES == (
        "own_message",
        "delivery_status_report", "mta_bounce", "failed_recipients_header", "marketplace_undelivered_notice",
        "auto_submitted_header", "precedence_bulk", "auto_response_suppress_header", "autoreply_header",
        "out_of_office_subject", "disposition_notification",
        "staff_reply_address", "staff_reply_to_notification", "reply_address_foreign_sender",
        "relay_sender", "relay_reply_to_only", "relay_lookalike_sender",
        "marketplace_notice", "notice_subject_foreign_sender",
        FALLBACK_RULE,
    )


@pytest.mark.parametrize("name", FILES)
def test_each_rule_names_its_hits_after_itself(name: str) -> None:
    mail = parse_mail((CORPUS / name).read_bytes())
    for rule in RULES:
        for ctx in (CTX, replace(CTX, sent_by_us=True, replies_to_us=True)):
            hit = rule(mail, ctx)
            assert hit is None or hit.rule == rule.__name__


def test_kind_groups_follow_design_order() -> None:
    kinds = [Kind.OWN, Kind.BOUNCE, Kind.AUTO_REPLY, Kind.STAFF_REPLY, Kind.BUYER, Kind.NOTICE]
    firsts = []
    for kind in kinds:
        probe = {
            Kind.OWN: ("own_message",), Kind.BOUNCE: ("delivery_status_report",),
            Kind.AUTO_REPLY: ("auto_submitted_header",), Kind.STAFF_REPLY: ("staff_reply_address",),
            Kind.BUYER: ("relay_sender",), Kind.NOTICE: ("marketplace_notice",),
        }[kind]
        firsts.append(RULE_NAMES.index(probe[0]))
    assert firsts == sorted(firsts)


# --------------------------------------------------------------------------- own

def test_own_beats_everything() -> None:
    result = _classify(f"From: {RELAY}\nAuto-Submitted: auto-replied\nSubject: Undeliverable: x",
                       CLASSIC_BODY.format(words="hi"), sent_by_us=True)
    assert result.kind is Kind.OWN
    assert "relay_sender" in _names(result)  # later hits still recorded


# --------------------------------------------------------------------------- bounces

@pytest.mark.parametrize(("headers", "rule"), [
    ("From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender", "mta_bounce"),
    ("From: postmaster@example.org\nSubject: Undeliverable: your order", "mta_bounce"),
    ("From: Mailer-Daemon@example.org\nSubject: Mail delivery failed: returning message to sender", "mta_bounce"),
    ("From: mailer-daemon@googlemail.com\nSubject: Delivery Status Notification (Failure)", "mta_bounce"),
    ("From: x@example.org\nReturn-Path: <>\nSubject: failure notice", "mta_bounce"),
    ("From: postmaster@example.de\nSubject: Unzustellbar: Ihre Bestellung", "mta_bounce"),
    ("From: x@example.org\nX-Failed-Recipients: a@b.example\nSubject: hi", "failed_recipients_header"),
    ("From: x@example.org\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n"
     "Subject: report", "delivery_status_report"),
    ('From: x@example.org\nContent-Type: multipart/report; report-type="delivery-status"; boundary=b\n'
     "Subject: report", "delivery_status_report"),
])
def test_bounces(headers: str, rule: str) -> None:
    body = "--b\nContent-Type: text/plain\n\nfailed\n--b--\n" if "boundary=b" in headers else "failed\n"
    result = _classify(headers, body)
    assert result.kind is Kind.BOUNCE and result.decided_by == rule


@pytest.mark.parametrize("headers", [
    "From: jane@example.org\nSubject: Undeliverable: this is just a subject",       # not a daemon, sender not null
    "From: MAILER-DAEMON@mx.example\nSubject: Your weekly statistics",             # daemon, but no bounce subject
    "From: x@example.org\nContent-Type: multipart/report; report-type=disposition-notification; boundary=b",
])
def test_not_bounces(headers: str) -> None:
    assert _classify(headers, "--b\n\nx\n--b--\n").kind is not Kind.BOUNCE


@pytest.mark.parametrize(("body", "reason"), [
    ("We were unable to deliver the message you sent for order 111-2223334-4445556 because the buyer has\n"
     "chosen to opt out of receiving unsolicited messages from sellers.", "opted_out"),
    ("The buyer opted out from receiving this message.", "opted_out"),
    ("This message was not sent as it did not meet the Buyer-Seller Messaging communication guidelines.",
     "guidelines"),
    ("Your account was temporarily restricted from sending proactive messages.", "restricted"),
    ("We were unable to deliver the message you sent for order 111-2223334-4445556.", "not_delivered"),
    ("WE WERE UNABLE TO DELIVER THE MESSAGE\nYOU SENT", "not_delivered"),
    ("L\u2019acheteur a choisi de ne pas recevoir de messages non sollicités.", "opted_out"),
    ("Der Käufer hat den Erhalt dieser Nachricht abgelehnt.", "opted_out"),
    ("購入者が出品者からの未承諾のメッセージの受信を\n拒否しています。", "opted_out"),
])
def test_undelivered_notice_fingerprints(body: str, reason: str) -> None:
    notice = amazon.find_undelivered_notice(body)
    assert notice is not None and notice.reason == reason
    result = _classify("From: donotreply@amazon.com\nSubject: Message not delivered", body + "\n")
    assert result.kind is Kind.BOUNCE and result.decided_by == "marketplace_undelivered_notice"


@pytest.mark.parametrize("body", [
    "I opted out of your emails, stop sending them.",
    "opted out",
    "Why was the message not delivered?",
    "> We were unable to deliver the message you sent for order 111-2223334-4445556",
    "Thanks!\n\nOn Mon, 1 Jan 2024 Amazon <donotreply@amazon.com> wrote:\n"
    "The buyer opted out from receiving this message.",
    "Thanks!\n\n-----Original Message-----\nThe buyer opted out from receiving this message.",
])
def test_undelivered_notice_negatives(body: str) -> None:
    assert amazon.find_undelivered_notice(body) is None


def test_buyer_quoting_the_notice_stays_buyer() -> None:
    words = ("Amazon told you: \"We were unable to deliver the message you sent because the buyer has chosen "
             "to opt out of receiving unsolicited messages\". I never opted out!")
    result = _classify(f"From: {RELAY}\nSubject: Re: Order information (Order: 111-2223334-4445556)",
                       CLASSIC_BODY.format(words=words))
    assert result.kind is Kind.BUYER
    assert "marketplace_undelivered_notice" not in _names(result)


def test_html_only_notice_is_found_in_the_converted_text() -> None:
    body = "<p>The buyer <b>opted out</b> from receiving this message.</p>\n"
    result = _classify("From: donotreply@amazon.com\nContent-Type: text/html\nSubject: x", body)
    assert result.kind is Kind.BOUNCE


def test_notice_detected_by_content_not_sender() -> None:
    body = "The buyer opted out from receiving this message.\n"
    assert _classify("From: whoever@unknown-sender.example\nSubject: x", body).kind is Kind.BOUNCE
    assert _classify("From: donotreply@amazon.com\nSubject: x", "Your message was sent.\n").kind is Kind.OTHER


# --------------------------------------------------------------------------- auto-replies

@pytest.mark.parametrize(("headers", "rule"), [
    ("Auto-Submitted: auto-replied", "auto_submitted_header"),
    ("Auto-Submitted: auto-generated", "auto_submitted_header"),
    ("Auto-Submitted: auto-notified; owner-email=x@y", "auto_submitted_header"),
    ("Precedence: bulk", "precedence_bulk"),
    ("Precedence: JUNK", "precedence_bulk"),
    ("Precedence: list", "precedence_bulk"),
    ("X-Auto-Response-Suppress: All", "auto_response_suppress_header"),
    ("X-Auto-Response-Suppress: OOF, AutoReply", "auto_response_suppress_header"),
    ("X-Autoreply: yes", "autoreply_header"),
    ("X-Autorespond: vacation", "autoreply_header"),
    ("X-Autogenerated: Reply", "autoreply_header"),
    ("Subject: Out of Office: your order", "out_of_office_subject"),
    ("Subject: Automatic reply: your order", "out_of_office_subject"),
    ("Subject: Abwesenheitsnotiz: Ihre Bestellung", "out_of_office_subject"),
    ("Subject: Automatische Antwort: Ihre Bestellung", "out_of_office_subject"),
    ("Subject: =?utf-8?q?R=C3=A9ponse_automatique_=3A_commande?=", "out_of_office_subject"),
    ("Subject: =?utf-8?q?Respuesta_autom=C3=A1tica=3A_pedido?=", "out_of_office_subject"),
    ("Subject: Risposta automatica: ordine", "out_of_office_subject"),
    ("Subject: =?utf-8?b?6Ieq5YuV5b+c562UOiDms6jmlofjgavjgaTjgYTjgaY=?=", "out_of_office_subject"),
    ("Content-Type: multipart/report; report-type=disposition-notification; boundary=b",
     "disposition_notification"),
])
def test_auto_replies(headers: str, rule: str) -> None:
    if "Subject:" not in headers:
        headers += "\nSubject: Re: your order"
    result = _classify("From: someone@example.org\n" + headers, "--b\n\nx\n--b--\n")
    assert result.kind is Kind.AUTO_REPLY and result.decided_by == rule


@pytest.mark.parametrize("headers", [
    "Auto-Submitted: no", "Auto-Submitted: No", "Precedence: first-class", "X-Autoreply: no",
    "Subject: Office supplies order", "Subject: Re: automatic transmission part",
])
def test_not_auto_replies(headers: str) -> None:
    if "Subject:" not in headers:
        headers += "\nSubject: Re: your order"
    assert _classify("From: someone@example.org\n" + headers).kind is Kind.OTHER


@pytest.mark.parametrize(("extra", "kind"), [
    ("Precedence: bulk", Kind.BUYER),
    ("X-Auto-Response-Suppress: All", Kind.BUYER),
    ("Auto-Submitted: auto-generated", Kind.BUYER),
    ("X-Autoreply: yes", Kind.BUYER),
    ("Subject: Out of Office: hi", Kind.BUYER),
    ("Auto-Submitted: auto-replied", Kind.AUTO_REPLY),
])
def test_relay_buyer_layout_and_bulk_headers(extra: str, kind: Kind) -> None:
    headers = f"From: {RELAY}\n{extra}"
    if "Subject:" not in extra:
        headers += "\nSubject: Inquiry from Amazon customer Jane (Order: 111-2223334-4445556)"
    result = _classify(headers, CLASSIC_BODY.format(words="Where is my parcel?"))
    assert result.kind is kind
    ignored = [h for h in result.hits if h.kind is Kind.AUTO_REPLY and not h.decides]
    assert bool(ignored) == (kind is Kind.BUYER)
    assert all("ignored" in h.reason for h in ignored)


def test_relay_without_buyer_layout_and_bulk_headers_is_auto() -> None:
    result = _classify(f"From: {RELAY}\nPrecedence: bulk\nSubject: hi", "no layout at all\n")
    assert result.kind is Kind.AUTO_REPLY


def test_amazon_sender_bulk_headers_do_not_hide_mail_from_staff() -> None:
    result = _classify("From: seller-performance@amazon.com\nPrecedence: bulk\nSubject: Account health")
    assert result.kind is Kind.OTHER
    spoof = _classify("From: seller-performance@amazon.com.evil.example\nPrecedence: bulk\nSubject: x")
    assert spoof.kind is Kind.AUTO_REPLY


# --------------------------------------------------------------------------- staff replies

@pytest.mark.parametrize(("headers", "kind", "token", "rule"), [
    ("From: jo@acme.example\nTo: seller+v1.abc-DEF_9@acme.example", Kind.STAFF_REPLY, "v1.abc-def_9",
     "staff_reply_address"),
    ("From: Jo <JO@ACME.EXAMPLE>\nTo: x@y.example\nCc: <Seller+tok@Acme.Example>", Kind.STAFF_REPLY, "tok",
     "staff_reply_address"),
    ("From: jo@acme.example\nTo: support@acme.example\nDelivered-To: seller+tok@acme.example",
     Kind.STAFF_REPLY, "tok", "staff_reply_address"),
    ("From: jo@acme.example\nTo: seller+@acme.example", Kind.OTHER, None, FALLBACK_RULE),
    ("From: jo@acme.example\nTo: seller+a/b@acme.example", Kind.OTHER, None, FALLBACK_RULE),
    ("From: jo@acme.example\nTo: seller+tok@acme.example.evil", Kind.OTHER, None, FALLBACK_RULE),
    ("From: jo@acme.example\nTo: xseller+tok@acme.example", Kind.OTHER, None, FALLBACK_RULE),
    ("From: jo@acme.example\nTo: seller@acme.example", Kind.OTHER, None, FALLBACK_RULE),
    ("From: jo@acme.example.evil\nTo: seller+tok@acme.example", Kind.OTHER, None, FALLBACK_RULE),
    ("From: stranger@evil.example\nTo: seller+tok@acme.example", Kind.OTHER, None, FALLBACK_RULE),
])
def test_staff_replies(headers: str, kind: Kind, token: str | None, rule: str) -> None:
    result = _classify(headers + "\nSubject: RE: [MB-1] question")
    assert (result.kind, result.reply_token, result.decided_by) == (kind, token, rule)


def test_staff_sender_globs() -> None:
    headers = "From: ana@acme.example\nTo: seller+tok@acme.example\nSubject: re"
    assert _classify(headers, staff_senders=("jo@acme.example",)).kind is Kind.OTHER
    assert _classify(headers, staff_senders=("jo@acme.example", "ana@*")).kind is Kind.STAFF_REPLY
    assert _classify(headers, staff_senders=()).kind is Kind.OTHER


def test_foreign_sender_to_reply_address_is_recorded_and_never_buyer() -> None:
    result = _classify("From: stranger@evil.example\nTo: seller+tok@acme.example\nSubject: re")
    assert result.kind is Kind.OTHER
    hit = result.hits[0]
    assert hit.rule == "reply_address_foreign_sender" and not hit.decides


def test_replies_to_us_needs_a_staff_sender() -> None:
    staff = _classify("From: jo@acme.example\nTo: support@acme.example\nSubject: re", replies_to_us=True)
    assert (staff.kind, staff.decided_by) == (Kind.STAFF_REPLY, "staff_reply_to_notification")
    stranger = _classify("From: x@evil.example\nTo: support@acme.example\nSubject: re", replies_to_us=True)
    assert stranger.kind is Kind.OTHER and "reply_address_foreign_sender" in _names(stranger)


def test_reply_address_pattern_without_token_never_matches() -> None:
    result = _classify("From: jo@acme.example\nTo: seller@acme.example\nSubject: re",
                       reply_address="seller@acme.example")
    assert result.kind is Kind.OTHER


def test_staff_reply_quoting_a_notice_is_a_staff_reply() -> None:
    body = "Noted.\n\nThe buyer opted out from receiving this message.\n"
    result = _classify("From: jo@acme.example\nTo: seller+tok@acme.example\nSubject: RE: notice", body)
    assert result.kind is Kind.STAFF_REPLY


# --------------------------------------------------------------------------- buyers

@pytest.mark.parametrize(("from_header", "kind", "alias", "address"), [
    (RELAY, Kind.BUYER, "k7m2x9q4t1v8w3z5@marketplace.amazon.com", "k7m2x9q4t1v8w3z5@marketplace.amazon.com"),
    ("abcd1234+case77@marketplace.amazon.fr", Kind.BUYER, "abcd1234@marketplace.amazon.fr",
     "abcd1234+case77@marketplace.amazon.fr"),
    ("ABCD1234@MARKETPLACE.AMAZON.CO.JP", Kind.BUYER, "abcd1234@marketplace.amazon.co.jp",
     "abcd1234@marketplace.amazon.co.jp"),
    ("abcd1234@marketplace.amazon.com.evil.example", Kind.OTHER, None, None),
    ("abcd1234@evil-marketplace.amazon.com", Kind.OTHER, None, None),
    ("abcd1234@marketplace.amazon.com.", Kind.OTHER, None, None),
    ("abcd1234@marketplaces.amazon.com", Kind.OTHER, None, None),
    ("jane.doe@marketplace.amazon.com", Kind.OTHER, None, None),
])
def test_buyers(from_header: str, kind: Kind, alias: str | None, address: str | None) -> None:
    result = _classify(f"From: {from_header}\nSubject: Inquiry from Amazon customer Jane",
                       CLASSIC_BODY.format(words="hi"))
    assert (result.kind, result.buyer_alias, result.buyer_address) == (kind, alias, address)
    if kind is Kind.OTHER:
        assert "relay_lookalike_sender" in _names(result)


def test_relay_domains_come_from_the_context() -> None:
    headers = f"From: {RELAY}\nSubject: hi"
    assert _classify(headers, relay_domains=frozenset({"marketplace.amazon.de"})).kind is Kind.OTHER


def test_reply_to_relay_alone_is_not_a_buyer() -> None:
    result = _classify("From: attacker@evil.example\nReply-To: k7m2x9q4t1v8w3z5@marketplace.amazon.com\n"
                       "Subject: hi", CLASSIC_BODY.format(words="send it elsewhere"))
    assert result.kind is Kind.OTHER and result.buyer_alias is None
    assert "relay_reply_to_only" in _names(result)


# --------------------------------------------------------------------------- notices

@pytest.mark.parametrize(("from_addr", "subject", "kind"), [
    ("seller-notification@amazon.com", "Sold, ship now: Acme Widget", Kind.NOTICE),
    ("seller-notification@amazon.com", "Sold, Ship Now. 12345 Acme Widget", Kind.NOTICE),
    ("seller-notification@amazon.com", "Sold -- ship now! (2 listings/3 items)", Kind.NOTICE),
    ("seller-notification@amazon.co.uk", "Sold, ship now: Acme Widget", Kind.NOTICE),
    ("no-reply@sellercentral.amazon.de", "Verkauft, jetzt versenden: Acme", Kind.NOTICE),
    ("atoz-guarantee-no-reply@amazon.com", "A-to-z Guarantee claim filed for order 111-2223334-4445556",
     Kind.NOTICE),
    ("seller-notification@amazon.com", "New buyer feedback received", Kind.NOTICE),
    ("seller-notification@amazon.com", "Your listing is live", Kind.OTHER),
    ("seller-notification@amazon.com.evil.example", "Sold, ship now: Acme Widget", Kind.OTHER),
    ("seller-notification@evil-amazon.com", "Sold, ship now: Acme Widget", Kind.OTHER),
    ("seller-notification@amazonses.com", "Sold, ship now: Acme Widget", Kind.OTHER),
])
def test_notices(from_addr: str, subject: str, kind: Kind) -> None:
    result = _classify(f"From: {from_addr}\nSubject: {subject}", "Order ID: 111-2223334-4445556\n")
    assert result.kind is kind
    if kind is Kind.OTHER and amazon.notice_topic(subject):
        assert "notice_subject_foreign_sender" in _names(result)


@pytest.mark.parametrize(("subject", "topic"), [
    ("Sold, ship now: x", "sold_ship_now"),
    ("sold--ship now", "sold_ship_now"),
    ("Chargeback claim received", "claim"),
    ("Return authorization notification (Order: 111-2223334-4445556)", "return"),
    ("Soldier ship nowhere", None),
    ("Inquiry from Amazon customer Jane", None),
])
def test_notice_topic(subject: str, topic: str | None) -> None:
    assert amazon.notice_topic(subject) == topic


@pytest.mark.parametrize(("addr", "expected"), [
    ("seller-notification@amazon.com", True), ("X@AMAZON.CO.JP", True), ("x@sellercentral.amazon.de", True),
    ("x@marketplace.amazon.com", False), ("x@amazon.com.evil.example", False), ("x@evilamazon.com", False),
    ("amazon.com", False), ("@amazon.com", False), ("", False),
])
def test_is_notification_sender(addr: str, expected: bool) -> None:
    assert amazon.is_notification_sender(addr) is expected


# --------------------------------------------------------------------------- other

def test_nothing_decides_means_other_with_fallback_hit() -> None:
    result = _classify("From: friend@example.org\nSubject: lunch?")
    assert result.kind is Kind.OTHER
    assert [(h.rule, h.decides) for h in result.hits] == [(FALLBACK_RULE, True)]


def test_empty_mail_is_other() -> None:
    result = classify(parse_mail(b"X-Nothing: here\n\n"), CTX)
    assert result.kind is Kind.OTHER and result.buyer_alias is None


# --------------------------------------------------------------------------- what recording needs

@pytest.mark.parametrize("name", FILES)
def test_prepared_recording_follows_from_kind_and_content(name: str) -> None:
    """bridge.domain.prepare works out, ahead of the database, what recording a message needs."""
    import json

    from bridge.domain import threads, tokens
    from bridge.domain.prepare import FetchedMail, PrepareContext, prepare

    raw = (CORPUS / name).read_bytes()
    base = {k: getattr(CTX, k) for k in ("seller_address", "staff_address", "staff_senders", "reply_address",
                                         "relay_domains")}
    ctx = PrepareContext("acme", b"k" * 32, base, 10_000_000, "Seller@Acme.Example")
    prepared = prepare(ctx, FetchedMail(7, len(raw), raw))
    if prepared.error is not None:
        return
    mail, cls, rec = prepared.mail, prepared.cls, prepared.recording
    assert mail is not None and cls is not None and rec is not None
    assert json.loads(rec.rule_hits) == [{"rule": h.rule, "kind": h.kind.value, "reason": h.reason,
                                          "decides": h.decides} for h in cls.hits]
    assert rec.thread_subject == (threads.thread_subject(mail.subject) or mail.subject)
    if cls.kind is Kind.BUYER and cls.buyer_alias:
        assert rec.conversation_key == threads.conversation_key(cls.buyer_alias, mail.order_id)
    else:
        assert rec.conversation_key is None
    assert (rec.buyer_name is not None or not (mail.buyer_name or mail.from_name.strip())) \
        if cls.kind is Kind.BUYER else rec.buyer_name is None
    if cls.kind in (Kind.BUYER, Kind.OTHER):   # may be forwarded: the notification's id and origin are ready
        assert rec.staff_message_id is not None and rec.staff_message_id.endswith("@Acme.Example")
        assert tokens.verify_origin(b"k" * 32, rec.staff_origin or "", rec.staff_message_id, "acme")
    else:
        assert rec.staff_message_id is None and rec.staff_origin is None
