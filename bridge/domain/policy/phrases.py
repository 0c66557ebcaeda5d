"""Wording the content rules look for, as data (no logic here).

Each table is ``(language, what it is, regex)``; :mod:`.rules` compiles them at
import. English follows Amazon's Buyer-Seller Messaging guidelines
(docs/marketplaces.md "Content rules"); the other languages are our own renderings of the
same asks, kept here so a reviewer can extend them without touching the logic.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------- review manipulation

_REVIEW_EN = r"(?:review|feedback|rating)s?"
_INCENTIVE_EN = (r"(?:refund|gift(?:\s*card)?|discount|coupon|voucher|reward|free\s+\w+|cash\s*back|rebate|"
                 r"compensation|money\s+back|bonus)")
_REVIEW_DE = r"(?:Bewertung|Rezension|Kundenrezension|Feedback|Sternebewertung)(?:en)?"
_INCENTIVE_DE = r"(?:Rückerstattung|Erstattung|Gutschein|Geschenk|Rabatt|Prämie|Belohnung|Geld\s+zurück)"
_REVIEW_FR = r"(?:avis|évaluation|commentaire|note)s?"
_INCENTIVE_FR = r"(?:remboursement|cadeau|réduction|remise|bon\s+d'achat|coupon|récompense)"
_REVIEW_ES = r"(?:reseña|opinión|valoración|comentario|calificación)(?:es|s)?"
_INCENTIVE_ES = r"(?:reembolso|regalo|descuento|cupón|vale|recompensa)"
_REVIEW_IT = r"(?:recensione|recensioni|valutazione|valutazioni|feedback)"
_INCENTIVE_IT = r"(?:rimborso|regalo|sconto|buono|coupon|omaggio|premio)"
_REVIEW_JA = r"(?:レビュー|評価|カスタマーレビュー)"
_INCENTIVE_JA = r"(?:返金|プレゼント|割引|クーポン|ギフト券|ギフトカード|特典|ポイント)"

# (language, what it is, regex). Incentives, asks for a *positive* review, asks
# to change or remove one, and review gating ("only if you are happy").
# Non-English lists are our own renderings of the same asks.
REVIEW_MANIPULATION_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("en", "asks for a positive review",
     rf"\b(?:positive|good|great|nice|excellent|glowing|favou?rable|awesome|perfect|top)\s+{_REVIEW_EN}"),
    ("en", "asks for a star rating", r"\b(?:5|five)[- ]?stars?\b|\b(?:5|five)[- ]star\b|★{4,}"),
    ("en", "offers something for a review",
     rf"\b{_INCENTIVE_EN}\b[^.!?\n]{{0,80}}\b(?:in exchange for|in return for|if you|once you|after you|when you|"
     rf"for leaving|for writing|for posting)\b[^.!?\n]{{0,40}}\b{_REVIEW_EN}"),
    ("en", "offers something for a review",
     rf"\b(?:in exchange for|in return for|for leaving|for writing|for posting|if you (?:leave|write|post|give)|"
     rf"once you (?:leave|write|post))\b[^.!?\n]{{0,40}}\b{_REVIEW_EN}\b[^.!?\n]{{0,80}}\b{_INCENTIVE_EN}"),
    ("en", "asks to change or remove a review",
     r"\b(?:(?:chang|remov|delet|updat|revis|amend|edit|withdr[ae]w|reconsider|retract|modif|rais|improv|upgrad)"
     r"\w*|tak(?:e|es|ing|en)\s+down)\s+(?:(?:your|the|this|that|my|our|negative|bad|poor|critical|low|"
     r"1-star|one-star|2-star|two-star|previous|recent)\s+){0,3}" + _REVIEW_EN + r"\b"),
    ("en", "asks only satisfied buyers for a review",
     rf"\bif you(?:'re| are| were)? (?:happy|satisfied|pleased|delighted)\b[^.!?\n]{{0,60}}\b{_REVIEW_EN}"),
    ("en", "asks to contact the seller before reviewing",
     rf"\bbefore (?:leaving|writing|posting|giving) (?:a |any |your )?(?:negative |bad |poor )?{_REVIEW_EN}"),
    ("de", "asks for a positive review",
     rf"\b(?:positive|gute|sehr gute|tolle|hervorragende)[nr]?\s+{_REVIEW_DE}"),
    ("de", "asks for a star rating", r"\b(?:5|fünf)[- ]?Sterne"),
    ("de", "offers something for a review",
     rf"\b{_INCENTIVE_DE}[^.!?\n]{{0,80}}\b(?:im Austausch|als Gegenleistung|wenn Sie|für eine|für Ihre|sobald Sie)"
     rf"\b[^.!?\n]{{0,40}}{_REVIEW_DE}"),
    ("de", "offers something for a review",
     rf"\b(?:im Austausch für|als Gegenleistung für|für eine|für Ihre)\s+(?:\w+\s+)?{_REVIEW_DE}[^.!?\n]{{0,80}}"
     rf"{_INCENTIVE_DE}"),
    ("de", "asks to change or remove a review",
     rf"{_REVIEW_DE}\s+(?:zu\s+)?(?:ändern|löschen|entfernen|aktualisieren|zurückzuziehen|zurückziehen|anpassen|"
     r"überarbeiten|abändern)"),
    ("fr", "asks for a positive review",
     rf"\b{_REVIEW_FR}\s+(?:positi(?:f|ve)s?|favorables?|élogieux)|\bbonne\s+(?:évaluation|note)|\bbon\s+"
     rf"(?:avis|commentaire)"),
    ("fr", "asks for a star rating", r"\b(?:5|cinq)\s+étoiles"),
    ("fr", "offers something for a review",
     rf"\b{_INCENTIVE_FR}[^.!?\n]{{0,80}}(?:en échange d|si vous|contre (?:un|votre))[^.!?\n]{{0,40}}{_REVIEW_FR}"),
    ("fr", "offers something for a review",
     rf"(?:en échange d(?:'un|e votre|’un)|contre (?:un|votre))\s+{_REVIEW_FR}[^.!?\n]{{0,80}}{_INCENTIVE_FR}"),
    ("fr", "asks to change or remove a review",
     rf"\b(?:modifier|supprimer|retirer|changer|mettre à jour|revoir)\s+(?:votre|l'|l’|cet|ce|cette)\s*"
     rf"{_REVIEW_FR}"),
    ("es", "asks for a positive review",
     rf"\b{_REVIEW_ES}\s+(?:positiv[ao]s?|favorables?|de 5 estrellas)|\bbuen[ao]s?\s+{_REVIEW_ES}"),
    ("es", "asks for a star rating", r"\b(?:5|cinco)\s+estrellas"),
    ("es", "offers something for a review",
     rf"\b{_INCENTIVE_ES}[^.!?\n]{{0,80}}(?:a cambio de|si (?:nos )?(?:deja|escribe|publica)s?|cuando (?:nos )?"
     rf"(?:deje|escriba)s?)[^.!?\n]{{0,40}}{_REVIEW_ES}"),
    ("es", "offers something for a review",
     rf"\ba cambio de (?:una? |su |tu )?{_REVIEW_ES}[^.!?\n]{{0,80}}{_INCENTIVE_ES}"),
    ("es", "asks to change or remove a review",
     rf"\b(?:cambiar|eliminar|borrar|retirar|modificar|actualizar|quitar)\s+(?:su|tu|la|esta|el|este)\s+"
     rf"{_REVIEW_ES}"),
    ("it", "asks for a positive review",
     rf"\b{_REVIEW_IT}\s+(?:positiv[aei]|favorevol[ei]|a 5 stelle)|\bbuon[ae]\s+{_REVIEW_IT}"),
    ("it", "asks for a star rating", r"\b(?:5|cinque)\s+stelle"),
    ("it", "offers something for a review",
     rf"\b{_INCENTIVE_IT}[^.!?\n]{{0,80}}(?:in cambio di|se (?:ci )?lasci|quando (?:ci )?lasci)[^.!?\n]{{0,40}}"
     rf"{_REVIEW_IT}"),
    ("it", "offers something for a review",
     rf"\bin cambio di (?:una? |sua |tua )?{_REVIEW_IT}[^.!?\n]{{0,80}}{_INCENTIVE_IT}"),
    ("it", "asks to change or remove a review",
     rf"\b(?:modificare|rimuovere|eliminare|cambiare|aggiornare|ritirare|cancellare)\s+(?:la sua|la tua|la|questa|"
     rf"il suo|il tuo|il)\s+{_REVIEW_IT}"),
    ("ja", "asks for a positive review", r"高評価|良い(?:評価|レビュー)|好評価|星[5５]|★[5５]|[5５]つ星|満点"),
    ("ja", "offers something for a review",
     rf"{_INCENTIVE_JA}[^。！？\n]{{0,40}}{_REVIEW_JA}|{_REVIEW_JA}[^。！？\n]{{0,30}}(?:いただければ|頂ければ|"
     rf"いただいた方|頂いた方|書いていただくと)[^。！？\n]{{0,30}}{_INCENTIVE_JA}"),
    ("ja", "asks to change or remove a review",
     rf"{_REVIEW_JA}[をのは]?[^。！？\n]{{0,6}}(?:変更|削除|取り消|取消|修正|更新|書き直|見直)"),
)


# --------------------------------------------------------------------------- marketing

# (language, what, regex): promotional wording. Kept precise: "sale" alone,
# "offer" alone or "new" alone are ordinary words in support mail.
MARKETING_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("en", "promotion", r"\bcheck out our (?:new|latest|other|full|entire|newest)\b"),
    ("en", "sale", r"\b(?:on sale|sale (?:ends|starts|now on)|(?:summer|winter|spring|autumn|fall|holiday|"
                   r"christmas|black friday|cyber monday|clearance|flash|big|annual|seasonal|anniversary) sale)\b"),
    ("en", "discount", r"\d+\s*%\s*off\b"),
    ("en", "newsletter", r"\bnewsletters?\b"),
    ("en", "social media", r"\bfollow us on\b|\blike us on (?:facebook|instagram)\b"),
    ("en", "promotion", r"\b(?:visit|browse) our (?:store|shop|storefront|website|site|other products)\b"),
    ("en", "promotion", r"\bnew arrivals\b|\bshop now\b|\bour other products\b|\bsubscribe to our\b"),
    ("en", "promotion", r"\blimited[- ]time (?:offer|deal|only)\b|\bexclusive (?:offer|deal|discount)s?\b"),
    ("en", "promotion", r"\b(?:promo|discount|coupon|voucher) codes?\b|\bbuy (?:one|1),? get (?:one|1)\b"),
    ("de", "discount", r"\d+\s*%\s*Rabatt\b"),
    ("de", "social media", r"\bfolgen Sie uns\b"),
    ("de", "promotion", r"\bbesuchen Sie unseren (?:Shop|Store|Webshop)\b|\b(?:Rabatt|Gutschein)code\b"),
    ("fr", "discount", r"\d+\s*%\s*de (?:réduction|remise)\b"),
    ("fr", "social media", r"\bsuivez-nous\b"),
    ("fr", "promotion", r"\bcode promo\b|\bdécouvrez nos nouveau(?:x|tés)\b|\bsoldes\b"),
    ("es", "discount", r"\d+\s*%\s*de descuento\b"),
    ("es", "social media", r"\bsíguenos\b"),
    ("es", "promotion", r"\bcódigo (?:de )?(?:descuento|promocional)\b|\bdescubre nuestr[ao]s nuev|\brebajas\b"),
    ("it", "discount", r"\d+\s*%\s*di sconto\b"),
    ("it", "social media", r"\bseguici\b"),
    ("it", "promotion", r"\bcodice (?:sconto|promozionale)\b|\bscopri i nostri nuovi\b|\bsaldi\b"),
    ("ja", "sale", r"セール"),
    ("ja", "discount", r"\d+\s*[%％]\s*(?:オフ|OFF)"),
    ("ja", "social media", r"フォローして"),
    ("ja", "newsletter", r"メルマガ|メールマガジン"),
    ("ja", "promotion", r"クーポンコード|新商品のご案内"),
)


# --------------------------------------------------------------------------- opt-out links

OPT_OUT_LINK_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("en", "unsubscribe", r"\bunsubscrib(?:e|ing)\b"),
    ("en", "opt-out link", r"\bopt[- ]?out (?:here|link|below|now|at)\b|\bclick here to (?:opt[- ]?out|stop)\b"),
    ("en", "opt-out instruction",
     r"\b(?:if you (?:no longer|do not|don't) (?:wish|want) to receive|to stop receiving) (?:these |our |further |"
     r"future |any )?(?:e-?mails|messages)\b"),
    ("en", "preferences link", r"\bmanage (?:your )?(?:email|e-mail|subscription|communication) preferences\b"),
    ("de", "unsubscribe", r"\b(?:hier|vom Newsletter) abmelden\b|\babbestellen\b|\bAbmeldelink\b"),
    ("fr", "unsubscribe", r"\bse désabonner\b|\bdésinscri(?:re|ption|vez)\b|\bdésabonnement\b"),
    ("es", "unsubscribe", r"\bdar(?:se|te) de baja\b|\bcancelar (?:la |tu |su )?suscripción\b"),
    ("it", "unsubscribe", r"\bannulla(?:re)? (?:l'|l’)?iscrizione\b|\bdisiscriv\w*"),
    ("ja", "unsubscribe", r"配信停止|購読解除|配信を停止"),
)


# --------------------------------------------------------------------------- "thank you"-only messages

# Sentences that only thank, greet or sign off. A proactive message made of
# nothing else is a "thank you"-only message.
THANKS_RE = re.compile(
    r"\bthank(?:s| you)\b[^.!?\n]{0,60}\b(?:order|purchase|buying|shopping|business|choosing|support|trust)"
    r"|\bwe (?:really |truly |greatly )?appreciate (?:your|you)\b|\b(?:we )?hope you (?:enjoy|like|love|are enjoying)\b"
    r"|\benjoy your (?:new |purchase|order|product|item)|^\W*(?:many |thanks? )?thank(?:s| you)(?: so much| very much| again)?\W*$"
    r"|\b(?:danke|vielen dank|herzlichen dank)\b[^.!?\n]{0,60}(?:bestellung|einkauf|kauf|vertrauen)"
    r"|\bviel (?:freude|spaß)\b|\bmerci\b[^.!?\n]{0,60}(?:commande|achat|confiance)|\bbonne (?:utilisation|réception)\b"
    r"|\bgracias\b[^.!?\n]{0,60}(?:pedido|compra|confianza)|\besperamos que (?:disfrute|le guste|te guste)"
    r"|\bgrazie\b[^.!?\n]{0,60}(?:ordine|acquisto|fiducia)|\bsperiamo che (?:ti|le) piaccia"
    r"|(?:ご注文|お買い上げ|お買い求め|ご購入|ご利用)[^。！？\n]{0,20}(?:ありがとう|有難う)|^\W*ありがとうございま",
    re.IGNORECASE,
)
GREETING_RE = re.compile(
    r"^\W*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|hallo|guten tag|liebe[rs]?|sehr geehrte[rs]?|"
    r"bonjour|bonsoir|cher|chère|hola|buenos días|estimad[oa]s?|querid[oa]s?|ciao|buongiorno|gentile|salve|"
    r"こんにちは)\b[^.!?\n]{0,40}$|様$",
    re.IGNORECASE,
)
SIGNOFF_RE = re.compile(
    r"^\W*(?:(?:best|kind|warm|many|warmest|kindest)\s+(?:regards|wishes)|regards|sincerely|yours(?: truly| "
    r"sincerely)?|cheers|best|mit freundlichen grüßen|freundliche grüße|viele grüße|beste grüße|cordialement|"
    r"bien à vous|salutations|saludos(?: cordiales)?|atentamente|un saludo|cordiali saluti|distinti saluti|saluti|"
    r"un saluto|よろしくお願い(?:いた)?します)\b[^.!?\n]{0,40}$",
    re.IGNORECASE,
)
