"""Response-time reminders end to end: a buyer message in the real Dovecot, the clock moved, the real SMTP server.

Exactly one reminder per threshold reaches the SMTP server, to the staff address,
threaded under the staff notification; a staff reply in time sends none; a
reply of only "no response needed" closes the conversation and writes nothing
to the buyer; a restart between ticks sends nothing twice.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bridgekit import Clock, audit, make_settings, parsed, rows, text_of, to_buyers, to_staff
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from bridge import store
from bridge.adapters.templates import shipped_templates
from bridge.cli import status as status_command
from bridge.services.pace import sending_status
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, samples
from bridge.workers.reminders import ReminderTimer
from bridge.workers.supervisor import Daemon

HOUR = 3600
ALIAS = "k3j9x0qma2b7@marketplace.amazon.com"


class Desk:
    """One seller account; buyer mail dated by the test's clock, so nothing depends on today's date."""

    def __init__(self, tmp_path: Path, dovecot: DovecotServer, seller: SandboxAccount, staff: SandboxAccount,
                 smtp: SandboxSMTP, **account: Any) -> None:
        self.tmp_path, self.dovecot, self.seller, self.staff, self.smtp = tmp_path, dovecot, seller, staff, smtp
        self.clock = Clock()
        self.account = {"forward_existing": True, **account}
        self.daemon = self.start()
        self.n = 0

    def start(self) -> Daemon:
        """A daemon (a new one: a restart) on the same database and clock."""
        settings = make_settings(self.tmp_path, self.seller, self.staff, self.smtp, account=self.account)
        self.daemon = Daemon(settings, clock=self.clock)
        return self.daemon

    def buyer_writes(self, question: str = "Does the tent come with a footprint?", **kw: Any) -> None:
        self.n += 1
        kw.setdefault("date", self.clock.now)
        self.dovecot.append(self.seller.user, "INBOX", samples.amazon_buyer_message(
            buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556", question=question,
            seller_address=self.seller.user, message_id=f"buyer.{self.n}@email.amazon.com", **kw))

    def staff_answers(self, mail: Any, answer: str, **kw: Any) -> None:
        """A staff member presses Reply on ``mail`` (a notification or reminder they received)."""
        self.n += 1
        self.dovecot.append(self.seller.user, "INBOX", samples.staff_reply(
            mail.data, staff=self.staff.user, text=answer, message_id=f"staff.{self.n}@x.example", **kw))

    def run(self) -> Any:
        return asyncio.run(self.daemon.run_once())

    def at(self, hours: float) -> Any:
        """Move the clock to ``hours`` after the start and run once."""
        self.clock.now = Clock().now + timedelta(hours=hours)
        return self.run()

    def mail_to_staff(self, subject_has: str) -> list[Any]:
        return [r for r in to_staff(self.smtp, self.staff) if subject_has in str(parsed(r.data)["Subject"])]

    def reminders(self) -> list[Any]:
        return self.mail_to_staff("unanswered for")

    def reminder_states(self) -> list[tuple[int, str]]:
        return sorted((r.after_hours, r.state) for r in rows(self.daemon.engine, store.REMINDER))


@pytest.fixture
def desk(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
         smtp_server: SandboxSMTP) -> Desk:
    d = Desk(tmp_path, dovecot, fresh_mailbox, staff, smtp_server)
    d.buyer_writes()
    d.run()
    return d


def notification(desk: Desk) -> Any:
    """The staff notification of the buyer's first message: the first mail staff got."""
    return to_staff(desk.smtp, desk.staff)[0]


def test_one_reminder_at_12_and_one_at_20_hours_in_the_staff_thread(desk: Desk) -> None:
    note = notification(desk)
    desk.at(12 - 1 / 60)
    assert desk.reminders() == []                                  # a minute early: nothing
    report = desk.at(12)
    assert report.reminders == {"acme": 1}
    (first,) = desk.reminders()
    desk.at(12.5)
    desk.at(19.9)
    assert len(desk.reminders()) == 1                              # once per threshold
    desk.at(20)
    first, second = desk.reminders()
    desk.at(23)
    desk.at(30)
    assert len(desk.reminders()) == 2                              # no more after the last threshold
    assert to_buyers(desk.smtp) == []                              # reminders only ever go to staff

    note_id = str(parsed(note.data)["Message-ID"])
    for reminder, hours, left in ((first, 12, "12 h 00 min left"), (second, 20, "4 h 00 min left")):
        msg = parsed(reminder.data)
        assert reminder.rcpt_tos == (desk.staff.user,)
        assert str(msg["In-Reply-To"]) == note_id                  # threads under the notification
        assert note_id in str(msg["References"])
        assert str(msg["Reply-To"]) == str(parsed(note.data)["Reply-To"])   # Reply answers the buyer
        assert str(msg["Subject"]).startswith("Re: Product details inquiry from Amazon customer Jane")
        assert f"unanswered for {hours} h, {left}" in str(msg["Subject"])
        body = text_of(reminder.data)
        assert left in body and "Does the tent come with a footprint?" in body
        assert "2026-11-24 12:00 UTC" in body                       # the deadline: 24 h after the buyer wrote
    assert desk.reminder_states() == [(12, "sent"), (20, "sent")]


def test_a_reply_before_12_hours_sends_no_reminder(desk: Desk) -> None:
    desk.at(2)
    desk.staff_answers(notification(desk), "Hi Jane, yes, it is in the box.")
    desk.run()
    assert len(to_buyers(desk.smtp)) == 1
    desk.at(12)
    desk.at(21)
    assert desk.reminders() == []
    assert desk.reminder_states() == [(12, "answered"), (20, "answered")]


def test_the_buyer_writing_again_after_an_answer_starts_a_new_clock(desk: Desk) -> None:
    desk.at(2)
    desk.staff_answers(notification(desk), "Hi Jane, yes, it is in the box.")
    desk.run()
    desk.at(5)
    desk.buyer_writes("And a rain fly?")
    desk.run()
    desk.at(16)                                                    # 14 h after the first, 11 after the second
    assert desk.reminders() == []
    desk.at(17)
    (reminder,) = desk.reminders()
    assert "And a rain fly?" in text_of(reminder.data) and "12 h 00 min left" in text_of(reminder.data)


def test_a_second_buyer_message_while_waiting_does_not_start_a_second_clock(desk: Desk) -> None:
    desk.at(3)
    desk.buyer_writes("Hello? Anyone there?")
    desk.run()
    desk.at(15)                                                    # 12 h after the second message: no reminder
    desk.at(20)
    first, second = desk.reminders()
    assert "written 2 messages" in text_of(first.data) and "Hello? Anyone there?" in text_of(second.data)
    assert len(rows(desk.daemon.engine, store.REMINDER)) == 2


def test_two_messages_opening_a_conversation_in_one_batch_start_one_clock(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    # Ingest does not ask the database about a conversation the batch itself opened: what the batch
    # did (one clock started by the first message) must still stop the second from starting another.
    desk = Desk(tmp_path, dovecot, fresh_mailbox, staff, smtp_server)
    desk.buyer_writes()
    desk.buyer_writes("Hello? Anyone there?")
    desk.run()
    assert desk.reminder_states() == [(12, "scheduled"), (20, "scheduled")]


def test_no_response_needed_closes_the_conversation_and_writes_nothing_to_the_buyer(desk: Desk) -> None:
    desk.at(1)
    desk.staff_answers(notification(desk), "No response needed.")
    desk.run()
    desk.at(12)
    desk.at(20)
    assert to_buyers(desk.smtp) == []                              # never relayed
    assert desk.reminders() == []                                  # reminders stopped
    assert desk.reminder_states() == [(12, "closed"), (20, "closed")]
    (conv,) = rows(desk.daemon.engine, store.CONV)
    assert conv.status == "closed"
    (confirmation,) = desk.mail_to_staff("Closed, nothing sent to the buyer")
    assert confirmation.rcpt_tos == (desk.staff.user,)
    assert str(parsed(confirmation.data)["In-Reply-To"]) == "<staff.2@x.example>"
    assert "Nothing was sent to Jane" in text_of(confirmation.data)
    (entry,) = [a for a in audit(desk) if a["event"] == "conversation"]   # type: ignore[arg-type]
    assert (entry["decision"], entry["conversation_id"], entry["actor"]) == ("closed", conv.id, desk.staff.user)
    assert "nothing was sent to the buyer" in entry["detail"]
    assert not [a for a in audit(desk) if a["event"] == "outbound"]   # type: ignore[arg-type]
    (staff_row,) = [r for r in rows(desk.daemon.engine, store.MESSAGE) if r.kind == "staff_reply"]
    assert staff_row.disposition == "closed"

    # The same staff mail again (a copy in the mailbox): recognised, not confirmed twice.
    desk.n -= 1
    desk.staff_answers(notification(desk), "No response needed.")
    desk.run()
    assert len(desk.mail_to_staff("Closed, nothing sent")) == 1 and desk.mail_to_staff("Not sent") == []

    # The buyer writes again: the conversation opens again, with a new clock.
    desk.at(30)
    desk.buyer_writes("One more question")
    desk.run()
    assert rows(desk.daemon.engine, store.CONV)[0].status == "open"
    desk.at(42)
    assert len(desk.reminders()) == 1


def test_a_real_answer_that_mentions_the_phrase_is_relayed(desk: Desk) -> None:
    desk.staff_answers(notification(desk), "No response needed, but thanks: the footprint is included.")
    desk.run()
    (buyer,) = to_buyers(desk.smtp)
    assert "the footprint is included" in text_of(buyer.data)
    assert rows(desk.daemon.engine, store.CONV)[0].status == "open"


def test_a_restart_between_ticks_sends_nothing_twice(desk: Desk) -> None:
    desk.at(12)
    assert len(desk.reminders()) == 1
    desk.start()                                                   # a new process on the same database
    desk.at(12)
    desk.at(12 + 1 / 60)
    assert len(desk.reminders()) == 1
    desk.start()
    desk.at(20)
    desk.start()
    desk.at(20)
    assert len(desk.reminders()) == 2
    # The schema, not only the code, holds one row per buyer message and threshold.
    (row, _) = rows(desk.daemon.engine, store.REMINDER)
    with pytest.raises(IntegrityError), desk.daemon.engine.begin() as conn:
        conn.execute(store.REMINDER.insert().values(**{c: getattr(row, c) for c in row._fields if c != "id"}))


def test_a_held_reply_is_not_an_answer_and_the_reminder_says_so(desk: Desk) -> None:
    desk.at(1)
    desk.staff_answers(notification(desk), "Here is the manual.",
                       attachments=(("setup.exe", "application/octet-stream", b"MZ" * 100),))
    desk.run()
    assert to_buyers(desk.smtp) == [] and store.OUTBOX is not None
    assert [r.state for r in rows(desk.daemon.engine, store.OUTBOX) if r.purpose == "buyer_reply"] == ["held"]
    desk.at(12)
    (reminder,) = desk.reminders()
    assert "held reply has NOT" in text_of(reminder.data)


@pytest.mark.parametrize("plus_address_kept", [True, False])
def test_replying_to_the_reminder_answers_the_buyer_and_stops_the_next(desk: Desk, plus_address_kept: bool) -> None:
    desk.at(12)
    (reminder,) = desk.reminders()
    # Without the token (a mail server dropped "+token"), In-Reply-To names the reminder.
    to = {} if plus_address_kept else {"to": desk.seller.user}
    desk.staff_answers(reminder, "Hi Jane, sorry for the wait: yes, it is included.", **to)
    desk.run()
    (buyer,) = to_buyers(desk.smtp)
    body = text_of(buyer.data)
    assert body.startswith("Hi Jane, sorry for the wait") and "Does the tent come with a footprint?" in body
    assert "unanswered for" not in body and "REMINDER" not in body
    desk.at(20)
    assert len(desk.reminders()) == 1
    assert desk.reminder_states() == [(12, "sent"), (20, "answered")]


def test_reminders_off_with_an_empty_list(tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
                                          staff: SandboxAccount, smtp_server: SandboxSMTP) -> None:
    d = Desk(tmp_path, dovecot, fresh_mailbox, staff, smtp_server, reminders={"after_hours": []})
    d.buyer_writes()
    d.run()
    d.at(21)
    assert d.reminders() == [] and rows(d.daemon.engine, store.REMINDER) == []


def test_mail_already_a_day_old_gets_no_reminder(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    d = Desk(tmp_path, dovecot, fresh_mailbox, staff, smtp_server)
    d.buyer_writes("Old question", date=d.clock.now - timedelta(hours=25))
    d.run()
    assert rows(d.daemon.engine, store.REMINDER) == []             # its 24 hours were over on arrival


def test_status_shows_the_buyers_waiting_closest_to_the_deadline(desk: Desk, capsys: pytest.CaptureFixture[str]) -> None:
    desk.at(20)
    with desk.daemon.engine.begin() as conn:
        status = store.account_status(conn, "acme", desk.clock.now)
    (waiting,) = status["awaiting_answer"]
    assert waiting["conversation"].startswith("MB-") and waiting["buyer"] == ALIAS
    # The first tick came only at 20 h (the daemon was down): one reminder, the 12 h one overtaken.
    assert (waiting["seconds_left"], waiting["reminders_sent"]) == (4 * HOUR, 1)
    assert (status["reminders"]["sent"], status["reminders"]["overtaken"]) == (1, 1)
    assert desk.reminder_states() == [(12, "overtaken"), (20, "sent")]
    assert len(desk.reminders()) == 1
    with desk.daemon.engine.begin() as conn:
        sending = sending_status(conn, "acme", desk.daemon.settings.accounts[0].smtp, desk.clock.now)
    status_command._print_account({**status, "sending": sending})   # noqa: SLF001 - what `mailbridge status` prints
    out = capsys.readouterr().out
    assert "awaiting an answer: 1" in out
    assert f"{waiting['conversation']} {ALIAS}: 4 h 00 min left (deadline 2026-11-24T12:00:00+00:00, " \
           "1 reminder(s) sent)" in out
    desk.staff_answers(notification(desk), "Yes, it is included.")
    desk.run()
    with desk.daemon.engine.begin() as conn:
        assert store.account_status(conn, "acme", desk.clock.now)["awaiting_answer"] == []


def test_the_timer_reads_due_rows_by_the_index(desk: Desk) -> None:
    # Its work grows with what is due, not with all conversations: the due query is an index range scan.
    engine = desk.daemon.engine
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM response_reminder JOIN conversation" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        with engine.begin() as conn:
            store.due_reminders(conn, "acme", desk.clock.now, 20)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    (statement, parameters), = seen
    with engine.begin() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    assert any("ix_reminder_due" in str(step) for step in plan), plan


def test_a_templates_folder_without_the_new_templates_still_reminds_and_confirms(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    # An admin's folder copied before these templates existed: staff_alert stands in; ingest goes on.
    folder = tmp_path / "my-templates"
    shutil.copytree(shipped_templates(), folder)
    for old in [*folder.glob("response_reminder.*"), *folder.glob("conversation_closed.*")]:
        old.unlink()
    d = Desk(tmp_path, dovecot, fresh_mailbox, staff, smtp_server)
    d.tmp_path = tmp_path
    settings = make_settings(tmp_path, fresh_mailbox, staff, smtp_server, account=d.account,
                             daemon={"templates": str(folder)})
    d.daemon = Daemon(settings, clock=d.clock)
    d.buyer_writes()
    d.run()
    d.at(12)
    (reminder,) = d.mail_to_staff("Buyer waiting 12 h 00 min, 12 h 00 min left")
    assert str(parsed(reminder.data)["In-Reply-To"]) == str(parsed(notification(d).data)["Message-ID"])
    d.staff_answers(notification(d), "no response needed")
    d.run()
    assert len(d.mail_to_staff("Closed, nothing sent to the buyer")) == 1 and to_buyers(smtp_server) == []


def test_a_crash_while_queueing_leaves_the_reminder_to_the_next_tick_and_sends_it_once(desk: Desk) -> None:
    # The row turns "sent" only with its outbox row, in one transaction: a process dying between the two
    # (here: the outbox insert fails) leaves both undone, and the next tick (or process) sends it once.
    engine = desk.daemon.engine
    failed = []

    def die_on_outbox_insert(_conn: Any, clause: Any, *_: Any) -> None:
        if not failed and getattr(clause, "table", None) is store.OUTBOX and clause.is_insert:
            failed.append(clause)
            raise RuntimeError("killed while queueing the reminder")

    desk.clock.now += timedelta(hours=12)
    event.listen(engine, "before_execute", die_on_outbox_insert)
    try:
        with pytest.raises(RuntimeError, match="killed while queueing"):
            ReminderTimer(engine, desk.daemon.accounts[0], clock=desk.clock).tick()
    finally:
        event.remove(engine, "before_execute", die_on_outbox_insert)
    assert failed and desk.reminder_states() == [(12, "scheduled"), (20, "scheduled")]
    assert [r for r in rows(engine, store.OUTBOX) if r.purpose == "response_reminder"] == []
    desk.start()
    desk.run()
    desk.run()
    assert len(desk.reminders()) == 1
    assert desk.reminder_states() == [(12, "sent"), (20, "scheduled")]
