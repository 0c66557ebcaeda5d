"""OAuth2 for mailbox logins, the pure part: the providers, token responses, when to refresh.

Microsoft 365 and Google Workspace take no passwords over IMAP and SMTP for
most accounts: a client logs in with SASL XOAUTH2 and a short-lived access
token, which it gets from the provider's token endpoint with a refresh token
(RFC 6749 section 6). Providers rotate refresh tokens: a refresh answer may
carry a new one, and then the old one stops working (Microsoft does this on
every refresh). What to do with each answer is decided here, from values and a
clock passed in; the HTTP request, the database and the logins live elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Scopes every provider reserves for itself: they ask for a refresh token or an ID token,
#: not for mail (msal refuses them in its scope lists and adds them itself).
RESERVED_SCOPES = frozenset({"offline_access", "openid", "profile"})


@dataclass(frozen=True)
class Provider:
    """What mailbridge knows about one provider's OAuth2 endpoints."""

    name: str
    token_url: str            # "{tenant}" is replaced by the configured tenant
    authorize_url: str        # the browser's start page (loopback flow)
    scopes: tuple[str, ...]   # IMAP and SMTP send, plus what a refresh token needs
    flow: str                 # how `mailbridge oauth2 authorize` gets the first refresh token


PROVIDERS: dict[str, Provider] = {
    # Microsoft identity platform v2.0; IMAP.AccessAsUser.All and SMTP.Send are scopes of
    # the Exchange Online resource (outlook.office.com), offline_access asks for a refresh token.
    "microsoft": Provider(
        "microsoft",
        token_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        authorize_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        scopes=("https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send",
                "offline_access"),
        flow="device-code"),
    # Google: one scope covers IMAP and SMTP; refresh tokens come with access_type=offline.
    "google": Provider(
        "google",
        token_url="https://oauth2.googleapis.com/token",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        scopes=("https://mail.google.com/",),
        flow="loopback"),
}


def token_url(provider: str, tenant: str) -> str:
    """The token endpoint of a known provider ("" for a generic one)."""
    known = PROVIDERS.get(provider)
    return known.token_url.replace("{tenant}", tenant) if known else ""


def default_scopes(provider: str) -> tuple[str, ...]:
    known = PROVIDERS.get(provider)
    return known.scopes if known else ()


# --------------------------------------------------------------------------
# Token responses (RFC 6749 sections 5.1 and 5.2)
# --------------------------------------------------------------------------

#: Errors a new refresh token cures: the grant itself is gone (consent revoked, password
#: changed, token expired or already used). Everything the account does stops until then.
REVOKED_ERRORS = frozenset({"invalid_grant"})
#: Errors of the client's own registration: a person must fix the configuration.
CONFIG_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type",
                           "invalid_request"})

# An answer without expires_in: RFC 6749 leaves the lifetime to the server; assume short.
DEFAULT_LIFETIME = timedelta(seconds=300)


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops working. Never printed."""

    value: str = field(repr=False)
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class TokenGrant:
    """A successful token answer. ``refresh_token``: the new one when the server rotated it."""

    access: AccessToken
    refresh_token: str | None = field(default=None, repr=False)


class TokenRefused(Exception):
    """The token endpoint said no (an RFC 6749 error answer), or answered nonsense.

    ``error`` is the RFC 6749 error code ("invalid_grant"), ``description`` the server's
    words; neither holds a token. ``transient``: worth trying again later (5xx, garbage).
    """

    def __init__(self, error: str, description: str = "", *, transient: bool = False) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.transient = transient

    @property
    def revoked(self) -> bool:
        """The refresh token is no good any more: only a new authorization helps."""
        return self.error in REVOKED_ERRORS

    @property
    def needs_operator(self) -> bool:
        return self.revoked or self.error in CONFIG_ERRORS


def parse_token_response(status: int, body: bytes, now: datetime) -> TokenGrant:
    """A token endpoint's answer -> :class:`TokenGrant`; raises :class:`TokenRefused`.

    The server's error description is kept (it names the problem, never a token);
    nothing of a successful body but the fields below is kept.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise TokenRefused("bad_response", f"HTTP {status}, not a JSON object", transient=True)
    if status != 200 or "error" in data:
        error = str(data.get("error") or f"http_{status}")
        lines = str(data.get("error_description") or "").splitlines()
        raise TokenRefused(error, lines[0] if lines else "", transient=status >= 500 or status == 429)
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenRefused("bad_response", "the answer has no access_token", transient=True)
    token_type = str(data.get("token_type", "bearer")).lower()
    if token_type != "bearer":
        raise TokenRefused("bad_response", f"token_type {token_type!r}, expected Bearer")
    lifetime = DEFAULT_LIFETIME
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():   # Microsoft once sent strings
        expires_in = int(expires_in)
    if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = timedelta(seconds=expires_in)
    refresh = data.get("refresh_token")
    return TokenGrant(AccessToken(access, now, now + lifetime),
                      refresh if isinstance(refresh, str) and refresh else None)


# --------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------

#: Refresh this long before the expiry at most (a login takes a round trip or two)...
REFRESH_MARGIN = timedelta(seconds=60)


def refresh_margin(token: AccessToken) -> timedelta:
    """...and a quarter of the token's lifetime at most, so short-lived tokens are used too."""
    return min(REFRESH_MARGIN, (token.expires_at - token.issued_at) / 4)


def needs_refresh(token: AccessToken | None, now: datetime) -> bool:
    """Whether to ask for a new access token before logging in with this one."""
    return token is None or now >= token.expires_at - refresh_margin(token)


def next_refresh_token(used: str, grant: TokenGrant) -> str:
    """The refresh token to keep after a refresh with ``used``.

    RFC 6749 section 6: the server MAY issue a new refresh token, and then the
    client MUST discard the old one; without a new one the old one stays valid.
    """
    return grant.refresh_token or used


def fingerprint(secret: str) -> str:
    """A stable, non-reversible name for a secret, to notice that the configured one changed."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:32]


def pkce_pair(random_bytes: bytes) -> tuple[str, str]:
    """RFC 7636: (code_verifier, S256 code_challenge) from 32+ random bytes."""
    if len(random_bytes) < 32:
        raise ValueError("PKCE needs at least 32 random bytes")
    verifier = base64.urlsafe_b64encode(random_bytes).rstrip(b"=").decode("ascii")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    return verifier, challenge.decode("ascii")


def msal_scopes(scopes: tuple[str, ...]) -> list[str]:
    """The scopes to hand msal: it adds the reserved ones itself and refuses them in the list."""
    return [s for s in scopes if s not in RESERVED_SCOPES]
