"""Finding, reading and validating the configuration file.

The I/O lives in :func:`load_settings`; every rule lives in the pure
:func:`parse_settings`, so tests are tables of dicts.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from bridge.config.errors import ConfigError, Problems
from bridge.config.reading import Context, Table, build, known_keys
from bridge.config.schema import Settings

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/mailbridge/mailbridge.toml")
CONFIG_ENV = "MAILBRIDGE_CONFIG"

#: The keys each TOML table accepts ("accounts.imap" is every ``[accounts.imap]``),
#: derived from the declarations in ``schema.py``. Anything else is an error.
KNOWN_KEYS: Mapping[str, tuple[str, ...]] = known_keys(Settings)


def find_config_path(cli_path: str | None, environ: Mapping[str, str]) -> Path:
    """The configuration file to read: ``-c/--config``, else ``$MAILBRIDGE_CONFIG``,
    else ``/etc/mailbridge/mailbridge.toml``. Empty values count as unset."""
    if cli_path:
        return Path(cli_path)
    from_env = environ.get(CONFIG_ENV, "")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, parse and validate the configuration file at ``path``.

    ``environ`` (default: ``os.environ``) supplies ``password_env``/``secret_env``
    variables and ``$CREDENTIALS_DIRECTORY``. Raises :class:`ConfigError` listing
    every problem found, one per line; secret values never appear in it.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found; pass -c/--config PATH or set "
            f"${CONFIG_ENV} (default: {DEFAULT_CONFIG_PATH}); "
            "config/mailbridge.example.toml is a documented starting point"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file: {exc.strerror or exc}"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the configuration file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib reports line and column, never the text itself (which may hold a password).
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    settings = parse_settings(data, path, env, _read_text)
    if settings.templates_dir is not None and not settings.templates_dir.is_dir():
        raise ConfigError(
            f"{path}: daemon.templates: is set to {settings.templates_dir}, which is not a "
            "folder; point [daemon] templates at the folder holding the Jinja templates "
            "(a copy of the templates/ folder shipped with mailbridge), or leave it out to "
            "use the shipped templates"
        )
    return settings


def parse_settings(
    data: Mapping[str, object],
    path: Path,
    environ: Mapping[str, str],
    read_file: Callable[[Path], str],
) -> Settings:
    """Validate parsed TOML ``data`` (read from ``path``) into :class:`Settings`.

    Pure apart from ``read_file`` (used for ``password_file``/``secret_file``), the
    current directory when ``path`` is relative, and a warning logged for each
    retired key. Relative paths resolve against ``path``'s folder. Raises
    :class:`ConfigError` with all problems.
    """
    problems = Problems(path)
    ctx = Context(problems, path.absolute().parent, environ, read_file)
    settings = build(Settings, Table(data, "", "", Settings, ctx), path=path)
    for warning in problems.warnings:
        log.warning("%s", warning)
    if problems.lines:
        raise ConfigError("\n".join(problems.lines))
    return settings


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")
