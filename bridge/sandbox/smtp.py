"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it accepts and
delivers it into the sandbox Dovecot, with optional AUTH, Gmail-style "Sent"
copies and injected failures (refusals and dropped connections at MAIL, RCPT
or DATA) for the tests of mailbridge's outbox.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import email.parser
import email.policy
import hmac
import json
import logging
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from bridge.sandbox.delivery import Deliverer, DeliveryFailure, Delivery
from bridge.sandbox.dovecot import DovecotServer
from bridge.sandbox.dovecot_conf import LOOPBACK, SENT_FOLDER
from bridge.sandbox.errors import SandboxDeliveryError, SandboxError


@dataclass(frozen=True)
class ReceivedMail:
    """One SMTP transaction that SandboxSMTP answered with 250.

    ``data`` is exactly what the client sent after DATA (CRLF line endings,
    dot-stuffing removed). ``received_at`` is ``time.time()``.
    ``delivered_to`` lists the Dovecot users whose INBOX gets a copy and
    ``auth_user`` the SMTP AUTH login (``None`` without AUTH).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None
    received_at: float
    auth_user: str | None = None
    delivered_to: tuple[str, ...] = ()


Stage = Literal["MAIL", "RCPT", "DATA"]
Route = Mapping[str, str] | Callable[[str], str | None]


@dataclass
class _Fault:
    stage: Stage
    code: int | None  # None: drop the connection without a reply
    message: str
    accept: bool = False  # drop only: record and deliver the message first


@dataclass
class _Transaction:
    fault: _Fault | None
    counted: bool = False


class _SMTPServerLike(Protocol):
    transport: asyncio.Transport | None


class SandboxSMTP:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that delivers into Dovecot.

    - ``route`` maps a recipient (compared in lower case) to the Dovecot user
      whose INBOX receives the message: exact addresses, ``*@domain`` and
      ``*`` keys, or a function returning a username or ``None``. Without
      ``route``, a recipient that is itself a Dovecot username is delivered
      to that user. Unrouted recipients are accepted and recorded only. A
      message goes once to each target user, however many recipients map
      to it.
    - ``auth`` (login -> password) makes AUTH PLAIN/LOGIN mandatory before
      MAIL (plaintext: loopback only).
    - ``bearer`` (login, access token) -> bool makes AUTH mandatory too and
      accepts SASL XOAUTH2 logins whose token it approves (an OAuth2 server's
      introspection, say).
    - ``file_sent_copies=True`` also files a \\Seen copy in the authenticated
      user's ``Sent`` folder, as Gmail and Microsoft 365 do (needs ``auth``
      logins that are Dovecot users).

    Every transaction answered with 250 is in :attr:`received` before the
    client sees the 250; the IMAP APPENDs run on a background thread, so call
    :meth:`wait_delivered` before reading the mailboxes.
    """

    def __init__(
        self,
        dovecot: DovecotServer | None,
        route: Route | None = None,
        auth: Mapping[str, str] | None = None,
        file_sent_copies: bool = False,
        bearer: Callable[[str, str], bool] | None = None,
    ) -> None:
        if route is not None and dovecot is None:
            raise ValueError("route needs a DovecotServer to deliver into")
        if file_sent_copies and (dovecot is None or not auth):
            raise ValueError("file_sent_copies needs a DovecotServer and auth logins")
        if isinstance(route, Mapping):
            route = {key.lower(): user for key, user in route.items()}
            assert dovecot is not None
            unknown = sorted(set(route.values()) - set(dovecot.users))
            if unknown:
                raise ValueError(f"route targets {unknown} are not Dovecot users")
        self._dovecot = dovecot
        self._route = route
        self._auth = dict(auth) if auth else None
        self._bearer = bearer
        self._file_sent_copies = file_sent_copies
        self._lock = threading.Condition()
        self._received: list[ReceivedMail] = []
        self._rejected = 0
        self._faults: deque[_Fault] = deque()
        self._transactions: weakref.WeakKeyDictionary[object, _Transaction] = (
            weakref.WeakKeyDictionary()
        )
        self._controller: _Controller | None = None
        self._deliverer: Deliverer | None = None
        self._last_failures: list[DeliveryFailure] = []
        self._port: int | None = None

    # -- properties --------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``"127.0.0.1"``."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """The SMTP port (a new free one at every start)."""
        if self._port is None:
            raise SandboxError("SandboxSMTP has no port yet: call start() first")
        return self._port

    @property
    def received(self) -> list[ReceivedMail]:
        """A snapshot of every accepted transaction, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def rejected(self) -> int:
        """How many transactions an injected fault refused or dropped."""
        with self._lock:
            return self._rejected

    @property
    def delivery_errors(self) -> list[DeliveryFailure]:
        """Accepted messages that could not be APPENDed into Dovecot."""
        if self._deliverer is not None:
            return self._deliverer.failures
        return list(self._last_failures)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Listen on a free loopback port; returns once it answers."""
        if self._controller is not None:
            raise SandboxError("SandboxSMTP is already running")
        if self._dovecot is not None:
            self._deliverer = Deliverer(self._dovecot)
            self._deliverer.start()
        logging.getLogger("mail.log").addFilter(_DROP_LOGIN_DATA_NOTICE)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
            controller = _Controller(
                _Handler(self),
                sock=sock,
                hostname=LOOPBACK,
                port=port,
                server_hostname="sandbox-smtp.invalid",  # skips a slow getfqdn()
                authenticator=self._authenticate if self._auth else None,
                # AUTH is enforced in handle_MAIL: aiosmtpd's auth_required
                # warns on every connection when TLS is not required.
                auth_required=False,
                auth_require_tls=False,
            )
            controller.start()
        except BaseException:
            sock.close()
            if self._deliverer is not None:
                self._deliverer.stop()
                self._deliverer = None
            raise
        self._controller = controller
        self._port = port
        _RUNNING.add(self)

    def stop(self) -> None:
        """Close client connections, stop listening, finish pending deliveries
        and close the IMAP connections. Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.close_connections()
            controller.stop()
        deliverer, self._deliverer = self._deliverer, None
        if deliverer is not None:
            deliverer.stop()
            self._last_failures = deliverer.failures
        _RUNNING.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SandboxSMTP {LOOPBACK}:{self._port} received={len(self._received)}>"

    # -- inspection --------------------------------------------------------

    def messages_to(self, addr: str) -> list[ReceivedMail]:
        """Accepted transactions with ``addr`` (any case) among the recipients."""
        wanted = addr.lower()
        return [m for m in self.received if any(r.lower() == wanted for r in m.rcpt_tos)]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least ``count`` transactions were accepted; returns
        them all. Raises TimeoutError saying how many arrived."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} messages, {len(self._received)} arrived "
                        f"within {timeout} s"
                    )
                self._lock.wait(remaining)
            return list(self._received)

    def wait_delivered(self, timeout: float = 10.0) -> None:
        """Block until every accepted message is in Dovecot. Raises
        TimeoutError, or :class:`SandboxDeliveryError` if any APPEND failed."""
        if self._deliverer is not None:
            self._deliverer.flush(timeout)
            failures = self._deliverer.failures
            if failures:
                raise SandboxDeliveryError(
                    f"{len(failures)} deliveries failed, first: {failures[0]}"
                )

    def clear(self) -> None:
        """Forget received messages and the rejected count (faults stay)."""
        with self._lock:
            self._received.clear()
            self._rejected = 0

    # -- fault injection ---------------------------------------------------

    def fail_next(self, code: int, message: str, times: int = 1, stage: Stage = "DATA") -> None:
        """Answer the next ``times`` transactions with ``code message`` at
        ``stage`` (``"MAIL"``, ``"RCPT"`` for every recipient, or ``"DATA"``
        after the content was sent). A 421 also closes the connection, as
        RFC 5321 section 3.8 says. Refused transactions are not recorded in
        :attr:`received`; they count in :attr:`rejected`."""
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        if not 400 <= code <= 599:
            raise ValueError(f"fail_next needs a 4xx or 5xx code, not {code}")
        with self._lock:
            self._faults.extend(_Fault(stage, code, message) for _ in range(times))

    def drop_connection_next(self, stage: Stage = "DATA", accept: bool = False) -> None:
        """Close the next transaction's connection at ``stage`` without a reply.

        With ``accept=True`` (DATA only) the message is first recorded and
        delivered: the client cannot know it was sent, which is the "outcome
        unknown" case an outbox must reconcile instead of resending blindly.
        """
        if stage not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        if accept and stage != "DATA":
            raise ValueError("accept=True only makes sense at the DATA stage")
        with self._lock:
            self._faults.append(_Fault(stage, None, "", accept=accept))

    # -- called on aiosmtpd's loop thread ----------------------------------

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if self._auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = self._auth.get(login)
        ok = expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), auth_data.password
        )
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _begin(self, envelope: object) -> _Transaction:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        transaction = _Transaction(fault)
        self._transactions[envelope] = transaction
        return transaction

    def _fault_at(self, envelope: object, stage: Stage) -> _Fault | None:
        transaction = self._transactions.get(envelope)
        if transaction is None or transaction.fault is None:
            return None
        fault = transaction.fault
        if fault.stage != stage:
            return None
        if not transaction.counted and not fault.accept:
            transaction.counted = True
            with self._lock:
                self._rejected += 1
        return fault

    def _accept(self, envelope: Any, auth_user: str | None) -> ReceivedMail:
        data = bytes(envelope.original_content or b"")
        rcpt_tos = tuple(envelope.rcpt_tos)
        targets = self._targets(rcpt_tos)
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=rcpt_tos,
            data=data,
            message_id=_message_id(data),
            received_at=time.time(),
            auth_user=auth_user,
            delivered_to=targets,
        )
        if self._deliverer is not None:
            for user in targets:
                self._deliverer.submit(Delivery(user, "INBOX", data, (), mail.message_id))
            if self._file_sent_copies and auth_user:
                self._deliverer.submit(
                    Delivery(auth_user, SENT_FOLDER, data, (b"\\Seen",), mail.message_id)
                )
        with self._lock:
            self._received.append(mail)
            self._lock.notify_all()
        return mail

    def _targets(self, rcpt_tos: Sequence[str]) -> tuple[str, ...]:
        if self._dovecot is None:
            return ()
        targets: list[str] = []
        known = self._dovecot.users if self._route is None else None
        for rcpt in rcpt_tos:
            addr = rcpt.lower()
            user: str | None
            if self._route is None:
                user = addr if known is not None and addr in known else None
            elif callable(self._route):
                user = self._route(addr)
            else:
                domain = addr.rpartition("@")[2]
                user = (
                    self._route.get(addr)
                    or self._route.get(f"*@{domain}")
                    or self._route.get("*")
                )
            if user is not None and user not in targets:
                targets.append(user)
        return tuple(targets)


def _message_id(data: bytes) -> str | None:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    value = headers.get("Message-ID")
    if value is None:
        return None
    text = str(value).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text or None


class _Handler:
    """aiosmtpd hooks; everything here runs on the controller's loop thread."""

    def __init__(self, sandbox: SandboxSMTP) -> None:
        self._sandbox = sandbox

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        needs_auth = self._sandbox._auth is not None or self._sandbox._bearer is not None
        if needs_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        self._sandbox._begin(envelope)
        fault = self._sandbox._fault_at(envelope, "MAIL")
        if fault is not None:
            return await _apply(server, fault)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self._sandbox._fault_at(envelope, "RCPT")
        if fault is not None:
            return await _apply(server, fault)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 (Google's and Microsoft's documented form): base64 of
        ``user=U^Aauth=Bearer T^A^A``. A refused token gets the mechanism's JSON error
        challenge, the client's empty answer, then 535."""
        bearer = self._sandbox._bearer
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await server.challenge_auth(b"", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        fields = dict(part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if bearer is not None and user and token and bearer(user, token):
            return AuthResult(success=True, handled=False, auth_data=user)
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        fault = self._sandbox._fault_at(envelope, "DATA")
        auth_user = session.auth_data if isinstance(session.auth_data, str) else None
        if fault is not None:
            if fault.accept:
                self._sandbox._accept(envelope, auth_user)
            return await _apply(server, fault)
        mail = self._sandbox._accept(envelope, auth_user)
        return f"250 2.0.0 OK queued as {mail.message_id or 'sandbox'}"


async def _apply(server: _SMTPServerLike, fault: _Fault) -> str:
    transport = server.transport
    if fault.code is None:
        if transport is not None:
            transport.abort()
        # connection_lost() cancels this handler task; never reply.
        await asyncio.Event().wait()
    if fault.code == 421 and transport is not None:
        # Runs after the reply was written (push() writes synchronously).
        asyncio.get_running_loop().call_soon(transport.close)
    return f"{fault.code} {fault.message}"


class _DropLoginDataNotice(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation WARNING on every successful AUTH
    because it sets its own deprecated ``Session.login_data``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


_DROP_LOGIN_DATA_NOTICE: Final = _DropLoginDataNotice()


class _Controller(Controller):
    """aiosmtpd Controller on a pre-bound socket that can close live clients."""

    def __init__(self, handler: Any, *, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sock = sock
        self._servers: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _create_server(self) -> Any:
        # A socket bound before start() cannot be taken by anyone else.
        return self.loop.create_server(self._factory_invoker, sock=self._sock)

    def factory(self) -> SMTP:
        server: SMTP = super().factory()  # type: ignore[no-untyped-call]
        self._servers.add(server)
        return server

    def close_connections(self) -> None:
        async def close_all() -> None:
            for server in list(self._servers):
                if server.transport is not None:
                    server.transport.close()
            await asyncio.sleep(0.01)  # let connection_lost() run

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(5)


# Servers still running, stopped at interpreter exit. This module imports
# bridge.sandbox.dovecot, whose hook is registered first and so runs last
# (atexit runs the last registered first): deliveries end before Dovecot does.
_RUNNING: set[SandboxSMTP] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception:
            pass
