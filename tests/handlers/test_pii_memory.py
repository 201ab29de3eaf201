"""What Macie found stays found: removing `mlwarden:pii` neither lowers a grading nor goes unnoticed.

Issue 10, item 8: the tag was the only memory, so a user who can tag could remove it and quietly lower
severity (CRITICAL -> HIGH for a public bucket, HIGH -> LOW for a SageMaker job). tag_pii_bucket now keeps
the classification in the outcome table (`tag_pii_bucket#pii#<bucket arn>`); block_public_s3 and
check_sagemaker_encryption read it. Also here: item 6 (a tag value that crashed the handler) and
item 10 (exposure, then deletion, before the event is processed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
BUCKET = "mlw-training-data-acl"  # the bucket events/macie/sensitive-data-personal.json names
RECORD_ID = f"tag_pii_bucket#pii#arn:aws:s3:::{BUCKET}"
ACCOUNT = "123456789012"


@pytest.fixture
def tagger(make_handler: Callable[..., Any]) -> Any:
    return make_handler(app="tag_pii_bucket")


@pytest.fixture
def blocker(make_handler: Callable[..., Any]) -> Any:
    return make_handler()


def untag(aws: Any, bucket: str, keep: dict[str, str] | None = None) -> None:
    """What an attacker who can tag does: put the set back without mlwarden:pii (and its companions)."""
    aws.s3.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in (keep or {}).items()]}
    )


def test_a_finding_is_remembered_in_the_outcome_table_without_expiry(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(BUCKET, block=ALL_ON)

    tagger(sample_event("macie/sensitive-data-personal.json"))

    record = aws.outcome_records()[RECORD_ID]
    assert set(record["types"]) == {"ADDRESS", "DATE_OF_BIRTH", "NAME", "PHONE_NUMBER", "USA_SOCIAL_SECURITY_NUMBER"}
    assert record["severities"] == ["High"]
    assert "expiration" not in record  # the table's TTL never forgets PII


def test_removing_the_pii_tag_does_not_lower_a_public_bucket_from_critical(
    aws: Any, tagger: Any, blocker: Any, sample_event: Any, cloudtrail_event: Any
) -> None:
    # Given a bucket Macie found PII in
    aws.bucket(BUCKET, block=ALL_ON, tags={"team": "ml"})
    tagger(sample_event("macie/sensitive-data-personal.json"))
    aws.alerts()
    # When someone removes the PII tags, drops the block and makes the bucket public
    untag(aws, BUCKET, {"team": "ml"})
    aws.s3.delete_public_access_block(Bucket=BUCKET)
    aws.s3.put_bucket_acl(Bucket=BUCKET, ACL="public-read")

    result = blocker(cloudtrail_event("PutBucketAcl", BUCKET))

    # Then block_public_s3 still grades it as a public PII bucket (before: HIGH) and locks it
    assert result["severity"] == "CRITICAL"
    assert result["details"]["pii_tag"] is False
    assert result["details"]["pii_remembered"]["severity"] == "High"
    assert aws.block_of(BUCKET) == ALL_ON


@pytest.mark.parametrize("call", ["PutBucketTagging", "DeleteBucketTagging"])
def test_removing_the_pii_tag_is_alerted_naming_who(
    aws: Any, tagger: Any, blocker: Any, sample_event: Any, cloudtrail_event: Any, call: str
) -> None:
    aws.bucket(BUCKET, block=ALL_ON, tags={"team": "ml"})
    tagger(sample_event("macie/sensitive-data-personal.json"))
    aws.alerts()
    if call == "DeleteBucketTagging":
        aws.s3.delete_bucket_tagging(Bucket=BUCKET)
    else:
        untag(aws, BUCKET, {"team": "ml"})

    result = blocker(cloudtrail_event(call, BUCKET))

    # Before: the tagging call was not routed, nothing was said
    assert result["outcome"] == "flagged"
    assert result["severity"] == "MEDIUM"
    tagged, alert = aws.alerts()  # the finding's, then the removal's
    assert tagged.attributes["check"] == "tag_pii_bucket"
    assert f"the mlwarden:pii tag is gone ({call} by " in alert.line("What")
    assert "data-scientist" in alert.line("What")  # the actor is kept
    assert "still grades it as holding PII" in alert.line("What")
    assert alert.outcome["details"]["pii_tag_removed"] is True


def test_a_tagging_call_that_keeps_the_pii_tag_is_quiet(
    aws: Any, tagger: Any, blocker: Any, sample_event: Any, cloudtrail_event: Any
) -> None:
    aws.bucket(BUCKET, block=ALL_ON)
    tagger(sample_event("macie/sensitive-data-personal.json"))
    aws.alerts()
    tags = aws.tags_of(BUCKET)
    aws.s3.put_bucket_tagging(
        Bucket=BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in {**tags, "cost": "ml"}.items()]}
    )

    result = blocker(cloudtrail_event("PutBucketTagging", BUCKET))

    assert result["outcome"] == "compliant"
    assert [a.attributes["check"] for a in aws.alerts()] == ["tag_pii_bucket"]  # the finding's alone


def test_a_tagging_call_on_a_bucket_without_findings_is_quiet(aws: Any, blocker: Any, cloudtrail_event: Any) -> None:
    aws.bucket("plain-bucket", block=ALL_ON, tags={"team": "ml"})

    result = blocker(cloudtrail_event("PutBucketTagging", "plain-bucket"))

    assert result["outcome"] == "compliant"
    assert aws.alerts() == []


def test_removing_the_pii_tag_does_not_lower_a_sagemaker_job_from_high(
    aws: Any, tagger: Any, make_handler: Callable[..., Any], sample_event: Any, cloudtrail_event: Any
) -> None:
    # Given a bucket Macie found PII in, whose tags were then removed
    aws.bucket(BUCKET, block=ALL_ON)
    tagger(sample_event("macie/sensitive-data-personal.json"))
    untag(aws, BUCKET)
    aws.alerts()
    # When a training job with keys but outside a VPC reads it
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    sagemaker.create_training_job(
        TrainingJobName="churn",
        AlgorithmSpecification={"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution",
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/train/"}},
            }
        ],
        OutputDataConfig={"S3OutputPath": "s3://model-artifacts/out/", "KmsKeyId": key},
        ResourceConfig={
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
            "VolumeKmsKeyId": key,
        },
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    check = make_handler(app="check_sagemaker_encryption")

    result = check(
        cloudtrail_event(
            "CreateTrainingJob", request_parameters={"trainingJobName": "churn"}, event_source="sagemaker.amazonaws.com"
        )
    )

    # Then the network rule is graded for PII data (before: LOW)
    assert result["severity"] == "HIGH"
    assert result["details"]["pii_buckets"] == [BUCKET]


# --- issue 10, item 6: a tag value cannot disable the check ------------------------------------------------


def test_a_last_seen_tag_beyond_year_9999_neither_crashes_nor_stops_the_lock(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    # Before: OverflowError in the handler; no outcome, no alert, the public bucket left open.
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:pii-last-seen": "9999-12-31T23:59:59-01:00"})

    result = tagger(sample_event("macie/sensitive-data-personal.json"))

    assert result["outcome"] == "remediated"
    assert result["severity"] == "CRITICAL"
    assert aws.block_of(BUCKET) == ALL_ON
    assert aws.tags_of(BUCKET)["mlwarden:pii-last-seen"] == "2025-06-03T13:05:11Z"
    assert result["details"]["notes"] == [
        "mlwarden:pii-last-seen is not a usable time (unparseable, out of range or in the future): treated as absent"
    ]


def test_a_future_updated_at_does_not_pin_the_last_seen_tags(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(BUCKET, block=ALL_ON)
    future = sample_event("macie/sensitive-data-personal.json")
    future["detail"].update(updatedAt="2999-01-01T00:00:00Z", id="future-finding")
    tagger(future)
    later = sample_event("macie/sensitive-data-personal-republished.json")

    result = tagger(later)

    # The future time was treated as absent (and noted), so a real later finding is recorded as the latest.
    assert aws.tags_of(BUCKET)["mlwarden:pii-last-finding"] == later["detail"]["id"]
    assert aws.tags_of(BUCKET)["mlwarden:pii-last-seen"] != "2999-01-01T00:00:00Z"
    assert result["outcome"] != "failed"


# --- issue 10, item 10: exposed, then deleted before the event is processed -------------------------------


def test_a_bucket_made_public_then_deleted_is_alerted_for_investigation(
    aws: Any, blocker: Any, cloudtrail_event: Any
) -> None:
    # The bucket was made public by ACL, emptied and deleted before the event arrived: it does not exist.
    event = cloudtrail_event(
        "PutBucketAcl",
        "mlw-gone",
        request_parameters={
            "bucketName": "mlw-gone",
            "x-amz-acl": ["public-read"],
            "acl": [""],
        },
    )

    result = blocker(event)

    # Before: ignored, no trace
    assert (result["outcome"], result["severity"]) == ("flagged", "MEDIUM")
    alert = aws.only_alert()
    assert "was public, now deleted: investigate" in alert.line("What")
    assert alert.outcome["details"]["reported_exposure"] == "PutBucketAcl granted access to everyone"


def test_a_public_sensitive_data_finding_for_a_deleted_bucket_is_alerted(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    event = sample_event("macie/sensitive-data-personal.json")
    event["detail"]["resourcesAffected"]["s3Bucket"]["publicAccess"] = {"effectivePermission": "PUBLIC"}

    result = tagger(event)

    assert (result["outcome"], result["severity"]) == ("flagged", "MEDIUM")
    assert "was public, now deleted" in aws.only_alert().line("What")


@pytest.mark.parametrize(
    ("event_name", "request_parameters"),
    [
        ("PutBucketAcl", {"bucketName": "mlw-gone", "x-amz-acl": ["private"]}),
        ("CreateBucket", {"bucketName": "mlw-gone"}),
        (
            "PutBucketPolicy",
            {
                "bucketName": "mlw-gone",
                "bucketPolicy": {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": "*",
                            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-test123456"}},
                        }
                    ]
                },
            },
        ),
    ],
)
def test_a_deleted_bucket_whose_event_reported_no_exposure_is_ignored(
    aws: Any, blocker: Any, cloudtrail_event: Any, event_name: str, request_parameters: dict[str, Any]
) -> None:
    result = blocker(cloudtrail_event(event_name, "mlw-gone", request_parameters=request_parameters))

    assert (result["outcome"], result["reason"]) == ("ignored", "the bucket no longer exists")
    assert aws.alerts() == []
