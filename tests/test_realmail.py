"""mailbridge against real mail other projects collected (../shared/realmail): bounces and the whole path.

The corpus is found in a ``shared/realmail`` folder beside the checkout or any
folder above it (or at $MAILBRIDGE_REALMAIL); without it these tests skip: a
clone outside this workspace has no corpus. Nothing of it is copied here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import realmail  # noqa: E402  (the measuring script is the one source of how a file is scored)

from bridge.domain.classify import Kind  # noqa: E402


CORPUS = realmail.find_corpus()
pytestmark = pytest.mark.skipif(CORPUS is None, reason="../shared/realmail is not on this machine")


def _scores(name: str) -> tuple[int, int, int, list[str]]:
    """(exactly right by mailbridge, by flufl.bounce, files scored, real bounces given another kind)."""
    assert CORPUS is not None
    expected = json.loads((CORPUS / name / "expected.json").read_text("utf-8"))["files"]
    right = flufl_right = scored = 0
    misfiled: list[str] = []
    for filename, want in sorted(expected.items()):
        if want["addresses"] is None:
            continue
        raw = realmail.raw_mail(CORPUS / name / filename)
        wanted = {a.lower() for a in want["addresses"]}
        kind, got = realmail.ours(raw)
        scored += 1
        right += got == wanted
        flufl_right += realmail.flufl(raw) == wanted
        if wanted and kind is not Kind.BOUNCE:
            misfiled.append(f"{filename}: {kind}")
    return right, flufl_right, scored, misfiled


@pytest.mark.parametrize(("name", "at_least"), [("flufl_bounce", 95), ("mailman2_bounces", 8)])
def test_bounce_recipients_at_least_as_well_as_flufl_bounce(name: str, at_least: int) -> None:
    right, flufl_right, scored, _ = _scores(name)
    assert right >= flufl_right, (name, right, flufl_right, scored)
    assert right >= at_least, (name, right, scored)


def test_real_bounces_are_classified_as_bounces() -> None:
    misfiled = _scores("flufl_bounce")[3] + _scores("mailman2_bounces")[3]
    assert len(misfiled) <= 2, misfiled


def test_every_mail_of_the_corpus_goes_through_without_an_exception() -> None:
    assert CORPUS is not None
    failures = []
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix in realmail.MAIL_SUFFIXES and path.is_file():
            try:
                realmail.ours(realmail.raw_mail(path))
            except Exception as exc:  # noqa: BLE001 - the test names every one
                failures.append(f"{path.relative_to(CORPUS)}: {exc!r}")
    assert failures == []


def test_zammad_mails_read_as_zammad_reads_them_without_mojibake() -> None:
    """Sender, name, subject and body agree with Zammad's own parse, fairly compared
    (benchmarks/realmail.py says how): at most one miss per field, no mojibake."""
    assert CORPUS is not None
    scores = realmail.zammad_scores(CORPUS)
    for field in ("sender", "name", "subject", "body"):
        misses = [s for s in scores[field] if s.startswith("!")]
        assert len(misses) <= 1, (field, misses)
        assert len(scores[field]) >= 80, (field, len(scores[field]))   # the comparison still compares
    assert scores["mojibake"] == []
