"""Amazon Buyer-Seller Messaging: sites, extraction and fingerprints (pure data + functions).

:data:`AMAZON` is the :class:`~bridge.domain.marketplaces.protocol.Marketplace`
generic code reaches through the registry; the module functions below are its
layouts. What is in here, and how sure it is (see docs/marketplaces.md):

- order ids, ``[commMgrTok:...]``, the English Begin/End message markers, the
  HTML notification's ``<pre>`` block, the customer-service relay labels, the
  English subjects and the English opt-out / not-delivered / restricted texts
  come from docs/marketplaces.md (verified there);
- every localised marker, subject and fingerprint below is marked
  ``verified=False``: our best rendering of Amazon's wording. They widen what we
  recognise; tests must not treat them as gospel, and a wrong one costs only a
  missed match (the mail then falls through to a later rule and reaches staff);
- the sites' time zones, the display-name suffix " - Marketplace" and the
  notification sub-domains are ours, unverified, and fields of :class:`Amazon`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bridge.domain.marketplaces import amazon_orders, layout, notice_words
from bridge.domain.marketplaces.layout import (
    between_markers,
    clean_block,
    marker_regex,
    pre_blocks,
    squash,
)
from bridge.domain.marketplaces.protocol import (
    AttachmentRules,
    LocalisedText,
    MarketplaceFields,
    OrderNotice,
    ReplyRules,
    Site,
    UndeliveredNotice,
    split_alias,
)

# --------------------------------------------------------------------------- sites

AMAZON_TLDS = (
    "com", "ca", "com.mx", "com.br", "co.uk", "de", "fr", "it", "es", "nl", "se", "pl",
    "com.be", "ie", "com.tr", "ae", "sa", "eg", "in", "sg", "com.au", "co.jp",
)

# The language a site's buyers write in by default (docs/marketplaces.md: proactive mail
# must be in the buyer's language; templates are chosen by it later).
_LANGUAGE = {
    "com": "en", "ca": "en", "com.mx": "es", "com.br": "pt", "co.uk": "en", "de": "de",
    "fr": "fr", "it": "it", "es": "es", "nl": "nl", "se": "sv", "pl": "pl", "com.be": "fr",
    "ie": "en", "com.tr": "tr", "ae": "en", "sa": "ar", "eg": "ar", "in": "en", "sg": "en",
    "com.au": "en", "co.jp": "ja",
}
# Each site's time zone. *Unverified*: docs/marketplaces.md names none. This is the site's
# local time (Seller Central US reports in Pacific time); replace the Site to change it.
_TIME_ZONE = {
    "com": "America/Los_Angeles", "ca": "America/Los_Angeles", "com.mx": "America/Mexico_City",
    "com.br": "America/Sao_Paulo", "co.uk": "Europe/London", "de": "Europe/Berlin", "fr": "Europe/Paris",
    "it": "Europe/Rome", "es": "Europe/Madrid", "nl": "Europe/Amsterdam", "se": "Europe/Stockholm",
    "pl": "Europe/Warsaw", "com.be": "Europe/Brussels", "ie": "Europe/Dublin", "com.tr": "Europe/Istanbul",
    "ae": "Asia/Dubai", "sa": "Asia/Riyadh", "eg": "Africa/Cairo", "in": "Asia/Kolkata",
    "sg": "Asia/Singapore", "com.au": "Australia/Sydney", "co.jp": "Asia/Tokyo",
}
SITES: tuple[Site, ...] = tuple(
    Site(f"amazon.{tld}", "amazon", (f"marketplace.amazon.{tld}",), _LANGUAGE[tld], _TIME_ZONE[tld])
    for tld in AMAZON_TLDS
)

# Buyer-Seller Messaging attachment limits (docs/marketplaces.md "Replying"): up to 10 MB;
# SP-API's 5 attachments as a conservative bound. The allowed types are
# *unverified* (docs/marketplaces.md: allow pdf, jpg/jpeg, png, gif, txt by default, configurable).
ATTACHMENT_TYPES = ("pdf", "jpg", "jpeg", "png", "gif", "txt")   # file name extensions
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024                           # all attachments of one message together
MAX_ATTACHMENTS = 5

# "<8-32 lowercase letters/digits>@marketplace.amazon.<tld>" (docs/marketplaces.md), optionally
# "+<case id>" (mostly seen in To/Cc/Reply-To); the part before "+" is the buyer.
ALIAS_LOCAL_RE = re.compile(r"[a-z0-9]{8,32}")

# --------------------------------------------------------------------------- identifiers

# 17 digits as 3-7-7; digital orders start "D01-". Not part of a longer run of
# digits or dashes (a phone number or tracking id must not half-match).
ORDER_ID_RE = re.compile(r"(?<![\w-])(?:\d{3}|[Dd]01)-\d{7}-\d{7}(?![\w-])")
_LABELLED_ORDER_RE = re.compile(
    r"(?:order\s*(?:id|#|number|no\.?)|bestellnummer|bestellung|commande|pedido|ordine|注文番号|注文)"
    r"\s*[:#：]?\s*((?:\d{3}|[Dd]01)-\d{7}-\d{7})(?![\w-])",
    re.IGNORECASE,
)
COMM_MGR_TOK_RE = re.compile(r"\[\s*commMgrTok\s*:\s*([A-Za-z0-9_-]{4,64})\s*\]", re.IGNORECASE)
# ASINs are 10 characters: "B0" + 8 alphanumerics, or an ISBN-10 for books.
# (Starts with the literal so the regex engine can skip ahead quickly.)
ASIN_RE = re.compile(r"ASIN\s*[:：]\s*([A-Z0-9]{10})(?![A-Za-z0-9])")


# --------------------------------------------------------------------------- message markers

# (begin, end) labels of the classic plain-text layout, between lines of dashes:
# "------------- Begin message -------------".
MESSAGE_MARKERS: tuple[tuple[LocalisedText, LocalisedText], ...] = (
    (LocalisedText("en", "Begin message", True), LocalisedText("en", "End message", True)),
    # Unverified renderings of the localised sites' markers:
    (LocalisedText("de", "Beginn der Nachricht", False), LocalisedText("de", "Ende der Nachricht", False)),
    (LocalisedText("de", "Nachricht beginnen", False), LocalisedText("de", "Nachricht beenden", False)),
    (LocalisedText("fr", "Début du message", False), LocalisedText("fr", "Fin du message", False)),
    (LocalisedText("es", "Inicio del mensaje", False), LocalisedText("es", "Fin del mensaje", False)),
    (LocalisedText("it", "Inizio messaggio", False), LocalisedText("it", "Fine messaggio", False)),
    (LocalisedText("it", "Inizio del messaggio", False), LocalisedText("it", "Fine del messaggio", False)),
    (LocalisedText("nl", "Begin bericht", False), LocalisedText("nl", "Einde bericht", False)),
    (LocalisedText("pt", "Início da mensagem", False), LocalisedText("pt", "Fim da mensagem", False)),
    (LocalisedText("ja", "メッセージの開始", False), LocalisedText("ja", "メッセージの終了", False)),
    (LocalisedText("ja", "メッセージ開始", False), LocalisedText("ja", "メッセージ終了", False)),
)
BEGIN_MARKER_RE = marker_regex(tuple(b.text for b, _ in MESSAGE_MARKERS))
END_MARKER_RE = marker_regex(tuple(e.text for _, e in MESSAGE_MARKERS))


# --------------------------------------------------------------------------- customer-service relay

CS_RELAY_INTRO_RE = re.compile(
    r"We(?:'|\u2019)ve\s+been\s+contacted\s+by\s+a\s+customer\s+regarding\s+the\s+order\s+identified\s+below",
    re.IGNORECASE,
)
_CS_FIELD_RE = re.compile(r"^[ \t]*(Order#|Item|Reason|Details)[ \t]*:[ \t]*(.*)$", re.MULTILINE)
# Where the free-text "Details:" value ends (layout partly unverified: a dashed
# rule or the "To respond to this customer" paragraph follows it).
_CS_DETAILS_END_RE = re.compile(
    r"^[ \t]*(?:-{5,}|={5,}|To respond to this customer|Sincerely|Thank you for selling on Amazon)",
    re.MULTILINE | re.IGNORECASE,
)


@dataclass(frozen=True)
class CustomerServiceRelay:
    """An Amazon customer-service relay: a customer contacted Amazon, Amazon asks the seller."""

    order_id: str | None
    item: str | None
    reason: str | None
    details: str | None


def parse_cs_relay(text: str) -> CustomerServiceRelay | None:
    """Fields of a customer-service relay, or ``None`` when ``text`` is not one."""
    intro = CS_RELAY_INTRO_RE.search(text)
    if intro is None:
        return None
    body = text[intro.end():]
    values: dict[str, str] = {}
    details: str | None = None
    for m in _CS_FIELD_RE.finditer(body):
        label = m.group(1).lower()
        if label in values:
            continue
        if label == "details":
            rest = body[m.start(2):]
            end = _CS_DETAILS_END_RE.search(rest)
            details = clean_block(rest[:end.start()] if end else rest) or None
            values[label] = details or ""
            break
        values[label] = m.group(2).strip()
    order = ORDER_ID_RE.search(values.get("order#", ""))
    return CustomerServiceRelay(
        order_id=_normalise_order_id(order.group(0)) if order else None,
        item=values.get("item") or None,
        reason=values.get("reason") or None,
        details=details,
    )


# --------------------------------------------------------------------------- subjects

# Buyer name in the subject of a relayed buyer message.
BUYER_SUBJECT_PATTERNS: tuple[tuple[LocalisedText, re.Pattern[str]], ...] = tuple(
    (LocalisedText(lang, pattern, verified), re.compile(pattern, re.IGNORECASE))
    for lang, pattern, verified in (
        # "Product details inquiry from Amazon customer Jane Doe (Order: 111-...)"; UK "enquiry".
        ("en", r"\b(?:inquiry|enquiry) from Amazon customer (?P<name>.+?)\s*\((?:Order|Commande)\s*:", True),
        ("fr", r"Demande de renseignements de la part du client Amazon (?P<name>.+?)\s*\((?:Commande|Order)\s*:", True),
        ("en", r"\bmessage from Amazon customer (?P<name>.+?)\s*\((?:Order)\s*:", False),
        ("de", r"\bvon Amazon-Kunde(?:n)? (?P<name>.+?)\s*\(Bestellung\s*:", False),
        ("fr", r"\bdu client Amazon (?P<name>.+?)\s*\(Commande\s*:", False),
        ("es", r"\bdel cliente de Amazon (?P<name>.+?)\s*\(Pedido\s*:", False),
        ("it", r"\bdal cliente Amazon (?P<name>.+?)\s*\(Ordine\s*:", False),
        ("it", r"\bdel cliente Amazon (?P<name>.+?)\s*\(Ordine\s*:", False),
        ("ja", r"Amazonのお客様\s*(?P<name>.+?)\s*(?:様|さま)?から", False),
    )
)
# The display name Amazon gives a relay alias: "Jane - Amazon Marketplace".
_DISPLAY_NAME_RE = re.compile(r"^(?P<name>.+?)\s+-\s+Amazon Marketplace\s*$", re.IGNORECASE)

# Subjects of Amazon's own notifications to the seller (never a support thread).
NOTICE_SUBJECTS: tuple[tuple[str, LocalisedText, re.Pattern[str]], ...] = tuple(
    (topic, LocalisedText(lang, pattern, verified), re.compile(pattern, re.IGNORECASE))
    for topic, lang, pattern, verified in (
        # "Sold, ship now: <title>", "Sold, Ship Now. 12345 <title>", "Sold -- ship now! (2 listings/3 items)"
        ("sold_ship_now", "en", r"^\s*sold\s*[,.:;!\-\u2013\u2014]*\s*ship\s+now\b", True),
        ("sold_ship_now", "de", r"^\s*verkauft\s*[,.:;!\-]*\s*(?:jetzt\s+)?versenden\b", False),
        ("sold_ship_now", "fr", r"^\s*vendu\s*[,.:;!\-]*\s*exp[ée]diez\b", False),
        ("sold_ship_now", "es", r"^\s*vendido\s*[,.:;!\-]*\s*env[ií]e\b", False),
        ("sold_ship_now", "it", r"^\s*venduto\s*[,.:;!\-]*\s*spedisci\b", False),
        ("sold_ship_now", "ja", r"売れました.*発送", False),
        ("feedback", "en", r"\b(?:new|negative|neutral|positive)\s+(?:buyer\s+|seller\s+)?feedback\b", False),
        ("feedback", "en", r"\bfeedback\b.{0,40}\b(?:received|notification|posted|left)\b", False),
        ("claim", "en", r"\ba-?to-?z\s+(?:guarantee\s+)?claim\b", False),
        ("claim", "en", r"\bchargeback\b", False),
        ("claim", "en", r"\bsafe-?t\s+claim\b", False),
        ("return", "en", r"\breturn\s+(?:authori[sz]ation|request)\b", False),
        ("refund", "en", r"\brefund\s+(?:initiated|issued|processed)\b", False),
        ("cancellation", "en", r"\bcancell?ation\s+request\b", False),
    )
)

# Senders of Amazon notifications: exact domains only (a look-alike such as
# amazon.com.evil.example or evil-amazon.com never matches). Relay domains
# (marketplace.amazon.*) are buyers, not notices. Sub-domains beyond these
# are *unverified* and deliberately left out.
NOTIFICATION_DOMAINS: frozenset[str] = frozenset(
    {f"amazon.{tld}" for tld in AMAZON_TLDS}
    | {f"sellercentral.amazon.{tld}" for tld in AMAZON_TLDS}
    | {"sellercentral-europe.amazon.com", "sellercentral-japan.amazon.com"}
)


def is_notification_sender(addr: str) -> bool:
    """True when ``addr`` is at one of Amazon's own notification domains (exact match)."""
    local, at, domain = addr.strip().lower().rpartition("@")
    return bool(at and local) and domain in NOTIFICATION_DOMAINS


def notice_topic(subject: str) -> str | None:
    """"sold_ship_now", "feedback", "claim", ... for a notification subject, else ``None``."""
    for topic, _, pattern in NOTICE_SUBJECTS:
        if pattern.search(subject):
            return topic
    return None


# --------------------------------------------------------------------------- not delivered / opted out

# Order matters: the most specific reason first ("unable to deliver ...
# because the buyer has chosen to opt out" is an opt-out, not a generic failure).
UNDELIVERED_FINGERPRINTS: tuple[tuple[str, LocalisedText], ...] = tuple(
    (reason, LocalisedText(lang, phrase, verified))
    for reason, lang, phrase, verified in (
        ("opted_out", "en", "the buyer has chosen to opt out of receiving unsolicited messages", True),
        ("opted_out", "en", "the buyer opted out from receiving this message", True),
        ("opted_out", "en", "the buyer has opted out of receiving unsolicited messages", False),
        ("opted_out", "de", "keine unaufgeforderten Nachrichten von Verkäufern zu erhalten", False),
        ("opted_out", "de", "Der Käufer hat den Erhalt dieser Nachricht abgelehnt", False),
        ("opted_out", "fr", "a choisi de ne pas recevoir de messages non sollicités", False),
        ("opted_out", "fr", "L'acheteur a refusé de recevoir ce message", False),
        ("opted_out", "es", "ha decidido no recibir mensajes no solicitados", False),
        ("opted_out", "es", "El comprador ha rechazado recibir este mensaje", False),
        ("opted_out", "it", "ha scelto di non ricevere messaggi non richiesti", False),
        ("opted_out", "it", "L'acquirente ha rifiutato di ricevere questo messaggio", False),
        ("opted_out", "ja", "購入者が出品者からの未承諾のメッセージの受信を拒否", False),
        ("opted_out", "ja", "購入者はこのメッセージの受信を拒否しています", False),
        ("restricted", "en", "temporarily restricted from sending proactive messages", True),
        ("restricted", "de", "vorübergehend für das Senden proaktiver Nachrichten gesperrt", False),
        ("restricted", "fr", "temporairement restreint pour l'envoi de messages proactifs", False),
        ("restricted", "es", "restringida temporalmente para enviar mensajes proactivos", False),
        ("restricted", "it", "temporaneamente limitato nell'invio di messaggi proattivi", False),
        ("restricted", "ja", "プロアクティブメッセージの送信が一時的に制限", False),
        ("guidelines", "en", "did not meet the Buyer-Seller Messaging communication guidelines", True),
        ("guidelines", "de", "nicht den Kommunikationsrichtlinien für Nachrichten zwischen Käufern und Verkäufern", False),
        ("guidelines", "fr", "ne respectait pas les consignes de communication", False),
        ("guidelines", "es", "no cumplía las directrices de comunicación", False),
        ("guidelines", "it", "non rispettava le linee guida sulla comunicazione", False),
        ("guidelines", "ja", "コミュニケーションガイドラインを満たしていない", False),
        ("not_delivered", "en", "We were unable to deliver the message you sent", True),
        ("not_delivered", "de", "Wir konnten die Nachricht, die Sie gesendet haben, nicht zustellen", False),
        ("not_delivered", "fr", "Nous n'avons pas pu remettre le message que vous avez envoyé", False),
        ("not_delivered", "es", "No hemos podido entregar el mensaje que has enviado", False),
        ("not_delivered", "it", "Non è stato possibile recapitare il messaggio che hai inviato", False),
        ("not_delivered", "ja", "送信されたメッセージを配信できませんでした", False),
    )
)
_SQUASHED_FINGERPRINTS = tuple((reason, squash(lt.text)) for reason, lt in UNDELIVERED_FINGERPRINTS)

def notice_region(text: str, buyer_text: str | None) -> str:
    """The part of ``text`` Amazon itself wrote: buyer words (between markers or
    as extracted), ``>``-quoted lines and quoted history removed."""
    return layout.notice_region(text, buyer_text, (BEGIN_MARKER_RE, END_MARKER_RE))


def find_undelivered_notice(text: str, buyer_text: str | None = None, sender: str = "") -> UndeliveredNotice | None:
    """Recognise an opt-out / not-delivered / guidelines / restricted notice by content.

    Two ways, never by sender alone (the notice's sender address is unverified).
    Words a buyer wrote, and quoted history, are ignored: a buyer saying "I opted
    out" is not a notice.

    1. The sentences Amazon is known to write (``UNDELIVERED_FINGERPRINTS``), from any sender.
    2. Vocabulary (:mod:`bridge.domain.marketplaces.notice_words`: the ideas an
       opt-out or restriction notice must hold, in each marketplace language) when
       the mail also comes from one of Amazon's notification domains (exact match)
       and names an order: how reworded and translated notices are recognised.
    """
    region = notice_region(text, buyer_text)
    index = layout.first_fingerprint(region, _SQUASHED_FINGERPRINTS)
    if index is not None:
        reason, lt = UNDELIVERED_FINGERPRINTS[index]
        return UndeliveredNotice(reason, lt.language, lt.text, lt.verified, "amazon")
    if not (sender and is_notification_sender(sender) and ORDER_ID_RE.search(region)):
        return None
    words = notice_words.match(region)
    if words is None:
        return None
    return UndeliveredNotice(words.reason, words.language, " + ".join(words.words), False, "amazon")


# --------------------------------------------------------------------------- all fields at once

def find_order_id(subject: str, text: str, html: str | None = None) -> str | None:
    """The order id: from the subject, else a labelled body line, else the first one in the body."""
    m = ORDER_ID_RE.search(subject)
    if m is not None:
        return _normalise_order_id(m.group(0))
    labelled = _LABELLED_ORDER_RE.search(text)
    if labelled is not None:
        return _normalise_order_id(labelled.group(1))
    for source in (text, html or ""):
        m = ORDER_ID_RE.search(source)
        if m is not None:
            return _normalise_order_id(m.group(0))
    return None


def find_comm_mgr_tok(text: str, html: str | None = None) -> str | None:
    """The last ``[commMgrTok:...]`` in the text (the footer's; earlier ones are quoted), else in the HTML."""
    for source in (text, html or ""):
        last = None
        for last in COMM_MGR_TOK_RE.finditer(source):
            pass
        if last is not None:
            return last.group(1)
    return None


def find_buyer_text(text: str, html: str | None = None) -> str | None:
    """The buyer's own words: between Begin/End markers, else the HTML
    notification's ``<pre>`` block, else a customer-service relay's Details."""
    words = between_markers(text, BEGIN_MARKER_RE, END_MARKER_RE)
    if words:
        return words
    if html and "<pre" in html.lower():
        for block in pre_blocks(html):
            if block:
                return block
    relay = parse_cs_relay(text)
    if relay is not None and relay.details:
        return relay.details
    if html:
        words = between_markers(html, BEGIN_MARKER_RE, END_MARKER_RE)
        if words:
            return words
    return None


def find_buyer_name(subject: str, from_addr: str = "", from_name: str = "") -> str | None:
    """The buyer's name from the subject, else from a relay alias's display name."""
    for _, pattern in BUYER_SUBJECT_PATTERNS:
        m = pattern.search(subject)
        if m is not None:
            name = m.group("name").strip(" \"'")
            if name:
                return name
    if from_name and from_addr.rpartition("@")[2].startswith("marketplace.amazon."):
        m = _DISPLAY_NAME_RE.match(from_name)
        if m is not None:
            name = m.group("name").strip(" \"'")
            # Customer-service relays use "Amazon.com - Amazon Marketplace": not a buyer's name.
            if name and not name.lower().startswith("amazon"):
                return name
    return None


def find_asins(text: str) -> tuple[str, ...]:
    """ASINs named as ``ASIN: B0...``, in order, without duplicates."""
    found = (m.group(1) for m in ASIN_RE.finditer(text)
             if m.start() == 0 or not text[m.start() - 1].isalnum())
    return tuple(dict.fromkeys(found))


def extract_fields(*, subject: str, text: str, html: str | None,
                   from_addr: str = "", from_name: str = "") -> MarketplaceFields:
    """Every marketplace field :class:`bridge.domain.parse.ParsedMail` carries."""
    return MarketplaceFields(
        order_id=find_order_id(subject, text, html),
        comm_mgr_tok=find_comm_mgr_tok(text, html),
        buyer_text=find_buyer_text(text, html),
        buyer_name=find_buyer_name(subject, from_addr, from_name),
        asins=find_asins(text),
    )


def _normalise_order_id(order_id: str) -> str:
    return order_id.upper()


# --------------------------------------------------------------------------- the Marketplace

@dataclass(frozen=True)
class Amazon:
    """Amazon Buyer-Seller Messaging as a :class:`~bridge.domain.marketplaces.protocol.Marketplace`.

    The layouts and fingerprints are the module's functions above; the fields are
    the facts that may need changing without touching them.
    """

    sites: tuple[Site, ...] = SITES
    notification_domains: frozenset[str] = NOTIFICATION_DOMAINS
    # docs/marketplaces.md "Replying": reply on the buyer's thread with the original included;
    # no reply window is stated.
    reply: ReplyRules = ReplyRules(quote_original=True, reply_window=None)
    attachments: AttachmentRules = AttachmentRules(ATTACHMENT_TYPES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS,
                                                   verified=False)
    # Links to Amazon's own sites (the buyer's order page, the returns centre) do not lead off the platform.
    link_domains: tuple[str, ...] = tuple(f"amazon.{tld}" for tld in AMAZON_TLDS)
    # "Jane - Amazon Marketplace" (docs/marketplaces.md); the shorter form is our guess.
    display_name_suffixes: tuple[str, ...] = (" - Amazon Marketplace", " - Marketplace")
    lookalike_words: tuple[str, ...] = ("amazon", "marketplace")
    alias_local_re: re.Pattern[str] = ALIAS_LOCAL_RE
    family: str = field(default="amazon", init=False)
    name: str = field(default="Amazon", init=False)
    relay_domains: frozenset[str] = field(init=False, repr=False, compare=False)
    languages: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "relay_domains", frozenset(d for s in self.sites for d in s.relay_domains))
        known = [lt.language for _, lt in UNDELIVERED_FINGERPRINTS] + [s.language for s in self.sites]
        object.__setattr__(self, "languages", tuple(dict.fromkeys(known)))

    def split_alias(self, address: str) -> tuple[str, str | None] | None:
        return split_alias(address, self.relay_domains, self.alias_local_re)

    def extract_fields(self, *, subject: str, text: str, html: str | None,
                       from_addr: str = "", from_name: str = "") -> MarketplaceFields:
        return extract_fields(subject=subject, text=text, html=html, from_addr=from_addr, from_name=from_name)

    def find_order_id(self, subject: str, text: str) -> str | None:
        return find_order_id(subject, text)

    def notice_topic(self, subject: str) -> str | None:
        return notice_topic(subject)

    def find_undelivered_notice(self, text: str, buyer_text: str | None = None,
                                sender: str = "") -> UndeliveredNotice | None:
        return find_undelivered_notice(text, buyer_text, sender)

    def read_order_notices(self, subject: str, text: str) -> tuple[OrderNotice, ...]:
        return amazon_orders.read_order_notices(notice_topic(subject), subject, text, ORDER_ID_RE)


AMAZON = Amazon()
