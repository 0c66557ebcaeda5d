"""How configuration problems are raised, collected and worded.

Every problem is one line: the file, the dotted key (``accounts[0] ("acme").imap.port``)
and what was expected, so an operator can fix it without reading code. What the
operator wrote is echoed back only through :func:`given` and :func:`quote`, which
callers never use on a secret.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path


class ConfigError(Exception):
    """Raised when the configuration file is missing, unreadable or invalid.

    The message names the file, the dotted key (``accounts[0].imap.port``) and
    what was expected, one problem per line, so an operator can fix it without
    reading code. Secret values never appear in it.
    """


class Invalid(Exception):
    """Raised by a value check; the message is what follows the key's name."""


class Problems:
    """Collects one line per problem and per warning, each naming the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.path}: {key}: {message}")

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.path}: {key}: {message}")


def kind(value: object) -> str:
    """The TOML type of ``value``, as an operator reads it ("an integer")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"  # the only other TOML values


def given(value: object) -> str:
    """What the operator wrote, for messages. Never call this on a secret."""
    if isinstance(value, bool):
        return f"{kind(value)} ({'true' if value else 'false'})"
    if isinstance(value, (int, float, str)):
        return f"{kind(value)} ({quote(value)})"
    return kind(value)


def quote(value: object, limit: int = 80) -> str:
    """``value`` as the operator would write it, shortened to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unknown_key(key: str, known: Sequence[str]) -> str:
    """The message for a key no table declares, with the closest known one."""
    # The value is deliberately not shown: a misspelt "pasword" holds a password.
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key; known keys here: {', '.join(known)}"
