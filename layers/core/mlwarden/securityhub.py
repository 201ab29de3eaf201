"""Findings where security teams look: outcomes as AWS Security Hub findings (ASFF), with a lifecycle.

One finding per (resource, check, control), under a stable `Id`, so a later evaluation of the same
resource updates the same finding instead of adding one:

- flagged, would-remediate, failed: Compliance FAILED, workflow NEW;
- remediated by ML Warden, or found compliant later: Compliance PASSED, workflow RESOLVED;
- exempt: workflow SUPPRESSED, with the exemption's owner, reason and expiry in the note; NEW again when a
  later evaluation finds the resource non-compliant and not exempt (the exemption expired or was revoked);
- the resource is gone: RecordState ARCHIVED.

Security Hub's own rules decide how: BatchImportFindings creates a finding and updates what the provider owns,
but after creation it cannot change Workflow or Note (those belong to the customer's investigation); those
go through BatchUpdateFindings. Security Hub itself resets RESOLVED to NEW when Compliance goes from PASSED to
FAILED. ML Warden reads the finding first (GetFindings) and never overrides a person's decision: a finding a
person marked NOTIFIED or SUPPRESSED keeps that status, except that ML Warden marks RESOLVED what it fixed.
(https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchimportfindings.html,
https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_Workflow.html)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed
from mlwarden.events import partition_of
from mlwarden.outcomes import Outcome, OutcomeKind

SCHEMA_VERSION = "2018-10-08"
# Written as the note's author, so ML Warden knows a suppression is its own (and may lift it again).
NOTE_AUTHOR = "mlwarden"
PRODUCT_NAME = "ML Warden"
# API limits: BatchImportFindings takes 100 findings and at most 240 KB per finding; BatchUpdateFindings 100
# findings; GetFindings filters take up to 20 values per field.
IMPORT_BATCH = 100
IMPORT_BYTES = 240 * 1024
UPDATE_BATCH = 100
ID_FILTER_VALUES = 20
ID_LIMIT = 512
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 1024
RECOMMENDATION_LIMIT = 512
PRODUCT_FIELD_LIMIT = 2048
NOTE_LIMIT = 512

# What each function's role needs when SecurityHubFindings is on: import on the account's default product,
# read and update findings on the account's hub (Service Authorization Reference: BatchImportFindings takes the
# product resource type, GetFindings and BatchUpdateFindings the hub).
IMPORT_PERMISSIONS = frozenset({"securityhub:BatchImportFindings"})
HUB_PERMISSIONS = frozenset({"securityhub:GetFindings", "securityhub:BatchUpdateFindings"})
PERMISSIONS = IMPORT_PERMISSIONS | HUB_PERMISSIONS

_FAILED = (OutcomeKind.FLAGGED, OutcomeKind.WOULD_REMEDIATE, OutcomeKind.FAILED)
_PASSED = (OutcomeKind.REMEDIATED, OutcomeKind.COMPLIANT)

# ASFF resource types by ARN service and resource prefix; anything else is "Other".
_RESOURCE_TYPES: Mapping[tuple[str, str], str] = {
    ("s3", ""): "AwsS3Bucket",
    ("s3", "accesspoint"): "AwsS3AccessPoint",
    ("iam", "policy"): "AwsIamPolicy",
    ("iam", "role"): "AwsIamRole",
    ("iam", "user"): "AwsIamUser",
    ("iam", "group"): "AwsIamGroup",
    ("kms", "key"): "AwsKmsKey",
    ("cloudtrail", "trail"): "AwsCloudTrailTrail",
    ("lambda", "function"): "AwsLambdaFunction",
    ("sagemaker", "notebook-instance"): "AwsSageMakerNotebookInstance",
}


def product_arn(account: str, region: str) -> str:
    """The account's default product: where an account imports its own findings."""
    return f"arn:{partition_of(region)}:securityhub:{region}:{account}:product/{account}/default"


def hub_arn(account: str, region: str) -> str:
    return f"arn:{partition_of(region)}:securityhub:{region}:{account}:hub/default"


def finding_id(check: str, control: str | None, resource: str) -> str:
    """Stable per (resource, check, control): the next evaluation of the resource replaces the finding."""
    readable = f"mlwarden/{check}/{control or 'check'}/{resource}"
    if len(readable) <= ID_LIMIT:
        return readable
    digest = hashlib.sha256(resource.encode()).hexdigest()
    return f"mlwarden/{check}/{control or 'check'}/sha256:{digest}"


def resource_type(resource: str) -> str:
    if resource.startswith("AWS::::Account:"):
        return "AwsAccount"
    parts = resource.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        return "Other"
    service, rest = parts[2], parts[5]
    prefix = rest.split("/", 1)[0] if "/" in rest else ("" if service == "s3" else rest.split(":", 1)[0])
    return _RESOURCE_TYPES.get((service, prefix), "Other")


def is_gone(outcome: Outcome) -> bool:
    """The evaluation found the resource deleted: its finding is archived."""
    details = outcome.details
    return bool(details.get("resource_gone")) or details.get("bucket_exists") is False


def is_own_finding(finding: Mapping[str, Any]) -> bool:
    """A finding ML Warden imported (its Security Hub finding events must not route back to it)."""
    fields = finding.get("ProductFields")
    own_fields = isinstance(fields, Mapping) and fields.get("mlwarden/check") is not None
    return own_fields or str(finding.get("Id", "")).startswith("mlwarden/")


@dataclass(frozen=True)
class Planned:
    """One finding to import, and the workflow status (with a note) it should end up in."""

    finding: dict[str, Any]
    workflow: str
    note: str

    @property
    def id(self) -> str:
        return str(self.finding["Id"])


def plan(outcome: Outcome, now: dt.datetime | None = None) -> list[Planned]:
    """The findings an outcome makes (one per control; one with no control when none applies); [] when none."""
    if outcome.resource is None:
        return []
    gone = is_gone(outcome)
    if outcome.outcome is OutcomeKind.IGNORED and not gone:
        return []
    account = outcome.trigger.account
    region = outcome.trigger.region
    if not account or not region:
        return []
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    controls: Sequence[str | None] = outcome.controls or (None,)
    return [_planned(outcome, control, account=account, region=region, stamp=stamp, gone=gone) for control in controls]


def _planned(outcome: Outcome, control: str | None, *, account: str, region: str, stamp: str, gone: bool) -> Planned:
    from mlwarden import alerts  # noqa: PLC0415 - only when findings are on: not imported at cold start

    resource = str(outcome.resource)
    kind = outcome.outcome
    status = control_status(outcome, control)
    passed = status in ("FIXED", "PASSED") if status is not None else kind in _PASSED
    if passed:
        workflow = "RESOLVED"
        note = "fixed by ML Warden" if kind is OutcomeKind.REMEDIATED else "compliant when ML Warden evaluated it"
    elif kind is OutcomeKind.EXEMPT:
        workflow, note = "SUPPRESSED", f"exempt: {outcome.details.get('exemption') or outcome.reason}"
    else:
        workflow, note = "NEW", f"{kind.value}: {outcome.reason}"
    compliance: dict[str, Any] = {"Status": "PASSED" if passed else "FAILED"}
    if control is not None:
        compliance["SecurityControlId"] = control
        compliance["RelatedRequirements"] = [control]
    severity = {"Label": outcome.severity.value, "Original": outcome.severity.value}
    types = ["Software and Configuration Checks/AWS Security Best Practices"]
    steps = list(alerts.what_to_do(outcome))
    finding: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": finding_id(outcome.check, control, resource),
        "ProductArn": product_arn(account, region),
        "ProductName": PRODUCT_NAME,
        "CompanyName": PRODUCT_NAME,
        "GeneratorId": f"mlwarden/{outcome.check}",
        "AwsAccountId": account,
        "Region": region,
        "Types": types,
        "CreatedAt": stamp,
        "UpdatedAt": stamp,
        "Severity": severity,
        "FindingProviderFields": {"Severity": severity, "Types": types},
        "Title": _cut(f"{outcome.check}{' ' + control if control else ''}: {alerts.headline(outcome)}", TITLE_LIMIT),
        "Description": _cut(outcome.reason, DESCRIPTION_LIMIT),
        "Resources": [_resource(resource, region, outcome)],
        "Compliance": compliance,
        "RecordState": "ARCHIVED" if gone else "ACTIVE",
        # Workflow and Note count only when the finding is created; later changes go through BatchUpdateFindings.
        "Workflow": {"Status": workflow},
        "Note": {"Text": _cut(note, NOTE_LIMIT), "UpdatedBy": NOTE_AUTHOR, "UpdatedAt": stamp},
        "ProductFields": _product_fields(outcome, control, status),
    }
    if steps:
        finding["Remediation"] = {"Recommendation": {"Text": _cut(" ".join(steps), RECOMMENDATION_LIMIT)}}
    return Planned(finding=finding, workflow=workflow, note=_cut(note, NOTE_LIMIT))


def control_status(outcome: Outcome, control: str | None) -> str | None:
    """FAILED, FIXED or PASSED for one of several controls an outcome covers; None: as the outcome says.

    A check that evaluates several controls on one resource (a bucket: S3.8 its block, S3.2 public read, S3.3
    public write) says in `details["control_status"]` which failed, which it fixed and which passed.
    """
    statuses = outcome.details.get("control_status")
    if not isinstance(statuses, Mapping) or control is None:
        return None
    status = statuses.get(control)
    return str(status) if status in ("FAILED", "FIXED", "PASSED") else None


def _resource(resource: str, region: str, outcome: Outcome) -> dict[str, Any]:
    kind = resource_type(resource)
    entry: dict[str, Any] = {"Type": kind, "Id": resource, "Partition": partition_of(region), "Region": region}
    if kind == "AwsS3Bucket" and isinstance(outcome.new_state, Mapping):
        block = outcome.new_state.get("PublicAccessBlockConfiguration")
        if isinstance(block, Mapping) and outcome.outcome is OutcomeKind.REMEDIATED:
            entry["Details"] = {"AwsS3Bucket": {"PublicAccessBlockConfiguration": dict(block)}}
    return entry


def _product_fields(outcome: Outcome, control: str | None, status: str | None) -> dict[str, str]:
    fields = {
        "mlwarden/check": outcome.check,
        "mlwarden/outcome": outcome.outcome.value,
        "mlwarden/actions": ", ".join(outcome.actions) or "none",
        "mlwarden/trigger": f"{outcome.trigger.kind} {outcome.trigger.name}",
    }
    if outcome.undo:
        fields["mlwarden/undo"] = outcome.undo
    if outcome.findings:
        fields["mlwarden/findings"] = ", ".join(outcome.findings)
    if outcome.trigger.actor:
        fields["mlwarden/actor"] = outcome.trigger.actor
    if control:
        fields["mlwarden/control"] = control
    if status:
        fields["mlwarden/control_status"] = status
    return {key: _cut(value, PRODUCT_FIELD_LIMIT) for key, value in fields.items()}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- sending ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotSent:
    """A finding Security Hub did not take: reported, never dropped silently."""

    id: str
    error: str


def publish(outcomes: Iterable[Outcome]) -> list[NotSent]:
    """Import the outcomes' findings and move their workflow; returns what Security Hub refused.

    AwsCallFailed when Security Hub cannot be reached at all (after botocore's standard retries, which
    include throttling).
    """
    planned = [finding for outcome in outcomes for finding in plan(outcome)]
    if not planned:
        return []
    by_region: dict[str, list[Planned]] = {}
    for finding in planned:
        by_region.setdefault(str(finding.finding["Region"]), []).append(finding)
    refused: list[NotSent] = []
    for region, findings in by_region.items():
        refused += _publish_in(region, findings)
    return refused


def _publish_in(region: str, planned: list[Planned]) -> list[NotSent]:
    hub = clients.client("securityhub", region)
    existing = _existing(hub, [finding.id for finding in planned])
    to_import = [
        finding
        for finding in planned
        # A compliant resource that never had a finding needs none: nothing to resolve.
        if finding.id in existing or needs_a_finding(finding)
    ]
    for finding in to_import:
        old = existing.get(finding.id)
        if old is not None and old.get("CreatedAt"):
            finding.finding["CreatedAt"] = old["CreatedAt"]
    refused = _import(hub, [finding.finding for finding in to_import])
    refused_ids = {item.id for item in refused}
    updates: dict[tuple[str, str], list[str]] = {}
    for finding in to_import:
        if finding.id in refused_ids or finding.id not in existing:
            continue
        status = _next_status(existing[finding.id], finding)
        if status is not None:
            updates.setdefault((status, finding.note), []).append(finding.id)
    product = str(planned[0].finding["ProductArn"])
    for (status, note), ids in updates.items():
        refused += _update(hub, product, ids, status, note)
    return refused


def needs_a_finding(finding: Planned) -> bool:
    """A new finding for what failed, or for what ML Warden fixed; a pass with nothing to resolve needs none."""
    fields = finding.finding["ProductFields"]
    if fields.get("mlwarden/control_status") == "FIXED":
        return True
    if fields["mlwarden/outcome"] == OutcomeKind.REMEDIATED.value and "mlwarden/control_status" not in fields:
        return True
    # An archived finding only closes one that exists.
    return bool(finding.finding["Compliance"]["Status"] == "FAILED" and finding.finding["RecordState"] == "ACTIVE")


def _next_status(existing: Mapping[str, Any], finding: Planned) -> str | None:
    """The workflow status to set on an existing finding, or None to leave a person's decision alone."""
    workflow = existing.get("Workflow")
    current = str(workflow.get("Status", "NEW")) if isinstance(workflow, Mapping) else "NEW"
    note = existing.get("Note")
    suppressed_by_us = current == "SUPPRESSED" and isinstance(note, Mapping) and note.get("UpdatedBy") == NOTE_AUTHOR
    wanted = finding.workflow
    if wanted == current:
        # A renewed exemption (new expiry, new reason) rewrites ML Warden's own note; nothing else changes.
        stale = suppressed_by_us and isinstance(note, Mapping) and note.get("Text") != finding.note
        return wanted if stale else None
    if wanted == "RESOLVED":
        return wanted  # fixed or compliant now: true whoever set the status before
    if wanted == "SUPPRESSED":
        return wanted if current in ("NEW", "RESOLVED") or suppressed_by_us else None
    # NEW: non-compliant again, not exempt. A person's NOTIFIED or SUPPRESSED stays as they set it.
    return wanted if current == "RESOLVED" or suppressed_by_us else None


def _existing(hub: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids, ID_FILTER_VALUES):
        filters = {"Id": [{"Value": finding_id, "Comparison": "EQUALS"} for finding_id in chunk]}
        try:
            for page in hub.get_paginator("get_findings").paginate(Filters=filters):
                for finding in page.get("Findings", []):
                    if finding.get("Id") in chunk:
                        found[str(finding["Id"])] = finding
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error("securityhub:GetFindings", err) from err
    return found


def _import(hub: Any, findings: list[dict[str, Any]]) -> list[NotSent]:
    refused: list[NotSent] = []
    for batch in _import_batches(findings):
        try:
            response = hub.batch_import_findings(Findings=batch)
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error("securityhub:BatchImportFindings", err) from err
        refused += [
            NotSent(str(item.get("Id")), f"{item.get('ErrorCode')}: {item.get('ErrorMessage')}")
            for item in response.get("FailedFindings", [])
        ]
    return refused


def _import_batches(findings: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """At most 100 findings and 240 KB per call."""
    batch: list[dict[str, Any]] = []
    size = 0
    for finding in findings:
        finding_size = len(json.dumps(finding).encode())
        if batch and (len(batch) == IMPORT_BATCH or size + finding_size > IMPORT_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(finding)
        size += finding_size
    if batch:
        yield batch


def _update(hub: Any, product: str, ids: list[str], status: str, note: str) -> list[NotSent]:
    refused: list[NotSent] = []
    for chunk in _chunks(ids, UPDATE_BATCH):
        try:
            response = hub.batch_update_findings(
                FindingIdentifiers=[{"Id": finding_id, "ProductArn": product} for finding_id in chunk],
                Workflow={"Status": status},
                Note={"Text": note, "UpdatedBy": NOTE_AUTHOR},
            )
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error("securityhub:BatchUpdateFindings", err) from err
        refused += [
            NotSent(str(item.get("FindingIdentifier", {}).get("Id")), f"{item.get('ErrorCode')}: workflow {status}")
            for item in response.get("UnprocessedFindings", [])
        ]
    return refused


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
