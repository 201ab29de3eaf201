"""The life of one event in one check: parse, guard, decide and act, record, alert.

Handlers call `run_check` and nothing else, so every check gets the same
guarantees: unreadable and failed-call events end `ignored`, our own changes are
not re-processed, every outcome is logged and counted, alerts go out for the
outcomes that need a human, and a `failed` outcome raises so that EventBridge's
retries and the dead-letter queue keep the event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from mlwarden import alerts
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, RemediationFailed
from mlwarden.events import ApiCall, Event, Unrecognised, parse_event
from mlwarden.loopguard import is_own_change
from mlwarden.observability import logger, metrics, tracer
from mlwarden.outcomes import Outcome, OutcomeKind, ignored
from mlwarden.settings import Settings

Check = Callable[[Event, Settings], Outcome]


def run_check(name: str, check: Check, raw_event: Any, settings: Settings) -> Outcome:
    event = parse_event(raw_event)
    outcome = _decide(name, check, event, settings)
    _record(outcome)
    if outcome.needs_alert:
        try:
            alerts.publish(outcome, settings.alert_topic_arn)
        except AwsCallFailed as err:
            # The fix (if any) stands and is logged above with its previous state. Raising lets Lambda
            # retry, but a retry finds the fix in place and decides `compliant`: until outcomes are
            # stored per event, this log line and the AlertFailed metric (alarmed) are the record.
            logger.error(
                "alert not delivered",
                check=name,
                outcome=outcome.outcome.value,
                severity=outcome.severity.value,
                resource=outcome.resource,
                event_id=outcome.trigger.event_id,
                error=err.code,
            )
            metrics.add_metric(name="AlertFailed", unit=MetricUnit.Count, value=1)
            raise AlertDeliveryFailed(outcome) from err
        outcome = outcome.with_alerted()
    if outcome.outcome is OutcomeKind.FAILED:
        raise RemediationFailed(outcome) from outcome.cause
    return outcome


def _decide(name: str, check: Check, event: Event, settings: Settings) -> Outcome:
    if isinstance(event, Unrecognised):
        return ignored(name, event, event.reason)
    if isinstance(event, ApiCall):
        if event.error_code:
            return ignored(name, event, f"{event.event_name} failed with {event.error_code}: nothing changed")
        if is_own_change(event, settings.remediator_role_arn):
            return ignored(name, event, "change made by ML Warden's own role (loop guard)")
    return check(event, settings)


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
