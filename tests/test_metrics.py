"""``/metrics``: a real ``mailbridge run`` against Dovecot and the SMTP sandbox, scraped over 127.0.0.1.

The daemon is a separate process started from a config file with ``[metrics]
listen``, as an operator runs it; the mail that moves through it (a buyer
message, a staff reply to the buyer, an opt-out notice, an oversize message
quarantined, SMTP faults, an IMAP outage) must show in the figures, and the
port must close when the daemon stops.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bridgekit import running_daemon, wait_until
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge import store
from bridge.config import ConfigError, load_settings
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples
from bridge.store.engine import open_database
from bridge.workers.metrics import DatabaseCollector, Meter, MetricsServer
from bridge.workers.supervisor import Daemon

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)

#: Every family /metrics must list, with its type.
FAMILIES = {
    "mailbridge_messages_ingested": "counter",
    "mailbridge_outbox_messages": "gauge",
    "mailbridge_outbox_oldest_queued_age_seconds": "gauge",
    "mailbridge_send_duration_seconds": "histogram",
    "mailbridge_smtp_errors": "counter",
    "mailbridge_smtp_reconnects": "counter",
    "mailbridge_imap_errors": "counter",
    "mailbridge_imap_reconnects": "counter",
    "mailbridge_imap_last_fetch_timestamp_seconds": "gauge",
    "mailbridge_buyers_opted_out": "gauge",
    "mailbridge_policy_decisions": "counter",
    "mailbridge_policy_rule_hits": "counter",
    "mailbridge_feedback_requests": "gauge",
    "mailbridge_quarantined_messages": "gauge",
    "mailbridge_database_up": "gauge",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Scrape:
    """One /metrics page, parsed: ``value(name, **labels)`` sums the matching samples."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        family = self.families.get(sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum"))
        if family is None:
            return 0.0
        return sum(s.value for s in family.samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        return Scrape(answer.read().decode())


def wait_for(port: int, what: str, ready: Callable[[Scrape], bool], log: Path, timeout: float = 60) -> Scrape:
    """Scrape until ``ready`` (the daemon is a separate process; mail takes its time); fail naming ``what``."""
    def scraped() -> Scrape | None:
        try:
            page = scrape(port)
        except (urllib.error.URLError, ConnectionError):   # not listening yet
            return None
        return page if ready(page) else None

    def said() -> str:
        return f"/metrics to show {what}; daemon log:\n{log.read_text(errors='replace')[-3000:]}"

    return wait_until(scraped, said, timeout, interval=0.1)


def test_metrics_of_a_running_daemon_list_every_family_with_what_happened(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    port = free_port()
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mailbridge.db", seller=fresh_mailbox.user, staff=staff.user,
        imap_port=fresh_mailbox.port, smtp_port=smtp_server.port, imap_password=fresh_mailbox.password,
        staff_senders=[f"*@{staff.user.rpartition('@')[2]}"],
        sections={"metrics": {"listen": f"127.0.0.1:{port}"},
                  "outbox": {"retry_base_seconds": 0.2, "retry_max_seconds": 0.5},
                  "account": {"forward_existing": True},
                  "imap": {"poll_seconds": 5, "max_message_bytes": 1024 * 1024},
                  "smtp": {"sent_copies": "none"}}))
    log = tmp_path / "daemon.log"
    with running_daemon(config, log):
        # A buyer message; the first try of its notification is refused for now (4xx).
        smtp_server.fail_next(451, "4.3.0 try again later")
        dovecot.append(fresh_mailbox.user, "INBOX", samples.amazon_buyer_message(
            buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556",
            question="Does the tent come with a footprint?", seller_address=fresh_mailbox.user,
            token="A1B2C3D4E5F6G", message_id="buyer.1@email.amazon.com"))
        (notification,) = smtp_server.wait_for(1, timeout=60)
        # Staff answer it: relayed to the buyer through the compliance guard (an audit decision).
        dovecot.append(fresh_mailbox.user, "INBOX", samples.staff_reply(
            notification.data, staff=staff.user, text="Yes, it does: the footprint is in the side pocket.",
            message_id=f"staff.1@{staff.user.rpartition('@')[2]}"))
        smtp_server.wait_for(3, timeout=60)      # the reply to the buyer, and its confirmation to staff
        # An opt-out notice, then mail too large to read (quarantined, staff alerted); the alert's
        # connection drops during DATA, so it is sent again over a new session.
        dovecot.append(fresh_mailbox.user, "INBOX", samples.amazon_optout_notice(
            seller_address=fresh_mailbox.user, buyer_relay="k3j9x0qma2b7@marketplace.amazon.com",
            order="111-2223334-4445556", message_id="optout.1@amazon.com"))
        smtp_server.drop_connection_next("DATA")
        big = samples.unclassified(sender="someone@example.org", to=fresh_mailbox.user, message_id="big.1@example.org")
        dovecot.append(fresh_mailbox.user, "INBOX", big + b"x" * (1024 * 1024 + 10) + b"\r\n")

        page = wait_for(port, "the quarantine alert sent after a reconnect", lambda s: (
            s.value("mailbridge_quarantined_messages", account="acme", acknowledged="false") == 1
            and s.value("mailbridge_smtp_reconnects_total", account="acme") >= 1
            and s.value("mailbridge_outbox_messages", account="acme", state="sent") == 4
            and s.value("mailbridge_buyers_opted_out", account="acme") == 1), log)

        assert {name: page.families[name].type for name in FAMILIES if name in page.families} == FAMILIES
        assert page.value("mailbridge_messages_ingested_total", account="acme", kind="buyer") == 1
        assert page.value("mailbridge_messages_ingested_total", account="acme", kind="staff_reply") == 1
        assert page.value("mailbridge_messages_ingested_total", account="acme", kind="bounce") == 1
        # notification, reply to the buyer, staff confirmation, quarantine alert: sent, none waiting
        assert page.value("mailbridge_outbox_messages", account="acme") == 4
        assert page.value("mailbridge_outbox_oldest_queued_age_seconds", account="acme") == 0
        assert page.value("mailbridge_send_duration_seconds_count", account="acme", outcome="sent") >= 4
        assert page.value("mailbridge_send_duration_seconds_count", account="acme", outcome="error") == 2
        assert page.value("mailbridge_smtp_errors_total", account="acme", kind="transient") == 1
        assert page.value("mailbridge_smtp_errors_total", account="acme", kind="ambiguous") == 1
        assert page.value("mailbridge_policy_decisions_total", account="acme", decision="allowed") == 1
        assert page.value("mailbridge_feedback_requests", account="acme", state="scheduled") == 0
        fetched = page.value("mailbridge_imap_last_fetch_timestamp_seconds", account="acme", folder="INBOX")
        assert abs(fetched - time.time()) < 600   # a Unix time, recent: not an age or a count
        assert page.value("mailbridge_database_up") == 1

        # The IMAP server goes away and comes back: an error, then a new session.
        dovecot.stop()
        wait_for(port, "an IMAP connection error", lambda s: s.value(
            "mailbridge_imap_errors_total", account="acme", kind="connection") >= 1, log)
        dovecot.start()
        wait_for(port, "an IMAP reconnect", lambda s: s.value(
            "mailbridge_imap_reconnects_total", account="acme") >= 1, log)
    # Stopped with the daemon: nothing listens any more.
    with pytest.raises(urllib.error.URLError):
        scrape(port)


# --- the collector and the server, on a database without mail servers -------------------------

def _decision(engine: Any, decision: str, rules: tuple[str, ...] = (), account: str = "acme",
              row_id: int | None = None) -> None:
    with engine.begin() as conn:
        if row_id is None:
            store.record_audit(conn, account=account, now=NOW, event="outbound", decision=decision,
                               category="reply", findings=[{"rule": r, "severity": "block"} for r in rules])
        else:   # an id handed out earlier, committed only now (PostgreSQL, two daemons)
            conn.execute(store.AUDIT.insert().values(id=row_id, at=NOW, account=account, event="outbound",
                                                     decision=decision, rules="[]", evaluated="[]"))


def collected(registry: CollectorRegistry) -> Scrape:
    return Scrape(generate_latest(registry).decode())


def test_policy_decisions_are_counted_once_each_also_when_committed_out_of_order(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/mb.db")
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(engine, ["acme", "idle"], lambda: NOW))
    _decision(engine, "allowed")
    _decision(engine, "blocked", ("no_links", "no_contact_details"))
    _decision(engine, "warned", ("no_links", "no_links"))          # one rule found twice: one hit
    with engine.begin() as conn:                                    # not a policy decision
        store.record_audit(conn, account="acme", now=NOW, event="optout", decision="opted_out", category=None)
    page = collected(registry)
    assert page.value("mailbridge_policy_decisions_total", account="acme") == 3
    assert page.value("mailbridge_policy_decisions_total", decision="blocked") == 1
    assert page.value("mailbridge_policy_rule_hits_total", rule="no_links") == 2
    assert page.value("mailbridge_policy_rule_hits_total", rule="no_links", decision="warned") == 1
    assert page.value("mailbridge_policy_rule_hits_total", rule="no_contact_details", decision="blocked") == 1

    for n in range(5):
        _decision(engine, "allowed", account="other")
    _decision(engine, "held", row_id=100)
    page = collected(registry)
    assert page.value("mailbridge_policy_decisions_total", account="other") == 5
    assert page.value("mailbridge_policy_decisions_total", decision="held") == 1
    _decision(engine, "allowed", row_id=50)        # below the highest id counted, committed after it
    page = collected(registry)
    assert page.value("mailbridge_policy_decisions_total", account="acme", decision="allowed") == 2
    assert collected(registry).value("mailbridge_policy_decisions_total") == 10   # a scrape again counts nothing twice

    # A new process (a restart) counts the whole log from the start: right at once.
    fresh = CollectorRegistry()
    fresh.register(DatabaseCollector(engine, ["acme"], lambda: NOW))
    assert collected(fresh).value("mailbridge_policy_decisions_total") == 10


def test_state_is_zero_filled_for_configured_accounts_and_an_unreadable_database_says_so(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path}/mb.db")
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(engine, ["acme"], lambda: NOW))
    with engine.begin() as conn:
        conn.execute(store.OUTBOX.insert().values(
            account="acme", message_id="m1@mailbridge", purpose="staff_notification", audience="staff",
            envelope_from="s@acme.example", recipients="[]", subject="s", raw=b"x", state="queued",
            next_attempt_at=NOW, created_at=NOW - timedelta(seconds=90)))
    page = collected(registry)
    assert page.value("mailbridge_outbox_messages", account="acme", state="queued") == 1
    assert page.value("mailbridge_outbox_messages", account="acme", state="failed") == 0
    assert page.value("mailbridge_outbox_oldest_queued_age_seconds", account="acme") == 90
    assert page.value("mailbridge_quarantined_messages", account="acme", acknowledged="false") == 0
    assert "mailbridge_imap_last_fetch_timestamp_seconds" in page.families   # listed, no sample before a fetch
    assert page.value("mailbridge_database_up") == 1

    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE outbox")
    page = collected(registry)
    assert page.value("mailbridge_database_up") == 0
    assert "mailbridge_outbox_messages" not in page.families


def test_a_port_in_use_stops_the_daemon_before_it_starts_any_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "mailbridge.toml"
        config.write_text(config_toml(database=f"sqlite:///{tmp_path}/mb.db", seller="seller@acme.example",
                                      staff="staff@acme.example", imap_port=1, smtp_port=1, imap_password="x",
                                      sections={"metrics": {"listen": f"127.0.0.1:{port}"},
                                                "smtp": {"sent_copies": "none"}}))
        daemon = Daemon(load_settings(config))
        with pytest.raises(ConfigError) as refused:
            asyncio.run(daemon.run(asyncio.Event()))
    assert str(refused.value).startswith(f"{config}: metrics.listen: cannot listen on 127.0.0.1:{port}: ")
    assert "choose a free port" in str(refused.value)
    assert not [t for t in threading.enumerate() if t.name.startswith("ingest-")]


def test_the_server_serves_its_own_registry_and_stops(tmp_path: Path) -> None:
    meter = Meter()
    meter.ingested("acme", {"buyer": 2, "bounce": 0})
    port = free_port()
    server = MetricsServer(f"127.0.0.1:{port}", meter.registry)
    server.start()
    try:
        page = scrape(port)
        assert page.value("mailbridge_messages_ingested_total", kind="buyer") == 2
        assert page.value("mailbridge_messages_ingested_total", kind="bounce") == 0
        assert "python_gc_objects_collected" not in page.families    # not the library's global registry
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_the_outbox_counts_read_the_covering_index(tmp_path: Path) -> None:
    """Scrapes count the outbox from ix_outbox_account_state, never from the rows (which hold whole
    messages). An older database gains the index with `mailbridge db upgrade` (revision 0003;
    tests/test_migrations.py checks the models and the migrations agree)."""
    url = f"sqlite:///{tmp_path}/mb.db"
    with open_database(url).begin() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT account, state, count(*) FROM outbox "
                                    "GROUP BY account, state").all()
    assert "COVERING INDEX ix_outbox_account_state" in str(plan)
