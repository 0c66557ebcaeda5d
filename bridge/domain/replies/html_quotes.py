"""HTML-only replies: what the mail clients' quote and signature containers look like."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.domain import htmltext


def _quote_container(tag: str, attrs: Mapping[str, str]) -> str | None:
    """The rule for a mail client's container of the quoted thread: the
    reply's own words end where it starts."""
    classes = attrs.get("class", "").lower().split()
    element_id = attrs.get("id", "").lower()
    if "gmail_quote" in classes or "gmail_quote_container" in classes:
        return "html_gmail_quote"
    if "yahoo_quoted" in classes:
        return "html_yahoo_quote"
    if element_id.startswith("divrplyfwdmsg") or element_id in (
        "appendonsend", "mail-editor-reference-message-container"
    ):
        return "html_outlook_reply"
    # Hotmail/Outlook.com: <hr id="stopSpelling"> and then the Date/Subject/From/To
    # block; Outlook on the web: an <hr tabindex="-1"> above divRplyFwdMsg. A
    # plain <hr> the staff member typed is not a quote.
    if tag == "hr" and (element_id == "stopspelling" or attrs.get("tabindex", "").strip() == "-1"):
        return "html_outlook_reply"
    return None


def _signature_container(tag: str, attrs: Mapping[str, str]) -> bool:
    classes = attrs.get("class", "").lower().split()
    return "gmail_signature" in classes or "moz-signature" in classes


def html_to_text(html: str) -> tuple[str, str | None, bool]:
    """(text, quote container cut or None, signature block removed)."""
    rendered = htmltext.to_text(html, cut_before=_quote_container, leave_out=_signature_container,
                                quotes_as_marker=True)
    return rendered.text, rendered.cut_by, rendered.left_out
