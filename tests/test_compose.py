"""Outbound message building: what every client must read back correctly."""

import base64
import itertools
from datetime import datetime, timezone
from email import message_from_bytes, policy

import pytest

from bridge.domain import compose

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def build(**overrides):  # type: ignore[no-untyped-def]
    args = dict(
        account="acme-us", origin="acme-us; abc", message_id="mb.1@acme.example", date=NOW,
        from_name="Jane via Acme Outdoor", from_addr="seller@acme.example", to_addr="support@acme.example",
        subject="Product details inquiry (Order: 111-2223334-4445556) [MB-1]", text="Hello\n",
        reply_to="seller+1-abcdefghij@acme.example", in_reply_to="mb.0@acme.example",
        references=("mb.r@acme.example", "mb.0@acme.example"),
    )
    args.update(overrides)
    return compose.build_mail(**args)


@pytest.mark.parametrize(
    "overrides,header,expected",
    [
        ({}, "From", 'Jane via Acme Outdoor <seller@acme.example>'),
        ({"from_name": "Jürgen – Käufer"}, "From", "Jürgen – Käufer <seller@acme.example>"),
        ({"from_name": ""}, "From", "seller@acme.example"),
        ({}, "Reply-To", "seller+1-abcdefghij@acme.example"),
        ({}, "Message-ID", "<mb.1@acme.example>"),
        ({}, "In-Reply-To", "<mb.0@acme.example>"),
        ({}, "References", "<mb.r@acme.example> <mb.0@acme.example>"),
        ({}, "Auto-Submitted", "auto-generated"),
        ({}, "X-Mailbridge-Origin", "acme-us; abc"),
        ({"subject": "日本語の件名 (注文: 111-2223334-4445556)"}, "Subject", "日本語の件名 (注文: 111-2223334-4445556)"),
        ({"subject": "x" * 300}, "Subject", "x" * 300),
        ({"subject": "Grüße aus München " * 12 + "!"}, "Subject", "Grüße aus München " * 12 + "!"),
        ({"subject": "Rücksendung 📦🚚 " + "é" * 100}, "Subject", "Rücksendung 📦🚚 " + "é" * 100),
        ({"subject": "ü"}, "Subject", "ü"),
        ({"subject": "word " * 40 + "end"}, "Subject", "word " * 40 + "end"),
        ({"reply_to": None}, "Reply-To", None),
        ({"in_reply_to": None, "references": ()}, "References", None),
    ],
)
def test_headers_read_back(overrides, header, expected) -> None:  # type: ignore[no-untyped-def]
    out = build(**overrides)
    msg = message_from_bytes(out.raw, policy=policy.default)
    value = msg[header]
    assert (str(value) if value is not None else None) == expected
    assert not msg.defects


@pytest.mark.parametrize(
    "text",
    [
        "Hello\n",
        "Grüße aus München — ça va?\n",
        "注文番号をご確認ください。\n",
        "a very long line " * 40 + "\n",
        "line with trailing spaces   \nand\ttabs\n",
        ".leading dot\n..two dots\nFrom the start\n",
        "crlf\r\ninput\r\n",
        "x" * 998 + "\n",
        "x" * 999 + "\n",
        "y" * 5000,
        "nul \x00 inside\n",
        "=3D is not an escape here = and =\n",
        "",
    ],
)
def test_body_round_trips(text: str) -> None:
    out = build(text=text)
    assert all(len(line) <= 998 for line in out.raw.split(b"\r\n"))  # RFC 5322 2.1.1
    assert b"\n" not in out.raw.replace(b"\r\n", b"")                   # CRLF only
    assert b"\r" not in out.raw.replace(b"\r\n", b"")                   # no bare CR
    msg = message_from_bytes(out.raw, policy=policy.default)
    # The parser keeps the wire's CRLF line ends in the decoded text.
    assert msg.get_content().replace("\r\n", "\n") == text.replace("\r\n", "\n")


@pytest.mark.parametrize(
    "text,encoding",
    [
        ("Hello\n", "7bit"),
        ("a very long line " * 40 + "\n", "7bit"),         # 680 characters: within RFC 5322's 998
        ("x" * 998 + "\nshort\n", "7bit"),
        ("x" * 999 + "\nshort\n", "quoted-printable"),
        ("Grüße\n", "quoted-printable"),
        ("nul \x00\n", "quoted-printable"),
        ("line with trailing spaces   \n\tand tabs\n", "7bit"),
        ("", "7bit"),
    ],
)
def test_ascii_text_goes_as_it_is_and_the_rest_quoted_printable(text: str, encoding: str) -> None:
    out = build(text=text)
    msg = message_from_bytes(out.raw, policy=policy.default)
    assert msg["Content-Transfer-Encoding"] == encoding
    if encoding == "7bit":
        assert out.raw.endswith(b"\r\n\r\n" + text.replace("\n", "\r\n").encode("ascii"))


@pytest.mark.parametrize("text,expected", [
    ("old\rmac\rlines\r", "old\nmac\nlines\n"),
    ("mixed\r\nends\rhere\n", "mixed\nends\nhere\n"),
    ("Grüße\raus\rMünchen", "Grüße\naus\nMünchen"),
])
def test_a_lone_cr_ends_a_line_instead_of_going_out_bare(text: str, expected: str) -> None:
    out = build(text=text)
    assert b"\r" not in out.raw.replace(b"\r\n", b"")
    msg = message_from_bytes(out.raw, policy=policy.default)
    assert msg.get_content().replace("\r\n", "\n") == expected


def test_header_injection_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        build(subject="hi\r\nBcc: victim@example.com")


def test_message_ids_are_unique_and_in_sender_domain() -> None:
    ids = {compose.new_message_id("seller@acme.example") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.endswith("@acme.example") for i in ids)


@pytest.mark.parametrize("names", [("invoice.pdf",), ("foto.jpg", "Rechnung März.pdf"), ("a.txt", "b.png", "c.gif")])
def test_attachments_round_trip(names: tuple[str, ...]) -> None:
    files = tuple(compose.AttachmentData(n, "application/pdf" if n.endswith("pdf") else "image/png",
                                         bytes(range(256)) * (i + 3)) for i, n in enumerate(names))
    out = build(text="Please find the invoice attached.\n", attachments=files)
    msg = message_from_bytes(out.raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/mixed" and not msg.defects
    assert msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n") == \
        "Please find the invoice attached.\n"
    got = [(p.get_filename(), p.get_content()) for p in msg.iter_attachments()]
    assert got == [(f.filename, f.data) for f in files]


def test_person_written_mail_is_not_marked_automatic() -> None:
    msg = message_from_bytes(build(auto_submitted=False).raw, policy=policy.default)
    assert msg["Auto-Submitted"] is None and msg["X-Auto-Response-Suppress"] is None
    assert msg["X-Mailbridge-Origin"]   # still recognisable as ours (loop guard)



@pytest.mark.parametrize("subject", ["ü", "Grüße aus München " * 12, "日本語" * 60, "📦" * 50, "a" * 20 + "ß" * 90])
def test_encoded_headers_fold_within_78_and_never_split_a_character(subject: str) -> None:
    head = build(subject=subject).raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    start = next(i for i, line in enumerate(head) if line.startswith("Subject: "))
    lines = [head[start]] + list(itertools.takewhile(lambda line: line.startswith(" "), head[start + 1:]))
    assert all(len(line) <= 78 for line in lines)
    words = " ".join(lines)[len("Subject: "):].split()
    assert all(len(w) <= 75 for w in words)                                    # RFC 2047 2.
    assert "".join(base64.b64decode(w.split("?")[3]).decode("utf-8") for w in words) == subject  # whole characters


def test_equal_instants_in_other_zones_keep_their_own_date_header() -> None:
    from datetime import timedelta

    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    assert NOW == berlin
    dates = [str(message_from_bytes(build(date=d).raw, policy=policy.default)["Date"]) for d in (NOW, berlin)]
    assert dates == ["Mon, 23 Nov 2026 12:00:00 +0000", "Mon, 23 Nov 2026 13:00:00 +0100"]
