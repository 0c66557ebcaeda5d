"""Staff reply -> buyer, against a real Dovecot and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from bridgekit import (
    Flow,
    account_block,
    make_settings,
    outbox_states,
    parsed,
    rows,
    text_of,
    to_buyers,
    to_staff,
)
from sqlalchemy import update

from bridge import store
from bridge.config import parse_settings
from bridge.domain import tokens
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.workers.supervisor import Daemon


@pytest.mark.parametrize("client", ["gmail", "outlook"])
def test_round_trip_buyer_staff_buyer(flow: Flow, client: str) -> None:
    answer = "Hi Jane,\nyes, a footprint is included in the box.\nBest regards"
    flow.reply(answer, client=client)
    report = flow.run()
    assert report.ingest["acme"].relayed == 1
    (buyer,) = to_buyers(flow.smtp)
    msg = parsed(buyer.data)
    body = text_of(buyer.data)
    assert buyer.rcpt_tos == ("k3j9x0qma2b7@marketplace.amazon.com",)
    assert buyer.mail_from == flow.seller.user
    assert str(msg["From"]) == f"Acme Outdoor <{flow.seller.user}>"
    assert str(msg["To"]) == "k3j9x0qma2b7@marketplace.amazon.com"
    assert str(msg["Subject"]) == "Re: Product details inquiry from Amazon customer Jane (Order: 111-2223334-4445556)"
    assert str(msg["In-Reply-To"]) == "<buyer.1@email.amazon.com>"
    assert msg["Auto-Submitted"] is None                         # a person's words, not automatic mail
    assert body.count("yes, a footprint is included in the box.") == 1
    assert body.startswith(answer)
    assert "Does the tent come with a footprint?" in body        # the buyer's question, quoted
    assert "[commMgrTok:A1B2C3D4E5F6G]" in body
    for leak in ("Jo\nAcme Outdoor Support", "wrote:", "Please type your reply", "Sent:", flow.staff.user):
        assert leak not in body                                   # no signature, quote header, marker or staff address
    # Staff see exactly what the buyer received, in the conversation's thread.
    confirmations = [r for r in to_staff(flow.smtp, flow.staff) if "Sent to the buyer" in str(parsed(r.data)["Subject"])]
    assert len(confirmations) == 1
    assert "yes, a footprint is included in the box." in text_of(confirmations[0].data)
    assert str(parsed(confirmations[0].data)["In-Reply-To"]) == str(parsed(flow.notification.data)["Message-ID"])
    assert outbox_states(flow.daemon.engine) == {"sent": 3}
    (staff_row,) = [r for r in rows(flow.daemon.engine, store.MESSAGE) if r.kind == "staff_reply"]
    assert staff_row.disposition == "relayed" and b"Acme Outdoor Support" in bytes(staff_row.raw)  # kept whole


def test_buyer_case_suffix_is_kept(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                   staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account={"forward_existing": True})
    raw = samples.amazon_buyer_message(buyer_alias="k3j9x0qma2b7+c123abc", buyer_name="Jane",
                                       order="111-2223334-4445556", question="Where is my parcel?",
                                       seller_address=fresh_mailbox.user, message_id="b.case@email.amazon.com")
    dovecot.append(fresh_mailbox.user, "INBOX", raw)
    daemon = Daemon(settings)
    asyncio.run(daemon.run_once())
    (note,) = smtp_server.wait_for(1)
    dovecot.append(fresh_mailbox.user, "INBOX", samples.staff_reply(note.data, staff=staff.user, text="On its way.",
                                                                    message_id="s.case@x"))
    asyncio.run(daemon.run_once())
    (buyer,) = to_buyers(smtp_server)
    assert buyer.rcpt_tos == ("k3j9x0qma2b7+c123abc@marketplace.amazon.com",)


def test_spoofed_sender_never_reaches_the_buyer_and_gets_nothing(flow: Flow) -> None:
    flow.reply("Send your card number to me", staff="mallory@evil.example")
    flow.run()
    assert to_buyers(flow.smtp) == []
    assert not any(r.rcpt_tos[0] == "mallory@evil.example" for r in flow.smtp.received)
    (row,) = [r for r in rows(flow.daemon.engine, store.MESSAGE) if r.from_addr == "mallory@evil.example"]
    assert row.kind != "staff_reply"                                # recorded, never relayed


@pytest.mark.parametrize("tamper", ["flip", "other_conversation"])
def test_tampered_token_is_refused_and_staff_told(flow: Flow, tamper: str) -> None:
    address = str(parsed(flow.notification.data)["Reply-To"])
    local, _, domain = address.partition("@")
    base, _, token = local.partition("+")
    if tamper == "flip":
        token = token[:-1] + ("a" if token[-1] != "a" else "b")
    else:
        token = "9" + token[1:]
    flow.reply("Here is a refund", to=f"{base}+{token}@{domain}")
    flow.run()
    assert to_buyers(flow.smtp) == []
    problems = [r for r in to_staff(flow.smtp, flow.staff) if str(parsed(r.data)["Subject"]).startswith("Not sent")]
    assert len(problems) == 1
    assert "token" in text_of(problems[0].data) and "Reply" in text_of(problems[0].data)


def test_token_of_another_account_is_refused(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                             staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    seller_b = dovecot.new_account("sellerb")
    settings = parse_settings({"database": {"url": f"sqlite:///{tmp_path}/mb.db"}, "accounts": [
        account_block("acme-us", fresh_mailbox, staff, smtp_server),
        account_block("acme-de", seller_b, staff, smtp_server)]}, tmp_path / "x.toml", {}, lambda p: "")
    daemon = Daemon(settings)
    dovecot.append(fresh_mailbox.user, "INBOX", samples.buyer_backlog(1, seller_address=fresh_mailbox.user)[0])
    asyncio.run(daemon.run_once())
    (note,) = smtp_server.wait_for(1)
    # The same token, sent to the other account's reply address (conversation ids overlap across accounts).
    token = str(parsed(note.data)["Reply-To"]).split("+")[1].split("@")[0]
    dovecot.append(seller_b.user, "INBOX", samples.staff_reply(
        note.data, staff=staff.user, text="Refund approved", message_id="cross@x",
        to=seller_b.user.replace("@", f"+{token}@")))
    asyncio.run(daemon.run_once())
    assert to_buyers(smtp_server) == []
    assert any(str(parsed(r.data)["Subject"]).startswith("Not sent") for r in smtp_server.received)


def test_staff_out_of_office_is_never_relayed(flow: Flow) -> None:
    flow.reply("I am out of the office until Monday.", extra_headers="Auto-Submitted: auto-replied\r\n")
    report = flow.run()
    assert report.ingest["acme"].kinds == {"auto_reply": 1}
    assert to_buyers(flow.smtp) == [] and len(flow.smtp.received) == 1   # no explanation either


def test_empty_reply_is_not_sent_and_staff_told(flow: Flow) -> None:
    flow.reply("", signature="Jo")
    flow.run()
    assert to_buyers(flow.smtp) == []
    problems = [r for r in to_staff(flow.smtp, flow.staff) if "Not sent" in str(parsed(r.data)["Subject"])]
    assert len(problems) == 1 and "no new text" in text_of(problems[0].data)


def test_allowed_attachment_goes_with_the_reply(flow: Flow) -> None:
    pdf = b"%PDF-1.4 manual " * 100
    flow.reply("The manual is attached.", attachments=(("manual.pdf", "application/pdf", pdf),))
    flow.run()
    (buyer,) = to_buyers(flow.smtp)
    files = [(p.get_filename(), p.get_content()) for p in parsed(buyer.data).iter_attachments()]
    assert files == [("manual.pdf", pdf)]


@pytest.mark.parametrize("name,ctype,size,why", [
    ("huge.pdf", "application/pdf", 11 * 1024 * 1024, "MB"),
    ("setup.exe", "application/octet-stream", 1000, "not an allowed file type"),
])
def test_attachment_over_the_limits_is_held(flow: Flow, name: str, ctype: str, size: int, why: str) -> None:
    flow.reply("See attached.", attachments=((name, ctype, b"x" * size),))
    flow.run()
    assert to_buyers(flow.smtp) == []
    assert outbox_states(flow.daemon.engine).get("held") == 1
    problems = [r for r in to_staff(flow.smtp, flow.staff) if str(parsed(r.data)["Subject"]).startswith("Held")]
    assert len(problems) == 1 and why in text_of(problems[0].data) and "outbox retry" in text_of(problems[0].data)


def test_smtp_421_then_success_relays_once(flow: Flow) -> None:
    flow.smtp.fail_next(421, "4.7.0 Try again later")
    flow.reply("Shipping today.")
    flow.run()
    assert to_buyers(flow.smtp) == []
    flow.clock.advance(120)
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1
    flow.clock.advance(3600)
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1


def test_smtp_550_fails_and_staff_told(flow: Flow) -> None:
    flow.smtp.fail_next(550, "5.7.1 Sender not allowed", stage="MAIL")
    flow.reply("Shipping today.")
    flow.run()
    assert to_buyers(flow.smtp) == []
    (row,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"]
    assert row.state == "failed"
    assert any(str(parsed(r.data)["Subject"]).startswith("[mailbridge] Not delivered")
               for r in to_staff(flow.smtp, flow.staff))


def test_connection_lost_after_data_is_unknown_not_resent(flow: Flow) -> None:
    flow.smtp.drop_connection_next(stage="DATA", accept=True)   # the server took it; we cannot know
    flow.reply("Shipping today.")
    flow.run()
    flow.clock.advance(3600)
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1                         # delivered once, never a second time
    (row,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"]
    assert row.state == "unknown"
    assert any("may or may not have been sent" in str(parsed(r.data)["Subject"])
               for r in to_staff(flow.smtp, flow.staff))


def test_interrupted_send_is_reconciled_not_resent(flow: Flow) -> None:
    flow.reply("Shipping today.")
    flow.run(send=False)
    # A crash right after claiming: the row is left in 'sending' by a process that no longer exists.
    with flow.daemon.engine.begin() as conn:
        conn.execute(update(store.OUTBOX).where(store.OUTBOX.c.purpose == "buyer_reply").values(
            state="sending", claimed_by="dead-host:1:abc", claimed_at=flow.clock() - timedelta(minutes=10)))
    flow.run()
    assert to_buyers(flow.smtp) == []                             # sent_copies = "none": nobody can tell
    (row,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"]
    assert row.state == "unknown"


def test_same_reply_delivered_twice_is_relayed_once(flow: Flow) -> None:
    raw = flow.reply("Shipping today.")
    # A second copy with other trace headers (a second delivery), same Message-ID.
    flow.dovecot.append(flow.seller.user, "INBOX", b"Received: from relay2.example by mx.example\r\n" + raw)
    report = flow.run()
    assert report.ingest["acme"].relayed == 1
    assert len(to_buyers(flow.smtp)) == 1


def test_reply_without_plus_address_threads_by_references(flow: Flow) -> None:
    flow.reply("Yes, it is included.", to=flow.seller.user)       # the server dropped "+token"
    flow.run()
    (buyer,) = to_buyers(flow.smtp)
    assert "Yes, it is included." in text_of(buyer.data)


def test_reply_tokens_verify_for_this_account_only(flow: Flow) -> None:
    token = str(parsed(flow.notification.data)["Reply-To"]).split("+")[1].split("@")[0]
    secret = flow.daemon.accounts[0].secret
    assert tokens.verify_reply_token(secret, "acme", token) is not None
    assert tokens.verify_reply_token(secret, "other", token) is None


def test_reply_to_a_confirmation_never_reaches_the_buyer(flow: Flow) -> None:
    flow.reply("Hi Jane, the footprint is included.")
    flow.run()
    (confirmation,) = [r for r in to_staff(flow.smtp, flow.staff) if "Sent to the buyer" in str(parsed(r.data)["Subject"])]
    # A colleague answers the confirmation (internal chatter), to the seller address it came from.
    flow.dovecot.append(flow.seller.user, "INBOX", samples.staff_reply(
        confirmation.data, staff=flow.staff.user, text="Great, Tom ships the spare pegs tomorrow.",
        message_id="chatter@x", to=flow.seller.user))
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1                       # only the real reply, never the chatter
    assert any(str(parsed(r.data)["Subject"]).startswith("Not sent") for r in to_staff(flow.smtp, flow.staff))


def test_a_broken_confirmation_template_never_undoes_sent(tmp_path: Path, dovecot: DovecotServer,
                                                          fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                          smtp_server: SandboxSMTP) -> None:
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(Path(__file__).resolve().parent.parent / "templates", templates)
    (templates / "staff_confirmation.txt.j2").write_text("{{ no_such_thing }}\n")
    flow = Flow(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, daemon={"templates": str(templates)})
    flow.reply("Hi Jane, the footprint is included.")
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1
    (row,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"]
    assert row.state == "sent"                                    # the buyer has it: it stays sent
    assert any("confirmation template is broken" in text_of(r.data) for r in to_staff(flow.smtp, flow.staff))
    # And the outbox keeps working for everything else.
    flow.dovecot.append(flow.seller.user, "INBOX", samples.buyer_backlog(1, seller_address=flow.seller.user,
                                                                         seed=77)[0])
    flow.run()
    notes = rows(flow.daemon.engine, store.OUTBOX, purpose="staff_notification")
    assert [r.state for r in notes] == ["sent", "sent"]           # the new buyer mail reached staff too


def test_attachment_refused_by_the_policy_alone_is_held_and_explained(flow: Flow) -> None:
    flow.reply("Photo attached.", attachments=(("photo.jpg", "application/x-msdownload", b"MZ" * 50),))
    flow.run()
    assert to_buyers(flow.smtp) == []
    (row,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"]
    assert row.state == "held"
    assert any(str(parsed(r.data)["Subject"]).startswith("Held") for r in to_staff(flow.smtp, flow.staff))


def test_an_outlook_contact_signature_is_cut_and_staff_told(flow: Flow) -> None:
    """Issue 11: the reply reaches the buyer once, without the signature's contact lines;
    the staff's confirmation lists them. Contact details typed into the answer still block."""
    flow.reply("Hi Jane, the footprint is included.\n\nBest regards,\nSam Patel | Acme Outdoor Support\n"
               "Tel +1 206 555 0100 | www.acme-outdoor.example\n")
    flow.run()
    (sent,) = to_buyers(flow.smtp)
    text = text_of(sent.data)
    assert "the footprint is included" in text and "Sam Patel" in text
    assert "555 0100" not in text and "acme-outdoor.example" not in text
    (confirmation,) = [r for r in to_staff(flow.smtp, flow.staff) if "Sent to the buyer" in str(parsed(r.data)["Subject"])]
    assert "Tel +1 206 555 0100 | www.acme-outdoor.example" in text_of(confirmation.data)


def test_contact_details_in_the_answer_itself_still_block(flow: Flow) -> None:
    flow.reply("Hi Jane, call me at +1 206 555 0100 about the footprint.\n\nBest regards,\nSam\n")
    flow.run()
    assert to_buyers(flow.smtp) == []
    assert any(str(parsed(r.data)["Subject"]).startswith("Blocked") for r in to_staff(flow.smtp, flow.staff))
