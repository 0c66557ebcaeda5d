"""``mailbridge oauth2 authorize --account NAME [--smtp]``: get an account's first refresh token.

- Microsoft: the device code flow through msal (prints a code and a URL to open on any
  device, polls until the user has signed in). The app registration must allow public
  client flows.
- Google, and any OAuth2 server given ``--authorize-url``: the authorization code flow
  with PKCE (RFC 7636) and a loopback redirect to 127.0.0.1 (RFC 8252), the way Google
  documents it for installed apps. A small standard-library client, not
  google-auth-oauthlib: that would add requests-oauthlib and google-auth to the
  installation for one redirect and one POST, and it could not serve the generic case.

The refresh token goes into the database (never printed); the daemon picks it up at
its next login attempt, without a restart.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from bridge import store
from bridge.adapters.oauth2 import exchange_code
from bridge.cli.settings import load, open_store
from bridge.config import AccountSettings, OAuth2Settings
from bridge.domain.oauth2 import PROVIDERS, TokenRefused, fingerprint, msal_scopes, pkce_pair
from bridge.services.access_tokens import grant_name, smtp_has_own_grant

LOOPBACK_TIMEOUT_SECONDS = 300.0


class AuthorizeError(Exception):
    """The authorization did not give a refresh token; the message says why and what to do."""


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    try:
        acct = settings.account(args.account)
    except KeyError:
        print(f"mailbridge: no account {args.account!r} in {settings.path}; accounts: "
              f"{', '.join(a.name for a in settings.accounts)}", file=sys.stderr)
        return 2
    try:
        client = _client_of(acct, args.smtp)
        if client.provider == "microsoft":
            refresh_token = device_code_flow(client)
        else:
            authorize_url = args.authorize_url or (PROVIDERS[client.provider].authorize_url
                                                   if client.provider else "")
            if not authorize_url:
                raise AuthorizeError('provider = "" (a generic OAuth2 server): give its authorization endpoint with '
                                     "--authorize-url URL, or put a refresh token in refresh_token_file")
            opener = (lambda url: None) if args.no_browser else webbrowser.open
            refresh_token = loopback_flow(client, authorize_url, opener, args.clock)
    except AuthorizeError as exc:
        print(f"mailbridge: account {acct.name}: {exc}", file=sys.stderr)
        return 1
    engine = open_store(settings)
    seed = client.refresh_token.reveal()
    with engine.begin() as conn:
        store.seed_grant(conn, grant_name(acct.name, smtp=args.smtp), acct.name, refresh_token,
                         fingerprint(seed) if seed else None, args.clock())
    print(f"account {acct.name}: authorized; the refresh token is kept in the database (it is never shown). "
          "A running daemon uses it at its next login attempt (within 5 minutes); no restart is needed.")
    return 0


def _client_of(acct: AccountSettings, smtp: bool) -> OAuth2Settings:
    if smtp:
        if not smtp_has_own_grant(acct):
            raise AuthorizeError("SMTP has no OAuth2 client of its own ([accounts.smtp.oauth2]); it uses the IMAP "
                                 "one: run the command without --smtp")
        assert acct.smtp.oauth2 is not None
        return acct.smtp.oauth2
    if acct.imap.auth != "oauth2" or acct.imap.oauth2 is None:
        raise AuthorizeError('the IMAP login does not use OAuth2; set auth = "oauth2" and an '
                             "[accounts.imap.oauth2] table first")
    return acct.imap.oauth2


def device_code_flow(client: OAuth2Settings) -> str:
    """Microsoft's device code flow through msal; the refresh token."""
    import msal  # only this command needs it; the daemon refreshes with its own small client

    app = msal.PublicClientApplication(client.client_id,
                                       authority=f"https://login.microsoftonline.com/{client.tenant}")
    flow = app.initiate_device_flow(scopes=msal_scopes(client.scopes))
    if "user_code" not in flow:
        raise AuthorizeError(f"Microsoft refused to start the device code flow: {flow.get('error')}: "
                             f"{flow.get('error_description', '')}; in the app registration, "
                             "Authentication > Allow public client flows must be Yes")
    print(flow["message"], flush=True)      # "To sign in, use a web browser to open ... and enter the code ..."
    result = app.acquire_token_by_device_flow(flow)
    refresh_token = result.get("refresh_token")
    if not refresh_token:
        raise AuthorizeError(f"no refresh token: {result.get('error', 'no error given')}: "
                             f"{result.get('error_description', '')}; the scopes must include offline_access")
    return str(refresh_token)


def loopback_flow(client: OAuth2Settings, authorize_url: str, open_url: Callable[[str], object],
                  clock: Callable[..., object], timeout: float = LOOPBACK_TIMEOUT_SECONDS) -> str:
    """The authorization code flow with PKCE and a redirect to 127.0.0.1; the refresh token.

    ``open_url`` shows the sign-in page (a browser); the URL is printed too, for a browser
    on another machine with an SSH tunnel to the port.
    """
    verifier, challenge = pkce_pair(secrets.token_bytes(32))
    state = secrets.token_urlsafe(16)
    answer: dict[str, str] = {}
    done = threading.Event()

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if "code" not in query and "error" not in query:
                self.send_error(404)
                return
            answer.update(query)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"mailbridge: done, you may close this window.\n")
            done.set()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the query holds the code
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, name="oauth2-loopback", daemon=True)
    thread.start()
    try:
        params = {"client_id": client.client_id, "redirect_uri": redirect_uri, "response_type": "code",
                  "scope": " ".join(client.scopes), "code_challenge": challenge, "code_challenge_method": "S256",
                  "state": state, "access_type": "offline", "prompt": "consent"}
        url = f"{authorize_url}{'&' if '?' in authorize_url else '?'}{urlencode(params)}"
        print(f"Open this page and sign in as the seller's mailbox (waiting up to {timeout:.0f} s):\n{url}",
              flush=True)
        open_url(url)
        if not done.wait(timeout):
            raise AuthorizeError(f"no sign-in within {timeout:.0f} s; run the command again")
    finally:
        server.shutdown()
        server.server_close()
    if answer.get("state") != state:
        raise AuthorizeError("the redirect's state does not match this request (a stale or forged redirect); "
                             "run the command again")
    if "error" in answer:
        raise AuthorizeError(f"the provider refused: {answer['error']}: {answer.get('error_description', '')}")
    try:
        grant = exchange_code(client, answer["code"], verifier, redirect_uri, clock(), 30.0)  # type: ignore[arg-type]
    except TokenRefused as exc:
        raise AuthorizeError(f"the token endpoint refused the code: {exc}") from None
    if not grant.refresh_token:
        raise AuthorizeError("the answer holds no refresh token; Google gives one with access_type=offline and "
                             "prompt=consent (sent); other servers may need an offline_access scope")
    return grant.refresh_token
