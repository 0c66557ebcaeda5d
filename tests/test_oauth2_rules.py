"""bridge.domain.oauth2: token answers, when to refresh, rotation, PKCE. Tables of cases."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from bridge.domain.oauth2 import (
    AccessToken,
    TokenGrant,
    TokenRefused,
    msal_scopes,
    needs_refresh,
    next_refresh_token,
    parse_token_response,
    pkce_pair,
    token_url,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def token(lifetime: float) -> AccessToken:
    return AccessToken("at", NOW, at(lifetime))


@pytest.mark.parametrize(("current", "now", "refresh"), [
    (None, NOW, True),                          # none yet
    (token(3600), at(0), False),
    (token(3600), at(3539), False),             # more than a minute left
    (token(3600), at(3540), True),              # a minute before expiry: refresh now
    (token(3600), at(4000), True),              # expired
    (token(8), at(5), False),                   # short-lived: a quarter of its life as margin
    (token(8), at(6), True),
    (token(8), at(9), True),
])
def test_when_to_refresh(current: AccessToken | None, now: datetime, refresh: bool) -> None:
    assert needs_refresh(current, now) is refresh


def answer(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(("body", "lifetime", "rotated"), [
    (answer(access_token="AT-x1", token_type="Bearer", expires_in=3599, refresh_token="r2"), 3599, "r2"),
    (answer(access_token="AT-x1", token_type="bearer", expires_in="3599"), 3599, None),   # a string, no rotation
    (answer(access_token="AT-x1"), 300, None),                                           # no expires_in: assume 5 min
    (answer(access_token="AT-x1", expires_in=0, refresh_token=""), 300, None),
])
def test_a_successful_answer(body: bytes, lifetime: int, rotated: str | None) -> None:
    grant = parse_token_response(200, body, NOW)
    assert grant.access.value == "AT-x1" and grant.access.expires_at == at(lifetime)
    assert grant.refresh_token == rotated
    assert "AT-x1" not in repr(grant) and "r2" not in repr(grant)      # tokens never print


@pytest.mark.parametrize(("status", "body", "error", "revoked", "transient", "operator"), [
    (400, answer(error="invalid_grant", error_description="AADSTS700082: expired\nTrace ID: x"), "invalid_grant",
     True, False, True),
    (401, answer(error="invalid_client"), "invalid_client", False, False, True),
    (400, answer(error="invalid_scope"), "invalid_scope", False, False, True),
    (503, answer(error="temporarily_unavailable"), "temporarily_unavailable", False, True, False),
    (429, answer(error="slow_down"), "slow_down", False, True, False),
    (502, b"<html>bad gateway</html>", "bad_response", False, True, False),
    (200, answer(token_type="Bearer"), "bad_response", False, True, False),           # no access token
    (200, answer(access_token="AT-x1", token_type="mac"), "bad_response", False, False, False),
])
def test_a_refusal(status: int, body: bytes, error: str, revoked: bool, transient: bool, operator: bool) -> None:
    with pytest.raises(TokenRefused) as info:
        parse_token_response(status, body, NOW)
    assert (info.value.error, info.value.revoked, info.value.transient, info.value.needs_operator) == \
        (error, revoked, transient, operator)
    assert "\n" not in str(info.value)                 # one line for the log


@pytest.mark.parametrize(("used", "sent", "kept"), [
    ("r1", "r2", "r2"),       # rotated: the old one is dead, keep the new one
    ("r1", None, "r1"),       # not rotated: the old one stays valid (RFC 6749 section 6)
])
def test_rotation(used: str, sent: str | None, kept: str) -> None:
    assert next_refresh_token(used, TokenGrant(token(60), sent)) == kept


def test_pkce_is_rfc_7636_s256() -> None:
    # RFC 7636 appendix B's example.
    verifier, challenge = pkce_pair(bytes([116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
                                           22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121]))
    assert verifier == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    with pytest.raises(ValueError):
        pkce_pair(b"short")


@pytest.mark.parametrize(("provider", "tenant", "url"), [
    ("microsoft", "common", "https://login.microsoftonline.com/common/oauth2/v2.0/token"),
    ("microsoft", "acme.onmicrosoft.com", "https://login.microsoftonline.com/acme.onmicrosoft.com/oauth2/v2.0/token"),
    ("google", "common", "https://oauth2.googleapis.com/token"),
    ("", "common", ""),
])
def test_provider_endpoints(provider: str, tenant: str, url: str) -> None:
    assert token_url(provider, tenant) == url


def test_msal_gets_no_reserved_scopes() -> None:
    assert msal_scopes(("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access", "openid")) == \
        ["https://outlook.office.com/IMAP.AccessAsUser.All"]
