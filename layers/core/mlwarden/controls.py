"""Several Security Hub controls checked on one resource, said as one outcome.

A check that answers several controls on the same resource (a key: KMS.3, KMS.4, KMS.5; a bucket: S3.5, S3.6,
S3.17) collects what each found and what was fixed in `Findings`, then says it once: one alert per resource
with every failed control named on it, its severity the highest found. A fix that did not take makes the
outcome `failed` (raised by the pipeline, so the event is retried); a fix left undone because of an exemption
makes it `exempt`; a fix not made in dry run makes it `would-remediate`; only flags make it `flagged`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlwarden.errors import AwsCallFailed
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden.rules.policy_analysis import rank


@dataclass
class Findings:
    """What the controls found on one resource, and what was done about it."""

    severity: Severity = Severity.INFORMATIONAL
    problems: list[str] = field(default_factory=list)
    findings: set[str] = field(default_factory=set)
    controls: set[str] = field(default_factory=set)
    actions: list[str] = field(default_factory=list)
    # What a fix changes (or in dry run would change): before and after, by setting.
    previous: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)
    undo: list[str] = field(default_factory=list)
    failure: AwsCallFailed | None = None
    unverified: str | None = None

    def found(self, control: str, finding: str, severity: Severity, what: str) -> None:
        self.problems.append(what)
        self.findings.add(finding)
        self.controls.add(control)
        if rank(severity) > rank(self.severity):
            self.severity = severity

    def fixable(self, setting: str, before: Any, after: Any) -> None:
        """A finding a fix would change: recorded as previous and new state, made or not."""
        self.previous[setting] = before
        self.new[setting] = after

    def fixed(self, action: str, undo: str) -> None:
        self.actions.append(action)
        self.undo.append(undo)

    @property
    def broken(self) -> bool:
        """A fix was attempted and failed, or does not read back."""
        return self.failure is not None or self.unverified is not None

    def outcome(
        self,
        check: str,
        trigger: Trigger,
        resource: str,
        details: dict[str, Any],
        *,
        compliant: str,
        exempt_hint: str,
        exemption: str | None,
    ) -> Outcome:
        """The one outcome for the resource. `exemption`: the reason it is exempt, None when it is not."""
        common: dict[str, Any] = {
            "check": check,
            "trigger": trigger,
            "resource": resource,
            "details": details,
            "findings": tuple(sorted(self.findings)),
            "controls": tuple(sorted(self.controls)),
            "exempt_hint": exempt_hint,
        }
        if not self.problems:
            return Outcome(outcome=OutcomeKind.COMPLIANT, severity=Severity.INFORMATIONAL, reason=compliant, **common)
        what = "; ".join(self.problems)
        states: dict[str, Any] = {"previous_state": self.previous or None, "new_state": self.new or None}
        if self.broken:
            err = self.failure
            if err is not None:
                details["failed_action"] = err.action
            why = err.explanation if err is not None else self.unverified
            return Outcome(
                outcome=OutcomeKind.FAILED,
                severity=max(self.severity, Severity.HIGH, key=rank),
                reason=f"{what}; the fix did not take: {why}",
                actions=tuple(self.actions),
                undo="; ".join(self.undo) or None,
                error_code=err.code if err is not None else "VerificationFailed",
                cause=err,
                **states,
                **common,
            )
        if self.actions:
            return Outcome(
                outcome=OutcomeKind.REMEDIATED,
                severity=self.severity,
                reason=f"{what}; fixed and verified: {', '.join(self.actions)}",
                actions=tuple(self.actions),
                undo="; ".join(self.undo),
                **states,
                **common,
            )
        if self.new and exemption is not None:
            return Outcome(
                outcome=OutcomeKind.EXEMPT, severity=self.severity, reason=f"{what}; left as is: {exemption}", **common
            )
        if self.new:
            return Outcome(
                outcome=OutcomeKind.WOULD_REMEDIATE,
                severity=self.severity,
                reason=f"{what}; dry run: nothing changed",
                **states,
                **common,
            )
        return Outcome(outcome=OutcomeKind.FLAGGED, severity=self.severity, reason=what, **common)
