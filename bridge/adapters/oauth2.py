"""The OAuth2 token endpoint over HTTPS, and how the IMAP and SMTP logins ask for access tokens.

Why a small standard-library client and not a library: what mailbridge needs at
run time is the refresh grant (RFC 6749 section 6), one form POST, for three
kinds of server (Microsoft, Google, any other), and the answer's rotated refresh
token must reach our database. msal covers Microsoft only and keeps refresh
tokens in its own cache (its ``acquire_token_by_refresh_token`` is documented
as a migration aid); google-auth covers Google only; the generic server needs a
client anyway. One client for all three keeps the rotation rules in one place
(:mod:`bridge.domain.oauth2`). msal is used where it saves real work: the
device code flow of ``mailbridge oauth2 authorize`` (:mod:`bridge.cli.oauth2`).

Nothing here logs: the request holds the client secret and a refresh token,
the answer an access token and perhaps a new refresh token.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from typing import Callable
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import Request, urlopen

from bridge.config import OAuth2Settings
from bridge.domain.oauth2 import TokenGrant, TokenRefused, parse_token_response

#: What an IMAP or SMTP login calls for an access token: ``tokens(force_refresh)``.
#: ``force_refresh``: the server refused the last one, get a new one whatever its expiry.
#: Raises :class:`TokenUnavailable`.
TokenProvider = Callable[[bool], str]

# A token answer is a few KiB; a server sending more is not a token endpoint.
MAX_ANSWER_BYTES = 1024 * 1024


class TokenUnavailable(Exception):
    """No access token can be had. ``permanent``: a person must act (the message says what);
    ``revoked``: the refresh token is no good any more (invalid_grant): re-authorize."""

    def __init__(self, message: str, *, permanent: bool, revoked: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.revoked = revoked


def post_form(url: str, fields: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """POST ``fields`` form-encoded to ``url``; (HTTP status, body). Raises TokenRefused when
    the server cannot be reached (transient). Certificates are verified (https)."""
    request = Request(url, data=urlencode(fields).encode("ascii"), method="POST",
                      headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    context = ssl.create_default_context() if url.startswith("https:") else None
    try:
        with urlopen(request, timeout=timeout, context=context) as answer:
            return int(answer.status), answer.read(MAX_ANSWER_BYTES)
    except HTTPError as exc:         # 4xx/5xx: RFC 6749 errors come as 400 with a JSON body
        with exc:
            return exc.code, exc.read(MAX_ANSWER_BYTES)
    except (URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, URLError) else exc
        raise TokenRefused("unreachable", f"cannot reach the token endpoint {urlsplit(url).netloc}: {reason}",
                           transient=True) from None


def _client_fields(settings: OAuth2Settings) -> dict[str, str]:
    fields = {"client_id": settings.client_id}
    secret = settings.client_secret.reveal()
    if secret:   # client_secret_post (RFC 6749 2.3.1): what Microsoft and Google document
        fields["client_secret"] = secret
    return fields


def refresh(settings: OAuth2Settings, refresh_token: str, now: datetime, timeout: float) -> TokenGrant:
    """The refresh grant: a new access token (and perhaps a new refresh token). Raises TokenRefused."""
    fields = {"grant_type": "refresh_token", "refresh_token": refresh_token, **_client_fields(settings)}
    # Microsoft's v2 endpoint wants the scopes again (the token is for one resource); Google's
    # refresh grant takes none (the grant keeps the consented scopes), so none is sent there.
    if settings.scopes and settings.provider != "google":
        fields["scope"] = " ".join(settings.scopes)
    status, body = post_form(settings.token_url, fields, timeout)
    return parse_token_response(status, body, now)


def exchange_code(settings: OAuth2Settings, code: str, verifier: str, redirect_uri: str, now: datetime,
                  timeout: float) -> TokenGrant:
    """The authorization code grant with PKCE (RFC 7636), for the loopback flow. Raises TokenRefused."""
    fields = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
              "redirect_uri": redirect_uri, **_client_fields(settings)}
    status, body = post_form(settings.token_url, fields, timeout)
    return parse_token_response(status, body, now)
