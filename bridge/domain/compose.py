"""EmailMessage building for everything mailbridge sends (pure: clock and ids passed in).

Every message we send carries:
- a Message-ID of ours, fixed before the first send attempt (exactly-once);
- ``Auto-Submitted: auto-generated`` (RFC 3834 5.) so well-behaved responders
  do not answer it, and ``X-Auto-Response-Suppress: All`` for Exchange;
- ``X-Mailbridge-Origin``: an HMAC over account and Message-ID, so mail we
  sent that comes back into a watched mailbox is recognised as our own.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import encode_rfc2231, format_datetime, formataddr

# Staff write above this line; everything from it down is our notification
# quoted back by their client (bridge.domain.replies cuts here first).
MARKER = "##- Please type your reply above this line -##"

ORIGIN_HEADER = "X-Mailbridge-Origin"
ACCOUNT_HEADER = "X-Mailbridge-Account"


def new_message_id(from_address: str) -> str:
    """A globally unique Message-ID (without brackets) in the sender's domain: 128 random bits."""
    domain = from_address.rpartition("@")[2] or "mailbridge.invalid"
    return f"mb.{os.urandom(16).hex()}@{domain}"


@dataclass(frozen=True)
class AttachmentData:
    filename: str
    content_type: str        # "application/pdf"
    data: bytes


@dataclass(frozen=True)
class Outgoing:
    message_id: str          # without brackets
    envelope_from: str
    recipients: tuple[str, ...]
    subject: str
    raw: bytes               # CRLF line endings, ready for SMTP DATA


# RFC 5322 2.1.1: a line MUST NOT exceed 998 characters (CRLF excluded).
MAX_LINE = 998


def _text_part(text: str) -> bytes:
    """Content headers, a blank line and the body of a utf-8 text part."""
    # A CR alone ends a line, as in email.generator: ``raw`` has CRLF line ends and no other CR.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and "\x00" not in text and max(map(len, text.split("\n"))) <= MAX_LINE:
        # Already valid 7bit data (RFC 2045 2.7): sent as it is, readable in any client and
        # in the raw source; encoding it would only cost time (most mail is like this).
        return (b'Content-Type: text/plain; charset="utf-8"\r\n'
                b"Content-Transfer-Encoding: 7bit\r\n\r\n" + text.replace("\n", "\r\n").encode("ascii"))
    # Quoted-printable keeps non-ASCII, overlong lines and NULs intact in every client (RFC 2045 6.7).
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return (b'Content-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)


def _attachment_part(attachment: AttachmentData) -> bytes:
    name = attachment.filename.replace("\\", "_").replace('"', "_")
    if name.isascii():
        disposition = f'attachment; filename="{name}"'
    else:  # RFC 2231 parameter encoding for non-ASCII file names
        disposition = f"attachment; filename*={encode_rfc2231(name, 'utf-8')}"
    ctype = attachment.content_type if "/" in attachment.content_type else "application/octet-stream"
    head = _header("Content-Type", ctype) + _header("Content-Disposition", disposition) + \
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    return head + base64.encodebytes(attachment.data).replace(b"\n", b"\r\n")


def _header(name: str, value: str) -> bytes:
    """One header field, RFC 2047-encoded when not ASCII, folded at 78 (RFC 5322 2.1.1)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break")
    if len(name) + 2 + len(value) <= 78 and value.isascii():
        return f"{name}: {value}\r\n".encode("ascii")   # fits on one line as it is
    if value.isascii():
        encoded = _fold_ascii(len(name) + 2, value)
    else:
        encoded = _encoded_words(len(name) + 2, value)
    return f"{name}: {encoded}\r\n".encode("ascii")


def _encoded_words(used: int, value: str, width: int = 78) -> str:
    """RFC 2047 base64 encoded-words of UTF-8, folded; a character is never split across words.

    Each word stays within 75 characters (RFC 2047 2.) and each line within
    ``width``. (``email.header.Header`` does the same, about 20 times slower.)
    """
    words: list[str] = []
    budget = max(12, (width - used - 12) // 4 * 3)  # bytes whose base64 fits on the first line
    chunk = bytearray()
    for char in value:
        data = char.encode("utf-8", "surrogatepass")
        if chunk and len(chunk) + len(data) > budget:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk = bytearray()
            budget = 45  # 60 base64 characters: a 72-character word after the folding space
        chunk += data
    words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return "\r\n ".join(words)


def _fold_ascii(used: int, value: str, width: int = 78) -> str:
    """Fold at spaces so lines stay under ``width``; an unbreakable word stays whole (< 998)."""
    lines: list[str] = []
    current = ""
    for word in value.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and used + len(candidate) > width:
            lines.append(current)
            current, used = word, 1
        else:
            current = candidate
    lines.append(current)
    return "\r\n ".join(lines)


def _mailbox(name: str, addr: str) -> str:
    if not name:
        return addr
    return formataddr((name, addr)) if name.isascii() else formataddr((name, addr), charset="utf-8")


def build_mail(
    *,
    account: str,
    origin: str,
    message_id: str,
    date: datetime,
    from_name: str,
    from_addr: str,
    to_addr: str,
    subject: str,
    text: str,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    auto_submitted: bool = True,
    extra_headers: tuple[tuple[str, str], ...] = (),
    attachments: tuple[AttachmentData, ...] = (),
) -> Outgoing:
    """Build the bytes of one plain-text message (multipart/mixed when there are attachments).

    ``auto_submitted=False`` for mail that carries a person's words (a staff
    reply relayed to a buyer): RFC 3834 reserves Auto-Submitted for automatic mail.
    """
    fields: list[tuple[str, str]] = [
        ("From", _mailbox(from_name, from_addr)),
        ("To", to_addr),
    ]
    if reply_to:
        fields.append(("Reply-To", reply_to))
    fields += [("Subject", subject), ("Date", format_datetime(date)), ("Message-ID", f"<{message_id}>")]
    if in_reply_to:
        fields.append(("In-Reply-To", f"<{in_reply_to}>"))
    if references:
        fields.append(("References", " ".join(f"<{r}>" for r in references)))
    if auto_submitted:
        fields += [("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All")]
    fields += [(ORIGIN_HEADER, origin), (ACCOUNT_HEADER, account), *extra_headers]
    fields.append(("MIME-Version", "1.0"))
    text_part = _text_part(text)
    if attachments:
        boundary = f"mb-{uuid.uuid4().hex}"
        fields.append(("Content-Type", f'multipart/mixed; boundary="{boundary}"'))
        parts = [text_part] + [_attachment_part(a) for a in attachments]
        sep = f"--{boundary}\r\n".encode()
        body = b"".join(sep + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
        raw = b"".join(_header(name, value) for name, value in fields) + b"\r\n" + body
    else:
        raw = b"".join(_header(name, value) for name, value in fields) + text_part
    return Outgoing(
        message_id=message_id,
        envelope_from=from_addr,
        recipients=(to_addr,),
        subject=subject,
        raw=raw,
    )
