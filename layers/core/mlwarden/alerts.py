"""SNS alerts: readable by a person in an email, filterable by a machine.

Every outcome worth a human's attention (all but `compliant` and `ignored`)
becomes one message: a subject under SNS's 100-character limit, a plain-text body
(what, where, who, what was done, how to undo, how to exempt), the full outcome as
JSON, and message attributes for SNS filter policies. Alerts carry resource
names, types and counts, never sensitive values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed
from mlwarden.outcomes import Outcome, OutcomeKind

SUBJECT_LIMIT = 99  # SNS allows fewer than 100 characters
_SUBJECT_UNSAFE = re.compile(r"[^\x20-\x7e]")

_HEADLINE = {
    OutcomeKind.REMEDIATED: "fixed",
    OutcomeKind.WOULD_REMEDIATE: "would fix (dry run)",
    OutcomeKind.FLAGGED: "flagged",
    OutcomeKind.EXEMPT: "exempt, left as is",
    OutcomeKind.FAILED: "FAILED to fix",
    OutcomeKind.COMPLIANT: "compliant",
    OutcomeKind.IGNORED: "ignored",
}

# Someone keeps re-opening the resource (flapguard): its own subject, and the message attribute flapping=true.
_FLAPPING_HEADLINE = "FLAPPING (re-opened again and again)"


@dataclass(frozen=True)
class Alert:
    """One SNS message: subject, human body and the attributes subscribers filter on."""

    subject: str
    body: str
    attributes: dict[str, dict[str, str]]


def headline(outcome: Outcome) -> str:
    """What happened, in a few words; a check that only flags never says it failed to fix."""
    if outcome.outcome is OutcomeKind.FAILED:
        return f"FAILED to {outcome.details.get('failed_to') or 'fix'}"
    if outcome.flapping:
        return _FLAPPING_HEADLINE
    return _HEADLINE[outcome.outcome]


def subject_for(outcome: Outcome) -> str:
    resource = outcome.resource or "unknown resource"
    short = resource.split(":::", 1)[-1] if resource.startswith("arn:") else resource
    if short.startswith("arn:"):
        # Regional ARNs (arn:aws:sagemaker:REGION:ACCOUNT:training-job/NAME): the type and name say enough.
        short = short.rsplit(":", 1)[-1]
    text = f"[ML Warden] {outcome.severity.value} {headline(outcome)}: {outcome.check} {short}"
    text = _SUBJECT_UNSAFE.sub("?", text)
    return text if len(text) <= SUBJECT_LIMIT else text[: SUBJECT_LIMIT - 3] + "..."


def _state_line(state: dict[str, Any] | None) -> str:
    if not state:
        return "(none recorded)"
    return ", ".join(f"{key}={'none' if value is None else json.dumps(value)}" for key, value in state.items())


def render(outcome: Outcome) -> Alert:
    trigger = outcome.trigger
    who = trigger.actor or f"{trigger.kind} ({trigger.source})"
    lines = [
        f"ML Warden {outcome.check}: {headline(outcome)} ({outcome.severity.value})",
        "",
        f"What:      {outcome.reason}",
        f"Where:     {outcome.resource or 'unknown'} (account {trigger.account or 'unknown'}, "
        f"region {trigger.region or 'unknown'})",
        f"Who:       {who}, via {trigger.name} at {trigger.time or 'unknown time'} (event {trigger.event_id})",
        f"Done:      {', '.join(outcome.actions) if outcome.actions else 'no change made'}",
    ]
    if outcome.outcome is OutcomeKind.WOULD_REMEDIATE and outcome.new_state:
        lines.append(f"Would set: {_state_line(outcome.new_state)}")
    elif outcome.new_state:
        lines.append(f"Now:       {_state_line(outcome.new_state)}")
    if outcome.previous_state is not None:
        lines.append(f"Before:    {_state_line(outcome.previous_state)}")
    if outcome.undo:
        lines.append(f"Undo:      {outcome.undo}")
    if outcome.details.get("next_step"):
        lines.append(f"To do:     {outcome.details['next_step']}")
    if outcome.exempt_hint:
        lines.append(f"Exempt:    {outcome.exempt_hint}")
    lines += ["", "Outcome (JSON):", json.dumps(outcome.as_dict(), indent=2, sort_keys=True, default=str)]

    def attribute(value: str | None) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value or "unknown"}

    attributes = {
        "severity": attribute(outcome.severity.value),
        "check": attribute(outcome.check),
        "outcome": attribute(outcome.outcome.value),
        "account": attribute(trigger.account),
        "region": attribute(trigger.region),
    }
    if outcome.flapping:
        attributes["flapping"] = attribute("true")
    return Alert(subject=subject_for(outcome), body="\n".join(lines), attributes=attributes)


def publish(outcome: Outcome, topic_arn: str) -> str:
    """Publish the outcome's alert; returns the SNS message id."""
    alert = render(outcome.with_alerted())
    region = topic_arn.split(":")[3]
    try:
        response = clients.client("sns", region).publish(
            TopicArn=topic_arn,
            Subject=alert.subject,
            Message=alert.body,
            MessageAttributes=alert.attributes,
        )
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("sns:Publish", err) from err
    return str(response["MessageId"])
