"""The feedback schedule and dispatcher (bridge.services.feedback) on a real SQLite database, no servers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from bridgekit import insert_order, rows
from sqlalchemy.engine import Engine

from bridge import store
from bridge.adapters.templates import Templates
from bridge.config import parse_settings
from bridge.services import feedback
from bridge.services.account import AccountContext
from bridge.store.engine import open_database

NOW = datetime(2026, 11, 23, 17, 0, tzinfo=timezone.utc)        # Monday 09:00 in Los Angeles
ALIAS = "k3j9x0qma2b7@marketplace.amazon.com"
SELLER = "seller@acme.example"


def account(tmp_path: Path, templates: Path | None = None, **fb: Any) -> AccountContext:
    data: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path}/mailbridge.db"},
        "accounts": [{
            "name": "acme", "marketplace": "amazon.com", "seller_name": "Acme Outdoor", "seller_address": SELLER,
            "staff_address": "staff@acme.example", "staff_senders": ["*@acme.example"],
            "imap": {"host": "127.0.0.1", "security": "none", "port": 143, "username": SELLER, "password": "x"},
            "smtp": {"host": "127.0.0.1", "security": "none", "port": 25, "username": ""},
            "feedback": {"enabled": True, **fb},
        }],
    }
    settings = parse_settings(data, tmp_path / "mailbridge.toml", {}, lambda p: p.read_text())
    return AccountContext.build(settings.accounts[0], b"k" * 32, Templates(templates), settings.relay,
                                settings.policy)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
    yield engine
    engine.dispose()


@pytest.fixture
def acct(tmp_path: Path) -> AccountContext:
    return account(tmp_path)


def delivered(days_ago: float, order_id: str, engine: Engine, **kw: Any) -> None:
    insert_order(engine, order_id, delivered_at=NOW - timedelta(days=days_ago), now=NOW, **kw)


def schedule(engine: Engine, acct: AccountContext, now: datetime = NOW) -> int:
    with engine.begin() as conn:
        return feedback.schedule(conn, acct, now)


def dispatch(engine: Engine, acct: AccountContext, now: datetime = NOW, limit: int = 3) -> feedback.DispatchResult:
    return feedback.dispatch_due(engine, acct, now, limit, worker="test-worker")


def requests(engine: Engine) -> dict[str, tuple[str, str | None]]:
    return {r.order_id: (r.state, r.reason) for r in rows(engine, store.FEEDBACK)}


def test_eligible_orders_are_scheduled_once_and_the_rest_not_at_all(engine: Engine, acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine)                          # due now
    delivered(2, "111-0000000-0000002", engine)                          # too early: scheduled for later
    delivered(40, "111-0000000-0000003", engine)                         # too old
    delivered(7, "111-0000000-0000004", engine, status="cancelled")
    delivered(7, "111-0000000-0000005", engine, buyer_alias=None)
    delivered(7, "111-0000000-0000006", engine, buyer_alias="zz9opted0out1@marketplace.amazon.com")
    with engine.begin() as conn:
        store.set_opt_out(conn, "acme", "zz9opted0out1@marketplace.amazon.com", opted_out=True, source="t", now=NOW)
    assert schedule(engine, acct) == 2
    assert schedule(engine, acct) == 0                                   # again: nothing new
    due = {r.order_id: r.due_at for r in rows(engine, store.FEEDBACK)}
    assert set(due) == {"111-0000000-0000001", "111-0000000-0000002"}
    assert store.utc(due["111-0000000-0000001"]) == NOW
    # Day 7 after delivery is Sat 28 Nov 17:00 UTC = 09:00 in Los Angeles, inside 09:00-18:00.
    assert store.utc(due["111-0000000-0000002"]) == NOW + timedelta(days=5)


def test_scheduling_reads_every_page(engine: Engine, acct: AccountContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback, "SCHEDULE_PAGE", 2)
    for n in range(5):
        delivered(7, f"111-0000000-000001{n}", engine, status="returned" if n < 3 else "delivered")
    delivered(7, "111-0000000-0000020", engine)
    assert schedule(engine, acct) == 3


def test_a_due_request_is_rendered_checked_queued_and_recorded(engine: Engine, acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine, buyer_name="Jane")
    schedule(engine, acct)
    result = dispatch(engine, acct)
    assert (result.sent, result.skipped) == (1, 0)
    ((state, _),) = requests(engine).values()
    assert state == "sent"
    (row,) = rows(engine, store.OUTBOX)
    (request,) = rows(engine, store.FEEDBACK)
    assert (row.purpose, row.category, row.audience, row.state) == ("feedback_request", "unsolicited", "buyer",
                                                                    "queued")
    assert row.message_id == request.outbox_message_id and json.loads(row.recipients) == [ALIAS]
    mail = message_from_bytes(row.raw, policy=policy.default)
    assert mail["From"].addresses[0].addr_spec == SELLER                # the registered address
    assert "111-0000000-0000001" in str(mail["Subject"])
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert "111-0000000-0000001" in text and "Hello Jane" in text and "Trail Tent 2P" in text
    with engine.begin() as conn:
        assert store.latest_send_decision(conn, row.message_id) == "allowed"
    # A second dispatch finds nothing; the row stays the only one.
    assert dispatch(engine, acct).sent == 0 and len(rows(engine, store.OUTBOX)) == 1


def test_the_shipped_request_passes_every_rule_of_the_guard(engine: Engine, acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine)
    with engine.begin() as conn:
        record = store.order_record(conn, "acme", "111-0000000-0000001")
        assert record is not None
        rendered, name = feedback.render(acct, record)
        decision = feedback.check(conn, acct, record, rendered, NOW)
    assert name == "feedback_request" or name.startswith("feedback_request.")
    assert decision.findings == () and decision.allowed
    assert "positive" not in rendered.text.lower() and "http" not in rendered.text


def test_every_condition_is_checked_again_at_send_time(engine: Engine, acct: AccountContext) -> None:
    for n in range(5):
        delivered(7, f"111-0000000-000000{n}", engine, buyer_alias=f"buyer{n}abcdefgh@marketplace.amazon.com")
    schedule(engine, acct)
    with engine.begin() as conn:   # after scheduling, the data changes
        store.set_opt_out(conn, "acme", "buyer1abcdefgh@marketplace.amazon.com", opted_out=True, source="t", now=NOW)
        conn.execute(store.ORDERS.update().where(store.ORDERS.c.order_id == "111-0000000-0000002").values(
            status="refunded"))
        conn.execute(store.ORDERS.update().where(store.ORDERS.c.order_id == "111-0000000-0000003").values(
            open_claim=True))
        feedback.record_external(conn, acct, "111-0000000-0000004", "Request a Review", "operator jo", NOW)
    result = dispatch(engine, acct, limit=2)
    assert (result.sent, result.skipped) == (1, 3)
    got = requests(engine)
    assert got["111-0000000-0000000"][0] == "sent"
    assert got["111-0000000-0000001"] == ("skipped", "opted_out: the buyer opted out of unsolicited messages")
    assert got["111-0000000-0000002"] == ("skipped", "order_ended: the order was refunded")
    assert got["111-0000000-0000003"][1].startswith("open_claim")
    assert got["111-0000000-0000004"] == ("skipped", "asked elsewhere: Request a Review")
    assert len(rows(engine, store.OUTBOX)) == 1


def test_a_buyer_who_wrote_recently_is_asked_later(engine: Engine, acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine)
    schedule(engine, acct)
    with engine.begin() as conn:
        buyer = store.models.inserted_id(conn.execute(store.BUYER.insert().values(
            account="acme", marketplace="marketplace.amazon.com", alias=ALIAS, created_at=NOW)))
        conn.execute(store.CONV.insert().values(account="acme", key="k", buyer_id=buyer, subject="s", created_at=NOW,
                                                last_message_at=NOW - timedelta(days=10), message_count=1))
    result = dispatch(engine, acct)
    assert (result.sent, result.rescheduled) == (0, 1)
    (request,) = rows(engine, store.FEEDBACK)
    assert request.state == "scheduled" and request.reason.startswith("recent_conversation")
    assert store.utc(request.due_at) == NOW + timedelta(days=4)
    assert dispatch(engine, acct, NOW + timedelta(days=4)).sent == 1


def test_outside_the_send_window_a_request_waits(engine: Engine, tmp_path: Path) -> None:
    acct = account(tmp_path, send_window="10:00-12:00")
    delivered(7, "111-0000000-0000001", engine)
    with engine.begin() as conn:
        store.schedule_request(conn, "acme", "111-0000000-0000001", ALIAS, NOW, NOW)   # due now, by an older rule
    assert dispatch(engine, acct).rescheduled == 1
    (request,) = rows(engine, store.FEEDBACK)
    assert store.utc(request.due_at) == NOW + timedelta(hours=1)                      # 10:00 in Los Angeles


def test_a_restricted_account_pauses_the_dispatcher(engine: Engine, acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine)
    schedule(engine, acct)
    with engine.begin() as conn:
        store.restrict_account(conn, "acme", NOW + timedelta(hours=120), "restricted")
    result = dispatch(engine, acct)
    assert result.paused_until == NOW + timedelta(hours=120) and result.sent == 0
    assert requests(engine)["111-0000000-0000001"][0] == "scheduled"
    assert dispatch(engine, acct, NOW + timedelta(hours=121)).sent == 1


def test_the_daily_cap_counts_per_local_day(engine: Engine, tmp_path: Path) -> None:
    acct = account(tmp_path, daily_cap=2)
    for n in range(5):
        delivered(7, f"111-0000000-000000{n}", engine, buyer_alias=f"buyer{n}abcdefgh@marketplace.amazon.com")
    schedule(engine, acct)
    first = dispatch(engine, acct)
    assert (first.sent, first.capped) == (2, True)
    assert dispatch(engine, acct, NOW + timedelta(hours=6)).sent == 0     # 15:00 in Los Angeles, same day
    assert dispatch(engine, acct, NOW + timedelta(days=1)).sent == 2     # the next local day
    assert sorted(s for s, _ in requests(engine).values()) == ["scheduled", "sent", "sent", "sent", "sent"]


def test_the_guard_blocking_skips_the_request_with_the_rule(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "feedback_request.subject.j2").write_text("Order {{ order_id }}")
    (folder / "feedback_request.txt.j2").write_text(
        "Order {{ order_id }} arrived. Please leave a 5-star review and get a $10 gift card!\n")
    acct = account(tmp_path, templates=folder)
    delivered(7, "111-0000000-0000001", engine)
    schedule(engine, acct)
    assert dispatch(engine, acct).skipped == 1
    state, reason = requests(engine)["111-0000000-0000001"]
    assert state == "skipped" and "no_review_manipulation" in (reason or "")
    assert rows(engine, store.OUTBOX) == []


def test_the_buyers_language_is_used_with_english_as_the_fallback(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, subject in (("feedback_request.de", "Ihre Bestellung {{ order_id }}"),
                          ("feedback_request", "Your order {{ order_id }}")):     # English: the default
        (folder / f"{name}.subject.j2").write_text(subject)
        (folder / f"{name}.txt.j2").write_text(f"{subject} ist angekommen.\n")
    acct = account(tmp_path, templates=folder)
    delivered(7, "111-0000000-0000001", engine, language="de-DE")
    delivered(7, "111-0000000-0000002", engine, language="ja")
    with engine.begin() as conn:
        de = store.order_record(conn, "acme", "111-0000000-0000001")
        ja = store.order_record(conn, "acme", "111-0000000-0000002")
    assert de is not None and ja is not None
    assert feedback.render(acct, de)[0].subject == "Ihre Bestellung 111-0000000-0000001"
    assert feedback.render(acct, ja)[1] == "feedback_request"


def test_preview_says_why_not_now(engine: Engine, acct: AccountContext) -> None:
    delivered(2, "111-0000000-0000001", engine)
    delivered(7, "111-0000000-0000002", engine, status="cancelled")
    delivered(7, "111-0000000-0000003", engine)
    with engine.begin() as conn:
        early = feedback.preview(conn, acct, "111-0000000-0000001", NOW)
        cancelled = feedback.preview(conn, acct, "111-0000000-0000002", NOW)
        ready = feedback.preview(conn, acct, "111-0000000-0000003", NOW)
        assert feedback.preview(conn, acct, "999-0000000-0000000", NOW) is None
    assert early is not None and not early.may_send and "not due until 2026-11-28 17:00 UTC" in early.reasons
    assert cancelled is not None and not cancelled.may_send and cancelled.reasons[0].startswith("order_ended")
    assert ready is not None and ready.may_send and ready.rendered is not None
    assert "111-0000000-0000003" in ready.rendered.subject


def test_an_opt_out_notice_is_matched_to_the_request_it_answers(engine: Engine, acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine)
    delivered(2, "111-0000000-0000002", engine)                       # the same buyer, not yet due
    schedule(engine, acct)
    dispatch(engine, acct)
    (sent,) = [r for r in rows(engine, store.FEEDBACK) if r.state == "sent"]
    with engine.begin() as conn:
        assert feedback.notice_answers_request(conn, "acme", None, "111-0000000-0000002", NOW) is None  # not sent
        # A notice naming another message of ours (a staff reply) is not about the request.
        store.enqueue(conn, account="acme", message_id="reply.1@acme.example", purpose="buyer_reply",
                      audience="buyer", envelope_from=SELLER, recipients=(ALIAS,), subject="Re: x", raw=b"x",
                      now=NOW, category="reply")
        assert feedback.notice_answers_request(conn, "acme", "reply.1@acme.example", "111-0000000-0000001",
                                               NOW) is None
        assert store.request_of_order(conn, "acme", "111-0000000-0000001").reason is None  # type: ignore[union-attr]
        by_id = feedback.notice_answers_request(conn, "acme", sent.outbox_message_id, None, NOW)
        by_order = feedback.notice_answers_request(conn, "acme", None, "111-0000000-0000001", NOW)
        assert feedback.buyer_opted_out(conn, "acme", ALIAS, "notice <x>", NOW) == 1
        assert feedback.order_buyer(conn, "acme", "111-0000000-0000001") == ALIAS
    assert by_id is not None and by_order is not None and by_id.id == by_order.id == sent.id
    assert requests(engine) == {"111-0000000-0000001": ("sent", "not delivered: buyer opted out"),
                                "111-0000000-0000002": ("cancelled", "buyer opted out (notice <x>)")}


def test_a_dispatcher_dying_after_its_claim_leaves_the_request_to_the_next_one(engine: Engine,
                                                                               acct: AccountContext) -> None:
    delivered(7, "111-0000000-0000001", engine)
    schedule(engine, acct)
    with engine.begin() as conn:                                   # claimed, then the process was killed
        (claimed,) = store.claim_due_requests(conn, "acme", "dead:1:x", NOW, limit=5)
    assert dispatch(engine, acct, NOW + timedelta(minutes=1)).sent == 0      # a live claim is left alone
    assert dispatch(engine, acct, NOW + feedback.STALE_CLAIM + timedelta(minutes=1)).sent == 1
    assert len(rows(engine, store.OUTBOX)) == 1
    assert dispatch(engine, acct, NOW + timedelta(hours=2)).sent == 0


def test_a_failure_between_queueing_and_commit_leaves_nothing_half_done(engine: Engine, acct: AccountContext,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    delivered(7, "111-0000000-0000001", engine)
    schedule(engine, acct)
    real_enqueue = store.enqueue

    def enqueue_then_die(*args: Any, **kw: Any) -> int:
        real_enqueue(*args, **kw)
        raise RuntimeError("killed")

    monkeypatch.setattr(store, "enqueue", enqueue_then_die)
    with pytest.raises(RuntimeError):
        dispatch(engine, acct)
    assert rows(engine, store.OUTBOX) == [] and rows(engine, store.AUDIT) == []
    assert requests(engine)["111-0000000-0000001"][0] == "scheduled"        # nothing sent, claim given back
    monkeypatch.setattr(store, "enqueue", real_enqueue)
    assert dispatch(engine, acct, NOW + timedelta(minutes=1)).sent == 1
    assert len(rows(engine, store.OUTBOX)) == 1


def test_a_broken_edit_is_sent_in_its_last_good_version_and_staff_are_told_once(engine: Engine,
                                                                                 tmp_path: Path) -> None:
    import os

    folder = tmp_path / "templates"
    shutil.copytree(Templates().folder, folder)
    acct = account(tmp_path, templates=folder)
    delivered(7, "111-0000000-0000001", engine)
    with engine.begin() as conn:
        record = store.order_record(conn, "acme", "111-0000000-0000001")
    assert record is not None
    good, _ = feedback.render(acct, record)
    body = folder / "feedback_request.txt.j2"
    body.write_text("{% if %}broken\n")
    os.utime(body, (body.stat().st_mtime + 10, body.stat().st_mtime + 10))   # seen as changed
    for _ in range(2):
        with engine.begin() as conn:
            again, _ = feedback.render(acct, record, conn=conn, now=NOW)
            assert again.text == good.text                      # the last good version, whole
    alerts = [r for r in rows(engine, store.OUTBOX) if r.purpose == "staff_alert"]
    assert len(alerts) == 1 and "feedback_request.txt.j2" in alerts[0].subject
