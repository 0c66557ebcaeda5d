"""Prometheus metrics: ``/metrics`` over HTTP when ``[metrics] listen`` is set (prometheus_client).

Two kinds of figures, in one registry of the daemon's own (never the
library's global one, so two daemons in one process, as in tests, do not mix):

- **Events**, counted by the workers as they happen (:class:`Meter`): mail
  ingested by kind, SMTP send latency, SMTP and IMAP errors and reconnects.
  They start from zero with the process, as Prometheus counters do.
- **State**, read from the database on each scrape
  (:class:`DatabaseCollector`): the outbox by state and the age of its oldest
  queued row, the last successful fetch per account, opt-outs, policy
  decisions by rule, feedback requests by state, quarantined mail. Read at
  scrape time, they are right straight after a restart and whichever daemon
  sharing the database did the work.

The HTTP server is prometheus_client's own (a thread per scrape), started by
the supervisor before the workers and stopped when they have stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import aiosmtplib
from prometheus_client import CollectorRegistry, Counter, Histogram, start_wsgi_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.adapters.oauth2 import TokenProvider
from bridge.adapters.smtp import SendError, SmtpConnection
from bridge.config import ConfigError, SmtpSettings
from bridge.config.checks import split_listen
from bridge.domain.clock import Clock, utcnow
from bridge.store.engine import reader
from bridge.store.feedback import REQUEST_STATES

log = logging.getLogger(__name__)

# SMTP send latency: a local relay answers in milliseconds, a remote submission
# server with TLS in a second or two; the top buckets catch the timeouts (60 s default).
SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Meter:
    """The event counters the workers update: one per daemon, in the daemon's own registry.

    Each method is a few dictionary look-ups under prometheus_client's lock:
    cheap enough to call per message from any thread.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._ingested = Counter("mailbridge_messages_ingested", "Inbound messages recorded, by kind "
                                 "(buyer, staff_reply, bounce, auto_reply, notice, own, other)",
                                 ["account", "kind"], registry=r)
        self._send_seconds = Histogram("mailbridge_send_duration_seconds", "Time one SMTP send took "
                                       "(connecting when needed, MAIL FROM to the end of DATA), by outcome",
                                       ["account", "outcome"], buckets=SEND_BUCKETS, registry=r)
        self._smtp_errors = Counter("mailbridge_smtp_errors", "Failed SMTP sends, by kind: connection (could "
                                    "not connect or log in), transient (4xx), permanent (5xx), ambiguous "
                                    "(the connection broke during DATA)", ["account", "kind"], registry=r)
        self._smtp_reconnects = Counter("mailbridge_smtp_reconnects", "SMTP sessions opened after the "
                                        "worker's first one (the previous one closed or failed)",
                                        ["account"], registry=r)
        self._imap_errors = Counter("mailbridge_imap_errors", "Failed ingest passes, by kind: connection (lost "
                                    "or refused), permanent (login refused, folder missing), command (the "
                                    "server refused a command), other (any other failure)",
                                    ["account", "kind"], registry=r)
        self._imap_reconnects = Counter("mailbridge_imap_reconnects", "IMAP sessions the ingest loop opened "
                                        "after its first one", ["account"], registry=r)
        self._lock = threading.Lock()
        self._sessions: Tally[tuple[str, str]] = Tally()

    def ingested(self, account: str, kinds: Mapping[str, int]) -> None:
        for kind, n in kinds.items():
            if n:
                self._ingested.labels(account, kind).inc(n)

    def imap_session(self, account: str) -> None:
        """The ingest loop of ``account`` is connected and logged in."""
        if self._count_session("imap", account) > 1:
            self._imap_reconnects.labels(account).inc()

    def imap_error(self, account: str, kind: str) -> None:
        self._imap_errors.labels(account, kind).inc()

    def smtp_session(self, account: str) -> None:
        if self._count_session("smtp", account) > 1:
            self._smtp_reconnects.labels(account).inc()

    def smtp_send(self, account: str, seconds: float, error: SendError | None) -> None:
        self._send_seconds.labels(account, "sent" if error is None else "error").observe(seconds)
        if error is not None:
            kind = ("connection" if error.connection else "ambiguous" if error.ambiguous
                    else "permanent" if error.permanent else "transient")
            self._smtp_errors.labels(account, kind).inc()

    def _count_session(self, protocol: str, account: str) -> int:
        with self._lock:
            self._sessions[(protocol, account)] += 1
            return self._sessions[(protocol, account)]


class MeteredSmtp(SmtpConnection):
    """The account's SMTP connection, timing each send and counting errors and sessions into a :class:`Meter`.

    A subclass rather than calls inside the outbox worker, so that the worker's
    claim/send/record loop stays as it is: whatever sends through this
    connection is measured.
    """

    def __init__(self, settings: SmtpSettings, meter: Meter, account: str,
                 tokens: TokenProvider | None = None) -> None:
        super().__init__(settings, tokens=tokens)
        self.meter = meter
        self.account = account

    async def _connect(self) -> aiosmtplib.SMTP:
        # Every session the connection opens goes through here (the first and each reconnect).
        client = await super()._connect()
        self.meter.smtp_session(self.account)
        return client

    async def send(self, envelope_from: str, recipients: tuple[str, ...], raw: bytes,
                   may_finish: Callable[[], bool] | None = None) -> None:
        started = time.perf_counter()
        try:
            await super().send(envelope_from, recipients, raw, may_finish)
        except SendError as exc:
            self.meter.smtp_send(self.account, time.perf_counter() - started, exc)
            raise
        self.meter.smtp_send(self.account, time.perf_counter() - started, None)


# The audit log is read on from the highest id counted. Ids are handed out in order, but on
# PostgreSQL a transaction may commit after a later one: the AUDIT_OVERLAP ids below the
# highest are read again at each scrape, and rows not counted yet counted then.
AUDIT_OVERLAP = 1000


class DatabaseCollector(Collector):
    """State figures read from the database at each scrape (see the module docstring)."""

    def __init__(self, engine: Engine, accounts: Iterable[str], clock: Clock = utcnow) -> None:
        self.engine = reader(engine)
        self.accounts = sorted(accounts)
        self.clock = clock
        self._lock = threading.Lock()      # scrapes may overlap (one thread each)
        self._high = 0                     # the highest audit id counted
        self._counted: set[int] = set()    # the ids from _high - AUDIT_OVERLAP to _high, all counted
        self._decisions: Tally[tuple[str, str]] = Tally()
        self._rule_hits: Tally[tuple[str, str, str]] = Tally()

    def describe(self) -> list[Metric]:
        return []   # the families depend on the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                families = list(self._read())
                up = 1.0
            except Exception:  # noqa: BLE001 - a scrape must still answer; the log says why
                log.exception("metrics: cannot read the database")
                families, up = [], 0.0
        yield from families
        yield GaugeMetricFamily("mailbridge_database_up", "1 when the last scrape could read the database", up)

    def _read(self) -> Iterator[Metric]:
        now = self.clock()
        with self.engine.begin() as conn:
            fetches = store.mailbox_fetches(conn)
            outbox = store.outbox_by_state(conn)
            oldest = store.oldest_queued(conn)
            optouts = store.optouts(conn)
            feedback = store.feedback_by_state(conn)
            quarantined = store.quarantine_counts(conn)
            self._count_audit(conn)
        accounts = sorted(set(self.accounts) | {a for a, _ in outbox} | {f.account for f in fetches})

        fam = GaugeMetricFamily("mailbridge_imap_last_fetch_timestamp_seconds",
                                "When the folder was last fetched successfully (Unix time)", labels=["account", "folder"])
        for f in fetches:
            if f.last_fetch_at is not None:
                fam.add_metric([f.account, f.folder], f.last_fetch_at.timestamp())
        yield fam
        fam = GaugeMetricFamily("mailbridge_outbox_messages", "Outbox rows by state", labels=["account", "state"])
        for a in accounts:
            for s in store.OUTBOX_STATES:
                fam.add_metric([a, s], outbox.get((a, s), 0))
        yield fam
        fam = GaugeMetricFamily("mailbridge_outbox_oldest_queued_age_seconds",
                                "Age of the oldest queued outbox row (0: none queued)", labels=["account"])
        for a in accounts:
            fam.add_metric([a], max(0.0, (now - oldest[a]).total_seconds()) if a in oldest else 0.0)
        yield fam
        fam = GaugeMetricFamily("mailbridge_buyers_opted_out", "Buyers recorded as opted out", labels=["account"])
        for a in accounts:
            fam.add_metric([a], optouts.get(a, 0))
        yield fam
        fam = GaugeMetricFamily("mailbridge_feedback_requests", "Feedback requests by state (outcome)",
                                labels=["account", "state"])
        for a in accounts:
            for s in REQUEST_STATES:
                fam.add_metric([a, s], feedback.get((a, s), 0))
        yield fam
        fam = GaugeMetricFamily("mailbridge_quarantined_messages", "Mail kept in quarantine, by whether an operator "
                                "acknowledged it (mailbridge quarantine ack)", labels=["account", "acknowledged"])
        for a in accounts:
            for acked in (False, True):
                fam.add_metric([a, str(acked).lower()], quarantined.get((a, acked), 0))
        yield fam
        counter = CounterMetricFamily("mailbridge_policy_decisions", "Compliance decisions on outbound mail, by "
                                      "decision (from the audit log)", labels=["account", "decision"])
        for (a, d), n in sorted(self._decisions.items()):
            counter.add_metric([a, d], n)
        yield counter
        counter = CounterMetricFamily("mailbridge_policy_rule_hits", "Findings of each compliance rule, by the "
                                      "decision they were part of", labels=["account", "rule", "decision"])
        for (a, r, d), n in sorted(self._rule_hits.items()):
            counter.add_metric([a, r, d], n)
        yield counter

    def _count_audit(self, conn: Connection) -> None:
        """Count the outbound decisions not counted yet: new ones in bulk, late ones in the window below.

        Counted into local tallies first, kept only once every read succeeded: a
        failed scrape must not count anything twice at the next.
        """
        decisions: Tally[tuple[str, str]] = Tally()
        hits: Tally[tuple[str, str, str]] = Tally()

        def rule_hits(row: store.AuditDecision) -> None:
            for rule in dict.fromkeys(row.rules):   # a rule found twice in one message: one hit
                hits[(row.account, rule, row.decision)] += 1

        high = store.audit_high_id(conn)
        for row in store.audit_decisions(conn, max(0, self._high - AUDIT_OVERLAP), self._high):
            if row.id not in self._counted:   # committed after a higher id was counted
                decisions[(row.account, row.decision)] += 1
                rule_hits(row)
        if high > self._high:
            decisions.update(store.audit_decision_counts(conn, self._high, high))
            for row in store.audit_decisions(conn, self._high, high, with_findings_only=True):
                rule_hits(row)
        counted = {r.id for r in store.audit_decisions(conn, max(0, high - AUDIT_OVERLAP), high)}
        self._decisions.update(decisions)
        self._rule_hits.update(hits)
        self._high, self._counted = max(high, self._high), counted


class MetricsServer:
    """``/metrics`` on ``listen`` ("HOST:PORT") for the daemon's registry; :meth:`start`, then :meth:`stop`."""

    def __init__(self, listen: str, registry: CollectorRegistry, config_path: Path | None = None) -> None:
        self.listen = listen
        self.registry = registry
        self.config_path = config_path
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        host, port = split_listen(self.listen)
        try:
            self._server, self._thread = start_wsgi_server(port, host, self.registry)
        except OSError as exc:
            where = f"{self.config_path}: " if self.config_path else ""
            raise ConfigError(f"{where}metrics.listen: cannot listen on {self.listen}: {exc.strerror or exc}; "
                              "choose a free port and an address of this machine, or remove the key to run "
                              "without metrics") from exc
        log.info("metrics: serving /metrics on http://%s/metrics", self.listen)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
