"""The life of one event in one check: parse, screen, decide and act once, guard, record, alert once.

Handlers call `run_check` and nothing else, so every check gets the same
guarantees: unreadable and failed-call events end `ignored`, every outcome is
logged and counted, alerts go out for the outcomes that need a human, and a
`failed` outcome raises so that EventBridge's retries and the dead-letter queue
keep the event.

After the check decided on live state, two guards may change what is said, never what is done:

- the loop guard: an event caused by ML Warden's own role is `ignored` only when the check found the
  resource as ML Warden sets it (compliant). If the resource is open, the call is treated as hostile:
  fixed like any other, and alerted CRITICAL ("change made by ML Warden's own role left ... open").
- the flap guard (flapguard): a resource fixed again and again alerts once as flapping, then in digests.

With an outcome table (OUTCOME_TABLE), deciding and alerting happen once per event and payload (see
outcome_store): a redelivered event gets its stored outcome back, a retry after a lost alert sends only
the alert, and a known event id with a different payload is decided as a new event and alerted as
suspicious. The same alert about the same resource and findings goes out once per window (alert_dedup).

Organization mode (MEMBER_ROLE_NAME): the check acts in the account and region the event's envelope names
(EventBridge sets it; nobody can put an aws.* event for another account), through that account's member
role; a role that cannot be assumed is a `failed` outcome, alerted and raised like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from mlwarden import alert_dedup, alerts, clients, organization
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, RemediationFailed
from mlwarden.events import ApiCall, Event, Unrecognised, parse_event, partition_of
from mlwarden.exemptions import ROUTED_FOR_THE_EXEMPT_TAG, report_tag_change, tag_set_by
from mlwarden.loopguard import is_own_change
from mlwarden.observability import logger, metrics, tracer
from mlwarden.outcome_store import Decided, EventIdReused, EventInProgress, OutcomeStore, payload_hash
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored
from mlwarden.settings import Settings

if TYPE_CHECKING:
    from mlwarden.checks import CheckUnit

Check = Callable[[Event, Settings], Outcome]

LOOP_GUARD = "change made by ML Warden's own role (loop guard): the resource is as ML Warden sets it"
OWN_ROLE_LEFT_OPEN = "own-role-change-left-open"
EVENT_ID_REUSED = "event-id-reused-with-different-payload"


def run_check(name: str, check: Check, raw_event: Any, settings: Settings, lambda_context: Any = None) -> Outcome:
    event = parse_event(raw_event)
    check = _reporting_exempt_tags(name, check)
    screened = _screen(name, event)
    if screened is not None:
        return _finish(name, Decided(screened, first_delivery=True), settings, None)
    store = _store_for(event, raw_event, settings, lambda_context)

    def decide(fix_id: str) -> Callable[[], Outcome]:
        return lambda: _guarded(
            name, event, _in_the_events_account(name, check, event, settings, lambda_context), settings, fix_id
        )

    if store is None:
        envelope = getattr(event, "envelope", None)
        decided = Decided(decide(envelope.id if envelope is not None else "unknown")(), first_delivery=True)
        return _finish(name, decided, settings, None)
    reused = False
    try:
        try:
            decided = store.decide_once(name, decide(store.fix_id))
        except EventIdReused:
            reused = True
            logger.warning(
                "event id reused with a different payload: decided as a new event", check=name, event_id=store.event_id
            )
            metrics.add_metric(name="EventIdReused", unit=MetricUnit.Count, value=1)
            store = store.for_this_payload()
            decided = store.decide_once(name, decide(store.fix_id))
    except EventInProgress:
        # A concurrent delivery of this very event is deciding; raising makes Lambda retry this one later,
        # when it finds that delivery's stored outcome.
        logger.warning(
            "event in progress in another invocation, raised for a retry", check=name, event_id=store.event_id
        )
        metrics.add_metric(name="InProgressElsewhere", unit=MetricUnit.Count, value=1)
        raise
    if reused:
        decided = replace(
            decided, outcome=replace(decided.outcome, details={**decided.outcome.details, EVENT_ID_REUSED: True})
        )
        # Once per payload (alert_once), and again on a retry if sending it failed before.
        _alert(_reused_id_alert(name, decided.outcome), settings, store, name, purpose="reused-id")
    return _finish(name, decided, settings, store)


def run_target(unit: CheckUnit, target: Any, trigger: Trigger, settings: Settings) -> Outcome:
    """The sweep's way in: one listed resource gets the event path's decision, guards, record and alert.

    There is no event, so no idempotency record and no loop guard (no actor); the flap guard and the
    per-resource alert dedup apply as they do to events, so a sweep over unchanged resources alerts nothing
    new. A `failed` outcome raises RemediationFailed, as on the event path; the sweep reports it and goes on.
    """
    outcome = unit.evaluate(target, trigger, settings)
    outcome = _guarded(unit.name, None, outcome, settings, f"{trigger.event_id}#{outcome.resource or ''}")
    return _finish(unit.name, Decided(outcome, first_delivery=True), settings, None)


def _in_the_events_account(
    name: str, check: Check, event: Event, settings: Settings, lambda_context: Any = None
) -> Outcome:
    """The check, with resource clients in the account and region the event came from (organization mode)."""
    envelope = getattr(event, "envelope", None)
    account = envelope.account if envelope is not None else None
    region = envelope.region if envelope is not None else None
    event_id = envelope.id if envelope is not None else ""
    try:
        with clients.acting_in(
            account,
            region,
            member_role_name=settings.member_role_name,
            session=clients.session_name(name, event_id),
            partition=partition_of(region),
            lambda_context=lambda_context,
        ):
            return check(event, settings)
    except clients.MemberRoleUnavailable as err:
        return call_failed(name, Trigger.of(event), err.role_arn, "could not act in the event's account", err)


def _reporting_exempt_tags(name: str, check: Check) -> Check:
    """A call that sets the exempt tag is decided like any other, and its outcome also reports the tag."""

    def decide(event: Event, settings: Settings) -> Outcome:
        change = tag_set_by(event, settings)
        if change is None and isinstance(event, ApiCall) and event.event_name in ROUTED_FOR_THE_EXEMPT_TAG:
            return ignored(name, event, f"{event.event_name} does not set the exempt tag {settings.exempt_tag_key}")
        outcome = check(event, settings)
        return outcome if change is None else report_tag_change(outcome, change, settings)

    return decide


def _finish(name: str, decided: Decided, settings: Settings, store: OutcomeStore | None) -> Outcome:
    outcome = decided.outcome
    if decided.first_delivery:
        _record(outcome)
    else:
        outcome = replace(outcome, redelivered=True)
        _record_redelivery(outcome)
    if outcome.needs_alert:
        outcome = _alert(outcome, settings, store, name)
    if outcome.outcome is OutcomeKind.FAILED:
        raise RemediationFailed(outcome) from outcome.cause
    return outcome


def _guarded(name: str, event: Event | None, outcome: Outcome, settings: Settings, fix_id: str) -> Outcome:
    """The loop guard and the flap guard, after the check decided on live state (and inside the stored decision)."""
    outcome = _loop_guard(name, event, outcome, settings)
    if outcome.outcome is OutcomeKind.REMEDIATED:
        from mlwarden import flapguard  # noqa: PLC0415 - only a fix needs it: not imported at cold start

        outcome = flapguard.note_fix(settings, name, outcome, fix_id)
    return outcome


def _loop_guard(name: str, event: Event | None, outcome: Outcome, settings: Settings) -> Outcome:
    if (
        event is None
        or not isinstance(event, ApiCall)
        or not is_own_change(event, settings.remediator_role_arn, settings.member_role_name)
    ):
        return outcome
    if outcome.outcome is OutcomeKind.COMPLIANT:
        metrics.add_metric(name="LoopGuardIgnored", unit=MetricUnit.Count, value=1)
        return replace(ignored(name, event, LOOP_GUARD), resource=outcome.resource)
    if outcome.outcome is OutcomeKind.IGNORED:
        return outcome
    # Identity alone proves nothing: whoever can run code as this role would otherwise open resources unseen.
    metrics.add_metric(name="OwnRoleLeftOpen", unit=MetricUnit.Count, value=1)
    return replace(
        outcome,
        severity=Severity.CRITICAL,
        reason=f"change made by ML Warden's own role left {outcome.resource or 'a resource'} open: {outcome.reason}",
        details={**outcome.details, "own_role_change": event.actor.arn or event.actor.role_arn},
        findings=tuple(sorted({*outcome.findings, OWN_ROLE_LEFT_OPEN})),
    )


def _reused_id_alert(name: str, outcome: Outcome) -> Outcome:
    return Outcome(
        check=name,
        outcome=OutcomeKind.FLAGGED,
        severity=Severity.HIGH,
        reason=(
            f"event id {outcome.trigger.event_id} reused with a different payload: a redelivery carries the same "
            "payload, so one of the events with this id was crafted or altered. This one was decided as a new event "
            f"({outcome.outcome.value}). Find out who can put events on this function's rules or invoke it"
        ),
        trigger=outcome.trigger,
        resource=outcome.resource,
        findings=(EVENT_ID_REUSED,),
    )


def _store_for(event: Event, raw_event: Any, settings: Settings, lambda_context: Any) -> OutcomeStore | None:
    envelope = getattr(event, "envelope", None)
    event_id = envelope.id if envelope is not None else None
    if settings.outcome_table is None or not event_id or event_id == "unknown":
        return None
    payload = payload_hash(raw_event)
    if payload is None:
        return None
    return OutcomeStore(settings.outcome_table, event_id, lambda_context, payload)


def _alert(
    outcome: Outcome, settings: Settings, store: OutcomeStore | None, name: str, purpose: str | None = None
) -> Outcome:
    suppressed: list[str] = []
    if settings.organization_id is not None:
        outcome = replace(outcome, trigger=organization.labelled(outcome.trigger))

    def publish() -> str:
        claim = alert_dedup.claim(settings, name, outcome)
        if claim is None:
            suppressed.append(f"the same alert went out within {settings.alert_dedup_hours} hours")
            return "suppressed: same alert within the dedup window"
        try:
            return alerts.publish(outcome, settings.alert_topic_arn)
        except AwsCallFailed:
            claim.release()
            raise

    try:
        if store is None:
            publish()
        elif not store.alert_once(outcome, publish, purpose):
            logger.info(
                "alert already sent for this event",
                check=outcome.check,
                outcome=outcome.outcome.value,
                event_id=outcome.trigger.event_id,
            )
    except AwsCallFailed as err:
        # The fix (if any) stands and is logged with its previous state. Raising lets Lambda retry; with an
        # outcome table the retry finds this outcome stored and sends only the alert.
        logger.error(
            "alert not delivered",
            check=outcome.check,
            outcome=outcome.outcome.value,
            severity=outcome.severity.value,
            resource=outcome.resource,
            event_id=outcome.trigger.event_id,
            error=err.code,
        )
        metrics.add_metric(name="AlertFailed", unit=MetricUnit.Count, value=1)
        raise AlertDeliveryFailed(outcome) from err
    if suppressed:
        return replace(outcome, alert_suppressed=suppressed[0])
    return outcome.with_alerted()


def _screen(name: str, event: Event) -> Outcome | None:
    """The events no check needs to see: unreadable ones and failed calls (nothing changed)."""
    if isinstance(event, Unrecognised):
        return ignored(name, event, event.reason)
    if isinstance(event, ApiCall) and event.error_code:
        return ignored(name, event, f"{event.event_name} failed with {event.error_code}: nothing changed")
    return None


def _record_redelivery(outcome: Outcome) -> None:
    metrics.add_dimension(name="check", value=outcome.check)
    metrics.add_metric(name="Redelivered", unit=MetricUnit.Count, value=1)
    logger.info(
        "event delivered again: outcome already recorded, nothing done again",
        check=outcome.check,
        outcome=outcome.outcome.value,
        resource=outcome.resource,
        event_id=outcome.trigger.event_id,
    )


def _record(outcome: Outcome) -> None:
    tracer.put_annotation("outcome", outcome.outcome.value)
    tracer.put_annotation("check", outcome.check)
    metrics.add_dimension(name="check", value=outcome.check)
    metrics.add_metric(name=outcome.outcome.metric_name, unit=MetricUnit.Count, value=1)
    fields: Mapping[str, Any] = {
        "check": outcome.check,
        "outcome": outcome.outcome.value,
        "severity": outcome.severity.value,
        "resource": outcome.resource,
        "actions": list(outcome.actions),
        "reason": outcome.reason,
        "event_id": outcome.trigger.event_id,
        "previous_state": outcome.previous_state,
        "error_code": outcome.error_code,
    }
    if outcome.outcome is OutcomeKind.FAILED:
        logger.error("check failed", **fields)
    else:
        logger.info("check decided", **fields)
