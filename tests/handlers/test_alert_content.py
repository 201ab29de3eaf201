"""What the alert subscriber receives from each handler: its size, what it may name, what to do now.

The sizes are measured on the notification an SQS subscriber received, as SNS counts them: subject,
message and every attribute's name, type and value in UTF-8 bytes (SNS's limit is 262,144 bytes:
https://docs.aws.amazon.com/sns/latest/api/API_MessageAttributeValue.html).
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mlwarden import clients

ACCOUNT = "123456789012"
SNS_LIMIT = 262_144
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
# An IAM Identity Center session: the session name is the person's e-mail address.
SSO_ACTOR_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_DataScientist_0a1b2c3d4e5f/jane.doe@example.com"


def published_bytes(alert: Any) -> int:
    """The notification as SNS counted it when it was published."""
    parts = [alert.envelope.get("Subject") or "", alert.envelope["Message"]]
    for name, value in alert.envelope.get("MessageAttributes", {}).items():
        parts += [name, value["Type"], value["Value"]]
    return sum(len(part.encode("utf-8")) for part in parts)


def what_to_do(alert: Any) -> str:
    return alert.body.split("\nWhat to do now:\n", 1)[1].split("\n\n", 1)[0]


def assert_deliverable(alert: Any) -> None:
    assert published_bytes(alert) < SNS_LIMIT // 4
    # The SQS subscriber's envelope (the message JSON-escaped inside it) is under SQS's own 256 KiB too.
    assert len(json.dumps(alert.envelope).encode("utf-8")) < SNS_LIMIT
    assert alert.outcome["check"] == alert.attributes["check"]  # the JSON block parsed, whole
    for name in ("severity", "check", "outcome", "account", "region"):
        assert alert.attributes[name] and alert.attributes[name] != "unknown"


# --- a 10 KB policy -----------------------------------------------------------------------------------------

SERVICES = ["s3", "iam", "ec2", "sagemaker", "lambda", "kms", "sts", "dynamodb", "sns", "sqs", "glue", "athena"]


def ten_kb_policy() -> dict[str, Any]:
    """Inline role policies may hold 10,240 characters: statements of service:* on * filling that."""
    statements = []
    index = 0
    while len(json.dumps({"Version": "2012-10-17", "Statement": statements})) < 10_000:
        service = SERVICES[index % len(SERVICES)]
        statements.append({"Sid": f"S{index}", "Effect": "Allow", "Action": f"{service}:*", "Resource": "*"})
        index += 1
    return {"Version": "2012-10-17", "Statement": statements}


def test_a_10_kb_policy_alert_stays_small_valid_and_counts_what_it_cut(
    aws: Any, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    # Given a role whose 10 KB inline policy grants service:* on * in ~150 statements
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_role(RoleName="wide", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    document = ten_kb_policy()
    iam.put_role_policy(RoleName="wide", PolicyName="inline", PolicyDocument=json.dumps(document))
    handler = make_handler(app="flag_wildcard_iam", remediator_role_arn=f"arn:aws:iam::{ACCOUNT}:role/Own")

    # When CloudTrail reports the PutRolePolicy
    handler(
        cloudtrail_event(
            "PutRolePolicy",
            request_parameters={"roleName": "wide", "policyName": "inline", "policyDocument": json.dumps(document)},
            event_source="iam.amazonaws.com",
        )
    )

    # Then one alert, well within SNS's limit, with a valid JSON block that says what it left out
    alert = aws.only_alert()
    assert_deliverable(alert)
    # What was left out is counted: by the check itself (top findings, the rest in the outcome table) and,
    # if that is not enough, by the alert's own cut.
    cut = alert.outcome.get("truncated", {})
    left_out = sum(entry.get("left_out", 0) for entry in cut.values())
    assert left_out + alert.outcome["details"].get("findings_not_shown", 0) > 0
    assert ("\nCut:" in alert.body) is bool(cut)
    assert alert.outcome["outcome"] == "flagged"


# --- a Macie finding with 10,000 detections ------------------------------------------------------------------


def test_a_macie_finding_with_10000_detections_alert_stays_small_and_counts_what_it_cut(
    aws: Any, make_handler: Callable[..., Any], sample_event: Any
) -> None:
    # Given a public bucket and a finding with 10,000 custom-identifier detections
    aws.bucket("mlw-training-data-acl", acl="public-read")
    event = copy.deepcopy(sample_event("macie/sensitive-data-custom-identifier.json"))
    detections = [{"arn": f"id-{i}", "name": f"identifier number {i}", "count": 1} for i in range(10_000)]
    event["detail"]["classificationDetails"]["result"]["customDataIdentifiers"] = {
        "detections": detections,
        "totalCount": len(detections),
    }
    handler = make_handler(app="tag_pii_bucket")

    handler(event)

    alert = aws.only_alert()
    assert_deliverable(alert)
    assert alert.attributes["severity"] == "CRITICAL"
    detections_cut = alert.outcome["truncated"]["details.finding.detections"]
    assert detections_cut["kept"] + detections_cut["left_out"] == 10_000
    assert alert.outcome["details"]["finding"]["detection_count"] == 10_000


# --- a SageMaker job with 500 environment variables -----------------------------------------------------------

JOB = "churn-five-hundred"
JOB_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{JOB}"


def job_with_environment(environment: dict[str, str]) -> dict[str, Any]:
    return {
        "TrainingJobName": JOB,
        "TrainingJobArn": JOB_ARN,
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": {"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution",
        "OutputDataConfig": {"S3OutputPath": "s3://model-artifacts/out/"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "CreationTime": datetime.datetime(2026, 1, 12, 9, 11, 7, tzinfo=datetime.UTC),
        "EnableNetworkIsolation": True,
        "Environment": environment,
    }


@pytest.fixture
def sagemaker_stub(aws: Any) -> Iterator[Stubber]:
    """moto drops a training job's Environment: DescribeTrainingJob is stubbed, SNS stays on moto."""
    with Stubber(clients.client("sagemaker")) as stubber:
        yield stubber


def test_a_sagemaker_job_with_500_environment_variables_alert_stays_small_and_counts_what_it_cut(
    aws: Any, make_handler: Callable[..., Any], cloudtrail_event: Any, sagemaker_stub: Stubber
) -> None:
    environment = {f"SERVICE_{i}_API_TOKEN": f"value-{i}" for i in range(500)}
    sagemaker_stub.add_response(
        "describe_training_job", job_with_environment(environment), expected_params={"TrainingJobName": JOB}
    )
    handler = make_handler(app="check_sagemaker_encryption")

    handler(
        cloudtrail_event(
            "CreateTrainingJob", request_parameters={"trainingJobName": JOB}, event_source="sagemaker.amazonaws.com"
        )
    )

    sagemaker_stub.assert_no_pending_responses()
    alert = aws.only_alert()
    assert_deliverable(alert)
    credentials = next(r for r in alert.outcome["details"]["failed_rules"] if "credential" in r["rule"])
    fields_cut = next(v for k, v in alert.outcome["truncated"].items() if k.endswith(".fields"))
    assert len(credentials["fields"]) + fields_cut["left_out"] == 500
    assert "more" in alert.line("What")  # the summary names a few fields and counts the rest
    assert len(alert.line("What")) < 2_000


# --- actors are kept, other teams' tag values are not ----------------------------------------------------------

FOREIGN_TAGS = {"cost-center": "cc-4711-project-falcon", "data-steward": "ana.lopez@example.com"}


def test_the_actor_is_kept_even_when_it_is_an_email_address(
    aws: Any, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    aws.bucket("training-data", acl="public-read")
    identity = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLEID:jane.doe@example.com",
        "arn": SSO_ACTOR_ARN,
        "accountId": ACCOUNT,
    }
    event = cloudtrail_event("PutBucketAcl", "training-data", user_identity=identity)

    make_handler()(event)

    alert = aws.only_alert()
    assert alert.line("Who").startswith(f"{SSO_ACTOR_ARN} (AssumedRole)")
    assert alert.outcome["trigger"]["actor"] == f"{SSO_ACTOR_ARN} (AssumedRole)"


def test_other_teams_tags_never_reach_an_alert_but_ml_wardens_own_do(
    aws: Any, make_handler: Callable[..., Any], sample_event: Any
) -> None:
    # Given a private bucket carrying another team's tags, and a Macie PII finding for it
    aws.bucket("mlw-training-data-acl", tags=FOREIGN_TAGS, block=ALL_ON)

    make_handler(app="tag_pii_bucket")(sample_event("macie/sensitive-data-personal.json"))

    # Then the bucket keeps its tags, and the alert copies none of the other team's (keys or values)
    assert {k: v for k, v in aws.tags_of("mlw-training-data-acl").items() if k in FOREIGN_TAGS} == FOREIGN_TAGS
    alert = aws.only_alert()
    for text in (alert.body, alert.subject, json.dumps(alert.envelope)):
        for key, value in FOREIGN_TAGS.items():
            assert value not in text
            assert key not in text
    assert alert.outcome["new_state"]["Tags"]["mlwarden:pii"] == "true"


# --- what to do now -------------------------------------------------------------------------------------------


def test_a_sagemaker_flag_says_which_setting_to_change(
    aws: Any, make_handler: Callable[..., Any], cloudtrail_event: Any, sagemaker_stub: Stubber
) -> None:
    sagemaker_stub.add_response(
        "describe_training_job", job_with_environment({}), expected_params={"TrainingJobName": JOB}
    )

    make_handler(app="check_sagemaker_encryption")(
        cloudtrail_event(
            "CreateTrainingJob", request_parameters={"trainingJobName": JOB}, event_source="sagemaker.amazonaws.com"
        )
    )

    alert = aws.only_alert()
    assert "ResourceConfig.VolumeKmsKeyId to your KMS key" in alert.line("To do")
    assert "OutputDataConfig.KmsKeyId to your KMS key" in alert.line("To do")
    assert "mlwarden exempt add" in what_to_do(alert)
    assert alert.outcome["next_step"] == alert.line("To do")


def test_an_iam_flag_body_says_what_to_do(aws: Any, make_handler: Callable[..., Any], cloudtrail_event: Any) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_role(RoleName="wide", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_role_policy(RoleName="wide", PolicyName="inline", PolicyDocument=json.dumps(document))

    make_handler(app="flag_wildcard_iam", remediator_role_arn=f"arn:aws:iam::{ACCOUNT}:role/Own")(
        cloudtrail_event(
            "PutRolePolicy",
            request_parameters={"roleName": "wide", "policyName": "inline", "policyDocument": json.dumps(document)},
            event_source="iam.amazonaws.com",
        )
    )

    alert = aws.only_alert()
    steps = what_to_do(alert)
    assert "The owner of the resource must fix it" in steps
    assert "mlwarden exempt add" in steps
    assert "FAILED" not in alert.subject
