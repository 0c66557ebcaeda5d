"""mailbridge's TOML configuration for one account served by the sandbox servers."""

from __future__ import annotations

import json
from collections.abc import Mapping

from bridge.sandbox.dovecot_conf import LOOPBACK

TomlValue = str | int | float | bool | list[str]


def config_toml(*, database: str, seller: str, staff: str, imap_port: int, smtp_port: int,
                imap_password_file: str | None = None, imap_password: str | None = None,
                smtp_login: bool = False, name: str = "acme", seller_name: str = "Acme Outdoor",
                staff_senders: list[str] | None = None,
                sections: Mapping[str, Mapping[str, TomlValue]] | None = None) -> str:
    """A complete mailbridge TOML file for one account served by this sandbox (loopback, no TLS).

    ``sections`` adds or overrides keys per table: ``{"outbox": {...}, "account": {...},
    "imap": {...}, "smtp": {...}, "feedback": {...}}``; "account" holds the ``[[accounts]]`` keys themselves.
    With ``smtp_login`` mailbridge authenticates to SandboxSMTP with the IMAP credentials.
    """
    extra = {k: dict(v) for k, v in (sections or {}).items()}
    password = {"password_file": imap_password_file} if imap_password_file else {"password": imap_password or ""}
    tables: dict[str, dict[str, TomlValue]] = {
        "database": {"url": database},
        **{k: v for k, v in extra.items() if k not in ("account", "imap", "smtp", "feedback")},
    }
    account: dict[str, TomlValue] = {
        "name": name, "marketplace": "amazon.com", "seller_name": seller_name, "seller_address": seller,
        "staff_address": staff, "staff_senders": staff_senders or [f"*@{staff.rpartition('@')[2]}"],
        **extra.get("account", {}),
    }
    imap: dict[str, TomlValue] = {"host": LOOPBACK, "port": imap_port, "security": "none", "username": seller,
                                  **password, **extra.get("imap", {})}
    smtp: dict[str, TomlValue] = {"host": LOOPBACK, "port": smtp_port, "security": "none",
                                  **({} if smtp_login else {"username": ""}), **extra.get("smtp", {})}
    lines = ["# mailbridge configuration for a sandbox on 127.0.0.1 (security \"none\" is loopback-only)"]
    for table, values in tables.items():
        lines += toml_table(f"[{table}]", values)
    lines += toml_table("[[accounts]]", account)
    sub = [("accounts.imap", imap), ("accounts.smtp", smtp)]
    sub += [("accounts.feedback", dict(extra["feedback"]))] if "feedback" in extra else []
    for table, values in sub:
        lines += toml_table(f"[{table}]", values)
    return "\n".join(lines)


def toml_table(header: str, values: Mapping[str, TomlValue]) -> list[str]:
    """The lines of one TOML table (``[name]`` or ``[[name]]``) with ``values``, then a blank line."""
    return [header, *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]


def _toml(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a JSON string or array of strings is valid TOML
