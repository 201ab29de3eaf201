"""Every sample event reaches exactly the functions it is meant for, as EventBridge would route it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden_cli.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
EVENTS = ROOT / "events"
REAL = ROOT / "tests" / "fixtures" / "real"

BLOCK = {"BlockPublicS3Function"}
TAG_PII = {"TagPiiBucketFunction"}
SAGEMAKER = {"CheckSageMakerEncryptionFunction"}
IAM = {"FlagWildcardIamFunction"}
WATCH = {"WatchInputsFunction"}
KMS = {"GuardKmsKeysFunction"}
DATA = {"GuardS3DataFunction"}
# Bucket policies and new buckets are both public-access and data-protection matters.
BUCKET_POLICY = BLOCK | DATA
NOWHERE: set[str] = set()

# One row per file in events/: a new sample must say where it goes.
EXPECTED_ROUTES: dict[str, set[str]] = {
    "s3/put-bucket-acl-public.json": BLOCK,
    "s3/put-bucket-policy-public.json": BUCKET_POLICY,
    "s3/delete-bucket-public-access-block.json": BLOCK,
    "s3/put-bucket-acl-exempt-bucket.json": BLOCK,
    "s3/create-bucket.json": BUCKET_POLICY,
    "s3/put-bucket-public-access-block-partial.json": BLOCK,
    "s3/put-bucket-public-access-block-by-mlwarden.json": BLOCK,
    "s3/delete-account-public-access-block.json": BLOCK,
    "s3/put-bucket-policy-null-parameters.json": BUCKET_POLICY,
    # The rule filters calls AWS refused (errorCode): nothing changed, nothing to do.
    "s3/put-bucket-policy-failed.json": NOWHERE,
    "config/s3-bucket-public-read-prohibited-noncompliant.json": BLOCK,
    "config/s3-bucket-level-public-access-prohibited-noncompliant.json": BLOCK,
    "config/s3-account-level-public-access-blocks-periodic-noncompliant.json": BLOCK,
    "config/s3-bucket-public-read-prohibited-compliant.json": NOWHERE,
    "securityhub/control-s3-8-bucket-block-off.json": BLOCK,
    "securityhub/control-s3-1-account-block-off.json": BLOCK,
    "securityhub/control-iam-1-admin-policy.json": NOWHERE,
    "config/cloudtrail-enabled-noncompliant.json": NOWHERE,
    "macie/policy-s3-bucket-public.json": BLOCK,
    "macie/policy-s3-block-public-access-disabled.json": BLOCK,
    "macie/policy-s3-bucket-encryption-disabled.json": DATA,
    "macie/policy-s3-bucket-shared-externally.json": DATA,
    "kms/schedule-key-deletion.json": KMS,
    "kms/disable-key.json": KMS,
    "kms/disable-key-rotation.json": KMS,
    "kms/put-key-policy-public.json": KMS,
    "kms/create-key.json": KMS,
    "s3/delete-bucket-policy.json": DATA,
    "s3/put-bucket-encryption-sse-s3.json": DATA,
    "s3/put-bucket-policy-cross-account.json": BUCKET_POLICY,
    "s3/create-access-point-no-block.json": DATA,
    "macie/sensitive-data-personal.json": TAG_PII,
    "macie/sensitive-data-personal-republished.json": TAG_PII,
    "macie/sensitive-data-multiple.json": TAG_PII,
    "macie/sensitive-data-custom-identifier.json": TAG_PII,
    "macie/sensitive-data-financial.json": TAG_PII,
    "macie/sensitive-data-credentials.json": TAG_PII,
    "iam/attach-role-policy-administrator-access.json": IAM,
    "iam/attach-role-policy-failed.json": NOWHERE,
    "iam/put-role-policy-s3-wildcard.json": IAM,
    "iam/put-role-policy-tight.json": IAM,
    "iam/put-user-policy-url-encoded-passrole.json": IAM,
    "iam/put-user-policy-deny-quarantine.json": IAM,
    "iam/put-group-policy-notaction.json": IAM,
    "iam/create-policy-sagemaker-wildcard.json": IAM,
    "iam/create-policy-version-admin.json": IAM,
    "iam/set-default-policy-version.json": IAM,
    "iam/detach-role-policy-administrator-access.json": IAM,
    "iam/delete-role-policy-s3-wildcard.json": IAM,
    "iam/delete-policy-version.json": IAM,
    "iam/add-user-to-group.json": IAM,
    "iam/remove-user-from-group.json": IAM,
    "config/iam-policy-no-statements-with-admin-access-noncompliant.json": IAM,
    "unrelated/ec2-run-instances.json": NOWHERE,
    "unrelated/s3-get-bucket-location.json": NOWHERE,
    "sagemaker/create-training-job-unencrypted.json": SAGEMAKER,
    "sagemaker/create-training-job-encrypted.json": SAGEMAKER,
    "sagemaker/create-training-job-distributed.json": SAGEMAKER,
    "sagemaker/create-processing-job.json": SAGEMAKER,
    "sagemaker/create-transform-job.json": SAGEMAKER,
    "sagemaker/create-notebook-instance-internet.json": SAGEMAKER,
    "sagemaker/create-endpoint-config-no-key.json": SAGEMAKER,
    "sagemaker/training-job-state-change.json": SAGEMAKER,
    "sagemaker/create-training-job-failed.json": NOWHERE,
    # Setting the exempt tag goes to the check that owns the resource type.
    "s3/put-bucket-tagging-exempt.json": BLOCK,
    "iam/tag-role-exempt.json": IAM,
    "iam/create-policy-admin-exempt-tag.json": IAM,
    "sagemaker/add-tags-exempt.json": SAGEMAKER,
    # SageMaker.1-.25: every Create/Update call that can break a control, and Config's rules for them.
    "sagemaker/update-notebook-instance-root-access.json": SAGEMAKER,
    "sagemaker/create-model-no-network-isolation.json": SAGEMAKER,
    "sagemaker/create-data-quality-job-definition-unencrypted.json": SAGEMAKER,
    "sagemaker/create-model-quality-job-definition.json": SAGEMAKER,
    "sagemaker/create-model-bias-job-definition.json": SAGEMAKER,
    "sagemaker/create-model-explainability-job-definition.json": SAGEMAKER,
    "sagemaker/create-monitoring-schedule.json": SAGEMAKER,
    "sagemaker/update-monitoring-schedule.json": SAGEMAKER,
    "sagemaker/create-feature-group-no-key.json": SAGEMAKER,
    "sagemaker/update-feature-group.json": SAGEMAKER,
    "sagemaker/create-inference-experiment-no-key.json": SAGEMAKER,
    "sagemaker/update-inference-experiment.json": SAGEMAKER,
    "config/sagemaker-model-isolation-enabled-noncompliant.json": SAGEMAKER,
    "config/sagemaker-monitoring-schedule-isolation-noncompliant.json": SAGEMAKER,
    # What blinds ML Warden: each call reaches watch_inputs alone.
    "cloudtrail/stop-logging.json": WATCH,
    "cloudtrail/delete-trail.json": WATCH,
    "cloudtrail/update-trail-single-region.json": WATCH,
    "cloudtrail/put-event-selectors-no-management.json": WATCH,
    "cloudtrail/stop-logging-failed.json": NOWHERE,
    "macie/disable-macie.json": WATCH,
    "macie/update-macie-session-paused.json": WATCH,
    "macie/update-automated-discovery-disabled.json": WATCH,
    "eventbridge/disable-rule-own.json": WATCH,
    "eventbridge/delete-rule-own.json": WATCH,
    "eventbridge/remove-targets-own.json": WATCH,
    "eventbridge/put-rule-own-pattern.json": WATCH,
    # Reaches the function, which ignores rules that are not ML Warden's own (the pattern cannot tell).
    "eventbridge/disable-rule-other.json": WATCH,
    "lambda/update-function-code-own.json": WATCH,
    "lambda/update-function-configuration-own.json": WATCH,
    "lambda/delete-function-own.json": WATCH,
    "lambda/remove-permission-own.json": WATCH,
    "lambda/put-function-concurrency-zero-own.json": WATCH,
    "iam/update-assume-role-policy-own-role.json": WATCH,
    # A policy change of an own role is also graded by flag_wildcard_iam, like any role's.
    "iam/detach-role-policy-own-role.json": WATCH | IAM,
    "ssm/put-parameter-liveness-canary.json": WATCH,
    "iam/update-role-liveness-canary.json": WATCH,
}


def _sample_files() -> list[str]:
    return sorted(str(p.relative_to(EVENTS)) for p in EVENTS.rglob("*.json") if p.name != "env.json")


def test_every_sample_has_an_expected_route() -> None:
    assert _sample_files() == sorted(EXPECTED_ROUTES)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROUTES))
def test_sample_routes_to_exactly_its_functions(name: str) -> None:
    event = json.loads((EVENTS / name).read_text())
    assert {f.logical_id for f in TEMPLATE.route(event)} == EXPECTED_ROUTES[name]


def _wrap(record: dict[str, Any]) -> dict[str, Any]:
    service = record["eventSource"].split(".", 1)[0]
    return {
        "version": "0",
        "id": "00000000-0000-0000-0000-000000000000",
        "detail-type": "AWS API Call via CloudTrail",
        "source": f"aws.{service}",
        "account": "123456789012",
        "time": "2024-01-15T10:45:23Z",
        "region": "us-east-1",
        "resources": [],
        "detail": record,
    }


PANTHER = REAL / "cloudtrail" / "raw_records" / "panther"
# Real (Panther-sanitised) CloudTrail records, wrapped as EventBridge would deliver them.
REAL_ROUTES: dict[str, set[str]] = {
    "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__non-s3-event.json": NOWHERE,
    "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__public-access-block-deleted-successfully.json": BLOCK,  # noqa: E501
    "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__public-access-block-deletion-failed.json": NOWHERE,
    "PutBucketAcl__aws-s3-bucketpolicymodified__s3-bucket-policy-modified-error-response.json": NOWHERE,
    "PutBucketAcl__aws-s3-bucketpolicymodified__s3-bucket-policy-modified.json": BLOCK,
    "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__all-restrictive-conditions-types-should-not-alert.json": BUCKET_POLICY,  # noqa: E501
    "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__invalid-json-policy-should-not-alert.json": BUCKET_POLICY,
    "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__null-request-parameters.json": BUCKET_POLICY,
    "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__s3-failed-to-make-publicly-accessible.json": NOWHERE,
    "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__s3-made-publicly-accessible.json": BUCKET_POLICY,
    "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__s3-not-made-publicly-accessible.json": BUCKET_POLICY,
    "PutBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__different-s3-event.json": BLOCK,
    "AttachRolePolicy__aws-iam-attachadminrolepolicy__iam-role-policy-attached-with-administrator-access.json": IAM,
    "AttachRolePolicy__aws-cloudtrail-iamanythingchanged__error-making-iam-change.json": NOWHERE,
    "AttachUserPolicy__aws-iam-attachadminuserpolicy__iam-user-policy-attached-with-administrator-access.json": IAM,
    "PutUserPolicy__aws-iam-accesskeycompromised__an-aws-iam-access-key-was-compromised.json": IAM,
    "PutUserPolicy__aws-iam-accesskeycompromised__request-param-is-null.json": IAM,
}


def test_every_real_record_has_an_expected_route() -> None:
    assert sorted(p.name for p in PANTHER.glob("*.json")) == sorted(REAL_ROUTES)


@pytest.mark.parametrize("name", sorted(REAL_ROUTES))
def test_real_cloudtrail_records_route_by_service_call_and_success(name: str) -> None:
    record = json.loads((PANTHER / name).read_text())
    assert {f.logical_id for f in TEMPLATE.route(_wrap(record))} == REAL_ROUTES[name]


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "PutBucketAcl",
        {},
        {"source": "aws.s3"},
        {"source": "aws.s3", "detail-type": "AWS API Call via CloudTrail", "detail": "PutBucketAcl"},
        # EventBridge matches array values by intersection, so a list-valued field is not malformed
        # to it; an unlisted call is.
        {"source": "aws.s3", "detail-type": "AWS API Call via CloudTrail", "detail": {"eventName": "GetObject"}},
    ],
)
def test_malformed_events_route_nowhere(event: Any) -> None:
    assert TEMPLATE.route(event) == []


MACIE_REAL = REAL / "macie" / "finding_detail_only"


@pytest.mark.parametrize("name", sorted(p.name for p in MACIE_REAL.glob("*.json")))
def test_recorded_macie_sensitive_data_findings_route_only_to_tag_pii_bucket(name: str) -> None:
    detail = json.loads((MACIE_REAL / name).read_text())
    event = {
        "version": "0",
        "id": "00000000-0000-0000-0000-000000000001",
        "detail-type": "Macie Finding",
        "source": "aws.macie",
        "account": "123456789012",
        "time": "2024-01-15T10:45:23Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }
    assert {f.logical_id for f in TEMPLATE.route(event)} == TAG_PII


@pytest.mark.parametrize(
    "finding_type",
    [
        "Policy:IAMUser/S3BucketPublic",
        "Policy:IAMUser/S3BucketSharedExternally",
        "sensitivedata:S3Object/Personal",  # prefix matching is case-sensitive, as Macie's types are
        "S3Object/SensitiveData:Personal",
    ],
)
def test_macie_findings_that_are_not_sensitive_data_never_reach_tag_pii_bucket(finding_type: str) -> None:
    event = json.loads((EVENTS / "macie" / "sensitive-data-personal.json").read_text())
    event["detail"]["type"] = finding_type
    assert "TagPiiBucketFunction" not in {f.logical_id for f in TEMPLATE.route(event)}


@pytest.mark.parametrize("call", ["PutBucketTagging", "DeleteBucketTagging"])
def test_tagging_calls_reach_block_public_s3_which_alerts_a_removed_pii_tag(call: str) -> None:
    event = {
        "version": "0",
        "id": "00000000-0000-0000-0000-000000000002",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-01-01T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"eventSource": "s3.amazonaws.com", "eventName": call, "requestParameters": {"bucketName": "b"}},
    }
    assert {f.logical_id for f in TEMPLATE.route(event)} == BLOCK
