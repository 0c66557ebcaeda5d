"""A broken edit keeps the last good version in use, and staff hear of it once per file version."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from bridgekit import make_settings, rows

from bridge import store
from bridge.adapters.templates import TemplateError, Templates, shipped_templates
from bridge.domain.template_contexts import sample
from bridge.sandbox import SandboxAccount
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_alert, render
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
CONFIRMATION = sample("staff_confirmation")


def edit(path: Path, content: str) -> None:
    """Save ``content`` with an mtime later than the file had, as an admin's editor would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(content, encoding="utf-8")
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


def note(folder: Path, subject: str, text: str) -> None:
    edit(folder / "note.subject.j2", subject)
    edit(folder / "note.txt.j2", text)


@pytest.mark.parametrize("broken", [
    "{% if %}\n",                      # does not load: syntax
    "Hello {{ nmae }}\n",              # does not render: undefined
    "{{ 1 / 0 }}\n",                   # does not render: the template's own arithmetic
    "{{ ''.__class__.__mro__ }}\n",    # refused by the sandbox
])
def test_a_broken_edit_renders_the_last_good_version(tmp_path: Path, broken: str) -> None:
    note(tmp_path, "Hi {{ name }}", "first {{ name }}\n")
    templates = Templates(tmp_path)
    assert templates.render("note", {"name": "Ann"}).text == "first Ann\n"
    edit(tmp_path / "note.txt.j2", broken)
    rendered = templates.render("note", {"name": "Ann"})
    assert (rendered.subject, rendered.text) == ("Hi Ann", "first Ann\n")
    (b,) = rendered.broken
    assert b.file == str(tmp_path / "note.txt.j2") and len(b.version) == 16 and "note.txt.j2" in b.error
    assert templates.render("note", {"name": "Ann"}).broken == rendered.broken    # the same version
    edit(tmp_path / "note.txt.j2", broken + "more\n")
    assert templates.render("note", {"name": "Ann"}).broken[0].version != b.version   # another version
    edit(tmp_path / "note.txt.j2", "second {{ name }}\n")
    fixed = templates.render("note", {"name": "Ann"})
    assert (fixed.text, fixed.broken) == ("second Ann\n", ())


def test_subject_and_text_come_from_one_version(tmp_path: Path) -> None:
    note(tmp_path, "Old subject", "old text\n")
    templates = Templates(tmp_path)
    templates.render("note", {})
    note(tmp_path, "New subject", "{{ broken\n")       # the admin saved both; the text is broken
    rendered = templates.render("note", {})
    assert (rendered.subject, rendered.text) == ("Old subject", "old text\n")


def test_a_deleted_file_keeps_the_last_good_version_too(tmp_path: Path) -> None:
    note(tmp_path, "s", "t\n")
    templates = Templates(tmp_path)
    templates.render("note", {})
    (tmp_path / "note.txt.j2").unlink()
    rendered = templates.render("note", {})
    assert rendered.text == "t\n" and rendered.broken[0].version == "missing"


def test_without_a_good_version_the_error_is_raised(tmp_path: Path) -> None:
    note(tmp_path, "s", "{{ nmae }}\n")
    with pytest.raises(TemplateError, match="nmae"):
        Templates(tmp_path).render("note", {})


def test_a_good_version_that_fails_on_this_context_is_raised(tmp_path: Path) -> None:
    # Not a broken edit: the current version fails for this mail. There is nothing better to use.
    note(tmp_path, "s", "{{ items[0] }}\n")
    templates = Templates(tmp_path)
    assert templates.render("note", {"items": ["a"]}).text == "a\n"
    with pytest.raises(TemplateError, match="note.txt.j2"):
        templates.render("note", {"items": []})


# --------------------------------------------------------------------------- the alert, in the database

def account(tmp_path: Path, folder: Path) -> tuple[AccountContext, object]:
    seller = SandboxAccount("seller@acme.example", "x", "127.0.0.1", 1)
    staff = SandboxAccount("staff@acme.example", "x", "127.0.0.1", 1)
    settings = make_settings(tmp_path, seller, staff, SimpleNamespace(port=1),  # type: ignore[arg-type]
                             daemon={"templates": str(folder)})
    engine = open_database(settings.database.url)
    return AccountContext.build(settings.accounts[0], store.token_secret(engine, None),
                                Templates(settings.templates_dir)), engine


def alerts(engine: object) -> list[str]:
    return [r.subject for r in rows(engine, store.OUTBOX, purpose="staff_alert")]


def copy_of_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(shipped_templates(), folder)
    return folder


def test_staff_are_alerted_once_per_broken_version(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    acct, engine = account(tmp_path, folder)
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        render(conn, acct, "staff_confirmation", CONFIRMATION, NOW)
    good = (folder / "staff_confirmation.txt.j2").read_text()
    edit(folder / "staff_confirmation.txt.j2", good + "{{ oops }}\n")
    for _ in range(3):                                                  # three mails, three batches
        with engine.begin() as conn:                                   # type: ignore[attr-defined]
            rendered = render(conn, acct, "staff_confirmation", CONFIRMATION, NOW)
            assert "Your reply was handed" in rendered.text
    assert alerts(engine) == ["[mailbridge] Template staff_confirmation.txt.j2 is broken; the last good version "
                              "is in use"]
    (row,) = rows(engine, store.OUTBOX, purpose="staff_alert")
    assert b"oops" in row.raw and row.dedupe_key.startswith("template-broken:acme:")
    edit(folder / "staff_confirmation.txt.j2", good + "{{ oops2 }}\n")     # another broken version: told again
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        queue_staff_alert(conn, acct, "t", "b", NOW)
        render(conn, acct, "staff_confirmation", CONFIRMATION, NOW)
    assert len(alerts(engine)) == 3


def test_a_rolled_back_alert_is_queued_again(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    acct, engine = account(tmp_path, folder)
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        queue_staff_alert(conn, acct, "first", "b", NOW)
    edit(folder / "staff_alert.subject.j2", "{{ title ")
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:                                   # type: ignore[attr-defined]
            queue_staff_alert(conn, acct, "second", "b", NOW)
            raise RuntimeError("the batch fails for another reason")
    assert alerts(engine) == ["[mailbridge] first"]
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        queue_staff_alert(conn, acct, "third", "b", NOW)
    assert sorted(alerts(engine)) == sorted(["[mailbridge] first", "[mailbridge] third",
                                             "[mailbridge] Template staff_alert.subject.j2 is broken; the last "
                                             "good version is in use"])


def test_a_broken_alert_template_alerts_about_itself_without_recursion(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    acct, engine = account(tmp_path, folder)
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        queue_staff_alert(conn, acct, "before", "b", NOW)              # staff_alert has a good version now
    edit(folder / "staff_alert.txt.j2", "{{ title }\n")
    edit(folder / "staff_notification.txt.j2", "{% endif %}\n")        # and another template breaks too
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        queue_staff_alert(conn, acct, "after", "body", NOW)
    subjects = alerts(engine)
    assert subjects.count("[mailbridge] after") == 1
    assert subjects.count("[mailbridge] Template staff_alert.txt.j2 is broken; the last good version is in use") == 1
    assert len(subjects) == 3


def test_the_alert_is_written_even_when_the_alert_template_never_worked(tmp_path: Path) -> None:
    folder = copy_of_shipped(tmp_path)
    acct, engine = account(tmp_path, folder)
    edit(folder / "staff_alert.txt.j2", "{{ title }\n")                # broken before its first use
    with pytest.raises(TemplateError):
        acct.templates.render("staff_alert", sample("staff_alert"))
    acct.templates.render("staff_confirmation", CONFIRMATION)
    edit(folder / "staff_confirmation.txt.j2", "{{ nope }}\n")
    with engine.begin() as conn:                                       # type: ignore[attr-defined]
        rendered = render(conn, acct, "staff_confirmation", CONFIRMATION, NOW)
    assert rendered.broken
    (row,) = rows(engine, store.OUTBOX, purpose="staff_alert")
    assert row.subject == "[mailbridge] Template staff_confirmation.txt.j2 is broken; the last good version is in use"
    assert b"nope" in row.raw
