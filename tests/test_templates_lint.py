"""``mailbridge templates lint`` and ``preview``: file, line and rule for every problem; exit status for CI."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bridge.adapters.templates import shipped_templates
from bridge.cli.command import main
from bridge.sandbox import config_toml
from bridge.domain import policy
from bridge.services.template_lint import CONTENT_RULES, lint

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration unless a test writes one: the default path must not be read."""
    monkeypatch.setenv("MAILBRIDGE_CONFIG", str(tmp_path / "no-such-config.toml"))
    monkeypatch.setattr("bridge.cli.templates.find_config_path",
                        lambda given, env: Path(given) if given else tmp_path / "no-such-config.toml")


def mailbridge(*argv: str) -> int:
    return main(list(argv), clock=lambda: NOW)


def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(shipped_templates(), folder)
    return folder


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def test_the_content_rules_are_guard_rules() -> None:
    assert set(CONTENT_RULES) <= set(policy.ALL_RULE_IDS)


def test_the_shipped_templates_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint(shipped_templates(), NOW) == []
    assert mailbridge("templates", "lint") == 0
    out, err = capsys.readouterr()
    assert out == "" and "all templates pass" in err


def test_a_template_asking_for_a_positive_review_fails_naming_file_line_and_rule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy(tmp_path)
    path = folder / "feedback_request.txt.j2"
    replace(path, "please share your", "please leave a positive review about")
    assert mailbridge("templates", "lint", str(folder)) == 1
    out, _ = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith(f"{path}:{line_of(path, 'positive review')} no_review_manipulation: ")
    assert "'positive review'" in line


@pytest.mark.parametrize(("file", "old", "new", "needle", "rule"), [
    ("feedback_request.de.txt.j2", "teilen Sie Ihre ehrliche Meinung", "geben Sie uns eine positive Bewertung",
     "positive Bewertung", "no_review_manipulation"),
    ("feedback_request.ja.txt.j2", "率直なご意見をお寄せください", "星5の高評価をお願いします", "高評価",
     "no_review_manipulation"),
    ("feedback_request.fr.txt.j2", "{{ seller_name }}\n", "{{ seller_name }}\nSuivez-nous sur acme-shop.example\n",
     "Suivez-nous", "no_links"),
    ("feedback_request.it.subject.j2", "La sua", "[Importante] La sua", "[Importante]",
     "no_important_unless_critical"),
    ("feedback_request.es.txt.j2", "{{ seller_name }}\n", "{{ seller_name }}\nLlámenos: +34 912 345 678\n",
     "+34", "no_contact_details"),
    ("buyer_reply.txt.j2", "{{ seller_name }}\n", "{{ seller_name }}\nwww.acme-outdoor.example\n",
     "www.acme", "no_links"),
    ("feedback_request.txt.j2", "{{ seller_name }}\n", "{{ seller_name }}\nUnsubscribe from our newsletter.\n",
     "Unsubscribe", "no_marketing"),
    ("staff_alert.txt.j2", "{{ body }}", "{{ bdy }}", "bdy", "undefined"),
    ("staff_confirmation.txt.j2", "{{ tag }}", "{{ tag.__class__ }}", "__class__", "unsafe"),
    ("reply_problem.txt.j2", "{% if staff_text %}", "{% if staff_text %}{% endfor %}", "{% endfor", "syntax"),
    ("buyer_reply.txt.j2", "{{ seller_name }}", "{{ seller_name / 0 }}", "seller_name / 0", "render"),
])
def test_each_problem_is_reported_with_its_file_line_and_rule(tmp_path: Path, file: str, old: str, new: str,
                                                               needle: str, rule: str) -> None:
    folder = copy(tmp_path)
    replace(folder / file, old, new)
    found = lint(folder, NOW)
    assert (str(folder / file), line_of(folder / file, needle), rule) in {(f.file, f.line, f.rule) for f in found}, \
        "\n".join(map(str, found))


def test_missing_and_misnamed_files(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    (folder / "staff_alert.subject.j2").unlink()
    (folder / "feedback_request.de.subject.j2").unlink()          # half a language
    (folder / "feedbak_request.txt.j2").write_text("x\n")
    (folder / "feedback_request.xx.txt.j2").write_text("x\n")
    (folder / "footer.j2").write_text("{{ seller_name }}\n")       # an included part: only loaded
    found = {(Path(f.file).name, f.rule) for f in lint(folder, NOW)}
    assert found == {("staff_alert.subject.j2", "missing"), ("feedback_request.de.subject.j2", "missing"),
                     ("feedbak_request.txt.j2", "unknown_template"),
                     ("feedback_request.xx.txt.j2", "unknown_language")}


@pytest.mark.parametrize("make", [
    lambda p: p / "nothing-here",
    lambda p: (p / "a-file").write_text("x") and p / "a-file",
    lambda p: (p / "empty").mkdir() or p / "empty",
])
def test_an_unusable_folder_exits_2(tmp_path: Path, make, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert mailbridge("templates", "lint", str(make(tmp_path))) == 2
    assert "cannot lint templates" in capsys.readouterr().err


def write_config(tmp_path: Path, folder: Path | None) -> Path:
    config = tmp_path / "mailbridge.toml"
    sections = {"daemon": {"templates": str(folder)}} if folder else {}
    config.write_text(config_toml(database=f"sqlite:///{tmp_path}/mb.db", seller="seller@acme.example",
                                  staff="staff@acme.example", imap_port=1143, smtp_port=2525, imap_password="x",
                                  sections=sections))
    return config


def test_without_dir_the_configured_folder_is_linted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy(tmp_path)
    replace(folder / "feedback_request.txt.j2", "honest feedback", "5-star feedback")
    config = write_config(tmp_path, folder)
    assert mailbridge("templates", "lint", "-c", str(config)) == 1
    assert f"{folder / 'feedback_request.txt.j2'}:" in capsys.readouterr().out
    assert mailbridge("templates", "lint", "-c", str(write_config(tmp_path, None))) == 0   # the shipped ones


def test_a_configuration_that_does_not_load_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[daemon]\ntemplates = 3\n")
    assert mailbridge("templates", "lint", "-c", str(config)) == 2
    assert "broken.toml" in capsys.readouterr().err


@pytest.mark.parametrize(("lang", "subject"), [
    (None, "Subject: Your order 302-1234567-7654321: how did it go?"),
    ("de", "Subject: Ihre Meinung zur Bestellung 302-1234567-7654321"),
    ("ja-JP", "Subject: ご注文 302-1234567-7654321 についてのご意見のお願い"),
])
def test_preview_prints_subject_and_text(lang: str | None, subject: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mailbridge("templates", "preview", "feedback_request", *(["--lang", lang] if lang else [])) == 0
    out = capsys.readouterr().out
    assert subject in out.splitlines() and "302-1234567-7654321" in out.split(subject, 1)[1]


def test_preview_of_an_unknown_template_or_language_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert mailbridge("templates", "preview", "feedback") == 2
    assert mailbridge("templates", "preview", "feedback_request", "--lang", "nl") == 2
    assert "feedback_request" in capsys.readouterr().err


def test_preview_of_a_broken_template_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy(tmp_path)
    replace(folder / "staff_alert.txt.j2", "{{ body }}", "{{ bdy }}")
    assert mailbridge("templates", "preview", "staff_alert", "--dir", str(folder)) == 1
    assert "'bdy' is undefined" in capsys.readouterr().err


def test_preview_of_an_order_renders_its_own_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridgekit import insert_order

    from bridge.store.engine import open_database

    config = write_config(tmp_path, None)
    engine = open_database(f"sqlite:///{tmp_path}/mb.db")
    insert_order(engine, "305-7654321-1234567", marketplace="amazon.de", language="de", buyer_name="Max Muster",
                 items=(("LAMP-1", "Acme Stirnlampe"), ("TENT-2", "Acme Zelt")))
    engine.dispose()

    assert mailbridge("-c", str(config), "templates", "preview", "feedback_request", "--order",
                      "305-7654321-1234567") == 0
    out = capsys.readouterr().out
    assert "(order 305-7654321-1234567 of account acme, language de)" in out
    assert "Subject: Ihre Meinung zur Bestellung 305-7654321-1234567" in out
    assert "Max Muster" in out and "Acme Stirnlampe" in out and "Acme Zelt" in out
    assert "302-1234567-7654321" not in out and "Jana Schmidt" not in out        # no sample value left

    assert mailbridge("-c", str(config), "templates", "preview", "feedback_request", "--order",
                      "305-7654321-1234567", "--lang", "fr") == 0
    out = capsys.readouterr().out
    assert "language fr)" in out and "305-7654321-1234567" in out and "Ihre Meinung" not in out


@pytest.mark.parametrize(("argv", "error"), [
    (("feedback_request", "--order", "999-0000000-0000000"), "no order 999-0000000-0000000 in account acme"),
    (("staff_alert", "--order", "305-7654321-1234567"), "template 'staff_alert' is not made from an order"),
])
def test_preview_of_an_order_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                argv: tuple[str, ...], error: str) -> None:
    config = write_config(tmp_path, None)
    assert mailbridge("-c", str(config), "templates", "preview", *argv) == 2
    assert error in capsys.readouterr().err


def test_preview_of_an_order_needs_the_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert mailbridge("templates", "preview", "feedback_request", "--order", "305-7654321-1234567") == 2
    assert "give the configuration with -c FILE" in capsys.readouterr().err
