"""Which events name a bucket or an account for block_public_s3, and why the others are not its business."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.checks.block_public_s3 import AccountTarget, BucketTarget, partition_of, targets_from_event
from mlwarden.events import parse_event

EventBuilder = Callable[..., dict[str, Any]]


@pytest.mark.parametrize(
    "event_name",
    ["CreateBucket", "PutBucketAcl", "PutBucketPolicy", "DeleteBucketPublicAccessBlock", "PutBucketPublicAccessBlock"],
)
def test_bucket_calls_name_the_bucket(cloudtrail_event: EventBuilder, event_name: str) -> None:
    target = targets_from_event(parse_event(cloudtrail_event(event_name, "training-data")))

    assert target == BucketTarget(name="training-data", partition="aws")
    assert isinstance(target, BucketTarget)
    assert target.arn == "arn:aws:s3:::training-data"


def test_bucket_name_in_a_one_element_list_is_accepted(cloudtrail_event: EventBuilder) -> None:
    event = cloudtrail_event("PutBucketAcl", request_parameters={"bucketName": ["training-data"], "acl": [""]})

    assert targets_from_event(parse_event(event)) == BucketTarget("training-data", "aws")


@pytest.mark.parametrize(
    ("region", "partition", "arn"),
    [
        ("us-east-1", "aws", "arn:aws:s3:::training-data"),
        ("cn-north-1", "aws-cn", "arn:aws-cn:s3:::training-data"),
        ("us-gov-west-1", "aws-us-gov", "arn:aws-us-gov:s3:::training-data"),
    ],
)
def test_bucket_arn_uses_the_partition_of_the_region(
    cloudtrail_event: EventBuilder, region: str, partition: str, arn: str
) -> None:
    target = targets_from_event(parse_event(cloudtrail_event("PutBucketAcl", "training-data", region=region)))

    assert isinstance(target, BucketTarget)
    assert target.partition == partition
    assert target.arn == arn


def test_partition_of_unknown_region_is_aws() -> None:
    assert partition_of(None) == "aws"


@pytest.mark.parametrize("event_name", ["PutAccountPublicAccessBlock", "DeleteAccountPublicAccessBlock"])
def test_account_calls_name_the_account(cloudtrail_event: EventBuilder, event_name: str) -> None:
    event = cloudtrail_event(event_name, request_parameters={"host": ["s3-control.amazonaws.com"]})

    target = targets_from_event(parse_event(event))

    assert target == AccountTarget("123456789012")
    assert isinstance(target, AccountTarget)
    assert target.resource == "AWS::::Account:123456789012"


def test_account_call_without_recipient_uses_the_caller_account(cloudtrail_event: EventBuilder) -> None:
    raw = cloudtrail_event("DeleteAccountPublicAccessBlock")
    del raw["detail"]["recipientAccountId"]
    raw["account"] = None

    assert targets_from_event(parse_event(raw)) == AccountTarget("123456789012")


def test_account_call_without_any_account_is_not_a_target(cloudtrail_event: EventBuilder) -> None:
    raw = cloudtrail_event("DeleteAccountPublicAccessBlock", user_identity={"type": "Root"})
    del raw["detail"]["recipientAccountId"]
    raw["account"] = None

    assert targets_from_event(parse_event(raw)) == "DeleteAccountPublicAccessBlock names no account"


@pytest.mark.parametrize("event_source", ["s3.amazonaws.com", "s3control.amazonaws.com", "s3-control.amazonaws.com"])
def test_all_s3_event_sources_are_accepted(cloudtrail_event: EventBuilder, event_source: str) -> None:
    event = cloudtrail_event("DeleteAccountPublicAccessBlock", event_source=event_source)

    assert targets_from_event(parse_event(event)) == AccountTarget("123456789012")


def test_non_s3_event_source_is_not_a_target(cloudtrail_event: EventBuilder) -> None:
    # Panther fixture aws-s3-deletepublicaccessblock/non-s3-event: the S3 event name from ec2.amazonaws.com
    event = cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data", event_source="ec2.amazonaws.com")

    assert targets_from_event(parse_event(event)) == "ec2.amazonaws.com DeleteBucketPublicAccessBlock is not an S3 call"


@pytest.mark.parametrize("event_name", ["GetObject", "GetBucketTagging", "DeleteBucket", "PutBucketVersioning"])
def test_other_s3_calls_are_not_targets(cloudtrail_event: EventBuilder, event_name: str) -> None:
    assert targets_from_event(parse_event(cloudtrail_event(event_name, "training-data"))) == (
        f"S3 call {event_name} cannot open public access"
    )


@pytest.mark.parametrize(
    ("request_parameters", "reason"),
    [
        pytest.param(None, "PutBucketAcl names no bucket", id="null-request-parameters"),
        pytest.param({}, "PutBucketAcl names no bucket", id="no-bucketName"),
        pytest.param({"bucketName": ""}, "PutBucketAcl names no bucket", id="empty"),  # AWS docs PutBucketAcl sample
        pytest.param({"bucketName": [""]}, "PutBucketAcl names no bucket", id="list-of-empty"),
        pytest.param(
            {"bucketName": "-leading-dash"}, "PutBucketAcl names an invalid bucket '-leading-dash'", id="dash"
        ),
        pytest.param({"bucketName": "a"}, "PutBucketAcl names an invalid bucket 'a'", id="one-character"),
        pytest.param({"bucketName": "has space"}, "PutBucketAcl names an invalid bucket 'has space'", id="space"),
        pytest.param({"bucketName": "a/b"}, "PutBucketAcl names an invalid bucket 'a/b'", id="slash"),
        pytest.param(
            {"bucketName": "b" * 256}, "PutBucketAcl names an invalid bucket '" + "b" * 80 + "'", id="too-long"
        ),
    ],
)
def test_missing_or_invalid_bucket_names_are_not_targets(
    cloudtrail_event: EventBuilder, request_parameters: Any, reason: str
) -> None:
    event = cloudtrail_event("PutBucketAcl", request_parameters=request_parameters)

    assert targets_from_event(parse_event(event)) == reason


@pytest.mark.parametrize("name", ["Legacy_Bucket", "my.bucket.example.com", "abc", "x" * 63])
def test_legacy_and_dotted_bucket_names_are_targets(cloudtrail_event: EventBuilder, name: str) -> None:
    assert targets_from_event(parse_event(cloudtrail_event("PutBucketAcl", name))) == BucketTarget(name, "aws")


# --- AWS Config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        "s3-bucket-public-read-prohibited",
        "s3-bucket-public-write-prohibited",
        "s3-bucket-level-public-access-prohibited",
        "s3-bucket-public-read-prohibited-a1b2c3",  # deployed names carry suffixes
        "s3-bucket-public-write-prohibited-conformance-pack-x9y8z7",
        "securityhub-s3-bucket-public-read-prohibited-5f2e1d",  # Security Hub's copy of the managed rule
        "securityhub-s3-bucket-level-public-access-prohibited-77aa01",
    ],
)
def test_config_bucket_rules_name_the_bucket(config_event: EventBuilder, rule: str) -> None:
    event = config_event(rule, "AWS::S3::Bucket", "training-data", "NON_COMPLIANT")

    assert targets_from_event(parse_event(event)) == BucketTarget("training-data", "aws")


@pytest.mark.parametrize(
    "rule",
    [
        "s3-account-level-public-access-blocks",
        "s3-account-level-public-access-blocks-periodic",
        "securityhub-s3-account-level-public-access-blocks-periodic-3c4d5e",
    ],
)
def test_config_account_rules_name_the_account(config_event: EventBuilder, rule: str) -> None:
    event = config_event(rule, "AWS::::Account", "123456789012", "NON_COMPLIANT")

    assert targets_from_event(parse_event(event)) == AccountTarget("123456789012")


def test_config_account_resource_that_is_not_an_id_falls_back_to_the_event_account(config_event: EventBuilder) -> None:
    event = config_event("s3-account-level-public-access-blocks", "AWS::::Account", "AWS::::Account", "NON_COMPLIANT")

    assert targets_from_event(parse_event(event)) == AccountTarget("123456789012")


@pytest.mark.parametrize("compliance", ["COMPLIANT", "NOT_APPLICABLE", "INSUFFICIENT_DATA"])
def test_config_results_other_than_non_compliant_are_not_targets(config_event: EventBuilder, compliance: str) -> None:
    event = config_event("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "training-data", compliance)

    assert targets_from_event(parse_event(event)) == (
        f"Config rule s3-bucket-public-read-prohibited reports {compliance}, nothing to fix"
    )


@pytest.mark.parametrize(
    "rule",
    [
        "s3-bucket-ssl-requests-only",
        "s3-bucket-versioning-enabled",
        "my-s3-bucket-public-read-prohibited",  # a custom rule that only contains the name
        "securityhub-iam-root-access-key-check-1a2b3c",
    ],
)
def test_other_config_rules_are_not_targets(config_event: EventBuilder, rule: str) -> None:
    event = config_event(rule, "AWS::S3::Bucket", "training-data", "NON_COMPLIANT")

    assert targets_from_event(parse_event(event)) == f"Config rule {rule} is not a public-S3 rule"


def test_config_rule_on_another_resource_type_is_not_a_target(config_event: EventBuilder) -> None:
    event = config_event("s3-bucket-public-read-prohibited", "AWS::EC2::Instance", "i-0abc", "NON_COMPLIANT")

    assert (
        targets_from_event(parse_event(event))
        == "Config resource type AWS::EC2::Instance is not a bucket or an account"
    )


def test_config_rule_with_an_invalid_bucket_is_not_a_target(config_event: EventBuilder) -> None:
    event = config_event("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "not a bucket", "NON_COMPLIANT")

    assert targets_from_event(parse_event(event)) == (
        "Config rule s3-bucket-public-read-prohibited names an invalid bucket 'not a bucket'"
    )


# --- Macie ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "finding_type", ["Policy:IAMUser/S3BucketPublic", "Policy:IAMUser/S3BlockPublicAccessDisabled"]
)
def test_macie_public_bucket_findings_name_the_bucket(macie_event: EventBuilder, finding_type: str) -> None:
    assert targets_from_event(parse_event(macie_event(finding_type, "training-data"))) == BucketTarget(
        "training-data", "aws"
    )


@pytest.mark.parametrize(
    "finding_type",
    [
        "Policy:IAMUser/S3BucketEncryptionDisabled",  # the AWS EventBridge guide's Macie sample
        "Policy:IAMUser/S3BucketSharedExternally",
        "Policy:IAMUser/S3BucketReplicatedExternally",
        "SensitiveData:S3Object/Personal",
    ],
)
def test_other_macie_findings_are_not_targets(macie_event: EventBuilder, finding_type: str) -> None:
    assert targets_from_event(parse_event(macie_event(finding_type, "training-data"))) == (
        f"Macie finding {finding_type} is not a public-bucket finding"
    )


def test_macie_finding_without_bucket_is_not_a_target(macie_event: EventBuilder) -> None:
    assert targets_from_event(parse_event(macie_event("Policy:IAMUser/S3BucketPublic", None))) == (
        "Macie finding Policy:IAMUser/S3BucketPublic names no bucket"
    )


def test_unrecognised_event_keeps_its_reason() -> None:
    assert targets_from_event(parse_event([])) == "event is a list, not a JSON object"
