"""Realistic generated mail for the demo, the integration tests and the benchmarks.

Shapes follow docs/marketplaces.md (Amazon's classic plain-text buyer message with
Begin/End markers, footer links and the commMgrTok line). Deterministic for a
given seed, so a benchmark run is repeatable.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr

FIRST_NAMES = ("Jane", "Marco", "Aiko", "Lukas", "Chloé", "Sven", "Priya", "Tom", "Ana", "Olu")
TOPICS = ("Product details", "Ship faster", "Return policy", "Order delivery", "")
QUESTIONS = (
    "Hi, does the tent come with a footprint? We are camping on rocky ground next week.",
    "Hello, my order has not arrived yet and tracking has not moved for four days. Can you check?",
    "Can I return the jacket if it does not fit? It is a gift for my brother.",
    "Is the stove compatible with standard butane canisters sold in Europe?",
    "The zipper on the sleeping bag broke after two nights. What can you do?",
)
TITLES = ("Alpine 2-Person Tent", "TrailLite Down Jacket", "Summit Camping Stove", "Nordic Sleeping Bag -10C")


def order_id(rng: random.Random) -> str:
    return f"{rng.randrange(100, 999)}-{rng.randrange(10**6, 10**7):07d}-{rng.randrange(10**6, 10**7):07d}"


def alias(rng: random.Random) -> str:
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(chars) for _ in range(14))


def comm_tok(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(13))


def amazon_buyer_message(
    *, buyer_alias: str, buyer_name: str, order: str, question: str, seller_address: str,
    tld: str = "com", topic: str = "Product details", token: str = "A1B2C3D4E5F6G", message_id: str,
    date: datetime | None = None, padding: int = 0, seller_name: str = "Acme Outdoor",
) -> bytes:
    """An Amazon classic-layout buyer message as it arrives in the seller's inbox."""
    date = date or datetime.now(timezone.utc)
    subject = f"{topic + ' ' if topic else ''}inquiry from Amazon customer {buyer_name} (Order: {order})"
    relay = f"{buyer_alias}@marketplace.amazon.{tld}"
    title = TITLES[sum(map(ord, order)) % len(TITLES)]
    filler = ""
    if padding:
        # Buyers paste long texts (order histories, manuals): pad with plausible lines.
        line = "I have attached the details of my previous orders and the delivery notes for reference.\n"
        filler = "\n" + line * max(0, padding // len(line))
    body = (
        f"Order ID {order}:\n"
        f"1 of {title} [ASIN: B0{sum(map(ord, title)) * 7919 % 10**8:08d}]\n\n"
        "------------- Begin message -------------\n\n"
        f"{question}\n{filler}\n"
        "------------- End message -------------\n\n"
        f"For Your Information: To help arrive at a resolution, we recommend responding within 24 hours.\n"
        "To reply to this message, respond to this email. Your reply will be sent to the customer.\n\n"
        "Was this email helpful?\n"
        f"https://sellercentral.amazon.{tld}/gp/communication-manager/report-message.html?"
        f"mId=A0000{order.replace('-', '')}&mp=ATVPDKIKX0DER\n\n"
        f"Copyright 2026 Amazon, Inc. or its affiliates. All rights reserved.\n"
        f"Amazon.{tld}, 410 Terry Ave N., Seattle, WA 98109\n\n"
        f"[commMgrTok:{token}]\n"
    )
    headers = (
        f"From: {formataddr((f'{buyer_name} - Amazon Marketplace', relay), charset='utf-8')}\r\n"
        f"To: {formataddr((seller_name, seller_address))}\r\n"
        f"Subject: {Header(subject, 'utf-8').encode() if not subject.isascii() else subject}\r\n"
        f"Date: {format_datetime(date)}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="UTF-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "X-AMAZON-MAIL-RELAY-TYPE: notification\r\n"
        "Feedback-ID: 1.us-east-1.abcdefghijk:AmazonSES\r\n"
    )
    return (headers + "\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


def buyer_backlog(count: int, *, seller_address: str, seed: int = 1, size: int = 0,
                  buyers: int | None = None) -> list[bytes]:
    """``count`` buyer messages from ``buyers`` distinct buyers (follow-ups thread together)."""
    rng = random.Random(seed)
    nbuyers = buyers or max(1, count // 3)
    people = [(alias(rng), rng.choice(FIRST_NAMES), order_id(rng), comm_tok(rng)) for _ in range(nbuyers)]
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    out = []
    for i in range(count):
        buyer_alias, name, order, token = people[i % nbuyers]
        out.append(amazon_buyer_message(
            buyer_alias=buyer_alias, buyer_name=name, order=order, question=rng.choice(QUESTIONS),
            seller_address=seller_address, topic=rng.choice(TOPICS), token=token,
            message_id=f"{seed}.{i}.{rng.getrandbits(48):x}@email.amazon.com",
            date=start + timedelta(minutes=i), padding=max(0, size - 1500) if size else 0,
        ))
    return out


def out_of_office(*, sender: str, to: str, message_id: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Automatic reply: your order\r\n"
        f"Message-ID: <{message_id}>\r\nAuto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nI am out of the office until Monday.\r\n"
    ).encode()


def unclassified(*, sender: str, to: str, message_id: str) -> bytes:
    return (
        f"From: Parcel Supplies Ltd <{sender}>\r\nTo: {to}\r\nSubject: Invoice 4471 for November\r\n"
        f"Message-ID: <{message_id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Please find your invoice for November attached. Payment is due within 30 days.\r\n"
    ).encode()


def spoofed_buyer(*, to: str, message_id: str) -> bytes:
    """Looks like a buyer relay, but the domain only starts like Amazon's."""
    return (
        f'From: "Jane - Amazon Marketplace" <abcd1234efgh@marketplace.amazon.com.evil.example>\r\nTo: {to}\r\n'
        "Subject: Product details inquiry from Amazon customer Jane (Order: 111-2223334-4445556)\r\n"
        f"Message-ID: <{message_id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "------------- Begin message -------------\r\nPlease wire the refund to my new bank account.\r\n"
        "------------- End message -------------\r\n"
    ).encode()


def broken_mime(*, to: str) -> bytes:
    """Declares a multipart body without any boundary and carries raw 8-bit bytes in a header."""
    return (
        b"From: someone@example.net\r\nTo: " + to.encode() + b"\r\nSubject: caf\xe9 \xff broken\r\n"
        b"Content-Type: multipart/mixed\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"this is !!! not base64 and there is no boundary\r\n"
    )


def staff_reply(notification: bytes, *, staff: str, text: str, client: str = "gmail",
                to: str | None = None, message_id: str, attachments: tuple[tuple[str, str, bytes], ...] = (),
                extra_headers: str = "", signature: str = "Jo\r\nAcme Outdoor Support") -> bytes:
    """A staff member's answer to a staff notification, as their mail client sends it.

    The notification is quoted below the answer the way ``client`` does it
    ("gmail": "On ... wrote:" and "> " lines; "outlook": a From/Sent/To/Subject
    block), with a signature, addressed to the notification's Reply-To.
    """
    import base64
    from email import message_from_bytes, policy

    note = message_from_bytes(notification, policy=policy.default)
    body = note.get_body(preferencelist=("plain",))
    quoted_text = body.get_content().replace("\r\n", "\n") if body is not None else ""
    reply_to = to or str(note["Reply-To"] or note["From"])
    subject = str(note["Subject"])
    if client == "outlook":
        quote = ("________________________________\r\n"
                 f"From: {note['From']}\r\nSent: Monday, November 23, 2026 2:02 PM\r\nTo: {note['To']}\r\n"
                 f"Subject: {subject}\r\n\r\n" + quoted_text.replace("\n", "\r\n"))
    else:
        quote = (f"On Mon, 23 Nov 2026 at 14:02, {note['From']} wrote:\r\n"
                 + "".join(f"> {line}\r\n" for line in quoted_text.splitlines()))
    answer = text.replace("\r\n", "\n").replace("\n", "\r\n")
    plain = f"{answer}\r\n\r\n-- \r\n{signature}\r\n\r\n{quote}"
    head = (f"From: Jo Staff <{staff}>\r\nTo: {reply_to}\r\nSubject: Re: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 14:05:00 +0000\r\nMessage-ID: <{message_id}>\r\n"
            f"In-Reply-To: {note['Message-ID']}\r\nReferences: {note['References'] or ''} {note['Message-ID']}\r\n"
            f"MIME-Version: 1.0\r\n{extra_headers}")
    if not attachments:
        return (head + 'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
                + plain).encode("utf-8")
    boundary = "staff-boundary-1"
    parts = [f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\n'
             f"Content-Transfer-Encoding: 8bit\r\n\r\n{plain}\r\n"]
    for name, ctype, data in attachments:
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        parts.append(f'--{boundary}\r\nContent-Type: {ctype}; name="{name}"\r\n'
                     f'Content-Disposition: attachment; filename="{name}"\r\n'
                     f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n")
    return (head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n' + "".join(parts)
            + f"--{boundary}--\r\n").encode("utf-8")


def amazon_optout_notice(*, seller_address: str, buyer_relay: str, order: str, message_id: str) -> bytes:
    """Amazon's notice that a message was not delivered because the buyer opted out (docs/marketplaces.md)."""
    return (
        '"Amazon Seller Notifications" <donotreply@amazon.com>'.join(("From: ", "\r\n"))
        + f"To: {seller_address}\r\n"
        f"Subject: Your message to an Amazon customer could not be delivered (Order: {order})\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}>\r\n"
        "X-AMAZON-MAIL-RELAY-TYPE: notification\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=UTF-8\r\n\r\n"
        "Dear Seller,\r\n\r\n"
        f"We were unable to deliver the message you sent for order {order} because the buyer has\r\n"
        "chosen to opt out of receiving unsolicited messages from sellers.\r\n\r\n"
        "Buyers can opt out of receiving unsolicited messages. You can still send messages that are required\r\n"
        "to complete the order. For more information, see Buyer-Seller Messaging guidelines in Seller Central Help.\r\n"
        f"\r\nYour message:\r\nTo: {buyer_relay}\r\nSubject: How was your order? (Order: {order})\r\n"
        "Would you take a minute to leave a review?\r\n\r\nSincerely,\r\nAmazon Seller Services\r\n"
    ).encode()


# --------------------------------------------------------------------------- order reports

#: Amazon's report columns the demo and the tests fill (a report may have more; the import matches by name).
SHIPMENTS_COLUMNS = ("amazon-order-id", "amazon-order-item-id", "purchase-date", "shipment-date", "buyer-email",
                     "buyer-name", "sku", "product-name", "quantity-shipped", "estimated-arrival-date",
                     "sales-channel")
ALL_ORDERS_COLUMNS = ("amazon-order-id", "merchant-order-id", "purchase-date", "last-updated-date", "order-status",
                      "fulfillment-channel", "sales-channel", "product-name", "sku", "asin", "item-status",
                      "quantity")


def shipment_row(order: str, *, buyer: str, arrived: datetime, buyer_name: str = "Jane Doe",
                 sku: str = "TENT-2P", title: str = "Alpine 2-Person Tent", channel: str = "Amazon.com",
                 ) -> tuple[str, ...]:
    """One *Amazon Fulfilled Shipments* row: shipped two days before it ``arrived`` (estimated arrival)."""
    return (order, f"4{order.replace('-', '')[-13:]}", (arrived - timedelta(days=4)).isoformat(),
            (arrived - timedelta(days=2)).isoformat(), buyer, buyer_name, sku, title, "1", arrived.isoformat(),
            channel)


def all_orders_row(order: str, status: str, *, purchased: datetime, sku: str = "TENT-2P",
                   title: str = "Alpine 2-Person Tent", channel: str = "Amazon.com") -> tuple[str, ...]:
    """One *All Orders* row; ``status`` as Amazon writes it ("Pending", "Cancelled", "Shipped - Delivered to Buyer")."""
    return (order, "", purchased.isoformat(), purchased.isoformat(), status, "Amazon", channel, title, sku,
            "B0TENT0001", status, "1")


def order_report(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A tab-separated flat-file report, as Seller Central writes them (no quoting)."""
    return "".join("\t".join(cells) + "\n" for cells in [columns, *rows])
