"""Typed views of the EventBridge events ML Warden receives.

Real events are messy: `requestParameters` may be null, failed calls carry
`errorCode`, S3 sends one-element lists where a scalar is expected and XML-born
keys such as `xmlns`. Parsing never raises: anything that is not one of the
shapes below becomes `Unrecognised` with the reason, which a check turns into an
`ignored` outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

CLOUDTRAIL_DETAIL_TYPE = "AWS API Call via CloudTrail"
CONFIG_COMPLIANCE_DETAIL_TYPE = "Config Rules Compliance Change"
MACIE_DETAIL_TYPE = "Macie Finding"
SAGEMAKER_SOURCE = "aws.sagemaker"
# SageMaker's own state-change events carry the resource's description (DescribeTrainingJob's shape).
SAGEMAKER_STATE_CHANGE_DETAIL_TYPES = frozenset({"SageMaker Training Job State Change"})

_ACCOUNT = re.compile(r"^\d{12}$")
_MAX_TEXT = 2048  # longer values are cut: they only ever end up in logs and alerts
# Real events nest about a dozen levels. EventBridge bounds an event's size (256 KB), not its depth, and
# the checks walk parts of an event recursively (SageMaker's request parameters, policy documents):
# containers deeper than this are cut, so no event can exhaust the stack, while what an event says about
# its resource at ordinary depth is still read (a deep branch never turns a check off).
MAX_EVENT_DEPTH = 64


@dataclass(frozen=True)
class Envelope:
    """The EventBridge envelope every event has: id, source, detail-type, account, region, time."""

    id: str
    source: str
    detail_type: str
    account: str | None
    region: str | None
    time: str | None


@dataclass(frozen=True)
class Actor:
    """Who made an API call, as CloudTrail's userIdentity tells it."""

    type: str
    arn: str | None
    account: str | None
    # For AssumedRole sessions: the role behind the session (sessionContext.sessionIssuer.arn).
    role_arn: str | None
    invoked_by: str | None

    @property
    def display(self) -> str:
        name = self.arn or self.invoked_by or "unknown principal"
        return f"{name} ({self.type})" if self.type else name


@dataclass(frozen=True)
class ApiCall:
    """A CloudTrail-recorded API call (detail-type "AWS API Call via CloudTrail")."""

    envelope: Envelope
    event_source: str
    event_name: str
    event_id: str | None
    event_time: str | None
    error_code: str | None
    request_parameters: Mapping[str, Any]
    actor: Actor
    recipient_account: str | None
    aws_region: str | None
    # What AWS answered (for example the ARN of a created resource); {} when null or absent.
    response_elements: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def parameter(self, name: str) -> str | None:
        """A request parameter as one string, tolerating S3's one-element lists."""
        return scalar(self.request_parameters.get(name))


@dataclass(frozen=True)
class ComplianceChange:
    """An AWS Config rule's compliance change for one resource."""

    envelope: Envelope
    rule_name: str
    resource_type: str
    resource_id: str
    compliance: str
    previous_compliance: str | None
    aws_region: str | None
    account: str | None


@dataclass(frozen=True)
class MacieFinding:
    """A Macie finding (policy or sensitive data) about a bucket or an object in it."""

    envelope: Envelope
    finding_id: str
    finding_type: str
    severity: str | None
    bucket: str | None
    object_key: str | None
    account: str | None
    aws_region: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class StateChange:
    """A service's own state-change event (SageMaker's "Training Job State Change")."""

    envelope: Envelope
    resources: tuple[str, ...]
    account: str | None
    aws_region: str | None
    # The resource's description as the service sent it: keys as in the service's Describe* answer.
    detail: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Unrecognised:
    """An event no parser could read, with the reason: checks turn it into `ignored`."""

    reason: str
    envelope: Envelope | None = None


Event = ApiCall | ComplianceChange | MacieFinding | StateChange | Unrecognised

SECURITY_HUB_SOURCE = "aws.securityhub"
SECURITY_HUB_IMPORTED_DETAIL_TYPE = "Security Hub Findings - Imported"


@dataclass(frozen=True)
class SecurityHubFinding:
    """A Security Hub finding (one per "Security Hub Findings - Imported" event), about one control's resources.

    Not one of the checks' `Event`s: the pipeline routes it to the check that owns the control
    (mlwarden.pipeline), which evaluates the named resource as it would evaluate it from any other event.
    """

    envelope: Envelope
    finding_id: str
    control: str | None
    compliance: str | None
    workflow: str | None
    record_state: str | None
    generator: str | None
    account: str | None
    aws_region: str | None
    # (ASFF type, id, region) of each resource the finding names.
    resources: tuple[tuple[str, str, str | None], ...]
    product_fields: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    findings_in_event: int = 1


def parse_security_hub_finding(raw: Any) -> SecurityHubFinding | None:
    """The finding of a Security Hub "Findings - Imported" event; None for any other event."""
    if not isinstance(raw, Mapping) or raw.get("source") != SECURITY_HUB_SOURCE:
        return None
    if raw.get("detail-type") != SECURITY_HUB_IMPORTED_DETAIL_TYPE:
        return None
    raw = cut_to_depth(raw)
    envelope = Envelope(
        id=_text(raw.get("id")) or "unknown",
        source=SECURITY_HUB_SOURCE,
        detail_type=SECURITY_HUB_IMPORTED_DETAIL_TYPE,
        account=_account(raw.get("account")),
        region=_text(raw.get("region")),
        time=_text(raw.get("time")),
    )
    findings = _mapping(raw.get("detail")).get("findings")
    findings = findings if isinstance(findings, list) else []
    finding = _mapping(findings[0]) if findings else {}
    resources = finding.get("Resources")
    named = tuple(
        (str(_text(r.get("Type")) or ""), str(_text(r.get("Id")) or ""), _text(r.get("Region")))
        for r in (resources if isinstance(resources, list) else [])
        if isinstance(r, Mapping) and _text(r.get("Id"))
    )
    return SecurityHubFinding(
        envelope=envelope,
        finding_id=_text(finding.get("Id")) or "unknown",
        control=_text(_mapping(finding.get("Compliance")).get("SecurityControlId")),
        compliance=_text(_mapping(finding.get("Compliance")).get("Status")),
        workflow=_text(_mapping(finding.get("Workflow")).get("Status")),
        record_state=_text(finding.get("RecordState")),
        generator=_text(finding.get("GeneratorId")),
        account=_account(finding.get("AwsAccountId")) or envelope.account,
        aws_region=_text(finding.get("Region")) or envelope.region,
        resources=named,
        product_fields=_mapping(finding.get("ProductFields")),
        findings_in_event=len(findings),
    )


def partition_of(region: str | None) -> str:
    """The ARN partition of a region: aws-cn and aws-us-gov have their own, everything else is aws."""
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def scalar(value: Any) -> str | None:
    """A non-empty string from a string or a one-element list of one; else None."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.strip():
        return value.strip()[:_MAX_TEXT]
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value[:_MAX_TEXT]
    return None


def _account(value: Any) -> str | None:
    text = _text(value)
    return text if text and _ACCOUNT.match(text) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def within_depth(value: Any, limit: int = MAX_EVENT_DEPTH) -> bool:
    """True when `value` nests its JSON containers (objects, arrays) at most `limit` levels deep.

    Level by level, without recursion: it runs on every event, and costs a few microseconds for a real one.
    """
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    level: list[Any] = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        deeper: list[Any] = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:  # exact types: what JSON decodes to, and fastest
                    deeper.append(child)
        if not deeper:
            return True
        level = deeper
    return not level


def cut_to_depth(value: Any, limit: int = MAX_EVENT_DEPTH) -> Any:
    """`value` itself when it is within `limit` levels; else a copy whose deeper containers are None."""
    return value if within_depth(value, limit) else _cut(value, limit)


def _cut(value: Any, limit: int) -> Any:
    # Recursion bounded by `limit`.
    if not isinstance(value, Mapping | list):
        return value
    if limit <= 0:
        return None
    if isinstance(value, Mapping):
        return {key: _cut(child, limit - 1) for key, child in value.items()}
    return [_cut(child, limit - 1) for child in value]


def parse_event(raw: Any) -> Event:
    if not isinstance(raw, Mapping):
        return Unrecognised(f"event is a {type(raw).__name__}, not a JSON object")
    raw = cut_to_depth(raw)
    source = _text(raw.get("source"))
    detail_type = _text(raw.get("detail-type"))
    if source is None or detail_type is None:
        return Unrecognised("event has no EventBridge source and detail-type")
    envelope = Envelope(
        id=_text(raw.get("id")) or "unknown",
        source=source,
        detail_type=detail_type,
        account=_account(raw.get("account")),
        region=_text(raw.get("region")),
        time=_text(raw.get("time")),
    )
    detail = raw.get("detail")
    if not isinstance(detail, Mapping):
        return Unrecognised("event detail is missing or not an object", envelope)

    if detail_type == CLOUDTRAIL_DETAIL_TYPE:
        return _api_call(envelope, detail)
    if detail_type == CONFIG_COMPLIANCE_DETAIL_TYPE:
        return _compliance_change(envelope, detail)
    if detail_type == MACIE_DETAIL_TYPE:
        return _macie_finding(envelope, detail)
    if source == SAGEMAKER_SOURCE and detail_type in SAGEMAKER_STATE_CHANGE_DETAIL_TYPES:
        return _state_change(envelope, raw.get("resources"), detail)
    return Unrecognised(f"detail-type {detail_type!r} is not one ML Warden handles", envelope)


def _api_call(envelope: Envelope, detail: Mapping[str, Any]) -> Event:
    event_name = _text(detail.get("eventName"))
    event_source = _text(detail.get("eventSource"))
    if event_name is None or event_source is None:
        return Unrecognised("CloudTrail detail has no eventName or eventSource", envelope)
    identity = _mapping(detail.get("userIdentity"))
    issuer = _mapping(_mapping(identity.get("sessionContext")).get("sessionIssuer"))
    actor = Actor(
        type=_text(identity.get("type")) or "",
        arn=_text(identity.get("arn")),
        account=_account(identity.get("accountId")),
        role_arn=_text(issuer.get("arn")),
        invoked_by=_text(identity.get("invokedBy")),
    )
    return ApiCall(
        envelope=envelope,
        event_source=event_source,
        event_name=event_name,
        event_id=_text(detail.get("eventID")),
        event_time=_text(detail.get("eventTime")),
        error_code=_text(detail.get("errorCode")),
        request_parameters=_mapping(detail.get("requestParameters")),
        actor=actor,
        recipient_account=_account(detail.get("recipientAccountId")) or envelope.account,
        aws_region=_text(detail.get("awsRegion")) or envelope.region,
        response_elements=_mapping(detail.get("responseElements")),
    )


def _state_change(envelope: Envelope, resources: Any, detail: Mapping[str, Any]) -> Event:
    arns = tuple(text for text in (_text(r) for r in resources) if text) if isinstance(resources, list) else ()
    return StateChange(
        envelope=envelope, resources=arns, account=envelope.account, aws_region=envelope.region, detail=detail
    )


def _compliance_change(envelope: Envelope, detail: Mapping[str, Any]) -> Event:
    new_result = _mapping(detail.get("newEvaluationResult"))
    qualifier = _mapping(_mapping(new_result.get("evaluationResultIdentifier")).get("evaluationResultQualifier"))
    rule_name = _text(detail.get("configRuleName")) or _text(qualifier.get("configRuleName"))
    resource_type = _text(detail.get("resourceType")) or _text(qualifier.get("resourceType"))
    resource_id = _text(detail.get("resourceId")) or _text(qualifier.get("resourceId"))
    compliance = _text(new_result.get("complianceType"))
    if not (rule_name and resource_type and resource_id and compliance):
        return Unrecognised(
            "Config compliance change lacks configRuleName, resourceType, resourceId or complianceType", envelope
        )
    return ComplianceChange(
        envelope=envelope,
        rule_name=rule_name,
        resource_type=resource_type,
        resource_id=resource_id,
        compliance=compliance,
        previous_compliance=_text(_mapping(detail.get("oldEvaluationResult")).get("complianceType")),
        aws_region=_text(detail.get("awsRegion")) or envelope.region,
        account=_account(detail.get("awsAccountId")) or envelope.account,
    )


def _macie_finding(envelope: Envelope, detail: Mapping[str, Any]) -> Event:
    finding_type = _text(detail.get("type"))
    finding_id = _text(detail.get("id"))
    if finding_type is None or finding_id is None:
        return Unrecognised("Macie finding has no type or id", envelope)
    affected = _mapping(detail.get("resourcesAffected"))
    return MacieFinding(
        envelope=envelope,
        finding_id=finding_id,
        finding_type=finding_type,
        severity=_text(_mapping(detail.get("severity")).get("description")),
        bucket=_text(_mapping(affected.get("s3Bucket")).get("name")),
        object_key=_text(_mapping(affected.get("s3Object")).get("key")),
        account=_account(detail.get("accountId")) or envelope.account,
        aws_region=_text(detail.get("region")) or envelope.region,
        raw=detail,
    )


def decode_policy_document(value: Any) -> Mapping[str, Any] | None:
    """A policy document from an object, a JSON string or a URL-encoded JSON string.

    Returns None when it is none of these (CloudTrail sometimes records an empty
    string or invalid JSON for a policy).
    """
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # S3-style one-element list; not scalar(): policies are longer than log text
    text = value.strip() if isinstance(value, str) else None
    if not text:
        return None
    for candidate in (text, unquote(text)):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, Mapping):
            return parsed
    return None
