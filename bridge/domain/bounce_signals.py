"""Is this mail a delivery report? The signals real MTAs give, in one place (pure).

Used by both halves of bounce handling: :mod:`bridge.domain.classify` decides
the kind with :func:`delivery_report_signal`, and :mod:`bridge.domain.bounces`
reads the report. Keeping the signals here means the two can never disagree on
what a bounce is.

What counts, strongest first (collected from the realmail corpus of
flufl.bounce's and Mailman's samples, and the MTAs' own documentation: Postfix
``bounce(5)``, Exim's ``Mail delivery failed``, Sendmail's ``Returned mail``,
qmail's ``failure notice``, Exchange's ``Undeliverable``, Lotus/Domino's
``DELIVERY FAILURE``, MDaemon's ``Permanent Delivery Failure``):

1. Structure: a ``message/delivery-status`` part anywhere in the MIME tree, or
   ``multipart/report; report-type=delivery-status`` (RFC 3464/6522). Many
   MTAs wrap the report in ``multipart/mixed``, so the top-level type alone is
   not enough.
2. ``X-Failed-Recipients`` (Exim and others).
3. A delivery-system sender (``MAILER-DAEMON``, ``postmaster``, a null
   ``From: <>`` or ``Return-Path: <>``...) together with either a subject of
   the bounce families or bounce wording in the first lines of the text.
4. A subject of the bounce families together with bounce wording in the text,
   from any sender that is not a marketplace's (relay alias or notification
   address) (some gateways send bounces
   from ordinary-looking addresses, e.g. ``E500_SMTP_Mail_Service@``,
   ``imss@``).

A buyer writing "my parcel could not be delivered" under the subject
"Undelivered package" comes from a relay alias: rules 3 and 4 never apply to
marketplace senders, and rules 1-3 need what only mail systems produce. Headers such as
``Precedence: bulk`` or ``Auto-Submitted`` do not matter here: real bounces
carry them, and the classifier runs these rules before the auto-reply rules.
"""

from __future__ import annotations

import re

from bridge.domain.parse import ParsedMail

# Local parts mail systems send delivery reports from (lowercased).
DAEMON_LOCALS = frozenset({
    "mailer-daemon", "mailerdaemon", "mail-daemon", "mailer_daemon", "postmaster", "mdaemon",
    "mail.delivery.system", "mail-delivery-system",
})

# Subject families real MTAs use, matched anywhere in the subject (list tags such
# as "[Postmaster]" or "RE: ... : non remis" come before them), case-insensitive.
BOUNCE_SUBJECTS: tuple[str, ...] = (
    r"undelivered mail returned to sender", r"mail delivery (?:failed|failure|problem|subsystem|system)",
    r"delivery status notification", r"undeliverable", r"undelivered mail", r"returned mail",
    r"(?:permanent |temporary |e-?mail |message )?delivery (?:failure|failed|error|problem)",
    r"failure (?:notice|delivery)", r"failed mail", r"non-?delivery", r"nondeliverable",
    r"(?:mail|message) (?:not delivered|could not be delivered|undeliverable|delivery failed)",
    r"delivery has failed", r"delayed mail", r"delivery delayed", r"could not send message",
    r"mail system error", r"returned to sender", r"returning to sender", r"mail failed",
    r"(?:mail |e-?mail )?delivery warning", r"warning: message \S+ delayed",
    r"unzustellbar", r"nicht zustellbar", r"non remis", r"non distribuable", r"no se puede entregar",
    r"no entregado", r"non recapitabile", r"niet afleverbaar", r"onbestelbaar", r"kan inte levereras",
    r"nie dostarczono", r"não entregue", r"iletilemedi", r"не доставлено", r"недоставленное",
    r"配信不能", r"配信エラー", r"退信", r"未送达", r"发送失败", r"無法傳送",
)
BOUNCE_SUBJECT_RE = re.compile(r"(?<!\w)(?:" + "|".join(BOUNCE_SUBJECTS) + r")(?!\w)", re.IGNORECASE)

# Wording of the report itself, searched in the first lines of the text only
# (the quoted original below may say anything).
_BOUNCE_TEXT_RE = re.compile(
    r"(?:could not be delivered|couldn't be delivered|was not delivered|wasn't delivered|not been delivered"
    r"|undeliverable|unable to deliver|could not deliver|delivery (?:has )?failed|delivery to the following"
    r"|permanent(?:ly)? (?:fatal )?errors?|fatal errors?|user unknown|unknown user|no such user"
    r"|mailbox (?:unavailable|not found|is full|full)|does not exist|address rejected|recipient address rejected"
    r"|returned to sender|non-?delivery|failed to deliver|delivery problem|message delayed|not yet been delivered"
    r"|will (?:continue|keep) (?:trying|to try)|host unknown|following (?:address|recipient)"
    r"|user not found|invalid (?:mailbox|recipient)|(?:was|were) not accepted|has been returned|returned mail follows"
    r"|failed addresses|delivery of (?:e-?mail|your message) to|has been postponed|no valid recipients"
    r"|nicht zugestellt|unzustellbar|n'a pas pu être (?:remis|distribué)|non recapitabile|no se pudo entregar"
    r"|не может быть доставлено|не доставлено|配信できませんでした|无法发送|无法送达|發送失敗)",
    re.IGNORECASE,
)
_TEXT_WINDOW = 3000


def daemon_sender(mail: ParsedMail) -> str | None:
    """What says a mail system (not a person) sent this: the sender named, or None."""
    local = mail.from_addr.partition("@")[0]
    if local in DAEMON_LOCALS or local.startswith("microsoftexchange"):
        return mail.from_addr
    if not mail.from_addr and mail.from_header:
        # No address in From: a null sender ("<>", "Postmaster <>") or a bare local part.
        if "<>" in mail.from_header.replace(" ", ""):
            return "From: <>"
        words = mail.from_header.strip("<> ").split()
        if words and words[0].lower().strip("<>") in DAEMON_LOCALS:
            return f"From: {words[0]}"
    return_path = mail.headers.get("return-path", "").replace(" ", "").lower()
    if return_path == "<>":
        return "null Return-Path"
    rp_local = return_path.strip("<>").partition("@")[0]
    if rp_local in DAEMON_LOCALS:
        return f"Return-Path {return_path}"
    return None


def bounce_wording(mail: ParsedMail) -> str | None:
    """Bounce wording in the first lines of the text (HTML's text when there is no text part)."""
    m = _BOUNCE_TEXT_RE.search(mail.text[:_TEXT_WINDOW])
    return m.group(0) if m else None


def structural_report(mail: ParsedMail) -> str | None:
    """Signal 1: the MIME structure says delivery report."""
    if "message/delivery-status" in mail.part_types:
        return "a message/delivery-status part (RFC 3464)"
    if mail.content_type == "multipart/report" and report_type(mail) == "delivery-status":
        return "multipart/report; report-type=delivery-status"
    return None


def mta_report(mail: ParsedMail, marketplace_sender: bool) -> str | None:
    """Signals 3 and 4: sender, subject and wording of a report without RFC 3464 structure.

    ``marketplace_sender``: the sender is a marketplace relay alias (a buyer) or
    the marketplace's own notification address (its notices are read as
    notices): never an MTA report then.
    """
    if marketplace_sender:
        return None
    subject = BOUNCE_SUBJECT_RE.search(mail.subject)
    sender = daemon_sender(mail)
    if sender is not None and (subject is not None or mail.content_type == "multipart/report"):
        return f"bounce subject {mail.subject[:60]!r} from {sender}"
    wording = bounce_wording(mail) if sender is not None or subject is not None else None
    if wording is None:
        return None
    if sender is not None:
        return f"bounce wording {wording!r} from {sender}"
    return f"bounce subject {mail.subject[:60]!r} and wording {wording!r}"


def delivery_report_signal(mail: ParsedMail, marketplace_sender: bool) -> str | None:
    """Why ``mail`` is a delivery report (for the audit trail), or None when it is not one."""
    failed = mail.headers.get("x-failed-recipients")
    return (structural_report(mail) or (f"X-Failed-Recipients: {failed[:80]}" if failed else None)
            or mta_report(mail, marketplace_sender))


_REPORT_TYPE_RE = re.compile(r"report-type\s*=\s*\"?([a-z0-9-]+)", re.IGNORECASE)


def report_type(mail: ParsedMail) -> str | None:
    """The ``report-type`` parameter of the top-level Content-Type, lowercased."""
    m = _REPORT_TYPE_RE.search(mail.headers.get("content-type", ""))
    return m.group(1).lower() if m else None
