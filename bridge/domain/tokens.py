"""Signed reply tokens and our origin header (pure).

A reply token names one conversation of one account and is HMAC-signed, so
only mail that answers a notification we sent can reach a buyer. It is short
enough for an address local part (RFC 5321 4.5.3.1.1: 64 octets):
``<conversation id in base36>-<10 base32 chars of HMAC-SHA256>``, e.g.
``seller+2s-k3jd8x0qma@acme.example``. 50 bits of MAC make guessing hopeless
at any rate a mail server accepts.
"""

from __future__ import annotations

import base64
import hmac
import re

_TOKEN_RE = re.compile(r"^([0-9a-z]{1,12})-([a-z2-7]{10})$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int) -> str:
    if n < 0:
        raise ValueError("conversation ids are positive")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def _mac(secret: bytes, purpose: str, account: str, value: str, length: int) -> str:
    digest = hmac.digest(secret, f"{purpose}\0{account}\0{value}".encode(), "sha256")
    # base32 turns each 5 bytes into 8 characters on its own, so encoding only the
    # 5-byte groups that hold the first ``length`` characters gives the same prefix.
    groups = -(-length // 8) * 5
    return base64.b32encode(digest[:groups]).decode("ascii").lower()[:length]


def make_reply_token(secret: bytes, account: str, conversation_id: int) -> str:
    return f"{_b36(conversation_id)}-{_mac(secret, 'reply', account, str(conversation_id), 10)}"


def verify_reply_token(secret: bytes, account: str, token: str) -> int | None:
    """Return the conversation id the token names for ``account``, or None.

    Constant-time comparison; a token made for another account never verifies.
    """
    m = _TOKEN_RE.match(token.strip().lower())
    if m is None:
        return None
    conv_id = int(m.group(1), 36)
    expected = _mac(secret, "reply", account, str(conv_id), 10)
    return conv_id if hmac.compare_digest(expected, m.group(2)) else None


def reply_address(pattern: str, token: str) -> str:
    """``seller+{token}@acme.example`` -> the address for one token."""
    return pattern.replace("{token}", token)


def make_origin(secret: bytes, account: str, message_id: str) -> str:
    """Value of our ``X-Mailbridge-Origin`` header: proves a message is ours."""
    return f"{account}; {_mac(secret, 'origin', account, message_id, 16)}"


def verify_origin(secret: bytes, header_value: str, message_id: str | None, account: str) -> bool:
    """True when ``header_value`` is an origin header this ``account`` made for ``message_id``.

    Never raises on odd input (non-ASCII, garbage): a forged header is just not ours.
    """
    if not header_value or not message_id:
        return False
    named, _, mac = header_value.partition(";")
    if named.strip() != account:
        return False
    expected = _mac(secret, "origin", account, message_id, 16).encode("ascii")
    return hmac.compare_digest(expected, mac.strip().encode("utf-8", "surrogateescape"))
