"""What counts as a delivery report (bridge.domain.bounce_signals, through the classifier): a table."""

from __future__ import annotations

import pytest

from bridge.domain.classify import ClassifyContext, Kind, classify
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
from bridge.domain.parse import parse_mail

CTX = ClassifyContext(
    seller_address="seller@acme.example", staff_address="support@acme.example", staff_senders=("*@acme.example",),
    reply_address="seller+{token}@acme.example", relay_domains=ALL_RELAY_DOMAINS, sent_by_us=False,
    replies_to_us=False,
)
BUYER = "k7m2x9q4t1v8w3z5@marketplace.amazon.com"
REPORT = ("Content-Type: multipart/mixed; boundary=b\n", "--b\nContent-Type: text/plain\n\nSee below.\n"
          "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
          "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n--b--\n")

CASES = [
    # (name, From, extra headers, subject, body, kind, deciding rule)
    ("delivery-status part inside multipart/mixed", "postmaster@mx.example", REPORT[0], "Your mail", REPORT[1],
     Kind.BOUNCE, "delivery_status_report"),
    ("daemon sender, subject anywhere after a list tag", "mailer-daemon@mx.example", "",
     "[Postmaster] Email Delivery Failure", "Sorry.\n", Kind.BOUNCE, "mta_bounce"),
    ("daemon sender beats Precedence: bulk", "MAILER-DAEMON@aol.example", "Precedence: bulk\n",
     "Mail Delivery Problem", "Mail to x@y.example failed.\n", Kind.BOUNCE, "mta_bounce"),
    ("null From, transcript subject", "<>", "", "Returned mail: see transcript for details",
     "----- Transcript -----\n550 user unknown\n", Kind.BOUNCE, "mta_bounce"),
    ("daemon Return-Path, ordinary gateway From", "imss@gw.example", "Return-Path: <MAILER-DAEMON@gw.example>\n",
     "Mail could not be delivered", "The mail could not be delivered.\n", Kind.BOUNCE, "mta_bounce"),
    ("daemon sender, any subject, bounce wording", "MAILER-DAEMON@yahoo.example", "",
     "[List] Re: Name for MP3 Folder", "Sorry, we were unable to deliver your message to x@y.example.\n",
     Kind.BOUNCE, "mta_bounce"),
    ("gateway sender, bounce subject and wording", "E500_SMTP_Mail_Service@gw.example", "Precedence: bulk\n",
     "Returned Mail - Error During Delivery", "User unknown: acinsp1@example.com\n", Kind.BOUNCE, "mta_bounce"),
    ("Russian subject and wording from a daemon", "Mailer-Daemon@mx.example", "", "Ваше сообщение не доставлено",
     "К сожалению, Ваше письмо не может быть доставлено.\n", Kind.BOUNCE, "mta_bounce"),
    # Precision: people and buyers are never bounces because of their words.
    ("a person's subject alone", "anna@example.org", "", "Re: returned mail", "Thanks, got it back.\n",
     Kind.OTHER, "unclassified"),
    ("a person's wording alone", "anna@example.org", "", "My parcel", "It could not be delivered, please help.\n",
     Kind.OTHER, "unclassified"),
    ("a daemon's mail without a bounce subject or wording", "postmaster@example.org", "", "Welcome",
     "Your mailbox is ready.\n", Kind.OTHER, "unclassified"),
]


@pytest.mark.parametrize(("name", "sender", "headers", "subject", "body", "kind", "rule"), CASES,
                         ids=[c[0] for c in CASES])
def test_what_is_a_delivery_report(name: str, sender: str, headers: str, subject: str, body: str, kind: Kind,
                                   rule: str) -> None:
    from_line = "From: <>\n" if sender == "<>" else f"From: {sender}\n"
    content = headers if headers.startswith("Content-Type") else headers + "Content-Type: text/plain; charset=utf-8\n"
    raw = (f"{from_line}To: seller@acme.example\nSubject: {subject}\nMessage-ID: <t@example>\nMIME-Version: 1.0\n"
           f"{content}\n{body}")
    result = classify(parse_mail(raw.encode()), CTX)
    assert (result.kind, result.decided_by) == (kind, rule)


@pytest.mark.parametrize("subject", ["Undelivered package", "Delivery failure of my order", "Returned mail"])
def test_a_buyer_writing_about_failed_delivery_is_a_buyer(subject: str) -> None:
    raw = (f"From: \"Jane - Amazon Marketplace\" <{BUYER}>\nTo: seller@acme.example\nSubject: {subject}\n"
           "Message-ID: <b@example>\nContent-Type: text/plain; charset=utf-8\n\n"
           "Order ID 111-2223334-4445556:\n\n------------- Begin message -------------\n\n"
           "The parcel could not be delivered and was returned to sender. User unknown at the door?\n\n"
           "------------- End message -------------\n").encode()
    assert classify(parse_mail(raw), CTX).kind is Kind.BUYER
