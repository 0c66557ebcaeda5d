"""Template reloading: an edited template is used within a second, a fixed one at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.adapters import templates as templating
from bridge.adapters.templates import TemplateError, Templates


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(templating.time, "monotonic", lambda: now[0])
    return now


def write(folder: Path, subject: str, text: str) -> None:
    (folder / "note.subject.j2").write_text(subject)
    (folder / "note.txt.j2").write_text(text)


def test_an_edited_template_is_used_after_the_recheck_interval(tmp_path: Path, clock: list[float]) -> None:
    write(tmp_path, "Hello {{ name }}", "first {{ name }}\n")
    templates = Templates(tmp_path)
    assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"
    write(tmp_path, "Hello {{ name }}", "second {{ name }}\n")
    clock[0] += templating.RECHECK_SECONDS / 2
    assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"     # not looked at yet
    clock[0] += templating.RECHECK_SECONDS
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
    # Mostly ASCII with Unix line ends (the quick path), with each character that would leave it.
    plain = ["a", "b c", " ", "\t", "\n", "\n", "\n", "\x1f", "  x  ", "\x0b", "\x1c", "\x1d", "\x1e", "\x85"]
    cases = ["", "\n", "\n\n\n", "a", "a\n", "\n\na\n\n\nb  \n\n", "  \n x\t\n\n\n", "a \n", "a\t", "a\x1f\nb",
             "a\x1f", "\n\n\nx", "x\n\n\n", "a\nb\n"]
    cases += ["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30))) for _ in range(3000)]
    cases += ["".join(rng.choice(plain[:9] if i % 2 else plain) for _ in range(rng.randrange(0, 30)))
              for i in range(6000)]
    for text in cases:
        assert templating._normalise_text(text) == _normalise_reference(text), repr(text)


def test_indent_is_jinjas_indent() -> None:
    import random

    from jinja2.filters import do_indent
    from markupsafe import Markup

    rng = random.Random(11)
    pieces = ["a", "b c", " ", "\t", "\n", "\n", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f",
              "\x85", "\u2028", "\u2029", "é", "<b>"]
    texts = ["", "\n", "\n\n", "a", "a\n", "\na", "a\n\n\nb", "a\nb\n", " \n ", "\n\n\nx\n\n"]
    texts += ["".join(rng.choice(pieces[:7] if i % 2 else pieces) for _ in range(rng.randrange(0, 25)))
              for i in range(3000)]
    for text in texts:
        for s in (text, Markup(text)):
            for width in (0, 2, 4, "> ", -1):
                for first in (False, True):
                    for blank in (False, True):
                        expected = do_indent(s, width, first, blank)
                        got = templating._indent(s, width, first, blank)
                        assert got == expected and type(got) is type(expected), (s, width, first, blank)


TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.j2")))
@pytest.mark.parametrize("variables", [
    {},
    {"kind": "other", "flags": ["A-TO-Z CLAIM"], "defects": ["bad base64 padding"], "message_count": 1,
     "text": "line one\n\n\n  line two  \n", "order_id": None, "buyer_alias": None, "buyer_name": None},
    {"kind": "buyer", "flags": [], "defects": [], "message_count": 3, "text": "Wo ist mein Paket? — danke",
     "order_id": "111-2223334-4445556", "buyer_alias": "abc@marketplace.amazon.de", "buyer_name": "Jörg",
     "range": "a variable that shadows a global"},
])
def test_rendering_is_what_jinja_renders(name: str, variables: dict[str, object]) -> None:
    """The shortcut past Template.render, and our indent filter, give the same text, or the same error,
    for every shipped template."""
    import jinja2
    from jinja2.filters import do_indent

    templates = Templates(TEMPLATES)
    plain = Templates(TEMPLATES)
    plain.env.filters["indent"] = do_indent
    context = {"marker": "##- above -##", "tag": "MB-7", "subject": "Where is it?", "original_subject": "s",
               "from_display": "A <a@b.example>", "marketplace": "amazon.de", "received": "2026-11-24 01:00 UTC",
               "account": "acme", "seller_address": "seller@acme.example", "title": "T", "body": "B",
               **variables}
    template = templates.env.get_template(name)
    try:
        expected: object = plain.env.get_template(name).render(context)
    except jinja2.TemplateError as exc:
        expected = (type(exc), str(exc))
    try:
        got: object = templating._render(template, dict(template.globals), context)
    except jinja2.TemplateError as exc:
        got = (type(exc), str(exc))
    assert got == expected
