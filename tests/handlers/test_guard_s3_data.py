"""guard_s3_data against moto: the bucket's policy and encryption after the handler ran, and the alert received.

AWS rules encoded here:
- A bucket policy is at most 20 KB (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-policies.html).
- S3.5 wants a Deny on aws:SecureTransport false
  (https://docs.aws.amazon.com/securityhub/latest/userguide/s3-controls.html#s3-5).
- S3.17 wants SSE-KMS or DSSE-KMS default encryption (#s3-17); since January 2023 every bucket has SSE-S3
  (AES256) at least (https://docs.aws.amazon.com/AmazonS3/latest/userguide/default-encryption-faq.html).
- An access point's block public access settings cannot be changed after it is created (S3.19;
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/access-points-bpa-settings.html).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.rules.bucket_policy import HTTPS_ONLY_SID, requires_https
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler

KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER = "111122223333"


@pytest.fixture
def data_handler(make_handler: Callable[..., Handler]) -> Callable[..., Handler]:
    def make(**kwargs: Any) -> Handler:
        return make_handler(app="guard_s3_data", **kwargs)

    return make


def policy_of(aws: AwsWorld, bucket: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(aws.s3.get_bucket_policy(Bucket=bucket)["Policy"])
    return document


def readers(bucket: str) -> dict[str, Any]:
    return {
        "Sid": "TrainingRoleReads",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/Trainer"},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }


def kms_encrypted(aws: AwsWorld, bucket: str) -> None:
    aws.s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN}}]
        },
    )


def test_pii_bucket_without_https_deny_gets_the_statement_merged_and_keeps_its_own(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("pii-data", tags={"mlwarden:pii": "true"})
    kms_encrypted(aws, "pii-data")
    before = {"Version": "2012-10-17", "Statement": [readers("pii-data")]}
    aws.s3.put_bucket_policy(Bucket="pii-data", Policy=json.dumps(before))

    outcome = data_handler()(cloudtrail_event("PutBucketPolicy", "pii-data"))

    after = policy_of(aws, "pii-data")
    assert after["Statement"][0] == readers("pii-data")
    assert [s["Sid"] for s in after["Statement"]] == ["TrainingRoleReads", HTTPS_ONLY_SID]
    assert requires_https(after, "arn:aws:s3:::pii-data")
    assert outcome["outcome"] == "remediated"
    assert outcome["controls"] == ["S3.5"]
    assert json.loads(outcome["previous_state"]["Policy"]) == before
    assert outcome["undo"].startswith("aws s3api put-bucket-policy --bucket pii-data --policy ")
    alert = aws.only_alert()
    assert alert.outcome["severity"] == "HIGH"


def test_bucket_without_policy_gets_one_and_the_undo_deletes_it(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("pii-new", tags={"mlwarden:pii": "true"})
    kms_encrypted(aws, "pii-new")

    outcome = data_handler()(cloudtrail_event("CreateBucket", "pii-new"))

    assert requires_https(policy_of(aws, "pii-new"), "arn:aws:s3:::pii-new")
    assert outcome["undo"] == "aws s3api delete-bucket-policy --bucket pii-new"


def test_bucket_without_pii_is_flagged_not_changed_by_default(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("plain")
    kms_encrypted(aws, "plain")

    outcome = data_handler()(cloudtrail_event("DeleteBucketPolicy", "plain"))

    assert outcome["outcome"] == "flagged"
    assert outcome["severity"] == "MEDIUM"
    with pytest.raises(aws.s3.exceptions.ClientError):
        aws.s3.get_bucket_policy(Bucket="plain")


def test_https_only_for_all_buckets_when_asked(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("plain")
    kms_encrypted(aws, "plain")

    outcome = data_handler(env={"HTTPS_ONLY_BUCKETS": "all"})(cloudtrail_event("DeleteBucketPolicy", "plain"))

    assert outcome["outcome"] == "remediated"
    assert requires_https(policy_of(aws, "plain"), "arn:aws:s3:::plain")


def test_policy_near_the_20_kb_limit_is_flagged_not_broken(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("big-policy", tags={"mlwarden:pii": "true"})
    kms_encrypted(aws, "big-policy")
    statements = [
        {
            **readers("big-policy"),
            "Sid": f"Reader{n:03d}",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/R{n:03d}"},
        }
        for n in range(129)
    ]
    before = json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))
    assert 19_800 < len(before) < 20_480
    aws.s3.put_bucket_policy(Bucket="big-policy", Policy=before)

    outcome = data_handler()(cloudtrail_event("PutBucketPolicy", "big-policy"))

    assert outcome["outcome"] == "flagged"
    assert "20 KB" in outcome["reason"]
    assert json.loads(aws.s3.get_bucket_policy(Bucket="big-policy")["Policy"]) == json.loads(before)


def test_planted_look_alike_statement_with_our_sid_does_not_count_and_is_replaced(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    """Attack: someone names a harmless statement like ours so the check believes HTTPS is enforced."""
    aws.bucket("pii-planted", tags={"mlwarden:pii": "true"})
    kms_encrypted(aws, "pii-planted")
    planted = {
        "Sid": HTTPS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteBucket",
        "Resource": "arn:aws:s3:::pii-planted",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    aws.s3.put_bucket_policy(
        Bucket="pii-planted",
        Policy=json.dumps({"Version": "2012-10-17", "Statement": [readers("pii-planted"), planted]}),
    )

    outcome = data_handler()(cloudtrail_event("PutBucketPolicy", "pii-planted"))

    after = policy_of(aws, "pii-planted")
    assert outcome["outcome"] == "remediated"
    assert requires_https(after, "arn:aws:s3:::pii-planted")
    assert [s["Sid"] for s in after["Statement"]] == ["TrainingRoleReads", HTTPS_ONLY_SID]


def test_exempt_pii_bucket_is_alerted_and_its_policy_left_as_is(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("pii-exempt", tags={"mlwarden:pii": "true"})
    kms_encrypted(aws, "pii-exempt")
    aws.grant_exemption("arn:aws:s3:::pii-exempt", check="guard_s3_data")

    outcome = data_handler()(cloudtrail_event("DeleteBucketPolicy", "pii-exempt"))

    assert outcome["outcome"] == "exempt"
    with pytest.raises(aws.s3.exceptions.ClientError):
        aws.s3.get_bucket_policy(Bucket="pii-exempt")


def test_grant_to_another_account_is_flagged_and_never_rewritten(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("shared")
    kms_encrypted(aws, "shared")
    grant = {
        "Sid": "PartnerWritesPolicy",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
        "Action": ["s3:GetObject", "s3:PutBucketPolicy"],
        "Resource": ["arn:aws:s3:::shared", "arn:aws:s3:::shared/*"],
    }
    before = {"Version": "2012-10-17", "Statement": [grant]}
    aws.s3.put_bucket_policy(Bucket="shared", Policy=json.dumps(before))

    outcome = data_handler()(cloudtrail_event("PutBucketPolicy", "shared"))

    assert policy_of(aws, "shared") == before
    assert outcome["outcome"] == "flagged"
    assert outcome["severity"] == "HIGH"
    assert outcome["controls"] == ["S3.5", "S3.6"]
    assert outcome["details"]["foreign_grants"][0]["statement"] == "PartnerWritesPolicy"


def test_trusted_account_is_not_outside(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("shared")
    kms_encrypted(aws, "shared")
    grant = {**readers("shared"), "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}}
    aws.s3.put_bucket_policy(Bucket="shared", Policy=json.dumps({"Version": "2012-10-17", "Statement": [grant]}))

    outcome = data_handler(env={"TRUSTED_ACCOUNT_IDS": OTHER})(cloudtrail_event("PutBucketPolicy", "shared"))

    assert outcome["controls"] == ["S3.5"]


def test_sse_s3_default_encryption_is_flagged_high_on_pii(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("pii-aes", tags={"mlwarden:pii": "true"})
    aws.s3.put_bucket_encryption(
        Bucket="pii-aes",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )

    outcome = data_handler(env={"HTTPS_ONLY_BUCKETS": "off"})(cloudtrail_event("PutBucketEncryption", "pii-aes"))

    assert outcome["outcome"] == "flagged"
    assert outcome["severity"] == "HIGH"
    assert outcome["controls"] == ["S3.17", "S3.5"]
    assert outcome["details"]["default_encryption"] == "AES256"


def test_sse_kms_fix_with_the_named_key_is_written_and_read_back(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("plain-aes")
    aws.s3.put_bucket_encryption(
        Bucket="plain-aes",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )

    outcome = data_handler(env={"DEFAULT_ENCRYPTION_KEY_ARN": KEY_ARN, "HTTPS_ONLY_BUCKETS": "off"})(
        cloudtrail_event("DeleteBucketEncryption", "plain-aes")
    )

    rule = aws.s3.get_bucket_encryption(Bucket="plain-aes")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN}
    assert outcome["outcome"] == "remediated"
    assert outcome["actions"] == ["s3:PutEncryptionConfiguration"]
    assert "AES256" in outcome["undo"]


def test_macie_encryption_disabled_finding_is_routed_here(
    aws: AwsWorld, data_handler: Callable[..., Handler], macie_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("training-data")

    outcome = data_handler(env={"HTTPS_ONLY_BUCKETS": "off"})(
        macie_event("Policy:IAMUser/S3BucketEncryptionDisabled", "training-data")
    )

    assert outcome["resource"] == "arn:aws:s3:::training-data"
    assert "S3.17" in outcome["controls"]


def test_access_point_without_its_block_is_flagged_with_recreate_instructions(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("training-data")
    aws.s3control.create_access_point(
        AccountId=ACCOUNT,
        Name="open-point",
        Bucket="training-data",
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": False,
            "IgnorePublicAcls": False,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )
    event = cloudtrail_event(
        "CreateAccessPoint",
        request_parameters={"name": "open-point", "x-amz-account-id": ACCOUNT, "CreateAccessPointRequest": {}},
    )

    outcome = data_handler()(event)

    assert outcome["resource"] == f"arn:aws:s3:{REGION}:{ACCOUNT}:accesspoint/open-point"
    assert outcome["outcome"] == "flagged"
    assert outcome["controls"] == ["S3.19"]
    assert "aws s3control create-access-point" in outcome["reason"]


def test_access_point_with_its_block_on_and_no_policy_is_compliant(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    aws.bucket("training-data")
    aws.s3control.create_access_point(AccountId=ACCOUNT, Name="closed-point", Bucket="training-data")

    outcome = data_handler()(
        cloudtrail_event("CreateAccessPoint", request_parameters={"name": "closed-point", "x-amz-account-id": ACCOUNT})
    )

    assert outcome["outcome"] == "compliant"


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ({}, "names no access point"),
        ({"name": "Bad_Name!"}, "invalid access point"),
    ],
)
def test_unreadable_access_point_events_are_ignored(
    aws: AwsWorld,
    data_handler: Callable[..., Handler],
    cloudtrail_event: Callable[..., dict[str, Any]],
    parameters: dict[str, Any],
    reason: str,
) -> None:
    outcome = data_handler()(cloudtrail_event("PutAccessPointPolicy", request_parameters=parameters))

    assert outcome["outcome"] == "ignored"
    assert reason in outcome["reason"]


def test_public_access_point_policy_behind_an_open_block_is_critical(
    aws: AwsWorld, data_handler: Callable[..., Handler], cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    # moto answers GetAccessPointPolicyStatus IsPublic=true for any policy; S3 evaluates the policy itself.
    aws.bucket("training-data")
    off = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), False)
    aws.s3control.create_access_point(
        AccountId=ACCOUNT, Name="open-point", Bucket="training-data", PublicAccessBlockConfiguration=off
    )
    arn = f"arn:aws:s3:{REGION}:{ACCOUNT}:accesspoint/open-point"
    public = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/object/*"}],
    }
    aws.s3control.put_access_point_policy(AccountId=ACCOUNT, Name="open-point", Policy=json.dumps(public))

    outcome = data_handler()(
        cloudtrail_event("PutAccessPointPolicy", request_parameters={"name": "open-point", "x-amz-account-id": ACCOUNT})
    )

    assert outcome["outcome"] == "flagged"
    assert outcome["severity"] == "CRITICAL"
    assert outcome["findings"] == ["access-point-block-off", "access-point-policy-public"]
    assert outcome["controls"] == ["S3.19"]
