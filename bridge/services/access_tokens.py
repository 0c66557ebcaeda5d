"""Access tokens for one OAuth2 login, refreshed before they expire; the newest refresh token in the database.

One :class:`AccessTokens` per grant ("<account>" for the IMAP client, which SMTP
shares unless it has its own, "<account>:smtp"), shared by every connection of
the account in this process: the ingest thread, the outbox's SMTP logins and its
IMAP sessions. It is a :data:`~bridge.adapters.oauth2.TokenProvider`.

- The access token is kept in memory and refreshed when it is about to expire
  (:func:`bridge.domain.oauth2.needs_refresh`) or when a server refused it.
- The refresh token is read from the database for every refresh and the rotated
  one written back conditionally (compare and set), so another process that
  refreshed meanwhile (``check-config --connect``, a second daemon) is noticed:
  an ``invalid_grant`` for a token that is no longer the newest is retried once
  with the newest.
- The configured refresh token only seeds the row; a different one in the file
  (its fingerprint differs) seeds it again.
- ``invalid_grant`` for the newest token marks the grant revoked: one error in
  the log and one staff alert (the transition happens once), and from then on no
  request reaches the provider until a new token is authorized or configured.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable

from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.adapters import oauth2 as endpoint
from bridge.adapters.oauth2 import TokenUnavailable
from bridge.config import AccountSettings, OAuth2Settings
from bridge.domain.clock import Clock, utcnow
from bridge.domain.oauth2 import AccessToken, TokenGrant, TokenRefused, fingerprint, needs_refresh, next_refresh_token

log = logging.getLogger(__name__)

#: Called in the transaction that marks a grant revoked: (connection, what to tell staff, now).
OnRevoked = Callable[[Connection, str, datetime], None]
Refresh = Callable[[OAuth2Settings, str, datetime, float], TokenGrant]

TOKEN_TIMEOUT_SECONDS = 30.0


def grant_name(account: str, smtp: bool = False) -> str:
    """The database key of an account's IMAP grant, or of its separate SMTP grant."""
    return f"{account}:smtp" if smtp else account


def smtp_has_own_grant(acct: AccountSettings) -> bool:
    """Whether SMTP logs in with an OAuth2 client of its own (else it shares the IMAP one)."""
    return acct.smtp.auth == "oauth2" and acct.smtp.oauth2 is not None and acct.smtp.oauth2 != acct.imap.oauth2


def authorize_command(account: str, smtp: bool) -> str:
    return f"mailbridge oauth2 authorize --account {account}" + (" --smtp" if smtp else "")


class AccessTokens:
    """The access tokens of one OAuth2 login; call it (``tokens(force_refresh)``) for one. Thread-safe."""

    def __init__(self, engine: Engine, account: str, settings: OAuth2Settings, *, smtp: bool = False,
                 clock: Clock = utcnow, on_revoked: OnRevoked | None = None, refresh: Refresh = endpoint.refresh,
                 timeout: float = TOKEN_TIMEOUT_SECONDS) -> None:
        self.engine = engine
        self.account = account
        self.settings = settings
        self.smtp = smtp
        self.grant = grant_name(account, smtp)
        self.clock = clock
        self.on_revoked = on_revoked
        self._refresh = refresh
        self.timeout = timeout
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self.refreshes = 0           # successful refreshes by this object, for tests and status

    def __call__(self, force_refresh: bool = False) -> str:
        with self._lock:
            now = self.clock()
            # needs_refresh is true for no token; asking `is None` first lets mypy see it too.
            if force_refresh or self._token is None or needs_refresh(self._token, now):
                self._token = None
                self._token = self._new_token(now)
            return self._token.value

    # -- refreshing ------------------------------------------------------------

    def _new_token(self, now: datetime) -> AccessToken:
        for attempt in (1, 2):
            used = self._newest_refresh_token(now)
            try:
                grant = self._refresh(self.settings, used, now, self.timeout)
            except TokenRefused as exc:
                if exc.revoked and attempt == 1 and self._rotated_elsewhere(used):
                    continue    # another process refreshed with it meanwhile: use the token it stored
                raise self._unavailable(exc, used, now) from None
            self._keep(used, next_refresh_token(used, grant), now)
            self.refreshes += 1
            log.info("account %s: new OAuth2 access token (%s), valid until %s", self.account, self.grant,
                     f"{grant.access.expires_at:%H:%M:%S}")
            return grant.access
        raise AssertionError("unreachable")

    def _newest_refresh_token(self, now: datetime) -> str:
        seed = self.settings.refresh_token.reveal()
        seed_print = fingerprint(seed) if seed else None
        with self.engine.begin() as conn:
            state = store.grant_state(conn, self.grant)
            if seed and (state is None or state.seed != seed_print):
                store.seed_grant(conn, self.grant, self.account, seed, seed_print, now)
                return seed
        if state is None:
            raise TokenUnavailable(
                f"account {self.account}: no OAuth2 refresh token yet; run `{authorize_command(self.account, self.smtp)}`"
                f" (or set {self._key('refresh_token_file')})", permanent=True)
        if state.revoked_at is not None:
            raise TokenUnavailable(self._revoked_text(state.revoked_reason or "invalid_grant"), permanent=True,
                                   revoked=True)
        return state.refresh_token

    def _rotated_elsewhere(self, used: str) -> bool:
        with self.engine.begin() as conn:
            state = store.grant_state(conn, self.grant)
        return state is not None and state.revoked_at is None and state.refresh_token != used

    def _keep(self, used: str, newest: str, now: datetime) -> None:
        if newest == used:
            return
        with self.engine.begin() as conn:
            kept = store.rotate_refresh_token(conn, self.grant, used, newest, now)
        if not kept:
            # Another process stored a token after ours was read: the provider accepted ours, so
            # the one stored may already be dead. Ours is the one known to be newest now.
            with self.engine.begin() as conn:
                state = store.grant_state(conn, self.grant)
                store.seed_grant(conn, self.grant, self.account, newest, state.seed if state else None, now)

    def _unavailable(self, exc: TokenRefused, used: str, now: datetime) -> TokenUnavailable:
        if exc.revoked:
            reason = f"invalid_grant: {exc.description}" if exc.description else "invalid_grant"
            text = self._revoked_text(reason)
            with self.engine.begin() as conn:
                if store.revoke_grant(conn, self.grant, used, reason[:500], now):
                    log.error("%s", text)
                    if self.on_revoked is not None:
                        self.on_revoked(conn, text, now)
            return TokenUnavailable(text, permanent=True, revoked=True)
        if exc.transient:
            return TokenUnavailable(f"account {self.account}: cannot get an OAuth2 access token: {exc}; "
                                    "trying again later", permanent=False)
        return TokenUnavailable(
            f"account {self.account}: the OAuth2 token endpoint {self.settings.token_url} refused the client "
            f"({exc}); check client_id, the client secret and scopes in {self._table()}", permanent=True)

    def _revoked_text(self, reason: str) -> str:
        return (f"account {self.account}: the OAuth2 grant for {'SMTP' if self.smtp else 'the mailbox'} was revoked "
                f"or has expired ({reason}): consent withdrawn, password changed, or the refresh token unused "
                "for too long. mailbridge stopped logging in for this account; the other accounts go on. To resume, "
                f"run `{authorize_command(self.account, self.smtp)}` (picked up within 5 minutes, no restart) or "
                f"put a new refresh token in {self._key('refresh_token_file')} and restart")

    def _table(self) -> str:
        return f"[accounts.{'smtp' if self.smtp else 'imap'}.oauth2] of account {self.account}"

    def _key(self, name: str) -> str:
        return f"{name} of {self._table()}"
