"""The small schema language the settings are declared in, and the reader it drives.

A key is declared once, as a field of a frozen settings dataclass (see
``schema.py``): the annotation is its type, the field default its default, and
the field's metadata a :class:`Key` holding its description and a
:class:`Reader` (its constraints: the range of an integer, the check of an
address). From those declarations :func:`build` reads a TOML table, the set of
keys each table accepts is derived (:func:`known_keys`), and the test of
``config/mailbridge.example.toml`` knows what to look for.

Why not pydantic (already installed with SQLModel): the file's shape is not the
settings' shape (three alternative keys make one secret, SMTP credentials
default to the IMAP ones, reply_address defaults from seller_address), every
problem must be reported in one pass while pydantic skips a model's cross-field
validators once one field failed, and its errors would need a translation layer
for every error type to read as they do here -- and they carry the input value,
which may be a password.

Reading never stops at the first problem: a bad value is recorded under its
dotted key and replaced by its default, so that one run reports everything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge.config.errors import Invalid, Problems, given, kind, quote, unknown_key

T = TypeVar("T")

#: A value check: the string as written and the config file's folder (relative
#: paths resolve against it) -> the value to keep. Raises :class:`Invalid` with
#: the message to show after the key's name.
Check = Callable[[str, Path], Any]

#: A check across the keys of one table, run once each key was read on its own:
#: it may record problems and returns the settings, completed where defaults
#: depend on other keys.
AcrossCheck = Callable[[Any, "Table"], Any]

_METADATA = "mailbridge.key"


class _Required:
    """The default of a key that has none."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class _Missing:
    """Marks a key that is absent from its table."""


MISSING = _Missing()


@dataclass(frozen=True)
class Key:
    """What a settings field declares besides its type and default."""

    doc: str                  # what the key holds; the message when a required key is missing
    reader: Reader            # how its TOML value is read and checked
    toml: str = ""            # its name in the file, when not the field's
    section: str = ""         # the [section] holding it, for fields of the root table ("daemon")
    default_doc: str = ""     # a default computed from other keys, in words ("imap.username")
    required: bool = False    # the file must give it (a field without a default always must)


def key(reader: Reader, doc: str, *, toml: str = "", section: str = "", default_doc: str = "",
        required: bool = False) -> Mapping[str, Key]:
    """Field metadata declaring a key: ``field(default=993, metadata=key(Integer(1, 65535), "..."))``.

    ``required`` is for a key whose field keeps a default for building settings in
    code (``ImapSettings(host="x")``) but that the file must give.
    """
    return {_METADATA: Key(doc, reader, toml, section, default_doc, required)}


@dataclass(frozen=True)
class Declared:
    """One declared key of a settings class, resolved."""

    field: str                # the attribute name
    name: str                 # the key's name in the file
    type: Any                 # the resolved annotation
    key: Key
    default: Any              # the field default, or REQUIRED

    @property
    def required(self) -> bool:
        return self.key.required or (self.default is REQUIRED and not self.key.default_doc)

    @property
    def names(self) -> tuple[str, ...]:
        """The TOML keys this declaration reads (three for a secret)."""
        return self.key.reader.names(self.name)

    @property
    def fallback(self) -> Any:
        """What is kept when the key is absent or its value is refused."""
        return self.key.reader.empty if self.default is REQUIRED else self.default


_DECLARATIONS: dict[type, tuple[Declared, ...]] = {}


def declarations(cls: type) -> tuple[Declared, ...]:
    """The declared keys of settings class ``cls``, in declaration order."""
    if cls not in _DECLARATIONS:
        _DECLARATIONS[cls] = _declarations(cls)
    return _DECLARATIONS[cls]


def _declarations(cls: type) -> tuple[Declared, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        declared = f.metadata.get(_METADATA)
        if declared is None:
            continue  # not a key (Settings.path)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        out.append(Declared(f.name, declared.toml or f.name, hints[f.name], declared, default))
    return tuple(out)


def table_keys(cls: type, section: str = "") -> tuple[str, ...]:
    """The keys a table of ``cls`` accepts (or its ``[section]``), in declaration order."""
    names: list[str] = []
    for d in declarations(cls):
        if d.key.section == section:
            names.extend(d.names)
        elif not section and d.key.section not in names:
            names.append(d.key.section)
    return tuple(names)


def known_keys(root: type) -> dict[str, tuple[str, ...]]:
    """Every table's keys, by dotted table name ("accounts.imap"); "" is the top level."""
    found: dict[str, tuple[str, ...]] = {}

    def walk(cls: type, path: str) -> None:
        found[path] = table_keys(cls)
        for d in declarations(cls):
            if d.key.section:
                found.setdefault(d.key.section, table_keys(cls, d.key.section))
            inner = d.key.reader.table_class(d)
            if inner is not None:
                walk(inner, f"{path}.{d.name}" if path else d.name)

    walk(root, "")
    return found


def declared_keys(root: type) -> Iterator[tuple[str, Declared]]:
    """Every declaration under settings class ``root`` with the dotted name of its table,
    depth first in declaration order; sub-tables are declarations too."""
    for decl in declarations(root):
        yield decl.key.section, decl
        inner = decl.key.reader.table_class(decl)
        if inner is not None:
            for path, inner_decl in declared_keys(inner):
                yield f"{decl.name}.{path}" if path else decl.name, inner_decl


# --------------------------------------------------------------------------
# Checks across keys and retired keys, registered by schema.py
# --------------------------------------------------------------------------

_ACROSS: dict[type, list[AcrossCheck]] = {}
_RETIRED: dict[type, dict[str, str]] = {}


def across_keys(cls: type[T]) -> Callable[[Callable[[T, Table], T]], Callable[[T, Table], T]]:
    """Register a check across the keys of ``cls``'s table (run in registration order)."""
    def register(check: Callable[[T, Table], T]) -> Callable[[T, Table], T]:
        _ACROSS.setdefault(cls, []).append(check)
        return check
    return register


def retire(cls: type, name: str, why: str) -> None:
    """Accept key ``name`` of ``cls``'s table with a warning: it once existed and no longer
    does anything, so an old file still starts."""
    _RETIRED.setdefault(cls, {})[name] = why


def retired_keys(cls: type) -> Mapping[str, str]:
    return _RETIRED.get(cls, {})


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

@dataclass
class Context:
    """What reading needs besides the data: where problems go and what secrets come from."""

    problems: Problems
    base: Path                          # the config file's folder
    environ: Mapping[str, str] = dataclasses.field(repr=False)   # holds the *_env secrets
    read_file: Callable[[Path], str] = dataclasses.field(repr=False)


class Table:
    """One TOML table as read: raw access by key, and problems recorded under its dotted name."""

    def __init__(self, data: Mapping[str, object], where: str, path: str, cls: type, ctx: Context,
                 section: str = "", broken: bool = False) -> None:
        self.data = data
        self.where = where          # dotted name for messages: 'accounts[0] ("acme").imap'
        self.path = path            # the table's name in the file: "accounts.imap"
        self.ctx = ctx
        # Set when the table itself was of the wrong type: its keys are then not
        # reported missing one by one (the operator has one thing to fix).
        self.broken = broken
        self.children: dict[str, Table] = {}        # sub-tables as read, for checks across keys
        self.items: dict[str, list[Table]] = {}     # arrays of tables as read
        known = table_keys(cls, section)
        retired = {} if section else retired_keys(cls)
        for name in data:
            if name in retired:
                ctx.problems.warn(self.key(name), retired[name])
            elif name not in known:
                self.problem(name, unknown_key(name, known))

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def problem(self, name: str, message: str) -> None:
        self.ctx.problems.add(self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str) -> object:
        return self.data.get(name, MISSING)

    def child(self, name: str, cls: type, section: str = "") -> Table:
        """Sub-table ``name`` (a table of ``cls``, or the root's ``[section]``); empty when absent."""
        if name in self.children:
            return self.children[name]
        path = f"{self.path}.{name}" if self.path else name
        value = self.get(name)
        if isinstance(value, _Missing):
            sub = Table({}, self.key(name), path, cls, self.ctx, section)
        elif not isinstance(value, dict):
            self.problem(name, f"expected a table ([{path}]), got {given(value)}")
            sub = Table({}, self.key(name), path, cls, self.ctx, section, broken=True)
        else:
            sub = Table(value, self.key(name), path, cls, self.ctx, section)
        self.children[name] = sub
        return sub


def build(cls: type[T], tbl: Table, **extra: Any) -> T:
    """Read ``tbl`` into a ``cls`` (a settings dataclass), recording every problem.

    ``extra`` supplies fields that are not keys (``path``).
    """
    values: dict[str, Any] = dict(extra)
    for d in declarations(cls):
        where = tbl.child(d.key.section, cls, d.key.section) if d.key.section else tbl
        values[d.field] = d.key.reader.read(where, d)
    settings: T = cls(**values)
    for check in _ACROSS.get(cls, ()):
        settings = check(settings, tbl)
    return settings


# --------------------------------------------------------------------------
# Readers: one per kind of value
# --------------------------------------------------------------------------

class Reader:
    """Reads one declared key from a table; records problems and falls back on them."""

    #: The value kept for a refused or absent key that has no default.
    empty: Any = None

    def names(self, name: str) -> tuple[str, ...]:
        """The TOML keys read for a declaration named ``name``."""
        return (name,)

    def table_class(self, decl: Declared) -> type | None:
        """The settings class of a sub-table this reader reads, if any."""
        return None

    def read(self, tbl: Table, decl: Declared) -> Any:
        raw = tbl.get(decl.name)
        if isinstance(raw, _Missing):
            if decl.required and not tbl.broken:
                tbl.problem(decl.name, f"missing; required: {decl.key.doc}")
            return decl.fallback
        try:
            return self.convert(raw, tbl, decl)
        except Invalid as exc:
            tbl.problem(decl.name, str(exc))
            return decl.fallback

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        """The value to keep for ``raw`` (present); raises :class:`Invalid`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Reader):
    """A string; a required one must not be blank. ``check`` validates and normalises it."""

    check: Check | None = None
    empty: Any = ""

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        if not isinstance(raw, str):
            raise Invalid(f"expected a string, got {given(raw)}")
        if decl.required and not raw.strip():
            raise Invalid(f"is empty; required: {decl.key.doc}")
        return self.check(raw, tbl.ctx.base) if self.check else raw


@dataclass(frozen=True)
class Integer(Reader):
    """An integer from ``low`` to ``high`` (inclusive; no upper bound when None)."""

    low: int
    high: int | None = None
    note: str = ""            # said after the range when the value is out of it
    empty: Any = 0

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        expected = (f"an integer from {self.low} to {self.high}" if self.high is not None
                    else f"an integer of at least {self.low}")
        if isinstance(raw, bool) or not isinstance(raw, int):
            hint = ""
            if isinstance(raw, str) and raw.strip().isdigit():
                hint = f"; write {decl.name} = {raw.strip()} without quotes"
            raise Invalid(f"expected {expected}, got {given(raw)}{hint}")
        if raw < self.low or (self.high is not None and raw > self.high):
            raise Invalid(f"got {raw}; expected {expected}{self.note}")
        return raw


@dataclass(frozen=True)
class Seconds(Reader):
    """A positive, finite number of seconds (integer or float), kept as a float."""

    empty: Any = 0.0

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise Invalid(f"expected a positive number of seconds, got {given(raw)}")
        if not (math.isfinite(raw) and raw > 0):
            raise Invalid(f"got {raw}; expected a positive number of seconds")
        return float(raw)


@dataclass(frozen=True)
class Flag(Reader):
    """true or false."""

    empty: Any = False

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        if not isinstance(raw, bool):
            raise Invalid(f"expected true or false (no quotes), got {given(raw)}")
        return raw


@dataclass(frozen=True)
class Choice(Reader):
    """One of the strings of the field's ``Literal`` type."""

    empty: Any = ""

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        choices = typing.get_args(decl.type)
        if not isinstance(raw, str):
            raise Invalid(f"expected a string, got {given(raw)}")
        if raw not in choices:
            raise Invalid(f"got {quote(raw)}; expected one of {', '.join(quote(c) for c in choices)}")
        return raw


@dataclass(frozen=True)
class Strings(Reader):
    """An array of strings, each passed through ``item``; a required one must not be empty.

    A bad element is named by its index (``staff_senders[1]``) and left out.
    """

    what: str                 # the whole array, with an example: 'an array of domains such as ["ups.com"]'
    item_what: str            # one element: "an address pattern string"
    item: Check
    empty: Any = ()

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        if not isinstance(raw, list) or (decl.required and not raw):
            raise Invalid(f"expected {self.what}, got {'an empty array' if raw == [] else given(raw)}")
        out = []
        for i, element in enumerate(raw):
            name = f"{decl.name}[{i}]"
            if not isinstance(element, str):
                tbl.problem(name, f"expected {self.item_what}, got {given(element)}")
                continue
            try:
                out.append(self.item(element, tbl.ctx.base))
            except Invalid as exc:
                tbl.problem(name, f"got {quote(element)}; {exc}")
        return tuple(out)


@dataclass(frozen=True)
class Modes(Reader):
    """A table naming some of ``names`` (e.g. policy rules), each set to one of ``modes``;
    kept as a tuple of (name, mode) pairs."""

    allowed: Sequence[str]                  # the names that may be set
    modes: tuple[str, ...]
    noun: str                               # "rule"
    example: str                            # '{ no_links = "warn" }'
    empty: Any = ()

    def convert(self, raw: object, tbl: Table, decl: Declared) -> Any:
        if not isinstance(raw, dict):
            raise Invalid(f"got {given(raw)}; expected a table such as {self.example}")
        modes = ", ".join(quote(m) for m in self.modes[:-1]) + f" or {quote(self.modes[-1])}"
        out = []
        for name, mode in raw.items():
            where = f"{decl.name}.{name}"
            if name not in self.allowed:
                close = difflib.get_close_matches(name, self.allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                tbl.problem(where, f"no such {self.noun}; {hint}{self.noun}s: {', '.join(self.allowed)}")
            elif mode not in self.modes:
                tbl.problem(where, f"got {given(mode)}; expected {modes}")
            else:
                out.append((name, str(mode)))
        return tuple(out)


@dataclass(frozen=True)
class Nested(Reader):
    """A sub-table, read into the field's settings class. Absent, it is read as empty,
    so that its required keys are named one by one."""

    def table_class(self, decl: Declared) -> type | None:
        cls = decl.type
        assert isinstance(cls, type)
        return cls

    def read(self, tbl: Table, decl: Declared) -> Any:
        cls = decl.type
        return build(cls, tbl.child(decl.name, cls))


@dataclass(frozen=True)
class OptionalNested(Reader):
    """A sub-table that may be left out: None when absent (``oauth2: OAuth2Settings | None``).
    Given, it is read into the settings class like :class:`Nested`."""

    def table_class(self, decl: Declared) -> type | None:
        (cls,) = [t for t in typing.get_args(decl.type) if t is not type(None)]
        assert isinstance(cls, type)
        return cls

    def read(self, tbl: Table, decl: Declared) -> Any:
        cls = self.table_class(decl)
        assert cls is not None
        if isinstance(tbl.get(decl.name), _Missing):
            return None
        sub = tbl.child(decl.name, cls)
        return None if sub.broken else build(cls, sub)


@dataclass(frozen=True)
class Tables(Reader):
    """An array of tables (``[[accounts]]``), each read into the settings class of the
    field's ``tuple[cls, ...]`` type; at least one. Each is named in messages by its
    index and, once valid, by its ``named_by`` key: ``accounts[0] ("acme-us")``."""

    named_by: str
    empty: Any = ()

    def table_class(self, decl: Declared) -> type | None:
        cls = typing.get_args(decl.type)[0]
        assert isinstance(cls, type)
        return cls

    def read(self, tbl: Table, decl: Declared) -> Any:
        cls = self.table_class(decl)
        assert cls is not None
        raw = tbl.get(decl.name)
        if isinstance(raw, _Missing) or raw == []:
            tbl.problem(decl.name, f"no {decl.name} configured; add at least one [[{decl.name}]] "
                                   "table (see config/mailbridge.example.toml)")
            return ()
        if not isinstance(raw, list):
            tbl.problem(decl.name, f"expected an array of tables ([[{decl.name}]], double brackets), "
                                   f"got {kind(raw)}")
            return ()
        (label_decl,) = [d for d in declarations(cls) if d.name == self.named_by]
        out: list[Any] = []
        items = tbl.items.setdefault(decl.name, [])
        for index, item in enumerate(raw):
            where = f"{decl.name}[{index}]"
            if not isinstance(item, dict):
                tbl.problem(where, f"expected a table ([[{decl.name}]]), got {given(item)}")
                continue
            label = item.get(self.named_by)
            if _acceptable(label_decl, label, tbl.ctx.base):
                where += f' ("{label}")'
            sub = Table(item, tbl.key(where), f"{tbl.path}.{decl.name}" if tbl.path else decl.name,
                        cls, tbl.ctx)
            items.append(sub)
            out.append(build(cls, sub))
        return tuple(out)


def _acceptable(decl: Declared, value: object, base: Path) -> bool:
    """Whether ``value`` would be accepted for text key ``decl`` (without recording anything)."""
    reader = decl.key.reader
    if not isinstance(value, str) or not isinstance(reader, Text):
        return False
    try:
        reader.check(value, base) if reader.check else None
    except Invalid:
        return False
    return True
