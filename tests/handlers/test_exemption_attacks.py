"""Issue 10, item 2: "anyone who can tag can exempt". Each attack, then what stops it, against moto.

The registry is the stack's DynamoDB table (conftest's `aws.grant_exemption` writes an entry as
`mlwarden exempt add` does). Resource tags exempt nothing unless TRUST_EXEMPTION_TAGS=true, and
setting the exempt tag is always reported by the check that owns the resource type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mlwarden import clients

ACCOUNT = "123456789012"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
BUCKET = "patient-records"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
ATTACKER = f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/data-scientist"


def put_bucket_tagging(cloudtrail_event: Callable[..., dict[str, Any]], tags: dict[str, str]) -> dict[str, Any]:
    """PutBucketTagging as CloudTrail records it: Tagging.TagSet.Tag, an XML-born shape with xmlns."""
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    return cloudtrail_event(
        "PutBucketTagging",
        request_parameters={
            "bucketName": BUCKET,
            "Host": f"{BUCKET}.s3.amazonaws.com",
            "tagging": "",
            "Tagging": {"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/", "TagSet": {"Tag": tag_list}},
        },
    )


def locked_with_one_alert(aws: Any) -> Any:
    """The bucket's block is all on, and the one alert the subscriber received."""
    assert aws.block_of(BUCKET) == ALL_ON
    return aws.only_alert()


# --- S3: a self-service tag ------------------------------------------------------------------------------


def test_self_service_exempt_tag_does_not_keep_a_public_pii_bucket_open(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # Given a user who tags a PII bucket exempt, deletes its block and makes it public
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:pii": "true", "mlwarden:exempt": "true"})

    result = handler(cloudtrail_event("DeleteBucketPublicAccessBlock", BUCKET))

    # Then it is locked and alerted CRITICAL (before: exempt at LOW, which the README's filter drops)
    assert result["outcome"] == "remediated"
    alert = locked_with_one_alert(aws)
    assert alert.attributes["severity"] == "CRITICAL"
    assert "not trusted (TrustExemptionTags=false)" in alert.outcome["details"]["exemption"]


def test_tagging_call_is_routed_reported_and_the_public_bucket_locked(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:pii": "true"})

    result = handler(put_bucket_tagging(cloudtrail_event, {"team": "ml", "mlwarden:exempt": "2026-01-31"}))

    assert result["outcome"] == "remediated"
    alert = locked_with_one_alert(aws)
    assert alert.attributes["severity"] == "CRITICAL"
    reported = alert.outcome["details"]["exempt_tag_set"]
    assert reported == {"by": f"{ATTACKER} (AssumedRole)", "call": "PutBucketTagging", "until": "2026-01-31",
                        "counts": False}  # fmt: skip
    assert ATTACKER in alert.outcome["reason"]
    assert "non-compliant now" in alert.outcome["reason"]


def test_tagging_a_compliant_bucket_exempt_is_still_reported(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket(BUCKET, block=ALL_ON)

    result = handler(put_bucket_tagging(cloudtrail_event, {"mlwarden:exempt": "true"}))

    assert result["outcome"] == "flagged"
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "MEDIUM"
    assert "compliant now" in alert.outcome["reason"]
    assert alert.outcome["details"]["exempt_tag_set"]["counts"] is False


def test_tagging_a_non_compliant_bucket_is_high_even_when_the_tag_counts(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    # With TrustExemptionTags=true a valid tag exempts; the call that set it is still HIGH, not LOW.
    handler = make_handler(env={"TRUST_EXEMPTION_TAGS": "true"})
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:exempt": "true"})

    result = handler(put_bucket_tagging(cloudtrail_event, {"mlwarden:exempt": "true"}))

    assert result["outcome"] == "exempt"
    assert aws.block_of(BUCKET) is None
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "HIGH"
    assert alert.outcome["details"]["exempt_tag_set"]["counts"] is True


def test_tagging_calls_without_the_exempt_tag_report_no_exemption(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # PutBucketTagging is block_public_s3's trigger in any case (it can remove mlwarden:pii), so the bucket is
    # decided like any other: an open bucket is fixed, and nothing is said about an exempt tag.
    aws.bucket(BUCKET, acl="public-read")
    aws.bucket(
        "closed-bucket",
        block={
            **dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls"), True),
            **dict.fromkeys(("BlockPublicPolicy", "RestrictPublicBuckets"), True),
        },
    )

    result = handler(put_bucket_tagging(cloudtrail_event, {"team": "ml"}))
    quiet = handler(cloudtrail_event("PutBucketTagging", "closed-bucket"))

    assert result["outcome"] == "remediated"
    assert "exempt_tag_set" not in result["details"]
    assert quiet["outcome"] == "compliant"
    assert [a.attributes["outcome"] for a in aws.alerts()] == ["remediated"]


@pytest.mark.parametrize("value", ["never", "expired", "revoked", "not exempt", "9999-12-31", "2020-01-01"])
def test_values_that_used_to_exempt_forever_do_not_exempt_even_when_tags_are_trusted(
    aws: Any, make_handler: Any, cloudtrail_event: Any, value: str
) -> None:
    handler = make_handler(env={"TRUST_EXEMPTION_TAGS": "true"})
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:exempt": value})

    handler(cloudtrail_event("PutBucketAcl", BUCKET))

    alert = locked_with_one_alert(aws)
    assert alert.attributes["outcome"] == "remediated"
    assert "does not exempt" in alert.outcome["details"]["exemption"]


# --- the registry -----------------------------------------------------------------------------------------


def test_exempt_public_pii_bucket_is_critical_once_a_day_naming_its_exemption(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:pii": "true"})
    aws.grant_exemption(BUCKET_ARN, check="block_public_s3")

    first = handler(cloudtrail_event("PutBucketAcl", BUCKET))
    second = handler(cloudtrail_event("PutBucketAcl", BUCKET))

    # The exemption prevents the change, never the truth
    assert aws.block_of(BUCKET) is None
    assert (first["outcome"], first["severity"]) == ("exempt", "CRITICAL")
    assert (second["outcome"], second["severity"]) == ("exempt", "CRITICAL")
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert "registry exemption for block_public_s3" in alert.outcome["reason"]
    assert "SecurityTeam/alice" in alert.outcome["reason"]
    assert second["alert_suppressed"] == "this exempt resource's CRITICAL alert already went out today"


def test_exempt_public_bucket_without_pii_stays_low(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket(BUCKET, acl="public-read")
    aws.grant_exemption("arn:aws:s3:::patient-*")  # a pattern: registered before the bucket existed

    result = handler(cloudtrail_event("PutBucketAcl", BUCKET))

    assert (result["outcome"], result["severity"]) == ("exempt", "LOW")


@pytest.mark.parametrize(
    ("days", "granted_days_ago", "check"),
    [
        pytest.param(10, 20, "all", id="expired"),
        pytest.param(120, 0, "all", id="beyond-the-90-day-maximum"),
        pytest.param(30, 0, "tag_pii_bucket", id="another-check"),
    ],
)
def test_registry_entries_not_in_force_do_not_exempt(
    aws: Any, handler: Any, cloudtrail_event: Any, days: int, granted_days_ago: int, check: str
) -> None:
    aws.bucket(BUCKET, acl="public-read")
    aws.grant_exemption(BUCKET_ARN, check=check, days=days, granted_days_ago=granted_days_ago)

    result = handler(cloudtrail_event("PutBucketAcl", BUCKET))

    assert result["outcome"] == "remediated"
    assert aws.block_of(BUCKET) == ALL_ON


def test_unreadable_registry_exempts_nothing_and_does_not_crash(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    handler = make_handler(env={"EXEMPTION_TABLE": "no-such-table"})
    aws.bucket(BUCKET, acl="public-read")

    result = handler(cloudtrail_event("PutBucketAcl", BUCKET))

    assert result["outcome"] == "remediated"
    assert "registry could not be read" in aws.only_alert().outcome["details"]["exemption"]


# --- IAM --------------------------------------------------------------------------------------------------

ADMIN = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


@pytest.fixture
def iam(aws: Any) -> Any:
    return boto3.client("iam", region_name="us-east-1")


@pytest.fixture
def iam_handler(make_handler: Callable[..., Any]) -> Callable[..., Any]:
    def make(**env: str) -> Any:
        return make_handler(
            app="flag_wildcard_iam", remediator_role_arn=f"arn:aws:iam::{ACCOUNT}:role/FlagWildcardIamRole", env=env
        )

    return make


def create_policy_event(cloudtrail_event: Any) -> dict[str, Any]:
    return cloudtrail_event(
        "CreatePolicy",
        event_source="iam.amazonaws.com",
        request_parameters={
            "policyName": "break-glass",
            "path": "/",
            "policyDocument": ADMIN,
            "tags": [{"key": "mlwarden:exempt", "value": "true"}],
        },
    )


@pytest.mark.parametrize("trusted", ["false", "true"])
def test_admin_policy_created_with_the_exempt_tag_is_graded_by_its_content(
    aws: Any, iam: Any, iam_handler: Any, cloudtrail_event: Any, trusted: str
) -> None:
    # Attack: CreatePolicy with Action * and the exempt tag in the same call came out exempt at LOW.
    iam.create_policy(
        PolicyName="break-glass", PolicyDocument=ADMIN, Tags=[{"Key": "mlwarden:exempt", "Value": "true"}]
    )

    result = iam_handler(TRUST_EXEMPTION_TAGS=trusted)(create_policy_event(cloudtrail_event))

    assert result["severity"] == "CRITICAL"
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert alert.outcome["details"]["exempt_tag_set"]["counts"] is (trusted == "true")
    if trusted == "false":
        assert result["outcome"] == "flagged"
        tags = {t["Key"]: t["Value"] for t in iam.list_policy_tags(PolicyArn=alert.outcome["resource"])["Tags"]}
        assert tags["mlwarden:wildcard"] == "CRITICAL"


def test_tag_role_exempt_is_reported_with_the_roles_flag(
    aws: Any, iam: Any, iam_handler: Any, cloudtrail_event: Any
) -> None:
    iam.create_role(RoleName="pipeline", AssumeRolePolicyDocument=TRUST, Tags=[{"Key": "mlwarden:wildcard",
                                                                               "Value": "HIGH"}])  # fmt: skip
    # The flag is re-graded from live state: the role holds what earned it
    s3_everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_role_policy(RoleName="pipeline", PolicyName="s3", PolicyDocument=json.dumps(s3_everything))
    event = cloudtrail_event(
        "TagRole",
        event_source="iam.amazonaws.com",
        request_parameters={"roleName": "pipeline", "tags": [{"key": "mlwarden:exempt", "value": "9999-12-31"}]},
    )

    result = iam_handler()(event)

    assert (result["outcome"], result["severity"]) == ("flagged", "HIGH")
    alert = aws.only_alert()
    assert alert.outcome["resource"] == f"arn:aws:iam::{ACCOUNT}:role/pipeline"
    assert alert.outcome["details"]["exempt_tag_set"]["until"] == "9999-12-31"
    assert "non-compliant now" in alert.outcome["reason"]


def test_registry_exempts_a_role_for_flag_wildcard_iam(
    aws: Any, iam: Any, iam_handler: Any, cloudtrail_event: Any
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="admin", PolicyDocument=ADMIN)
    aws.grant_exemption(f"arn:aws:iam::{ACCOUNT}:role/r", check="flag_wildcard_iam")
    event = cloudtrail_event(
        "PutRolePolicy",
        event_source="iam.amazonaws.com",
        request_parameters={"roleName": "r", "policyName": "admin", "policyDocument": ADMIN},
    )

    result = iam_handler()(event)

    assert (result["outcome"], result["severity"]) == ("exempt", "LOW")


# --- SageMaker --------------------------------------------------------------------------------------------

JOB_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/churn"


@pytest.fixture
def sagemaker_stub(aws: Any) -> Iterator[Stubber]:
    # moto 5 has no DescribeTrainingJob for a job it did not run: SageMaker is stubbed, S3 and SNS stay on moto.
    with Stubber(clients.client("sagemaker")) as stubber:
        yield stubber


def test_sagemaker_add_tags_exempt_is_reported_with_the_jobs_findings(
    aws: Any, sagemaker_stub: Stubber, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    sagemaker_stub.add_response(
        "describe_training_job",
        {
            "TrainingJobName": "churn",
            "TrainingJobArn": JOB_ARN,
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "AlgorithmSpecification": {"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution",
            "OutputDataConfig": {"S3OutputPath": "s3://model-artifacts/out/"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "CreationTime": "2026-01-12T09:11:07Z",
        },
        expected_params={"TrainingJobName": "churn"},
    )
    event = cloudtrail_event(
        "AddTags",
        event_source="sagemaker.amazonaws.com",
        request_parameters={"resourceArn": JOB_ARN, "tags": [{"key": "mlwarden:exempt", "value": "never"}]},
    )

    result = make_handler(app="check_sagemaker_encryption")(event)

    sagemaker_stub.assert_no_pending_responses()
    assert (result["outcome"], result["severity"]) == ("flagged", "HIGH")
    alert = aws.only_alert()
    assert alert.outcome["resource"] == JOB_ARN
    assert alert.outcome["details"]["exempt_tag_set"]["counts"] is False
    assert "neither true nor YYYY-MM-DD" in alert.outcome["details"]["exempt_tag_set"]["until"]
