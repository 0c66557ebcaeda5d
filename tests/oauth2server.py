"""A small, real OAuth2 server on 127.0.0.1 for the tests: a token endpoint and token introspection.

- ``POST /token``, ``grant_type=refresh_token`` (RFC 6749 section 6): checks the client,
  answers a new access token valid for ``lifetime`` seconds and a NEW refresh token; the
  used refresh token stops working at once (strict rotation, as Microsoft does it), so a
  client that reuses one gets ``invalid_grant``.
- ``GET /authorize?login_hint=USER&...`` signs USER in at once and redirects to the
  client's ``redirect_uri`` with a code; ``grant_type=authorization_code`` exchanges it,
  checking the PKCE verifier (RFC 7636, S256) and the redirect URI.
- ``POST /introspect`` (RFC 7662), as Dovecot's oauth2 passdb calls it with
  ``introspection_mode = post``: ``{"active": ..., "username": ...}``.
- :meth:`bearer_ok` is the same check for the sandbox SMTP server's AUTH XOAUTH2.

Every token it ever issued is in :attr:`issued` (to look for leaks in logs). Time is
``clock()`` seconds (``time.time`` unless a test passes its own).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class _Access:
    user: str
    expires: float
    revoked: bool = False


class OAuth2TestServer:
    def __init__(self, *, client_id: str = "mailbridge-test", client_secret: str | None = None,
                 lifetime: float = 8.0, clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._refresh: dict[str, str] = {}        # valid refresh token -> user
        self._access: dict[str, _Access] = {}
        self.issued: list[str] = []               # every token handed out, refresh and access
        self.refreshes = 0
        self.refused: list[str] = []              # the error of each refused token request
        self.introspections = 0
        self._codes: dict[str, tuple[str, str, str]] = {}    # code -> (user, PKCE challenge, redirect_uri)
        self._server: ThreadingHTTPServer | None = None

    # -- set-up ------------------------------------------------------------

    def grant(self, user: str) -> str:
        """A refresh token for ``user``, as an authorization would have given (the seed)."""
        token = self._new("rt")
        with self._lock:
            self._refresh[token] = user
        return token

    def revoke_grant(self, user: str) -> None:
        """Consent withdrawn: every refresh token of ``user`` gets invalid_grant from now on."""
        with self._lock:
            for token in [t for t, u in self._refresh.items() if u == user]:
                del self._refresh[token]

    def revoke_access(self, user: str) -> None:
        """Access tokens of ``user`` stop working before their expiry (the refresh token stays good)."""
        with self._lock:
            for access in self._access.values():
                if access.user == user:
                    access.revoked = True

    def bearer_ok(self, user: str, token: str) -> bool:
        with self._lock:
            access = self._access.get(token)
            return access is not None and access.user == user and not access.revoked \
                and self.clock() < access.expires

    def latest_expiry(self) -> float:
        with self._lock:
            return max((a.expires for a in self._access.values()), default=0.0)

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "OAuth2TestServer":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="oauth2-test-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the endpoints -----------------------------------------------------

    def _new(self, kind: str) -> str:
        token = f"{kind}-{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        return token

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        if form.get("client_id") != self.client_id or \
                (self.client_secret is not None and form.get("client_secret") != self.client_secret):
            return self._refuse(401, "invalid_client", "unknown client or wrong secret")
        if form.get("grant_type") == "authorization_code":
            with self._lock:
                user, challenge, redirect_uri = self._codes.pop(form.get("code", ""), ("", "", ""))
            verifier = form.get("code_verifier", "").encode("ascii")
            expected = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode("ascii")
            if not user or expected != challenge or form.get("redirect_uri") != redirect_uri:
                return self._refuse(400, "invalid_grant", "unknown code, wrong PKCE verifier or redirect_uri")
        elif form.get("grant_type") == "refresh_token":
            with self._lock:
                user = self._refresh.pop(form.get("refresh_token", ""), "")
            if not user:
                return self._refuse(400, "invalid_grant", "AADSTS70000: the refresh token is revoked, expired or used")
        else:
            return self._refuse(400, "unsupported_grant_type", "refresh_token or authorization_code")
        access, refresh = self._new("at"), self._new("rt")
        with self._lock:
            self._refresh[refresh] = user
            self._access[access] = _Access(user, self.clock() + self.lifetime)
            self.refreshes += 1
        return 200, {"access_token": access, "token_type": "Bearer", "expires_in": int(self.lifetime),
                     "refresh_token": refresh, "scope": form.get("scope", "")}

    def _refuse(self, status: int, error: str, description: str) -> tuple[int, dict[str, object]]:
        with self._lock:
            self.refused.append(error)
        return status, {"error": error, "error_description": description}

    def introspect(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        token = form.get("token", "")
        with self._lock:
            self.introspections += 1
            access = self._access.get(token)
            active = access is not None and not access.revoked and self.clock() < access.expires
        return 200, ({"active": True, "username": access.user} if active and access else {"active": False})


    def authorize(self, query: dict[str, str]) -> str:
        """Where the browser goes next: the client's redirect URI with a code (or an error)."""
        code = self._new("code")
        if query.get("code_challenge_method") != "S256" or query.get("client_id") != self.client_id:
            answer = {"error": "invalid_request", "state": query.get("state", "")}
        else:
            with self._lock:
                self._codes[code] = (query.get("login_hint", ""), query.get("code_challenge", ""),
                                     query.get("redirect_uri", ""))
            answer = {"code": code, "state": query.get("state", "")}
        return f"{query.get('redirect_uri', '')}?{urlencode(answer)}"


def _handler(server: OAuth2TestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            if parts.path != "/authorize":
                self.send_error(404)
                return
            self.send_response(302)
            self.send_header("Location", server.authorize({k: v[0] for k, v in parse_qs(parts.query).items()}))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode("utf-8")).items()}
            route = {"/token": server.token, "/introspect": server.introspect}.get(self.path.split("?")[0])
            status, body = route(form) if route else (404, {"error": "not_found"})
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: tests read stderr
            pass

    return Handler
