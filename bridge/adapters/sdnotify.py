"""The service manager's notification protocol (sd_notify), with the standard library.

systemd names a unix datagram socket in ``$NOTIFY_SOCKET``; a service sends it
newline-separated ``KEY=VALUE`` assignments (``READY=1``, ``STATUS=...``,
``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``). A name starting with ``@``
is in the abstract namespace (the ``@`` stands for a leading NUL byte).
See sd_notify(3) and systemd.service(5) ``WatchdogSec=``.

Written here rather than taken from a package: ``sdnotify`` is unmaintained and
``systemd-python`` needs the C headers to build, while the protocol is one
``sendto`` of a datagram.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the daemon
runs the same from a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as an address for ``sendto``: ``@name`` is the abstract ``\\0name``."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """How often to send ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises).

    None when no watchdog is asked for, or when ``$WATCHDOG_PID`` names another
    process (the variables were inherited by a child, not meant for it).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000


def one_line(text: str) -> str:
    """A value fit for one assignment: a newline would start another."""
    return " ".join(text.split())


class Notifier:
    """Sends assignments to the service manager; a no-op when there is none.

    A failed send is logged once and never raised: a service manager that
    went away must not stop the mail.
    """

    def __init__(self, socket_name: str | None) -> None:
        self.name = socket_name
        self.address = _address(socket_name) if socket_name else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines, e.g. ``send(READY=1, STATUS="...")``; True when delivered."""
        if self.address is None:
            return False
        payload = "\n".join(f"{key}={one_line(str(value))}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager at %s: %s", self.name, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
