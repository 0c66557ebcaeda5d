"""Secrets: a value that never prints itself, and where it is read from.

Each secret has three alternative keys, exactly one of which may be set:
``<name>_file`` (a file holding it; relative names are systemd credentials when
``$CREDENTIALS_DIRECTORY`` is set, else beside the config file), ``<name>_env``
(an environment variable's name) or ``<name>`` (inline). Values never reach a
message: only key names, file paths and variable names do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config.errors import given, kind
from bridge.config.reading import Declared, Reader, Table

#: systemd puts ``LoadCredential=`` files in this folder and names it in this variable.
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


@dataclass(frozen=True)
class Secret:
    """A secret string that never prints itself."""

    value: str = field(repr=False)
    source: str = "inline"  # "inline", "file:/path", "env:NAME"; "none" or "invalid" when there is none

    def reveal(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Secret(<hidden>, source={self.source!r})"

    __str__ = __repr__


INVALID = Secret("", "invalid")


def source_names(name: str) -> tuple[str, str, str]:
    """The three keys of secret ``name``: file, environment variable, inline."""
    return f"{name}_file", f"{name}_env", name


def missing(name: str, what: str) -> str:
    """The message for secret ``name`` not given at all."""
    file_key, env_key, inline_key = source_names(name)
    return (f"no {what} given; set exactly one of {file_key} (a file holding it, e.g. a systemd "
            f"credential), {env_key} (an environment variable's name) or {inline_key} (inline)")


def given_anywhere(tbl: Table, name: str) -> bool:
    """Whether any of the three keys of secret ``name`` is in ``tbl``."""
    return any(tbl.has(k) for k in source_names(name))


def source_key(secret: Secret, name: str) -> str:
    """The key secret ``name`` was read from."""
    file_key, env_key, inline_key = source_names(name)
    if secret.source.startswith("file:"):
        return file_key
    if secret.source.startswith("env:"):
        return env_key
    return inline_key


@dataclass(frozen=True)
class SecretKeys(Reader):
    """A :class:`Secret` from ``<name>_file``, ``<name>_env`` or ``<name>``.

    Absent, it is the field default (required: a problem naming all three keys).
    Refused, it is ``Secret("", "invalid")``.
    """

    min_chars: int = 0        # a key must be long enough to be a key
    what: str = "secret"      # "password", for messages

    def names(self, name: str) -> tuple[str, ...]:
        return source_names(name)

    def read(self, tbl: Table, decl: Declared) -> Any:
        file_key, env_key, inline_key = source_names(decl.name)
        present = [k for k in (file_key, env_key, inline_key) if tbl.has(k)]
        if not present:
            if not decl.required:
                return decl.fallback
            if not tbl.broken:
                tbl.problem(file_key, missing(decl.name, self.what))
            return INVALID
        if len(present) > 1:
            tbl.problem(present[1], f"set only one of {', '.join(present)} (they are alternative "
                                    "sources for the same secret)")
            return INVALID
        (used,) = present
        raw = tbl.get(used)
        if not isinstance(raw, str) or not raw:
            what = {file_key: "a file path", env_key: "an environment variable name",
                    inline_key: "the secret"}[used]
            shown = "an empty string" if raw == "" else kind(raw) if used == inline_key else given(raw)
            tbl.problem(used, f"expected {what} (a non-empty string), got {shown}")
            return INVALID
        if used == inline_key:
            secret = Secret(raw, "inline")
        elif used == env_key:
            secret = _from_environment(tbl, used, raw)
        else:
            secret = _from_file(tbl, used, raw)
        if secret.value and len(secret.value) < self.min_chars:
            tbl.problem(used, f"the secret is shorter than {self.min_chars} characters; use a long "
                              "random value, e.g. `openssl rand -hex 32`, or leave [security] empty "
                              "to have one generated and kept in the database")
        return secret


def _from_environment(tbl: Table, key: str, variable: str) -> Secret:
    value = tbl.ctx.environ.get(variable)
    if value is None:
        tbl.problem(key, f"environment variable {variable} is not set; set it in the service's "
                         "environment (systemd: Environment= or EnvironmentFile=)")
        return INVALID
    if not value:
        tbl.problem(key, f"environment variable {variable} is empty")
        return INVALID
    return Secret(value, f"env:{variable}")


def _from_file(tbl: Table, key: str, name: str) -> Secret:
    # Relative names are systemd credentials (LoadCredential=NAME:...) when the
    # service manager provides a credentials folder, else relative to the config file.
    cred_dir = tbl.ctx.environ.get(CREDENTIALS_ENV, "")
    file = Path(name)
    if not file.is_absolute():
        file = (Path(cred_dir) if cred_dir else tbl.ctx.base) / file
    try:
        text = tbl.ctx.read_file(file)
    except OSError as exc:
        where = (f"relative names resolve against ${CREDENTIALS_ENV} ({cred_dir})" if cred_dir else
                 f"relative names resolve against ${CREDENTIALS_ENV} when systemd sets it "
                 "(LoadCredential=), else against the config file's folder")
        hint = "" if Path(name).is_absolute() else f"; {where}"
        tbl.problem(key, f"cannot read {file}: {exc.strerror or exc}{hint}")
        return INVALID
    except UnicodeDecodeError:
        tbl.problem(key, f"{file} is not UTF-8 text")
        return INVALID
    # One trailing newline is what `echo` and editors add; anything more is the secret's.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        tbl.problem(key, f"{file} is empty")
        return INVALID
    return Secret(text, f"file:{file}")
