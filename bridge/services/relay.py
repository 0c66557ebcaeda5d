"""Staff reply -> buyer: verify, extract, compose, queue (inside the ingest transaction).

Only staff can make mailbridge write to a buyer, and only to the buyer of an
existing conversation (docs/architecture.md, "Invariants"):
- the classifier has already required an allowed staff sender and put
  automatic replies (out-of-office) aside;
- the reply token must verify for *this* account (HMAC, constant time), or,
  when a mail server dropped the plus-address, In-Reply-To/References must
  name one of our staff notifications of a conversation;
- the recipient is taken from the recorded buyer message, never from the
  staff mail.
Whatever fails is not sent: the staff member gets an explanation of what
failed and what to do. The same staff reply ingested twice (a copy, a resync)
is relayed once: the outbox row carries a unique dedupe key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message

from sqlalchemy.engine import Connection

from bridge import store
from bridge.config import RelaySettings
from bridge.domain import compose, policy, threads, tokens
from bridge.domain.classify import Classification
from bridge.domain.parse import ParsedMail
from bridge.domain.replies import extract_reply
from bridge.services import guard, reminders
from bridge.services.account import AccountContext
from bridge.services.notify import queue_staff_mail, render

log = logging.getLogger(__name__)

_QUOTE_PLACEHOLDER = "\x00mailbridge-quoted-buyer-message\x00"


@dataclass(frozen=True)
class RelayOutcome:
    action: str          # queued | held | explained | duplicate | closed (no response needed)
    reason: str = ""
    outbox_id: int | None = None


def attachments_of(raw: bytes) -> list[compose.AttachmentData]:
    """Files a staff member attached. Inline parts (signature logos with a Content-ID) are not files."""
    msg = message_from_bytes(raw, policy=email_policy.compat32)
    out: list[compose.AttachmentData] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        filename = part.get_filename()
        if disposition != "attachment" and not (filename and disposition != "inline" and not part.get("Content-ID")):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        out.append(compose.AttachmentData(_decoded(filename) or "attachment", part.get_content_type(), payload))
    return out


def _decoded(filename: str | None) -> str | None:
    if filename is None:
        return None
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(filename)))
    except Exception:  # noqa: BLE001 - a garbled name is still a name
        return filename


def attachment_problem(files: list[compose.AttachmentData], limits: RelaySettings) -> str | None:
    """Why these attachments may not go to a buyer, or None (docs/marketplaces.md: 10 MB, safe types, 5 files)."""
    if len(files) > limits.max_attachments:
        return f"{len(files)} attachments; the marketplace accepts at most {limits.max_attachments}"
    total = sum(len(f.data) for f in files)
    if total > limits.max_attachment_bytes:
        return (f"the attachments add up to {total / 1048576:.1f} MB; the limit is "
                f"{limits.max_attachment_bytes / 1048576:.1f} MB")
    for f in files:
        ext = f.filename.rpartition(".")[2].lower() if "." in f.filename else ""
        if ext not in limits.attachment_types:
            return (f"{f.filename!r} is not an allowed file type (allowed: "
                    f"{', '.join(limits.attachment_types)})")
    return None


def handle_staff_reply(conn: Connection, acct: AccountContext, mail: ParsedMail, cls: Classification,
                       raw: bytes, content_hash: str, message_row: int, limits: RelaySettings,
                       now: datetime) -> RelayOutcome:
    s = acct.settings
    answered = (mail.in_reply_to, *mail.references)
    if cls.reply_token:
        conv_id = tokens.verify_reply_token(acct.secret, s.name, cls.reply_token)
        if conv_id is None:
            return _explain(conn, acct, mail, now, "Not sent",
                            "the reply address of your email does not carry a valid mailbridge token: it was "
                            "changed, or it belongs to another seller account.",
                            "answer the buyer by pressing Reply on the notification mailbridge sent you, and "
                            "leave the address it fills in unchanged.")
    else:
        # Only the message directly answered counts (RFC 5322 3.6.4: In-Reply-To, else the last
        # References entry): a reply to a confirmation also cites the notification further up.
        parent = mail.in_reply_to or (mail.references[-1] if mail.references else None)
        conv_id = store.conversation_of_notification(conn, s.name, (parent,))
        if conv_id is None:
            return _explain(conn, acct, mail, now, "Not sent",
                            "your email answers a mailbridge message that is not about a buyer conversation "
                            "(an alert or an unclassified message), so there is no buyer to send it to.",
                            "to answer a buyer, reply to the notification of their message.")
    conv = store.conversation_info(conn, s.name, conv_id)
    if conv is None:
        return _explain(conn, acct, mail, now, "Not sent", "the conversation this reply belongs to does not exist "
                        "(any more) in this seller account.", "reply to a newer notification of that buyer.")
    # Before the status check: a "no response needed" ingested again finds its conversation closed by itself.
    dedupe_key = f"relay:{s.name}:{mail.message_id or content_hash}"
    if store.dedupe_key_used(conn, dedupe_key):
        log.info("account %s: staff reply %s already relayed; not again", s.name, mail.message_id)
        return RelayOutcome("duplicate", "already relayed")
    if conv.status != "open":
        return _explain(conn, acct, mail, now, "Not sent", f"conversation MB-{conv.id} is closed.",
                        "ask an operator to reopen it, or wait for the buyer to write again.")

    has_plain = mail.has_text_body or not mail.html
    reply = extract_reply(mail.text if has_plain else "", None if has_plain else mail.html)
    if reply.empty:
        return _explain(conn, acct, mail, now, "Not sent",
                        "mailbridge found no new text of yours above the quoted message.",
                        "write your answer above the line \"" + compose.MARKER + "\" and send it again.")
    if reminders.is_no_response_needed(acct, reply.text):
        # Never relayed: closes the conversation and stops its reminders; the buyer gets nothing.
        reminders.close_without_answer(conn, acct, conv, mail, reply.text, dedupe_key, now)
        return RelayOutcome("closed", "no response needed")
    original = store.buyer_message_to_quote(conn, s.name, conv.id, answered)
    if original is None or not original.buyer_address:
        return _explain(conn, acct, mail, now, "Not sent", f"conversation MB-{conv.id} has no buyer message to "
                        "answer.", "check the conversation with `mailbridge status`.", reply.text)
    files = attachments_of(raw) if mail.attachments else []
    problem = attachment_problem(files, limits)

    variables = {
        "staff_text": reply.text,
        "seller_name": s.seller_name,
        "buyer_name": conv.buyer_name,
        "buyer_subject": threads.thread_subject(original.subject) or original.subject,
        "buyer_text": original.text.strip(),
        "buyer_date": original.sent_date.strftime("%d %b %Y") if original.sent_date else None,
        "order_id": original.order_id or conv.order_id,
        "comm_mgr_tok": original.comm_mgr_tok or conv.comm_mgr_tok,
    }
    rendered = render(conn, acct, "buyer_reply", variables, now)
    message_id = compose.new_message_id(s.seller_address)

    # The compliance gate (issue 4): content rules apply to our own words, so the
    # template is rendered once more with a placeholder where the buyer's quoted
    # message goes; the whole rendered text must still quote the buyer.
    own = render(conn, acct, "buyer_reply", {**variables, "buyer_text": _QUOTE_PLACEHOLDER}, now).text
    own_text = own.replace(_QUOTE_PLACEHOLDER, "")
    draft = policy.Draft(
        from_addr=s.seller_address, to_addr=original.buyer_address, subject=rendered.subject, text=own_text,
        category=policy.Category.REPLY, quoted_original=rendered.text,
        attachments=tuple(policy.AttachmentInfo(filename=f.filename, content_type=f.content_type, size=len(f.data))
                          for f in files),
    )
    decision = guard.check(conn, account=s.name, draft=draft, buyer_alias=original.buyer_address,
                           buyer_original_text=original.text, now=now, config=acct.policy,
                           buyer_message_at=original.sent_date)
    content_blocks = [f for f in decision.blocking if f.rule != "attachments_within_limits"]
    audit = dict(account=s.name, now=now, category="reply", findings=decision.findings,
                 evaluated=decision.evaluated, buyer=threads.base_alias(original.buyer_address),
                 conversation_id=conv.id, actor=mail.from_addr)
    if content_blocks:
        guard.record(conn, decision="blocked", detail=f"staff reply <{mail.message_id}>", **audit)  # type: ignore[arg-type]
        blocked = policy.Decision(allowed=False, findings=tuple(content_blocks), evaluated=decision.evaluated)
        return _explain(conn, acct, mail, now, "Blocked",
                        "it breaks the marketplace's messaging rules:\n\n" + policy.explain(blocked, own_text),
                        "change the marked text and send your answer again; it goes out as soon as it passes.",
                        reply.text)
    attachment_blocks = [f for f in decision.blocking if f.rule == "attachments_within_limits"]
    if attachment_blocks and not problem:
        problem = "; ".join(f.reason for f in attachment_blocks)
    # The marketplace's attachment limits hold the reply for a person to decide; a
    # blocked reply was explained and returned above.
    verdict = "held" if problem else ("warned" if decision.findings else "allowed")
    guard.record(conn, decision=verdict, message_id=message_id, **audit)  # type: ignore[arg-type]
    if reply.removed_lines:
        # Contact lines of the staff member's signature: cut before the guard ran; the confirmation lists them.
        guard.record(conn, account=s.name, now=now, event="signature", decision="cut", category="reply",
                     message_id=message_id, conversation_id=conv.id, actor=mail.from_addr,
                     detail="\n".join(reply.removed_lines))
    references = tuple(dict.fromkeys((*original.references, *([original.message_id] if original.message_id else []))))
    out = compose.build_mail(
        account=s.name, origin=tokens.make_origin(acct.secret, s.name, message_id), message_id=message_id,
        date=now, from_name=s.seller_name, from_addr=s.seller_address, to_addr=original.buyer_address,
        subject=rendered.subject, text=rendered.text, in_reply_to=original.message_id, references=references,
        auto_submitted=False, attachments=tuple(files),
    )
    outbox_id = store.enqueue(
        conn, account=s.name, message_id=out.message_id, purpose="buyer_reply", audience="buyer",
        envelope_from=out.envelope_from, recipients=out.recipients, subject=out.subject, raw=out.raw, now=now,
        conversation_id=conv.id, source_message_id=message_row, state="held" if problem else "queued",
        dedupe_key=dedupe_key, category="reply",
        note=f"held: {problem}" if problem else None,
    )
    if problem:
        _explain(conn, acct, mail, now, "Held", f"{problem}.",
                 "send your answer again without that attachment (or with an allowed one); if this one must go "
                 f"out as it is, an operator can release it with `mailbridge outbox retry {outbox_id}`.",
                 reply.text, held=True)
        return RelayOutcome("held", problem, outbox_id)
    return RelayOutcome("queued", "", outbox_id)


def _explain(conn: Connection, acct: AccountContext, mail: ParsedMail, now: datetime, verdict: str,
             reason: str, action: str, staff_text: str | None = None, held: bool = False) -> RelayOutcome:
    """Tell the staff member who wrote why their reply did not go out (only allowed staff get here)."""
    s = acct.settings
    queue_staff_mail(conn, acct, "reply_problem", {
        "verdict": verdict, "subject": mail.subject or "(no subject)", "reason": reason, "action": action,
        "staff_text": staff_text, "held": held, "account": s.name,
    }, now, purpose="reply_problem", to_addr=mail.from_addr, in_reply_to=mail.message_id,
        references=tuple(i for i in (mail.message_id,) if i))
    # The reason may quote the staff member's text (phone numbers, addresses): the journal gets only the verdict.
    log.warning("account %s: staff reply <%s> from %s: %s", s.name, mail.message_id, mail.from_addr, verdict.lower())
    return RelayOutcome("explained" if not held else "held", reason)


def sent_text(raw: bytes) -> tuple[str, list[str]]:
    """The text and attachment names of a message we built, exactly as the recipient reads them."""
    msg = message_from_bytes(raw, policy=email_policy.default)
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if isinstance(body, Message) else ""
    names = [p.get_filename() or "attachment" for p in msg.iter_attachments()]
    return text.replace("\r\n", "\n"), names
