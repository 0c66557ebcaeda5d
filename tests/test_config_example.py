"""config/mailbridge.example.toml against the one declaration of every key (bridge/config/schema.py).

The example must document every declared key -- set, or shown commented out as
``# key = value`` (one space at most after the ``#``, so that removing ``# ``
sets it) -- under a comment saying what it does and its default (``Default: ...``,
or ``Required``), and nothing that is not declared. And it must load.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from pathlib import Path

import pytest

from bridge.config import KNOWN_KEYS, Secret, Settings, load_settings
from bridge.config.reading import Declared, Modes, declared_keys

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "mailbridge.example.toml"

ASSIGNMENT = re.compile(r"^(?:# ?)?([a-z_]+) = ")
HEADER = re.compile(r"^\[\[?([a-z0-9_.]+)\]\]?\s*$")

#: Every key declaration, with its table; sub-tables are checked as tables, not keys.
KEYS = [(table, decl) for table, decl in declared_keys(Settings) if decl.key.reader.table_class(decl) is None]


def _sections() -> dict[str, list[str]]:
    """The example's lines by table ("accounts.imap"), every occurrence of a table in turn."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        header = HEADER.fullmatch(line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
        sections[current].append(line)
    return sections


def _comment_above(lines: list[str], index: int) -> list[str]:
    """The comment lines right above line ``index``, top down."""
    start = index
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    return lines[start:index]


def _default_text(decl: Declared) -> str:
    """How the example states ``decl``'s default: its TOML value, or the words of a computed one."""
    if decl.key.default_doc:
        return decl.key.default_doc
    value = decl.default
    if isinstance(decl.key.reader, Modes):
        assert value == ()
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return json.dumps(value)


def test_every_declared_key_is_found() -> None:
    # The declarations walk reaches every key the loader accepts: the two agree.
    found: dict[str, list[str]] = {}
    for table, decl in declared_keys(Settings):
        found.setdefault(table, []).extend(decl.names)
    assert {table: tuple(names) for table, names in found.items() if table} == \
        {table: names for table, names in KNOWN_KEYS.items() if table}


@pytest.mark.parametrize(("table", "decl"), KEYS, ids=[f"{t or 'top'}.{d.name}" for t, d in KEYS])
def test_every_key_is_documented_with_what_it_does_and_its_default(table: str, decl: Declared) -> None:
    lines = _sections()[table]
    where: dict[str, int] = {}
    for i, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match and match.group(1) in decl.names:
            where.setdefault(match.group(1), i)
    for name in decl.names:
        assert name in where, f"[{table}] {name} is not in {EXAMPLE.name}, not even commented out"
        i = where[name]
        assert _comment_above(lines, i) or " #" in lines[i].partition("=")[2], \
            f"[{table}] {name} has no comment in {EXAMPLE.name}"
    # The first of a key's spellings (password_file of three) carries the explanation.
    block = _comment_above(lines, min(where.values()))
    prose = " ".join(line.lstrip("#").strip() for line in block if not ASSIGNMENT.match(line))
    assert prose, f"[{table}] {decl.name}: no comment saying what it does"
    expected = "Required" if decl.required else f"Default: {_default_text(decl)}"
    assert expected in prose, f"[{table}] {decl.name}: the comment above it does not say {expected!r}"


def test_every_table_has_its_header() -> None:
    sections = _sections()
    for table in KNOWN_KEYS:
        assert table in sections, f"no [{table}] in {EXAMPLE.name}"


def test_no_unknown_key_is_set() -> None:
    def check(table: str, values: dict[str, object]) -> None:
        for name, value in values.items():
            assert name in KNOWN_KEYS[table], f"[{table}] {name} is not a key mailbridge knows"
            inner = f"{table}.{name}" if table else name
            if isinstance(value, dict) and inner in KNOWN_KEYS:
                check(inner, value)
            elif isinstance(value, list) and inner in KNOWN_KEYS:
                for item in value:
                    check(inner, item)

    check("", tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))


def test_no_unknown_key_is_shown_commented_out() -> None:
    for table, lines in _sections().items():
        for line in lines:
            match = ASSIGNMENT.match(line)
            if match and line.startswith("#"):
                assert match.group(1) in KNOWN_KEYS[table], f"[{table}] {line!r}: not a key mailbridge knows"


def test_the_example_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The systemd credentials the example names, and the environment variable it names.
    for name in ("imap-acme-us", "smtp-acme-us"):
        (tmp_path / name).write_text(f"pw-{name}\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "BERGWERK_IMAP_PASSWORD": "bergwerk-pw"}
    with caplog.at_level(logging.WARNING):
        settings = load_settings(EXAMPLE, environ)
    assert caplog.records == []                    # nothing retired in it either
    assert settings.templates_dir is None          # the shipped templates
    us, de, uk = settings.accounts
    assert us.imap.password == Secret("pw-imap-acme-us", f"file:{tmp_path / 'imap-acme-us'}")
    assert de.smtp.password == Secret("bergwerk-pw", "env:BERGWERK_IMAP_PASSWORD")
    # Microsoft 365 over OAuth2: the provider's endpoint for the tenant; a send-only client for SMTP.
    assert uk.imap.auth == uk.smtp.auth == "oauth2"
    assert uk.imap.oauth2 is not None and uk.smtp.oauth2 is not None
    assert uk.imap.oauth2.token_url == "https://login.microsoftonline.com/gipfel.onmicrosoft.com/oauth2/v2.0/token"
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in uk.imap.oauth2.scopes
    assert uk.smtp.oauth2.client_id != uk.imap.oauth2.client_id
