"""SageMaker.1-.25 through the handler: the outcome, its `controls`, and the alert a subscriber receives.

moto 5.2.5 creates and describes models (always with EnableNetworkIsolation false), notebook instances,
the four monitoring job definitions and feature groups (without an online store). It has no monitoring
schedules, inference experiments or UpdateNotebookInstance: those paths, an isolated model and an online
store use botocore's Stubber with expected_params; S3 and SNS stay on moto.
Control pages: https://docs.aws.amazon.com/securityhub/latest/userguide/sagemaker-controls.html
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mlwarden import clients
from tests.conftest import ACCOUNT, REGION

APP = "check_sagemaker_encryption"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
VPC = {"SecurityGroupIds": ["sg-0a1b2c3d"], "Subnets": ["subnet-0a1b2c3d"]}
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"


@pytest.fixture
def sagemaker(aws: Any) -> Any:
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def check(make_handler: Callable[..., Any]) -> Any:
    return make_handler(app=APP)


def call(cloudtrail_event: Any, event_name: str, **request_parameters: Any) -> dict[str, Any]:
    return cloudtrail_event(event_name, request_parameters=request_parameters, event_source="sagemaker.amazonaws.com")


def rules_of(alert: Any) -> dict[str, dict[str, Any]]:
    return {rule["rule"]: rule for rule in alert.outcome["details"]["failed_rules"]}


@pytest.fixture
def stub(aws: Any) -> Iterator[Stubber]:
    with Stubber(clients.client("sagemaker")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def subscribe_with_filter(aws: Any, name: str, policy: dict[str, Any]) -> str:
    """A second subscriber of the alert topic that receives only what its filter policy matches."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sns.subscribe(
        TopicArn=aws.topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "false", "FilterPolicy": json.dumps(policy)},
    )
    return str(url)


def received(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


# --- models: SageMaker.5, .16, .19 --------------------------------------------------------------------------


def test_model_in_a_vpc_without_network_isolation_fails_sagemaker_5(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    # Before: a VPC was taken as a substitute for isolation, and this model passed every rule.
    sagemaker.create_model(
        ModelName="churn-model",
        PrimaryContainer={"Image": "xgboost:1.7", "ImageConfig": {"RepositoryAccessMode": "Vpc"}},
        ExecutionRoleArn=ROLE,
        VpcConfig=VPC,
        EnableNetworkIsolation=False,
    )

    result = check(call(cloudtrail_event, "CreateModel", modelName="churn-model"))

    assert (result["outcome"], result["severity"], result["controls"]) == ("flagged", "MEDIUM", ["SageMaker.5"])
    alert = aws.only_alert()
    assert rules_of(alert).keys() == {"model-network-isolation-off"}
    assert alert.outcome["controls"] == ["SageMaker.5"]
    assert json.loads(alert.attributes["controls"]) == ["SageMaker.5"]


def test_a_filter_policy_on_the_controls_attribute_selects_the_alerts(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    network_team = subscribe_with_filter(aws, "network-team", {"controls": ["SageMaker.5"]})
    monitoring_team = subscribe_with_filter(aws, "monitoring-team", {"controls": ["SageMaker.22"]})
    sagemaker.create_model(ModelName="open-model", PrimaryContainer={"Image": "xgboost:1.7"}, ExecutionRoleArn=ROLE)

    result = check(call(cloudtrail_event, "CreateModel", modelName="open-model"))

    assert result["controls"] == ["SageMaker.5", "SageMaker.16"]
    [notification] = received(network_team)
    assert notification["MessageAttributes"]["controls"]["Type"] == "String.Array"
    assert received(monitoring_team) == []


def test_inference_pipeline_containers_without_a_private_registry_fail_sagemaker_19(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    sagemaker.create_model(
        ModelName="pipeline-model",
        Containers=[
            {"Image": "preprocess:1", "ImageConfig": {"RepositoryAccessMode": "Vpc"}},
            {"Image": "xgboost:1.7", "ImageConfig": {"RepositoryAccessMode": "Platform"}},
        ],
        ExecutionRoleArn=ROLE,
    )

    result = check(call(cloudtrail_event, "CreateModel", modelName="pipeline-model"))

    # moto keeps no network isolation (SageMaker.5); an inference pipeline is not graded by .16.
    assert result["controls"] == ["SageMaker.5", "SageMaker.19"]
    failed = rules_of(aws.only_alert())["model-pipeline-container-public-registry"]
    assert failed["fields"] == ["Containers[1].ImageConfig.RepositoryAccessMode"]


def test_securityhub_config_rule_on_a_model_is_decided_on_the_live_model(
    aws: Any, stub: Stubber, check: Any, config_event: Any
) -> None:
    stub.add_response(
        "describe_model",
        {
            "ModelName": "isolated",
            "ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/isolated",
            "PrimaryContainer": {"Image": "xgboost:1.7", "ImageConfig": {"RepositoryAccessMode": "Vpc"}},
            "ExecutionRoleArn": ROLE,
            "CreationTime": "2026-01-12T09:00:00Z",
            "EnableNetworkIsolation": True,
        },
        expected_params={"ModelName": "isolated"},
    )
    event = config_event(
        "securityhub-sagemaker-model-isolation-enabled-f1a2b3", "AWS::SageMaker::Model", "isolated", "NON_COMPLIANT"
    )

    result = check(event)

    # Config was late or wrong: the model as it is now passes, and nothing is alerted.
    assert result["outcome"] == "compliant"
    assert result["controls"] == ["SageMaker.5", "SageMaker.16", "SageMaker.19"]
    assert aws.alerts() == []


def test_config_rule_about_another_resource_type_is_ignored(check: Any, config_event: Any) -> None:
    event = config_event(
        "sagemaker-model-isolation-enabled-a1b2", "AWS::SageMaker::NotebookInstance", "exploration", "NON_COMPLIANT"
    )

    result = check(event)

    assert result["outcome"] == "ignored"
    assert "is not what the rule sagemaker-model-isolation-enabled grades" in result["reason"]


# --- notebook instances: an update can turn root access back on (SageMaker.3) ---------------------------------


def test_update_notebook_instance_is_checked_on_the_live_notebook(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    # Before: UpdateNotebookInstance was not watched, so root access turned back on went unseen.
    sagemaker.create_notebook_instance(
        NotebookInstanceName="exploration",
        InstanceType="ml.t3.medium",
        RoleArn=ROLE,
        KmsKeyId=KEY,
        SubnetId="subnet-0a1b2c3d",
        SecurityGroupIds=["sg-0a1b2c3d"],
        DirectInternetAccess="Disabled",
        RootAccess="Enabled",
    )

    result = check(
        call(cloudtrail_event, "UpdateNotebookInstance", notebookInstanceName="exploration", rootAccess="Enabled")
    )

    assert (result["outcome"], result["severity"], result["controls"]) == ("flagged", "HIGH", ["SageMaker.3"])
    assert rules_of(aws.only_alert()).keys() == {"notebook-root-access"}


def test_an_update_is_never_decided_on_its_own_request_parameters(
    stub: Stubber, check: Any, cloudtrail_event: Any
) -> None:
    # An update's parameters are the change, not the notebook: "rootAccess Disabled" says nothing of the rest.
    stub.add_client_error(
        "describe_notebook_instance",
        service_error_code="ThrottlingException",
        http_status_code=400,
        expected_params={"NotebookInstanceName": "exploration"},
    )

    with pytest.raises(Exception, match="could not check the notebook-instance"):
        check(
            call(cloudtrail_event, "UpdateNotebookInstance", notebookInstanceName="exploration", rootAccess="Disabled")
        )


# --- model monitoring: SageMaker.9-.15, .20, .22, .25 ---------------------------------------------------------


def monitoring_definition(instances: int, *, encrypted: bool, isolated: bool) -> dict[str, Any]:
    return {
        "JobResources": {
            "ClusterConfig": {
                "InstanceCount": instances,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 20,
                "VolumeKmsKeyId": KEY,
            }
        },
        "NetworkConfig": {"EnableInterContainerTrafficEncryption": encrypted, "EnableNetworkIsolation": isolated},
        "RoleArn": ROLE,
    }


def test_data_quality_job_definition_without_encryption_or_isolation_fails_sagemaker_9_and_11(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    sagemaker.create_data_quality_job_definition(
        JobDefinitionName="churn-data-quality",
        DataQualityAppSpecification={"ImageUri": IMAGE},
        DataQualityJobInput={"EndpointInput": {"EndpointName": "churn", "LocalPath": "/opt/ml/processing/input"}},
        DataQualityJobOutputConfig={
            "MonitoringOutputs": [{"S3Output": {"S3Uri": "s3://monitoring/dq", "LocalPath": "/opt/ml/processing/o"}}],
            "KmsKeyId": KEY,
        },
        **monitoring_definition(2, encrypted=False, isolated=False),
    )

    result = check(call(cloudtrail_event, "CreateDataQualityJobDefinition", jobDefinitionName="churn-data-quality"))

    assert (result["outcome"], result["severity"]) == ("flagged", "MEDIUM")
    assert result["controls"] == ["SageMaker.9", "SageMaker.11"]
    assert rules_of(aws.only_alert()).keys() == {
        "data-quality-job-definition-inter-container-traffic-not-encrypted",
        "data-quality-job-definition-network-isolation-off",
    }


def test_model_quality_job_definition_without_isolation_is_high_as_sagemaker_25(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    sagemaker.create_model_quality_job_definition(
        JobDefinitionName="churn-model-quality",
        ModelQualityAppSpecification={"ImageUri": IMAGE, "ProblemType": "BinaryClassification"},
        ModelQualityJobInput={
            "EndpointInput": {"EndpointName": "churn", "LocalPath": "/opt/ml/processing/input"},
            "GroundTruthS3Input": {"S3Uri": "s3://monitoring/ground-truth"},
        },
        ModelQualityJobOutputConfig={
            "MonitoringOutputs": [{"S3Output": {"S3Uri": "s3://monitoring/mq", "LocalPath": "/opt/ml/processing/o"}}],
            "KmsKeyId": KEY,
        },
        **monitoring_definition(1, encrypted=True, isolated=False),
    )

    result = check(call(cloudtrail_event, "CreateModelQualityJobDefinition", jobDefinitionName="churn-model-quality"))

    assert (result["severity"], result["controls"]) == ("HIGH", ["SageMaker.25"])


def test_monitoring_schedule_with_an_embedded_job_without_isolation_fails_sagemaker_14_and_22(
    aws: Any, stub: Stubber, check: Any, cloudtrail_event: Any
) -> None:
    stub.add_response(
        "describe_monitoring_schedule",
        {
            "MonitoringScheduleArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:monitoring-schedule/churn-hourly",
            "MonitoringScheduleName": "churn-hourly",
            "MonitoringScheduleStatus": "Scheduled",
            "CreationTime": "2026-01-12T09:00:00Z",
            "LastModifiedTime": "2026-01-12T09:00:00Z",
            "MonitoringScheduleConfig": {
                "MonitoringJobDefinition": {
                    "MonitoringInputs": [{"EndpointInput": {"EndpointName": "churn", "LocalPath": "/opt/ml/in"}}],
                    "MonitoringOutputConfig": {
                        "MonitoringOutputs": [{"S3Output": {"S3Uri": "s3://monitoring/h", "LocalPath": "/opt/ml/o"}}],
                        "KmsKeyId": KEY,
                    },
                    "MonitoringResources": {
                        "ClusterConfig": {
                            "InstanceCount": 1,
                            "InstanceType": "ml.m5.xlarge",
                            "VolumeSizeInGB": 20,
                            "VolumeKmsKeyId": KEY,
                        }
                    },
                    "MonitoringAppSpecification": {"ImageUri": IMAGE},
                    "RoleArn": ROLE,
                    "NetworkConfig": {"EnableNetworkIsolation": False},
                }
            },
        },
        expected_params={"MonitoringScheduleName": "churn-hourly"},
    )

    result = check(call(cloudtrail_event, "CreateMonitoringSchedule", monitoringScheduleName="churn-hourly"))

    assert result["controls"] == ["SageMaker.14", "SageMaker.22"]
    assert rules_of(aws.only_alert()).keys() == {
        "monitoring-schedule-inter-container-traffic-not-encrypted",
        "monitoring-schedule-network-isolation-off",
    }


def test_monitoring_schedule_naming_a_job_definition_is_graded_by_that_definition(
    aws: Any, stub: Stubber, check: Any, cloudtrail_event: Any
) -> None:
    stub.add_response(
        "describe_monitoring_schedule",
        {
            "MonitoringScheduleArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:monitoring-schedule/churn-daily",
            "MonitoringScheduleName": "churn-daily",
            "MonitoringScheduleStatus": "Scheduled",
            "CreationTime": "2026-01-12T09:00:00Z",
            "LastModifiedTime": "2026-01-12T09:00:00Z",
            "MonitoringScheduleConfig": {
                "MonitoringJobDefinitionName": "churn-data-quality",
                "MonitoringType": "DataQuality",
            },
        },
        expected_params={"MonitoringScheduleName": "churn-daily"},
    )

    result = check(call(cloudtrail_event, "UpdateMonitoringSchedule", monitoringScheduleName="churn-daily"))

    assert result["outcome"] == "compliant"
    assert result["controls"] == ["SageMaker.14", "SageMaker.22"]


# --- Feature Store: SageMaker.17, .18; inference experiments: SageMaker.23, .24 --------------------------------


def test_feature_group_offline_store_without_a_key_fails_sagemaker_17(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    sagemaker.create_feature_group(
        FeatureGroupName="customer_features",
        RecordIdentifierFeatureName="customer_id",
        EventTimeFeatureName="event_time",
        FeatureDefinitions=[
            {"FeatureName": "customer_id", "FeatureType": "String"},
            {"FeatureName": "event_time", "FeatureType": "String"},
        ],
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://feature-store/offline"}},
        RoleArn=ROLE,
    )

    result = check(call(cloudtrail_event, "CreateFeatureGroup", featureGroupName="customer_features"))

    assert (result["severity"], result["controls"]) == ("MEDIUM", ["SageMaker.17"])
    assert rules_of(aws.only_alert()).keys() == {"feature-group-offline-store-not-encrypted-with-kms-key"}


def feature_group(online: dict[str, Any]) -> dict[str, Any]:
    return {
        "FeatureGroupArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:feature-group/customer_features",
        "FeatureGroupName": "customer_features",
        "RecordIdentifierFeatureName": "customer_id",
        "EventTimeFeatureName": "event_time",
        "FeatureDefinitions": [{"FeatureName": "customer_id", "FeatureType": "String"}],
        "CreationTime": "2026-01-12T09:00:00Z",
        "OnlineStoreConfig": online,
        "NextToken": "",
    }


@pytest.mark.parametrize(
    ("online", "controls"),
    [
        ({"EnableOnlineStore": True}, ["SageMaker.18"]),
        ({"EnableOnlineStore": True, "StorageType": "Standard"}, ["SageMaker.18"]),
        # .18 grades standard storage only: the in-memory tier takes no customer key.
        ({"EnableOnlineStore": True, "StorageType": "InMemory"}, ["SageMaker.17", "SageMaker.18"]),
        ({"EnableOnlineStore": True, "SecurityConfig": {"KmsKeyId": KEY}}, ["SageMaker.17", "SageMaker.18"]),
    ],
)
def test_feature_group_online_store_with_standard_storage_needs_a_key_sagemaker_18(
    aws: Any, stub: Stubber, check: Any, cloudtrail_event: Any, online: dict[str, Any], controls: list[str]
) -> None:
    stub.add_response(
        "describe_feature_group", feature_group(online), expected_params={"FeatureGroupName": "customer_features"}
    )

    result = check(call(cloudtrail_event, "UpdateFeatureGroup", featureGroupName="customer_features"))

    assert result["controls"] == controls


def test_inference_experiment_without_keys_fails_sagemaker_23_and_24(
    aws: Any, stub: Stubber, check: Any, cloudtrail_event: Any
) -> None:
    stub.add_response(
        "describe_inference_experiment",
        {
            "Arn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:inference-experiment/churn-shadow",
            "Name": "churn-shadow",
            "Type": "ShadowMode",
            "Status": "Running",
            "EndpointMetadata": {"EndpointName": "churn"},
            "ModelVariants": [],
            "DataStorageConfig": {"Destination": "s3://capture/shadow"},
        },
        expected_params={"Name": "churn-shadow"},
    )

    result = check(call(cloudtrail_event, "CreateInferenceExperiment", name="churn-shadow"))

    assert (result["severity"], result["controls"]) == ("MEDIUM", ["SageMaker.23", "SageMaker.24"])
    assert result["resource"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:inference-experiment/churn-shadow"


# --- DisableNotebookRootAccess: the one safe fix of SageMaker.1-.25 -------------------------------------------

NOTEBOOK_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:notebook-instance/exploration"


def notebook(status: str, root: str) -> dict[str, Any]:
    """DescribeNotebookInstance of a notebook that passes every control but (maybe) SageMaker.3."""
    return {
        "NotebookInstanceArn": NOTEBOOK_ARN,
        "NotebookInstanceName": "exploration",
        "NotebookInstanceStatus": status,
        "InstanceType": "ml.t3.medium",
        "SubnetId": "subnet-0a1b2c3d",
        "KmsKeyId": KEY,
        "DirectInternetAccess": "Disabled",
        "RootAccess": root,
        "PlatformIdentifier": "notebook-al2023-v1",
    }


def fixing_root(make_handler: Callable[..., Any], mode: str = "enforce") -> Any:
    return make_handler(app=APP, mode=mode, env={"DISABLE_NOTEBOOK_ROOT_ACCESS": "true"})


def expect_notebook(stub: Stubber, status: str, root: str) -> None:
    stub.add_response(
        "describe_notebook_instance",
        notebook(status, root),
        expected_params={"NotebookInstanceName": "exploration"},
    )


def expect_tags(stub: Stubber, tags: dict[str, str]) -> None:
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": key, "Value": value} for key, value in tags.items()]},
        expected_params={"ResourceArn": NOTEBOOK_ARN},
    )


def update_event(cloudtrail_event: Any) -> dict[str, Any]:
    return call(cloudtrail_event, "UpdateNotebookInstance", notebookInstanceName="exploration", rootAccess="Enabled")


def test_root_access_on_a_stopped_notebook_is_turned_off_and_read_back(
    aws: Any, stub: Stubber, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    check = fixing_root(make_handler)
    expect_notebook(stub, "Stopped", "Enabled")
    expect_tags(stub, {"team": "research"})
    stub.add_response(
        "update_notebook_instance",
        {},
        expected_params={"NotebookInstanceName": "exploration", "RootAccess": "Disabled"},
    )
    expect_notebook(stub, "Updating", "Disabled")

    result = check(update_event(cloudtrail_event))

    assert (result["outcome"], result["controls"]) == ("remediated", ["SageMaker.3"])
    assert result["actions"] == ["sagemaker:UpdateNotebookInstance"]
    assert (result["previous_state"], result["new_state"]) == ({"RootAccess": "Enabled"}, {"RootAccess": "Disabled"})
    assert "--root-access Enabled" in aws.only_alert().outcome["undo"]


def test_root_access_on_a_running_notebook_is_only_alerted(
    aws: Any, stub: Stubber, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    # Updating needs the instance stopped; stopping it would cut off the people working in it.
    expect_notebook(stub, "InService", "Enabled")

    result = fixing_root(make_handler)(update_event(cloudtrail_event))

    assert result["outcome"] == "flagged"
    assert result["reason"].endswith("root access left on: instance status is InService")


def test_an_exempt_notebook_keeps_root_access(
    aws: Any, stub: Stubber, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    aws.grant_exemption(NOTEBOOK_ARN, check="check_sagemaker_encryption")
    expect_notebook(stub, "Stopped", "Enabled")
    expect_tags(stub, {})

    result = fixing_root(make_handler)(update_event(cloudtrail_event))

    assert result["outcome"] == "exempt"


def test_root_access_that_does_not_read_back_off_is_a_failure(
    aws: Any, stub: Stubber, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    expect_notebook(stub, "Stopped", "Enabled")
    expect_tags(stub, {})
    stub.add_response(
        "update_notebook_instance",
        {},
        expected_params={"NotebookInstanceName": "exploration", "RootAccess": "Disabled"},
    )
    expect_notebook(stub, "Stopped", "Enabled")

    with pytest.raises(Exception, match="RootAccess reads back as Enabled"):
        fixing_root(make_handler)(update_event(cloudtrail_event))
    assert aws.only_alert().outcome["outcome"] == "failed"


def test_dry_run_says_what_it_would_change(
    aws: Any, stub: Stubber, make_handler: Callable[..., Any], cloudtrail_event: Any
) -> None:
    expect_notebook(stub, "Stopped", "Enabled")
    expect_tags(stub, {})

    result = fixing_root(make_handler, mode="dry-run")(update_event(cloudtrail_event))

    assert (result["outcome"], result["new_state"]) == ("would-remediate", {"RootAccess": "Disabled"})
