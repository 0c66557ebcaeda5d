"""Marketplace notices recognised by vocabulary, not by whole sentences (pure data + one matcher).

Amazon words its "not delivered" notices differently per marketplace and over
time, and outside English the exact wording is unknown to us (docs/marketplaces.md
marks it unverified): a detector that waits for one exact sentence keeps missing.
Here a notice is recognised by the *ideas* it must contain, each a small set of
words per language, all of them in the notice's own text:

- ``opted_out``: an opting-out idea (opted out, chose not to receive, refused to
  receive...) and an unsolicited-messages idea (unsolicited, messages from sellers...;
  never "proactive", which is the restriction notice's word);
- ``restricted``: a restriction idea and a proactive-messages idea;
- ``not_delivered``: a could-not-deliver idea and a message idea.

Vocabulary is only trusted together with the evidence that only the marketplace
can give (the caller checks it): the mail comes from the marketplace's own
notification domain (exact match), the buyer's words and quoted history are not
searched, and the notice names an order. A buyer writing "I opted out of your
messages" comes from a relay alias with the buyer layout and never reaches this.

Languages: the marketplaces' of docs/marketplaces.md - en, de, fr, es, it, nl,
sv, pl, tr, pt, ar, ja.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# reason -> language -> the ideas, each a regex alternation; every idea must be present.
_IDEAS: dict[str, dict[str, tuple[str, ...]]] = {
    "opted_out": {
        "en": (r"opt(?:ed|s|ing)?[- ]?out|chos(?:en|e) not to receive|(?:does|do) not (?:wish|want) to receive"
               r"|declined to receive|no longer (?:wishes|wants) to receive|unsubscribed",
               r"unsolicited|messages? from sellers|marketing messages"),
        "de": (r"abgemeldet|widersprochen|abgelehnt|abbestellt|(?:keine|nicht)\b.{0,60}\b(?:erhalten|empfangen)"
               r"|entschieden,? keine",
               r"unaufgefordert|unerwünscht|nachrichten von verkäufern"),
        "fr": (r"désabonné|désinscrit|refusé de recevoir|choisi de ne (?:pas|plus) recevoir|ne souhaite pas recevoir"
               r"|opposé à la réception|désactivé la réception",
               r"non sollicités?|messages? (?:des|de) vendeurs"),
        "es": (r"optado por no recibir|decidido no recibir|elegido no recibir|rechazado recibir|dado de baja"
               r"|no desea recibir|darse de baja",
               r"no solicitad[oa]s?|mensajes de (?:los )?vendedores"),
        "it": (r"scelto di non ricevere|rifiutato di ricevere|disiscritt[oa]|non desidera ricevere"
               r"|disattivato la ricezione|deciso di non ricevere",
               r"non richiest[ie]|messaggi (?:dai|dei) venditori|indesiderat[ie]"),
        "nl": (r"afgemeld|gekozen om geen|wil geen\b.{0,40}\bontvangen|heeft bezwaar gemaakt|uitgeschreven",
               r"ongevraagde|berichten van verkopers"),
        "sv": (r"avregistrerat|valt att inte ta emot|avböjt att ta emot|vill inte ta emot|tackat nej",
               r"oönskade|oombedda|meddelanden från säljare"),
        "pl": (r"zrezygnował|wypisał się|nie chce otrzymywać|odmówił otrzymywania|wyłączył otrzymywanie",
               r"niezamówionych|niechcianych|wiadomości od sprzedawców"),
        "tr": (r"almamayı (?:tercih etti|seçti)|abonelikten çıktı|almayı reddetti|almak istemiyor",
               r"istenmeyen|talep edilmemiş|satıcılardan gelen mesaj"),
        "pt": (r"optou por não receber|decidiu não receber|recusou receber|cancelou a inscrição|não deseja receber",
               r"não solicitadas?|mensagens de vendedores"),
        "ar": (r"عدم تلقي|رفض تلقي|ألغى الاشتراك|إلغاء الاشتراك|لا يرغب في تلقي",
               r"غير المرغوب|غير المطلوبة|رسائل من البائعين"),
        "ja": (r"受信を拒否|受け取らない|オプトアウト|配信停止|受信しない",
               r"未承諾|出品者からの(?:メッセージ|連絡)|迷惑"),
    },
    "restricted": {
        "en": (r"restrict(?:ed|ion)|suspended|blocked", r"proactive messages?"),
        "de": (r"gesperrt|eingeschränkt|beschränkt", r"proaktive(?:n)? nachrichten"),
        "fr": (r"restreint|suspendu|bloqué", r"messages proactifs"),
        "es": (r"restringid[ao]|suspendid[ao]|bloquead[ao]", r"mensajes proactivos"),
        "it": (r"limitat[oa]|sospes[oa]|bloccat[oa]", r"messaggi proattivi"),
        "ja": (r"制限|停止", r"プロアクティブ"),
    },
}


@dataclass(frozen=True)
class VocabularyMatch:
    reason: str
    language: str
    words: tuple[str, ...]     # what matched, one per idea: the evidence shown to staff


_COMPILED = {reason: {lang: tuple(re.compile(idea, re.IGNORECASE) for idea in ideas) for lang, ideas in by_lang.items()}
             for reason, by_lang in _IDEAS.items()}
LANGUAGES: dict[str, tuple[str, ...]] = {reason: tuple(by_lang) for reason, by_lang in _IDEAS.items()}


def match(region: str) -> VocabularyMatch | None:
    """The first reason (opt-out before restriction) and language whose every idea is in ``region``."""
    folded = " ".join(region.split())
    for reason, by_lang in _COMPILED.items():
        for language, ideas in by_lang.items():
            found = [idea.search(folded) for idea in ideas]
            if all(found):
                return VocabularyMatch(reason, language, tuple(m.group(0) for m in found if m))
    return None
