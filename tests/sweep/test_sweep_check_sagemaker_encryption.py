"""The sweep grades every SageMaker resource as the event path does: same outcome, same controls, said once.

moto 5.2.5 lists notebook instances, endpoint configurations, models, domains, jobs and the four monitoring job
definitions, but has no ListMonitoringSchedules, ListFeatureGroups or ListInferenceExperiments (in-process it
raises NotImplementedError): the moto tests sweep the kinds moto lists, and the listings themselves (filters,
pagination, a failing listing) run on botocore's Stubber with expected_params, on one thread so that the
Stubber's order holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mlwarden import checks, clients
from mlwarden.checks import check_sagemaker_encryption as sagemaker_check
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.rules.sagemaker import Kind
from mlwarden.settings import load_settings
from mlwarden.sweep import Summary, new_sweep_id, sweep_check
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler

UNIT = checks.load("check_sagemaker_encryption")
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:"
MOTO_LISTS = frozenset(
    {Kind.NOTEBOOK_INSTANCE, Kind.ENDPOINT_CONFIG, Kind.MODEL, Kind.DATA_QUALITY_JOB_DEFINITION, Kind.TRAINING_JOB}
)


def _sweep(
    monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "dry-run", *, concurrency: int = 10
) -> list[Outcome]:
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", mode)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    summary = Summary(new_sweep_id())
    inventory = Inventory(ACCOUNT, REGION, concurrency=concurrency)
    return list(sweep_check(UNIT, inventory, load_settings(), summary.sweep_id, summary=summary))


def _by_resource(outcomes: list[Outcome]) -> dict[str | None, Outcome]:
    return {outcome.resource: outcome for outcome in outcomes}


@pytest.fixture
def moto_listings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the listings moto implements (see the module docstring)."""
    listings = tuple(listing for listing in sagemaker_check._LISTINGS if listing.kind in MOTO_LISTS)
    monkeypatch.setattr(sagemaker_check, "_LISTINGS", listings)


@pytest.fixture
def sagemaker(aws: AwsWorld) -> Any:
    return boto3.client("sagemaker", region_name=REGION)


def _open_model(sagemaker: Any, name: str) -> None:
    sagemaker.create_model(ModelName=name, PrimaryContainer={"Image": "xgboost:1.7"}, ExecutionRoleArn=ROLE)


def _open_notebook(sagemaker: Any, name: str) -> None:
    sagemaker.create_notebook_instance(NotebookInstanceName=name, InstanceType="ml.t3.medium", RoleArn=ROLE)


def _data_quality(sagemaker: Any, name: str) -> None:
    sagemaker.create_data_quality_job_definition(
        JobDefinitionName=name,
        DataQualityAppSpecification={"ImageUri": "model-monitor:latest"},
        DataQualityJobInput={"EndpointInput": {"EndpointName": "churn", "LocalPath": "/opt/ml/processing/input"}},
        DataQualityJobOutputConfig={
            "MonitoringOutputs": [{"S3Output": {"S3Uri": "s3://monitoring/dq", "LocalPath": "/opt/ml/processing/o"}}],
            "KmsKeyId": KEY,
        },
        JobResources={"ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 20}},
        NetworkConfig={"EnableInterContainerTrafficEncryption": False, "EnableNetworkIsolation": False},
        RoleArn=ROLE,
    )


# --- against moto ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("moto_listings")
def test_the_sweep_grades_every_listed_kind_with_its_controls(
    aws: AwsWorld, sagemaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open_notebook(sagemaker, "exploration")
    _open_model(sagemaker, "churn-model")
    _data_quality(sagemaker, "churn-data-quality")

    outcomes = _by_resource(_sweep(monkeypatch, aws))

    assert outcomes[f"{ARN}notebook-instance/exploration"].controls == (
        "SageMaker.1",
        "SageMaker.2",
        "SageMaker.3",
        "SageMaker.21",
    )
    assert outcomes[f"{ARN}model/churn-model"].controls == ("SageMaker.5", "SageMaker.16")
    assert outcomes[f"{ARN}data-quality-job-definition/churn-data-quality"].controls == (
        "SageMaker.9",
        "SageMaker.11",
    )
    assert {o.outcome for o in outcomes.values()} == {OutcomeKind.FLAGGED}
    assert len(aws.alerts()) == 3


@pytest.mark.usefixtures("moto_listings")
def test_a_region_is_swept_in_that_region(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: every Describe went to the function's own region, and another region's model read as deleted.
    boto3.client("sagemaker", region_name="eu-west-1").create_model(
        ModelName="frankfurt-model", PrimaryContainer={"Image": "xgboost:1.7"}, ExecutionRoleArn=ROLE
    )
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", "dry-run")
    inventory = Inventory(ACCOUNT, "eu-west-1", first_region=False)

    [outcome] = sweep_check(UNIT, inventory, load_settings(), new_sweep_id())

    assert (outcome.resource, outcome.outcome) == (
        f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:model/frankfurt-model",
        OutcomeKind.FLAGGED,
    )


@pytest.mark.usefixtures("moto_listings")
def test_finished_jobs_are_not_swept(aws: AwsWorld, sagemaker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto's jobs are Completed at once: the InProgress filter leaves them out.
    sagemaker.create_training_job(
        TrainingJobName="finished",
        AlgorithmSpecification={"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://out/"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )

    assert _sweep(monkeypatch, aws) == []


@pytest.mark.usefixtures("moto_listings")
def test_a_second_sweep_over_unchanged_resources_sends_nothing(
    aws: AwsWorld, sagemaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open_model(sagemaker, "churn-model")
    first = _sweep(monkeypatch, aws)
    assert len(aws.alerts()) == 1

    second = _sweep(monkeypatch, aws)

    assert [(o.outcome, o.controls) for o in second] == [(o.outcome, o.controls) for o in first]
    assert len(aws.alerts()) == 1
    assert not any(o.alerted for o in second)


@pytest.mark.usefixtures("moto_listings")
@pytest.mark.parametrize(
    ("create", "event_name", "parameter", "kind"),
    [
        (_open_model, "CreateModel", "modelName", "model"),
        (_open_notebook, "CreateNotebookInstance", "notebookInstanceName", "notebook-instance"),
        (_data_quality, "CreateDataQualityJobDefinition", "jobDefinitionName", "data-quality-job-definition"),
    ],
)
def test_event_path_and_sweep_give_the_same_outcome_for_the_same_resource(
    aws: AwsWorld,
    sagemaker: Any,
    make_handler: Callable[..., Handler],
    cloudtrail_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    create: Callable[[Any, str], None],
    event_name: str,
    parameter: str,
    kind: str,
) -> None:
    create(sagemaker, "via-event")
    create(sagemaker, "via-sweep")
    by_event = make_handler(app="check_sagemaker_encryption", mode="dry-run")(
        cloudtrail_event(
            event_name, request_parameters={parameter: "via-event"}, event_source="sagemaker.amazonaws.com"
        )
    )
    clients.client.cache_clear()

    by_sweep = _by_resource(_sweep(monkeypatch, aws))[f"{ARN}{kind}/via-sweep"]

    assert by_event["outcome"] == by_sweep.outcome.value == "flagged"
    assert by_event["severity"] == by_sweep.severity.value
    assert by_event["findings"] == list(by_sweep.findings)
    assert by_event["controls"] == list(by_sweep.controls)
    assert by_event["details"] == by_sweep.details


# --- the listings: filters, pagination, a failing listing (Stubber) ---------------------------------------------


@pytest.fixture
def stub(aws: AwsWorld) -> Iterator[Stubber]:
    """The sweep's listings (the inventory's client for its region)."""
    with Stubber(clients.client("sagemaker", REGION)) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def describe(aws: AwsWorld) -> Iterator[Stubber]:
    """The check's Describe* calls (the function's own client: the resources are in its region)."""
    with Stubber(clients.client("sagemaker")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _expect_listings(stub: Stubber, answers: dict[Kind, list[dict[str, Any]]]) -> None:
    """Every List* call of the sweep, in its order, with its filter; `answers` gives a kind's pages
    (each {"items": [...], "next": token}); an Exception fails that kind's listing."""
    for listing in sagemaker_check._LISTINGS:
        token: str | None = None
        for page in answers.get(listing.kind, [{"items": []}]):
            params = dict(listing.filters) | ({"NextToken": token} if token else {})
            if isinstance(page, Exception):
                stub.add_client_error(listing.method, service_error_code=str(page), expected_params=params)
                break
            response: dict[str, Any] = {listing.items: page["items"]}
            if page.get("next"):
                response["NextToken"] = page["next"]
            stub.add_response(listing.method, response, expected_params=params)
            token = page.get("next")


def test_jobs_are_listed_in_progress_only_and_everything_else_whole(
    aws: AwsWorld, stub: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    _expect_listings(stub, {})

    assert _sweep(monkeypatch, aws, concurrency=1) == []
    filtered = {listing.kind for listing in sagemaker_check._LISTINGS if listing.filters}
    assert filtered == {Kind.TRAINING_JOB, Kind.PROCESSING_JOB, Kind.TRANSFORM_JOB, Kind.TUNING_JOB, Kind.AUTOML_JOB}


def _feature_group_summary(name: str) -> dict[str, Any]:
    return {
        "FeatureGroupName": name,
        "FeatureGroupArn": f"{ARN}feature-group/{name}",
        "CreationTime": "2026-01-12T09:00:00Z",
        "FeatureGroupStatus": "Created",
    }


def test_feature_groups_are_swept_past_one_page(
    aws: AwsWorld, stub: Stubber, describe: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    _expect_listings(
        stub,
        {
            Kind.FEATURE_GROUP: [
                {"items": [_feature_group_summary("page_one")], "next": "token-2"},
                {"items": [_feature_group_summary("page_two")]},
            ]
        },
    )
    for name in ("page_one", "page_two"):
        describe.add_response(
            "describe_feature_group",
            {
                "FeatureGroupArn": f"{ARN}feature-group/{name}",
                "FeatureGroupName": name,
                "RecordIdentifierFeatureName": "id",
                "EventTimeFeatureName": "t",
                "FeatureDefinitions": [{"FeatureName": "id", "FeatureType": "String"}],
                "CreationTime": "2026-01-12T09:00:00Z",
                "OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://features/", "KmsKeyId": KEY}},
                "NextToken": "",
            },
            expected_params={"FeatureGroupName": name},
        )

    outcomes = _sweep(monkeypatch, aws, concurrency=1)

    assert [(o.resource, o.outcome) for o in outcomes] == [
        (f"{ARN}feature-group/page_one", OutcomeKind.COMPLIANT),
        (f"{ARN}feature-group/page_two", OutcomeKind.COMPLIANT),
    ]


def test_ended_inference_experiments_are_skipped(
    aws: AwsWorld, stub: Stubber, describe: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    def experiment(name: str, status: str) -> dict[str, Any]:
        return {
            "Name": name,
            "Type": "ShadowMode",
            "Status": status,
            "CreationTime": "2026-01-12T09:00:00Z",
            "LastModifiedTime": "2026-01-12T09:00:00Z",
        }

    _expect_listings(
        stub,
        {
            Kind.INFERENCE_EXPERIMENT: [
                {
                    "items": [
                        experiment("done", "Completed"),
                        experiment("stopped", "Cancelled"),
                        experiment("live", "Running"),
                    ]
                }
            ]
        },
    )
    describe.add_response(
        "describe_inference_experiment",
        {
            "Arn": f"{ARN}inference-experiment/live",
            "Name": "live",
            "Type": "ShadowMode",
            "Status": "Running",
            "EndpointMetadata": {"EndpointName": "churn"},
            "ModelVariants": [],
        },
        expected_params={"Name": "live"},
    )

    outcomes = _sweep(monkeypatch, aws, concurrency=1)

    assert [(o.resource, o.controls) for o in outcomes] == [(f"{ARN}inference-experiment/live", ("SageMaker.23",))]


def test_a_listing_that_fails_is_a_failed_outcome_and_the_other_kinds_are_still_swept(
    aws: AwsWorld, stub: Stubber, describe: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An SCP denying one List* call must not blind the sweep to the other kinds, nor pass unnoticed.
    _expect_listings(
        stub,
        {
            Kind.NOTEBOOK_INSTANCE: [
                {
                    "items": [
                        {
                            "NotebookInstanceName": "exploration",
                            "NotebookInstanceArn": f"{ARN}notebook-instance/exploration",
                        }
                    ]
                }
            ],
            Kind.MODEL: [Exception("AccessDeniedException")],
        },
    )
    describe.add_response(
        "describe_notebook_instance",
        {
            "NotebookInstanceArn": f"{ARN}notebook-instance/exploration",
            "NotebookInstanceName": "exploration",
            "KmsKeyId": KEY,
            "SubnetId": "subnet-1",
            "DirectInternetAccess": "Disabled",
            "RootAccess": "Disabled",
            "PlatformIdentifier": "notebook-al2023-v1",
        },
        expected_params={"NotebookInstanceName": "exploration"},
    )

    outcomes = _by_resource(_sweep(monkeypatch, aws, concurrency=1))

    assert outcomes[f"{ARN}notebook-instance/exploration"].outcome is OutcomeKind.COMPLIANT
    failed = outcomes[f"{ACCOUNT}/{REGION}/model"]
    assert (failed.outcome, failed.severity.value, failed.error_code) == (
        OutcomeKind.FAILED,
        "HIGH",
        "AccessDeniedException",
    )
    assert "permission sagemaker:ListModels is missing" in failed.reason
    assert [alert.outcome["outcome"] for alert in aws.alerts()] == ["failed"]


@pytest.mark.parametrize(
    "target",
    [
        sagemaker_check.target_of_key(
            {"kind": "feature-group", "name": "customer_features", "region": REGION, "account": ACCOUNT}
        ),
        sagemaker_check.ListingFailed(
            Kind.MODEL, "sagemaker:ListModels", "Throttling", "Rate exceeded", REGION, ACCOUNT
        ),
    ],
)
def test_a_target_survives_its_key(target: Any) -> None:
    assert UNIT.target_of_key(UNIT.key_of(target)) == target


def test_a_key_naming_an_invalid_resource_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid"):
        UNIT.target_of_key({"kind": "model", "name": "../etc", "region": REGION, "account": ACCOUNT})
