"""Templates: shipped inside the package, sandboxed, strict, reloaded when their files change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.adapters.templates import TemplateError, Templates, _tidy, shipped_templates

REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def write(folder: Path, subject: str, text: str) -> None:
    """Write both files of the template "note", with an mtime later than any they had (as a real edit would)."""
    for path, content in ((folder / "note.subject.j2", subject), (folder / "note.txt.j2", text)):
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(content)
        later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
        os.utime(path, ns=(later, later))


def test_an_edited_template_is_used_from_the_next_render(tmp_path: Path) -> None:
    write(tmp_path, "Hello {{ name }}", "first {{ name }}\n")
    templates = Templates(tmp_path)
    assert templates.render("note", {"name": "Ann"}) == templates.render("note", {"name": "Ann"})
    assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"
    write(tmp_path, "Hi {{ name }}", "second {{ name }}\n")
    rendered = templates.render("note", {"name": "Ann"})
    assert (rendered.subject, rendered.text) == ("Hi Ann", "second Ann\n")


def test_within_checked_once_an_edit_waits_for_the_next_block(tmp_path: Path) -> None:
    # A batch of mail is rendered with one version of each file; the edit is used from the next batch on.
    write(tmp_path, "Hello {{ name }}", "first {{ name }}\n")
    templates = Templates(tmp_path)
    with templates.checked_once():
        assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"
        write(tmp_path, "Hi {{ name }}", "second {{ name }}\n")
        with templates.checked_once():   # a nested block joins the outer one
            assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"
        assert templates.render("note", {"name": "Ann"}).subject == "Hello Ann"
    with templates.checked_once():
        rendered = templates.render("note", {"name": "Ann"})
    assert (rendered.subject, rendered.text) == ("Hi Ann", "second Ann\n")


def test_a_fixed_template_is_used_at_once(tmp_path: Path) -> None:
    write(tmp_path, "Hello", "{{ typo }}\n")
    templates = Templates(tmp_path)
    with pytest.raises(TemplateError, match="typo"):
        templates.render("note", {})
    write(tmp_path, "Hello", "{% if %}\n")
    with pytest.raises(TemplateError, match=r"note.txt.j2, line 1"):
        templates.render("note", {})
    write(tmp_path, "Hello", "fixed\n")
    assert templates.render("note", {}).text == "fixed\n"


def test_a_misspelt_variable_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, "Order {{ order_id }}", "Hello {{ buyer_nmae }}\n")
    with pytest.raises(TemplateError, match=r"note\.txt\.j2.*'buyer_nmae' is undefined"):
        Templates(tmp_path).render("note", {"order_id": "1", "buyer_name": "Ann"})


def test_a_missing_template_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=f"template {tmp_path}/nothing.subject.j2 is missing"):
        Templates(tmp_path).render("nothing", {})


def test_the_sandbox_keeps_python_internals_out_of_reach(tmp_path: Path) -> None:
    write(tmp_path, "s", "{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(TemplateError, match="unsafe"):
        Templates(tmp_path).render("note", {})


@pytest.mark.parametrize(("rendered", "tidy"), [
    ("", "\n"),
    ("a", "a\n"),
    ("a\n\n\n\n", "a\n"),                              # one newline at the end
    ("a  \nb\t\n", "a\nb\n"),                          # trailing whitespace
    ("a\n\n\n\nb\n", "a\n\nb\n"),                      # a run of blank lines becomes one
    ("a\n  \n\t\n\nb\n", "a\n\nb\n"),                  # lines of spaces are blank lines
    ("\n\n\na\n", "\na\n"),                            # a leading run too
    ("a\r\n\r\n\r\nb\r\n", "a\n\nb\n"),                # any line end
    ("  indented\n", "  indented\n"),                  # leading space stays
])
def test_text_is_tidied(rendered: str, tidy: str) -> None:
    assert _tidy(rendered) == tidy


def test_the_shipped_templates_are_the_repositorys_templates_folder() -> None:
    shipped = shipped_templates()
    assert sorted(p.name for p in shipped.iterdir()) == sorted(p.name for p in REPO_TEMPLATES.iterdir())
    assert Templates().folder == Templates(None).folder == shipped


def test_a_shipped_template_renders_indented_and_tidied() -> None:
    # What inbound.py passes, with text that needs indenting and tidying.
    context = {
        "marker": "##- reply above this line -##", "kind": "buyer", "flags": ["A-TO-Z CLAIM"], "tag": "MB-7",
        "subject": "Where is it?", "original_subject": "Where is it?", "from_display": "Ann <a@b.example>",
        "buyer_name": "Ann", "buyer_alias": "abc@marketplace.amazon.de", "order_id": "111-2223334-4445556",
        "text": "line one\n\n\n  line two  ", "marketplace": "amazon.de", "message_count": 2,
        "received": "2026-11-24 01:00 UTC", "defects": [], "seller_address": "seller@acme.example",
        "account": "acme",
    }
    rendered = Templates().render("staff_notification", context)
    assert rendered.subject == "[A-TO-Z CLAIM] Where is it? [MB-7]"
    assert "Ann wrote about order 111-2223334-4445556:\n\n  line one\n\n    line two\n\n---" in rendered.text
    assert "Order:        111-2223334-4445556\n" in rendered.text
