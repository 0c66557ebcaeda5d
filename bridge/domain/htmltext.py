"""HTML -> plain text (pure), the one converter of the project.

Parsing renders an HTML-only mail with it (:func:`bridge.domain.parse.parse_mail`);
reply extraction renders an HTML-only staff reply with it, passing hooks that
cut at a mail client's quote container and leave signature blocks out
(:mod:`bridge.domain.replies`).

The text is plain, not markdown: blocks, ``<p>`` and ``<br>`` become line
breaks (Outlook's margin-less ``<p class=MsoNormal>`` a single one), list
items "- " or "1. ", table cells one space, ``<pre>`` is kept verbatim,
whitespace elsewhere collapses, images, ``<style>``, ``<script>``, comments
and Outlook's conditional comments leave nothing, entities are decoded, and
a link keeps its address readable as "text <url>" ("text <address>" for
mailto:), the plain-text form of RFC 3986 appendix C that mail clients'
own text parts use too (Outlook's "Get Outlook for iOS<https://...>", a
signature line reply extraction knows). No line is wrapped.

Why not html2text, although it was a dependency for this: it sits on
``html.parser``, which in CPython 3.11 re-scans the rest of the input for
every unterminated "<!--" and so takes minutes on a 2 MB mail of them (a
reply and an inbound mail must be handled in linear time whatever they
contain); its blockquote prefixes repeat ">" per nesting level on every line
(quadratic on nested quotes); it writes markdown (``[text](url)``, "  " hard
breaks, escapes) that would reach buyers; and it cannot stop at a quote
container. So a small tokenizer of our own: every pattern below is bounded and
never scans past the next "<" outside quotes, and each character is looked at
a bounded number of times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import unescape

__all__ = ["HtmlText", "to_text"]

#: Decides on an element from its tag and attributes (names lower case).
ElementTest = Callable[[str, Mapping[str, str]], bool]
#: Names the reason to cut the text before an element, or None to go on.
ElementCut = Callable[[str, Mapping[str, str]], str | None]


@dataclass(frozen=True)
class HtmlText:
    """``text``: the rendering, lines right-stripped, at most one blank line in a
    row, no blank lines at either end. ``cut_by``: what ``cut_before`` named when
    it stopped the text, else None. ``left_out``: ``leave_out`` took an element out."""

    text: str
    cut_by: str | None = None
    left_out: bool = False


def to_text(
    html: str,
    *,
    cut_before: ElementCut | None = None,
    leave_out: ElementTest | None = None,
    quotes_as_marker: bool = False,
) -> HtmlText:
    """Render ``html`` as plain text. Never raises; linear in ``len(html)``.

    ``cut_before``: the text ends before the first element it names a reason
    for. ``leave_out``: elements it accepts are dropped with their content.
    ``quotes_as_marker``: each outermost ``<blockquote>`` becomes one ">" line
    instead of its content, so that text rules still see where a quote was.
    """
    converter = _Converter(cut_before, leave_out, quotes_as_marker)
    converter.feed(html)
    text = "".join(converter.parts)
    lines = [line.translate(_ODD_SPACES).rstrip() for line in text.split("\n")]
    text = _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")
    return HtmlText(text, converter.cut_by, converter.left_out)


_TOKEN = re.compile(
    r"<!--"
    r"|<(/?)([a-zA-Z][^\s/<>]{0,64})((?:[^<>\"']|\"[^\"]{0,4096}\"|'[^']{0,4096}'){0,4096})>"
    r"|<[!?][^<>]{0,4096}>"
)
_ATTRIBUTE = re.compile(r"""([^\s=/"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
_RAW_TEXT_TAGS = frozenset({"style", "script", "title", "template", "xml"})
_BLOCK_TAGS = frozenset({
    "div", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
    "section", "article", "header", "footer", "address", "dl", "dt", "dd", "center",
    "form", "fieldset", "figure", "figcaption", "main", "nav", "aside", "body", "html", "hr",
    "blockquote",
})
_WHITESPACE = re.compile(r"[ \t\n\r\f]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_ODD_SPACES = str.maketrans({"\xa0": " ", "\u202f": " ", "\u200b": None, "\ufeff": None})
# How far back a link's text is looked for: thousands of nested unclosed
# links stay linear.
_MAX_LINK_PARTS = 200


class _Converter:
    def __init__(self, cut_before: ElementCut | None, leave_out: ElementTest | None,
                 quotes_as_marker: bool) -> None:
        self._cut_before = cut_before
        self._leave_out = leave_out
        self._quotes_as_marker = quotes_as_marker
        self.parts: list[str] = []
        self.cut_by: str | None = None
        self.left_out = False
        self._line_start = True
        self._space = False
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._pre = 0
        self._links: list[tuple[str, int]] = []
        self._lists: list[int | None] = []
        self._paragraphs: list[bool] = []   # open <p>: tight (MsoNormal) or not

    def feed(self, html: str) -> None:
        pos, n = 0, len(html)
        while pos < n and self.cut_by is None:
            lt = html.find("<", pos)
            if lt == -1:
                self.data(unescape(html[pos:]))
                return
            if lt > pos:
                self.data(unescape(html[pos:lt]))
            token = _TOKEN.match(html, lt)
            if token is None:   # a "<" that starts no tag is text
                following = html.find("<", lt + 1)
                following = n if following == -1 else following
                self.data(unescape(html[lt:following]))
                pos = following
                continue
            pos = token.end()
            if token.group(0) == "<!--":
                close = html.find("-->", pos)
                pos = n if close == -1 else close + 3
                continue
            name = token.group(2)
            if name is None:   # <!DOCTYPE>, <![if ...]>, <?xml ...?>
                continue
            tag = name.lower()
            if token.group(1):
                self.endtag(tag)
                continue
            attributes = token.group(3)
            self.starttag(tag, _attributes(attributes))
            if tag in _RAW_TEXT_TAGS:
                close_at = re.compile(rf"</{tag}\s*>", re.IGNORECASE).search(html, pos)
                pos = n if close_at is None else close_at.end()
                self.endtag(tag)
            elif attributes.rstrip().endswith("/"):
                self.endtag(tag)

    # output helpers
    def _write(self, text: str) -> None:
        self.parts.append(text)
        self._line_start = text.endswith("\n")
        self._space = text.endswith(" ")

    def _break(self) -> None:
        if not self._line_start:
            self._write("\n")

    def _paragraph(self) -> None:
        self._break()
        if self.parts and not "".join(self.parts[-2:]).endswith("\n\n"):
            self._write("\n")

    def _skip(self, tag: str) -> None:
        self._skip_tag, self._skip_depth = tag, 1

    # events
    def starttag(self, tag: str, attrs: dict[str, str]) -> None:
        if self.cut_by is not None:
            return
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        if self._cut_before is not None:
            self.cut_by = self._cut_before(tag, attrs)
            if self.cut_by is not None:
                return
        if tag in _RAW_TEXT_TAGS:
            self._skip(tag)
        elif tag == "blockquote" and self._quotes_as_marker:
            self._skip(tag)
            self._break()
            self._write(">\n")
        elif self._leave_out is not None and self._leave_out(tag, attrs):
            self._skip(tag)
            self.left_out = True
        elif tag == "br":
            self._write("\n")
        elif tag == "p":
            # Outlook writes every line as <p class=MsoNormal> without margins.
            tight = "msonormal" in attrs.get("class", "").lower()
            self._paragraphs.append(tight)
            if tight:
                self._break()
            else:
                self._paragraph()
        elif tag == "li":
            self._break()
            if self._lists and self._lists[-1] is not None:
                number = (self._lists[-1] or 0) + 1
                self._lists[-1] = number
                self._write(f"{number}. ")
            else:
                self._write("- ")
        elif tag in ("td", "th"):
            if not self._line_start and not self._space:
                self._write(" ")
        elif tag == "a":
            self._links.append((attrs.get("href", "").strip(), len(self.parts)))
        elif tag in _BLOCK_TAGS:
            self._break()
            if tag == "pre":
                self._pre += 1
            elif tag == "ol":
                self._lists.append(0)
            elif tag == "ul":
                self._lists.append(None)

    def endtag(self, tag: str) -> None:
        if self.cut_by is not None:
            return
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag == "p":
            if self._paragraphs and self._paragraphs.pop():
                self._break()
            else:
                self._paragraph()
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.parts[max(start, len(self.parts) - _MAX_LINK_PARTS):]).strip()
            addition = _link_suffix(href, label)
            if addition:
                self._write(addition)
        elif tag in _BLOCK_TAGS or tag == "li":
            self._break()
            if tag == "pre" and self._pre:
                self._pre -= 1
            elif tag in ("ol", "ul") and self._lists:
                self._lists.pop()

    def data(self, data: str) -> None:
        if self.cut_by is not None or self._skip_tag is not None or not data:
            return
        if self._pre:
            self._write(data.replace("\r\n", "\n").replace("\r", "\n"))
            return
        text = _WHITESPACE.sub(" ", data)
        if self._line_start or self._space:
            text = text.lstrip(" ")
        if text:
            self._write(text)


def _attributes(source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for match in _ATTRIBUTE.finditer(source):
        name = match.group(1).lower()
        if name not in values:
            value = match.group(2) or match.group(3) or match.group(4) or ""
            values[name] = unescape(value)
    return values


def _link_suffix(href: str, label: str) -> str:
    """What to add after a link's text so the address stays readable."""
    low = href.lower()
    if not href or low.startswith(("#", "javascript:", "cid:", "data:")):
        return ""
    target = href[7:].split("?")[0] if low.startswith("mailto:") else href
    if not label:
        return target
    if target.rstrip("/") in label or label.rstrip("/") in (target.rstrip("/"), href):
        return ""
    return f" <{target}>"
