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
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(folder)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            auto_reload=True,
            keep_trailing_newline=True,
            trim_blocks=False,
        )
        self._checked: dict[str, tuple[jinja2.Template, float]] = {}

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        subject = self._render(f"{name}.subject.j2", context)
        text = self._render(f"{name}.txt.j2", context)
        return Rendered(subject=" ".join(subject.split()), text=_normalise_text(text))

    def _template(self, filename: str) -> jinja2.Template:
        now = time.monotonic()
        cached = self._checked.get(filename)
        if cached is not None and now - cached[1] < RECHECK_SECONDS:
            return cached[0]
        template = self.env.get_template(filename)   # loads it again if the file changed
        self._checked[filename] = (template, now)
        return template

    def _render(self, filename: str, context: dict[str, Any]) -> str:
        try:
            return self._render_once(filename, context)
        except Exception:
            self._checked.pop(filename, None)   # look at the file again at once: it may be fixed by now
            raise

    def _render_once(self, filename: str, context: dict[str, Any]) -> str:
        try:
            return self._template(filename).render(context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {self.folder / filename} is missing") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename or filename}, line {exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {self.folder / filename}: {exc}") from exc


_BLANK_RUN_RE = re.compile(r"\n{3,}")


def _normalise_text(text: str) -> str:
    """Strip trailing spaces on each line and collapse runs of blank lines (a leading run too)."""
    joined = "\n".join([line.rstrip() for line in text.splitlines()])
    if "\n\n\n" in joined:
        joined = _BLANK_RUN_RE.sub("\n\n", joined)
    if joined.startswith("\n"):
        joined = "\n" + joined.lstrip("\n")
    return joined.rstrip("\n") + "\n"
