"""bridge.domain.replies: what staff wrote, cut from what their mail client added.

- A corpus of real-looking replies (tests/data/replies/<name>.txt or .html,
  each with <name>.expected.txt) checked for the exact text, the rule that
  cut and whether a signature went.
- Property tests: seeded random staff texts above every client's quote
  block come back exactly.
- Robustness: odd input never raises, 2 MB inputs finish in linear time.
- mail-parser-reply findings: what the library gets right (we rely on it as
  a second opinion) and wrong (why our own rules come first). These pin
  mail-parser-reply 1.36; if one fails after an upgrade, re-check the
  finding and the notes in bridge/domain/replies/library.py.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from html import escape
from pathlib import Path

import pytest
from mailparser_reply import EmailReplyParser

from bridge.domain.compose import MARKER
from bridge.domain.replies import ReplyText, extract_reply

DATA = Path(__file__).parent / "data" / "replies"

# name -> (cut_at, removed_signature). The extracted text is <name>.expected.txt.
CORPUS: dict[str, tuple[str, bool]] = {
    # Apple Mail (desktop and iOS), quote header inside the quote
    "apple_mail_en": ("apple_mail", False),
    "apple_iphone": ("apple_mail", True),
    "apple_de_iphone": ("apple_mail", True),
    "apple_fr_iphone": ("apple_mail", True),
    "apple_es_iphone": ("apple_mail", True),
    "apple_it_iphone": ("apple_mail", True),
    "apple_ja_iphone": ("apple_mail", True),
    "sent_from_iphone_only": ("apple_mail", True),
    # Gmail (web, Android), every language, wrapped headers
    "gmail_en_top_signature": ("gmail_on_wrote", True),
    "gmail_en_wrapped_header": ("gmail_on_wrote", False),
    "gmail_android": ("gmail_on_wrote", False),
    "gmail_de": ("gmail_on_wrote", False),
    "gmail_fr": ("gmail_on_wrote", False),
    "gmail_es": ("gmail_on_wrote", False),
    "gmail_it": ("gmail_on_wrote", False),
    "gmail_ja": ("gmail_on_wrote", False),
    "gmail_ja_wrapped": ("gmail_on_wrote", False),
    "gmail_long_thread": ("gmail_on_wrote", False),
    "gmail_marker_deleted": ("gmail_on_wrote", False),
    "gmail_bottom_post": ("inline", False),
    "quote_only": ("gmail_on_wrote", False),
    "wrote_mid_sentence": ("gmail_on_wrote", False),
    "lists_and_sign_off": ("gmail_on_wrote", False),
    # Outlook (desktop, Mac, iOS, Android) and Samsung mail, every language
    "outlook_en_separator": ("outlook_header_block", False),
    "outlook_en_crlf": ("outlook_header_block", False),
    "outlook_mac": ("outlook_header_block", False),
    "outlook_original_message": ("original_message", False),
    "outlook_de": ("outlook_header_block", False),
    "outlook_de_original": ("original_message", False),
    "outlook_fr": ("outlook_header_block", False),
    "outlook_fr_original": ("original_message", False),
    "outlook_es": ("outlook_header_block", False),
    "outlook_es_original": ("original_message", False),
    "outlook_it": ("outlook_header_block", False),
    "outlook_it_original": ("original_message", False),
    "outlook_ja": ("outlook_header_block", False),
    "outlook_ios": ("outlook_header_block", True),
    "outlook_android": ("outlook_header_block", True),
    "samsung_original_message": ("original_message", True),
    # Thunderbird, inline answers
    "thunderbird_en": ("thunderbird", True),
    "thunderbird_de": ("thunderbird", False),
    "thunderbird_ja": ("thunderbird", False),
    "thunderbird_inline": ("inline", True),
    "inline_with_greeting": ("inline", False),
    "inline_no_header": ("inline", False),
    # our marker, mangled by clients
    "marker_wrapped_72": ("marker", False),
    "marker_wrapped_mobile": ("marker", False),
    "marker_respaced": ("marker", False),
    "marker_split_decoration": ("marker", False),
    # languages no rule of ours names: the library, then the generic attribution
    "library_sv_gmail": ("mailparser_reply", False),
    "library_sv_outlook": ("outlook_header_block", False),   # Swedish is ours now; the library agrees
    "attribution_nl_gmail": ("attribution", False),
    "attribution_pt_gmail_no_marker": ("attribution", False),
    # no quote at all
    "signature_only_plain": ("signature", True),
    "plain_no_quote": ("none", False),
    "blank_only": ("none", False),
    # HTML-only replies
    "html_gmail": ("html_gmail_quote", True),
    "html_outlook_web": ("html_outlook_reply", False),
    "html_outlook_desktop": ("outlook_header_block", False),
    "html_apple_mail": ("quote_prefix", True),
    "html_thunderbird_inline": ("inline", True),
}


def _load(name: str) -> tuple[str, str | None, str]:
    """(text, html, expected) for a corpus entry; "crlf" files are sent with CRLF."""
    expected = (DATA / f"{name}.expected.txt").read_text(encoding="utf-8").removesuffix("\n")
    html_file = DATA / f"{name}.html"
    if html_file.exists():
        return "", html_file.read_text(encoding="utf-8"), expected
    text = (DATA / f"{name}.txt").read_text(encoding="utf-8")
    if "crlf" in name:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text, None, expected


def test_corpus_table_matches_files() -> None:
    inputs = {p.name.split(".")[0] for p in DATA.iterdir() if not p.name.endswith(".expected.txt")}
    expected = {p.name.removesuffix(".expected.txt") for p in DATA.glob("*.expected.txt")}
    assert inputs == expected == set(CORPUS)
    assert len(CORPUS) >= 35
    assert len(list(DATA.glob("*.html"))) >= 5


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus(name: str) -> None:
    text, html, expected = _load(name)
    cut_at, removed_signature = CORPUS[name]
    result = extract_reply(text, html)
    assert result.text == expected
    assert result.cut_at == cut_at
    assert result.removed_signature is removed_signature
    assert result.empty is (expected == "")
    _assert_clean(result)


def _assert_clean(result: ReplyText) -> None:
    assert "\r" not in result.text
    assert result.text == result.text.strip()
    assert all(line == line.rstrip() for line in result.text.split("\n"))
    assert result.empty is (result.text == "")


def test_crlf_corpus_really_is_crlf() -> None:
    text, _, _ = _load("outlook_en_crlf")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")


def test_result_is_frozen() -> None:
    result = extract_reply("Hi")
    with pytest.raises(AttributeError):
        result.text = "changed"  # type: ignore[misc]
    assert result == ReplyText("Hi", "none", False, False, ())


# --------------------------------------------------------------------------
# Rule-level tables

QUOTED_BUYER = "\n> Jane Doe wrote about order 111-2223334-4445556:\n>   Where is it?\n"


@pytest.mark.parametrize("marker_lines", [
    MARKER,
    f"> {MARKER}",
    f"> > > {MARKER}",
    f">>{MARKER}",
    "##- please type your reply above this line -##",
    "##-  PLEASE  TYPE YOUR REPLY ABOVE THIS LINE  -##",
    "##-\u00a0Please type your reply above this line\u00a0-##",
    "## - Please type your reply above this line - ##",
    "Please type your reply above this line",
    "##- Please type your reply above this\nline -##",
    "> ##- Please type your\n> reply above this line -##",
    "##- Please type\nyour reply above\nthis line -##",
    "##-\nPlease type your reply above this line -##",
    "   ##- Please type your reply above this line -##   ",
], ids=lambda s: repr(s)[:40])
def test_marker_forms(marker_lines: str) -> None:
    # The notification below is quoted the way the marker is.
    prefix = marker_lines[: len(marker_lines) - len(marker_lines.lstrip("> "))].strip()
    below = "\n".join(f"{prefix} {line}".strip() for line in ("", "Jane Doe wrote about order 111:", "  Hi"))
    result = extract_reply(f"Refund sent.\n\n{marker_lines}\n{below}")
    assert (result.text, result.cut_at) == ("Refund sent.", "marker")


def test_marker_words_split_over_four_lines_are_not_a_marker() -> None:
    # Joins span at most three lines; this keeps the search linear.
    result = extract_reply("Refund sent.\n\nPlease\ntype your reply\nabove\nthis line")
    assert result.cut_at == "none"


def test_marker_below_quote_header_and_quoted_is_cut_at_the_header() -> None:
    text = f"Hi\n\nOn Mon, 23 Nov 2026 at 14:02, Acme <a@acme.example> wrote:\n> {MARKER}\n> x\n"
    assert extract_reply(text).hits == ("marker", "gmail_on_wrote")


@pytest.mark.parametrize(("header", "rule"), [
    ("On Mon, 23 Nov 2026 at 14:02, Acme <a@acme.example> wrote:", "gmail_on_wrote"),
    ("On Mon, Nov 23, 2026 at 2:02 PM Acme <a@acme.example> wrote:", "gmail_on_wrote"),
    ("On Mon, Nov 23, 2026 at 2:02 PM Acme <a@acme.example>\nwrote:", "gmail_on_wrote"),
    ("On Mon, Nov 23, 2026 at 2:02 PM Acme Support\n<a@acme.example>\nwrote:", "gmail_on_wrote"),
    ("On 23 Nov 2026, at 14:02, Acme <a@acme.example> wrote:", "apple_mail"),
    ("> On 23 Nov 2026, at 14:02, Acme <a@acme.example> wrote:", "apple_mail"),
    ("On 23/11/2026 14:02, Acme Support wrote:", "thunderbird"),
    ("On 11/23/26 2:02 PM, Acme Support wrote:", "thunderbird"),
    ("Am Mo., 23. Nov. 2026 um 14:02 Uhr schrieb Acme <a@acme.example>:", "gmail_on_wrote"),
    ("Am 23.11.26 um 14:02 schrieb Acme Support:", "thunderbird"),
    ("Am 23.11.2026 um 14:02 schrieb Acme <a@acme.example>:", "apple_mail"),
    ("Le lun. 23 nov. 2026 à 14:02, Acme <a@acme.example> a écrit :", "gmail_on_wrote"),
    ("Le lun. 23 nov. 2026 à 14:02, Acme <a@acme.example> a écrit\u00a0:", "gmail_on_wrote"),
    ("Le 23 nov. 2026 à 14:02, Acme <a@acme.example> a écrit :", "apple_mail"),
    ("Le 23/11/2026 à 14:02, Acme Support a écrit :", "thunderbird"),
    ("El lun, 23 nov 2026 a las 14:02, Acme (<a@acme.example>) escribió:", "gmail_on_wrote"),
    ("El 23 nov 2026, a las 14:02, Acme <a@acme.example> escribió:", "apple_mail"),
    ("Il giorno lun 23 nov 2026 alle ore 14:02 Acme <a@acme.example> ha scritto:", "gmail_on_wrote"),
    ("Il giorno 23 nov 2026, alle ore 14:02, Acme <a@acme.example> ha scritto:", "apple_mail"),
    ("2026年11月23日(月) 14:02 Acme <a@acme.example>:", "gmail_on_wrote"),
    ("2026年11月23日(月) 14:02 Acme <\na@acme.example>:", "gmail_on_wrote"),
    ("2026/11/23 14:02、Acme <a@acme.example>のメール:", "apple_mail"),
    ("2026/11/23 14:02 に Acme さんは書きました:", "thunderbird"),
    ("-----Original Message-----", "original_message"),
    ("----- Original Message -----", "original_message"),
    ("-----Ursprüngliche Nachricht-----", "original_message"),
    ("-------- Original-Nachricht --------", "original_message"),
    ("-----Message d'origine-----", "original_message"),
    ("-----Message d\u2019origine-----", "original_message"),
    ("-----Mensaje original-----", "original_message"),
    ("-----Messaggio originale-----", "original_message"),
    ("-----Oprindelig meddelelse-----", "original_message"),
    ("-----Ursprungligt meddelande-----", "original_message"),
    ("-----Oorspronkelijk bericht-----", "original_message"),
    ("From: Acme <a@acme.example>\nSent: Monday\nTo: Anna\nSubject: x", "outlook_header_block"),
    ("From: Acme <a@acme.example>\nDate: Monday\nTo: Anna", "outlook_header_block"),
    ("*From:* Acme\n*Sent:* Monday\n*To:* Anna\n*Subject:* x", "outlook_header_block"),
    ("From: Acme\nSent: Monday\nTo: Anna <a@acme.example>,\n Bob <b@acme.example>\nCc: C\nSubject: x",
     "outlook_header_block"),
    ("_" * 32 + "\nFrom: Acme\nSent: Monday\nTo: Anna\nSubject: x", "outlook_header_block"),
    ("Von: Acme\nGesendet: Montag\nAn: Anna\nBetreff: x", "outlook_header_block"),
    ("De : Acme\nEnvoyé : lundi\nÀ : Anna\nObjet : x", "outlook_header_block"),
    ("De: Acme\nEnviado el: lunes\nPara: Anna\nAsunto: x", "outlook_header_block"),
    ("Da: Acme\nInviato: lunedì\nA: Anna\nOggetto: x", "outlook_header_block"),
    ("差出人: Acme\n送信日時: 2026年11月23日 14:02\n宛先: Anna\n件名: x", "outlook_header_block"),
    ("差出人： Acme\n送信日時： 2026年11月23日 14:02\n宛先： Anna\n件名： x", "outlook_header_block"),
    # Outlook in more of the marketplaces' languages.
    ("Fra: Acme\nSendt: 23. november 2026 14:02\nTil: Anna\nEmne: x", "outlook_header_block"),          # da, no
    ("Från: Acme\nSkickat: den 23 november 2026 14:02\nTill: Anna\nÄmne: x", "outlook_header_block"),  # sv
    ("Van: Acme\nVerzonden: maandag 23 november 2026 14:02\nAan: Anna\nOnderwerp: x", "outlook_header_block"),
    ("Od: Acme\nWysłano: poniedziałek, 23 listopada 2026 14:02\nDo: Anna\nTemat: x", "outlook_header_block"),
    ("De: Acme\nEnviada em: segunda-feira, 23 de novembro de 2026 14:02\nPara: Anna\nAssunto: x",
     "outlook_header_block"),
    ("Kimden: Acme\nGönderildi: 23 Kasım 2026 Pazartesi 14:02\nKime: Anna\nKonu: x", "outlook_header_block"),
    ("От: Acme\nОтправлено: 23 ноября 2026 г. 14:02\nКому: Anna\nТема: x", "outlook_header_block"),
    ("发件人: Acme\n发送时间: 2026年11月23日 14:02\n收件人: Anna\n主题: x", "outlook_header_block"),
    ("寄件者: Acme\n寄件日期: 2026年11月23日 14:02\n收件者: Anna\n主旨: x", "outlook_header_block"),
    ("-----Opprinnelig melding-----", "original_message"),
    ("-----Wiadomość oryginalna-----", "original_message"),
    ("-----Mensagem original-----", "original_message"),
    ("-----Özgün İleti-----", "original_message"),
    ("-----Исходное сообщение-----", "original_message"),
    ("------------------ 原始邮件 ------------------", "original_message"),
    ("---- Original email message ----", "original_message"),
], ids=lambda s: repr(s)[:50] if isinstance(s, str) else None)
def test_quote_headers(header: str, rule: str) -> None:
    result = extract_reply(f"Shipped today.\n\n{header}\n{QUOTED_BUYER}")
    assert (result.text, result.cut_at) == ("Shipped today.", rule)


@pytest.mark.parametrize("text", [
    # "wrote:" inside the staff's own words
    "The courier wrote: delivered to the neighbour.",
    "On Monday the courier wrote:\nthe parcel is at the depot.",
    "On 21 Nov the warehouse wrote:\nall items packed.",
    "On 21 Nov the warehouse wrote:\n\nall items packed.",
    "Am Montag schrieb der Kurier: zugestellt.",
    # header-looking lines that are not a header block
    "From: our Leeds warehouse\nIt ships tomorrow.",
    "To: Jane\nSubject: your refund\nIt is done.",
    "Date: Monday 30 Nov\nTo: Leeds depot\nParcel booked.",
    "Data: 30/11\nDo: Leeds\nOggetto: pacco",
    # separators that are not a quote
    "Step one\n" + "_" * 20 + "\nStep two",
    "Original message from the courier: delayed.",
], ids=lambda s: repr(s)[:40])
def test_staff_words_that_look_like_headers_are_kept(text: str) -> None:
    result = extract_reply(text)
    assert (result.text, result.cut_at) == (text, "none")


@pytest.mark.parametrize(("text", "expected", "cut_at"), [
    ("> q\nanswer\n> q2\nanswer2", "answer\n\nanswer2", "inline"),
    ("> q\n\nanswer", "answer", "inline"),
    ("Hi\n> q\nanswer", "Hi\n\nanswer", "inline"),
    ("answer\n> q", "answer", "quote_prefix"),
    ("answer\n\n> q\n>\n> q2\n", "answer", "quote_prefix"),
    ("> only\n> quotes\n", "", "quote_prefix"),
    (">", "", "quote_prefix"),
    ("answer\n> q\n-- \nAnna", "answer", "quote_prefix"),
    ("> q\nanswer\n-- \nAnna\n> q2\nanswer2", "answer\n\nanswer2", "inline"),
])
def test_quote_prefix_and_inline(text: str, expected: str, cut_at: str) -> None:
    result = extract_reply(text)
    assert (result.text, result.cut_at) == (expected, cut_at)


@pytest.mark.parametrize(("text", "expected"), [
    ("Hi\n-- \nAnna\nAcme", "Hi"),
    ("Hi\n--\nAnna", "Hi"),
    ("Hi\n\nSent from my iPhone", "Hi"),
    ("Hi\n\nSent from my iPad\n", "Hi"),
    ("Hi\n\nSent from Outlook for iOS", "Hi"),
    ("Hi\n\nSent from Yahoo Mail on Android", "Hi"),
    ("Hi\n\nGet Outlook for Android<https://aka.ms/ghei36>", "Hi"),
    ("Hi\n\nGet Outlook for iOS", "Hi"),
    ("Hallo\n\nVon meinem iPhone gesendet", "Hallo"),
    ("Bonjour\n\nEnvoyé de mon iPhone", "Bonjour"),
    ("Hola\n\nEnviado desde mi iPhone", "Hola"),
    ("Ciao\n\nInviato da iPhone", "Ciao"),
    ("こんにちは\n\niPhoneから送信", "こんにちは"),
    ("Hi\n\nSent from my iPhone\n\n-- \nAnna", "Hi"),
    ("-- \nAnna", ""),
    ("Sent from my iPhone", ""),
])
def test_signatures(text: str, expected: str) -> None:
    result = extract_reply(text)
    assert (result.text, result.removed_signature) == (expected, True)
    assert result.cut_at == "signature"


@pytest.mark.parametrize("text", [
    "Hi\n\nBest regards,\nAnna",               # a sign-off is the staff's words
    "Hi\n\nThanks,\nAnna",
    "Hi\n- one\n- two",                         # lists are not signatures
    "Hi\n---\nmore",
    "Sent from my iPhone, sorry for the typos.\nIt ships today.",
    "Hi\n\nGesendet von unserem Lager in Köln",
    "Ciao\n\nInviato da noi ieri",
    "こんにちは\n\n倉庫から送信",
])
def test_not_signatures(text: str) -> None:
    result = extract_reply(text)
    assert (result.text, result.removed_signature, result.cut_at) == (text, False, "none")


def test_crlf_and_lone_cr_become_lf() -> None:
    result = extract_reply("Hi Jane,\r\n\r\nShipped.  \r\n\r\n-- \r\nAnna\r\n")
    assert result.text == "Hi Jane,\n\nShipped."
    assert extract_reply("Hi\rthere\r\r> q").text == "Hi\nthere"


def test_text_part_wins_over_html_part() -> None:
    result = extract_reply("Plain words", "<div>HTML words</div>")
    assert result.text == "Plain words" and "html" not in result.hits


def test_html_used_when_text_is_blank() -> None:
    result = extract_reply(" \r\n ", "<div>HTML words</div>")
    assert result.text == "HTML words" and result.hits[0] == "html"


@pytest.mark.parametrize(("html", "expected"), [
    ("<p>One</p><p>Two</p>", "One\n\nTwo"),
    ("One<br>Two<br/>Three", "One\nTwo\nThree"),
    ("<div>One</div><div><br></div><div>Two</div>", "One\n\nTwo"),
    ("<b>Bold</b> and <i>italic</i> and <u>under</u>", "Bold and italic and under"),
    ('<a href="https://x.example/t?id=1">track</a>', "track <https://x.example/t?id=1>"),
    ('<a href="https://x.example/">https://x.example/</a>', "https://x.example/"),
    ('<a href="mailto:a@x.example">a@x.example</a>', "a@x.example"),
    ('<a href="mailto:a@x.example">write us</a>', "write us <a@x.example>"),
    ('<div>Answer</div><div>Get <a href="https://aka.ms/o0ukef">Outlook for iOS</a></div>', "Answer"),
    ("<style>p {color: red}</style><script>alert(1)</script><p>Text</p>", "Text"),
    ("<head><title>T</title></head><body>Text</body>", "Text"),
    ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
    ("<ol><li>one</li><li>two</li></ol>", "1. one\n2. two"),
    ("<table><tr><td>Order</td><td>111</td></tr><tr><td>Qty</td><td>2</td></tr></table>",
     "Order 111\nQty 2"),
    ("<pre>  keep\n    spacing</pre>", "keep\n    spacing"),
    ("5 &lt; 6 &amp;&nbsp;7 &gt; 3", "5 < 6 & 7 > 3"),
    ("Text<!-- a comment -->more", "Textmore"),
    ("Text<!--[if mso]><p>hidden</p><![endif]-->", "Text"),
    ("<![if !supportLists]>1.<![endif]> item", "1. item"),
    ("Answer<blockquote>old<blockquote>older</blockquote>still old</blockquote>", "Answer"),
    ('Answer<div class="moz-signature">-- <br>Anna</div>', "Answer"),
    ("a < b and c > d", "a < b and c > d"),
    ("unclosed <div class='x", "unclosed <div class='x"),
    ("Text <!-- never closed", "Text"),
])
def test_html_conversion(html: str, expected: str) -> None:
    assert extract_reply("", html).text == expected


@pytest.mark.parametrize(("container", "rule"), [
    ('<div class="gmail_quote">', "html_gmail_quote"),
    ('<div class="gmail_quote gmail_quote_container">', "html_gmail_quote"),
    ('<div id="divRplyFwdMsg" dir="ltr">', "html_outlook_reply"),
    ('<div id="appendonsend"></div>', "html_outlook_reply"),
    ('<div class="yahoo_quoted" id="yahoo_quoted_123">', "html_yahoo_quote"),
    ('<hr id="stopSpelling"><div>Date: Mon, 23 Nov 2026<br>From: jane@example.com<br>To: acme</div>',
     "html_outlook_reply"),
    ('<hr style="display:inline-block;width:98%" tabindex="-1">', "html_outlook_reply"),
])
def test_html_quote_containers_cut_everything_after(container: str, rule: str) -> None:
    html = f"<div>Answer</div>{container}<div>quoted</div></div><div>{MARKER}</div>trailing"
    result = extract_reply("", html)
    assert (result.text, result.cut_at) == ("Answer", rule)


def test_a_rule_the_staff_member_drew_is_not_a_quote() -> None:
    result = extract_reply("", "<div>Shipped today.</div><hr><div>Tracking follows tomorrow.</div>")
    assert result.text == "Shipped today.\nTracking follows tomorrow."


# --------------------------------------------------------------------------
# Property tests: random staff words above every client's quote block

NOTIFICATION = f"""{MARKER}

Jane Doe wrote about order 111-2223334-4445556:

  Hello, my parcel was due on Friday. Can you check where it is?

----------------------------------------------------------------------
Reply to this email to answer the buyer: write above the line at the top.

Conversation: C-7Q2M (1 message)
Order:        111-2223334-4445556
Buyer:        Jane Doe <k7m2x9q4t1v8w3z5@marketplace.amazon.com>
"""


def _quote(text: str, prefix: str = ">") -> str:
    return "\n".join(f"{prefix} {line}" if line else prefix for line in text.rstrip("\n").split("\n"))


def _outlook(keys: tuple[str, str, str, str], separator: str = "_" * 32) -> Callable[[str], str]:
    sender, sent, to, subject = keys
    return lambda note: (
        f"{separator}\n{sender} Acme Support <support@acme.example>\n{sent} 23.11.2026 14:02\n"
        f"{to} Anna Berg <anna@acme.example>\n{subject} [mailbridge] Inquiry [C-7Q2M]\n\n{note}"
    )


def _attribution(line: str, *, quoted: bool = False, before: str = "") -> Callable[[str], str]:
    if quoted:
        return lambda note: f"{before}{_quote(line)}\n>\n{_quote(note)}\n"
    return lambda note: f"{before}{line}\n\n{_quote(note)}\n"


# client -> (quote block builder, expected cut_at)
CLIENTS: dict[str, tuple[Callable[[str], str], str]] = {
    "gmail_en": (_attribution("On Mon, 23 Nov 2026 at 14:02, Acme <support@acme.example> wrote:"),
                 "gmail_on_wrote"),
    "gmail_en_wrapped": (_attribution("On Mon, Nov 23, 2026 at 2:02 PM Acme Support Team <support@acme.example>"
                                      "\nwrote:"), "gmail_on_wrote"),
    "gmail_de": (_attribution("Am Mo., 23. Nov. 2026 um 14:02 Uhr schrieb Acme <support@acme.example>:"),
                 "gmail_on_wrote"),
    "gmail_fr": (_attribution("Le lun. 23 nov. 2026 à 14:02, Acme <support@acme.example> a écrit :"),
                 "gmail_on_wrote"),
    "gmail_es": (_attribution("El lun, 23 nov 2026 a las 14:02, Acme (<support@acme.example>) escribió:"),
                 "gmail_on_wrote"),
    "gmail_it": (_attribution("Il giorno lun 23 nov 2026 alle ore 14:02 Acme <support@acme.example> "
                              "ha scritto:"), "gmail_on_wrote"),
    "gmail_ja": (_attribution("2026年11月23日(月) 14:02 Acme <support@acme.example>:"), "gmail_on_wrote"),
    "outlook_en": (_outlook(("From:", "Sent:", "To:", "Subject:")), "outlook_header_block"),
    "outlook_en_original": (_outlook(("From:", "Sent:", "To:", "Subject:"), "-----Original Message-----"),
                            "original_message"),
    "outlook_de": (_outlook(("Von:", "Gesendet:", "An:", "Betreff:")), "outlook_header_block"),
    "outlook_fr": (_outlook(("De :", "Envoyé :", "À :", "Objet :")), "outlook_header_block"),
    "outlook_es": (_outlook(("De:", "Enviado:", "Para:", "Asunto:")), "outlook_header_block"),
    "outlook_it": (_outlook(("Da:", "Inviato:", "A:", "Oggetto:")), "outlook_header_block"),
    "outlook_ja": (_outlook(("差出人:", "送信日時:", "宛先:", "件名:")), "outlook_header_block"),
    "outlook_ios": (_outlook(("From:", "Sent:", "To:", "Subject:"),
                             "Get Outlook for iOS<https://aka.ms/o0ukef>\n" + "_" * 32), "outlook_header_block"),
    "apple_mail": (_attribution("On 23 Nov 2026, at 14:02, Acme <support@acme.example> wrote:", quoted=True),
                   "apple_mail"),
    "apple_iphone": (_attribution("On 23 Nov 2026, at 14:02, Acme <support@acme.example> wrote:", quoted=True,
                                  before="Sent from my iPhone\n\n"), "apple_mail"),
    "apple_ja": (_attribution("2026/11/23 14:02、Acme <support@acme.example>のメール:", quoted=True,
                              before="iPhoneから送信\n\n"), "apple_mail"),
    "thunderbird_en": (_attribution("On 23/11/2026 14:02, Acme Support wrote:", before="-- \nAnna Berg\n\n"),
                       "thunderbird"),
    "thunderbird_de": (_attribution("Am 23.11.26 um 14:02 schrieb Acme Support:"), "thunderbird"),
    "thunderbird_ja": (_attribution("2026/11/23 14:02 に Acme Support さんは書きました:"), "thunderbird"),
    "plain_quote_marker": (lambda note: _quote(note) + "\n", "marker"),
    "unquoted_marker": (lambda note: note, "marker"),
}

# Words staff write, including ones the rules look for, anywhere but at the
# start or end of a line (a line starting "From:" or ending "wrote:" is a
# header shape by design).
WORDS = (
    "parcel refund tomorrow order Jane the a to is we will ship today sorry depot tracking "
    "wrote: schrieb écrit escribió: scritto: From: Sent: To: Subject: Von: De : On Am Le El Il "
    "14:02 2026 23/11/2026 111-2223334-4445556 <x@y.example> -- - > >> ## ##- above reply line "
    "Größe Rücksendung très bien café niño perché 発送 しました ありがとうございます 件名: 差出人: "
    "wrote original message ----- Original ____ \u00a0 iPhone Sent from my"
).split()
FIRST_WORDS = "Hi Hello Yes No We Your It Thanks Danke Bonjour Hola Ciao 山田様 本日 Sorry".split()
LAST_WORDS = "today. tomorrow! now soon, it? here. Anna ok 発送します。 danke. merci".split()


def _staff_text(rng: random.Random, *, html_safe: bool = False) -> str:
    lines: list[str] = []
    for index in range(rng.randint(1, 7)):
        if index and rng.random() < 0.2:
            lines.append("")
            if not html_safe and rng.random() < 0.2:
                lines.append("")
        middle = [rng.choice(WORDS) for _ in range(rng.randint(0, 10))]
        line = " ".join([rng.choice(FIRST_WORDS), *middle, rng.choice(LAST_WORDS)])
        if html_safe:
            line = " ".join(line.replace("\u00a0", " ").split())
        elif index and rng.random() < 0.15:
            line = "  " + line
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_random_staff_text_above_each_client_quote(client: str) -> None:
    build, rule = CLIENTS[client]
    rng = random.Random(f"replies-{client}")
    for case in range(300):
        staff = _staff_text(rng)
        body = f"{staff}\n\n{build(NOTIFICATION)}"
        if case % 3 == 0:
            body = body.replace("\n", "\r\n")
        result = extract_reply(body)
        assert (result.text, result.cut_at, result.empty) == (staff, rule, False), (case, body)


HTML_CLIENTS: dict[str, tuple[Callable[[str], str], str]] = {
    "gmail": (lambda body: f'<div dir="ltr">{body}</div><br><div class="gmail_quote"><div class="gmail_attr">'
                           f"On Mon, 23 Nov 2026 at 14:02, Acme wrote:<br></div><blockquote>{MARKER}"
                           "</blockquote></div>", "html_gmail_quote"),
    "outlook_web": (lambda body: f'<div>{body}</div><div id="appendonsend"></div><hr>'
                                 f'<div id="divRplyFwdMsg"><b>From:</b> Acme</div><div>{MARKER}</div>',
                    "html_outlook_reply"),
    "thunderbird": (lambda body: f'<p>{body}</p><div class="moz-cite-prefix">On 23/11/2026 14:02, Acme wrote:'
                                 f'<br></div><blockquote type="cite"><pre>{MARKER}</pre></blockquote>',
                    "thunderbird"),
}


@pytest.mark.parametrize("client", sorted(HTML_CLIENTS))
def test_random_staff_html_above_each_client_quote(client: str) -> None:
    build, rule = HTML_CLIENTS[client]
    rng = random.Random(f"replies-html-{client}")
    for case in range(300):
        staff = _staff_text(rng, html_safe=True)
        if client == "thunderbird":
            body = "<br>".join(escape(line) for line in staff.split("\n"))
        else:
            body = "".join(f"<div>{escape(line)}</div>" if line else "<div><br></div>"
                           for line in staff.split("\n"))
        result = extract_reply("", build(body))
        assert (result.text, result.cut_at) == (staff, rule), (case, body)


# --------------------------------------------------------------------------
# Robustness

PIECES = (
    ">", "> ", ">>", "-- ", "--", "\n", "\r\n", "\r", " ", "\t", "\u00a0", "\u200b", ":", "：",
    "On ", " wrote:", "Am ", " schrieb ", "From: a", "Sent: b", "To: c", "Subject: d",
    "-----Original Message-----", "_" * 32, "##-", "-##", "Please type your reply above this line",
    MARKER, "Sent from my iPhone", "2026年11月23日(月) 14:02 ", "<", "&", "2026", "14:02",
    "word", "Wort", "発送", "<x@y>", "*", "#",
)
HTML_PIECES = (
    "<div>", "</div>", "<p>", "</p>", "<br>", "<blockquote>", "</blockquote>", "<a href='x'>", "</a>",
    '<div class="gmail_quote">', '<div id="divRplyFwdMsg">', "<style>", "</style>", "<!--", "-->",
    "<![if x]>", "<pre>", "</pre>", "<li>", "<ol>", "<", ">", "&amp;", "&", "text", "\n", MARKER,
)


def test_random_fragments_never_raise() -> None:
    rng = random.Random("replies-fuzz")
    for _ in range(1500):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        html = "".join(rng.choice(HTML_PIECES) for _ in range(rng.randint(0, 40)))
        _assert_clean(extract_reply(text))
        _assert_clean(extract_reply("", html))


@pytest.mark.parametrize("text", ["", " ", "\n\n\n", "\r\n", "\t", ">", "> ", "--", "-- ",
                                  "\u00a0", "\ufeff", MARKER, f"> {MARKER}", "_" * 40])
def test_degenerate_input_is_empty(text: str) -> None:
    result = extract_reply(text, None)
    assert (result.text, result.empty) == ("", True)
    assert extract_reply("", text or None).empty


TWO_MB = 2_000_000


def _repeat(unit: str, size: int) -> str:
    return unit * (size // len(unit) + 1)


# Each input as a function of its size: (text, html).
BIG_INPUTS: dict[str, Callable[[int], tuple[str, str | None]]] = {
    "text_lines": lambda n: (_repeat("It ships tomorrow, sorry for the wait.\n", n), None),
    "one_line": lambda n: (_repeat("x", n), None),
    "blank_lines_then_signature": lambda n: ("Hi\n" + _repeat("\n", n) + "-- \nAnna", None),
    "quoted_lines": lambda n: (_repeat("> quoted line of the old thread\n", n), None),
    "header_shaped_lines": lambda n: (_repeat("On 1 Jan 2026 Acme wrote:\n", n), None),
    "header_shaped_quoted": lambda n: (_repeat("On 1 Jan 2026 Acme wrote:\n> q\n", n), None),
    "from_lines": lambda n: (_repeat("From: x\n", n), None),
    "inline_pairs": lambda n: (_repeat("> q\nanswer\n", n), None),
    "marker_at_the_end": lambda n: (_repeat("Answer\n", n) + MARKER, None),
    "html_text": lambda n: ("", _repeat("<div>It ships tomorrow.</div>\n", n)),
    "html_unclosed_comments": lambda n: ("", _repeat("<!--", n)),
    "html_end_tag_starts": lambda n: ("", _repeat("</", n)),
    "html_lt": lambda n: ("", _repeat("<a", n)),
    "html_declarations": lambda n: ("", _repeat("<!", n)),
    "html_nested_blockquotes": lambda n: ("", _repeat("<blockquote>", n)),
    "html_nested_lists": lambda n: ("", "<ol>" + _repeat("<li>", n)),
}


def _cpu_seconds(text: str, html: str | None) -> float:
    # CPU time of this process, not the wall clock: the neighbours on a shared machine do not count.
    started = time.process_time()
    _assert_clean(extract_reply(text, html))
    return time.process_time() - started


@pytest.mark.parametrize("name", sorted(BIG_INPUTS))
def test_two_megabytes_take_time_in_proportion_to_their_size(name: str) -> None:
    """Linear, not quadratic: 8 times the input may take about 8 times the CPU, never 64 times.

    A ratio measured in the same run, so a slow machine does not fail it; below
    half a second of CPU for 2 MB there is nothing quadratic worth catching.
    """
    small, big = BIG_INPUTS[name](TWO_MB // 8), BIG_INPUTS[name](TWO_MB)
    assert len(big[0] or big[1] or "") >= TWO_MB
    small_cpu = min(_cpu_seconds(*small) for _ in range(2))
    big_cpu = _cpu_seconds(*big)
    assert big_cpu < 0.5 or big_cpu < 24 * small_cpu, (
        f"{name}: 2 MB took {big_cpu:.2f} s CPU, 250 kB {small_cpu:.3f} s: something went quadratic")


# --------------------------------------------------------------------------
# mail-parser-reply 1.36: findings behind how bridge.domain.replies uses it

LIBRARY_LANGUAGES = ["en", "de", "fr", "es", "it", "ja", "nl", "sv"]


def _library(text: str) -> tuple[str, list[str]]:
    """(latest_reply, headers found) as the library sees ``text``."""
    message = EmailReplyParser(languages=list(LIBRARY_LANGUAGES)).read(text)
    return message.latest_reply or "", [r.headers for r in message.replies if r.headers]


def _corpus_text(name: str) -> str:
    return _load(name)[0]


@pytest.mark.parametrize("name", [
    "gmail_en_top_signature", "gmail_de", "gmail_fr", "gmail_it", "gmail_ja",
    "outlook_en_separator", "outlook_de", "outlook_original_message", "apple_iphone",
    "library_sv_gmail", "library_sv_outlook",
])
def test_library_right_finds_these_headers(name: str) -> None:
    # Relied on: its header regexes (more languages than ours) as a second
    # opinion when none of our header rules matched (the sv cases).
    _, headers = _library(_corpus_text(name))
    assert headers


@pytest.mark.parametrize("name", [
    "outlook_ja",           # 差出人:/送信日時: blocks: its "ja" block keys are the English ones
    "gmail_ja_wrapped",     # wrapped Japanese Gmail header
    "thunderbird_ja",       # "...さんは書きました:"
    "apple_ja_iphone",      # "...のメール:"
    "attribution_nl_gmail",  # Gmail nl "Op ... schreef X <x@y>:" (it wants "schreef:" at the end)
    "gmail_es",             # Gmail es header wrapped before "escribió:"
])
def test_library_wrong_misses_these_headers(name: str) -> None:
    _, headers = _library(_corpus_text(name))
    assert headers == []


def test_library_wrong_quote_only_reply_comes_back_as_the_reply() -> None:
    # With nothing above the header its first fragment is empty and skipped,
    # so "latest_reply" is the quoted notification itself: relayed as-is this
    # would send our own notification to the buyer. We return empty.
    latest, _ = _library(_corpus_text("quote_only"))
    assert MARKER in latest
    assert extract_reply(_corpus_text("quote_only")).empty


def test_library_wrong_inline_answers_come_back_with_the_quoted_buyer_lines() -> None:
    latest, _ = _library(_corpus_text("thunderbird_inline"))
    assert "> Jane Doe wrote about order" in latest and "It is at the local depot" in latest
    assert ">" not in extract_reply(_corpus_text("thunderbird_inline")).text


def test_library_wrong_signature_rules_eat_the_staff_words() -> None:
    # Its body drops everything from "Thanks,"/"Best regards"/"Viele Grüße"
    # or a "- item" line down: the staff's own words. We keep sign-offs.
    message = EmailReplyParser(languages=["en", "de"]).read(_corpus_text("lists_and_sign_off"))
    assert message.replies[0].body == "Hi Jane,"
    assert extract_reply(_corpus_text("lists_and_sign_off")).text.endswith("Best regards,\nAnna")


def test_library_wrong_cuts_at_wrote_inside_a_sentence() -> None:
    latest, headers = _library("It left today.\nOn Monday the courier wrote:\nparcel at the depot.")
    assert headers == ["On Monday the courier wrote:"] and latest == "It left today."


def test_library_wrong_polish_header_is_one_line() -> None:
    # Why "pl" is not among the languages we pass it.
    message = EmailReplyParser(languages=["pl"]).read("Hi,\nData: attached\nDo: nothing")
    assert message.latest_reply == "Hi,"


def test_library_wrong_strips_indentation() -> None:
    latest, _ = _library("Steps:\n  1. pack\n  2. ship")
    assert latest == "Steps:\n1. pack\n2. ship"
    assert extract_reply("Steps:\n  1. pack\n  2. ship").text == "Steps:\n  1. pack\n  2. ship"


@pytest.mark.parametrize(("text", "kept_end", "removed"), [
    ("Shipped.\n\nBest regards,\nSam Patel | Acme Outdoor Support\nTel +1 206 555 0100 | www.acme-outdoor.example",
     "Best regards,\nSam Patel | Acme Outdoor Support", ("Tel +1 206 555 0100 | www.acme-outdoor.example",)),
    ("Ist unterwegs.\n\nMit freundlichen Grüßen\nAnna Berg\nKundenservice\nTelefon: +49 30 1234567\nwww.acme.example",
     "Mit freundlichen Grüßen\nAnna Berg", ("Kundenservice", "Telefon: +49 30 1234567", "www.acme.example")),
    ("C'est parti.\n\nCordialement,\nMarie Dubois\nService client - Acme\n+33 1 23 45 67 89",
     "Cordialement,\nMarie Dubois", ("Service client - Acme", "+33 1 23 45 67 89")),
    ("Enviado hoy.\n\nSaludos,\nLucía\nhttps://acme.example/soporte",
     "Saludos,\nLucía", ("https://acme.example/soporte",)),
    ("Thanks, Sam\nsupport@acme.example", "Thanks, Sam", ("support@acme.example",)),
    ("発送しました。\n\nよろしくお願いします。\n山田\n電話 03-1234-5678", "よろしくお願いします。\n山田", ("電話 03-1234-5678",)),
])
def test_contact_signatures_without_a_delimiter_are_cut(text: str, kept_end: str, removed: tuple[str, ...]) -> None:
    result = extract_reply(text)
    assert result.text.endswith(kept_end) and result.removed_lines == removed
    assert "contact_signature" in result.hits


@pytest.mark.parametrize("text", [
    "Call us at +1 206 555 0100 for the spare part.\n\nBest regards,\nSam",     # the answer itself: the guard decides
    "Thanks\n\nOur website www.acme.example has the manual.",                     # a sentence, not a signature
    "Best regards,\nSam",                                                         # nothing to cut
])
def test_contact_details_that_are_not_a_signature_stay(text: str) -> None:
    result = extract_reply(text)
    assert result.removed_lines == () and result.text == text
