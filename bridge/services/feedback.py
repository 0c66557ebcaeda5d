"""Feedback requests: schedule eligible orders, dispatch due requests through the guard into the outbox.

- :func:`schedule` makes a request row for each order that became eligible,
  with its due time (``bridge.domain.feedback``). An order's row is unique, so
  running it again (a restart, a re-import) asks nobody twice.
- :func:`dispatch_due` claims due requests a few at a time and handles each in
  one transaction: every rule is checked again against the data of that moment,
  the request is rendered in the buyer's language, passed through the
  compliance guard (category unsolicited), queued in the outbox from the
  seller's registered address, and recorded sent or skipped with the reason.
  Nothing is claimed while the marketplace restricts the account, or once the
  local day's cap is reached.
- An opt-out notice answering a request marks it "not delivered: buyer opted
  out" (:func:`notice_answers_request`); an opt-out cancels the buyer's
  scheduled requests (:func:`buyer_opted_out`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from bridge import store
from bridge.adapters.templates import Rendered, TemplateError
from bridge.config import FeedbackSettings
from bridge.domain import compose, feedback, policy, tokens
from bridge.domain.marketplaces import DEFAULT_REGISTRY, MARKETPLACES
from bridge.domain.orders import OrderFacts
from bridge.domain.threads import base_alias
from bridge.services import guard, notify
from bridge.services.account import AccountContext

log = logging.getLogger(__name__)

TEMPLATE = "feedback_request"
FALLBACK_LANGUAGE = "en"
PURPOSE = "feedback_request"
#: A claim older than this, held by another dispatcher, is taken to be a dead one's (the daemon passes
#: ``[outbox] reconcile_after_seconds``). Handling a claimed request takes milliseconds.
STALE_CLAIM = timedelta(minutes=2)
#: Orders read per query while scheduling.
SCHEDULE_PAGE = 500


def schedule_of(settings: FeedbackSettings) -> feedback.Schedule:
    """The rules' view of an account's ``[accounts.feedback]`` (time zone and language already filled in)."""
    return feedback.Schedule(
        time_zone=settings.timezone, days_after=settings.days_after,
        window=feedback.SendWindow.parse(settings.send_window),
        send_days=frozenset(feedback.weekday(d) for d in settings.send_days),
        exclude_skus=frozenset(settings.exclude_skus),
        exclude_recent_conversation_days=settings.exclude_recent_conversation_days)


def buyer_facts(conn: Connection, account: str, alias: str | None) -> feedback.BuyerFacts:
    if not alias:
        return feedback.BuyerFacts()
    state = store.buyer_contact_state(conn, account, alias)
    return feedback.BuyerFacts(
        opted_out=state is not None and state.opted_out_at is not None,
        do_not_solicit_until=state.do_not_solicit_until if state else None,
        last_message_at=store.last_buyer_message_at(conn, account, alias))


def _already_asked(request: store.Request | None) -> str | None:
    """How the order was asked before, judged from its request row (None: it was not)."""
    if request is None or request.state in ("scheduled", "claimed"):
        return None
    if request.state == "sent":
        return f"a request was sent {request.sent_at:%Y-%m-%d}" if request.sent_at else "a request was sent"
    return f"the request was {request.state}" + (f" ({request.reason})" if request.reason else "")


def assess(conn: Connection, acct: AccountContext, record: store.OrderRecord, now: datetime,
           request: store.Request | None = None) -> feedback.Assessment:
    """Every rule, against the data of ``now``; ``request``: the order's row when judging anything but itself."""
    return feedback.assess(record.facts, buyer_facts(conn, acct.name, record.facts.buyer_alias),
                           schedule_of(acct.settings.feedback), now, _already_asked(request))


# --------------------------------------------------------------------------- scheduling


def schedule(conn: Connection, acct: AccountContext, now: datetime) -> int:
    """Make a request for every order that became eligible; returns how many were made."""
    made = 0
    after: tuple[datetime, int] | None = None
    since = now - feedback.WINDOW_CLOSES
    while True:
        page = store.orders_to_schedule(conn, acct.name, since, SCHEDULE_PAGE, after)
        for record in page:
            verdict = assess(conn, acct, record, now)
            if verdict.due is not None and store.schedule_request(
                    conn, acct.name, record.facts.order_id, record.facts.buyer_alias, verdict.due, now):
                made += 1
        if len(page) < SCHEDULE_PAGE:
            return made
        after = store.schedule_key(page[-1])


# --------------------------------------------------------------------------- rendering


def language_of(acct: AccountContext, record: store.OrderRecord) -> str:
    """The order's language ("de-DE" counts as "de"), else the account's, else English."""
    tag = record.language or acct.settings.feedback.language or FALLBACK_LANGUAGE
    return tag.replace("_", "-").split("-")[0].lower() or FALLBACK_LANGUAGE


def request_context(acct: AccountContext, record: store.OrderRecord) -> dict[str, Any]:
    """The documented, plain context of ``feedback_request`` for one order (docs/templates.md)."""
    s = acct.settings
    site = MARKETPLACES.get(record.marketplace or s.marketplace) or MARKETPLACES.get(s.marketplace)
    marketplace = DEFAULT_REGISTRY.family(site.family).name if site else s.marketplace
    return {
        "order_id": record.facts.order_id, "buyer_name": record.buyer_name, "items": list(record.titles),
        "seller_name": s.seller_name, "marketplace": marketplace, "language": language_of(acct, record),
    }


def order_context(conn: Connection, acct: AccountContext, template: str, order_id: str) -> dict[str, Any] | None:
    """The context ``template`` gets for the stored order ``order_id`` (None: no such order); raises
    KeyError for a template not made from an order (see :data:`ORDER_TEMPLATES`)."""
    build = ORDER_TEMPLATES[template]
    record = store.order_record(conn, acct.name, order_id)
    return None if record is None else build(acct, record)


def render(acct: AccountContext, record: store.OrderRecord, *, conn: Connection | None = None,
           now: datetime | None = None) -> tuple[Rendered, str]:
    """The request as the buyer would read it, and the template used; raises TemplateError.

    ``feedback_request.<language>`` where the templates have one, else the English
    ``feedback_request``. Given ``conn`` and ``now`` (the dispatcher), a broken edit
    rendered with the last good version also queues the one staff alert about it.
    """
    context = request_context(acct, record)
    language = context["language"]
    if conn is not None and now is not None:
        rendered = notify.render(conn, acct, TEMPLATE, context, now, lang=language)
    else:
        rendered = acct.templates.render_localized(TEMPLATE, language, context)
    return rendered, rendered.template


#: The templates rendered from one order, and how their context is made from it.
ORDER_TEMPLATES: dict[str, Callable[[AccountContext, store.OrderRecord], dict[str, Any]]] = {
    TEMPLATE: request_context}


def _completed_at(facts: OrderFacts) -> datetime | None:
    """The date the proactive window rule counts from: what closes the marketplace's window, less 30 days."""
    window = feedback.request_window(facts)
    return None if window is None else window.closes - feedback.WINDOW_CLOSES


def check(conn: Connection, acct: AccountContext, record: store.OrderRecord, rendered: Rendered,
          now: datetime) -> policy.Decision:
    alias = record.facts.buyer_alias or ""
    draft = policy.Draft(from_addr=acct.settings.seller_address, to_addr=alias, subject=rendered.subject,
                         text=rendered.text, category=policy.Category.UNSOLICITED)
    return guard.check(conn, account=acct.name, draft=draft, buyer_alias=alias, buyer_original_text=None, now=now,
                       config=acct.policy, order_completed_at=_completed_at(record.facts))


# --------------------------------------------------------------------------- dispatching


@dataclass
class DispatchResult:
    sent: int = 0
    skipped: int = 0
    rescheduled: int = 0
    paused_until: datetime | None = None
    capped: bool = False


class _LostClaim(Exception):
    """Another dispatcher took the request over: nothing of this transaction may commit."""


def recent_orders(conn: Connection, acct: AccountContext, now: datetime) -> int:
    """The account's orders of the last 30 days: what the default daily cap averages."""
    return store.orders_since(conn, acct.name, now - timedelta(days=feedback.CAP_AVERAGE_DAYS))


def dispatch_due(engine: Engine, acct: AccountContext, now: datetime, limit: int, *, worker: str,
                 stale_after: timedelta = STALE_CLAIM, orders_30_days: int | None = None) -> DispatchResult:
    """Send every due request of the account, ``limit`` claimed at a time; one transaction per request.

    Claims another dispatcher has held for ``stale_after`` are its dead predecessor's: released first.
    ``orders_30_days``: :func:`recent_orders` when the caller counted them lately (it is an average over
    30 days: counting them at every tick would read every recent order each time); else counted here.
    """
    result = DispatchResult()
    s = acct.settings.feedback
    with engine.begin() as conn:
        store.release_stale_claims(conn, acct.name, worker, now - stale_after, now)
        result.paused_until = guard.paused_until(conn, acct.name, now)
        if result.paused_until is not None:
            return result
        day_start, day_end = feedback.local_day(now, s.timezone)
        sent_today = store.sent_between(conn, acct.name, day_start, day_end)
        if orders_30_days is None:
            orders_30_days = recent_orders(conn, acct, now)
        cap = feedback.daily_cap(s.daily_cap, orders_30_days)
    while True:
        if sent_today >= cap:
            result.capped = True
            log.info("account %s: the daily cap of %d feedback requests is reached", acct.name, cap)
            return result
        with engine.begin() as conn:
            claimed = store.claim_due_requests(conn, acct.name, worker, now, min(limit, cap - sent_today))
        if not claimed:
            return result
        for request in claimed:
            try:
                with engine.begin() as conn:
                    outcome = _handle(conn, acct, request, now, worker)
            except _LostClaim:
                log.warning("account %s: feedback request for %s was taken over by another dispatcher",
                            acct.name, request.order_id)
                continue
            except Exception:
                # Nothing of the request's transaction committed: give the claims back (this one and
                # the rest of the batch) so the next tick tries again, then let the caller see the error.
                with engine.begin() as conn:
                    for left in claimed[claimed.index(request):]:
                        store.finish_request(conn, left.id, worker=worker, state="scheduled", now=now,
                                             reason="an error interrupted the dispatch; tried again next tick")
                raise
            if outcome == "sent":
                result.sent += 1
                sent_today += 1
            elif outcome == "scheduled":
                result.rescheduled += 1
            else:
                result.skipped += 1


def _finish(conn: Connection, request: store.Request, worker: str, state: str, now: datetime, **kw: object) -> str:
    if not store.finish_request(conn, request.id, worker=worker, state=state, now=now, **kw):  # type: ignore[arg-type]
        raise _LostClaim()
    return state


def _handle(conn: Connection, acct: AccountContext, request: store.Request, now: datetime, worker: str) -> str:
    """Check one claimed request again and send it, put it back for later, or skip it, saying why."""
    record = store.order_record(conn, acct.name, request.order_id)
    if record is None:
        return _finish(conn, request, worker, "skipped", now, reason="the order is no longer known")
    verdict = assess(conn, acct, record, now)
    if verdict.due is None:
        log.info("account %s: feedback request for %s skipped: %s", acct.name, request.order_id, verdict.reason)
        return _finish(conn, request, worker, "skipped", now, reason=verdict.reason)
    if verdict.due > now:
        return _finish(conn, request, worker, "scheduled", now, due_at=verdict.due, reason=verdict.reason or None)
    try:
        rendered, _ = render(acct, record, conn=conn, now=now)
    except TemplateError as exc:
        # Nothing half-rendered is ever sent; the request waits for the template to be fixed.
        log.error("account %s: feedback request for %s not rendered: %s", acct.name, request.order_id, exc)
        return _finish(conn, request, worker, "scheduled", now, due_at=now + timedelta(hours=1),
                       reason=f"template error: {exc}")
    decision = check(conn, acct, record, rendered, now)
    alias = record.facts.buyer_alias or ""
    audit = dict(account=acct.name, now=now, category="unsolicited", findings=decision.findings,
                 evaluated=decision.evaluated, buyer=base_alias(alias), actor="mailbridge feedback")
    if not decision.allowed:
        rules = ", ".join(f.rule for f in decision.blocking)
        guard.record(conn, decision="blocked", detail=f"feedback request for order {record.facts.order_id}",
                     **audit)  # type: ignore[arg-type]
        return _finish(conn, request, worker, "skipped", now, reason=f"blocked by the compliance guard: {rules}")
    s = acct.settings
    message_id = compose.new_message_id(s.seller_address)
    _finish(conn, request, worker, "sent", now, outbox_message_id=message_id, reason=verdict.reason or None)
    guard.record(conn, decision="warned" if decision.findings else "allowed", message_id=message_id,
                 detail=f"feedback request for order {record.facts.order_id}", **audit)  # type: ignore[arg-type]
    out = compose.build_mail(
        account=s.name, origin=tokens.make_origin(acct.secret, s.name, message_id), message_id=message_id,
        date=now, from_name=s.seller_name, from_addr=s.seller_address, to_addr=alias, subject=rendered.subject,
        text=rendered.text)
    store.enqueue(conn, account=s.name, message_id=out.message_id, purpose=PURPOSE, audience="buyer",
                  envelope_from=out.envelope_from, recipients=out.recipients, subject=out.subject, raw=out.raw,
                  now=now, category="unsolicited", dedupe_key=f"feedback:{s.name}:{record.facts.order_id}")
    log.info("account %s: feedback request for order %s queued <%s>", s.name, record.facts.order_id, message_id)
    return "sent"


# --------------------------------------------------------------------------- operators and opt-outs


@dataclass(frozen=True)
class Preview:
    order_id: str
    rendered: Rendered | None
    template: str | None
    may_send: bool
    reasons: tuple[str, ...]          # why not now (empty when it may be sent now)
    due: datetime | None
    request: store.Request | None


def preview(conn: Connection, acct: AccountContext, order_id: str, now: datetime) -> Preview | None:
    """The request for ``order_id`` as it would be sent now, and whether it may be; None for an unknown order."""
    record = store.order_record(conn, acct.name, order_id)
    if record is None:
        return None
    request = store.request_of_order(conn, acct.name, order_id)
    verdict = assess(conn, acct, record, now, request)
    reasons = [str(e) for e in verdict.exclusions]
    rendered = name = None
    try:
        rendered, name = render(acct, record)
    except TemplateError as exc:
        reasons.append(f"template: {exc}")
    if rendered is not None and record.facts.buyer_alias:
        decision = check(conn, acct, record, rendered, now)
        reasons += [f"guard {f.rule}: {f.reason}" for f in decision.blocking]
    if not acct.settings.feedback.enabled:
        reasons.append("feedback requests are off for this account ([accounts.feedback] enabled = false)")
    if verdict.due is not None and verdict.due > now:
        reasons.append(f"not due until {verdict.due:%Y-%m-%d %H:%M} UTC")
    return Preview(order_id=order_id, rendered=rendered, template=name, may_send=not reasons,
                   reasons=tuple(reasons), due=verdict.due, request=request)


def record_external(conn: Connection, acct: AccountContext, order_id: str, reason: str, actor: str,
                    now: datetime) -> tuple[bool, store.Request]:
    """The order was asked for feedback elsewhere (Amazon's "Request a Review"): never ask it here."""
    changed, request = store.record_external(conn, acct.name, order_id, f"asked elsewhere: {reason}", now)
    if changed:
        guard.record(conn, account=acct.name, now=now, event="feedback", decision="skipped", category="unsolicited",
                     buyer=request.buyer_alias, actor=actor, detail=f"order {order_id}: asked elsewhere: {reason}")
    return changed, request


def buyer_opted_out(conn: Connection, account: str, alias: str, source: str, now: datetime) -> int:
    """Cancel the buyer's scheduled requests, and those queued but cancelled in the outbox before they left
    (call after ``guard.cancel_unsolicited``); returns how many."""
    reason = f"buyer opted out ({source})"
    return store.cancel_scheduled_of_buyer(conn, account, alias, reason, now) + store.cancel_unsent_requests(
        conn, account, alias=alias, reason=f"cancelled before it was sent: {reason}", now=now)


def outbox_cancelled(conn: Connection, account: str, message_id: str, why: str, now: datetime) -> None:
    """The outbox cancelled a request's mail at send time (the buyer opted out meanwhile): say so on the request."""
    store.cancel_unsent_requests(conn, account, message_id=message_id, reason=f"cancelled at send time: {why}",
                                 now=now)


def notice_answers_request(conn: Connection, account: str, original_message_id: str | None,
                           order_id: str | None, now: datetime) -> store.Request | None:
    """The sent request an opt-out notice answers (by our Message-ID, else by its order), marked
    "not delivered: buyer opted out"; None when it answers no request of ours."""
    request = store.request_of_message(conn, account, original_message_id) if original_message_id else None
    answers_other_mail = request is None and original_message_id is not None and \
        store.outbox_by_message_id(conn, account, original_message_id) is not None
    if request is None and order_id and not answers_other_mail:
        # Amazon's notices quote the order, seldom our Message-ID: the order's request it is.
        request = store.request_of_order(conn, account, order_id)
    if request is None or request.state != "sent":
        return None
    store.mark_not_delivered(conn, request.id, store.NOT_DELIVERED_OPTED_OUT, now)
    return request


def order_buyer(conn: Connection, account: str, order_id: str) -> str | None:
    """The buyer alias the orders table knows for ``order_id``."""
    record = store.order_record(conn, account, order_id)
    return record.facts.buyer_alias if record else None
