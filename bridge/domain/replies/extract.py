"""The rules put together: the staff's new words from a reply body."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.domain.replies.headers import attribution, find_header, generic_attribution
from bridge.domain.replies.html_quotes import html_to_text
from bridge.domain.replies.library import library_header
from bridge.domain.replies.lines import Doc
from bridge.domain.replies.marker import find_marker
from bridge.domain.replies.signatures import contact_signature, strip_signature


@dataclass(frozen=True)
class ReplyText:
    """What staff wrote, and how it was found.

    ``text``: the new words, CRLF normalised to LF, lines right-stripped,
    no leading or trailing blank lines. ``cut_at``: the rule that decided
    where the new words end (``marker``, ``original_message``,
    ``outlook_header_block``, ``apple_mail``, ``thunderbird``,
    ``gmail_on_wrote``, ``mailparser_reply``, ``attribution``, ``html_gmail_quote``,
    ``html_outlook_reply``, ``html_yahoo_quote``, ``quote_prefix``,
    ``inline``, ``signature`` when only a signature was removed, ``none``).
    ``removed_signature``: a signature or "Sent from ..." line was dropped.
    ``removed_lines``: the contact lines of a signature without a "-- " line
    that were cut below a closing phrase (phone, website...): tell the staff.
    ``empty``: nothing is left; the caller must not send anything to the
    buyer and should tell the staff member. ``hits``: every rule that fired,
    in the order they ran, for the message's audit trail.
    """

    text: str
    cut_at: str
    removed_signature: bool
    empty: bool
    hits: tuple[str, ...] = ()
    removed_lines: tuple[str, ...] = ()


def extract_reply(text: str, html: str | None = None) -> ReplyText:
    """The staff's new words from a reply's text/plain body (or, when that
    is empty, its text/html body). Never raises; linear in the input size."""
    text = text or ""
    hits: list[str] = []
    html_cut: str | None = None
    html_signature = False
    if not text.strip() and html and html.strip():
        text, html_cut, html_signature = html_to_text(html)
        hits.append("html")
        if html_cut:
            hits.append(html_cut)
    return _extract(Doc(text), hits, html_cut, html_signature)


def _extract(doc: Doc, hits: list[str], html_cut: str | None, html_signature: bool) -> ReplyText:
    """Rules 1 and 2 find the cut; rule 3 (``quote_prefix``, ``inline``) keeps
    the unquoted blocks above and between quoted lines; rule 4 takes each
    block's signature off."""
    n = len(doc)
    marker = find_marker(doc)
    limit = marker.start if marker else n
    if marker:
        hits.append("marker")
    header = find_header(doc, limit, marker)
    if header is None:
        header = library_header(doc, limit, marker)
    if header is None:
        header = generic_attribution(doc, limit, marker)
    if header:
        hits.append(header.rule)
    cut = header or marker

    # Which lines are "quote" (Q) and which may be new text.
    quote = [False] * n
    region_end = n
    if cut is not None:
        for i in range(cut.start, cut.end):
            quote[i] = True
        after = doc.next_nonblank(cut.end, n)
        quoted_style = doc.quoted[cut.start] or (after < n and doc.quoted[after])
        if not quoted_style:
            # Outlook style: the original follows unquoted; all of it goes.
            region_end = cut.start
        else:
            # ">" style: new text may still sit between quoted lines below.
            if marker is not None:
                for i in range(marker.start, marker.end):
                    quote[i] = True
            i = cut.end
            while i < n:
                if not doc.quoted[i] and doc.bare[i]:
                    more = attribution(doc, i, n, None)
                    if more is not None:
                        for k in range(more.start, more.end):
                            quote[k] = True
                        i = more.end
                        continue
                i += 1
    for i in range(region_end):
        if doc.quoted[i]:
            quote[i] = True

    # Unquoted blocks, in order, and whether any quote came before each.
    blocks: list[tuple[list[int], bool]] = []
    current: list[int] = []
    seen_quote = False
    current_after_quote = False
    for i in range(region_end):
        if quote[i]:
            if any(doc.bare[k] for k in current):
                blocks.append((current, current_after_quote))
            current = []
            seen_quote = True
            continue
        if not current:
            current_after_quote = seen_quote
        current.append(i)
    if any(doc.bare[k] for k in current):
        blocks.append((current, current_after_quote))

    removed_signature = html_signature
    removed_lines: list[str] = []
    kept: list[tuple[str, bool]] = []
    for number, (block, after_quote) in enumerate(blocks):
        first = next((k for k, i in enumerate(block) if doc.bare[i]), len(block))
        block, removed = strip_signature(doc, block[first:])
        if number == len(blocks) - 1:       # a sign-off ends the reply: only its last block has one
            block, cut_lines = contact_signature(doc, block)
            removed_lines += cut_lines
            removed = removed or bool(cut_lines)
        removed_signature = removed_signature or removed
        text = "\n".join(doc.raw[i] for i in block).strip("\n")
        if text.strip():
            kept.append((text, after_quote))

    if any(after_quote for _, after_quote in kept):
        cut_at = "inline"
    elif cut is not None:
        cut_at = cut.rule
    elif html_cut is not None:
        cut_at = html_cut
    elif seen_quote:
        cut_at = "quote_prefix"
    elif removed_signature:
        cut_at = "signature"
    else:
        cut_at = "none"
    if cut_at in ("inline", "quote_prefix"):
        hits.append(cut_at)
    if removed_signature:
        hits.append("signature")
    if removed_lines:
        hits.append("contact_signature")
    result = "\n\n".join(text for text, _ in kept).strip()
    return ReplyText(text=result, cut_at=cut_at, removed_signature=removed_signature,
                     empty=not result, hits=tuple(hits), removed_lines=tuple(removed_lines))
