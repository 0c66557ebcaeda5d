"""Sandboxed Jinja rendering of the admin-editable templates.

Templates are found by naming convention: ``<name>.subject.j2`` and
``<name>.txt.j2``. They come from the ``templates`` folder shipped inside the
``bridge`` package, or from the folder ``[daemon] templates`` names instead.

- Jinja's ``auto_reload`` looks at a template file's mtime each time the
  template is used, so an edited template is used from the next message on and
  admins never restart the daemon to change wording.
- The sandbox keeps a template from reaching Python internals.
- ``StrictUndefined`` makes a misspelt variable an error instead of an empty
  string in a buyer's mail.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment


class TemplateError(Exception):
    """Raised when a template is missing or fails to render; names the file."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


def shipped_templates() -> Path:
    """The folder of templates installed with mailbridge (``templates/`` in the repository)."""
    folder = importlib.resources.files("bridge").joinpath("templates")
    # pip installs a wheel as files, so this is a real folder; Jinja's FileSystemLoader needs one.
    if not isinstance(folder, Path) or not folder.is_dir():
        raise TemplateError(f"the templates shipped with mailbridge are missing ({folder}); reinstall mailbridge, "
                            "or point [daemon] templates at a folder of templates")
    return folder


class Templates:
    """Renders ``<name>.subject.j2`` and ``<name>.txt.j2`` from ``folder``, or the shipped templates (None)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = shipped_templates() if folder is None else folder
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.folder)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,   # plain-text mail, never HTML
            auto_reload=True,
            keep_trailing_newline=True,
        )

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """The subject on one line and the text tidied (see :func:`_tidy`); raises TemplateError."""
        subject = self._render(f"{name}.subject.j2", context)
        text = self._render(f"{name}.txt.j2", context)
        return Rendered(subject=" ".join(subject.split()), text=_tidy(text))

    def _render(self, filename: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(filename).render(context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {self.folder / filename} is missing") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename or filename}, line {exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {self.folder / filename}: {exc}") from exc


def _tidy(text: str) -> str:
    """Trailing whitespace stripped from every line, runs of blank lines (a leading run too) made one,
    and exactly one newline at the end: templates can use ``{% if %}`` blocks freely."""
    lines: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line and lines and not lines[-1]:
            continue
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"
