"""Delivery reports and marketplace notices -> :class:`BounceReport` (pure).

Contract for the pipeline (issue 4, "Effects"):

- ``analyse(raw) -> BounceReport | None``: ``None`` means "not a bounce and not
  a marketplace delivery notice". Never raises for bad MIME; no I/O, no clock.
- Three sources, tried in this order:

  1. RFC 3464 delivery status notifications (``multipart/report;
     report-type=delivery-status``): the per-recipient fields of every
     ``message/delivery-status`` part are read here (Final-Recipient /
     Original-Recipient, Action, Status, Diagnostic-Code). Only ``failed`` and
     ``delayed`` recipients are reported (``delivered``/``relayed``/``expanded``
     are not failures).
  2. Non-standard MTA bounces (Exim, qmail, older Exchange, Sendmail/Postfix
     text-only), recognised by envelope signals (X-Failed-Recipients, a
     mailer-daemon or null sender plus a bounce subject). The failing
     recipients come from :mod:`flufl.bounce` (it returns ``bytes`` addresses,
     no codes) with a fallback for layouts it does not know (Office 365 "Delivery
     has failed to these recipients or groups"); codes and diagnostics are read
     from the text next to each address.
  3. Marketplace notices (buyer opted out, message broke the guidelines,
     account restricted, not delivered). Recognised **by content** through the
     fingerprints each marketplace of the registry knows (today Amazon's, in
     :mod:`bridge.domain.marketplaces.amazon`: English ones verified, the other
     languages marked unverified there); the buyer's own words and quoted
     history are never searched, so a buyer writing "I opted out" or staff
     quoting a notice is not a notice.

- ``kind`` is ``dsn`` for 1 and 2; ``optout``, ``guideline_violation``,
  ``restricted`` or ``not_delivered`` for 3. ``not_delivered`` (Amazon says it
  could not deliver, without a reason) is not in the first sketch of this API:
  treat it like a permanent DSN (record it, tell staff), never as an opt-out.
- ``permanent``: a DSN is permanent when a recipient failed (Action ``failed``
  or a 5.x.x status); ``delayed``/4.x.x only is temporary. Opt-out, guideline
  and not-delivered notices are permanent for that message; a restriction is
  temporary (it lasts at least 120 hours, docs/marketplaces.md).
- Correlation: ``original_message_id`` (angle brackets stripped, like
  :attr:`bridge.domain.parse.ParsedMail.message_id`) comes from the returned
  ``message/rfc822`` or ``text/rfc822-headers`` part, the DSN's
  ``X-Original-Message-ID``, a ``Message-ID:`` line quoted in the body, or, for
  bounces only, the bounce's ``In-Reply-To``. ``buyer_alias`` is the *base*
  relay alias (``+case`` suffix removed, lowercased).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from enum import StrEnum

from flufl.bounce import all_failures

from bridge.domain import bounce_signals
from bridge.domain.marketplaces.protocol import UndeliveredNotice
from bridge.domain.marketplaces.registry import DEFAULT_REGISTRY, Registry
from bridge.domain.parse import ParsedMail, UnparseableMail, parse_mail
from bridge.domain.threads import split_relay_address


class BounceKind(StrEnum):
    DSN = "dsn"                                     # an MTA delivery report (RFC 3464 or not)
    OPTOUT = "optout"                               # the buyer opted out of unsolicited messages
    GUIDELINE_VIOLATION = "guideline_violation"     # not sent: broke the messaging guidelines
    RESTRICTED = "restricted"                       # the account may not send proactive messages for now
    NOT_DELIVERED = "not_delivered"                 # the marketplace could not deliver, no reason given


@dataclass(frozen=True)
class FailedRecipient:
    address: str                   # lowercased addr-spec as the report names it
    status: str | None             # RFC 3463 code, e.g. "5.1.1"; None when the report gives none
    diagnostic: str | None         # the remote server's words, e.g. "550 5.1.1 User unknown"
    action: str                    # RFC 3464 Action: "failed" | "delayed"

    @property
    def permanent(self) -> bool:
        if self.status:
            return self.status.startswith("5")
        return self.action != "delayed"


@dataclass(frozen=True)
class BounceReport:
    kind: BounceKind
    permanent: bool
    recipients: tuple[FailedRecipient, ...] = ()
    original_message_id: str | None = None
    order_id: str | None = None
    buyer_alias: str | None = None
    marketplace_language: str | None = None    # notice language, or the relay alias's marketplace language
    reason: str = ""                           # human readable, for staff and the audit log
    evidence: str = ""                         # what was recognised (report part, detector, fingerprint)
    verified: bool = True                      # False when only an unverified (localised) fingerprint matched

    def is_hard(self) -> bool:
        """The message will not arrive, whatever we do (Salmon's ``is_hard``)."""
        return self.permanent

    def is_soft(self) -> bool:
        """Temporary: the MTA keeps trying, or the restriction ends."""
        return not self.permanent


_NOTICE_KINDS = {
    "opted_out": BounceKind.OPTOUT,
    "guidelines": BounceKind.GUIDELINE_VIOLATION,
    "restricted": BounceKind.RESTRICTED,
    "not_delivered": BounceKind.NOT_DELIVERED,
}

# --------------------------------------------------------------------------- entry point


def analyse(raw: bytes, mail: ParsedMail | None = None,
            marketplaces: Registry = DEFAULT_REGISTRY) -> BounceReport | None:
    """A DSN, MTA bounce or marketplace delivery notice in ``raw``; ``None`` for any other mail.

    ``mail``: ``raw`` already parsed (the pipeline has it), so it is not parsed again.
    ``marketplaces``: whose relay aliases, order ids and notices to recognise.
    """
    if mail is None:
        try:
            mail = parse_mail(raw, marketplaces)
        except UnparseableMail:
            return None
    msg = _structure(raw)
    if msg is None:
        return None
    returned = _returned_message(msg)
    for detect in (_delivery_status_report, _mta_bounce):
        report = detect(msg, mail, returned, marketplaces)
        if report is not None:
            return report
    return _marketplace_notice(mail, returned, marketplaces)


def _structure(raw: bytes) -> Message | None:
    try:
        return message_from_bytes(raw.lstrip(b"\r\n\t "), policy=compat32)
    except (RecursionError, ValueError, TypeError, LookupError, UnicodeError):
        return None


# --------------------------------------------------------------------------- the returned original


@dataclass(frozen=True)
class _Returned:
    message_id: str | None = None
    subject: str = ""
    to: str = ""
    text: str = ""


_MSGID_RE = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


def _msgid(value: str | None) -> str | None:
    m = _MSGID_RE.search(value or "")
    return m.group(1) if m else None


def _parts(msg: Message) -> list[Message]:
    """Every part, depth first, without descending into embedded messages."""
    out: list[Message] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        out.append(part)
        if part.is_multipart() and part.get_content_type() not in ("message/rfc822", "message/delivery-status"):
            stack.extend(reversed([p for p in part.get_payload() if isinstance(p, Message)]))
    return out


def _decoded_text(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, UnicodeError):
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return data.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def _header(headers: Message, name: str) -> str:
    try:
        value = headers.get(name)
    except (ValueError, TypeError, LookupError, UnicodeError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _returned_message(msg: Message) -> _Returned:
    """The original message a bounce returns, as far as it is included."""
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else None
            if inner is None:
                continue
            texts = [_decoded_text(p) for p in _parts(inner)
                     if p.get_content_type() == "text/plain" and not p.is_multipart()]
            return _Returned(_msgid(_header(inner, "message-id")), _header(inner, "subject"),
                             _header(inner, "to"), "\n".join(texts))
        if ctype == "text/rfc822-headers":
            headers = HeaderParser(policy=compat32).parsestr(_decoded_text(part).lstrip())
            return _Returned(_msgid(_header(headers, "message-id")), _header(headers, "subject"),
                             _header(headers, "to"))
    return _Returned()


# A "Message-ID:" line of the original quoted in a plain bounce body (Exim, qmail).
_BODY_MSGID_RE = re.compile(r"^[ \t>]*Message-ID[ \t]*:[ \t]*<([^<>\s]+@[^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_BODY_SUBJECT_RE = re.compile(r"^[ \t>]*Subject[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)


def _original_message_id(mail: ParsedMail, returned: _Returned, per_message: Message | None,
                         is_bounce: bool) -> str | None:
    if returned.message_id:
        return returned.message_id
    if per_message is not None:
        for name in ("x-original-message-id", "original-message-id"):
            found = _msgid(_header(per_message, name))
            if found:
                return found
    m = _BODY_MSGID_RE.search(mail.text)
    if m is not None:
        return m.group(1)
    # Gmail and others thread the DSN onto the original; a notice's In-Reply-To proves nothing.
    return mail.in_reply_to if is_bounce else None


# --------------------------------------------------------------------------- order and buyer

_ADDR_IN_TEXT_RE = re.compile(r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def _relay_base(addr: str, marketplaces: Registry) -> str | None:
    split = split_relay_address(addr, marketplaces.relay_domains, marketplaces)
    return split[0] if split else None


def _buyer_alias(candidates: list[str], texts: list[str], marketplaces: Registry) -> str | None:
    for addr in candidates:
        base = _relay_base(addr, marketplaces)
        if base:
            return base
    for text in texts:
        for m in _ADDR_IN_TEXT_RE.finditer(text):
            base = _relay_base(m.group(0), marketplaces)
            if base:
                return base
    return None


def _order_id(mail: ParsedMail, returned: _Returned, alias: str | None, marketplaces: Registry) -> str | None:
    """The bounce's own order id, else one in the returned message by the layout of its buyer's marketplace."""
    if mail.order_id:
        return mail.order_id
    return marketplaces.find_order_id(returned.subject, returned.text, alias)


def _language_of(alias: str | None, marketplaces: Registry) -> str | None:
    return marketplaces.language_of_relay_domain(alias.rpartition("@")[2]) if alias else None


# --------------------------------------------------------------------------- 1. RFC 3464


_STATUS_RE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_SMTP_CODE_RE = re.compile(r"(?<!\d)([245])\d\d(?=[ \-])")
_FAILED_ACTIONS = ("fail", "error")


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (first: per-message fields)."""
    payload = part.get_payload()
    encoding = _header(part, "content-transfer-encoding").lower()
    if isinstance(payload, list) and payload and encoding not in ("base64", "quoted-printable"):
        return [p for p in payload if isinstance(p, Message)]
    # Encoded or unparsed body: decode it and split into blocks at blank lines ourselves.
    if isinstance(payload, list):
        body = "\n".join(_block_source(p) for p in payload if isinstance(p, Message))
        text = _transfer_decode(body, encoding)
    else:
        text = _decoded_text(part)
    text = text.replace("\r\n", "\n")
    parser = HeaderParser(policy=compat32)
    return [parser.parsestr(block.strip() + "\n") for block in re.split(r"\n[ \t]*\n", text) if block.strip()]


def _block_source(block: Message) -> str:
    """The text compat32 split into a header block, put back together."""
    headers = "".join(f"{name}: {value}\n" for name, value in block.items())
    body = block.get_payload()
    return headers + (body if isinstance(body, str) else "")


def _transfer_decode(body: str, encoding: str) -> str:
    try:
        if encoding == "base64":
            return base64.b64decode("".join(body.split()), validate=False).decode("utf-8", "replace")
        return quopri.decodestring(body.encode("ascii", "replace")).decode("utf-8", "replace")
    except (ValueError, binascii.Error):
        return body


def _field_address(value: str) -> str:
    """``rfc822; user@example.com`` -> ``user@example.com``."""
    address = value.split(";", 1)[1] if ";" in value else value
    return address.strip().strip("<>").strip().lower()


def _diagnostic(value: str) -> str | None:
    value = " ".join(value.split())
    if ";" in value and value.split(";", 1)[0].strip().lower() in ("smtp", "x-unix", "x-postfix", "x-local"):
        value = value.split(";", 1)[1].strip()
    return value or None


def _recipient_from_block(block: Message) -> FailedRecipient | None:
    final = _header(block, "final-recipient")
    original = _header(block, "original-recipient")
    if not final and not original:
        return None
    action = _header(block, "action").lower().split(" ", 1)[0].split("(", 1)[0]
    diagnostic = _diagnostic(_header(block, "diagnostic-code"))
    status_match = _STATUS_RE.search(_header(block, "status")) or _STATUS_RE.search(diagnostic or "")
    status = status_match.group(1) if status_match else None
    if not action:
        action = "delayed" if status and status.startswith("4") else "failed" if status else ""
    if action.startswith("delay"):
        action = "delayed"
    elif action.startswith(_FAILED_ACTIONS):
        action = "failed"
    else:
        return None         # delivered, relayed, expanded: not a failure
    # Original-Recipient is the address we sent to; Final-Recipient may be rewritten downstream.
    address = _field_address(original if original and "@" in original else final)
    return FailedRecipient(address, status, diagnostic, action)


def _delivery_status_report(msg: Message, mail: ParsedMail, returned: _Returned,
                            marketplaces: Registry) -> BounceReport | None:
    status_parts = [p for p in _parts(msg) if p.get_content_type() == "message/delivery-status"]
    if not status_parts:
        return None
    recipients: list[FailedRecipient] = []
    per_message: Message | None = None
    blocks = [block for part in status_parts for block in _status_blocks(part)]
    for block in blocks:
        recipient = _recipient_from_block(block)
        if recipient is not None:
            recipients.append(recipient)
        elif per_message is None and block.keys():
            per_message = block
    evidence = "message/delivery-status (RFC 3464)"
    if not recipients:
        recipients = _flufl_recipients(msg, mail)
        if recipients:
            evidence += "; recipients by flufl.bounce"
        elif not any(_has_status_fields(b) for b in blocks):
            return None     # an empty report; nothing says anything failed
    return _dsn_report(recipients, mail, returned, per_message, evidence, marketplaces)


def _has_status_fields(block: Message) -> bool:
    return any(_header(block, name) for name in ("action", "status", "reporting-mta"))


def _dsn_report(recipients: list[FailedRecipient], mail: ParsedMail, returned: _Returned,
                per_message: Message | None, evidence: str, marketplaces: Registry) -> BounceReport:
    unique = tuple(dict((r.address, r) for r in recipients).values())
    permanent = any(r.permanent for r in unique) if unique else True
    alias = _buyer_alias([r.address for r in unique] + [a for _, a in getaddresses([returned.to])],
                         [returned.text], marketplaces)
    return BounceReport(
        kind=BounceKind.DSN,
        permanent=permanent,
        recipients=unique,
        original_message_id=_original_message_id(mail, returned, per_message, True),
        order_id=_order_id(mail, returned, alias, marketplaces),
        buyer_alias=alias,
        marketplace_language=_language_of(alias, marketplaces),
        reason=_dsn_reason(unique, permanent),
        evidence=evidence,
    )


def _dsn_reason(recipients: tuple[FailedRecipient, ...], permanent: bool) -> str:
    if not recipients:
        return ("A mail server reported that a message could not be delivered, but did not say to whom: "
                "check the bounce itself.")
    lines = []
    for r in recipients:
        what = ("failed permanently" if r.permanent
                else "is delayed; the mail server keeps trying" if r.action == "delayed"
                else "failed for now")
        code = f" ({r.status})" if r.status else ""
        diag = f": {r.diagnostic}" if r.diagnostic else ""
        lines.append(f"Delivery to {r.address} {what}{code}{diag}")
    return "; ".join(lines) + "."


# --------------------------------------------------------------------------- 2. non-standard MTA bounces

# Where a plain bounce starts quoting the returned message: nothing after it names a failed recipient.
_COPY_START_RE = re.compile(
    r"^[ \t]*(?:-{2,}\s*)?(?:This is a copy of the message|Below this line is a copy of the message"
    r"|Original message follows|-{3,}\s*Original message|Original message headers"
    r"|Return-Path:|Received:)",
    re.IGNORECASE | re.MULTILINE,
)
# Phrases after which a non-standard bounce lists the failed addresses (for layouts flufl.bounce misses).
_FAILED_LIST_RE = re.compile(
    r"(?:Delivery has failed to these recipients or groups"
    r"|(?:wasn't|was not|couldn't be|could not be) delivered to"
    r"|following (?:address\(es\)|addresses|recipients?(?:\(s\))?) (?:failed|had permanent fatal errors|"
    r"could not be reached|cannot be reached)"
    r"|did not reach the following recipient|not able to deliver your message to the following"
    r"|Die Nachricht konnte an folgende Empfänger nicht zugestellt werden"
    r"|Delivery to the following recipients? (?:failed|has been delayed))",
    re.IGNORECASE,
)


def _is_bounce_like(mail: ParsedMail, marketplaces: Registry) -> bool:
    marketplace = bool(_relay_base(mail.from_addr, marketplaces)) or marketplaces.is_notification_sender(mail.from_addr)
    return bool(mail.headers.get("x-failed-recipients")) or bounce_signals.mta_report(mail, marketplace) is not None


def _notification_text(mail: ParsedMail) -> str:
    """The bounce's own words: the text before the quoted copy of the original."""
    text = mail.text   # parse_mail() already holds the HTML's text here when there is no text part
    m = _COPY_START_RE.search(text)
    return text[:m.start()] if m else text


def _flufl_recipients(msg: Message, mail: ParsedMail) -> list[FailedRecipient]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:   # noqa: BLE001 - a heuristic detector choking on odd input is not our failure
        temporary, permanent = frozenset(), frozenset()
    text = _notification_text(mail)
    out: list[FailedRecipient] = []
    for raw_addr, delayed in [(a, False) for a in sorted(permanent)] + [(a, True) for a in sorted(temporary)]:
        address = raw_addr.decode("ascii", "replace").strip().strip("<>").lower()
        if "@" in address:
            out.append(_recipient_from_text(address, text, delayed))
    return out


def _fallback_recipients(mail: ParsedMail, own: set[str]) -> list[FailedRecipient]:
    text = _notification_text(mail)
    start = _FAILED_LIST_RE.search(text)
    if start is None:
        return []
    found: dict[str, FailedRecipient] = {}
    window = text[start.start():start.end() + 1500]
    for m in _ADDR_IN_TEXT_RE.finditer(window):
        address = m.group(0).strip(".").lower()
        if address in own or address.partition("@")[0] in bounce_signals.DAEMON_LOCALS or address in found:
            continue
        found[address] = _recipient_from_text(address, text, None)
    return list(found.values())


def _recipient_from_text(address: str, text: str, delayed: bool | None) -> FailedRecipient:
    """Status and diagnostic from the lines right after ``address`` in a plain bounce."""
    lowered = text.lower()
    listed = _FAILED_LIST_RE.search(text)
    at = lowered.find(address, listed.end()) if listed else -1
    if at < 0:
        at = lowered.find(address)
    window = text[at:at + 600] if at >= 0 else text
    status: str | None = None
    diagnostic: str | None = None
    lines = window.splitlines()
    for line in lines:
        s = _STATUS_RE.search(line)
        c = _SMTP_CODE_RE.search(line)
        if s or c:
            status = s.group(1) if s else f"{c.group(1)}.0.0" if c else None
            diagnostic = " ".join(line.split()).strip("()<> ") or None
            break
    else:
        # No code: the line after the address usually says why ("The recipient name is not recognized").
        following = [" ".join(line.split()) for line in lines[1:4] if line.strip()]
        if at >= 0 and following and len(following[0]) <= 200:
            diagnostic = following[0]
    if delayed is None:
        delayed = bool(status and status.startswith("4"))
    if status and status.startswith("4"):
        delayed = True
    return FailedRecipient(address, status, diagnostic, "delayed" if delayed else "failed")


def _mta_bounce(msg: Message, mail: ParsedMail, returned: _Returned,
                marketplaces: Registry) -> BounceReport | None:
    if not _is_bounce_like(mail, marketplaces):
        return None
    recipients = _flufl_recipients(msg, mail)
    evidence = "non-standard bounce; recipients by flufl.bounce"
    if not recipients:
        own = set(mail.to_addrs) | set(mail.cc_addrs) | {mail.from_addr}
        recipients = _fallback_recipients(mail, own - _returned_recipients(returned))
        evidence = "non-standard bounce; recipients from the bounce text"
    if not recipients:
        evidence = "non-standard bounce; recipient not identified"
    return _dsn_report(recipients, mail, returned, None, evidence, marketplaces)


def _returned_recipients(returned: _Returned) -> set[str]:
    return {a.lower() for _, a in getaddresses([returned.to]) if a}


# --------------------------------------------------------------------------- 3. marketplace notices

# Quoted history the marketplaces' notice regions do not cut: Outlook's header block
# ("From: ... / Sent: ...") in a forwarded or replied-to mail.
_OUTLOOK_HISTORY_RE = re.compile(
    r"^[ \t]*(?:From|Von|De|Da|差出人)[ \t]*:.*\n[ \t]*(?:Sent|Date|Gesendet|Envoyé|Enviado|Inviato|送信日時)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


def _marketplace_notice(mail: ParsedMail, returned: _Returned, marketplaces: Registry) -> BounceReport | None:
    text = mail.text
    history = _OUTLOOK_HISTORY_RE.search(text)
    if history is not None:
        text = text[:history.start()]
    notice = marketplaces.find_undelivered_notice(text, mail.buyer_text, mail.from_addr)
    if notice is None and mail.html is not None and not mail.text.strip():
        notice = marketplaces.find_undelivered_notice(mail.html, mail.buyer_text, mail.from_addr)
    if notice is None:
        return None
    kind = _NOTICE_KINDS.get(notice.reason)
    if kind is None:
        return None
    alias = _buyer_alias(list(mail.reply_to), [text, returned.text], marketplaces)
    order_id = _order_id(mail, returned, alias, marketplaces)
    if kind is BounceKind.NOT_DELIVERED and order_id is None:
        # "We were unable to deliver the message you sent" alone is ordinary English (a
        # newsletter, a web shop); Amazon's notice names the order it is about.
        return None
    name = marketplaces.family(notice.marketplace).name
    return BounceReport(
        kind=kind,
        permanent=kind is not BounceKind.RESTRICTED,
        recipients=(),
        original_message_id=_original_message_id(mail, returned, None, False),
        order_id=order_id,
        buyer_alias=alias,
        marketplace_language=notice.language,
        reason=_notice_reason(kind, order_id, notice, name),
        evidence=f"{name} {notice.reason} notice ({notice.language}{'' if notice.verified else ', unverified'}): "
                 f"{notice.phrase!r} from {mail.from_addr or '(no sender)'}",
        verified=notice.verified,
    )


def _notice_reason(kind: BounceKind, order_id: str | None, notice: UndeliveredNotice, name: str) -> str:
    order = f" for order {order_id}" if order_id else ""
    text = {
        BounceKind.OPTOUT: (f"{name} did not deliver the message{order}: the buyer has opted out of unsolicited "
                            f"messages. No more feedback requests or other unsolicited mail to this buyer; "
                            f"replies to the buyer's own messages and messages needed for the order still go."),
        BounceKind.GUIDELINE_VIOLATION: (f"{name} did not send the message{order}: it did not meet the "
                                         f"Buyer-Seller Messaging communication guidelines. Reword it before "
                                         f"sending again."),
        BounceKind.RESTRICTED: (f"{name} has temporarily restricted the account from sending proactive messages "
                                "(at least 120 hours): pause feedback requests and other proactive mail; replies "
                                "to buyers still go."),
        BounceKind.NOT_DELIVERED: f"{name} could not deliver the message{order} and gave no reason.",
    }[kind]
    if not notice.verified:
        text += f" (Recognised by unverified {notice.language} wording: check the notice.)"
    return text
