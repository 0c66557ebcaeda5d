"""Sandbox escape attempts in templates fail safely: rendering raises TemplateError, lint reports them."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bridge.adapters.templates import TemplateError, Templates, shipped_templates
from bridge.services.template_lint import lint

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)

# (what is tried, the template text): each must fail with TemplateError and leak nothing.
ESCAPES = [
    ("the class hierarchy", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    ("the mro alone", "{{ ''.__class__.__mro__ }}"),
    ("a global's module globals", "{{ cycler.__init__.__globals__ }}"),
    ("joiner's globals", "{{ joiner.__init__.__globals__['os'] }}"),
    ("namespace's globals", "{{ namespace.__init__.__globals__ }}"),
    ("lipsum's globals", "{{ lipsum.__globals__['os'].popen('id').read() }}"),
    ("the template itself", "{{ self._TemplateReference__context }}"),
    ("a private attribute by attr()", "{{ order_id|attr('__class__') }}"),
    ("a private key by subscript", "{{ order_id['__class__'] }}"),
    ("a format string", "{{ '{0.__class__.__mro__}'.format(order_id) }}"),
    ("format_map", "{{ '{x.__class__}'.format_map({'x': order_id}) }}"),
    ("str.format as a filter", "{{ '%s'|format(order_id.__class__) }}"),
    ("a function's code", "{{ range.__call__.__code__ }}"),
    ("the config of the environment", "{{ config }}"),
    ("request-like globals", "{{ request }}"),
    ("the loader", "{% include '../mailbridge.toml' %}"),
    ("a file that is not a template", "{% include 'secret.txt' %}"),
    ("an absolute path", "{% include '/etc/passwd' %}"),
    ("a huge string", "{{ 'x' * 1000000000 }}"),
    ("a huge power", "{{ 10 ** 1000000000 }}"),
    ("a huge range", "{% for i in range(10 ** 9) %}{% endfor %}"),
    ("a mutating method", "{% set l = [] %}{{ l.append(1) }}"),
]


def write(folder: Path, text: str) -> None:
    for name, content in (("note.subject.j2", "Order {{ order_id }}"), ("note.txt.j2", text + "\n")):
        path = folder / name
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(content)
        later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
        os.utime(path, ns=(later, later))


@pytest.mark.parametrize(("what", "text"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_an_escape_attempt_raises_template_error(tmp_path: Path, what: str, text: str) -> None:
    templates_dir = tmp_path / "templates"
    templates_dir.mkdir()
    (tmp_path / "mailbridge.toml").write_text("password = 'hunter2'\n")
    (templates_dir / "secret.txt").write_text("hunter2\n")
    write(templates_dir, text)
    with pytest.raises(TemplateError) as caught:
        Templates(templates_dir).render("note", {"order_id": "111-2223334-4445556"})
    assert "hunter2" not in str(caught.value) and "uid=" not in str(caught.value)
    assert "note.txt.j2" in str(caught.value)


@pytest.mark.parametrize(("what", "text"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_lint_reports_an_escape_attempt_with_file_and_line(tmp_path: Path, what: str, text: str) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(shipped_templates(), folder)
    path = folder / "feedback_request.de.txt.j2"
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text + "\n", encoding="utf-8")
    line = len(path.read_text(encoding="utf-8").splitlines())
    found = [f for f in lint(folder, NOW) if f.file == str(path)]
    assert found and all(f.line == line for f in found), "\n".join(map(str, found))
    assert {f.rule for f in found} <= {"unsafe", "undefined", "render"}
