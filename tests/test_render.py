"""Template reloading: an edited template is used within a second, a fixed one at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import render
from bridge.render import TemplateError, Templates


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: now[0])
    return now


def write(folder: Path, subject: str, text: str) -> None:
    (folder / "note.subject.j2").write_text(subject)
    (folder / "note.txt.j2").write_text(text)


def test_an_edited_template_is_used_after_the_recheck_interval(tmp_path: Path, clock: list[float]) -> None:
    write(tmp_path, "Hello {{ name }}", "first {{ name }}\n")
    templates = Templates(tmp_path)
    assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"
    write(tmp_path, "Hello {{ name }}", "second {{ name }}\n")
    clock[0] += render.RECHECK_SECONDS / 2
    assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"     # not looked at yet
    clock[0] += render.RECHECK_SECONDS
    assert templates.render("note", {"name": "Ann"}).text == "second Ann\n"


def test_a_failing_template_is_looked_at_again_at_once(tmp_path: Path, clock: list[float]) -> None:
    write(tmp_path, "Hello", "{{ typo }}\n")
    templates = Templates(tmp_path)
    with pytest.raises(TemplateError, match="typo"):
        templates.render("note", {})
    write(tmp_path, "Hello", "fixed\n")
    assert templates.render("note", {}).text == "fixed\n"                      # same instant, no waiting


def _normalise_reference(text: str) -> str:
    """The rule, spelt out line by line."""
    out: list[str] = []
    for line in (line.rstrip() for line in text.splitlines()):
        if not line and out and not out[-1]:
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def test_text_normalisation_follows_the_rule() -> None:
    import random

    rng = random.Random(5)
    pieces = ["a", "b c", " ", "\t", "\n", "\n", "\n", "\r\n", "\r", "\x0c", "\u2028", "\xa0", "  x  "]
    cases = ["", "\n", "\n\n\n", "a", "a\n", "\n\na\n\n\nb  \n\n", "  \n x\t\n\n\n"]
    cases += ["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30))) for _ in range(3000)]
    for text in cases:
        assert render._normalise_text(text) == _normalise_reference(text), repr(text)
