"""What the sandbox servers raise; every error is a :class:`SandboxError`."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """A sandbox server could not do what was asked (see the message)."""


class SandboxUnavailable(SandboxError):
    """Dovecot is not installed or cannot run here; the message says what to do."""


class SandboxStartError(SandboxError):
    """Dovecot was found but did not start; the message ends with its log tail."""


class SandboxDeliveryError(SandboxError):
    """SandboxSMTP accepted a message but could not APPEND it into Dovecot."""
