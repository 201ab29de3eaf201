"""StopUnencryptedJobs: moto 5.2.5 has no StopTrainingJob (and its jobs are Completed at once), so
SageMaker is driven by botocore's Stubber with expected_params; S3 (the PII tag) and SNS stay on moto."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from mlwarden import clients
from mlwarden.errors import RemediationFailed

APP = "check_sagemaker_encryption"
JOB = "churn-unencrypted"
JOB_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{JOB}"


def running_job(status: str = "InProgress") -> dict[str, Any]:
    """DescribeTrainingJob of a running job without any key, outside a VPC."""
    return {
        "TrainingJobName": JOB,
        "TrainingJobArn": JOB_ARN,
        "TrainingJobStatus": status,
        "SecondaryStatus": "Training",
        "AlgorithmSpecification": {"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerExecution",
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://patient-records/train/"}},
            }
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://model-artifacts/out/"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "CreationTime": datetime.datetime(2026, 1, 12, 9, 11, 7, tzinfo=datetime.UTC),
    }


@pytest.fixture
def stub(aws: Any) -> Iterator[Stubber]:
    aws.bucket("patient-records", tags={"mlwarden:pii": "true"})
    with Stubber(clients.client("sagemaker")) as stubber:
        yield stubber


@pytest.fixture
def event(cloudtrail_event: Any) -> dict[str, Any]:
    return cloudtrail_event(
        "CreateTrainingJob", request_parameters={"trainingJobName": JOB}, event_source="sagemaker.amazonaws.com"
    )


def expect_describe(stub: Stubber, status: str = "InProgress") -> None:
    stub.add_response("describe_training_job", running_job(status), expected_params={"TrainingJobName": JOB})


def expect_tags(stub: Stubber, tags: dict[str, str]) -> None:
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]},
        expected_params={"ResourceArn": JOB_ARN},
    )


def stopping(make_handler: Callable[..., Any], mode: str = "enforce") -> Any:
    return make_handler(app=APP, mode=mode, env={"STOP_UNENCRYPTED_JOBS": "true"})


def test_running_job_failing_a_high_rule_is_stopped_and_verified(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    expect_describe(stub)
    expect_tags(stub, {"project": "churn"})
    stub.add_response("stop_training_job", {}, expected_params={"TrainingJobName": JOB})
    expect_describe(stub, "Stopping")

    result = check(event)

    stub.assert_no_pending_responses()
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "remediated"
    assert alert.attributes["severity"] == "HIGH"
    assert alert.outcome["actions"] == ["sagemaker:StopTrainingJob"]
    assert alert.outcome["previous_state"] == {"TrainingJobStatus": "InProgress"}
    assert alert.outcome["new_state"] == {"TrainingJobStatus": "Stopping"}
    assert "cannot be resumed" in alert.line("Undo")
    assert "ResourceConfig.VolumeKmsKeyId" in alert.line("What")
    assert result["outcome"] == "remediated"


def test_exempt_job_is_never_stopped(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    aws.grant_exemption(JOB_ARN, check="check_sagemaker_encryption")
    expect_describe(stub)
    expect_tags(stub, {})
    # no stop_training_job response is queued: a stop call would fail the Stubber

    result = check(event)

    stub.assert_no_pending_responses()
    assert result["outcome"] == "exempt"
    assert aws.only_alert().attributes["outcome"] == "exempt"


def test_job_whose_tags_cannot_be_read_is_not_stopped(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    expect_describe(stub)
    stub.add_client_error("list_tags", "AccessDeniedException", expected_params={"ResourceArn": JOB_ARN})

    result = check(event)

    stub.assert_no_pending_responses()
    assert result["outcome"] == "flagged"
    assert "tags (exemption) could not be read" in result["reason"]


def test_dry_run_says_it_would_stop(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler, mode="dry-run")
    expect_describe(stub)
    expect_tags(stub, {})

    result = check(event)

    stub.assert_no_pending_responses()
    assert result["outcome"] == "would-remediate"
    assert result["new_state"] == {"TrainingJobStatus": "Stopping"}


KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def encrypted_running_job(environment: dict[str, str]) -> dict[str, Any]:
    """A running job that passes every rule but the credential ones."""
    job = running_job()
    job["OutputDataConfig"]["KmsKeyId"] = KEY
    job["ResourceConfig"]["VolumeKmsKeyId"] = KEY
    job["EnableNetworkIsolation"] = True
    job["Environment"] = environment
    return job


def test_a_job_that_passes_secrets_by_reference_is_never_stopped(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    # Given a running job that follows the "reference, not value" pattern, and one variable named like a
    # password whose value is no proof of a secret
    environment = {
        "DB_SECRET_NAME": "prod/ml/db-credentials",
        "TOKEN_PATH": "/run/secrets/x",
        "PASSWORD_FILE": "/run/secrets/db-password",
        "DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        "DB_PASSWORD": "changeme",
    }
    check = stopping(make_handler)
    stub.add_response(
        "describe_training_job", encrypted_running_job(environment), expected_params={"TrainingJobName": JOB}
    )
    # no list_tags or stop_training_job response is queued: a stop attempt would fail the Stubber

    result = check(event)

    # Then it is flagged MEDIUM for the name alone, and keeps running
    stub.assert_no_pending_responses()
    assert (result["outcome"], result["severity"]) == ("flagged", "MEDIUM")
    rules = {rule["rule"]: rule["fields"] for rule in result["details"]["failed_rules"]}
    assert rules == {"credential-named-parameter": ["Environment.DB_PASSWORD"]}
    assert aws.only_alert().attributes["severity"] == "MEDIUM"


def test_a_job_with_an_access_key_in_its_environment_is_stopped(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    stub.add_response(
        "describe_training_job",
        encrypted_running_job({"UPLOAD_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}),
        expected_params={"TrainingJobName": JOB},
    )
    expect_tags(stub, {})
    stub.add_response("stop_training_job", {}, expected_params={"TrainingJobName": JOB})
    expect_describe(stub, "Stopping")

    result = check(event)

    stub.assert_no_pending_responses()
    assert (result["outcome"], result["severity"]) == ("remediated", "HIGH")
    assert "AKIAIOSFODNN7EXAMPLE" not in aws.only_alert().body


def test_finished_job_is_flagged_not_stopped(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    expect_describe(stub, "Completed")

    result = check(event)

    stub.assert_no_pending_responses()
    assert result["outcome"] == "flagged"
    assert result["reason"].endswith("not stopped: job status is Completed")


def test_without_the_setting_nothing_is_stopped(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = make_handler(app=APP)
    expect_describe(stub)

    result = check(event)

    stub.assert_no_pending_responses()
    assert result["outcome"] == "flagged"
    assert result["actions"] == []


def test_stop_refused_is_a_failed_outcome_that_raises_for_retry(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    expect_describe(stub)
    expect_tags(stub, {})
    stub.add_client_error("stop_training_job", "AccessDeniedException", expected_params={"TrainingJobName": JOB})

    with pytest.raises(RemediationFailed):
        check(event)

    stub.assert_no_pending_responses()
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert "permission sagemaker:StopTrainingJob is missing" in alert.line("What")
    # the subject says what failed (a stop, not a fix), and the body how to stop the job by hand
    assert alert.subject.startswith("[ML Warden] HIGH FAILED to stop: check_sagemaker_encryption")
    steps = alert.body.split("\nWhat to do now:\n", 1)[1].split("\n\n", 1)[0]
    assert f"aws sagemaker stop-training-job --training-job-name {JOB}" in alert.line("To do")
    assert "sagemaker:StopTrainingJob" in steps  # the permission to check


def test_describe_denied_without_event_copy_fails_for_retry(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = make_handler(app=APP)
    stub.add_client_error("describe_training_job", "AccessDeniedException", expected_params={"TrainingJobName": JOB})

    with pytest.raises(RemediationFailed):
        check(event)

    stub.assert_no_pending_responses()
    assert aws.only_alert().outcome["error_code"] == "AccessDeniedException"


def test_stop_that_does_not_read_back_is_a_failed_outcome(
    aws: Any, stub: Stubber, event: dict[str, Any], make_handler: Callable[..., Any]
) -> None:
    check = stopping(make_handler)
    expect_describe(stub)
    expect_tags(stub, {})
    stub.add_response("stop_training_job", {}, expected_params={"TrainingJobName": JOB})
    expect_describe(stub, "InProgress")

    with pytest.raises(RemediationFailed):
        check(event)

    stub.assert_no_pending_responses()
    alert = aws.only_alert()
    assert alert.outcome["outcome"] == "failed"
    assert alert.outcome["error_code"] == "VerificationFailed"
    assert alert.outcome["actions"] == ["sagemaker:StopTrainingJob"]
    assert alert.outcome["new_state"] == {"TrainingJobStatus": "InProgress"}


NOW = datetime.datetime(2026, 1, 12, 9, 11, 7, tzinfo=datetime.UTC)
OTHER_JOBS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    (
        "processing-job",
        "describe_processing_job",
        "stop_processing_job",
        "ProcessingJobName",
        {
            "ProcessingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/job",
            "ProcessingJobStatus": "InProgress",
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
            },
            "AppSpecification": {"ImageUri": "sklearn:1.2"},
            "NetworkConfig": {"EnableNetworkIsolation": True},
            "CreationTime": NOW,
        },
    ),
    (
        "transform-job",
        "describe_transform_job",
        "stop_transform_job",
        "TransformJobName",
        {
            "TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/job",
            "TransformJobStatus": "InProgress",
            "ModelName": "churn-model",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
            "TransformOutput": {"S3OutputPath": "s3://b/out"},
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
            "CreationTime": NOW,
        },
    ),
    (
        "hyper-parameter-tuning-job",
        "describe_hyper_parameter_tuning_job",
        "stop_hyper_parameter_tuning_job",
        "HyperParameterTuningJobName",
        {
            "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/job",
            "HyperParameterTuningJobStatus": "InProgress",
            "HyperParameterTuningJobConfig": {
                "Strategy": "Bayesian",
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 1},
            },
            "TrainingJobDefinition": {
                "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "xgboost:1.7"},
                "RoleArn": "arn:aws:iam::123456789012:role/SageMakerExecution",
                "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "EnableNetworkIsolation": True,
            },
            "CreationTime": NOW,
            "TrainingJobStatusCounters": {},
            "ObjectiveStatusCounters": {},
        },
    ),
]
CREATE_CALLS = {
    "processing-job": ("CreateProcessingJob", "processingJobName"),
    "transform-job": ("CreateTransformJob", "transformJobName"),
    "hyper-parameter-tuning-job": ("CreateHyperParameterTuningJob", "hyperParameterTuningJobName"),
}


@pytest.mark.parametrize(
    ("kind", "describe", "stop", "parameter", "description"), OTHER_JOBS, ids=[row[0] for row in OTHER_JOBS]
)
def test_every_stoppable_job_type_is_stopped_with_its_own_call(
    aws: Any,
    stub: Stubber,
    make_handler: Callable[..., Any],
    cloudtrail_event: Any,
    kind: str,
    describe: str,
    stop: str,
    parameter: str,
    description: dict[str, Any],
) -> None:
    check = stopping(make_handler)
    running = {parameter: "job", **description}
    status_field = next(key for key in description if key.endswith("Status"))
    stub.add_response(describe, running, expected_params={parameter: "job"})
    stub.add_response(
        "list_tags",
        {"Tags": []},
        expected_params={"ResourceArn": f"arn:aws:sagemaker:us-east-1:123456789012:{kind}/job"},
    )
    stub.add_response(stop, {}, expected_params={parameter: "job"})
    stub.add_response(describe, {**running, status_field: "Stopping"}, expected_params={parameter: "job"})
    event_name, request_parameter = CREATE_CALLS[kind]

    result = check(
        cloudtrail_event(
            event_name, request_parameters={request_parameter: "job"}, event_source="sagemaker.amazonaws.com"
        )
    )

    stub.assert_no_pending_responses()
    assert result["outcome"] == "remediated"
    assert result["new_state"] == {status_field: "Stopping"}
