"""Sandboxed Jinja rendering of the admin-editable templates.

Templates are found by naming convention: ``<name>.subject.j2`` and
``<name>.txt.j2`` in the templates folder. They are reloaded automatically when
their files change (Jinja's ``auto_reload`` compares the mtime, at most once a
second per template here, not for each of thousands of messages in a backlog),
so admins never restart the daemon to change wording. The sandbox keeps a template
from reaching Python internals; ``StrictUndefined`` makes a misspelt variable
an error instead of an empty string in a buyer's mail.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.filters import do_indent
from jinja2.sandbox import SandboxedEnvironment

# How long a template is used before its file's mtime is looked at again.
RECHECK_SECONDS = 1.0


class TemplateError(Exception):
    """Raised when a template is missing or fails to render; names the file."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


class Templates:
    def __init__(self, folder: Path | None) -> None:
        # None: [daemon] templates is not set, so the shipped templates. Stand-in until they
        # ship inside the package: the checkout's templates/ folder.
        self.folder = folder if folder is not None else Path(__file__).resolve().parents[2] / "templates"
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.folder)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            auto_reload=True,
            keep_trailing_newline=True,
            trim_blocks=False,
        )
        self.env.filters["indent"] = _indent   # Jinja's, quicker on plain text (a test holds them equal)
        # filename -> (template, when its file was last looked at, its globals as one dict)
        self._checked: dict[str, tuple[jinja2.Template, float, dict[str, Any]]] = {}

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        subject = self._render(f"{name}.subject.j2", context)
        text = self._render(f"{name}.txt.j2", context)
        return Rendered(subject=" ".join(subject.split()), text=_normalise_text(text))

    def _template(self, filename: str) -> tuple[jinja2.Template, dict[str, Any]]:
        now = time.monotonic()
        cached = self._checked.get(filename)
        if cached is not None and now - cached[1] < RECHECK_SECONDS:
            return cached[0], cached[2]
        template = self.env.get_template(filename)   # loads it again if the file changed
        if cached is not None and cached[0] is template:
            flat = cached[2]
        else:
            flat = dict(template.globals)
        self._checked[filename] = (template, now, flat)
        return template, flat

    def _render(self, filename: str, context: dict[str, Any]) -> str:
        try:
            return self._render_once(filename, context)
        except Exception:
            self._checked.pop(filename, None)   # look at the file again at once: it may be fixed by now
            raise

    def _render_once(self, filename: str, context: dict[str, Any]) -> str:
        try:
            template, flat = self._template(filename)
            return _render(template, flat, context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {self.folder / filename} is missing") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename or filename}, line {exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {self.folder / filename}: {exc}") from exc


def _render(template: jinja2.Template, flat_globals: dict[str, Any], context: dict[str, Any]) -> str:
    """``template.render(context)``, at two thirds of the cost (a test holds them equal).

    ``Template.render`` flattens the template's globals, a ChainMap that is slow
    to read, into a new dict on every call. Here they were flattened once and
    the context is made from that copy (``new_context`` with ``shared=True``
    takes the dict as it is); the rest is what ``render`` does.
    """
    ctx = template.new_context({**flat_globals, **context}, shared=True)
    try:
        return template.environment.concat(template.root_render_func(ctx))
    except Exception:
        template.environment.handle_exception()
        raise   # handle_exception always raises; this keeps type checkers informed


_BLANK_RUN_RE = re.compile(r"\n{3,}")
_LINE_WITH_TEXT_RE = re.compile(r"\n(?=[^\n])")
# Where str.splitlines() ends a line in ASCII text besides "\n".
_OTHER_LINE_ENDS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")


def _lines_end_at_newline_only(text: str) -> bool:
    """Whether ``text.splitlines()`` splits ``text`` only at "\n" (as most text is: ASCII, Unix line ends)."""
    return text.isascii() and not any(end in text for end in _OTHER_LINE_ENDS)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    """Jinja's ``indent`` filter; plain text is indented in one pass instead of line by line.

    Jinja's splits the text into lines and indents each one that is not empty;
    for text whose lines end only at "\n", that is: indent after every "\n"
    that a character follows.
    """
    if type(s) is not str or type(width) is not int or blank or not _lines_end_at_newline_only(s):
        return do_indent(s, width, first, blank)   # Markup, a string width, other line ends: as Jinja does
    indention = " " * width
    rv = _LINE_WITH_TEXT_RE.sub("\n" + indention, s)
    return indention + rv if first else rv


def _normalise_text(text: str) -> str:
    """Strip trailing spaces on each line and collapse runs of blank lines (a leading run too)."""
    if (_lines_end_at_newline_only(text) and "\t" not in text and "\x1f" not in text and " \n" not in text
            and not text.endswith(" ")):
        # Lines end only at "\n", and none ends in whitespace that rstrip() would strip (in such
        # text: space, tab, \x1f; a one-character search is quick, so any tab or \x1f at all
        # takes the long way). Splitting, stripping and joining would give the text back, but
        # for a last "\n", and trailing newlines are stripped below anyway.
        joined = text
    else:
        joined = "\n".join([line.rstrip() for line in text.splitlines()])
    if "\n\n\n" in joined:
        joined = _BLANK_RUN_RE.sub("\n\n", joined)
    if joined.startswith("\n"):
        joined = "\n" + joined.lstrip("\n")
    return joined.rstrip("\n") + "\n"
