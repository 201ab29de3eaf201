"""The shipped sample events (events/) and the real records they derive from (tests/fixtures/real/),
each run through block_public_s3 against the state the demo sets up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}

ALERTED = {"remediated", "would-remediate", "flagged", "exempt", "failed"}


def demo_state(aws: Any) -> None:
    """The buckets of events/README.md, in the state the demo gives them."""
    aws.bucket("mlw-training-data-acl", acl="public-read")
    aws.bucket("mlw-training-data-policy", public_policy=True)
    aws.bucket("mlw-feature-store")
    aws.bucket("mlw-public-website", acl="public-read", tags={"mlwarden:exempt": "true"})
    aws.grant_exemption("arn:aws:s3:::mlw-public-website")
    aws.bucket("mlw-model-artifacts", block=ALL_ON)


# sample -> (outcome, bucket whose block is then all on, or None)
SAMPLES: dict[str, tuple[str, str | None]] = {
    "s3/put-bucket-acl-public.json": ("remediated", "mlw-training-data-acl"),
    "s3/put-bucket-policy-public.json": ("remediated", "mlw-training-data-policy"),
    "s3/delete-bucket-public-access-block.json": ("remediated", "mlw-feature-store"),
    "s3/put-bucket-public-access-block-partial.json": ("remediated", "mlw-feature-store"),
    "s3/put-bucket-acl-exempt-bucket.json": ("exempt", None),
    "s3/create-bucket.json": ("compliant", "mlw-model-artifacts"),
    # ML Warden's own fix, echoed while the bucket is still public: the loop guard reads the bucket first, so
    # the call counts as hostile and the bucket is fixed (once the bucket is fixed, the echo is ignored)
    "s3/put-bucket-public-access-block-by-mlwarden.json": ("remediated", "mlw-training-data-acl"),
    # an exempt bucket no longer holds the account-wide block back: only the account's own exemption can
    "s3/delete-account-public-access-block.json": ("remediated", None),
    # setting the exempt tag on a public bucket: the bucket is blocked and the alert reports the tag
    "s3/put-bucket-tagging-exempt.json": ("remediated", "mlw-training-data-acl"),
    "iam/tag-role-exempt.json": ("ignored", None),
    "iam/create-policy-admin-exempt-tag.json": ("ignored", None),
    "sagemaker/add-tags-exempt.json": ("ignored", None),
    "s3/put-bucket-policy-failed.json": ("ignored", None),
    "s3/put-bucket-policy-null-parameters.json": ("ignored", None),
    "config/s3-bucket-public-read-prohibited-noncompliant.json": ("remediated", "mlw-training-data-acl"),
    "config/s3-bucket-level-public-access-prohibited-noncompliant.json": ("remediated", "mlw-feature-store"),
    "config/s3-account-level-public-access-blocks-periodic-noncompliant.json": ("remediated", None),
    "config/s3-bucket-public-read-prohibited-compliant.json": ("ignored", None),
    # Security Hub's own control findings, for controls this check owns (and one it does not)
    "securityhub/control-s3-8-bucket-block-off.json": ("remediated", "mlw-feature-store"),
    "securityhub/control-s3-1-account-block-off.json": ("remediated", None),
    "securityhub/control-iam-1-admin-policy.json": ("ignored", None),
    "config/cloudtrail-enabled-noncompliant.json": ("ignored", None),
    "macie/policy-s3-bucket-public.json": ("remediated", "mlw-training-data-policy"),
    "macie/policy-s3-block-public-access-disabled.json": ("remediated", "mlw-feature-store"),
    "macie/policy-s3-bucket-encryption-disabled.json": ("ignored", None),
    "macie/sensitive-data-personal.json": ("ignored", None),
    "macie/sensitive-data-personal-republished.json": ("ignored", None),
    "macie/sensitive-data-multiple.json": ("ignored", None),
    "macie/sensitive-data-custom-identifier.json": ("ignored", None),
    "macie/sensitive-data-financial.json": ("ignored", None),
    "macie/sensitive-data-credentials.json": ("ignored", None),
    # IAM samples (flag_wildcard_iam's): not S3 calls or rules, so block_public_s3 ignores them
    "config/iam-policy-no-statements-with-admin-access-noncompliant.json": ("ignored", None),
    "iam/attach-role-policy-administrator-access.json": ("ignored", None),
    "iam/attach-role-policy-failed.json": ("ignored", None),
    "iam/create-policy-sagemaker-wildcard.json": ("ignored", None),
    "iam/create-policy-version-admin.json": ("ignored", None),
    "iam/put-group-policy-notaction.json": ("ignored", None),
    "iam/put-role-policy-s3-wildcard.json": ("ignored", None),
    "iam/put-role-policy-tight.json": ("ignored", None),
    "iam/put-user-policy-deny-quarantine.json": ("ignored", None),
    "iam/put-user-policy-url-encoded-passrole.json": ("ignored", None),
    "iam/set-default-policy-version.json": ("ignored", None),
    "iam/detach-role-policy-administrator-access.json": ("ignored", None),
    "iam/delete-role-policy-s3-wildcard.json": ("ignored", None),
    "iam/delete-policy-version.json": ("ignored", None),
    "iam/add-user-to-group.json": ("ignored", None),
    "iam/remove-user-from-group.json": ("ignored", None),
    "unrelated/ec2-run-instances.json": ("ignored", None),
    "unrelated/s3-get-bucket-location.json": ("ignored", None),
    "sagemaker/training-job-state-change.json": ("ignored", None),
    "sagemaker/create-training-job-unencrypted.json": ("ignored", None),
    "sagemaker/create-training-job-encrypted.json": ("ignored", None),
    "sagemaker/create-training-job-distributed.json": ("ignored", None),
    "sagemaker/create-training-job-failed.json": ("ignored", None),
    "sagemaker/create-processing-job.json": ("ignored", None),
    "sagemaker/create-transform-job.json": ("ignored", None),
    "sagemaker/create-notebook-instance-internet.json": ("ignored", None),
    "sagemaker/create-endpoint-config-no-key.json": ("ignored", None),
    # SageMaker.1-.25 samples (check_sagemaker_encryption's)
    "sagemaker/update-notebook-instance-root-access.json": ("ignored", None),
    "sagemaker/create-model-no-network-isolation.json": ("ignored", None),
    "sagemaker/create-data-quality-job-definition-unencrypted.json": ("ignored", None),
    "sagemaker/create-model-quality-job-definition.json": ("ignored", None),
    "sagemaker/create-model-bias-job-definition.json": ("ignored", None),
    "sagemaker/create-model-explainability-job-definition.json": ("ignored", None),
    "sagemaker/create-monitoring-schedule.json": ("ignored", None),
    "sagemaker/update-monitoring-schedule.json": ("ignored", None),
    "sagemaker/create-feature-group-no-key.json": ("ignored", None),
    "sagemaker/update-feature-group.json": ("ignored", None),
    "sagemaker/create-inference-experiment-no-key.json": ("ignored", None),
    "sagemaker/update-inference-experiment.json": ("ignored", None),
    "config/sagemaker-model-isolation-enabled-noncompliant.json": ("ignored", None),
    "config/sagemaker-monitoring-schedule-isolation-noncompliant.json": ("ignored", None),
    # watch_inputs' samples (trails, Macie, ML Warden's own resources, the canary): not about S3 public access
    "cloudtrail/delete-trail.json": ("ignored", None),
    "cloudtrail/put-event-selectors-no-management.json": ("ignored", None),
    "cloudtrail/stop-logging-failed.json": ("ignored", None),
    "cloudtrail/stop-logging.json": ("ignored", None),
    "cloudtrail/update-trail-single-region.json": ("ignored", None),
    "eventbridge/delete-rule-own.json": ("ignored", None),
    "eventbridge/disable-rule-other.json": ("ignored", None),
    "eventbridge/disable-rule-own.json": ("ignored", None),
    "eventbridge/put-rule-own-pattern.json": ("ignored", None),
    "eventbridge/remove-targets-own.json": ("ignored", None),
    "iam/detach-role-policy-own-role.json": ("ignored", None),
    "iam/update-assume-role-policy-own-role.json": ("ignored", None),
    "iam/update-role-liveness-canary.json": ("ignored", None),
    "lambda/delete-function-own.json": ("ignored", None),
    "lambda/put-function-concurrency-zero-own.json": ("ignored", None),
    "lambda/remove-permission-own.json": ("ignored", None),
    "lambda/update-function-code-own.json": ("ignored", None),
    "lambda/update-function-configuration-own.json": ("ignored", None),
    "macie/disable-macie.json": ("ignored", None),
    "macie/update-automated-discovery-disabled.json": ("ignored", None),
    "macie/update-macie-session-paused.json": ("ignored", None),
    "ssm/put-parameter-liveness-canary.json": ("ignored", None),
    # guard_kms_keys' and guard_s3_data's samples: nothing that can open public access
    "kms/schedule-key-deletion.json": ("ignored", None),
    "kms/disable-key.json": ("ignored", None),
    "kms/disable-key-rotation.json": ("ignored", None),
    "kms/put-key-policy-public.json": ("ignored", None),
    "kms/create-key.json": ("ignored", None),
    "s3/delete-bucket-policy.json": ("ignored", None),
    "s3/put-bucket-encryption-sse-s3.json": ("ignored", None),
    "s3/create-access-point-no-block.json": ("ignored", None),
    "macie/policy-s3-bucket-shared-externally.json": ("ignored", None),
    # a grant to another account is not public, and this test's account has no shared-datasets bucket
    "s3/put-bucket-policy-cross-account.json": ("ignored", None),
}


def test_every_sample_says_what_the_handler_does_with_it() -> None:
    samples = sorted(
        str(path.relative_to(ROOT / "events")) for path in (ROOT / "events").rglob("*.json") if path.name != "env.json"
    )

    assert samples == sorted(SAMPLES)


ACCOUNT_SAMPLES = {
    "securityhub/control-s3-1-account-block-off.json",
    "s3/delete-account-public-access-block.json",
    "config/s3-account-level-public-access-blocks-periodic-noncompliant.json",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_event(aws: Any, handler: Any, sample_event: Any, name: str) -> None:
    outcome, blocked = SAMPLES[name]
    demo_state(aws)
    untouched = {"mlw-public-website", "mlw-training-data-acl", "mlw-training-data-policy", "mlw-feature-store"} - {
        blocked
    }

    result = handler(sample_event(name))

    assert result["outcome"] == outcome, result["reason"]
    if blocked:
        assert aws.block_of(blocked) == ALL_ON
    for bucket in untouched:
        assert aws.block_of(bucket) is None, f"{bucket} was changed"
    assert aws.account_block() == (ALL_ON if name in ACCOUNT_SAMPLES else None)
    received = aws.alerts()
    assert len(received) == (1 if outcome in ALERTED else 0)
    if received:
        assert received[0].outcome["event_id"] == sample_event(name)["id"]


def test_account_sample_restores_the_account_block_when_nothing_is_exempt(
    aws: Any, handler: Any, sample_event: Any
) -> None:
    aws.bucket("mlw-training-data-acl")

    result = handler(sample_event("s3/delete-account-public-access-block.json"))

    assert result["outcome"] == "remediated"
    assert aws.account_block() == ALL_ON


# --- real records (Panther's detection fixtures, Apache-2.0), see tests/fixtures/real/NOTICE.md ----------

PANTHER = "cloudtrail/raw_records/panther/"


@pytest.mark.parametrize(
    ("record", "setup", "outcome", "reason"),
    [
        pytest.param(
            "PutBucketAcl__aws-s3-bucketpolicymodified__s3-bucket-policy-modified.json",
            {"name": "bucket", "acl": "public-read"},
            "remediated",
            None,
            id="put-bucket-acl",
        ),
        pytest.param(
            "PutBucketAcl__aws-s3-bucketpolicymodified__s3-bucket-policy-modified-error-response.json",
            {"name": "bucket", "acl": "public-read"},
            "ignored",
            "PutBucketAcl failed with AccessDenied: nothing changed",
            id="put-bucket-acl-access-denied",
        ),
        pytest.param(
            "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__s3-made-publicly-accessible.json",
            {"name": "example-bucket", "public_policy": True},
            "remediated",
            None,
            id="put-bucket-policy-public",
        ),
        pytest.param(
            "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__s3-not-made-publicly-accessible.json",
            {"name": "example-bucket"},
            "remediated",  # the policy is not public, but the bucket has no block: MEDIUM
            None,
            id="put-bucket-policy-service-principal",
        ),
        pytest.param(
            "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__s3-failed-to-make-publicly-accessible.json",
            {"name": "example-bucket", "public_policy": True},
            "ignored",
            "PutBucketPolicy failed with AccessDenied: nothing changed",
            id="put-bucket-policy-failed",
        ),
        pytest.param(
            "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__null-request-parameters.json",
            None,
            "ignored",
            "PutBucketPolicy names no bucket",
            id="null-request-parameters",
        ),
        pytest.param(
            "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__invalid-json-policy-should-not-alert.json",
            None,
            "ignored",
            "PutBucketPolicy names no bucket",
            id="invalid-json-policy-no-bucket",
        ),
        pytest.param(
            "PutBucketPolicy__aws-cloudtrail-resourcemadepublic__all-restrictive-conditions-types-should-not-alert.json",
            None,
            "ignored",
            "PutBucketPolicy names no bucket",
            id="conditions-no-bucket",
        ),
        pytest.param(
            "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__public-access-block-deleted-successfully.json",
            {"name": "corporate-documents"},
            "remediated",
            None,
            id="delete-bucket-block",
        ),
        pytest.param(
            "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__public-access-block-deletion-failed.json",
            {"name": "corporate-documents"},
            "ignored",
            "DeleteBucketPublicAccessBlock failed with AccessDenied: nothing changed",
            id="delete-bucket-block-failed",
        ),
        pytest.param(
            "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__non-s3-event.json",
            {"name": "corporate-documents"},
            "ignored",
            "ec2.amazonaws.com DeleteBucketPublicAccessBlock is not an S3 call",
            id="non-s3-event-source",
        ),
        pytest.param(
            "PutBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__different-s3-event.json",
            {"name": "corporate-documents", "block": ALL_ON},
            "compliant",
            None,
            id="put-bucket-block-already-on",
        ),
    ],
)
def test_real_record(
    aws: Any,
    handler: Any,
    real_record: Any,
    record: str,
    setup: dict[str, Any] | None,
    outcome: str,
    reason: str | None,
) -> None:
    if setup:
        aws.bucket(**setup)
    before = aws.block_of(setup["name"]) if setup else None

    result = handler(real_record(PANTHER + record))

    assert result["outcome"] == outcome, result["reason"]
    if reason is not None:
        assert result["reason"] == reason
    if setup:
        assert aws.block_of(setup["name"]) == (ALL_ON if outcome == "remediated" else before)
    assert len(aws.alerts()) == (1 if outcome in ALERTED else 0)


def test_real_record_alert_reports_the_event_account_and_actor(aws: Any, handler: Any, real_record: Any) -> None:
    # Panther's record is from account 111111111111 by an assumed role whose session name is 140 characters.
    aws.bucket("corporate-documents")

    record = (
        "DeleteBucketPublicAccessBlock__aws-s3-deletepublicaccessblock__public-access-block-deleted-successfully.json"
    )

    handler(real_record(PANTHER + record))

    alert = aws.only_alert()
    assert alert.attributes["account"] == "111111111111"
    assert alert.attributes["severity"] == "MEDIUM"
    assert alert.line("Who").startswith("arn:aws:sts::111111111111:assumed-role/sample-role-dreamy-yonath/")
    assert len(alert.subject) < 100
