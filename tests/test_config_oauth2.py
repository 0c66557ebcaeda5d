"""bridge.config: auth = "oauth2" for IMAP and SMTP, the [accounts.*.oauth2] tables (issue 15)."""

from __future__ import annotations

from typing import Any

import pytest
from test_config import A1, MARK, Mutation, both, drop, error_of, mutated, parse, put

from bridge.config import Secret

UK = "accounts.1"
MICROSOFT = {"provider": "microsoft", "tenant": "acme.onmicrosoft.com", "client_id": "app-id",
             "refresh_token_env": "UK_REFRESH"}
ENV = {"UK_IMAP_PASSWORD": f"imap-uk-{MARK}", "UK_REFRESH": f"refresh-{MARK}", "UK_SECRET": f"cs-{MARK}"}


def oauth2_uk(**oauth2: Any) -> Mutation:
    """The second account logs in to IMAP with OAuth2 (and SMTP follows, by default)."""
    return both(drop(f"{UK}.imap.password_env"), put(f"{UK}.imap.auth", "oauth2"),
                put(f"{UK}.imap.oauth2", {**MICROSOFT, **oauth2}))


def test_oauth2_imap_and_smtp_share_the_client_and_have_no_password() -> None:
    uk = parse(mutated(oauth2_uk()), ENV).accounts[1]
    assert uk.imap.auth == uk.smtp.auth == "oauth2"
    assert uk.imap.oauth2 is not None and uk.smtp.oauth2 == uk.imap.oauth2
    assert uk.imap.password == uk.smtp.password == Secret("", "none")
    assert uk.smtp.username == "seller@acme-uk.example"
    o = uk.imap.oauth2
    assert o.token_url == "https://login.microsoftonline.com/acme.onmicrosoft.com/oauth2/v2.0/token"
    assert o.scopes == ("https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send",
                        "offline_access")
    assert o.refresh_token == Secret(f"refresh-{MARK}", "env:UK_REFRESH")
    assert o.client_secret.source == "none"


@pytest.mark.parametrize(("provider", "url", "scopes"), [
    ("google", "https://oauth2.googleapis.com/token", ("https://mail.google.com/",)),
    ("", "https://sso.example/token", ()),
    ("", "http://127.0.0.1:8080/token", ()),            # plain http on loopback: a local test server
])
def test_token_url_and_scopes_default_to_the_providers(provider: str, url: str, scopes: tuple[str, ...]) -> None:
    given = {"provider": provider, "client_id": "c"} | ({"token_url": url} if not provider else {})
    uk = parse(mutated(both(oauth2_uk(), put(f"{UK}.imap.oauth2", given))), ENV).accounts[1]
    assert uk.imap.oauth2 is not None
    assert (uk.imap.oauth2.token_url, uk.imap.oauth2.scopes) == (url, scopes)


def test_a_separate_smtp_client() -> None:
    smtp_client = {"provider": "microsoft", "client_id": "send-only", "client_secret_env": "UK_SECRET"}
    uk = parse(mutated(both(oauth2_uk(), put(f"{UK}.smtp.oauth2", smtp_client))), ENV).accounts[1]
    assert uk.smtp.oauth2 is not None and uk.smtp.oauth2.client_id == "send-only"
    assert uk.smtp.oauth2.client_secret == Secret(f"cs-{MARK}", "env:UK_SECRET")
    assert uk.imap.oauth2 is not None and uk.imap.oauth2.client_id == "app-id"


def test_smtp_may_keep_a_password_while_imap_uses_oauth2() -> None:
    uk = parse(mutated(both(oauth2_uk(), put(f"{UK}.smtp.auth", "password"),
                            put(f"{UK}.smtp.password_env", "UK_IMAP_PASSWORD"))), ENV).accounts[1]
    assert (uk.imap.auth, uk.smtp.auth, uk.smtp.oauth2) == ("oauth2", "password", None)


OAUTH2_ERRORS: list[tuple[str, Mutation, str]] = [
    ("oauth2 without its table", both(drop(f"{UK}.imap.password_env"), put(f"{UK}.imap.auth", "oauth2")),
     f'{A1}.imap.auth: is "oauth2" but there is no [accounts.imap.oauth2] table'),
    ("a password with oauth2", both(oauth2_uk(), put(f"{UK}.imap.password_env", "UK_IMAP_PASSWORD")),
     f'{A1}.imap.password_env: is set but auth = "oauth2" logs in with an access token'),
    ("a table with password auth", put(f"{UK}.imap.oauth2", MICROSOFT),
     f'{A1}.imap.auth: is "password" but [accounts.imap.oauth2] is given'),
    ("neither password nor oauth2", drop(f"{UK}.imap.password_env"),
     f'{A1}.imap.password_file: no password given; set exactly one of password_file'),
    ("no client id", both(oauth2_uk(), drop(f"{UK}.imap.oauth2.client_id")),
     f"{A1}.imap.oauth2.client_id: missing; required"),
    ("generic without token_url", oauth2_uk(provider=""),
     f"{A1}.imap.oauth2.token_url: missing; with provider = \"\""),
    ("plain http elsewhere", oauth2_uk(provider="", token_url="http://sso.example/token"),
     f"{A1}.imap.oauth2.token_url: got \"http://sso.example/token\"; the token endpoint receives the client "
     "secret and refresh token, so https is required"),
    ("unknown provider", oauth2_uk(provider="yahoo"),
     f'{A1}.imap.oauth2.provider: got "yahoo"; expected one of "microsoft", "google", ""'),
    ("tenant for google", oauth2_uk(provider="google"),
     f'{A1}.imap.oauth2.tenant: is only used with provider = "microsoft"'),
    ("bad tenant", oauth2_uk(tenant="a b"), f"{A1}.imap.oauth2.tenant: got \"a b\"; expected \"common\""),
    ("two refresh tokens", oauth2_uk(refresh_token="x"),
     f"{A1}.imap.oauth2.refresh_token: set only one of refresh_token_env, refresh_token"),
    ("unknown oauth2 key", oauth2_uk(clientid="x"), f"{A1}.imap.oauth2.clientid: unknown key; did you mean"),
    ("smtp oauth2 with nothing to use", both(put(f"{UK}.smtp.auth", "oauth2")),
     f'{A1}.smtp.auth: is "oauth2" but neither [accounts.smtp.oauth2] nor [accounts.imap.oauth2]'),
    ("smtp inherits oauth2 without a password", both(oauth2_uk(), put(f"{UK}.smtp.auth", "password")),
     f"{A1}.smtp.password_file: no password given; set exactly one of password_file"),
    ("smtp oauth2 without a user", both(oauth2_uk(), put(f"{UK}.smtp.username", "")),
     f'{A1}.smtp.username: is "" but auth = "oauth2" logs in as a user'),
]


@pytest.mark.parametrize(("label", "mutation", "expected"), OAUTH2_ERRORS, ids=[c[0] for c in OAUTH2_ERRORS])
def test_oauth2_problems_say_what_to_do(label: str, mutation: Mutation, expected: str) -> None:
    message = error_of(mutated(mutation), ENV)
    assert expected in message
    assert MARK not in message


def test_oauth2_secrets_never_print() -> None:
    uk = parse(mutated(oauth2_uk(client_secret_env="UK_SECRET")), ENV).accounts[1]
    assert MARK not in repr(uk) and MARK not in str(uk)
