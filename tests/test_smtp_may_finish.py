"""The last question before a message is handed over: asked once the server said 354.

A daemon paused while it waited for 354 (SIGSTOP, a frozen VM) may wake with its account
given to another daemon; the outbox's ``may_finish`` (is the lease still ours?) then says
no and the message must not reach the server. Against the real sandbox SMTP server.
"""

from __future__ import annotations

import asyncio

import pytest

from bridge.adapters.smtp import NotFinished, SmtpConnection, _transparent
from bridge.config import SmtpSettings
from bridge.sandbox import DovecotServer, SandboxSMTP

TRANSPARENT = [
    # (what the message is, raw, what DATA carries)
    ("plain CRLF", b"Subject: a\r\n\r\nhello\r\n", b"Subject: a\r\n\r\nhello\r\n.\r\n"),
    ("no final line end", b"Subject: a\r\n\r\nhello", b"Subject: a\r\n\r\nhello\r\n.\r\n"),
    ("bare LF", b"Subject: a\n\nhello\n", b"Subject: a\r\n\r\nhello\r\n.\r\n"),
    ("bare CR", b"Subject: a\r\rhello\r", b"Subject: a\r\n\r\nhello\r\n.\r\n"),
    ("a line that is one dot", b"S: a\r\n\r\n.\r\nafter\r\n", b"S: a\r\n\r\n..\r\nafter\r\n.\r\n"),
    ("a line starting with dots", b"S: a\r\n\r\n..x\r\n", b"S: a\r\n\r\n...x\r\n.\r\n"),
    ("a dot inside a line", b"S: a\r\n\r\na.b\r\n", b"S: a\r\n\r\na.b\r\n.\r\n"),
    ("a dot first in the message", b".S: a\r\n", b"..S: a\r\n.\r\n"),
]


@pytest.mark.parametrize(("raw", "expected"), [(r, e) for _, r, e in TRANSPARENT],
                         ids=[name for name, _, _ in TRANSPARENT])
def test_message_data_is_made_transparent_as_rfc5321_says(raw: bytes, expected: bytes) -> None:
    assert _transparent(raw) == expected


MESSAGE = (b"From: seller@example.com\r\nTo: staff@example.com\r\nSubject: test\r\n"
           b"Message-ID: <m1@example.com>\r\n\r\n.a line with a leading dot\r\nbye\r\n")


@pytest.mark.parametrize("answer", [True, False])
def test_a_send_finishes_only_if_may_finish_says_so_once_the_server_is_ready(dovecot: DovecotServer,
                                                                             answer: bool) -> None:
    asked: list[int] = []

    def may_finish() -> bool:
        asked.append(len(server.received))   # asked before anything was accepted
        return answer

    with SandboxSMTP(dovecot) as server:
        smtp = SmtpConnection(SmtpSettings(host="127.0.0.1", port=server.port, security="none"))

        async def scenario() -> None:
            try:
                if answer:
                    await smtp.send("seller@example.com", ("staff@example.com",), MESSAGE, may_finish)
                else:
                    with pytest.raises(NotFinished, match="lease ran out") as caught:
                        await smtp.send("seller@example.com", ("staff@example.com",), MESSAGE, may_finish)
                    # Nothing was handed over: not ambiguous, and the row goes back untouched.
                    assert caught.value.connection and not caught.value.ambiguous and not caught.value.permanent
                # The connection is usable afterwards (a new session when the last one was dropped).
                await smtp.send("seller@example.com", ("staff@example.com",), MESSAGE.replace(b"m1@", b"m2@"))
            finally:
                await smtp.close()

        asyncio.run(scenario())
        received = server.received
    assert asked == [0]
    ids = [m.data.split(b"Message-ID: ")[1].split(b"\r\n")[0] for m in received]
    assert ids == ([b"<m1@example.com>"] if answer else []) + [b"<m2@example.com>"]
    if answer:   # the dot-stuffing was undone by the server: the text arrived as written
        assert received[0].data.rstrip(b"\r\n").endswith(b".a line with a leading dot\r\nbye")
