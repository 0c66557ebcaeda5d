"""Thin SMTP adapter over aiosmtplib: one reusable connection per account worker.

Errors come out as :class:`SendError` with ``permanent`` (5xx: do not retry)
and ``ambiguous`` (the connection failed after the message data was handed
over, so the server may have accepted it: resending could duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Callable

import aiosmtplib

from bridge.adapters.oauth2 import TokenProvider, TokenUnavailable
from bridge.config import SmtpSettings

log = logging.getLogger(__name__)


class SendError(Exception):
    """A send failed. ``connection``: the session itself failed (connect, TLS, login),
    so the failure says nothing about the message and must not use up its attempts.
    ``code`` and ``reply``: the server's reply code and text, when it answered (the
    outbox tells a throttle reply from a failure by them).
    ``revoked``: the account's OAuth2 grant was revoked; nothing can be sent until it is
    authorized again (already logged once, as an error, where it was found)."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None, ambiguous: bool = False,
                 connection: bool = False, reply: str = "", revoked: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.ambiguous = ambiguous
        self.connection = connection
        self.revoked = revoked
        self.reply = reply


class NotFinished(SendError):
    """The server was ready for the message data, but ``may_finish`` said no: nothing was handed over."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False, connection=True)


class _Progress:
    """How far a send got, for the message when it runs out of time: after DATA began it may have gone out."""

    data_started = False


class SmtpConnection:
    """Reuses one authenticated connection for consecutive sends; reconnects when it drops."""

    def __init__(self, settings: SmtpSettings, tokens: TokenProvider | None = None) -> None:
        self.settings = settings
        self.tokens = tokens          # access tokens, for auth = "oauth2"
        self._client: aiosmtplib.SMTP | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        # start_tls is set explicitly: aiosmtplib's default (None) would upgrade
        # opportunistically and silently fall back to plaintext.
        client = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout_seconds,
            use_tls=s.security == "tls", start_tls=s.security == "starttls",
            tls_context=context if s.security != "none" else None,
        )
        try:
            await client.connect()
            if s.username:
                await self._login(client)
        except TokenUnavailable as exc:
            await _close(client)
            raise SendError(str(exc), permanent=exc.permanent, connection=True, revoked=exc.revoked) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            await _close(client)
            what = ("that the app registration has the SMTP send scope and that authenticated SMTP is enabled for "
                    "the mailbox" if s.auth == "oauth2" else "the account's [smtp] username and password_file")
            raise SendError(f"SMTP login as {s.username} at {s.host} was refused ({exc.code} {exc.message}); "
                            f"check {what}", permanent=True, code=exc.code, connection=True) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await _close(client)
            raise SendError(f"SMTP server {s.host} refused the session: {exc.code} {exc.message}",
                            permanent=exc.code >= 500 and exc.code != 554, code=exc.code, connection=True,
                            reply=exc.message) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            await _close(client)
            raise SendError(f"cannot connect to SMTP server {s.host}:{s.port}: {exc}", permanent=False,
                            connection=True) from exc
        return client

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        """Log in: the password, or AUTH XOAUTH2 with an access token (a refused token is replaced by
        a freshly refreshed one once, as for IMAP)."""
        s = self.settings
        if s.auth != "oauth2":
            await client.login(s.username, s.password.reveal())
            return
        if self.tokens is None:
            raise TokenUnavailable(f"SMTP auth = \"oauth2\" for {s.username} but no access tokens were given "
                                   "to the connection (a bug)", permanent=True)
        for fresh in (False, True):
            # The token source may call the token endpoint (blocking): not on the event loop.
            token = await asyncio.to_thread(self.tokens, fresh)
            try:
                await client.auth_xoauth2(s.username, token)
                return
            except aiosmtplib.SMTPAuthenticationError:
                if fresh:
                    raise

    async def check_login(self) -> None:
        """Connect and log in as a send would, then close (``check-config --connect``); raises SendError."""
        await _close(await self._connect())

    async def send(self, envelope_from: str, recipients: tuple[str, ...], raw: bytes,
                   may_finish: Callable[[], bool] | None = None) -> None:
        """Send one message; raises SendError. Every recipient must be accepted.

        ``may_finish`` is asked once the server is ready for the message data (its 354 reply),
        the last moment before anything is handed over: when it says no, the session is
        dropped without the data's end, so the server discards the transaction, and
        :class:`NotFinished` is raised. The outbox asks whether its lease on the account still
        holds: a daemon paused (SIGSTOP, a frozen VM) while it waited for 354 wakes with its
        account given to another daemon, which may already have judged this send unfinished.

        The whole send (connecting, logging in, MAIL, RCPT, DATA) ends within ``timeout_seconds``,
        not each command: a send interrupted by a daemon that lost its account is looked up in
        the Sent folder only ``[outbox] reconcile_after_seconds`` after that daemon's lease
        ended, which the configuration requires to be longer (docs/architecture.md, "Several daemons").
        """
        progress = _Progress()
        try:
            await asyncio.wait_for(self._send(envelope_from, recipients, raw, progress, may_finish),
                                   self.settings.timeout_seconds)
        except TimeoutError as exc:
            if self._client is not None:   # mid-command: no QUIT, which would wait again
                self._client.close()
                self._client = None
            s = self.settings
            raise SendError(f"the send through {s.host}:{s.port} did not finish within smtp.timeout_seconds "
                            f"({s.timeout_seconds:g} s) {'during DATA' if progress.data_started else ''}".rstrip(),
                            permanent=False, connection=not progress.data_started,
                            ambiguous=progress.data_started) from exc

    async def _send(self, envelope_from: str, recipients: tuple[str, ...], raw: bytes,
                    progress: _Progress, may_finish: Callable[[], bool] | None) -> None:
        if self._client is None or not self._client.is_connected:
            self._client = await self._connect()
        client = self._client
        try:
            await client.mail(envelope_from)
            refused: list[str] = []
            code, reply = 0, ""
            # RCPT one by one, not sendmail(): sendmail() raises SMTPRecipientsRefused (not an
            # SMTPResponseException) only when every recipient is refused, and returns a partial
            # refusal in its result, where it is easily missed.
            for rcpt in recipients:
                try:
                    await client.rcpt(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append(f"{rcpt}: {exc.code} {exc.message}")
                    code, reply = exc.code, exc.message
            if refused:
                # Partial acceptance is not delivery: abandon the transaction and report.
                await client.rset()
                raise SendError("recipient refused: " + "; ".join(refused), permanent=code >= 500, code=code,
                                reply=reply)
            await self._data_if(client, raw, may_finish or _always, progress)
        except SendError:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            # A reply code, even after DATA: the server told us it did not take the message.
            await self._reset_after_error(exc.code)
            raise SendError(f"{exc.code} {exc.message}", permanent=exc.code >= 500, code=exc.code,
                            reply=exc.message) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            raise SendError(f"connection failed during {'DATA' if progress.data_started else 'the transaction'}: "
                            f"{exc}", permanent=False, ambiguous=progress.data_started) from exc

    async def _data_if(self, client: aiosmtplib.SMTP, raw: bytes, may_finish: Callable[[], bool],
                       progress: _Progress) -> None:
        """DATA, then the message only if ``may_finish()`` still holds once the server said 354.

        aiosmtplib's ``data()`` writes the message in the same step as it reads the 354, with no
        point in between for a caller to stop (and asyncio timeouts cannot cut in there either:
        a reply that arrived while the process was paused is returned first). So DATA is sent
        as a command, the question asked, and the message written on the session's protocol
        (``SMTP.protocol``, its public ``write``/``read_response``), made transparent as
        RFC 5321 4.5.2 says, as ``data()`` would.
        """
        response = await client.execute_command(b"DATA")
        if response.code != 354:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        if not may_finish():
            client.close()    # no end of data: the server discards the transaction (RFC 5321 4.1.1.4)
            self._client = None
            raise NotFinished("not sent: the server was ready for the message, but this daemon may no longer send "
                              "for the account (its lease ran out while it waited)")
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the message data")
        progress.data_started = True
        protocol.write(_transparent(raw))
        response = await protocol.read_response(timeout=self.settings.timeout_seconds)
        if response.code != 250:
            raise aiosmtplib.SMTPDataError(response.code, response.message)

    async def _reset_after_error(self, code: int) -> None:
        if code == 421 or self._client is None:
            await self.close()   # 421: the server is closing the channel (RFC 5321 3.8)
            return
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await _close(self._client)
            self._client = None


def _always() -> bool:
    return True


# aiosmtplib has the same two steps (in aiosmtplib.protocol), but outside its public API (__all__).
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _transparent(raw: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, a leading dot doubled, ended by ``.CRLF``."""
    data = _LINE_END.sub(b"\r\n", raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        client.close()
