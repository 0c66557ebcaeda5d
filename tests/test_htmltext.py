"""The one HTML -> text converter: what it renders, and what its hooks do.

Most rendering cases are tabled where the callers pin them
(tests/test_parse.py ``test_html_to_text``, tests/test_replies.py
``test_html_conversion``); these are the converter's own contract.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from bridge.domain.htmltext import HtmlText, to_text


@pytest.mark.parametrize(("html", "text"), [
    ("Answer<blockquote>old<blockquote>older</blockquote>still old</blockquote>after",
     "Answer\nold\nolder\nstill old\nafter"),
    ('<p class="MsoNormal">one</p><p class="MsoNormal">two</p>', "one\ntwo"),
    ("<p>one</p><p>two</p>", "one\n\ntwo"),
    ('<a href="https://x.example/p">link</a>', "link <https://x.example/p>"),
    ('<a href="https://x.example/p"><img src="cid:logo"></a>', "https://x.example/p"),
    ('<a href="#top">top</a> <a href="cid:x">x</a>', "top x"),
    ("<img alt='logo' src='https://x.example/l.png'>words", "words"),
    ("a\u00a0b\u200bc", "a bc"),
    ("<div><br></div><div><br></div><div><br></div>x<br><br><br><br>y", "x\n\ny"),
])
def test_rendering(html: str, text: str) -> None:
    assert to_text(html) == HtmlText(text)


def _gmail_quote(tag: str, attrs: Mapping[str, str]) -> str | None:
    return "gmail" if "gmail_quote" in attrs.get("class", "").split() else None


def _signature(tag: str, attrs: Mapping[str, str]) -> bool:
    return attrs.get("class") == "sig"


@pytest.mark.parametrize(("html", "expected"), [
    ('<div>Answer</div><div class="gmail_quote">On ... wrote:<blockquote>q</blockquote></div>tail',
     HtmlText("Answer", cut_by="gmail")),
    ('<div>Answer</div><div class="sig">-- <br>Anna</div><div>PS</div>',
     HtmlText("Answer\nPS", left_out=True)),
    ("<div>Answer</div><blockquote>old<blockquote>older</blockquote>old</blockquote><div>more</div>",
     HtmlText("Answer\n>\nmore")),
    ("<div>Answer</div>", HtmlText("Answer")),
])
def test_hooks(html: str, expected: HtmlText) -> None:
    assert to_text(html, cut_before=_gmail_quote, leave_out=_signature, quotes_as_marker=True) == expected


@pytest.mark.parametrize("unit", ["<!--", "</", "<a", "<!", "<blockquote>", "<li>", "<a href='x'>"])
def test_hostile_markup_stays_linear(unit: str) -> None:
    # html.parser (under the old converter of parse.py) re-scanned the rest of
    # the input for each unterminated "<!--": 35 s for 200 kB, minutes for 500 kB.
    html = unit * (500_000 // len(unit))
    started = time.process_time()
    to_text(html)
    assert time.process_time() - started < 10
