"""Opt-out notices recognised by vocabulary in every marketplace language, never a buyer's words.

Three paraphrases per language, none of them a sentence Amazon is known to write
(those are fingerprints, tested in test_bounces.py): what a reworded or
translated notice looks like. Each is wrapped as Amazon would send it: from its
notification domain, naming the order.
"""

from __future__ import annotations

import pytest

from bridge.domain.bounces import BounceKind, analyse
from bridge.domain.classify import ClassifyContext, Kind, classify
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS, notice_words
from bridge.domain.parse import parse_mail

ORDER = "305-1234567-7654321"
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "en": ("This buyer has opted out of unsolicited messages, so your message was not delivered.",
           "Your message was not sent: the customer chose not to receive unsolicited communication.",
           "The recipient no longer wants to receive messages from sellers that are unsolicited."),
    "de": ("Der Käufer hat sich von unaufgeforderten Nachrichten abgemeldet.",
           "Ihre Nachricht wurde nicht zugestellt, da der Kunde keine unaufgeforderten Nachrichten erhalten möchte.",
           "Der Empfänger hat unerwünschten Nachrichten von Verkäufern widersprochen."),
    "fr": ("Cet acheteur s'est désabonné des messages non sollicités.",
           "Votre message n'a pas été remis : le client ne souhaite pas recevoir de messages non sollicités.",
           "Le destinataire a refusé de recevoir des messages de vendeurs non sollicités."),
    "es": ("El comprador ha optado por no recibir mensajes no solicitados.",
           "Tu mensaje no se entregó porque el cliente no desea recibir comunicaciones no solicitadas.",
           "Este cliente se ha dado de baja de los mensajes no solicitados de los vendedores."),
    "it": ("L'acquirente ha deciso di non ricevere messaggi non richiesti.",
           "Il tuo messaggio non è stato recapitato: il cliente non desidera ricevere messaggi non richiesti.",
           "Il destinatario si è disiscritto dai messaggi indesiderati dei venditori."),
    "nl": ("De koper heeft zich afgemeld voor ongevraagde berichten.",
           "Je bericht is niet bezorgd omdat de klant ervoor heeft gekozen om geen ongevraagde berichten te ontvangen.",
           "Deze klant wil geen ongevraagde berichten van verkopers ontvangen."),
    "sv": ("Köparen har valt att inte ta emot oönskade meddelanden.",
           "Ditt meddelande levererades inte eftersom kunden har avregistrerat sig från oombedda meddelanden.",
           "Mottagaren vill inte ta emot oönskade meddelanden från säljare."),
    "pl": ("Kupujący zrezygnował z otrzymywania niezamówionych wiadomości.",
           "Twoja wiadomość nie została dostarczona, ponieważ klient nie chce otrzymywać niechcianych wiadomości.",
           "Odbiorca wypisał się z niezamówionych wiadomości od sprzedawców."),
    "tr": ("Alıcı istenmeyen mesajları almamayı tercih etti.",
           "Mesajınız teslim edilemedi çünkü müşteri talep edilmemiş mesajları almak istemiyor.",
           "Bu alıcı satıcılardan gelen istenmeyen mesajlar için abonelikten çıktı."),
    "pt": ("O comprador optou por não receber mensagens não solicitadas.",
           "Sua mensagem não foi entregue porque o cliente não deseja receber mensagens não solicitadas.",
           "O destinatário cancelou a inscrição de mensagens de vendedores não solicitadas."),
    "ar": ("اختار المشتري عدم تلقي الرسائل غير المرغوب فيها.",
           "لم يتم تسليم رسالتك لأن العميل لا يرغب في تلقي الرسائل غير المطلوبة.",
           "قام المشتري بإلغاء الاشتراك في الرسائل غير المرغوب فيها من البائعين."),
    "ja": ("購入者は未承諾のメッセージを受け取らない設定にしています。",
           "お客様が未承諾の連絡の受信を拒否しているため、メッセージは配信されませんでした。",
           "この購入者は出品者からの迷惑なメッセージをオプトアウトしました。"),
}
CASES = [(lang, i, text) for lang, texts in PARAPHRASES.items() for i, text in enumerate(texts)]
IDS = [f"{lang}-{i}" for lang, i, _ in CASES]
CTX = ClassifyContext(
    seller_address="seller@acme.example", staff_address="support@acme.example", staff_senders=("*@acme.example",),
    reply_address="seller+{token}@acme.example", relay_domains=ALL_RELAY_DOMAINS, sent_by_us=False,
    replies_to_us=False,
)


def _notice(sender: str, text: str, order: str | None = ORDER) -> bytes:
    about = f"Order ID: {order}\n\n" if order else ""
    return (f"From: Amazon <{sender}>\nTo: seller@acme.example\nSubject: Message not delivered\n"
            f"Message-ID: <n-{abs(hash(text))}@amazon.example>\nContent-Type: text/plain; charset=utf-8\n\n"
            f"{about}{text}\n").encode()


def test_every_language_of_every_marketplace_has_opt_out_words() -> None:
    assert set(notice_words.LANGUAGES["opted_out"]) == set(PARAPHRASES)
    assert all(len(texts) >= 3 for texts in PARAPHRASES.values())


@pytest.mark.parametrize(("language", "index", "text"), CASES, ids=IDS)
def test_a_reworded_notice_from_amazon_is_an_opt_out(language: str, index: int, text: str) -> None:
    raw = _notice("no-reply@amazon.de", text)
    mail = parse_mail(raw)
    assert classify(mail, CTX).kind is Kind.BOUNCE
    report = analyse(raw, mail)
    assert report is not None and report.kind is BounceKind.OPTOUT and report.order_id == ORDER
    assert report.marketplace_language == language and not report.verified


@pytest.mark.parametrize(("language", "index", "text"), CASES, ids=IDS)
def test_the_same_words_elsewhere_are_never_an_opt_out(language: str, index: int, text: str) -> None:
    """From a buyer (relayed), from a look-alike or foreign sender, or without an order: no opt-out."""
    buyer = (f"From: \"Jane - Amazon Marketplace\" <k7m2x9q4t1v8w3z5@marketplace.amazon.de>\n"
             f"To: seller@acme.example\nSubject: Opt-out\nMessage-ID: <b@example>\n"
             f"Content-Type: text/plain; charset=utf-8\n\nOrder ID {ORDER}:\n\n"
             f"------------- Begin message -------------\n\n{text}\n\n"
             "------------- End message -------------\n").encode()
    for raw in (buyer, _notice("no-reply@amazon.de.evil.example", text), _notice("anna@example.org", text),
                _notice("no-reply@amazon.de", text, order=None)):
        report = analyse(raw, parse_mail(raw))
        assert report is None or report.kind is not BounceKind.OPTOUT, raw[:80]
    assert classify(parse_mail(buyer), CTX).kind is Kind.BUYER
