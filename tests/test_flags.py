"""Table tests for :mod:`bridge.domain.flags` (pure)."""

from __future__ import annotations

import pytest

from bridge.domain.flags import (
    A_TO_Z_CLAIM,
    COURTESY_REFUND,
    MAX_WORDS,
    conversation_flags,
    courtesy_refund_core,
)

CR = (COURTESY_REFUND,)
AZ = (A_TO_Z_CLAIM,)
BOTH = (COURTESY_REFUND, A_TO_Z_CLAIM)
NONE: tuple[str, ...] = ()

LONG_COMPLAINT = (
    "I ordered this jacket three weeks ago and the zipper broke on the first day. "
    "I contacted you twice and nobody answered, which is very disappointing. "
    "I would like a full refund or a replacement as soon as possible."
)

# (id, buyer_text, subject, expected flags)
CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    # --- courtesy refund answers, every language --------------------------------
    ("en-full-refund", "Full refund", "", CR),
    ("en-yes-full-refund-please", "Yes, full refund please", "", CR),
    ("en-accept", "I accept the refund", "", CR),
    ("en-accept-courtesy", "I accept the courtesy refund.", "", CR),
    ("en-refund-please", "Refund please", "", CR),
    ("en-bare-refund", "Refund.", "", CR),
    ("en-greeting-thanks-signature",
     "Hi Anna,\n\nFull refund please, thanks!\n\nBest regards,\nJohn Smith\n12 Long Street\nSpringfield", "", CR),
    ("en-thanks-line-then-answer", "Thank you for the offer!\nI'd like the full refund.", "", CR),
    ("en-above-quoted-offer",
     "Full refund\n\nOn Mon, 3 Nov 2025 at 10:02, Brand Team wrote:\n"
     "> We are sorry your experience did not meet expectations. We would like to offer you a refund "
     "> of your order as a courtesy. Please reply to let us know how you would like to proceed.",
     "", CR),
    ("en-sent-from-iphone", "Yes full refund\n\nSent from my iPhone", "", CR),
    ("de-volle", "Volle Rückerstattung", "", CR),
    ("de-ja-bitte", "Ja, Rückerstattung bitte", "", CR),
    ("de-ascii-ue", "Hallo,\nvolle Rueckerstattung bitte.\nMit freundlichen Grüßen\nKlaus", "", CR),
    ("fr-integral", "Remboursement intégral", "", CR),
    ("fr-oui-complet", "Oui, remboursement complet", "", CR),
    ("es-completo", "Reembolso completo", "", CR),
    ("es-si-por-favor", "Sí, reembolso por favor. Gracias", "", CR),
    ("it-completo", "Rimborso completo", "", CR),
    ("it-si", "Sì, rimborso completo grazie", "", CR),
    ("ja-zengaku", "全額返金", "", CR),
    ("ja-kibou", "返金希望", "", CR),
    ("ja-polite", "お世話になっております。\n全額返金を希望します。\nよろしくお願いします。", "", CR),
    ("ja-fullwidth-nfkc", "全額返金でお願いします", "", CR),
    # subject quoting the offer widens the rule to a bare yes (unverified subject)
    ("subject-yes", "Yes please", "Re: A courtesy refund from Acme", CR),
    ("subject-ja", "Ja", "AW: Kulanzerstattung für Ihre Bestellung", CR),
    ("no-subject-yes", "Yes please", "", NONE),
    ("subject-unrelated-yes", "Yes please", "Re: Your order 123-4567890-1234567", NONE),
    ("subject-long-text", LONG_COMPLAINT, "Re: courtesy refund", NONE),
    # --- look-alikes: must not be a courtesy refund --------------------------------
    ("long-complaint-full-refund", LONG_COMPLAINT, "", NONE),
    ("long-de-complaint",
     "Die Jacke ist nach zwei Tagen kaputt gegangen und der Reißverschluss klemmt ständig, "
     "ich möchte eine volle Rückerstattung oder Ersatz.", "", NONE),
    ("long-ja-complaint",
     "商品が届いてから二日で壊れてしまいました。問い合わせても返事がなく、とても残念です。全額返金を希望します。", "", NONE),
    ("question-can-i", "Can I get a refund?", "", NONE),
    ("question-no-mark", "Can I get a full refund", "", NONE),
    ("question-return-policy", "What is your refund policy?", "", NONE),
    ("question-de", "Kann ich eine Rückerstattung bekommen?", "", NONE),
    ("question-de-volle", "Volle Rückerstattung möglich?", "", NONE),
    ("question-can-i-please", "Can I get a refund please?", "", NONE),
    ("question-fr", "Puis-je avoir un remboursement intégral ?", "", NONE),
    ("question-es", "¿Reembolso completo?", "", NONE),
    ("question-ja", "返金をお願いできますか", "", NONE),
    ("negation-en", "No refund needed, I love it", "", NONE),
    ("negation-en-full", "I don't want a full refund, just a new strap", "", NONE),
    ("negation-de", "Keine Rückerstattung bitte", "", NONE),
    ("negation-ja", "全額返金は不要です", "", NONE),
    ("negation-fr", "Non merci, pas de remboursement intégral", "", NONE),
    ("refund-inside-word", "Refunded already, all good", "", NONE),
    ("quoted-only",
     "Thanks, all fine now.\n> Reply 'Full refund' to accept the offer.", "", NONE),
    ("quoted-below-header",
     "Got it, item arrived today.\n\n-----Original Message-----\nFull refund please", "", NONE),
    ("empty", "", "", NONE),
    ("greeting-only", "Hi Anna,\n\nBest regards,\nJohn", "", NONE),
    # --- A-to-z claim mentions -----------------------------------------------------
    ("az-claim", "I will open an A-to-z claim if I do not hear back.", "", AZ),
    ("az-capital", "Filing an A-to-Z claim today.", "", AZ),
    ("az-atoz-guarantee", "This is covered by the AtoZ guarantee, isn't it?", "", AZ),
    ("az-spaces", "I know my rights under the A to z guarantee", "", AZ),
    ("az-file-verb", "I'm going to file an A-to-z", "", AZ),
    ("az-amazon", "Amazon A-to-z will sort this out.", "", AZ),
    ("az-en-dash", "I filed an A–to–z claim.", "", AZ),
    ("az-de", "Ich werde einen Antrag nach der A-bis-z-Garantie stellen.", "", AZ),
    ("az-de-capital", "Ich stelle einen A-bis-Z-Garantieantrag.", "", AZ),
    ("az-fr", "Je vais ouvrir une réclamation au titre de la Garantie A à Z.", "", AZ),
    ("az-es", "Abriré una reclamación de la Garantía de la A a la Z.", "", AZ),
    ("az-it", "Aprirò un reclamo con la Garanzia dalla A alla Z.", "", AZ),
    ("az-ja-marketplace", "マーケットプレイス保証を申請します。", "", AZ),
    ("az-ja-amazon", "Amazonマーケットプレイス保証の申請をしました", "", AZ),
    ("az-ja-a-kara-z", "AからZ保証に申し込みます", "", AZ),
    ("az-ja-fullwidth", "Ａ－ｔｏ－ｚ保証を申請します", "", AZ),
    ("both", "Full refund or I file an A-to-z claim", "", BOTH),
    # --- A-to-z look-alikes -----------------------------------------------------------
    ("az-brand-atoz-outdoors", "I bought the AtoZ Outdoors tent and the pole snapped.", "", NONE),
    ("az-idiom-en", "I read the manual from A to Z and it still does not work.", "", NONE),
    ("az-idiom-de", "Ich habe die Anleitung von A bis Z gelesen.", "", NONE),
    ("az-idiom-fr", "J'ai tout vérifié de A à Z.", "", NONE),
    ("az-idiom-es", "Lo revisé todo de la A a la Z.", "", NONE),
    ("az-idiom-it", "Ho letto tutto dalla A alla Z.", "", NONE),
    ("az-inside-word", "The data to zip was sent.", "", NONE),
    ("az-quoted-staff-text",
     "OK, waiting for the replacement.\n> Please contact us before opening an A-to-z claim.", "", NONE),
]


@pytest.mark.parametrize(
    ("buyer_text", "subject", "expected"),
    [pytest.param(text, subject, expected, id=case_id) for case_id, text, subject, expected in CASES],
)
def test_conversation_flags(buyer_text: str, subject: str, expected: tuple[str, ...]) -> None:
    assert conversation_flags(buyer_text, subject) == expected


def test_case_ids_unique_and_table_large() -> None:
    ids = [case_id for case_id, *_ in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40


def test_every_language_has_a_flagged_and_an_unflagged_case() -> None:
    for lang in ("en", "de", "fr", "es", "it", "ja"):
        outcomes = [expected for case_id, *_, expected in CASES if lang in case_id.split("-")]
        assert any(e == NONE for e in outcomes) and any(e != NONE for e in outcomes), lang
    assert any(COURTESY_REFUND in expected for *_, expected in CASES)
    assert any(A_TO_Z_CLAIM in expected for *_, expected in CASES)


@pytest.mark.parametrize(
    ("buyer_text", "core"),
    [
        ("Hi Anna,\n\nFull refund please, thanks!\n\nBest regards,\nJohn", "Full refund please"),
        ("Hello, yes full refund. Thank you so much", "yes full refund"),
        ("Full refund\n> quoted offer text", "Full refund"),
        ("全額返金を希望します。よろしくお願いします。", "全額返金を希望します"),
    ],
)
def test_core_strips_greetings_thanks_signature_quotes(buyer_text: str, core: str) -> None:
    assert courtesy_refund_core(buyer_text) == core


def test_word_limit_is_the_boundary() -> None:
    within = "Yes full refund " + " ".join(["ok"] * (MAX_WORDS - 3))
    beyond = within + " ok"
    assert conversation_flags(within) == CR
    assert conversation_flags(beyond) == NONE


def test_flags_are_unique_and_ordered() -> None:
    # The claim is named first and twice: each flag still appears once, in the fixed order.
    flags = conversation_flags("Else A-to-z claim. Full refund please. A-to-z claim!")
    assert flags == BOTH


def _full_rules(buyer_text: str, subject: str) -> tuple[str, ...]:
    """The rules without the pre-checks conversation_flags runs first."""
    from bridge.domain import flags as f

    out = []
    if f._is_courtesy_refund_answer(buyer_text, subject):
        out.append(f.COURTESY_REFUND)
    if f._any(f._A_TO_Z_RES, "\n".join(f._unquoted_lines(buyer_text))):
        out.append(f.A_TO_Z_CLAIM)
    return tuple(out)


def _corpus_texts() -> list[tuple[str, str]]:
    from pathlib import Path

    from bridge.domain.parse import UnparseableMail, parse_mail

    out = []
    for path in sorted((Path(__file__).parent / "data" / "inbound").glob("*.eml")):
        try:
            mail = parse_mail(path.read_bytes())
        except UnparseableMail:
            continue
        out.append((mail.buyer_text or mail.text, mail.subject))
    return out


EDGES = [
    ("Full refund", ""), ("FULL REFUND", ""), ("RİMBORSO COMPLETO", ""), ("Amazon A\u2013to\u2013Z claim", ""),
    ("open an A -  to - z", ""), ("a to\n> quoted line\nz claim", ""), ("Zelt kaputt, A-bis-Z-Garantie!", ""),
    ("ＡｔｏＺ保証を申請します", ""), ("Yes please", "Re: courtesy refund offer"), ("size 10, zipper", ""),
]


@pytest.mark.parametrize("text,subject", EDGES + [(c[1], c[2]) for c in CASES] + _corpus_texts())
def test_pre_checks_never_change_the_result(text: str, subject: str) -> None:
    assert conversation_flags(text, subject) == _full_rules(text, subject)


def test_refund_word_list_matches_the_pattern() -> None:
    from bridge.domain import flags as f

    assert "(?:" + "|".join(f._REFUND_WORDS) + ")" == f._REFUND_WORD
