"""check_sagemaker_encryption in moto: the outcome and the one alert the subscriber received per resource.

moto 5.2.5 creates and describes training, processing and transform jobs, tuning jobs, notebook
instances, endpoint configurations, models and Studio domains, keeping their KMS fields. It lacks
CreateAutoMLJob/DescribeAutoMLJob (and CreateAutoMLJobV2 fails without a problem type), and
StopTrainingJob/StopTransformJob/StopHyperParameterTuningJob: those paths use botocore's Stubber in
test_check_sagemaker_encryption_stop.py. moto's jobs are Completed at once, so stopping is only
reachable with the Stubber.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from mlwarden.settings import SettingsError

APP = "check_sagemaker_encryption"
ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
FAKE_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
FAKE_PASSWORD = "hunter2-do-not-log-me"


@pytest.fixture
def sagemaker(aws: Any) -> Any:
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def check(make_handler: Callable[..., Any]) -> Any:
    return make_handler(app=APP)


def create_training_job(
    sagemaker: Any, name: str, *, keys: bool = False, bucket: str = "plain-data", **extra: Any
) -> None:
    resource: dict[str, Any] = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    output: dict[str, Any] = {"S3OutputPath": "s3://model-artifacts/out/"}
    if keys:
        resource["VolumeKmsKeyId"] = KEY
        output["KmsKeyId"] = KEY
    resource.update(extra.pop("resource", {}))
    sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/train/"}},
            }
        ],
        OutputDataConfig=output,
        ResourceConfig=resource,
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        **extra,
    )


def sagemaker_event(cloudtrail_event: Any, event_name: str, **request_parameters: Any) -> dict[str, Any]:
    return cloudtrail_event(
        event_name,
        request_parameters=request_parameters,
        event_source="sagemaker.amazonaws.com",
    )


def rules_of(alert: Any) -> dict[str, dict[str, Any]]:
    return {rule["rule"]: rule for rule in alert.outcome["details"]["failed_rules"]}


# --- training jobs -----------------------------------------------------------------------------------------


def test_unencrypted_training_job_on_pii_data_is_one_high_alert_naming_the_missing_keys(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    # Given a training job without keys, outside a VPC, reading a bucket tagged as PII
    aws.bucket("patient-records", tags={"mlwarden:pii": "true", "team": "ml"})
    create_training_job(sagemaker, "churn-unencrypted", bucket="patient-records")

    # When CloudTrail reports its creation (with no request parameters: decided on the live job)
    result = check(sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="churn-unencrypted"))

    # Then one alert lists every failed rule with its severity and the missing fields
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "HIGH"
    assert alert.attributes["outcome"] == "flagged"
    assert alert.attributes["check"] == APP
    rules = rules_of(alert)
    assert set(rules) == {
        "storage-volume-not-encrypted-with-kms-key",
        "output-not-encrypted-with-kms-key",
        "no-vpc-and-no-network-isolation",
    }
    assert rules["storage-volume-not-encrypted-with-kms-key"]["fields"] == ["ResourceConfig.VolumeKmsKeyId"]
    assert rules["output-not-encrypted-with-kms-key"]["fields"] == ["OutputDataConfig.KmsKeyId"]
    # the PII tag raises the network rule from LOW to HIGH
    assert rules["no-vpc-and-no-network-isolation"]["severity"] == "HIGH"
    assert "ResourceConfig.VolumeKmsKeyId" in alert.line("What")
    assert "OutputDataConfig.KmsKeyId" in alert.line("What")
    assert alert.outcome["details"]["pii_buckets"] == ["patient-records"]
    assert alert.outcome["details"]["described_by"] == "DescribeTrainingJob"
    assert alert.outcome["resource"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/churn-unencrypted"
    assert alert.subject.endswith("training-job/churn-unencrypted")
    assert result["outcome"] == "flagged"
    assert result["alerted"] is True


def test_network_rule_is_low_when_no_input_bucket_is_pii(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("plain-data", tags={"team": "ml"})
    create_training_job(sagemaker, "churn-keys", keys=True, bucket="plain-data")

    result = check(sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="churn-keys"))

    assert result["severity"] == "LOW"
    assert set(rules_of(aws.only_alert())) == {"no-vpc-and-no-network-isolation"}


def test_encrypted_isolated_training_job_is_compliant_and_quiet(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("patient-records", tags={"mlwarden:pii": "true"})
    create_training_job(
        sagemaker,
        "churn-encrypted",
        keys=True,
        bucket="patient-records",
        VpcConfig={"SecurityGroupIds": ["sg-0a1b2c3d"], "Subnets": ["subnet-0a1b2c3d"]},
        EnableNetworkIsolation=True,
    )

    result = check(sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="churn-encrypted"))

    assert result["outcome"] == "compliant"
    assert aws.alerts() == []


def test_distributed_training_without_inter_container_encryption_is_medium(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    create_training_job(
        sagemaker,
        "churn-distributed",
        keys=True,
        resource={"InstanceCount": 4},
        EnableNetworkIsolation=True,
        EnableInterContainerTrafficEncryption=False,
    )

    result = check(sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="churn-distributed"))

    assert result["severity"] == "MEDIUM"
    rules = rules_of(aws.only_alert())
    assert rules["inter-container-traffic-not-encrypted"]["fields"] == ["EnableInterContainerTrafficEncryption"]


def test_local_nvme_instance_is_not_asked_for_a_volume_key(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    create_training_job(sagemaker, "llm-finetune", resource={"InstanceType": "ml.p4d.24xlarge"})

    check(sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="llm-finetune"))

    assert "storage-volume-not-encrypted-with-kms-key" not in rules_of(aws.only_alert())


def test_credentials_are_named_but_their_values_never_logged_or_alerted(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    create_training_job(
        sagemaker,
        "churn-secrets",
        keys=True,
        EnableNetworkIsolation=True,
        # moto keeps a training job's hyperparameters but drops its Environment (unit tests cover that)
        HyperParameters={
            "max_depth": "5",
            "db_password": FAKE_PASSWORD,
            "upload": FAKE_ACCESS_KEY,
            "max_new_tokens": "256",
        },
    )

    result = check(sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="churn-secrets"))

    alert = aws.only_alert()
    assert result["severity"] == "HIGH"
    # the access key id is a value (HIGH); a password's name with a passphrase is no proof of one (MEDIUM)
    rule = rules_of(alert)["credentials-in-plain-text"]
    assert rule["fields"] == ["HyperParameters.upload"]
    assert "Secrets Manager" in rule["explanation"]
    assert rules_of(alert)["credential-named-parameter"]["fields"] == ["HyperParameters.db_password"]
    logs = capsys.readouterr()
    for text in (alert.body, json.dumps(alert.envelope), json.dumps(result), logs.out, logs.err):
        assert FAKE_PASSWORD not in text
        assert FAKE_ACCESS_KEY not in text


def test_describe_failure_falls_back_to_the_event_and_says_so(aws: Any, check: Any, sample_event: Any) -> None:
    # Given the job does not exist in this account (describe fails), the event's parameters decide
    result = check(sample_event("sagemaker/create-training-job-unencrypted.json"))

    assert result["outcome"] == "flagged"
    assert result["details"]["described_by"].startswith("CreateTrainingJob request parameters, because")
    assert "decided on the CreateTrainingJob request parameters" in aws.only_alert().line("What")


def test_job_gone_and_no_parameters_is_ignored(aws: Any, check: Any, cloudtrail_event: Any) -> None:
    event = sagemaker_event(cloudtrail_event, "CreateTrainingJob", trainingJobName="never-existed")

    result = check(event)

    assert (result["outcome"], result["reason"]) == ("ignored", "the training-job never-existed no longer exists")
    assert aws.alerts() == []


def test_state_change_event_is_decided_on_the_live_job(aws: Any, sagemaker: Any, check: Any, sample_event: Any) -> None:
    create_training_job(sagemaker, "mlw-fraud-xgb-2025-06-03-13-30-02", keys=True, EnableNetworkIsolation=True)

    result = check(sample_event("sagemaker/training-job-state-change.json"))

    assert result["outcome"] == "compliant"
    assert result["trigger"]["kind"] == "state-change"
    assert result["details"]["described_by"] == "DescribeTrainingJob"


def test_failed_create_call_is_ignored(aws: Any, check: Any, sample_event: Any) -> None:
    result = check(sample_event("sagemaker/create-training-job-failed.json"))

    assert result["outcome"] == "ignored"
    assert "AccessDeniedException" in result["reason"]
    assert aws.alerts() == []


# --- other resource types ----------------------------------------------------------------------------------


def test_processing_cluster_without_keys_or_encryption(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    sagemaker.create_processing_job(
        ProcessingJobName="features",
        ProcessingResources={
            "ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
        },
        AppSpecification={"ImageUri": "sklearn:1.2"},
        RoleArn=ROLE,
        ProcessingOutputConfig={
            "Outputs": [
                {
                    "OutputName": "out",
                    "S3Output": {
                        "S3Uri": "s3://b/o",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        NetworkConfig={"EnableInterContainerTrafficEncryption": False, "EnableNetworkIsolation": True},
    )

    result = check(sagemaker_event(cloudtrail_event, "CreateProcessingJob", processingJobName="features"))

    # moto's DescribeProcessingJob leaves out ProcessingResources, so the instance count is unknown here
    # and the inter-container rule (2 instances) is covered by the unit table instead.
    assert result["severity"] == "HIGH"
    assert rules_of(aws.only_alert()).keys() == {
        "storage-volume-not-encrypted-with-kms-key",
        "output-not-encrypted-with-kms-key",
    }


def test_transform_job_without_keys(aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any) -> None:
    sagemaker.create_model(ModelName="churn-model", PrimaryContainer={"Image": "xgboost:1.7"}, ExecutionRoleArn=ROLE)
    sagemaker.create_transform_job(
        TransformJobName="scoring",
        ModelName="churn-model",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}},
        TransformOutput={"S3OutputPath": "s3://b/out"},
        TransformResources={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    )

    check(sagemaker_event(cloudtrail_event, "CreateTransformJob", transformJobName="scoring"))

    rules = rules_of(aws.only_alert())
    assert rules["storage-volume-not-encrypted-with-kms-key"]["fields"] == ["TransformResources.VolumeKmsKeyId"]
    assert rules["output-not-encrypted-with-kms-key"]["fields"] == ["TransformOutput.KmsKeyId"]


def test_notebook_with_internet_and_root_access(aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any) -> None:
    sagemaker.create_notebook_instance(
        NotebookInstanceName="exploration", InstanceType="ml.t3.medium", RoleArn=ROLE, KmsKeyId=KEY
    )

    result = check(sagemaker_event(cloudtrail_event, "CreateNotebookInstance", notebookInstanceName="exploration"))

    # SageMaker.1 and .3 are HIGH in Security Hub; .2 (no subnet of the user's VPC) fails with them.
    assert result["severity"] == "HIGH"
    assert result["controls"] == ["SageMaker.1", "SageMaker.2", "SageMaker.3"]
    assert rules_of(aws.only_alert()).keys() == {
        "notebook-direct-internet-access",
        "notebook-not-in-vpc",
        "notebook-root-access",
    }


def test_config_rule_on_a_notebook_checks_the_live_notebook(
    aws: Any, sagemaker: Any, check: Any, config_event: Any
) -> None:
    sagemaker.create_notebook_instance(
        NotebookInstanceName="exploration",
        InstanceType="ml.t3.medium",
        RoleArn=ROLE,
        DirectInternetAccess="Disabled",
        RootAccess="Disabled",
        SubnetId="subnet-0a1b2c3d",
        SecurityGroupIds=["sg-0a1b2c3d"],
    )
    event = config_event(
        "sagemaker-notebook-instance-kms-key-configured-a1b2c3",
        "AWS::SageMaker::NotebookInstance",
        "exploration",
        "NON_COMPLIANT",
    )

    result = check(event)

    # SageMaker.21, MEDIUM as in Security Hub; the conformance packs' rule name routes here too.
    assert result["severity"] == "MEDIUM"
    assert result["controls"] == ["SageMaker.21"]
    assert rules_of(aws.only_alert()).keys() == {"notebook-volume-not-encrypted-with-kms-key"}


def test_endpoint_config_without_keys(aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any) -> None:
    sagemaker.create_model(ModelName="churn-model", PrimaryContainer={"Image": "xgboost:1.7"}, ExecutionRoleArn=ROLE)
    sagemaker.create_endpoint_config(
        EndpointConfigName="churn-config",
        ProductionVariants=[
            {"VariantName": "all", "ModelName": "churn-model", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
        DataCaptureConfig={
            "EnableCapture": True,
            "InitialSamplingPercentage": 10,
            "DestinationS3Uri": "s3://b/capture",
            "CaptureOptions": [{"CaptureMode": "Input"}],
        },
    )

    check(sagemaker_event(cloudtrail_event, "CreateEndpointConfig", endpointConfigName="churn-config"))

    rules = rules_of(aws.only_alert())
    assert rules["storage-volume-not-encrypted-with-kms-key"]["fields"] == ["KmsKeyId"]
    assert rules["output-not-encrypted-with-kms-key"]["fields"] == ["DataCaptureConfig.KmsKeyId"]


def test_model_with_secret_in_environment_and_no_isolation(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("model-store", tags={"mlwarden:pii": "true"})
    sagemaker.create_model(
        ModelName="churn-model",
        PrimaryContainer={
            "Image": "xgboost:1.7",
            "ModelDataUrl": "s3://model-store/churn/model.tar.gz",
            "Environment": {"HF_TOKEN": "hf_" + "aBcDeFgHiJ" * 3 + "kL"},
        },
        ExecutionRoleArn=ROLE,
    )

    check(sagemaker_event(cloudtrail_event, "CreateModel", modelName="churn-model"))

    rules = rules_of(aws.only_alert())
    assert rules["credentials-in-plain-text"]["fields"] == ["PrimaryContainer.Environment.HF_TOKEN"]
    # SageMaker.5 (MEDIUM) raised one step: the model's artifacts are in a bucket tagged as PII.
    assert rules["model-network-isolation-off"]["severity"] == "HIGH"


def test_tuning_job_with_parallel_jobs_needs_inter_container_encryption(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    sagemaker.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="churn-hpo",
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2},
        },
        TrainingJobDefinition={
            "AlgorithmSpecification": {"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://b/o", "KmsKeyId": KEY},
            "ResourceConfig": {
                "InstanceType": "ml.m5.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 30,
                "VolumeKmsKeyId": KEY,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "EnableNetworkIsolation": True,
        },
    )

    check(sagemaker_event(cloudtrail_event, "CreateHyperParameterTuningJob", hyperParameterTuningJobName="churn-hpo"))

    assert rules_of(aws.only_alert()).keys() == {"inter-container-traffic-not-encrypted"}


def test_studio_domain_is_found_by_the_id_in_the_response(
    aws: Any, sagemaker: Any, check: Any, cloudtrail_event: Any
) -> None:
    arn = sagemaker.create_domain(
        DomainName="research",
        AuthMode="IAM",
        DefaultUserSettings={"ExecutionRole": ROLE},
        SubnetIds=["subnet-0a1b2c3d"],
        VpcId="vpc-0a1b2c3d",
    )["DomainArn"]
    event = sagemaker_event(cloudtrail_event, "CreateDomain", domainName="research")
    event["detail"]["responseElements"] = {"domainArn": arn, "url": "https://research.studio.sagemaker.aws"}

    result = check(event)

    assert result["severity"] == "HIGH"
    assert rules_of(aws.only_alert()).keys() == {
        "studio-domain-not-encrypted-with-kms-key",
        "studio-domain-public-internet",
    }


# --- bad input and configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda d: d.update(eventSource="s3.amazonaws.com"),
            "s3.amazonaws.com CreateTrainingJob is not a SageMaker call",
        ),
        (lambda d: d.update(eventName="DeleteModel"), "SageMaker call DeleteModel creates nothing this check covers"),
        (lambda d: d.update(requestParameters=None), "CreateTrainingJob names no training-job"),
        (lambda d: d["requestParameters"].update(trainingJobName="bad name!"), "CreateTrainingJob names an invalid"),
        (
            lambda d: d["requestParameters"].update(trainingJobName=["a", "b"]),
            "CreateTrainingJob names no training-job",
        ),
    ],
)
def test_unusable_events_are_ignored_without_aws_calls(
    aws: Any, check: Any, sample_event: Any, mutate: Callable[[dict[str, Any]], None], reason: str
) -> None:
    event = copy.deepcopy(sample_event("sagemaker/create-training-job-unencrypted.json"))
    mutate(event["detail"])

    result = check(event)

    assert result["outcome"] == "ignored"
    assert result["reason"].startswith(reason)
    assert aws.alerts() == []


@pytest.mark.parametrize("value", ["yes", "1", "enforce"])
def test_invalid_stop_setting_fails_at_cold_start_naming_the_variable(
    make_handler: Callable[..., Any], value: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape("STOP_UNENCRYPTED_JOBS must be one of true | false")):
        make_handler(app=APP, env={"STOP_UNENCRYPTED_JOBS": value})
