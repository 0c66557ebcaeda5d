"""The compliance gate on the real flow: blocked, explained, reworded, audited; nothing bypasses it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridgekit import Flow, audit, parsed, rows, text_of, to_buyers, to_staff
from sqlalchemy import update

from bridge import cli, store
from bridge.domain.compose import new_message_id
from bridge.sandbox import config_toml


def test_link_is_blocked_staff_told_then_reworded_reply_goes_out(flow: Flow) -> None:  # noqa: F811
    flow.reply("Hi Jane, see www.acme-shop.example/tents for the footprint, or call +1 415 555 0100.")
    flow.run()
    assert to_buyers(flow.smtp) == []
    (told,) = [r for r in to_staff(flow.smtp, flow.staff) if str(parsed(r.data)["Subject"]).startswith("Blocked")]
    body = text_of(told.data)
    assert "no_links" in body and ">>>www.acme-shop.example/tents<<<" in body      # the offending text, marked
    assert "no_contact_details" in body and "+1 415 555 0100" in body
    assert "send your answer again" in body
    (blocked,) = audit(flow)
    assert blocked["decision"] == "blocked" and blocked["category"] == "reply"
    assert {f["rule"] for f in blocked["findings"]} == {"no_links", "no_contact_details"}
    assert blocked["actor"] == flow.staff.user and blocked["buyer"] == "k3j9x0qma2b7@marketplace.amazon.com"

    flow.reply("Hi Jane, yes: a footprint is included in the box.")               # reworded
    flow.run()
    (buyer,) = to_buyers(flow.smtp)
    assert "a footprint is included" in text_of(buyer.data)
    decisions = [a["decision"] for a in audit(flow)]
    assert decisions == ["blocked", "allowed"]
    assert audit(flow)[1]["message_id"] == parsed(buyer.data)["Message-ID"].strip("<>")


def test_reply_to_opted_out_buyers_own_thread_goes_through(flow: Flow) -> None:  # noqa: F811
    with flow.daemon.engine.begin() as conn:
        conn.execute(update(store.BUYER).values(opted_out_at=datetime.now(timezone.utc),
                                                opted_out_source="test"))
    flow.reply("Hi Jane, the footprint is in the box.")
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1                   # opt-out never blocks a reply on the buyer's thread
    assert audit(flow)[-1]["decision"] == "allowed"


def test_outbox_sends_nothing_to_a_buyer_without_an_allowing_decision(flow: Flow) -> None:  # noqa: F811
    # A buyer-bound row that did not come through the gate (a bug, a manual insert).
    with flow.daemon.engine.begin() as conn:
        store.enqueue(conn, account="acme", message_id=new_message_id(flow.seller.user), purpose="buyer_reply",
                      audience="buyer", envelope_from=flow.seller.user,
                      recipients=("k3j9x0qma2b7@marketplace.amazon.com",), subject="Re: hi", raw=b"Subject: hi\r\n\r\nx",
                      now=flow.clock())
    flow.run()
    assert to_buyers(flow.smtp) == []
    assert [r.state for r in rows(flow.daemon.engine, store.OUTBOX) if r.audience == "buyer"] == ["blocked"]
    assert any(str(parsed(r.data)["Subject"]).startswith("[mailbridge] Blocked") for r in flow.smtp.received)


def test_operator_release_of_a_held_reply_is_on_record(flow: Flow, tmp_path: Path, capsys: Any) -> None:  # noqa: F811
    flow.reply("See attached.", attachments=(("setup.exe", "application/octet-stream", b"MZ" * 100),))
    flow.run()
    (held,) = [r for r in rows(flow.daemon.engine, store.OUTBOX) if r.state == "held"]
    config = tmp_path / "mb.toml"
    config.write_text(config_toml(database=flow.settings.database.url, seller=flow.seller.user,
                                  staff=flow.staff.user, imap_port=flow.seller.port, smtp_port=flow.smtp.port,
                                  imap_password=flow.seller.password))
    # The CLI reads the test's clock too: one clock for the daemon and the operator.
    assert cli.main(["-c", str(config), "outbox", "retry", str(held.id)], clock=flow.clock) == 0
    capsys.readouterr()
    flow.run()
    assert len(to_buyers(flow.smtp)) == 1
    assert [a["decision"] for a in audit(flow)] == ["held", "released"]
    assert cli.main(["-c", str(config), "audit", "--json"], clock=flow.clock) == 0
    exported = capsys.readouterr()
    assert [a["decision"] for a in json.loads(exported.out)] == ["held", "released"]


def test_policy_check_command(tmp_path: Path) -> None:
    draft = tmp_path / "draft.txt"
    draft.write_text("Thanks! Please leave us a 5-star review and we refund 10%.\n")
    bad = subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(tmp_path / "none.toml"), "policy", "check",
                          str(draft)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no_review_manipulation" in bad.stdout and ">>>" in bad.stdout
    draft.write_text("Hi Jane, the footprint is included in the box.\n")
    good = subprocess.run([sys.executable, "-m", "bridge.cli", "policy", "check", str(draft)],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "Allowed" in good.stdout
