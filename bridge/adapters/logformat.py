"""How the daemon's log lines look: ``text`` for people, ``json`` for log collectors.

One event, one line. Under systemd (``$JOURNAL_STREAM`` set) the journal stamps
every line itself, so neither format repeats the time. Lines about one account
carry its name as a field of its own (``account``), and the ids an event names
(``conversation``, ``message_id``, ``outbox_id``, ``uid``) when the code passes
them as ``extra=``. By the house convention every line about an account starts
``"account %s: ..."``, so the account is found there too when no ``extra`` says.

Secrets never reach a log line (settings hold them in ``Secret`` values, which
print as ``<hidden>``), and buyers' message bodies are not logged at all.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
#: Fields an event may name (``log.info(..., extra={"conversation": 12})``), in the order JSON shows them.
EVENT_FIELDS = ("account", "conversation", "message_id", "outbox_id", "uid")

_TEXT_STAMPED = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TEXT_JOURNAL = "%(levelname)s %(name)s: %(message)s"


def account_of(record: logging.LogRecord) -> str | None:
    """The account a record is about: ``extra={"account": ...}``, else the ``"account %s: "`` convention."""
    named = getattr(record, "account", None)
    if named:
        return str(named)
    if isinstance(record.msg, str) and record.msg.startswith("account %s") and isinstance(record.args, tuple) \
            and record.args:
        return str(record.args[0])
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (unless the journal stamps it), level, logger, message, event fields."""

    def __init__(self, stamped: bool = True) -> None:
        super().__init__()
        self.stamped = stamped

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {}
        if self.stamped:
            out["time"] = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        out["level"] = record.levelname
        out["logger"] = record.name
        out["message"] = record.getMessage()
        account = account_of(record)
        if account:
            out["account"] = account
        for name in EVENT_FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # ensure_ascii keeps the line one line whatever a subject holds; default=str for odd values.
        return json.dumps(out, ensure_ascii=True, default=str)


def formatter(log_format: str, environ: Mapping[str, str]) -> logging.Formatter:
    """The formatter for ``[daemon] log_format``; the time is left to the journal under systemd."""
    under_journal = bool(environ.get("JOURNAL_STREAM"))
    if log_format == "json":
        return JsonFormatter(stamped=not under_journal)
    return logging.Formatter(_TEXT_JOURNAL if under_journal else _TEXT_STAMPED)


class _DaemonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our stderr handler, told apart from handlers others installed (pytest's, an embedding program's)."""


def configure(level: str, log_format: str, environ: Mapping[str, str]) -> None:
    """Log to stderr at ``level`` in ``log_format``.

    Called again (on reload) it changes the level and the format of the handler
    it installed. Like ``logging.basicConfig``, it adds no handler when the
    program already has some.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _DaemonHandler)]
    if not ours and not root.handlers:
        ours = [_DaemonHandler(sys.stderr)]
        root.addHandler(ours[0])
    for handler in ours:
        handler.setFormatter(formatter(log_format, environ))
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
