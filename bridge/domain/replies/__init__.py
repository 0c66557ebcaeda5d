"""Staff reply text extraction (pure): the new words staff wrote, nothing else.

Staff answer a forwarded buyer message from their own mail client. What comes
back holds their words plus whatever the client added: a quote header
("On ... wrote:", an Outlook "From:/Sent:" block), the quoted notification
(which starts with our ``MARKER`` line), a signature, "Sent from my iPhone".
Only the new words may reach the buyer, so :func:`extract_reply` cuts, in
this order (each rule has a name, reported in ``ReplyText.cut_at``/``hits``):

1. ``marker``: our own "##- Please type your reply above this line -##",
   found even when quoted ("> > ##- ..."), re-spaced, re-cased or wrapped
   over up to three lines. Everything from it down is our notification.
2. Client quote headers above it (the earliest wins):
   ``original_message`` ("-----Original Message-----" and its forms in the
   marketplaces' languages), ``outlook_header_block`` (From/Sent/To/Subject
   blocks in en, de, fr, es, it, ja, da, no, sv, nl, pl, pt, tr, ru, zh, with
   or without the "____" separator line above), and the
   attribution line "On <date>, X wrote:" (also "Am ... schrieb ...:",
   "Le ... a écrit :", "El ... escribió:", "Il ... ha scritto:", Japanese
   "2026年11月23日(月) 14:02 X <x@y>:" / "...さんは書きました:"), labelled by
   its shape: ``apple_mail`` (", at 14:02,"), ``thunderbird`` (numeric date)
   or ``gmail_on_wrote`` (every other attribution line; the client label is a
   best guess, the cut is the same). An attribution line only counts when it
   is followed by quoted lines, our marker or nothing: "the courier wrote:"
   inside the staff's own sentence never cuts.
   ``mailparser_reply``: when none of our header rules matched, the
   mail-parser-reply library is asked (more languages: nl, sv, da, cs, ko,
   zh...) on the text above the marker, with the same follow-up check (see
   :mod:`~bridge.domain.replies.library` for what it is trusted with, and why).
   ``attribution``: the last resort, the line or two just above the first
   quoted line (or quoted marker) ending in ":" with a time or an address
   in it: any client, any language ("Em ... escreveu:", "Op ... schreef X:").
3. ``quote_prefix``: trailing ">"-quoted lines. When new text sits between or
   after quoted lines (an inline or bottom-posted answer), only the unquoted
   lines are kept, blocks separated by a blank line: ``inline``.
4. ``signature``: the RFC 3676 4.3 "-- " delimiter and what follows it, and
   trailing mobile/app lines ("Sent from my iPhone", "Get Outlook for
   Android", "Von meinem iPhone gesendet", "iPhoneから送信"...). Sign-offs
   such as "Best regards, Anna" are the staff's words and stay.

HTML-only replies (empty ``text``) are rendered by the project's one HTML
converter (:mod:`bridge.domain.htmltext`), told to cut at the client's quote
container (Gmail ``gmail_quote``, Outlook ``divRplyFwdMsg``/``appendonsend``,
Hotmail's ``<hr id="stopSpelling">`` and Outlook on the web's ``<hr tabindex="-1">``,
Yahoo ``yahoo_quoted``: the rule is ``html_*``), to leave out the signature
blocks Gmail and Thunderbird mark (``gmail_signature``, ``moz-signature``),
and to leave each ``<blockquote>`` as one ">" line so the text rules see where
the quote was; links become "text <url>".

Everything runs in linear time: the text is split into lines once, every
pattern looks at one line (or a join of at most three) of bounded length,
and the library (whose regexes backtrack) only sees bounded input.

Where each part lives: :mod:`~bridge.domain.replies.extract` (the entry point
and the order above), :mod:`~bridge.domain.replies.lines`,
:mod:`~bridge.domain.replies.marker`, :mod:`~bridge.domain.replies.headers`,
:mod:`~bridge.domain.replies.library`, :mod:`~bridge.domain.replies.signatures`,
:mod:`~bridge.domain.replies.html_quotes`.
"""

from __future__ import annotations

from bridge.domain.replies.extract import ReplyText, extract_reply

__all__ = ["ReplyText", "extract_reply"]
