"""Sandboxed Jinja rendering of the admin-editable templates.

Templates are found by naming convention: ``<name>.subject.j2`` and
``<name>.txt.j2`` in the templates folder. They are reloaded automatically when
their files change (Jinja's ``auto_reload`` checks the mtime on each use), so
admins never restart the daemon to change wording. The sandbox keeps a template
from reaching Python internals; ``StrictUndefined`` makes a misspelt variable
an error instead of an empty string in a buyer's mail.
"""

from __future__ import annotations

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

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        subject = self._render(f"{name}.subject.j2", context)
        text = self._render(f"{name}.txt.j2", context)
        return Rendered(subject=" ".join(subject.split()), text=_normalise_text(text))

    def _render(self, filename: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(filename).render(context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"template {self.folder / filename} is missing") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename or filename}, line {exc.lineno}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {self.folder / filename}: {exc}") from exc


def _normalise_text(text: str) -> str:
    """Strip trailing spaces on each line and collapse runs of blank lines."""
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"
