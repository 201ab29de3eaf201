"""Which SageMaker resource an event names, and the handler's one option (no AWS)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden import clients
from mlwarden.checks import check_sagemaker_encryption as sagemaker_check
from mlwarden.checks.check_sagemaker_encryption import Options, Target, load_options, pascal_case, targets_from_event
from mlwarden.events import StateChange, parse_event
from mlwarden.outcomes import Trigger
from mlwarden.rules.sagemaker import Kind
from mlwarden.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "sagemaker"
REAL = ROOT / "tests" / "fixtures" / "real" / "sagemaker" / "eventbridge"


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.mark.parametrize(
    ("name", "kind", "resource"),
    [
        ("create-training-job-unencrypted.json", Kind.TRAINING_JOB, "mlw-churn-xgb-unencrypted"),
        ("create-training-job-encrypted.json", Kind.TRAINING_JOB, "mlw-churn-xgb-encrypted"),
        ("create-training-job-distributed.json", Kind.TRAINING_JOB, "mlw-churn-xgb-distributed"),
        ("create-processing-job.json", Kind.PROCESSING_JOB, "mlw-churn-features"),
        ("create-transform-job.json", Kind.TRANSFORM_JOB, "mlw-churn-batch-scoring"),
        ("create-notebook-instance-internet.json", Kind.NOTEBOOK_INSTANCE, "mlw-jdoe-exploration"),
        ("create-endpoint-config-no-key.json", Kind.ENDPOINT_CONFIG, "mlw-churn-endpoint-config"),
        ("training-job-state-change.json", Kind.TRAINING_JOB, "mlw-fraud-xgb-2025-06-03-13-30-02"),
    ],
)
def test_every_sample_names_its_resource(name: str, kind: Kind, resource: str) -> None:
    target = targets_from_event(parse_event(sample(name)))

    assert isinstance(target, Target)
    assert (target.kind, target.name) == (kind, resource)
    assert target.arn == f"arn:aws:sagemaker:us-east-1:123456789012:{kind.value}/{resource}"


def test_request_parameters_become_the_describe_spelling_but_user_names_keep_their_case() -> None:
    target = targets_from_event(parse_event(sample("create-processing-job.json")))

    assert isinstance(target, Target)
    assert target.from_event is not None
    assert target.from_event["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2
    assert set(target.from_event["Environment"]) == {"FEATURE_STORE_API_KEY", "LOG_LEVEL"}
    assert pascal_case({"a": [{"bC": 1}], "tags": [{"key": "k"}], "": 3, 7: 1}) == {
        "A": [{"BC": 1}],
        "Tags": [{"key": "k"}],
    }


def test_automl_v1_is_described_by_its_own_call() -> None:
    event = sample("create-training-job-unencrypted.json")
    event["detail"]["eventName"] = "CreateAutoMLJob"
    event["detail"]["requestParameters"] = {"autoMLJobName": "churn-automl"}

    target = targets_from_event(parse_event(event))

    assert isinstance(target, Target)
    assert (target.kind, target.describe.action) == (Kind.AUTOML_JOB, "DescribeAutoMLJob")


def test_domain_without_response_is_ignored() -> None:
    event = sample("create-training-job-unencrypted.json")
    event["detail"].update(eventName="CreateDomain", requestParameters={"domainName": "research"})

    assert targets_from_event(parse_event(event)) == "CreateDomain names no domain"


def test_real_mlspace_state_change_parses_and_names_the_job() -> None:
    # MLSpace's fixture (Apache-2.0): epoch-millisecond times and null fields.
    raw = json.loads((REAL / "mlspace__mock_training_job_event.json").read_text())

    event = parse_event(raw)

    assert isinstance(event, StateChange)
    assert Trigger.of(event).kind == "state-change"
    assert isinstance(targets_from_event(event), Target)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.clear(), "SageMaker Training Job State Change names no training-job"),
        (lambda d: d.update(TrainingJobArn=None, TrainingJobName=7), "names no training-job"),
        (
            lambda d: d.update(TrainingJobArn="arn:aws:sagemaker:us-east-1:1:training-job/", TrainingJobName=""),
            "names no training-job",
        ),
    ],
)
def test_state_change_without_a_job_name_is_not_a_target(mutate: Any, reason: str) -> None:
    event = copy.deepcopy(sample("training-job-state-change.json"))
    event["resources"] = []
    mutate(event["detail"])

    target = targets_from_event(parse_event(event))

    assert isinstance(target, str)
    assert target.endswith(reason)


@pytest.mark.parametrize(
    ("rule", "resource_type", "compliance", "expected"),
    [
        ("sagemaker-notebook-instance-kms-key-configured", "AWS::SageMaker::NotebookInstance", "NON_COMPLIANT", "nb"),
        (
            "securityhub-sagemaker-notebook-no-direct-internet-access-1a2b",
            "AWS::SageMaker::NotebookInstance",
            "NON_COMPLIANT",
            "nb",
        ),
        (
            "sagemaker-endpoint-configuration-kms-key-configured-x",
            "AWS::SageMaker::EndpointConfig",
            "NON_COMPLIANT",
            "nb",
        ),
        ("sagemaker-notebook-instance-kms-key-configured", "AWS::SageMaker::NotebookInstance", "COMPLIANT", None),
        ("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "NON_COMPLIANT", None),
        ("sagemaker-notebook-instance-kms-key-configured", "AWS::SageMaker::Model", "NON_COMPLIANT", None),
    ],
)
def test_config_rules(config_event: Any, rule: str, resource_type: str, compliance: str, expected: str | None) -> None:
    target = targets_from_event(parse_event(config_event(rule, resource_type, "nb", compliance)))

    if expected is None:
        assert isinstance(target, str)
    else:
        assert isinstance(target, Target)
        assert target.name == expected


@pytest.mark.parametrize(
    ("value", "stop"), [(None, False), ("", False), ("false", False), ("TRUE", True), (" true ", True)]
)
def test_stop_option(value: str | None, stop: bool) -> None:
    environ = {} if value is None else {"STOP_UNENCRYPTED_JOBS": value}

    assert load_options(environ) == Options(stop_jobs=stop)


def test_invalid_stop_option_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="STOP_UNENCRYPTED_JOBS"):
        load_options({"STOP_UNENCRYPTED_JOBS": "enforce"})


@pytest.mark.parametrize(("value", "disable"), [(None, False), ("", False), ("false", False), ("True", True)])
def test_notebook_root_option(value: str | None, disable: bool) -> None:
    environ = {} if value is None else {"DISABLE_NOTEBOOK_ROOT_ACCESS": value}

    assert load_options(environ) == Options(disable_notebook_root=disable)


def test_invalid_notebook_root_option_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="DISABLE_NOTEBOOK_ROOT_ACCESS"):
        load_options({"DISABLE_NOTEBOOK_ROOT_ACCESS": "yes"})


@pytest.mark.parametrize("region", ["x" * 300, "us-east-1; rm -rf", "", "US-EAST-1"])
def test_a_region_that_is_not_one_reads_the_functions_own_region(region: str) -> None:
    # Found by fuzzing: a damaged event's region reached botocore's client constructor and crashed the handler.
    assert sagemaker_check._sagemaker(region) is clients.client("sagemaker")
