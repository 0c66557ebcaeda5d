"""What commands take from the configuration: the file, the accounts, the log level."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from bridge.adapters import logformat
from bridge.config import Settings, find_config_path, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def load(args: argparse.Namespace) -> Settings:
    """The settings from ``-c/--config``, else ``$MAILBRIDGE_CONFIG``, else the default path; raises ConfigError."""
    return load_settings(find_config_path(args.config, os.environ))


def open_store(settings: Settings) -> "Engine":
    """The configuration's database, as every command opens it: a schema that is not this
    version's is refused with the upgrade command naming this configuration file."""
    # Imported here: commands that need no database start without SQLAlchemy.
    from bridge.store.engine import open_database

    return open_database(settings.database.url, config=settings.path)


def selected_accounts(settings: Settings, name: str | None) -> list[str] | None:
    """The account names a command acts on (``--account`` or all); None, said on stderr, for an unknown name."""
    names = [a.name for a in settings.accounts]
    if name and name not in names:
        print(f"mailbridge: no account {name!r} in {settings.path} (known: {', '.join(names)})", file=sys.stderr)
        return None
    return [name] if name else names


def one_account(accounts: list[str]) -> str | None:
    """The one account a command that changes something acts on; None, said on stderr, when there are several."""
    if len(accounts) != 1:
        print(f"mailbridge: several accounts ({', '.join(accounts)}); say which with --account", file=sys.stderr)
        return None
    return accounts[0]


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` (``--log-level``, else ``[daemon] log_level``) in ``[daemon] log_format``."""
    # Under systemd the journal adds timestamps; elsewhere they help (bridge.adapters.logformat).
    logformat.configure(level, log_format, os.environ)
    # Alembic says at INFO what it is set up with, each time mailbridge checks the schema;
    # mailbridge db upgrade prints what it ran itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
