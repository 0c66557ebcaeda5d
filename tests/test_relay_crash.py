"""SIGKILL the real daemon while it relays 200 staff replies: every reply reaches its buyer
exactly once or is marked unknown for staff; no buyer gets anything twice."""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from bridgekit import (
    crash_config,
    mailbridge_process,
    peek_count,
    running_daemon,
    wait_for_progress,
)
from sqlalchemy import select

from bridge import store
from bridge.sandbox import (
    DovecotServer,
    ReceivedMail,
    SandboxAccount,
    SandboxSMTP,
    samples,
)
from bridge.store.engine import open_database

REPLIES = 200
KILLS = 8
BUYER_DOMAIN = "@marketplace.amazon.com"
ANSWER = re.compile(r"\bAnswer (\d+):")
QUEUED_REPLIES = "SELECT count(*) FROM outbox WHERE purpose = 'buyer_reply'"



def _to_buyers(smtp: SandboxSMTP) -> list[ReceivedMail]:
    return [r for r in smtp.received if any(t.lower().endswith(BUYER_DOMAIN) for t in r.rcpt_tos)]


def _text(data: bytes) -> str:
    body = message_from_bytes(data, policy=policy.default).get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else ""  # type: ignore[attr-defined]


def _subject(data: bytes) -> str:
    return str(message_from_bytes(data, policy=policy.default)["Subject"] or "")


def _buyer_reply_states(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Staff reply Message-ID -> state of the buyer_reply outbox row queued for it."""
    with engine.begin() as conn:
        return {mid: state for mid, state in conn.execute(
            select(store.MESSAGE.c.message_id, store.OUTBOX.c.state)
            .join(store.MESSAGE, store.MESSAGE.c.id == store.OUTBOX.c.source_message_id)
            .where(store.OUTBOX.c.purpose == "buyer_reply"))}


@pytest.mark.slow
def test_sigkill_while_relaying_staff_replies_never_duplicates(tmp_path: Path, dovecot: DovecotServer,
                                                               fresh_mailbox: SandboxAccount,
                                                               staff: SandboxAccount) -> None:
    seller = fresh_mailbox
    log = tmp_path / "daemon.log"
    with SandboxSMTP(dovecot, auth={seller.user: seller.password}, file_sent_copies=True) as smtp:
        config = crash_config(tmp_path, seller, staff, smtp, batch_size=50)

        # Phase 1: 200 buyers write once each; one pass forwards them to staff.
        with dovecot.imap_client(seller.user) as client:
            client.multiappend("INBOX", samples.buyer_backlog(REPLIES, buyers=REPLIES, seller_address=seller.user,
                                                              seed=23))
        once = mailbridge_process(config, log, "run", "--once")
        assert once.wait(60) == 0, log.read_text()[-3000:]
        notifications = [r for r in smtp.wait_for(REPLIES) if r.rcpt_tos == (staff.user,)]
        assert len(notifications) == REPLIES
        smtp.wait_delivered()
        smtp.clear()

        # Phase 2: staff answer every buyer; the replies land in the seller INBOX together.
        staff_domain = staff.user.rpartition("@")[2]
        reply_ids = [f"staff-answer.{i}@{staff_domain}" for i in range(REPLIES)]
        replies = [samples.staff_reply(note.data, staff=staff.user, message_id=reply_ids[i],
                                       text=f"Answer {i}: thank you for your message. Your order is packed and "
                                            "leaves our warehouse tomorrow morning.")
                   for i, note in enumerate(notifications)]
        with dovecot.imap_client(seller.user) as client:
            client.multiappend("INBOX", replies)

        engine = open_database(f"sqlite:///{tmp_path}/mailbridge.db")
        db = tmp_path / "mailbridge.db"
        rng = random.Random(4711)
        kills: list[tuple[int, int]] = []   # (staff replies ingested, buyer mails received) at each kill
        while len(kills) < KILLS and len(_to_buyers(smtp)) < REPLIES:
            proc = mailbridge_process(config, log, "run")
            if len(kills) % 2:   # every other kill soon after this run got going
                wait_for_progress(lambda: (peek_count(db, QUEUED_REPLIES), len(_to_buyers(smtp))),
                                  lambda now: now[1] >= REPLIES)
                time.sleep(rng.uniform(0, 0.2))
            else:
                time.sleep(rng.uniform(0.2, 1.2))  # anywhere, start-up included
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((len(_buyer_reply_states(engine)), len(_to_buyers(smtp))))

        started = log.read_text(errors="replace").count("mailbridge running")
        with running_daemon(config, log):
            deadline = time.monotonic() + 40
            while log.read_text(errors="replace").count("mailbridge running") == started and \
                    time.monotonic() < deadline:
                time.sleep(0.05)               # the final daemon is up before anything is judged
            while time.monotonic() < deadline:
                states = _buyer_reply_states(engine)
                with engine.begin() as conn:
                    open_rows = conn.execute(select(store.OUTBOX.c.id).where(
                        store.OUTBOX.c.state.in_(("queued", "sending")))).all()
                if len(states) == REPLIES and set(states.values()) <= {"sent", "unknown"} and not open_rows:
                    break
                time.sleep(0.25)
        smtp.wait_delivered()

        states = _buyer_reply_states(engine)
        with engine.begin() as conn:
            outbox = collections.Counter((r.purpose, r.state) for r in conn.execute(
                select(store.OUTBOX.c.purpose, store.OUTBOX.c.state)))
            dedupe_keys = [r[0] for r in conn.execute(select(store.OUTBOX.c.dedupe_key)
                                                      .where(store.OUTBOX.c.purpose == "buyer_reply"))]
            row_ids = {r.message_id: r.outbox_mid for r in conn.execute(
                select(store.MESSAGE.c.message_id, store.OUTBOX.c.message_id.label("outbox_mid"))
                .join(store.MESSAGE, store.MESSAGE.c.id == store.OUTBOX.c.source_message_id)
                .where(store.OUTBOX.c.purpose == "buyer_reply"))}
        to_buyers = _to_buyers(smtp)
        per_message_id = collections.Counter(r.message_id for r in smtp.received)
        per_answer = collections.Counter(int(m.group(1)) for r in to_buyers
                                         for m in [ANSWER.search(_text(r.data))] if m)
        buyer_ids = collections.Counter(r.message_id for r in to_buyers)
        alerts = [r for r in smtp.received if r.rcpt_tos == (staff.user,)
                  and "may or may not have been sent" in _subject(r.data)]
        confirmations = sum(1 for r in smtp.received if r.rcpt_tos == (staff.user,)
                            and "Sent to the buyer" in _subject(r.data))
        log_text = log.read_text(errors="replace")
        reconciled = collections.Counter(note for note in re.findall(r"send interrupted by a crash; ([^\n]*)",
                                                                     log_text))
        unknown = [i for i in range(REPLIES) if states.get(reply_ids[i]) == "unknown"]
        duplicates = sum(n - 1 for n in per_message_id.values() if n > 1)
        print(f"\nSIGKILL x{len(kills)} ((staff replies ingested, buyer mails received) at each kill: {kills}); "
              f"relayed {sum(1 for i in range(REPLIES) if per_answer[i] == 1)}/{REPLIES} "
              f"({len(to_buyers)} buyer mails, {len(buyer_ids)} distinct Message-IDs); unknown {len(unknown)}; "
              f"duplicates {duplicates}; staff confirmations {confirmations}; unknown-outcome alerts {len(alerts)}; "
              f"reconciled interrupted sends {sum(reconciled.values())} "
              f"{dict(reconciled)}; outbox {dict(outbox)}")

        # One buyer_reply row per staff reply, whatever the kills did to ingest.
        assert len(states) == len(dedupe_keys) == len(set(dedupe_keys)) == REPLIES
        assert set(states) == set(reply_ids)
        # Zero duplicates: per Message-ID (everything the SMTP server took) and per answer text.
        assert duplicates == 0, [(m, n) for m, n in per_message_id.items() if n > 1]
        assert max(per_answer.values()) == 1
        assert sum(per_answer.values()) == len(to_buyers)                # every buyer mail is one of ours
        for i in range(REPLIES):
            state = states[reply_ids[i]]
            if state == "sent":
                assert per_answer[i] == 1 and buyer_ids[row_ids[reply_ids[i]]] == 1, (i, state)
            else:
                assert state == "unknown", (i, state)
        # Staff are told of every reply of unknown outcome, and of nothing else as unknown.
        assert bool(alerts) == bool(unknown), (len(alerts), unknown)
        # Staff see every reply that reached a buyer, including those found in Sent after a kill.
        assert confirmations == sum(1 for i in range(REPLIES) if states[reply_ids[i]] == "sent")
        # The kills did land mid-relay.
        assert sum(1 for _, received in kills if 0 < received < REPLIES) >= 2, kills
        assert dovecot.uids(seller.user, "INBOX") == []
