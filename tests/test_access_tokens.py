"""services/access_tokens.py against the local OAuth2 server (real HTTP, strict rotation), with an injected clock;
and the SMTP adapter's XOAUTH2 login against the sandbox SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from bridgekit import Clock, rows
from oauth2server import OAuth2TestServer

from bridge import store
from bridge.adapters import oauth2 as endpoint
from bridge.adapters.oauth2 import TokenUnavailable
from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.config import OAuth2Settings, Secret, SmtpSettings
from bridge.domain.oauth2 import TokenGrant
from bridge.sandbox import SandboxSMTP
from bridge.services.access_tokens import AccessTokens
from bridge.store.engine import open_database

USER = "seller@acme.example"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[OAuth2TestServer]:
    server = OAuth2TestServer(lifetime=3600, clock=lambda: clock.now.timestamp()).start()
    yield server
    server.stop()


def client(server: OAuth2TestServer, seed: str = "") -> OAuth2Settings:
    return OAuth2Settings(token_url=f"{server.url}/token", client_id=server.client_id,
                          refresh_token=Secret(seed, "inline") if seed else Secret("", "none"))


def test_tokens_are_reused_until_they_near_expiry(tmp_path: Path, server: OAuth2TestServer, clock: Clock) -> None:
    tokens = AccessTokens(open_database(f"sqlite:///{tmp_path}/db"), "acme", client(server, server.grant(USER)),
                          clock=clock)
    first = tokens()
    clock.advance(3500)
    assert tokens() == first and server.refreshes == 1
    clock.advance(60)                                   # within a minute of expiry
    assert tokens() != first and server.refreshes == 2
    assert tokens(True) not in (first,) and server.refreshes == 3   # forced: the server refused the last one


def test_a_refresh_another_process_made_meanwhile_is_picked_up(tmp_path: Path, server: OAuth2TestServer,
                                                                clock: Clock) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/db")
    settings = client(server, server.grant(USER))
    other = AccessTokens(engine, "acme", settings, clock=clock)       # e.g. check-config --connect
    other()                                                           # seeds and rotates once

    def racing(s: OAuth2Settings, used: str, now: datetime, timeout: float) -> TokenGrant:
        if not raced:
            raced.append(True)
            other(True)          # the other process rotates between our read and our request
        return endpoint.refresh(s, used, now, timeout)

    raced: list[bool] = []
    ours = AccessTokens(engine, "acme", settings, clock=clock, refresh=racing)
    assert ours() and server.refused == ["invalid_grant"]             # its first try used a dead token
    (grant,) = rows(engine, store.OAUTH2_GRANT)
    assert grant.revoked_at is None                                   # not mistaken for a revocation


def test_a_new_seed_in_the_file_starts_again_and_authorize_lifts_a_revocation(
        tmp_path: Path, server: OAuth2TestServer, clock: Clock) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/db")
    tokens = AccessTokens(engine, "acme", client(server, server.grant(USER)), clock=clock)
    tokens()
    server.revoke_grant(USER)
    with pytest.raises(TokenUnavailable) as info:
        tokens(True)
    assert info.value.revoked and info.value.permanent
    with pytest.raises(TokenUnavailable):
        tokens(True)
    assert server.refused == ["invalid_grant"]                        # the second try asked nobody
    # The operator configures a new refresh token: it seeds the grant again.
    assert AccessTokens(engine, "acme", client(server, server.grant(USER)), clock=clock)()
    # Or `mailbridge oauth2 authorize` stores one while the daemon runs: no restart needed.
    server.revoke_grant(USER)
    with pytest.raises(TokenUnavailable):
        tokens(True)
    seed = rows(engine, store.OAUTH2_GRANT)[0].seed
    with engine.begin() as conn:
        store.seed_grant(conn, "acme", "acme", server.grant(USER), seed, clock())
    assert tokens(True)


@pytest.mark.parametrize(("case", "permanent", "words"), [
    ("no refresh token", True, "run `mailbridge oauth2 authorize --account acme`"),
    ("server down", False, "trying again later"),
    ("wrong client", True, "refused the client"),
])
def test_what_an_unavailable_token_says(tmp_path: Path, server: OAuth2TestServer, clock: Clock, case: str,
                                        permanent: bool, words: str) -> None:
    settings = client(server, "" if case == "no refresh token" else server.grant(USER))
    if case == "server down":
        settings = replace(settings, token_url="http://127.0.0.1:9/token")
    if case == "wrong client":
        settings = replace(settings, client_id="someone-else")
    tokens = AccessTokens(open_database(f"sqlite:///{tmp_path}/db"), "acme", settings, clock=clock)
    with pytest.raises(TokenUnavailable) as info:
        tokens()
    assert info.value.permanent is permanent and not info.value.revoked
    assert words in str(info.value)


def test_smtp_xoauth2_replaces_a_refused_token_once(server: OAuth2TestServer) -> None:
    good = server.grant(USER)
    access = endpoint.refresh(client(server), good, datetime.now(), 10).access.value
    asked: list[bool] = []

    def tokens(fresh: bool) -> str:
        asked.append(fresh)
        return access if fresh else "at-revoked-long-ago"

    with SandboxSMTP(None, bearer=server.bearer_ok) as smtp:
        settings = SmtpSettings(host="127.0.0.1", port=smtp.port, security="none", username=USER, auth="oauth2")
        asyncio.run(SmtpConnection(settings, tokens).check_login())
        assert asked == [False, True]
        with pytest.raises(SendError) as info:
            asyncio.run(SmtpConnection(settings, lambda fresh: "at-bad").check_login())
        assert info.value.permanent and info.value.connection
        assert "SMTP send scope" in str(info.value) and "at-bad" not in str(info.value)
