"""One outcome per (event, check): what was decided, done and how to undo it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from mlwarden.errors import AwsCallFailed
from mlwarden.events import ApiCall, ComplianceChange, Event, MacieFinding, SecurityHubFinding, StateChange

SWEEP_SOURCE = "mlwarden.sweep"


class OutcomeKind(StrEnum):
    REMEDIATED = "remediated"
    WOULD_REMEDIATE = "would-remediate"
    FLAGGED = "flagged"
    COMPLIANT = "compliant"
    EXEMPT = "exempt"
    IGNORED = "ignored"
    FAILED = "failed"

    @property
    def metric_name(self) -> str:
        return "".join(part.capitalize() for part in self.value.split("-"))


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFORMATIONAL = "INFORMATIONAL"


@dataclass(frozen=True)
class Trigger:
    """Where the event came from and who caused it, for the alert and the log."""

    event_id: str
    source: str
    kind: str
    name: str
    actor: str | None
    time: str | None
    account: str | None
    region: str | None
    # Organization mode: the account's name and organizational unit, for the alert (organization.labelled).
    account_name: str | None = None
    organizational_unit: str | None = None

    @classmethod
    def sweep(cls, sweep_id: str, account: str, region: str, time: str | None = None) -> Trigger:
        """A resource named by an inventory of the account (mlwarden.sweep), not by an event."""
        return cls(
            event_id=sweep_id,
            source=SWEEP_SOURCE,
            kind="sweep",
            name="sweep",
            actor=None,
            time=time,
            account=account,
            region=region,
        )

    @property
    def is_sweep(self) -> bool:
        return self.kind == "sweep"

    @classmethod
    def of(cls, event: Event | SecurityHubFinding) -> Trigger:
        if isinstance(event, ApiCall):
            return cls(
                event_id=event.envelope.id,
                source=event.envelope.source,
                kind="cloudtrail",
                name=event.event_name,
                actor=event.actor.display,
                time=event.event_time or event.envelope.time,
                account=event.recipient_account,
                region=event.aws_region,
            )
        if isinstance(event, ComplianceChange | MacieFinding):
            if isinstance(event, ComplianceChange):
                kind, name = "config", f"{event.rule_name} {event.compliance}"
            else:
                kind, name = "macie", event.finding_type
            return cls(
                event_id=event.envelope.id,
                source=event.envelope.source,
                kind=kind,
                name=name,
                actor=None,
                time=event.envelope.time,
                account=event.account,
                region=event.aws_region,
            )
        if isinstance(event, SecurityHubFinding):
            return cls(
                event_id=event.envelope.id,
                source=event.envelope.source,
                kind="securityhub",
                name=f"{event.control or 'finding'} {event.compliance or ''}".strip(),
                actor=None,
                time=event.envelope.time,
                account=event.account,
                region=event.aws_region,
            )
        if isinstance(event, StateChange):
            return cls(
                event_id=event.envelope.id,
                source=event.envelope.source,
                kind="state-change",
                name=event.envelope.detail_type,
                actor=None,
                time=event.envelope.time,
                account=event.account,
                region=event.aws_region,
            )
        envelope = event.envelope
        return cls(
            event_id=envelope.id if envelope else "unknown",
            source=envelope.source if envelope else "unknown",
            kind="unrecognised",
            name=envelope.detail_type if envelope else "unknown",
            actor=None,
            time=envelope.time if envelope else None,
            account=envelope.account if envelope else None,
            region=envelope.region if envelope else None,
        )


@dataclass(frozen=True)
class Outcome:
    """What a check decided and did about one event: the record, the log line and the alert."""

    check: str
    outcome: OutcomeKind
    severity: Severity
    reason: str
    trigger: Trigger
    resource: str | None = None
    actions: tuple[str, ...] = ()
    # The resource as it was before ML Warden changed it (None when nothing changed).
    previous_state: dict[str, Any] | None = None
    # What the fix set, or in dry-run what it would set.
    new_state: dict[str, Any] | None = None
    undo: str | None = None
    exempt_hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    alerted: bool = False
    # Why this outcome sends no alert although its kind would (say, the one alert for it was already sent).
    alert_suppressed: str | None = None
    # True when an earlier delivery of the same event decided this outcome (and made any change).
    redelivered: bool = False
    # The sorted ids of the rules or findings that failed: with check, resource, kind and severity, what makes
    # two alerts "the same" (alert_dedup).
    findings: tuple[str, ...] = ()
    # True when someone keeps re-opening the resource: the alert is the flapping alert or its digest (flapguard).
    flapping: bool = False
    # The AWS error behind a `failed` outcome; re-raised from by the handler.
    cause: BaseException | None = field(default=None, compare=False, repr=False)
    # What a person should do now, in the check's own words (the alert's "What to do now" builds on it).
    next_step: str | None = None
    # The AWS Security Hub control ids this outcome is about (e.g. "S3.8", "SageMaker.5"), sorted.
    controls: tuple[str, ...] = ()

    @property
    def needs_alert(self) -> bool:
        return self.outcome not in (OutcomeKind.COMPLIANT, OutcomeKind.IGNORED) and self.alert_suppressed is None

    def with_alerted(self) -> Outcome:
        return replace(self, alerted=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "outcome": self.outcome.value,
            "severity": self.severity.value,
            "resource": self.resource,
            "reason": self.reason,
            "actions": list(self.actions),
            "previous_state": self.previous_state,
            "new_state": self.new_state,
            "undo": self.undo,
            "exempt_hint": self.exempt_hint,
            "details": self.details,
            "error_code": self.error_code,
            "alerted": self.alerted,
            "alert_suppressed": self.alert_suppressed,
            "redelivered": self.redelivered,
            "findings": list(self.findings),
            "flapping": self.flapping,
            "next_step": self.next_step,
            "controls": list(self.controls),
            "event_id": self.trigger.event_id,
            "trigger": {
                "source": self.trigger.source,
                "kind": self.trigger.kind,
                "name": self.trigger.name,
                "actor": self.trigger.actor,
                "time": self.trigger.time,
                "account": self.trigger.account,
                "region": self.trigger.region,
                **_account_label(self.trigger),
            },
        }


def _account_label(trigger: Trigger) -> dict[str, str]:
    """The account's name and OU when organization mode knows them; nothing otherwise (single-account alerts)."""
    label = {"account_name": trigger.account_name, "organizational_unit": trigger.organizational_unit}
    return {key: value for key, value in label.items() if value}


def outcome_from_dict(data: Mapping[str, Any]) -> Outcome:
    """Rebuild an outcome from `Outcome.as_dict()`, as the outcome store keeps it; ValueError if it is not one."""
    try:
        trigger = data["trigger"]
        return Outcome(
            check=str(data["check"]),
            outcome=OutcomeKind(data["outcome"]),
            severity=Severity(data["severity"]),
            reason=str(data["reason"]),
            trigger=Trigger(
                event_id=str(data["event_id"]),
                source=str(trigger["source"]),
                kind=str(trigger["kind"]),
                name=str(trigger["name"]),
                actor=trigger.get("actor"),
                time=trigger.get("time"),
                account=trigger.get("account"),
                region=trigger.get("region"),
                account_name=trigger.get("account_name"),
                organizational_unit=trigger.get("organizational_unit"),
            ),
            resource=data.get("resource"),
            actions=tuple(data.get("actions") or ()),
            previous_state=data.get("previous_state"),
            new_state=data.get("new_state"),
            undo=data.get("undo"),
            exempt_hint=data.get("exempt_hint"),
            details=dict(data.get("details") or {}),
            error_code=data.get("error_code"),
            alerted=bool(data.get("alerted")),
            alert_suppressed=data.get("alert_suppressed"),
            findings=tuple(str(finding) for finding in data.get("findings") or ()),
            flapping=bool(data.get("flapping")),
            next_step=data.get("next_step"),
            controls=tuple(str(control) for control in data.get("controls") or ()),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a recorded outcome: {err!r}") from err


def ignored(check: str, event: Event | SecurityHubFinding, reason: str) -> Outcome:
    return ignored_at(check, Trigger.of(event), reason)


def ignored_at(check: str, trigger: Trigger, reason: str, resource: str | None = None) -> Outcome:
    return Outcome(
        check=check,
        outcome=OutcomeKind.IGNORED,
        severity=Severity.INFORMATIONAL,
        reason=reason,
        trigger=trigger,
        resource=resource,
    )


def call_failed(
    check: str,
    trigger: Trigger,
    resource: str | None,
    what: str,
    err: AwsCallFailed,
    *,
    details: dict[str, Any] | None = None,
) -> Outcome:
    """A check could not read or act because an AWS call failed: HIGH, alerted, and raised by run_check."""
    return Outcome(
        check=check,
        outcome=OutcomeKind.FAILED,
        severity=Severity.HIGH,
        reason=f"{what}: {err.explanation}",
        trigger=trigger,
        resource=resource,
        error_code=err.code,
        details={"failed_action": err.action, **(details or {})},
        cause=err,
    )
