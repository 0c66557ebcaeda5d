"""bridge.domain.parse and the Amazon extraction it feeds: corpus tables, unit tables, robustness."""

from __future__ import annotations

import base64
import random
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge.domain.marketplaces import amazon
from bridge.domain.marketplaces.layout import (
    between_markers,
    marker_regex,
    pre_blocks,
    squash,
)
from bridge.domain.parse import ParsedMail, UnparseableMail, html_to_text, parse_mail

CORPUS = Path(__file__).parent / "data" / "inbound"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((CORPUS / "expected.toml").read_text("utf-8"))
FILES = sorted(p.name for p in CORPUS.glob("*.eml"))

# Layout text that is never part of the buyer's own (unquoted) words.
NEVER_IN_BUYER_TEXT = ("[commMgrTok:", "Begin message", "End message", "For Your Information",
                       "communication-manager")


def _parse(name: str) -> ParsedMail:
    return parse_mail((CORPUS / name).read_bytes())


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------- corpus

def test_corpus_is_complete() -> None:
    assert len(FILES) >= 40
    assert sorted(EXPECTED) == FILES, "every .eml needs an expected.toml entry and vice versa"


@pytest.mark.parametrize("name", FILES)
def test_corpus_fields(name: str) -> None:
    exp = EXPECTED[name]
    mail = _parse(name)
    assert mail.order_id == exp.get("order_id")
    assert mail.comm_mgr_tok == exp.get("comm_mgr_tok")
    assert mail.buyer_name == exp.get("buyer_name")
    assert mail.asins == tuple(exp.get("asins", ()))
    if "subject" in exp:
        assert mail.subject == exp["subject"]
    for needle in _as_list(exp.get("text_contains", [])):
        assert needle in mail.text
    assert [[a.filename, a.content_type] for a in mail.attachments] == exp.get("attachments", [])
    assert bool(mail.defects) == exp.get("defects", False), mail.defects
    assert mail.size == (CORPUS / name).stat().st_size


@pytest.mark.parametrize("name", FILES)
def test_corpus_buyer_text(name: str) -> None:
    exp = EXPECTED[name]
    mail = _parse(name)
    if "buyer_text_contains" not in exp:
        assert mail.buyer_text is None
        return
    assert mail.buyer_text is not None
    for needle in _as_list(exp["buyer_text_contains"]):
        assert needle in mail.buyer_text
    for needle in _as_list(exp.get("buyer_text_excludes", [])):
        assert needle not in mail.buyer_text
    # Layout text never leaks in (a buyer may quote an older message with "> ").
    unquoted = "\n".join(line for line in mail.buyer_text.split("\n") if not line.lstrip().startswith(">"))
    for needle in NEVER_IN_BUYER_TEXT:
        assert needle not in unquoted
    assert mail.buyer_text == mail.buyer_text.strip("\n")


@pytest.mark.parametrize("name", FILES)
def test_corpus_invariants(name: str) -> None:
    mail = _parse(name)
    for addr in (mail.from_addr, *mail.to_addrs, *mail.cc_addrs, *mail.reply_to):
        assert addr == addr.lower() and " " not in addr
    assert mail.content_type == mail.content_type.lower()
    assert all(k == k.lower() for k in mail.headers)
    assert "\n" not in mail.subject and "\r" not in mail.text
    assert mail.message_id is None or "<" not in mail.message_id


# --------------------------------------------------------------------------- headers

def test_envelope_fields_of_a_classic_message() -> None:
    mail = _parse("amazon_com_classic_product_details.eml")
    assert mail.from_addr == "k7m2x9q4t1v8w3z5@marketplace.amazon.com"
    assert mail.from_name == "Jane - Amazon Marketplace"
    assert mail.to_addrs == ("seller@acme.example",)
    assert mail.message_id == "0100018bf1a2b3c4-11111111-2222-3333-4444-555555555555-000000@email.amazonses.com"
    assert mail.date == datetime(2023, 11, 20, 14, 3, 22, tzinfo=timezone.utc)
    assert mail.headers["feedback-id"] == "1.us-east-1.abcdefghijklmnop:AmazonSES"
    assert mail.headers["content-type"] == "text/plain; charset=UTF-8"
    assert "dkim-signature" not in mail.headers  # only routing headers are kept


def test_threading_headers() -> None:
    mail = _parse("staff_reply_token.eml")
    assert mail.in_reply_to == "mb.20231210.42@acme.example"
    assert mail.references == ("mb.20231210.42@acme.example",)
    assert mail.to_addrs == ("seller+v1.q7w8e9r0.abcdef12@acme.example",)
    assert mail.from_addr == "jo@acme.example"
    assert mail.date is not None and mail.date.utcoffset() == timedelta(0)


def _headers_only(headers: str) -> ParsedMail:
    return parse_mail((headers.strip("\n") + "\n\nbody\n").encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize(("header", "subject"), [
    ("Subject: plain", "plain"),
    ("Subject: folded\n  over\n\tlines", "folded over lines"),
    ("Subject: =?utf-8?q?caf=C3=A9?=", "café"),
    ("Subject: =?UTF-8?B?w6lsw6h2ZQ==?= x", "élève x"),
    ("Subject: =?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2: space between encoded words dropped
    ("Subject: =?iso-8859-1?q?Gr=FC=DFe?=", "Grüße"),
    ("Subject: =?iso-2022-jp?b?GyRCJDMkcyRLJEEkTxsoQg==?=", "こんにちは"),
    ("Subject: =?x-unknown?q?hello?=", "hello"),
    ("Subject: =?utf-8?b?!!!?= kept", "kept"),  # no base64 alphabet at all: decodes to nothing
    ("Subject: =?utf-8?q?bad_=FF_byte?=", "bad \u00ff byte"),  # not UTF-8: read as Latin-1
    ("Subject: caf\udcc3\udca9 raw utf-8", "café raw utf-8"),
    ("Subject: caf\udce9 raw latin-1", "café raw latin-1"),
    ("Subject: ", ""),
    ("X-Other: no subject at all", ""),
])
def test_subject_decoding(header: str, subject: str) -> None:
    assert _headers_only("From: a@example.org\n" + header).subject == subject


@pytest.mark.parametrize(("from_header", "addr", "name"), [
    ('From: "Jane - Amazon Marketplace" <ABC12345@Marketplace.Amazon.com>', "abc12345@marketplace.amazon.com",
     "Jane - Amazon Marketplace"),
    ("From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>", "j@example.org", "Jürgen"),
    ('From: "=?utf-8?q?J=C3=BCrgen?= - Amazon Marketplace" <j@example.org>', "j@example.org",
     "Jürgen - Amazon Marketplace"),
    ("From: j@example.org (Jo Comment)", "j@example.org", "Jo Comment"),
    ("From: MAILER-DAEMON", "", ""),          # no "@": never an address (bounce_signals reads from_header)
    ("From: <<<garbage>>>", "", ""),
    ("From: =?iso-8859-1?Q?B=FCrling,=20Andreas?= <smith@example.com>", "smith@example.com", "Bürling, Andreas"),
    ("From: MAILER-DAEMON (Mail Delivery System) <postmaster@example.com>", "postmaster@example.com",
     "MAILER-DAEMON"),
    ("From: <<<not an address>>>", "", ""),
    ("From: ", "", ""),
    ("From: \"Zo\udcc3\udcab\" <z@example.org>", "z@example.org", "Zoë"),
])
def test_from_address(from_header: str, addr: str, name: str) -> None:
    mail = _headers_only(from_header)
    assert (mail.from_addr, mail.from_name) == (addr, name)


@pytest.mark.parametrize("headers", [
    "From: \"Zo\udcc3\udcab\" <z@example.org>\nTo: seller@example.org",          # 8-bit bytes: a defect
    "From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\nTo: <<<not an address>>>",
    "From: a@example.org\nTo: =?x-unknown?q?S=E9ller?= <seller@example.org>",         # undecodable charset
])
def test_addresses_read_again_give_the_same_fields_and_defects(headers: str) -> None:
    # Address lists are kept once read (they repeat from message to message): a header seen
    # before must give what it gave the first time, its defects too.
    first, again = _headers_only(headers), _headers_only(headers)
    assert (again.from_addr, again.from_name, again.to_addrs, again.defects) == \
        (first.from_addr, first.from_name, first.to_addrs, first.defects)


def test_recipient_lists_tolerate_garbage_and_repeats() -> None:
    mail = _headers_only("From: a@example.org\nTo: A@X.example, ,, \"B, b\" <b@x.example>\n"
                         "To: c@x.example\nCc: undisclosed-recipients:;\nReply-To: R@x.example")
    assert mail.to_addrs == ("a@x.example", "b@x.example", "c@x.example")
    assert mail.cc_addrs == ()
    assert mail.reply_to == ("r@x.example",)
    assert mail.all_recipients == mail.to_addrs


@pytest.mark.parametrize(("headers", "message_id", "in_reply_to", "references"), [
    ("Message-ID: <a@b>\nIn-Reply-To: <c@d> <e@f>\nReferences: <x@y>\n <c@d>", "a@b", "c@d", ("x@y", "c@d")),
    ("Message-ID: bare@id", "bare@id", None, ()),
    ("Message-ID:", None, None, ()),
    ("References: junk <r1@x> junk <r2@x>", None, None, ("r1@x", "r2@x")),
])
def test_message_ids(headers: str, message_id: str | None, in_reply_to: str | None,
                     references: tuple[str, ...]) -> None:
    mail = _headers_only("From: a@example.org\n" + headers)
    assert (mail.message_id, mail.in_reply_to, mail.references) == (message_id, in_reply_to, references)


@pytest.mark.parametrize(("date", "expected", "defect"), [
    ("Mon, 20 Nov 2023 14:03:22 +0100", datetime(2023, 11, 20, 14, 3, 22, tzinfo=timezone(timedelta(hours=1))),
     False),
    ("20 Nov 2023 14:03:22 GMT", datetime(2023, 11, 20, 14, 3, 22, tzinfo=timezone.utc), False),
    ("Mon, 20 Nov 2023 14:03:22 -0000", datetime(2023, 11, 20, 14, 3, 22), False),   # zone unknown: naive
    ("Mon, 20 Nov 2023\n 14:03:22 -0830", datetime(2023, 11, 20, 14, 3, 22, tzinfo=timezone(-timedelta(hours=8.5))),
     False),
    ("yesterday", None, True),
    ("Mon, 99 Nov 2023 99:99:99 +0000", None, True),
])
def test_date(date: str, expected: datetime | None, defect: bool) -> None:
    mail = _headers_only(f"From: a@example.org\nDate: {date}")
    assert mail.date == expected
    assert ("unreadable Date header" in mail.defects) is defect


def test_routing_headers_first_occurrence_decoded() -> None:
    mail = _headers_only("From: a@example.org\nAuto-Submitted: auto-replied\nAuto-Submitted: no\n"
                         "PRECEDENCE: Bulk\nX-Mailbridge-Origin: v1.abc\nList-Id: =?utf-8?q?Caf=C3=A9?= <l.x>\n"
                         "X-Unrelated: dropped")
    assert mail.headers == {"auto-submitted": "auto-replied", "precedence": "Bulk",
                            "x-mailbridge-origin": "v1.abc", "list-id": "Café <l.x>"}


# --------------------------------------------------------------------------- bodies

def _body(content_type: str, body: bytes, cte: str | None = None) -> ParsedMail:
    head = f"From: a@example.org\nMIME-Version: 1.0\nContent-Type: {content_type}\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\n"
    return parse_mail(head.encode() + b"\n" + body)


@pytest.mark.parametrize(("content_type", "body", "cte", "text", "defect"), [
    ("text/plain; charset=utf-8", "Grüße".encode(), "8bit", "Grüße", None),
    ("text/plain; charset=iso-8859-1", "Grüße".encode("latin-1"), "8bit", "Grüße", None),
    ("text/plain; charset=iso-8859-1", b"price \x80 5", "8bit", "price € 5", None),  # read as windows-1252
    ("text/plain; charset=us-ascii", "Grüße".encode(), "8bit", "Grüße", "text is not valid us-ascii"),
    ("text/plain", "Grüße".encode(), None, "Grüße", "no charset declared and not ASCII; read as utf-8"),
    ("text/plain; charset=utf-8", b"Gr\xfc\xdfe", "8bit", "Grüße", "read as utf-8+cp1252"),
    ("text/plain; charset=x-unknown", "Grüße".encode(), "8bit", "Grüße", "unknown charset 'x-unknown'"),
    ("text/plain; charset=rot13", b"uryyb", "8bit", "uryyb", "unknown charset 'rot13'"),
    ('text/plain; charset="utf-8', "ok ✓".encode(), "8bit", "ok ✓", None),
    ("text/plain; charset=shift_jis", "日本".encode("shift_jis"), "8bit", "日本", None),
    ("text/plain; charset=ks_c_5601-1987", "한국".encode("cp949"), "8bit", "한국", None),
    ("text/plain; charset=utf-8", base64.b64encode("héllo".encode()), "base64", "héllo", None),
    ("text/plain; charset=utf-8", b"h=C3=A9llo =\nworld", "quoted-printable", "héllo world", None),
    ("text/plain; charset=utf-8", b"line1\r\nline2\rline3", "8bit", "line1\nline2\nline3", None),
    ("text/plain; charset=utf-8", b"aGVsbG8gd29ybGQ", "base64", "hello world", "bad base64 padding"),
    ("text/plain; a*;a*1", b"hello", "8bit", "hello", "unreadable attachment filename"),  # broken RFC 2231
])
def test_body_decoding(content_type: str, body: bytes, cte: str | None, text: str, defect: str | None) -> None:
    mail = _body(content_type, body, cte)
    assert mail.text.strip("\n") == text
    if defect is None:
        assert mail.defects == ()
    else:
        assert any(defect in d for d in mail.defects), mail.defects


def test_multipart_alternative_prefers_plain_and_keeps_html() -> None:
    mail = _body('multipart/alternative; boundary="b"',
                 b"--b\nContent-Type: text/plain\n\nplain words\n--b\nContent-Type: text/html\n\n"
                 b"<p>html words</p>\n--b--\n")
    assert mail.text.strip() == "plain words"
    assert mail.html is not None and "<p>html words</p>" in mail.html
    assert mail.part_types == ("text/plain", "text/html")


def test_html_only_is_converted() -> None:
    mail = _body("text/html; charset=utf-8", "<p>Hello&nbsp;<b>there</b></p><p>é</p>".encode())
    assert mail.text == "Hello there\n\né"  # &nbsp; folds like any whitespace


def test_empty_plain_part_falls_back_to_html() -> None:
    mail = _body('multipart/alternative; boundary="b"',
                 b"--b\nContent-Type: text/plain\n\n\n--b\nContent-Type: text/html\n\n<p>only here</p>\n--b--\n")
    assert mail.text == "only here"


def test_attachments_are_listed_not_read_as_text() -> None:
    mail = _body('multipart/mixed; boundary="b"',
                 b"--b\nContent-Type: text/plain\n\nsee attached\n"
                 b"--b\nContent-Type: text/plain; name=notes.txt\nContent-Disposition: attachment; filename=notes.txt\n\n"
                 b"attached words\n"
                 b"--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
                 + base64.b64encode(b"\x89PNG" + b"\x00" * 96) + b"\n--b--\n")
    assert mail.text.strip() == "see attached"
    assert [(a.filename, a.content_type, a.size) for a in mail.attachments] == [
        ("notes.txt", "text/plain", len(b"attached words")), ("", "image/png", 100)]


@pytest.mark.parametrize(("html", "text"), [
    ("<p>a</p><p>b</p>", "a\n\nb"),
    ("a<br>b<br/>c", "a\nb\nc"),
    ("<div>  lots   of\n  space </div>", "lots of space"),
    ("<pre>  keep\n    this  </pre>", "  keep\n    this"),
    ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
    ("<script>x()</script><style>p{}</style>visible", "visible"),
    ('<a href="https://x.example/p">link</a>', "link <https://x.example/p>"),
    ('<a href="https://x.example/p">https://x.example/p</a>', "https://x.example/p"),
    ('<a href="mailto:a@b">mail</a>', "mail <a@b>"),
    ("&lt;tag&gt; &amp; &#8217;", "<tag> & \u2019"),
    ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
    ("<p>unclosed <b>bold", "unclosed bold"),
    ("", ""),
])
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_html_to_text_caps_huge_input() -> None:
    defects: list[str] = []
    out = html_to_text("<p>x</p>" * 400_000, defects)
    assert out.startswith("x") and defects


# --------------------------------------------------------------------------- unparseable vs tolerated

@pytest.mark.parametrize("raw", [b"", b"   \r\n\t\n", b"just some words, no header\n", b"\x00\x01\x02",
                                 b": no name\n\nbody",
                                 b"X-Obsolete : space before the colon\n\nbody", b"<html><body>hi</body></html>"])
def test_unparseable(raw: bytes) -> None:
    with pytest.raises(UnparseableMail):
        parse_mail(raw)


@pytest.mark.parametrize("raw", [
    b"Subject: only a header",
    b"Subject: no body separator\nthis line is not a header",
    b"From x@y Mon Jan  1 00:00:00 2024\nSubject: mbox\n\nbody",
    b"\r\nSubject: leading blank line\n\nbody",
])
def test_tolerated_oddities(raw: bytes) -> None:
    mail = parse_mail(raw)
    assert mail.size == len(raw)


# Broken mail real mailers write (shapes taken from Zammad's corpus, our own bytes).
BROKEN = [
    # (name, raw, from_addr, subject, a defect that says what was mended)
    ("a client's separator above the saved message",
     b"---- Original email message ----\nFrom: anna@example.cz\nSubject: Contact form\n\nHello\n",
     "anna@example.cz", "Contact form", "separator line above the header block"),
    ("continuation lines without indentation",
     b"Received: from a.example by b.example with SMTP;\nby c.example with ESMTP; 5 Apr 2017 07:45:31 -0000\n"
     b"X-Tracker: H4sIAAAAAAAAA+NgFlrIKsWRWlGSWpSXmKPExsWi75nTrTtrwZM\n"
     b"Ig5drOCwmrVzP5sDoseXbDeYAxijWzLyk/IoE1owFz6ezFkxKrWjafpWpgfFOchcjF4eQwDZG\n"
     b"X-Other: 1\nFrom: Karoline <k@example.com>\nSubject: AW: Business\n\nText\n",
     "k@example.com", "AW: Business", "without indentation"),
    ("a garbled first From, a good second one",
     b"From: [??????]\nFrom: =?utf-8?B?6YO955C5?= <x@example.cn>\nSubject: s\n\nbody\n",
     "x@example.cn", "s", "is not an address"),
    ("raw Shift_JIS Subject, ISO-2022-JP body",
     b"From: a@example.jp\nSubject: \x83c\x81[\x83\x8b\nContent-Type: text/plain; charset=iso-2022-jp\n\n"
     + "ツール".encode("iso2022_jp") + b"\n", "a@example.jp", "ツール", "declared elsewhere in the message"),
    ("raw GB2312 Subject, a GB2312 part",
     b"From: a@example.cn\nSubject: " + "转发：整体提升".encode("gb2312")
     + b"\nContent-Type: text/plain; charset=gb2312\n\n" + "你好".encode("gb2312") + b"\n",
     "a@example.cn", "转发：整体提升", "declared elsewhere in the message"),
]


@pytest.mark.parametrize(("name", "raw", "from_addr", "subject", "defect"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_mail_is_read_and_says_how(name: str, raw: bytes, from_addr: str, subject: str, defect: str) -> None:
    mail = parse_mail(raw)
    assert (mail.from_addr, mail.subject) == (from_addr, subject)
    assert any(defect in d for d in mail.defects), mail.defects


def test_a_body_without_the_blank_line_stays_the_body() -> None:
    """Only lines followed by fields that mail software writes are taken for continuations:
    a body quoting a From/To/Subject block stays the body."""
    mail = parse_mail(b"From: a@example.org\nSubject: hi\nThanks for the order\nFrom: b@example.org\n"
                      b"Subject: earlier\n\nmore\n")
    assert mail.subject == "hi" and "Thanks for the order" in mail.text


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    op = rng.randrange(5)
    if op == 0:  # flip bytes, mostly in the header block
        for _ in range(rng.randint(1, 20)):
            limit = min(len(buf), 600) if rng.random() < 0.7 else len(buf)
            buf[rng.randrange(limit)] = rng.randrange(256)
    elif op == 1:  # truncate
        del buf[rng.randrange(len(buf)):]
    elif op == 2:  # insert MIME-ish noise
        pos = rng.randrange(len(buf))
        noise = rng.choice([b"=?", b"?=", b"\r", b"\n\n", b"--", b"<", b"\x00", b"\xff\xfe", b"=?utf-8?b?",
                            b"boundary=", b"multipart/", b"charset=x", b";", b'"', b"\n "])
        buf[pos:pos] = noise * rng.randint(1, 5)
    elif op == 3:  # cut a slice out
        a, b = sorted((rng.randrange(len(buf)), rng.randrange(len(buf))))
        del buf[a:b]
    else:  # random bytes
        pos = rng.randrange(len(buf))
        buf[pos:pos] = rng.randbytes(rng.randint(1, 50))
    return bytes(buf)


def test_random_mutations_never_raise_anything_but_unparseable() -> None:
    rng = random.Random(20240101)
    corpus = [(CORPUS / name).read_bytes() for name in FILES]
    for _ in range(600):
        raw = _mutate(rng, rng.choice(corpus))
        try:
            mail = parse_mail(raw)
        except UnparseableMail:
            continue
        assert isinstance(mail.text, str) and isinstance(mail.defects, tuple)


@pytest.mark.parametrize("name", ["amazon_html_notification.eml", "dsn_gmail.eml", "amazon_co_jp_iso2022jp.eml",
                                  "other_vendor_invoice.eml"])
def test_every_truncation_parses(name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    for cut in range(0, len(raw), 37):
        try:
            parse_mail(raw[:cut])
        except UnparseableMail:
            assert cut < 60  # only before the first header line is complete


def test_absurd_mime_nesting_is_read_as_text() -> None:
    depth = 5000
    raw = ("From: a@example.org\nSubject: nest\n"
           + "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth))
           + "Content-Type: text/plain\n\ninnermost\n").encode()
    mail = parse_mail(raw)
    assert "innermost" in mail.text
    assert any("nesting" in d for d in mail.defects)


def test_30_mb_message_parses() -> None:
    rng = random.Random(7)
    attachment = base64.encodebytes(rng.randbytes(18 * 1024 * 1024))
    raw = (b"From: \"Big - Amazon Marketplace\" <abcd1234efgh@marketplace.amazon.com>\nTo: seller@acme.example\n"
           b"Subject: Inquiry from Amazon customer Big (Order: 111-2223334-4445556)\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\n"
           b"------------- Begin message -------------\n"
           + b"a long line of buyer words that goes on and on\n" * 120_000
           + b"------------- End message -------------\n[commMgrTok:A1B2C3D4E5F6G]\n"
           b"--XX\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=big.pdf\n"
           b"Content-Transfer-Encoding: base64\n\n" + attachment + b"--XX--\n")
    assert len(raw) > 30_000_000
    mail = parse_mail(raw)
    assert mail.order_id == "111-2223334-4445556"
    assert mail.comm_mgr_tok == "A1B2C3D4E5F6G"
    assert mail.buyer_text is not None and mail.buyer_text.count("\n") == 119_999
    assert mail.attachments[0].size == 18 * 1024 * 1024


# --------------------------------------------------------------------------- Amazon extraction

@pytest.mark.parametrize(("subject", "text", "order_id"), [
    ("Inquiry from Amazon customer X (Order: 111-2223334-4445556)", "", "111-2223334-4445556"),
    ("", "Order ID 112-0000000-0000001:\nsee also 113-0000000-0000002", "112-0000000-0000001"),
    ("", "my other order 113-0000000-0000002\nOrder ID: 112-0000000-0000001", "112-0000000-0000001"),
    ("", "Bestellnummer: 302-4445556-6677788", "302-4445556-6677788"),
    ("(注文: 503-6667778-8899900)", "", "503-6667778-8899900"),
    ("", "digital d01-1234567-7654321", "D01-1234567-7654321"),
    ("", "phone 1111-2223334-4445556 is too long", None),
    ("", "1112-2233-3444 and 111-222333-4445556", None),
    ("", "tracking 111-2223334-44455567", None),
    ("", "no order here", None),
])
def test_find_order_id(subject: str, text: str, order_id: str | None) -> None:
    assert amazon.find_order_id(subject, text) == order_id


@pytest.mark.parametrize(("text", "token"), [
    ("[commMgrTok:A1B2C3D4E5F6G]", "A1B2C3D4E5F6G"),
    ("> [commMgrTok:OLD1234]\nfooter\n[commMgrTok:NEW5678]", "NEW5678"),
    ("[ commMgrTok : A1B2 ]", "A1B2"),
    ("commMgrTok:A1B2C3 without brackets", None),
    ("[commMgrTok:]", None),
])
def test_find_comm_mgr_tok(text: str, token: str | None) -> None:
    assert amazon.find_comm_mgr_tok(text) == token


@pytest.mark.parametrize(("subject", "from_addr", "from_name", "name"), [
    ("Product details inquiry from Amazon customer Jane Doe (Order: 111-2223334-4445556)", "", "", "Jane Doe"),
    ("Return policy enquiry from Amazon customer Oliver (Order: 202-3334445-5566677)", "", "", "Oliver"),
    ("Demande de renseignements de la part du client Amazon Émilie (Commande : 701-5556667-7788899)", "", "",
     "Émilie"),
    ("Re: Order information from Amazon seller Acme (Order: 111-2223334-4445556)",
     "abc12345@marketplace.amazon.com", "Jane - Amazon Marketplace", "Jane"),
    ("Hello", "abc12345@marketplace.amazon.com", "Amazon.com - Amazon Marketplace", None),
    ("Hello", "abc12345@evil.example", "Jane - Amazon Marketplace", None),
    ("Hello", "", "", None),
])
def test_find_buyer_name(subject: str, from_addr: str, from_name: str, name: str | None) -> None:
    assert amazon.find_buyer_name(subject, from_addr, from_name) == name


@pytest.mark.parametrize(("text", "asins"), [
    ("1 of Widget [ASIN: B0ABCDEF12]\n1 of Tape [ASIN: B0TAPE4567]", ("B0ABCDEF12", "B0TAPE4567")),
    ("[ASIN: B0ABCDEF12] twice [ASIN: B0ABCDEF12]", ("B0ABCDEF12",)),
    ("ASIN：0306406152", ("0306406152",)),
    ("XASIN: B0ABCDEF12 and ASIN: B0SHORT", ()),
])
def test_find_asins(text: str, asins: tuple[str, ...]) -> None:
    assert amazon.find_asins(text) == asins


def test_buyer_text_sources_in_order() -> None:
    markers = "x\n------------- Begin message -------------\n\n  words  \n\n------------- End message -------------\n"
    assert amazon.find_buyer_text(markers, "<pre>pre words</pre>") == "  words"
    assert amazon.find_buyer_text("no markers", "<pre>\n\n</pre><pre>pre &amp; words</pre>") == "pre & words"
    truncated = "------------- Begin message -------------\nno end marker"
    assert amazon.find_buyer_text(truncated) == "no end marker"
    quoted = "> ------------- Begin message -------------\n> old\n> ------------- End message -------------"
    assert amazon.find_buyer_text(quoted) is None


def test_cs_relay_fields() -> None:
    relay = amazon.parse_cs_relay(_parse("amazon_cs_relay.eml").text)
    assert relay is not None
    assert relay.order_id == "116-1122334-4556677"
    assert relay.item == "Acme Garden Sprinkler, 3-Arm Rotating"
    assert relay.reason == "Where's My Stuff?"
    assert relay.details is not None and relay.details.endswith("tracking details you have.")
    assert amazon.parse_cs_relay("Details: not a relay") is None


def test_marker_list_is_data_with_verification_flags() -> None:
    languages = {begin.language for begin, _ in amazon.MESSAGE_MARKERS}
    assert {"en", "de", "fr", "es", "it", "ja"} <= languages
    assert all(b.verified == (b.language == "en") for b, _ in amazon.MESSAGE_MARKERS)
    for begin, end in amazon.MESSAGE_MARKERS:
        text = f"------- {begin.text} -------\nhi\n------- {end.text} -------"
        assert between_markers(text, amazon.BEGIN_MARKER_RE, amazon.END_MARKER_RE) == "hi"


def test_layout_helpers() -> None:
    rx = marker_regex(("Begin message",))
    assert rx.search("---  BEGIN   MESSAGE ---")
    assert not rx.search("Begin message")
    assert pre_blocks("<PRE class=x>a<br>b &lt;c&gt;</PRE>") == ["a\nb <c>"]
    assert squash("L\u2019acheteur  A\nchoisi") == "l'acheteurachoisi"
    assert squash("We were unable to DELIVER\r\n the message") == "wewereunabletodeliverthemessage"
    assert squash("Stra\u00dfe\u00a0\u3000X") == "strassex"   # case-folded; every Unicode space removed


def test_subject_whitespace_is_folded() -> None:
    """Every run of Unicode whitespace in a subject becomes one space; the ends are stripped."""
    import re as regex

    rng = random.Random(4)
    alphabet = "ab \t\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000."
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(10)))
        raw = b"From: a@b.example\nSubject: =?utf-8?b?" + base64.b64encode(value.encode()) + b"?=\n\nx\n"
        assert parse_mail(raw).subject == regex.sub(r"\s+", " ", value).strip(), repr(value)
