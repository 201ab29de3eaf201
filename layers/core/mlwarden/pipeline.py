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
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, FindingsNotSent, RemediationFailed
from mlwarden.events import (
    ApiCall,
    Event,
    SecurityHubFinding,
    Unrecognised,
    parse_event,
    parse_security_hub_finding,
    partition_of,
)
from mlwarden.exemptions import ROUTED_FOR_THE_EXEMPT_TAG, report_tag_change, tag_set_by
from mlwarden.loopguard import is_own_change
from mlwarden.observability import logger, metrics, tracer
from mlwarden.outcome_store import Decided, EventIdReused, EventInProgress, OutcomeStore, payload_hash
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored
from mlwarden.settings import Settings

if TYPE_CHECKING:
    from mlwarden.checks import CheckUnit

# What a function can be handed: the checks' events, and Security Hub findings (routed by control).
AnyEvent = Event | SecurityHubFinding

Check = Callable[[Event, Settings], Outcome]

LOOP_GUARD = "change made by ML Warden's own role (loop guard): the resource is as ML Warden sets it"
OWN_ROLE_LEFT_OPEN = "own-role-change-left-open"
EVENT_ID_REUSED = "event-id-reused-with-different-payload"


def run_check(name: str, check: Check, raw_event: Any, settings: Settings, lambda_context: Any = None) -> Outcome:
    finding = parse_security_hub_finding(raw_event)
    event: Event | SecurityHubFinding
    if finding is not None:
        event = finding

        def evaluate() -> Outcome:
            return decide_security_hub_finding(name, finding, settings)

    else:
        event = parse_event(raw_event)
        reporting = _reporting_exempt_tags(name, check)

        def evaluate() -> Outcome:
            return reporting(event, settings)

    screened = _screen(name, event)
    if screened is not None:
        return _finish(name, Decided(screened, first_delivery=True), settings, None)
    store = _store_for(event, raw_event, settings, lambda_context)

    def decide(fix_id: str) -> Callable[[], Outcome]:
        return lambda: _guarded(
            name, event, _in_the_events_account(name, evaluate, event, settings, lambda_context), settings, fix_id
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
    # The sweep sends Security Hub findings in batches (sweep.py), not one call per resource.
    return _finish(unit.name, Decided(outcome, first_delivery=True), settings, None, send_findings=False)


def decide_security_hub_finding(name: str, finding: SecurityHubFinding, settings: Settings) -> Outcome:
    """A Security Hub finding for a control this check owns: the resource it names, evaluated on live state."""
    target = security_hub_target(name, finding)
    if isinstance(target, str):
        return ignored(name, finding, target)
    from mlwarden.checks import load  # noqa: PLC0415 - only for Security Hub events

    return load(name).evaluate(target, Trigger.of(finding), settings)


def security_hub_target(name: str, finding: SecurityHubFinding) -> Any:
    """The target a Security Hub finding names for this check, or why it names none.

    Only ACTIVE, FAILED findings in workflow NEW count (the EventBridge rule asks for exactly those; this says why
    anything else is ignored). A finding a person SUPPRESSED in Security Hub is not an exemption: only the
    registry exempts, and the resource is still evaluated when anything else names it. ML Warden's own findings
    never come back to it.
    """
    from mlwarden.checks import load  # noqa: PLC0415 - only for Security Hub events
    from mlwarden.securityhub import is_own_finding  # noqa: PLC0415

    if finding.findings_in_event != 1:
        return f"{finding.findings_in_event} findings in one event: Security Hub sends one"
    own = {"Id": finding.finding_id, "ProductFields": finding.product_fields}
    if is_own_finding(own) or (finding.generator or "").startswith("mlwarden/"):
        return "ML Warden's own Security Hub finding"
    if (finding.compliance, finding.workflow, finding.record_state) != ("FAILED", "NEW", "ACTIVE"):
        state = f"{finding.compliance}/{finding.workflow}/{finding.record_state}"
        return f"Security Hub finding is {state}: only FAILED/NEW/ACTIVE findings are acted on"
    try:
        unit = load(name)
    except KeyError as err:
        return f"{name} owns no Security Hub control ({err})"
    if finding.control is None or finding.control not in unit.controls:
        return f"Security Hub control {finding.control} is not one {name} owns"
    if unit.target_of_resource is None or not finding.resources:
        return f"Security Hub finding for {finding.control} names no resource {name} reads"
    kind, resource_id, region = finding.resources[0]
    return unit.target_of_resource(kind, resource_id, region or finding.aws_region)


def _in_the_events_account(
    name: str, evaluate: Callable[[], Outcome], event: AnyEvent, settings: Settings, lambda_context: Any = None
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
            return evaluate()
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


def _finish(
    name: str, decided: Decided, settings: Settings, store: OutcomeStore | None, *, send_findings: bool = True
) -> Outcome:
    outcome = decided.outcome
    if decided.first_delivery:
        _record(outcome)
    else:
        outcome = replace(outcome, redelivered=True)
        _record_redelivery(outcome)
    if outcome.needs_alert:
        outcome = _alert(outcome, settings, store, name)
    if send_findings and settings.security_hub_findings:
        send_security_hub_findings([outcome], settings)
    if outcome.outcome is OutcomeKind.FAILED:
        raise RemediationFailed(outcome) from outcome.cause
    return outcome


def send_security_hub_findings(outcomes: list[Outcome], settings: Settings) -> None:
    """The outcomes as Security Hub findings. Whatever Security Hub refuses is logged, counted and raised
    (FindingsNotSent) so that Lambda retries: a retry decides nothing again and imports the same finding ids.

    Security Hub takes a finding into an account's default product only from that account itself. In
    organization mode, outcomes about member accounts are therefore not imported by the hub: they are
    logged and counted (FindingsForMemberAccounts) and reach people through the alert (see README).
    """
    from mlwarden import securityhub  # noqa: PLC0415 - only with SECURITY_HUB_FINDINGS=true

    if settings.member_role_name is not None:
        home = clients.home_account()
        members = [o for o in outcomes if o.trigger.account not in (None, home)]
        if members:
            logger.info("findings about member accounts are not imported by the hub", count=len(members))
            metrics.add_metric(name="FindingsForMemberAccounts", unit=MetricUnit.Count, value=len(members))
            outcomes = [o for o in outcomes if o.trigger.account in (None, home)]

    try:
        refused = [f"{item.id}: {item.error}" for item in securityhub.publish(outcomes)]
    except AwsCallFailed as err:
        refused = [f"{err.action}: {err.code}"]
        cause: Exception | None = err
    else:
        cause = None
    if not refused:
        return
    logger.error("security hub findings not sent", checks=sorted({o.check for o in outcomes}), not_sent=refused)
    metrics.add_metric(name="FindingsNotSent", unit=MetricUnit.Count, value=len(refused))
    raise FindingsNotSent(outcomes[0], refused) from cause


def _guarded(name: str, event: AnyEvent | None, outcome: Outcome, settings: Settings, fix_id: str) -> Outcome:
    """The loop guard and the flap guard, after the check decided on live state (and inside the stored decision)."""
    outcome = _loop_guard(name, event, outcome, settings)
    if outcome.outcome is OutcomeKind.REMEDIATED:
        from mlwarden import flapguard  # noqa: PLC0415 - only a fix needs it: not imported at cold start

        outcome = flapguard.note_fix(settings, name, outcome, fix_id)
    return outcome


def _loop_guard(name: str, event: AnyEvent | None, outcome: Outcome, settings: Settings) -> Outcome:
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


def _store_for(
    event: Event | SecurityHubFinding, raw_event: Any, settings: Settings, lambda_context: Any
) -> OutcomeStore | None:
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


def _screen(name: str, event: Event | SecurityHubFinding) -> Outcome | None:
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
