"""bridge.domain.policy: the compliance guard, rule by rule, as tables of allowed and blocked drafts."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.domain.policy import (
    RULE_IDS,
    RULES,
    AttachmentInfo,
    Category,
    Decision,
    Draft,
    Mode,
    PolicyConfig,
    PolicyContext,
    Severity,
    check,
    explain,
)

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
SELLER = "seller@acme.example"
ALIAS = "k7m2x9q4t1v8w3z5@marketplace.amazon.com"
ORIGINAL = "Does the Widget Pro fit a standard 3/4 inch garden hose?\nThanks,\nJane"
QUOTED = "> Does the Widget Pro fit a standard 3/4 inch garden hose?\n> Thanks,\n> Jane"
REPLY_TEXT = "Hi Jane,\nyes, the Widget Pro fits every standard 3/4 inch hose.\nBest regards,\nAcme Store"
CRITICAL_TEXT = ("Hello Jane,\nyour order 111-2223334-4445556 needs the name to engrave on the bracelet. "
                 "Please reply with the exact spelling.\nBest regards,\nAcme Store")
UNSOLICITED_TEXT = ("Hello Jane,\nyour order 111-2223334-4445556 was delivered on 12 February. If you have a "
                    "moment, would you share your experience with the product in a review on Amazon? It helps "
                    "other buyers.\nBest regards,\nAcme Store")
MIB = 1024 * 1024

TEXTS = {Category.REPLY: REPLY_TEXT, Category.CRITICAL: CRITICAL_TEXT, Category.UNSOLICITED: UNSOLICITED_TEXT}
SUBJECTS = {Category.REPLY: "Re: Product details inquiry from Amazon customer Jane (Order: 111-2223334-4445556)",
            Category.CRITICAL: "Engraving details needed (Order: 111-2223334-4445556)",
            Category.UNSOLICITED: "Your Acme Store order (Order: 111-2223334-4445556)"}

R, C, U = Category.REPLY, Category.CRITICAL, Category.UNSOLICITED


def make_draft(category: Category = R, **changes: Any) -> Draft:
    base = Draft(from_addr=SELLER, to_addr=ALIAS, subject=SUBJECTS[category], text=TEXTS[category],
                 category=category, quoted_original=QUOTED if category is R else None)
    return replace(base, **changes)


def make_ctx(**changes: Any) -> PolicyContext:
    base = PolicyContext(seller_address=SELLER, buyer_alias=ALIAS, now=NOW,
                         order_completed_at=NOW - timedelta(days=10), buyer_original_text=ORIGINAL)
    return replace(base, **changes)


def att(name: str, ctype: str, size: int = 100_000) -> AttachmentInfo:
    return AttachmentInfo(filename=name, content_type=ctype, size=size)


def case(rule: str, blocked: bool, category: Category = R, ctx: dict[str, Any] | None = None,
         id: str = "", **draft: Any) -> Any:
    return pytest.param(rule, blocked, category, draft, ctx or {}, id=f"{rule}-{'blocked' if blocked else 'ok'}-{id}")


def ok(rule: str, id: str, category: Category = R, ctx: dict[str, Any] | None = None, **draft: Any) -> Any:
    return case(rule, False, category, ctx, id, **draft)


def bad(rule: str, id: str, category: Category = R, ctx: dict[str, Any] | None = None, **draft: Any) -> Any:
    return case(rule, True, category, ctx, id, **draft)


def reply_text(middle: str) -> str:
    return f"Hi Jane,\n{middle}\nBest regards,\nAcme Store"


def proactive_text(middle: str) -> str:
    return f"Hello Jane,\n{middle}\nKind regards,\nAcme Store"


CASES = [
    # ------------------------------------------------------------------ sender_is_registered
    ok("sender_is_registered", "exact"),
    ok("sender_is_registered", "case-insensitive", from_addr="Seller@ACME.example"),
    ok("sender_is_registered", "display-name", from_addr="Acme Store <seller@acme.example>"),
    ok("sender_is_registered", "critical", category=C),
    bad("sender_is_registered", "staff-address", from_addr="jo@acme.example"),
    bad("sender_is_registered", "look-alike-domain", from_addr="seller@acme.example.evil"),
    bad("sender_is_registered", "empty-from", from_addr=""),
    bad("sender_is_registered", "two-senders", from_addr="seller@acme.example, jo@acme.example"),
    bad("sender_is_registered", "no-registered-address", ctx={"seller_address": ""}),
    # ------------------------------------------------------------------ recipient_is_conversation_buyer
    ok("recipient_is_conversation_buyer", "exact"),
    ok("recipient_is_conversation_buyer", "uppercase", to_addr=ALIAS.upper()),
    ok("recipient_is_conversation_buyer", "case-suffix", to_addr="k7m2x9q4t1v8w3z5+case-77889@marketplace.amazon.com"),
    ok("recipient_is_conversation_buyer", "display-name", to_addr=f'"Jane - Amazon Marketplace" <{ALIAS}>'),
    ok("recipient_is_conversation_buyer", "ctx-alias-has-suffix",
       ctx={"buyer_alias": "k7m2x9q4t1v8w3z5+case-1@marketplace.amazon.com"}),
    bad("recipient_is_conversation_buyer", "other-buyer", to_addr="p3q8r1s6t2u7v4w9@marketplace.amazon.com"),
    bad("recipient_is_conversation_buyer", "real-address", to_addr="jane.doe@gmail.com"),
    bad("recipient_is_conversation_buyer", "other-marketplace", to_addr="k7m2x9q4t1v8w3z5@marketplace.amazon.de"),
    bad("recipient_is_conversation_buyer", "look-alike-domain",
        to_addr="k7m2x9q4t1v8w3z5@marketplace.amazon.com.evil.example"),
    bad("recipient_is_conversation_buyer", "suffix-on-other-alias",
        to_addr="p3q8r1s6t2u7v4w9+case-1@marketplace.amazon.com"),
    bad("recipient_is_conversation_buyer", "two-recipients", to_addr=f"{ALIAS}, jo@acme.example"),
    bad("recipient_is_conversation_buyer", "buyer-unknown", ctx={"buyer_alias": None}),
    bad("recipient_is_conversation_buyer", "empty-to", to_addr=""),
    # ------------------------------------------------------------------ no_unsolicited_to_opted_out
    ok("no_unsolicited_to_opted_out", "reply-to-opted-out-buyers-own-thread", ctx={"buyer_opted_out": True}),
    ok("no_unsolicited_to_opted_out", "reply-to-dns-buyer", ctx={"buyer_do_not_solicit": True}),
    ok("no_unsolicited_to_opted_out", "critical-to-opted-out", category=C, ctx={"buyer_opted_out": True}),
    ok("no_unsolicited_to_opted_out", "critical-to-dns", category=C, ctx={"buyer_do_not_solicit": True}),
    ok("no_unsolicited_to_opted_out", "unsolicited-to-normal-buyer", category=U),
    bad("no_unsolicited_to_opted_out", "opted-out", category=U, ctx={"buyer_opted_out": True}),
    bad("no_unsolicited_to_opted_out", "do-not-solicit", category=U, ctx={"buyer_do_not_solicit": True}),
    bad("no_unsolicited_to_opted_out", "both", category=U, ctx={"buyer_opted_out": True, "buyer_do_not_solicit": True}),
    # ------------------------------------------------------------------ reply_quotes_original
    ok("reply_quotes_original", "quoted-with-prefixes"),
    ok("reply_quotes_original", "rewrapped-nested-quotes",
       quoted_original=">> Does the Widget Pro fit a standard\n>> 3/4 inch garden   hose?\n>>\n>> Thanks, Jane"),
    ok("reply_quotes_original", "unprefixed-with-markers",
       quoted_original="------------- Begin message -------------\n\nDOES the widget pro fit a standard 3/4 inch "
                       "garden hose?\r\nThanks,\r\nJane\n------------- End message -------------\n"
                       "[commMgrTok:A1B2C3D4E5F6G]"),
    ok("reply_quotes_original", "original-unknown-but-quoted", ctx={"buyer_original_text": None}),
    ok("reply_quotes_original", "not-a-reply", category=C),
    bad("reply_quotes_original", "nothing-quoted", quoted_original=None),
    bad("reply_quotes_original", "empty-quote", quoted_original="> \n>"),
    bad("reply_quotes_original", "truncated-quote",
        quoted_original="> Does the Widget Pro fit a standard 3/4 inch garden hose?"),
    bad("reply_quotes_original", "other-message", quoted_original="> Where is my parcel?"),
    bad("reply_quotes_original", "nothing-quoted-original-unknown", quoted_original=None,
        ctx={"buyer_original_text": None}),
    # ------------------------------------------------------------------ no_links
    ok("no_links", "amazon-order-page", text=reply_text(
        "You can see it on https://www.amazon.com/gp/your-account/order-details?orderID=111-2223334-4445556.")),
    ok("no_links", "bare-amazon-domain", text=reply_text("Start the return at amazon.co.uk/returns please.")),
    ok("no_links", "file-names-and-abbreviations", text=reply_text(
        "The manual.pdf is attached, e.g. page 3.5 covers it. Mr.Smith checked version 2.0 today.")),
    ok("no_links", "missing-space-before-capital", text=reply_text("We checked the item.It works fine.")),
    ok("no_links", "order-id-is-not-a-link", text=reply_text("Order 111-2223334-4445556 ships Monday.")),
    bad("no_links", "www", text=reply_text("See www.example.com for the manual.")),
    bad("no_links", "https", text=reply_text("Manual: https://acme.example/manuals/widget")),
    bad("no_links", "bare-shop-domain", text=reply_text("Our shop acme.shop has spare parts.")),
    bad("no_links", "capitalised-domain", text=reply_text("Visit Acme-Store.com!")),
    bad("no_links", "shortener", text=reply_text("Video: bit.ly/3abcd")),
    bad("no_links", "amazon-look-alike", text=reply_text("Log in at https://amazon.com.evil.example/login")),
    bad("no_links", "bare-amazon-look-alike", text=reply_text("Log in at amazon.com.evil.example")),
    # ------------------------------------------------------------------ no_contact_details
    ok("no_contact_details", "order-id-and-asin", text=reply_text(
        "Order 111-2223334-4445556 (ASIN B0ABCDEF12) and digital order D01-1234567-1234567 are both fine.")),
    ok("no_contact_details", "dates", text=reply_text(
        "It ships 2024-03-15, arrives 15.03.2024 or 03/15/2024 at the latest.")),
    ok("no_contact_details", "prices", text=reply_text("The refund is $1,234.56 (EUR 1.299,00; total 12345.67).")),
    ok("no_contact_details", "tracking-numbers", text=reply_text(
        "UPS 1Z999AA10123456784, USPS 9400 1000 0000 0000 0000 00, DHL 00340434161094042557.")),
    ok("no_contact_details", "postal-codes", text=reply_text(
        "We ship to 10115 Berlin, SW1A 1AA London, 〒150-0001 Tokyo and 90210.")),
    ok("no_contact_details", "isbn-times-sizes", text=reply_text(
        "ISBN 978-3-16-148410-0, delivery 10:30-12:00, size 2 x 3/4 inch.")),
    bad("no_contact_details", "email", text=reply_text("Write to jane@acme.example directly.")),
    bad("no_contact_details", "obfuscated-email", text=reply_text("Write to support [at] acme [dot] com.")),
    bad("no_contact_details", "spelled-out-email", text=reply_text("Write to support at acme dot com.")),
    bad("no_contact_details", "international-phone", text=reply_text("Call +49 30 1234567.")),
    bad("no_contact_details", "us-phone", text=reply_text("Our hotline (555) 234-5678 is open.")),
    bad("no_contact_details", "us-phone-dashes", text=reply_text("Ring 555-234-5678 any time.")),
    bad("no_contact_details", "german-local", text=reply_text("Rufen Sie 030 12345678 an.")),
    bad("no_contact_details", "french-local", text=reply_text("Appelez le 06 12 34 56 78.")),
    bad("no_contact_details", "uk-local", text=reply_text("Our number is 020 7946 0958.")),
    bad("no_contact_details", "japanese", text=reply_text("電話: 090-1234-5678")),
    bad("no_contact_details", "short-with-keyword", text=reply_text("Just call me on 5551234.")),
    bad("no_contact_details", "double-zero-international", text=reply_text("0044 20 7946 0958")),
    # ------------------------------------------------------------------ no_review_manipulation
    ok("no_review_manipulation", "honest-review-request", category=U),
    ok("no_review_manipulation", "refund-without-review", text=reply_text("We issued a full refund today.")),
    ok("no_review_manipulation", "feedback-word", text=reply_text(
        "Your feedback helps us improve, thank you for letting us know.")),
    ok("no_review_manipulation", "update-order-not-review", text=reply_text(
        "We will update your order and change the address.")),
    ok("no_review_manipulation", "five-pack", text=reply_text("The 5-pack is rated for 5 bar of pressure.")),
    ok("no_review_manipulation", "german-neutral", text=reply_text(
        "Wir haben die Rückerstattung veranlasst. Über eine ehrliche Bewertung freuen wir uns.")),
    ok("no_review_manipulation", "japanese-neutral", text=reply_text("レビューをお待ちしております。")),
    bad("no_review_manipulation", "positive-review", text=reply_text("Please leave a positive review!")),
    bad("no_review_manipulation", "five-stars", text=reply_text("A 5-star review would mean a lot.")),
    bad("no_review_manipulation", "five-stars-words", text=reply_text("Give us five stars!")),
    bad("no_review_manipulation", "good-review", text=reply_text("Please leave us a good review.")),
    bad("no_review_manipulation", "gift-if-you", text=reply_text(
        "We will send you a $10 gift card if you leave a review.")),
    bad("no_review_manipulation", "refund-in-exchange", text=reply_text(
        "We can refund you in exchange for a review.")),
    bad("no_review_manipulation", "in-exchange-then-incentive", text=reply_text(
        "In exchange for your honest review we send a free sample.")),
    bad("no_review_manipulation", "change-review", text=reply_text("Could you please change your review?")),
    bad("no_review_manipulation", "remove-negative-feedback", text=reply_text(
        "Please remove the negative feedback now that it is solved.")),
    bad("no_review_manipulation", "updating-review", text=reply_text("Would you consider updating your review?")),
    bad("no_review_manipulation", "review-gating", category=U, text=proactive_text(
        "Order 111-2223334-4445556: if you are happy with it, please leave a review.")),
    bad("no_review_manipulation", "de-positive", text=reply_text("Wir freuen uns über eine positive Bewertung.")),
    bad("no_review_manipulation", "de-stars", text=reply_text("Bitte geben Sie uns 5 Sterne.")),
    bad("no_review_manipulation", "de-change", text=reply_text("Könnten Sie Ihre Bewertung ändern?")),
    bad("no_review_manipulation", "de-incentive", text=reply_text(
        "Sie erhalten einen Gutschein, wenn Sie eine Bewertung schreiben.")),
    bad("no_review_manipulation", "fr-positive", text=reply_text("Merci de laisser un avis positif.")),
    bad("no_review_manipulation", "fr-change", text=reply_text("Pourriez-vous modifier votre avis ?")),
    bad("no_review_manipulation", "fr-incentive", text=reply_text(
        "Un bon d'achat vous sera offert en échange d'un avis.")),
    bad("no_review_manipulation", "es-positive", text=reply_text("Déjenos una reseña positiva, por favor.")),
    bad("no_review_manipulation", "es-remove", text=reply_text("¿Podría eliminar su reseña?")),
    bad("no_review_manipulation", "es-incentive", text=reply_text(
        "Le damos un descuento a cambio de una reseña.")),
    bad("no_review_manipulation", "it-positive", text=reply_text("Ci lasci una recensione positiva!")),
    bad("no_review_manipulation", "it-change", text=reply_text("Potrebbe modificare la sua recensione?")),
    bad("no_review_manipulation", "it-stars", text=reply_text("Ci dia 5 stelle.")),
    bad("no_review_manipulation", "ja-positive", text=reply_text("高評価をお願いします。")),
    bad("no_review_manipulation", "ja-remove", text=reply_text("レビューを削除していただけませんか。")),
    bad("no_review_manipulation", "ja-incentive", text=reply_text(
        "レビューを書いていただければクーポンを差し上げます。")),
    # ------------------------------------------------------------------ no_important_unless_critical
    ok("no_important_unless_critical", "critical-important", category=C,
       subject="[Important] Delivery address problem (Order: 111-2223334-4445556)"),
    ok("no_important_unless_critical", "critical-japanese", category=C, subject="【重要】お届け先住所について"),
    ok("no_important_unless_critical", "word-without-brackets", category=U,
       subject="Important information about your order 111-2223334-4445556"),
    ok("no_important_unless_critical", "reply-plain"),
    bad("no_important_unless_critical", "reply", subject="[Important] Re: your question"),
    bad("no_important_unless_critical", "unsolicited", category=U, subject="[IMPORTANT] Please review your order"),
    bad("no_important_unless_critical", "japanese", category=U, subject="【重要】ご注文について"),
    bad("no_important_unless_critical", "german", subject="[Wichtig] Ihre Bestellung"),
    bad("no_important_unless_critical", "spanish-parens", subject="(Importante) Su pedido"),
    # ------------------------------------------------------------------ attachments_within_limits
    ok("attachments_within_limits", "none"),
    ok("attachments_within_limits", "one-pdf", attachments=(att("invoice.pdf", "application/pdf"),)),
    ok("attachments_within_limits", "five-jpegs-exactly-10mib",
       attachments=tuple(att(f"photo{i}.jpeg", "image/jpeg", 2 * MIB) for i in range(5))),
    ok("attachments_within_limits", "png-as-octet-stream", attachments=(att("label.png", "application/octet-stream"),)),
    ok("attachments_within_limits", "txt-and-gif", attachments=(att("notes.TXT", "text/plain"),
                                                                att("size.gif", "image/gif"))),
    bad("attachments_within_limits", "six-files",
        attachments=tuple(att(f"p{i}.png", "image/png") for i in range(6))),
    bad("attachments_within_limits", "too-large", attachments=(att("scan.pdf", "application/pdf", 11 * MIB),)),
    bad("attachments_within_limits", "exe", attachments=(att("setup.exe", "application/x-msdownload"),)),
    bad("attachments_within_limits", "docx", attachments=(att(
        "manual.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),)),
    bad("attachments_within_limits", "pdf-name-wrong-type", attachments=(att("photo.pdf", "application/x-msdownload"),)),
    bad("attachments_within_limits", "unnamed-zip", attachments=(att("", "application/zip"),)),
    bad("attachments_within_limits", "unnamed-octet-stream", attachments=(att("", "application/octet-stream"),)),
    # ------------------------------------------------------------------ text_length
    ok("text_length", "short"),
    ok("text_length", "exactly-2000", text="a" * 2000),
    ok("text_length", "long-quote-not-counted", quoted_original=QUOTED + "\n>" + " more" * 1000,
       ctx={"buyer_original_text": ORIGINAL}),
    bad("text_length", "2001", text="a" * 2001),
    bad("text_length", "empty", text=""),
    bad("text_length", "whitespace-only", text="  \n\t\n"),
    # ------------------------------------------------------------------ proactive_window
    ok("proactive_window", "critical-day-10", category=C),
    ok("proactive_window", "unsolicited-day-29", category=U, ctx={"order_completed_at": NOW - timedelta(days=29)}),
    ok("proactive_window", "critical-not-completed", category=C, ctx={"order_completed_at": None}),
    ok("proactive_window", "reply-day-90", ctx={"order_completed_at": NOW - timedelta(days=90)}),
    ok("proactive_window", "naive-datetime", category=U,
       ctx={"order_completed_at": datetime(2024, 2, 20, 12, 0)}),
    bad("proactive_window", "unsolicited-completion-unknown", category=U, ctx={"order_completed_at": None}),
    bad("proactive_window", "unsolicited-day-31", category=U, ctx={"order_completed_at": NOW - timedelta(days=31)}),
    bad("proactive_window", "critical-day-45", category=C, ctx={"order_completed_at": NOW - timedelta(days=45)}),
    bad("proactive_window", "just-over", category=U,
        ctx={"order_completed_at": NOW - timedelta(days=30, seconds=1)}),
    # ------------------------------------------------------------------ account_not_restricted
    ok("account_not_restricted", "reply-while-restricted", ctx={"account_restricted_until": NOW + timedelta(hours=5)}),
    ok("account_not_restricted", "restriction-over", category=U,
       ctx={"account_restricted_until": NOW - timedelta(seconds=1)}),
    ok("account_not_restricted", "never-restricted", category=C),
    bad("account_not_restricted", "unsolicited", category=U, ctx={"account_restricted_until": NOW + timedelta(hours=120)}),
    bad("account_not_restricted", "critical", category=C, ctx={"account_restricted_until": NOW + timedelta(minutes=1)}),
    bad("account_not_restricted", "naive-until", category=U, ctx={"account_restricted_until": datetime(2024, 3, 5)}),
    # ------------------------------------------------------------------ no_marketing
    ok("no_marketing", "offer-refund", text=reply_text("We offer a full refund or a new unit.")),
    ok("no_marketing", "cotton-percent", text=reply_text("The cover is 100% cotton and washable.")),
    ok("no_marketing", "for-sale-and-website", text=reply_text(
        "That colour is no longer for sale; the website listing was removed.")),
    ok("no_marketing", "after-sales", text=reply_text("Our after-sales team checked the unit.")),
    bad("no_marketing", "check-out-our-new", text=reply_text("Check out our new garden range.")),
    bad("no_marketing", "summer-sale", text=reply_text("Our summer sale ends Friday.")),
    bad("no_marketing", "percent-off", text=reply_text("Get 20% off your next order.")),
    bad("no_marketing", "newsletter", text=reply_text("Sign up for our newsletter.")),
    bad("no_marketing", "follow-us", text=reply_text("Follow us on Instagram.")),
    bad("no_marketing", "promo-code", text=reply_text("Use promo code SAVE10 next time.")),
    bad("no_marketing", "german-discount", text=reply_text("Sie erhalten 10 % Rabatt.")),
    bad("no_marketing", "japanese-sale", text=reply_text("ただいまセール中です。")),
    # ------------------------------------------------------------------ no_opt_out_links
    ok("no_opt_out_links", "return", text=reply_text("You can return the item within 30 days.")),
    ok("no_opt_out_links", "opt-for", text=reply_text("You may opt for express shipping.")),
    ok("no_opt_out_links", "stop-shipment", text=reply_text("We stopped the shipment as you asked.")),
    bad("no_opt_out_links", "unsubscribe", category=U, text=proactive_text(
        "Order 111-2223334-4445556 was delivered. To unsubscribe reply STOP.")),
    bad("no_opt_out_links", "opt-out-here", category=U, text=proactive_text(
        "Your order 111-2223334-4445556 was delivered. Opt out here.")),
    bad("no_opt_out_links", "no-longer-wish", category=U, text=proactive_text(
        "Order 111-2223334-4445556 was delivered. If you no longer wish to receive these emails, tell us.")),
    bad("no_opt_out_links", "german", text=reply_text("Newsletter abbestellen: antworten Sie.")),
    bad("no_opt_out_links", "french", text=reply_text("Pour se désabonner, répondez.")),
    bad("no_opt_out_links", "spanish", text=reply_text("Para darse de baja, responda.")),
    bad("no_opt_out_links", "japanese", text=reply_text("配信停止はこちら")),
    # ------------------------------------------------------------------ not_thank_you_only
    ok("not_thank_you_only", "thanks-plus-substance", category=C, text=proactive_text(
        "Thank you for your order! Please tell us the name to engrave on the bracelet.")),
    ok("not_thank_you_only", "reply-thanks-only", text="Thank you!"),
    ok("not_thank_you_only", "unsolicited-review-request", category=U),
    ok("not_thank_you_only", "japanese-substance", category=C, text=(
        "山田様\nご注文ありがとうございます。刻印するお名前をご返信ください。\nAcmeストア")),
    bad("not_thank_you_only", "critical-thanks", category=C, text=(
        "Hi Jane,\nThank you for your order!\nBest regards,\nAcme Store")),
    bad("not_thank_you_only", "unsolicited-enjoy", category=U, text=(
        "Thanks for shopping with us. We hope you enjoy your new kettle!\nAcme")),
    bad("not_thank_you_only", "german", category=U, text=(
        "Hallo Max,\nvielen Dank für Ihre Bestellung!\nViele Grüße\nAcme")),
    bad("not_thank_you_only", "japanese", category=U, text="ご注文ありがとうございました。\nAcmeストア"),
    bad("not_thank_you_only", "bare-thanks", category=C, text="Thanks!"),
]


@pytest.mark.parametrize(("rule", "blocked", "category", "draft_changes", "ctx_changes"), CASES)
def test_rule_table(rule: str, blocked: bool, category: Category, draft_changes: dict[str, Any],
                    ctx_changes: dict[str, Any]) -> None:
    draft = make_draft(category, **draft_changes)
    decision = check(draft, make_ctx(**ctx_changes))
    if blocked:
        assert rule in decision.rule_ids, explain(decision, draft.text)
        assert not decision.allowed
        assert all(f.severity is Severity.BLOCK for f in decision.findings)
    else:
        # An allowed case must pass *every* rule: no false positive anywhere.
        assert decision.allowed and not decision.findings, explain(decision, draft.text)
    for finding in decision.findings:
        assert finding.reason
        if finding.span is not None:
            start, end = finding.span
            assert draft.text[start:end] == finding.excerpt


def test_every_rule_has_three_allowed_and_three_blocked_cases() -> None:
    counts: dict[tuple[str, bool], int] = {}
    for param in CASES:
        rule, blocked = param.values[0], param.values[1]
        counts[(rule, blocked)] = counts.get((rule, blocked), 0) + 1
    for rule_id in RULE_IDS:
        assert counts.get((rule_id, False), 0) >= 3, f"{rule_id}: fewer than 3 allowed cases"
        assert counts.get((rule_id, True), 0) >= 3, f"{rule_id}: fewer than 3 blocked cases"


def test_rule_ids_are_stable_and_ordered() -> None:
    # Stored in the audit log and named in config: changing one is a migration.
    assert RULE_IDS == (
        "sender_is_registered",
        "recipient_is_conversation_buyer",
        "no_unsolicited_to_opted_out",
        "reply_quotes_original",
        "no_links",
        "no_contact_details",
        "no_review_manipulation",
        "no_important_unless_critical",
        "attachments_within_limits",
        "text_length",
        "proactive_window",
        "account_not_restricted",
        "no_marketing",
        "no_opt_out_links",
        "not_thank_you_only",
    )
    assert all(rule.summary for rule in RULES)


@pytest.mark.parametrize("category", list(Category))
def test_base_drafts_pass(category: Category) -> None:
    decision = check(make_draft(category), make_ctx())
    assert decision == Decision(True, (), RULE_IDS)


def test_reply_to_opted_out_buyers_own_thread_goes_through() -> None:
    ctx = make_ctx(buyer_opted_out=True, buyer_do_not_solicit=True,
                   order_completed_at=NOW - timedelta(days=400), account_restricted_until=NOW + timedelta(days=3))
    assert check(make_draft(R), ctx).allowed
    blocked = check(make_draft(U), ctx)
    assert set(blocked.rule_ids) == {"no_unsolicited_to_opted_out", "proactive_window", "account_not_restricted"}


def test_every_occurrence_is_a_finding() -> None:
    draft = make_draft(text=reply_text("See www.one.example and acme.shop, or mail a@b.example / c@d.example."))
    decision = check(draft, make_ctx())
    assert [f.excerpt for f in decision.findings if f.rule == "no_links"] == ["www.one.example", "acme.shop"]
    assert [f.excerpt for f in decision.findings if f.rule == "no_contact_details"] == ["a@b.example", "c@d.example"]


# ------------------------------------------------------------------ modes and config


def test_warn_mode_allows_and_records() -> None:
    draft = make_draft(text=reply_text("See www.example.com."))
    decision = check(draft, make_ctx(), PolicyConfig(modes={"no_links": "warn"}))
    assert decision.allowed
    assert [(f.rule, f.severity) for f in decision.findings] == [("no_links", Severity.WARN)]
    assert decision.warnings == decision.findings and decision.blocking == ()


def test_warn_mode_does_not_hide_other_blocks() -> None:
    draft = make_draft(text=reply_text("See www.example.com or call +49 30 1234567."))
    decision = check(draft, make_ctx(), PolicyConfig(modes={"no_links": Mode.WARN}))
    assert not decision.allowed
    assert [(f.rule, f.severity) for f in decision.findings] == [
        ("no_links", Severity.WARN), ("no_contact_details", Severity.BLOCK)]


def test_off_mode_skips_the_rule() -> None:
    draft = make_draft(text=reply_text("See www.example.com."))
    decision = check(draft, make_ctx(), PolicyConfig(modes={"no_links": "OFF"}))
    assert decision.allowed and decision.findings == ()
    assert "no_links" not in decision.evaluated and len(decision.evaluated) == len(RULE_IDS) - 1


def test_default_mode_is_block_for_every_rule() -> None:
    config = PolicyConfig()
    assert all(config.mode(rule_id) is Mode.BLOCK for rule_id in RULE_IDS)


@pytest.mark.parametrize(("modes", "message"), [
    ({"no_link": "warn"}, "unknown rule id 'no_link'"),
    ({"no_links": "maybe"}, "policy.modes.no_links: 'maybe' is not one of block, warn, off"),
])
def test_bad_modes_name_the_key(modes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PolicyConfig(modes=modes)


def test_bad_limit_names_the_key() -> None:
    with pytest.raises(ValueError, match="policy.max_text_chars"):
        PolicyConfig(max_text_chars=-1)


def test_link_allowlist_exact_or_subdomain() -> None:
    config = PolicyConfig(link_allowlist=("acme.example",))
    for link in ("https://acme.example/manual.pdf", "https://docs.acme.example/m", "www.acme.example"):
        assert check(make_draft(text=reply_text(f"Manual: {link}")), make_ctx(), config).allowed, link
    for link in ("https://acme.example.evil.example/m", "https://notacme.example/m", "https://www.amazon.com/x"):
        assert not check(make_draft(text=reply_text(f"Manual: {link}")), make_ctx(), config).allowed, link
    # The default allowlist is Amazon's own domains.
    assert check(make_draft(text=reply_text("https://www.amazon.com/x")), make_ctx()).allowed


def test_limits_are_configurable() -> None:
    config = PolicyConfig(max_text_chars=50, max_attachments=1, allowed_attachment_types=(".PDF",),
                          proactive_window_days=60)
    assert "text_length" in check(make_draft(), make_ctx(), config).rule_ids
    two = (att("a.pdf", "application/pdf"), att("b.pdf", "application/pdf"))
    jpg = (att("a.jpg", "image/jpeg"),)
    short = make_draft(text="Hi Jane, yes it fits. Acme", attachments=two)
    assert check(short, make_ctx(), config).rule_ids == ("attachments_within_limits",)
    assert check(replace(short, attachments=jpg), make_ctx(), config).rule_ids == ("attachments_within_limits",)
    late = make_ctx(order_completed_at=NOW - timedelta(days=45))
    assert check(make_draft(U, text="Order 1 arrived; a review would help."), late, config).allowed


# ------------------------------------------------------------------ explanation


def test_explain_blocked_highlights_and_says_what_to_change() -> None:
    draft = make_draft(subject="[Important] Re: hose", text=reply_text(
        "The manual is at www.example.com/manual and we would love a 5-star review."))
    decision = check(draft, make_ctx())
    text = explain(decision, draft.text)
    lines = text.splitlines()
    assert lines[0] == "Blocked: 3 problems must be fixed before this message can be sent."
    assert "1. [block] no_links: Links are not allowed" in text
    assert "remove the link" in text
    assert "The manual is at >>>www.example.com/manual<<< and we would love" in text
    assert "[block] no_review_manipulation" in text and ">>>5-star<<<" in text
    assert "[block] no_important_unless_critical" in text and ">>>[Important]<<<" in text
    assert "remove it from the subject" in text


def test_explain_without_text_shows_the_excerpt() -> None:
    decision = check(make_draft(text=reply_text("See www.example.com.")), make_ctx())
    assert explain(decision).splitlines()[-1] == "   >>>www.example.com<<<"


def test_explain_warned_and_clean() -> None:
    draft = make_draft(text=reply_text("See www.example.com."))
    warned = check(draft, make_ctx(), PolicyConfig(modes={"no_links": "warn"}))
    assert explain(warned, draft.text).startswith("Allowed, with 1 warning.\n1. [warn] no_links:")
    assert explain(check(make_draft(), make_ctx())) == "Allowed: the message passed every rule."
    both = check(make_draft(text=reply_text("See www.example.com, call +49 30 1234567.")), make_ctx(),
                 PolicyConfig(modes={"no_links": "warn"}))
    assert explain(both).splitlines()[0] == (
        "Blocked: 1 problem must be fixed before this message can be sent (1 more only warned).")


def test_explain_long_text_is_cut_around_the_excerpt() -> None:
    text = "x" * 100 + " www.example.com " + "y" * 100
    decision = check(make_draft(text=text), make_ctx())
    line = explain(decision, text).splitlines()[2]
    assert line.startswith("   ...") and line.endswith("...") and ">>>www.example.com<<<" in line
    assert len(line) == len("   ...") + 40 + len(">>>www.example.com<<<") + 40 + len("...")
