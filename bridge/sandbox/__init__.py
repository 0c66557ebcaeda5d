"""Local sandbox mail servers: a real Dovecot IMAP server and a real SMTP server.

Used by the test suite (``tests/conftest.py``), the benchmarks and
``mailbridge demo``. Both servers listen on 127.0.0.1 only, on a free port
picked at start, and keep all their state in a temporary directory.

- :mod:`~bridge.sandbox.dovecot`: :class:`DovecotServer`, ``dovecot -F`` with
  the configuration of :mod:`~bridge.sandbox.dovecot_conf`; users can be added
  while it runs; :mod:`~bridge.sandbox.process_group` stops all of it.
- :mod:`~bridge.sandbox.smtp`: :class:`SandboxSMTP` (aiosmtpd), which records
  every accepted transaction and hands it to :mod:`~bridge.sandbox.delivery`
  for IMAP APPEND into Dovecot; optional AUTH, Gmail-style "Sent" copies and
  injected failures.
- :mod:`~bridge.sandbox.config`: :func:`config_toml`, a mailbridge
  configuration for an account on these servers.
- :mod:`~bridge.sandbox.samples`: generated marketplace mail.
- :mod:`~bridge.sandbox.errors`: what they raise.

Nothing here is meant for production mail: passwords are stored in plain text
in the sandbox directory and nothing is encrypted.
"""

from __future__ import annotations

from bridge.sandbox import samples
from bridge.sandbox.config import config_toml
from bridge.sandbox.delivery import DeliveryFailure
from bridge.sandbox.dovecot import DovecotServer, SandboxAccount, dovecot_available, find_dovecot
from bridge.sandbox.dovecot_conf import LOOPBACK, SANDBOX_FOLDERS, SENT_FOLDER
from bridge.sandbox.errors import (
    SandboxDeliveryError,
    SandboxError,
    SandboxStartError,
    SandboxUnavailable,
)
from bridge.sandbox.smtp import ReceivedMail, Route, SandboxSMTP, Stage

__all__ = [
    "LOOPBACK",
    "SANDBOX_FOLDERS",
    "SENT_FOLDER",
    "DeliveryFailure",
    "DovecotServer",
    "ReceivedMail",
    "Route",
    "SandboxAccount",
    "SandboxDeliveryError",
    "SandboxError",
    "SandboxSMTP",
    "SandboxStartError",
    "SandboxUnavailable",
    "Stage",
    "config_toml",
    "dovecot_available",
    "find_dovecot",
    "samples",
]
