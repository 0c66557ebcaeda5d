"""Sandboxed Jinja rendering of the admin-editable templates.

Templates are found by naming convention: ``<name>.subject.j2`` and
``<name>.txt.j2``, and ``<name>.<lang>.subject.j2`` / ``.txt.j2`` for a buyer's
language (:meth:`Templates.render_localized`). They come from the ``templates``
folder shipped inside the ``bridge`` package, or from the folder ``[daemon]
templates`` names instead. What each template is given is documented in
:mod:`bridge.domain.template_contexts`, and a context that differs from it, or
holds anything but plain values, is refused.

- Jinja's ``auto_reload`` looks at a template file's mtime each time the
  template is used, so an edited template is used from the next message on and
  admins never restart the daemon to change wording. Inside
  :meth:`Templates.checked_once` (a batch of inbound mail) each file is looked
  at once, at its first use: the batch is rendered with one version of each.
- **The last good version stays in use.** When an edited template fails to
  load or render, the version of that template that last rendered is used
  instead, and :attr:`Rendered.broken` says which file version is broken, so the
  caller can alert staff (``bridge/services/notify.py``: once per file version).
  Without a last good version (broken since start-up) the error is raised.
  Nothing half-rendered is returned: subject and text come from one version.
- The sandbox keeps a template from reaching Python internals (names starting
  with ``_``, unsafe methods), repetition is capped, and only ``*.j2`` files of
  the folder can be included.
- ``StrictUndefined`` makes a misspelt variable an error instead of an empty
  string in a buyer's mail.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import operator
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.domain.template_contexts import DEFAULT_LANGUAGE, context_problems


class TemplateError(Exception):
    """Raised when a template is missing or fails to load or render; names the file (and line when known)."""

    def __init__(self, message: str, file: Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class TemplateContextError(TypeError):
    """Raised when the code passes a template a context that is not plain or not as documented (a bug)."""


@dataclass(frozen=True)
class BrokenTemplate:
    """A template file version that failed while an older good version was used in its place."""

    file: str           # path of the file that failed
    version: str        # sha256 of its content (first 16 hex digits); "missing" when the file is gone
    error: str          # what failed, as TemplateError says it


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    template: str = ""                       # the name rendered: "feedback_request.de", "staff_alert"
    broken: tuple[BrokenTemplate, ...] = ()  # set when the last good version stood in for a broken one


def shipped_templates() -> Path:
    """The folder of templates installed with mailbridge (``templates/`` in the repository)."""
    folder = importlib.resources.files("bridge").joinpath("templates")
    # pip installs a wheel as files, so this is a real folder; Jinja's FileSystemLoader needs one.
    if not isinstance(folder, Path) or not folder.is_dir():
        raise TemplateError(f"the templates shipped with mailbridge are missing ({folder}); reinstall mailbridge, "
                            "or point [daemon] templates at a folder of templates")
    return folder


def language_of(lang: str | None) -> str:
    """``de-DE``, ``de_de``, ``DE`` -> ``de``; empty or None -> ``""``."""
    return (lang or "").strip().lower().replace("_", "-").partition("-")[0]


class _TemplateFiles(jinja2.FileSystemLoader):
    """Only ``*.j2`` files of the folder: ``{% include %}`` cannot reach a config file or a password file
    kept beside the templates. (FileSystemLoader already refuses ``..`` and absolute paths.)"""

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        if not template.endswith(".j2"):
            raise jinja2.TemplateNotFound(template)
        return super().get_source(environment, template)


# The most characters (or items) one multiplication or power may produce: more than any mail needs,
# far less than what would exhaust the daemon's memory ('x' * 10**10).
MAX_REPEAT = 100_000


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int) and abs(right) > 1000:
            raise jinja2.exceptions.SecurityError(f"the power {right} is too large for a template")
        if op == "*":
            size = (len(left) * right if isinstance(left, (str, list, tuple)) and isinstance(right, int) else
                    len(right) * left if isinstance(right, (str, list, tuple)) and isinstance(left, int) else 0)
            if size > MAX_REPEAT:
                raise jinja2.exceptions.SecurityError(f"repeating to {size} characters is too much for a template")
            return operator.mul(left, right)
        return operator.pow(left, right)


class Templates:
    """Renders ``<name>.subject.j2`` and ``<name>.txt.j2`` from ``folder``, or the shipped templates (None)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = shipped_templates() if folder is None else folder
        self.env = _Sandbox(
            loader=_TemplateFiles(str(self.folder)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,   # plain-text mail, never HTML
            auto_reload=True,
            keep_trailing_newline=True,
        )
        # name -> the (subject, text) templates that last rendered together; shared by every account's thread.
        self._last_good: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}
        self._lock = threading.Lock()
        # Per thread, inside checked_once(): file name -> the template loaded (and checked) there.
        self._held = threading.local()

    @contextmanager
    def checked_once(self) -> Iterator[None]:
        """Within the block, each template file is checked for changes once, at its first use, not at every
        render (a stat of the file each time): what one batch of mail renders comes from one version of
        each file, and an edit is used from the next block on. Per thread; a nested block joins the outer."""
        if getattr(self._held, "templates", None) is not None:
            yield
            return
        self._held.templates = {}
        try:
            yield
        finally:
            self._held.templates = None

    def resolve(self, name: str, lang: str | None) -> str:
        """``name.<lang>`` when the folder has a file of it, else ``name`` (the English default)."""
        code = language_of(lang)
        if code and code != DEFAULT_LANGUAGE:
            localized = f"{name}.{code}"
            if any((self.folder / f"{localized}.{part}.j2").is_file() for part in ("subject", "txt")):
                return localized
        return name

    def render_localized(self, name: str, lang: str | None, context: dict[str, Any]) -> Rendered:
        """:meth:`render` of ``name.<lang>`` (``lang`` like ``de`` or ``de-DE``), falling back to ``name``
        when the folder has no file for that language. ``Rendered.template`` says which was used."""
        return self.render(self.resolve(name, lang), context)

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """The subject on one line and the text tidied (see :func:`_tidy`).

        Raises TemplateContextError for a context that is not plain or not as documented; TemplateError
        when the template fails and no good version of it was rendered before (else that version is
        used and ``Rendered.broken`` names the failed file)."""
        problems = context_problems(name, context)
        if problems:
            raise TemplateContextError(f"template {name}: " + "; ".join(problems))
        try:
            pair = (self._load(f"{name}.subject.j2"), self._load(f"{name}.txt.j2"))
            subject, text = (self._run(t, context) for t in pair)
        except TemplateError as exc:
            with self._lock:
                good = self._last_good.get(name)
            if good is None:
                raise
            subject, text = (self._run(t, context) for t in good)   # raises too if the old one fails here
            broken = (BrokenTemplate(str(exc.file or self.folder / name), _version(exc.file), str(exc)),)
            return Rendered(" ".join(subject.split()), _tidy(text), name, broken)
        with self._lock:
            self._last_good[name] = pair
        return Rendered(" ".join(subject.split()), _tidy(text), name)

    def _load(self, filename: str) -> jinja2.Template:
        held: dict[str, jinja2.Template] | None = getattr(self._held, "templates", None)
        if held is not None and filename in held:
            return held[filename]
        try:
            template = self.env.get_template(filename)
        except jinja2.TemplateNotFound as exc:
            path = self.folder / filename
            raise TemplateError(f"template {path} is missing", path) from exc
        except jinja2.TemplateSyntaxError as exc:
            path = self.folder / filename
            raise TemplateError(f"template {exc.filename or filename}, line {exc.lineno}: {exc.message}",
                                path, exc.lineno) from exc
        except jinja2.TemplateError as exc:
            path = self.folder / filename
            raise TemplateError(f"template {path}: {exc}", path) from exc
        if held is not None:
            held[filename] = template
        return template

    def _run(self, template: jinja2.Template, context: dict[str, Any]) -> str:
        try:
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise _failed(template, exc, str(exc)) from exc
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
            # Failures of the template's own expressions ({{ 1 / 0 }}, {{ items[9] }}): the template's fault.
            raise _failed(template, exc, f"{type(exc).__name__}: {exc}") from exc


def _failed(template: jinja2.Template, exc: BaseException, what: str) -> TemplateError:
    path = Path(template.filename) if template.filename else None
    line = error_line(exc, template.filename)
    where = f"{path or template.name}" + (f", line {line}" if line else "")
    return TemplateError(f"template {where}: {what}", path, line)


def error_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line an exception was raised at: Jinja rewrites tracebacks so that frames of
    template code carry the template's file name and line; the innermost one counts."""
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    found = None
    tb = exc.__traceback__
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


def _version(path: Path | None) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else "missing"
    except OSError:
        return "missing"


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
