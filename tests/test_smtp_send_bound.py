"""A whole SMTP send ends within smtp.timeout_seconds, not each command: a server that answers every
command just in time would otherwise hold a send (and the account's lease) for many timeouts."""

from __future__ import annotations

import asyncio

import pytest

from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.config import SmtpSettings

STEP = 0.5      # the server's pause before each reply: less than the timeout
TIMEOUT = 1.2   # smtp.timeout_seconds: each reply comes in time, the whole send cannot


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real SMTP conversation over TCP, every reply after STEP seconds."""
    async def reply(text: str) -> None:
        await asyncio.sleep(STEP)
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    try:
        await reply("220 slow.example ESMTP")
        while line := await reader.readline():
            verb = line.split()[0].upper() if line.strip() else b""
            if verb == b"EHLO":
                await reply("250 slow.example")
            elif verb == b"QUIT":
                await reply("221 bye")
                break
            elif verb == b"DATA":
                await reply("354 go on")
                while (await reader.readline()) not in (b".\r\n", b""):
                    pass
                await reply("250 queued")
            else:
                await reply("250 ok")
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def test_a_send_whose_every_reply_comes_in_time_is_still_cut_off_at_the_timeout() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(_trickle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        smtp = SmtpConnection(SmtpSettings(host="127.0.0.1", port=port, security="none", timeout_seconds=TIMEOUT))
        try:
            with pytest.raises(SendError, match=r"did not finish within smtp.timeout_seconds \(1.2 s\)") as caught:
                await smtp.send("seller@example.com", ("buyer@example.com",), b"Subject: hi\r\n\r\nhello\r\n")
            assert not caught.value.permanent and not caught.value.ambiguous   # DATA never began: sent again
        finally:
            await smtp.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
