"""The life of one event in one check: parse, guard, decide and act once, record, alert once.

Handlers call `run_check` and nothing else, so every check gets the same
guarantees: unreadable and failed-call events end `ignored`, our own changes are
not re-processed, every outcome is logged and counted, alerts go out for the
outcomes that need a human, and a `failed` outcome raises so that EventBridge's
retries and the dead-letter queue keep the event.

With an outcome table (OUTCOME_TABLE), deciding and alerting happen once per event
(see outcome_store): a redelivered event gets its stored outcome back, and a retry
after a lost alert sends only the alert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mlwarden import alerts
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, RemediationFailed
from mlwarden.events import ApiCall, Event, Unrecognised, parse_event
from mlwarden.exemptions import ROUTED_FOR_THE_EXEMPT_TAG, report_tag_change, tag_set_by
from mlwarden.loopguard import is_own_change
from mlwarden.observability import logger, metrics, tracer
from mlwarden.outcome_store import Decided, EventInProgress, OutcomeStore
from mlwarden.outcomes import Outcome, OutcomeKind, ignored
from mlwarden.settings import Settings

Check = Callable[[Event, Settings], Outcome]


def run_check(name: str, check: Check, raw_event: Any, settings: Settings, lambda_context: Any = None) -> Outcome:
    event = parse_event(raw_event)
    check = _reporting_exempt_tags(name, check)
    screened = _screen(name, event, settings)
    store = _store_for(event, settings, lambda_context) if screened is None else None
    if screened is not None:
        decided = Decided(screened, first_delivery=True)
    elif store is None:
        decided = Decided(check(event, settings), first_delivery=True)
    else:
        try:
            decided = store.decide_once(name, lambda: check(event, settings))
        except EventInProgress:
            # A concurrent delivery of this very event is deciding; raising makes Lambda retry this one later,
            # when it finds that delivery's stored outcome.
            logger.warning(
                "event in progress in another invocation, raised for a retry", check=name, event_id=store.event_id
            )
            metrics.add_metric(name="InProgressElsewhere", unit=MetricUnit.Count, value=1)
            raise
    outcome = decided.outcome
    if decided.first_delivery:
        _record(outcome)
    else:
        outcome = replace(outcome, redelivered=True)
        _record_redelivery(outcome)
    if outcome.needs_alert:
        outcome = _alert(outcome, settings, store)
    if outcome.outcome is OutcomeKind.FAILED:
        raise RemediationFailed(outcome) from outcome.cause
    return outcome


def _reporting_exempt_tags(name: str, check: Check) -> Check:
    """A call that sets the exempt tag is decided like any other, and its outcome also reports the tag."""

    def decide(event: Event, settings: Settings) -> Outcome:
        change = tag_set_by(event, settings)
        if change is None and isinstance(event, ApiCall) and event.event_name in ROUTED_FOR_THE_EXEMPT_TAG:
            return ignored(name, event, f"{event.event_name} does not set the exempt tag {settings.exempt_tag_key}")
        outcome = check(event, settings)
        return outcome if change is None else report_tag_change(outcome, change, settings)

    return decide


def _store_for(event: Event, settings: Settings, lambda_context: Any) -> OutcomeStore | None:
    envelope = getattr(event, "envelope", None)
    event_id = envelope.id if envelope is not None else None
    if settings.outcome_table is None or not event_id or event_id == "unknown":
        return None
    return OutcomeStore(settings.outcome_table, event_id, lambda_context)


def _alert(outcome: Outcome, settings: Settings, store: OutcomeStore | None) -> Outcome:
    def publish() -> str:
        return alerts.publish(outcome, settings.alert_topic_arn)

    try:
        if store is None:
            publish()
        elif not store.alert_once(outcome, publish):
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
    return outcome.with_alerted()


def _screen(name: str, event: Event, settings: Settings) -> Outcome | None:
    """The events no check needs to see: unreadable, failed calls, our own changes."""
    if isinstance(event, Unrecognised):
        return ignored(name, event, event.reason)
    if isinstance(event, ApiCall):
        if event.error_code:
            return ignored(name, event, f"{event.event_name} failed with {event.error_code}: nothing changed")
        if is_own_change(event, settings.remediator_role_arn):
            return ignored(name, event, "change made by ML Warden's own role (loop guard)")
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
