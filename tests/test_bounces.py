"""bridge.domain.bounces: DSNs, MTA bounces and marketplace notices over an .eml corpus."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from bridge.domain.bounces import BounceKind, BounceReport, FailedRecipient, analyse
from bridge.domain.marketplaces import amazon

DATA = Path(__file__).parent / "data"
BOUNCES = DATA / "bounces"
INBOUND = DATA / "inbound"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((BOUNCES / "expected.toml").read_text("utf-8"))
LANGUAGES = ("en", "de", "fr", "es", "it", "ja")


def _analyse(path: Path) -> BounceReport | None:
    return analyse(path.read_bytes())


def test_every_fixture_has_expectations() -> None:
    files = {p.name for p in BOUNCES.glob("*.eml")}
    assert files == set(EXPECTED), (sorted(files - set(EXPECTED)), sorted(set(EXPECTED) - files))
    assert len(files) >= 25


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name: str) -> None:
    want = EXPECTED[name]
    report = _analyse(BOUNCES / name)
    if want["kind"] == "none":
        assert report is None, report
        return
    assert report is not None
    assert report.kind == want["kind"]
    assert report.permanent is want["permanent"]
    assert report.is_hard() is want["permanent"] and report.is_soft() is not want["permanent"]
    recipients = [{"address": r.address, "status": r.status, "action": r.action} for r in report.recipients]
    assert recipients == [{"status": None, **r} for r in want.get("recipients", [])]
    for recipient, fragment in zip(report.recipients, want.get("diagnostic_contains", []), strict=True):
        if fragment:
            assert fragment in (recipient.diagnostic or ""), recipient
        else:
            assert recipient.diagnostic is None
    for key in ("original_message_id", "order_id", "buyer_alias", "marketplace_language"):
        assert getattr(report, key) == want.get(key), key
    for fragment in want.get("reason_contains", []):
        assert fragment in report.reason
    assert report.reason and report.evidence
    assert report.verified is not want.get("unverified", False)


def test_notice_kinds_cover_six_languages() -> None:
    covered = {(w["kind"], w.get("marketplace_language")) for w in EXPECTED.values()}
    for kind in ("optout", "guideline_violation", "restricted"):
        for language in LANGUAGES:
            assert (kind, language) in covered, (kind, language)


def test_corpus_covers_the_mtas() -> None:
    prefixes = {name.split("_", 1)[0] for name in EXPECTED}
    assert {"postfix", "exim", "qmail", "exchange", "outlook", "gmail", "sendmail"} <= prefixes
    assert sum(w["kind"] == "dsn" and not w["permanent"] for w in EXPECTED.values()) >= 3   # delayed 4.x.x


# ------------------------------------------------------------------ precision / recall over the mixed corpus


def _inbound_truth() -> dict[Path, tuple[bool, bool]]:
    """(is a bounce or notice, is an opt-out) for each inbound fixture, from its expected.toml."""
    if not INBOUND.is_dir():
        return {}
    expected_file = INBOUND / "expected.toml"
    expected = tomllib.loads(expected_file.read_text("utf-8")) if expected_file.exists() else {}
    truth = {}
    for path in sorted(INBOUND.glob("*.eml")):
        is_bounce = expected.get(path.name, {}).get("kind") == "bounce"
        truth[path] = (is_bounce, is_bounce and path.name.startswith("amazon_optout_notice"))
    return truth


def _corpus() -> dict[Path, tuple[bool, bool, bool]]:
    """path -> (is a bounce or notice, is an opt-out, written as a look-alike)."""
    corpus = {BOUNCES / name: (w["kind"] != "none", w["kind"] == "optout", bool(w.get("lookalike")))
              for name, w in EXPECTED.items()}
    for path, (is_bounce, is_optout) in _inbound_truth().items():
        corpus[path] = (is_bounce, is_optout, False)
    return corpus


def _score(pairs: list[tuple[bool, bool]]) -> tuple[int, int, int, float, float]:
    tp = sum(truth and got for truth, got in pairs)
    fp = sum(got and not truth for truth, got in pairs)
    fn = sum(truth and not got for truth, got in pairs)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return tp, fp, fn, precision, recall


def test_precision_and_recall_over_mixed_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = _corpus()
    reports = {path: _analyse(path) for path in corpus}
    said_optout = {path: r is not None and r.kind is BounceKind.OPTOUT for path, r in reports.items()}
    optout = [(truth[1], said_optout[path]) for path, truth in corpus.items()]
    detected = [(truth[0], reports[path] is not None) for path, truth in corpus.items()]
    o_tp, o_fp, o_fn, o_precision, o_recall = _score(optout)
    b_tp, b_fp, b_fn, b_precision, b_recall = _score(detected)
    with capsys.disabled():
        print(f"\n[bounces] mixed corpus: {len(corpus)} messages "
              f"({sum(1 for p in corpus if p.parent == BOUNCES)} bounce corpus, "
              f"{sum(1 for p in corpus if p.parent == INBOUND)} inbound), "
              f"{sum(t[2] for t in corpus.values())} look-alikes")
        print(f"[bounces] opt-out detection: precision {o_precision:.3f} recall {o_recall:.3f} "
              f"(tp={o_tp} fp={o_fp} fn={o_fn})")
        print(f"[bounces] bounce/notice detection: precision {b_precision:.3f} recall {b_recall:.3f} "
              f"(tp={b_tp} fp={b_fp} fn={b_fn})")
    # The hard requirement: no look-alike (nor any other non-opt-out) is taken for an opt-out.
    lookalikes_as_optout = [p.name for p, (_, _, lookalike) in corpus.items() if lookalike and said_optout[p]]
    others_as_optout = [p.name for p, (_, is_optout, _) in corpus.items() if not is_optout and said_optout[p]]
    assert lookalikes_as_optout == [] and others_as_optout == []
    assert sum(t[2] for t in corpus.values()) >= 8
    assert o_fp == 0 and b_fp == 0
    # Recall on our own corpus; the non-English notices were written from the fingerprints
    # they test (unverified), so this proves the plumbing, not Amazon's real wording.
    assert o_recall == 1.0 and b_recall == 1.0


def test_inbound_bounces_agree_with_the_classifier() -> None:
    truth = _inbound_truth()
    if not truth:
        pytest.skip("no tests/data/inbound corpus")
    for path, (is_bounce, is_optout) in truth.items():
        report = _analyse(path)
        assert (report is not None) is is_bounce, path.name
        assert (report is not None and report.kind is BounceKind.OPTOUT) is is_optout, path.name


# ------------------------------------------------------------------ fingerprints: reused from bridge.domain.marketplaces.amazon

_KINDS = {"opted_out": "optout", "guidelines": "guideline_violation", "restricted": "restricted",
          "not_delivered": "not_delivered"}


def _notice(body: str, sender: str = "donotreply@amazon.com") -> bytes:
    return (f"From: Amazon <{sender}>\nTo: seller@acme.example\nSubject: Notice\n"
            f"Message-ID: <n1@amazonses.com>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n\n{body}\n").encode("utf-8")


def _buyer_message(words: str) -> bytes:
    return ("From: \"Pat - Amazon Marketplace\" <m9n8b7v6c5x4z3l2@marketplace.amazon.com>\n"
            "To: seller@acme.example\nSubject: Order delivery inquiry from Amazon customer Pat "
            "(Order: 115-1357913-5791357)\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\nOrder ID 115-1357913-5791357:\n\n"
            "------------- Begin message -------------\n\n"
            f"{words}\n\n------------- End message -------------\n\n[commMgrTok:P1Q2R3S4T5U6V]\n").encode("utf-8")


@pytest.mark.parametrize(("reason", "text"), [
    pytest.param(reason, lt.text, id=f"{reason}-{lt.language}-{i}")
    for i, (reason, lt) in enumerate(amazon.UNDELIVERED_FINGERPRINTS)])
def test_every_amazon_fingerprint_is_recognised(reason: str, text: str) -> None:
    """Every fingerprint amazon.py knows, wrapped as a notice about an order, gives its kind."""
    report = analyse(_notice(f"Order 111-2223334-4445556:\n{text}."))
    assert report is not None and report.kind == _KINDS[reason]


@pytest.mark.parametrize("text", [
    pytest.param(lt.text, id=f"{lt.language}-{i}")
    for i, (reason, lt) in enumerate(amazon.UNDELIVERED_FINGERPRINTS) if reason == "opted_out"])
def test_buyer_writing_a_fingerprint_is_not_a_notice(text: str) -> None:
    assert analyse(_buyer_message(f"Hello, {text}? Please answer me anyway.")) is None


def test_sender_alone_does_not_make_a_notice() -> None:
    assert analyse(_notice("Your payment report is ready.")) is None


def test_notice_from_an_unknown_sender_is_still_recognised_by_content() -> None:
    # docs/marketplaces.md: the notice's sender address is unverified; detect by content.
    report = analyse(_notice("We were unable to deliver the message you sent for order 111-2223334-4445556 "
                             "because the buyer has chosen to opt out of receiving unsolicited messages from "
                             "sellers.", sender="copies@acme-forwarder.example"))
    assert report is not None and report.kind is BounceKind.OPTOUT
    assert "copies@acme-forwarder.example" in report.evidence


def test_not_delivered_without_an_order_is_ordinary_english() -> None:
    assert analyse(_notice("We were unable to deliver the message you sent. Please try again.")) is None


# ------------------------------------------------------------------ robustness and small values


@pytest.mark.parametrize("raw", [
    b"",
    b"\r\n\r\n",
    b"this is not a mail message",
    b"From: a@b.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n",
    b"From: MAILER-DAEMON@x.example\nReturn-Path: <>\nSubject: failure notice\n\n\xff\xfe garbage",
    b"From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
    b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n--b--\n",
])
def test_odd_input_never_raises(raw: bytes) -> None:
    report = analyse(raw)
    assert report is None or report.kind is BounceKind.DSN


def test_bounce_without_identifiable_recipient_is_still_reported() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example\nReturn-Path: <>\nTo: seller@acme.example\n"
           b"Subject: Undelivered Mail Returned to Sender\n\nSomething went wrong.\n")
    report = analyse(raw)
    assert report is not None and report.kind is BounceKind.DSN and report.recipients == ()
    assert report.permanent and "did not say to whom" in report.reason


def test_every_inbound_fixture_is_safe() -> None:
    paths = sorted(INBOUND.glob("*.eml"))
    assert paths                                   # the corpus is there: the loop below runs
    for path in paths:
        analyse(path.read_bytes())                 # never raises, whatever the mail


@pytest.mark.parametrize(("recipient", "permanent"), [
    (FailedRecipient("a@b.example", "5.1.1", None, "failed"), True),
    (FailedRecipient("a@b.example", "4.4.1", None, "delayed"), False),
    (FailedRecipient("a@b.example", "4.2.2", None, "failed"), False),    # the code wins over the action
    (FailedRecipient("a@b.example", "5.2.2", None, "delayed"), True),
    (FailedRecipient("a@b.example", None, None, "failed"), True),
    (FailedRecipient("a@b.example", None, None, "delayed"), False),
])
def test_recipient_permanence(recipient: FailedRecipient, permanent: bool) -> None:
    assert recipient.permanent is permanent


def test_hard_and_soft() -> None:
    hard = BounceReport(BounceKind.DSN, True)
    soft = BounceReport(BounceKind.RESTRICTED, False)
    assert hard.is_hard() and not hard.is_soft()
    assert soft.is_soft() and not soft.is_hard()


@pytest.mark.parametrize(("status", "diagnostic", "permanent"), [
    ("5.7.1", "smtp; 550 5.7.1 Relaying denied", True),
    ("5.5.0", "smtp; 550 5.5.0 Requested action not taken", True),
    ("4.7.0", "smtp; 421 4.7.0 Try again later", False),
    ("4.4.7", "Reason 1 (Unable-To-Transfer)", False),
    ("5.0.0 (permanent failure)", "", True),
])
def test_rfc3463_first_digit_decides_the_class(status: str, diagnostic: str, permanent: bool) -> None:
    """Whatever the Action says, a 5.x.x status is permanent and a 4.x.x one temporary (RFC 3463)."""
    raw = ("From: MAILER-DAEMON@mx.example\nTo: seller@acme.example\nSubject: Delivery Status Notification\n"
           "Message-ID: <d@mx.example>\nMIME-Version: 1.0\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
           "--b\nContent-Type: text/plain\n\nDelivery failed.\n"
           "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
           f"Final-Recipient: rfc822; someone@example.org\nAction: failed\nStatus: {status}\n"
           f"Diagnostic-Code: {diagnostic or 'smtp; see status'}\n--b--\n").encode()
    report = analyse(raw)
    assert report is not None and [r.permanent for r in report.recipients] == [permanent]
    assert report.permanent is permanent
