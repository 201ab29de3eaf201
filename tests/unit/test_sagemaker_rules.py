"""The SageMaker rules, row by row, on Describe*-shaped descriptions (no AWS)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden.outcomes import Severity
from mlwarden.rules import sagemaker as sagemaker_rules
from mlwarden.rules.sagemaker import (
    RULES,
    Kind,
    credential_name,
    credential_value,
    evaluate,
    has_local_nvme,
    input_buckets,
    worst,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
VPC = {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}


def training(**changes: Any) -> dict[str, Any]:
    """A compliant DescribeTrainingJob answer; `changes` replace top-level keys (None deletes)."""
    job: dict[str, Any] = {
        "TrainingJobName": "job",
        "HyperParameters": {"max_depth": "5", "max_new_tokens": "256", "tokenizer": "bpe"},
        "InputDataConfig": [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://patient-records/train/"}}}
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://out/", "KmsKeyId": KEY},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeKmsKeyId": KEY},
        "VpcConfig": VPC,
        "EnableNetworkIsolation": False,
        "EnableInterContainerTrafficEncryption": False,
    }
    for key, value in changes.items():
        if value is None:
            job.pop(key, None)
        else:
            job[key] = value
    return job


def processing(**changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "ProcessingInputs": [{"InputName": "raw", "S3Input": {"S3Uri": "s3://raw-data/x/"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "o"}], "KmsKeyId": KEY},
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeKmsKeyId": KEY}
        },
        "NetworkConfig": {"EnableNetworkIsolation": True},
    }
    job.update(changes)
    return job


def rules(kind: Kind, description: dict[str, Any], pii: bool = False) -> dict[str, tuple[Severity, tuple[str, ...]]]:
    return {f.rule.name: (f.rule.severity, f.fields) for f in evaluate(kind, description, pii=pii)}


VOLUME = "storage-volume-not-encrypted-with-kms-key"
OUTPUT = "output-not-encrypted-with-kms-key"
INTER = "inter-container-traffic-not-encrypted"
NETWORK = "no-vpc-and-no-network-isolation"
CREDENTIALS = "credentials-in-plain-text"
CREDENTIAL_NAME = "credential-named-parameter"
H, M, L = Severity.HIGH, Severity.MEDIUM, Severity.LOW

# (case, kind, description, pii, expected {rule: (severity, fields)})
CASES: list[tuple[str, Kind, dict[str, Any], bool, dict[str, tuple[Severity, tuple[str, ...]]]]] = [
    ("compliant training job", Kind.TRAINING_JOB, training(), False, {}),
    (
        "training job without volume key",
        Kind.TRAINING_JOB,
        training(ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}),
        False,
        {VOLUME: (H, ("ResourceConfig.VolumeKmsKeyId",))},
    ),
    (
        "empty volume key counts as missing",
        Kind.TRAINING_JOB,
        training(ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeKmsKeyId": " "}),
        False,
        {VOLUME: (H, ("ResourceConfig.VolumeKmsKeyId",))},
    ),
    (
        "local NVMe instance (ml.g5) needs no volume key",
        Kind.TRAINING_JOB,
        training(ResourceConfig={"InstanceType": "ml.g5.12xlarge", "InstanceCount": 1}),
        False,
        {},
    ),
    (
        "heterogeneous cluster: one EBS group needs the key and makes it distributed",
        Kind.TRAINING_JOB,
        training(
            ResourceConfig={
                "InstanceGroups": [
                    {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 1, "InstanceGroupName": "gpu"},
                    {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "InstanceGroupName": "cpu"},
                ]
            }
        ),
        False,
        {
            VOLUME: (H, ("ResourceConfig.VolumeKmsKeyId",)),
            INTER: (M, ("EnableInterContainerTrafficEncryption",)),
        },
    ),
    (
        "training job without output key",
        Kind.TRAINING_JOB,
        training(OutputDataConfig={"S3OutputPath": "s3://out/"}),
        False,
        {OUTPUT: (H, ("OutputDataConfig.KmsKeyId",))},
    ),
    (
        "one instance: inter-container encryption has no effect",
        Kind.TRAINING_JOB,
        training(EnableInterContainerTrafficEncryption=False),
        False,
        {},
    ),
    (
        "distributed training without inter-container encryption",
        Kind.TRAINING_JOB,
        training(ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 4, "VolumeKmsKeyId": KEY}),
        False,
        {INTER: (M, ("EnableInterContainerTrafficEncryption",))},
    ),
    (
        "distributed training with inter-container encryption",
        Kind.TRAINING_JOB,
        training(
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 4, "VolumeKmsKeyId": KEY},
            EnableInterContainerTrafficEncryption=True,
        ),
        False,
        {},
    ),
    (
        "no VPC, no isolation, data not PII: LOW",
        Kind.TRAINING_JOB,
        training(VpcConfig=None),
        False,
        {NETWORK: (L, ("VpcConfig", "EnableNetworkIsolation"))},
    ),
    (
        "no VPC, no isolation, PII input: HIGH",
        Kind.TRAINING_JOB,
        training(VpcConfig={}),
        True,
        {NETWORK: (H, ("VpcConfig", "EnableNetworkIsolation"))},
    ),
    (
        "network isolation without VPC is enough",
        Kind.TRAINING_JOB,
        training(VpcConfig=None, EnableNetworkIsolation=True),
        True,
        {},
    ),
    (
        "password hyperparameter and access key value",
        Kind.TRAINING_JOB,
        training(
            HyperParameters={"dbPassword": "x", "upload": "AKIAIOSFODNN7EXAMPLE", "epochs": "3"},
            Environment={
                "AWS_SECRET_ACCESS_KEY": "abc",
                "DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:db",
            },
        ),
        False,
        {
            # an access key id is a value whatever its name; a short value under a credential's name is not proof
            CREDENTIALS: (H, ("HyperParameters.upload",)),
            CREDENTIAL_NAME: (M, ("Environment.AWS_SECRET_ACCESS_KEY", "HyperParameters.dbPassword")),
        },
    ),
    ("empty secret value is not a leak", Kind.TRAINING_JOB, training(Environment={"API_KEY": ""}), False, {}),
    (
        "processing cluster without keys or encryption (issue: ProcessingResources.ClusterConfig)",
        Kind.PROCESSING_JOB,
        processing(
            ProcessingOutputConfig={"Outputs": [{"OutputName": "o"}]},
            ProcessingResources={"ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge"}},
            NetworkConfig={"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": False},
        ),
        False,
        {
            VOLUME: (H, ("ProcessingResources.ClusterConfig.VolumeKmsKeyId",)),
            OUTPUT: (H, ("ProcessingOutputConfig.KmsKeyId",)),
            INTER: (M, ("NetworkConfig.EnableInterContainerTrafficEncryption",)),
        },
    ),
    (
        "processing job that writes nothing needs no output key",
        Kind.PROCESSING_JOB,
        processing(ProcessingOutputConfig=None),
        False,
        {},
    ),
    (
        "processing job outside a VPC on PII",
        Kind.PROCESSING_JOB,
        processing(NetworkConfig={}),
        True,
        {NETWORK: (H, ("NetworkConfig.VpcConfig", "NetworkConfig.EnableNetworkIsolation"))},
    ),
    (
        "transform job without keys, a token-named variable with a short value",
        Kind.TRANSFORM_JOB,
        {
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2},
            "TransformOutput": {"S3OutputPath": "s3://out/"},
            "Environment": {"HF_TOKEN": "hf_x"},
        },
        False,
        {
            VOLUME: (H, ("TransformResources.VolumeKmsKeyId",)),
            OUTPUT: (H, ("TransformOutput.KmsKeyId",)),
            CREDENTIAL_NAME: (M, ("Environment.HF_TOKEN",)),
        },
    ),
    (
        "tuning job with parallel single-instance jobs, a key-named static hyperparameter",
        Kind.TUNING_JOB,
        {
            "HyperParameterTuningJobConfig": {"ResourceLimits": {"MaxParallelTrainingJobs": 3}},
            "TrainingJobDefinition": {
                "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeKmsKeyId": KEY},
                "OutputDataConfig": {"KmsKeyId": KEY},
                "EnableNetworkIsolation": True,
                "StaticHyperParameters": {"wandb_api_key": "0123"},
            },
        },
        False,
        {
            INTER: (M, ("TrainingJobDefinition.EnableInterContainerTrafficEncryption",)),
            CREDENTIAL_NAME: (M, ("TrainingJobDefinition.StaticHyperParameters.wandb_api_key",)),
        },
    ),
    (
        "AutoML V1 without keys or VPC (SecurityConfig in AutoMLJobConfig)",
        Kind.AUTOML_JOB,
        {"OutputDataConfig": {"S3OutputPath": "s3://out/"}, "AutoMLJobConfig": {}},
        False,
        {
            VOLUME: (H, ("AutoMLJobConfig.SecurityConfig.VolumeKmsKeyId",)),
            OUTPUT: (H, ("OutputDataConfig.KmsKeyId",)),
            NETWORK: (L, ("AutoMLJobConfig.SecurityConfig.VpcConfig",)),
        },
    ),
    (
        "AutoML V2 fully configured (SecurityConfig at the top)",
        Kind.AUTOML_JOB,
        {"OutputDataConfig": {"KmsKeyId": KEY}, "SecurityConfig": {"VolumeKmsKeyId": KEY, "VpcConfig": VPC}},
        True,
        {},
    ),
    (
        "notebook with defaults: internet and root on, no key, no subnet (SageMaker.1, .2, .3, .21)",
        Kind.NOTEBOOK_INSTANCE,
        {"InstanceType": "ml.t3.medium"},
        False,
        {
            "notebook-volume-not-encrypted-with-kms-key": (M, ("KmsKeyId",)),
            "notebook-direct-internet-access": (H, ("DirectInternetAccess",)),
            "notebook-not-in-vpc": (H, ("SubnetId",)),
            "notebook-root-access": (H, ("RootAccess",)),
        },
    ),
    (
        "locked-down notebook",
        Kind.NOTEBOOK_INSTANCE,
        {
            "KmsKeyId": KEY,
            "SubnetId": "subnet-1",
            "DirectInternetAccess": "Disabled",
            "RootAccess": "Disabled",
            "PlatformIdentifier": "notebook-al2023-v1",
        },
        False,
        {},
    ),
    (
        "endpoint config without key, capture without key",
        Kind.ENDPOINT_CONFIG,
        {
            "ProductionVariants": [{"InstanceType": "ml.m5.large"}],
            "DataCaptureConfig": {"EnableCapture": True, "DestinationS3Uri": "s3://c/"},
        },
        False,
        {VOLUME: (H, ("KmsKeyId",)), OUTPUT: (H, ("DataCaptureConfig.KmsKeyId",))},
    ),
    (
        "serverless and NVMe variants take no volume key; capture off",
        Kind.ENDPOINT_CONFIG,
        {
            "ProductionVariants": [{"ServerlessConfig": {"MemorySizeInMB": 2048}}, {"InstanceType": "ml.g5.xlarge"}],
            "DataCaptureConfig": {"EnableCapture": False},
        },
        False,
        {},
    ),
    (
        "async inference output without key",
        Kind.ENDPOINT_CONFIG,
        {
            "KmsKeyId": KEY,
            "ProductionVariants": [{"InstanceType": "ml.m5.large"}],
            "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://a/"}},
        },
        False,
        {OUTPUT: (H, ("AsyncInferenceConfig.OutputConfig.KmsKeyId",))},
    ),
    (
        "model with a password-named variable in a second container, isolated",
        Kind.MODEL,
        {
            "EnableNetworkIsolation": True,
            "Containers": [
                {"Environment": {}, "ImageConfig": {"RepositoryAccessMode": "Vpc"}},
                {"Environment": {"PG_PASSWD": "x"}, "ImageConfig": {"RepositoryAccessMode": "Vpc"}},
            ],
        },
        False,
        {CREDENTIAL_NAME: (M, ("Containers[1].Environment.PG_PASSWD",))},
    ),
    (
        "Studio domain without key, public internet (the default)",
        Kind.DOMAIN,
        {"DomainId": "d-1"},
        False,
        {
            "studio-domain-not-encrypted-with-kms-key": (H, ("KmsKeyId",)),
            "studio-domain-public-internet": (M, ("AppNetworkAccessType",)),
        },
    ),
    ("Studio domain with key, VPC only", Kind.DOMAIN, {"KmsKeyId": KEY, "AppNetworkAccessType": "VpcOnly"}, False, {}),
]


@pytest.mark.parametrize(("kind", "description", "pii", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_table(
    kind: Kind, description: dict[str, Any], pii: bool, expected: dict[str, tuple[Severity, tuple[str, ...]]]
) -> None:
    assert rules(kind, description, pii) == expected


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("junk", [{}, {"ResourceConfig": "x", "VpcConfig": [1], "Environment": ["a"]}, {"KmsKeyId": 7}])
def test_rules_never_raise_on_odd_shapes(kind: Kind, junk: dict[str, Any]) -> None:
    evaluate(kind, junk, pii=True)


def test_every_rule_explains_itself_and_names_are_unique() -> None:
    assert len({r.name for r in RULES}) == len(RULES)
    for rule in RULES:
        assert len(rule.explanation) > 60


@pytest.mark.parametrize(
    ("name", "is_credential"),
    [
        ("DB_PASSWORD", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_ACCESS_KEY_ID", True),
        ("hfToken", True),
        ("HF_TOKEN", True),
        ("apiKey", True),
        ("OPENAI_API_KEY", True),
        ("private_key", True),
        ("GITHUB_CREDENTIALS", True),
        ("max_new_tokens", False),
        ("tokenizer", False),
        ("key_column", False),
        ("SM_CHANNEL_TRAIN", False),
        ("secretsmanager_arn_region", False),
        ("DB_SECRET_NAME", False),
        ("TOKEN_PATH", False),
        ("PASSWORD_FILE", False),
        ("hfTokenUrl", False),
    ],
)
def test_credential_names(name: str, is_credential: bool) -> None:
    assert credential_name(name) is is_credential


@pytest.mark.parametrize(
    ("value", "is_credential"),
    [
        ("AKIAIOSFODNN7EXAMPLE", True),
        ("key=ASIAIOSFODNN7EXAMPLE;", True),
        ("AKIA123", False),
        ("xAKIAIOSFODNN7EXAMPLE", True),
    ],
)
def test_access_key_shaped_values(value: str, is_credential: bool) -> None:
    assert credential_value(value) is is_credential


# SageMaker asks for no secrets or tokens in hyperparameters
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html); the "reference, not
# value" pattern passes a secret's ARN, name, path or file instead. Only evidence of a value is HIGH (and may
# stop a job with StopUnencryptedJobs); a credential's name alone is MEDIUM; a reference is no finding.
# (case, variable name, value, rule expected or None)
FAKE_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example key
CREDENTIAL_CASES: list[tuple[str, str, str, str | None]] = [
    ("a secret's name", "DB_SECRET_NAME", "prod/ml/db-credentials", None),
    ("a token path", "TOKEN_PATH", "/run/secrets/x", None),
    ("a password file", "PASSWORD_FILE", "/run/secrets/db-password", None),
    ("a secret's ARN", "DB_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf", None),
    ("a secret's ARN under a credential's name", "DB_PASSWORD", "arn:aws:secretsmanager:us-east-1:1:secret:db", None),
    ("an SSM parameter ARN", "API_TOKEN", "arn:aws:ssm:us-east-1:123456789012:parameter/ml/token", None),
    ("a relative path under a credential's name", "HF_TOKEN", "./secrets/hf", None),
    ("a URL under a credential's name", "TOKEN", "https://vault.internal/v1/secret/ml", None),
    ("a dynamic reference", "DB_PASSWORD", "{{resolve:secretsmanager:db:SecretString:password}}", None),
    ("an ordinary variable", "MAX_EPOCHS", "30", None),
    ("a git commit under an ordinary name", "GIT_COMMIT", "3f786850e387550fdab836ed7e6dc881de23001b", None),
    ("a short password: name alone", "DB_PASSWORD", "hunter2", CREDENTIAL_NAME),
    ("a passphrase: name alone", "DB_PASSWORD", "hunter2-do-not-log-me", CREDENTIAL_NAME),
    ("a placeholder: name alone", "API_KEY", "changeme", CREDENTIAL_NAME),
    ("an access key id, any name", "upload", "AKIAIOSFODNN7EXAMPLE", CREDENTIALS),
    ("a temporary access key id", "SESSION", "ASIAIOSFODNN7EXAMPLE", CREDENTIALS),
    ("a secret access key under its name", "AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY, CREDENTIALS),
    ("32 hex digits under a key's name", "DATADOG_API_KEY", "76769f8847ffcb90a0e4cb122e239e78", CREDENTIALS),
    ("a UUID under a token's name", "SERVICE_TOKEN", "e84f1074-65c6-4ebd-a1a0-c1efae2aa8b8", CREDENTIALS),
    ("a GitHub token, any name", "GIT_AUTH", "ghp_" + "a1B2c3D4e5" * 4, CREDENTIALS),
    ("a Slack token, any name", "SLACK_HOOK", "xoxb-123456789012-abcdefABCDEF", CREDENTIALS),
    ("an OpenAI-style key, any name", "LLM", "sk-" + "Ab1" * 10, CREDENTIALS),
    ("a Hugging Face token", "HF_TOKEN", "hf_" + "aBcDeFgHiJ" * 3 + "kL", CREDENTIALS),
    ("a private key", "SSH", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA", CREDENTIALS),
]


@pytest.mark.parametrize(
    ("name", "value", "expected"), [c[1:] for c in CREDENTIAL_CASES], ids=[c[0] for c in CREDENTIAL_CASES]
)
def test_credentials_are_high_only_on_evidence_of_a_value(name: str, value: str, expected: str | None) -> None:
    found = rules(Kind.TRAINING_JOB, training(Environment={name: value}))

    assert {rule_name for rule_name in found if "credential" in rule_name} == ({expected} if expected else set())
    rule = sagemaker_rules.credential_rule(name, value)
    assert (rule.name if rule else None) == expected


@pytest.mark.parametrize(
    ("instance_type", "nvme"),
    [
        ("ml.p4d.24xlarge", True),
        ("ml.g5.xlarge", True),
        ("ml.m5d.large", True),
        ("ml.trn1.32xlarge", True),
        ("ml.m5.xlarge", False),
        ("ml.inf2.xlarge", False),
        ("ml.c5.2xlarge", False),
        ("p4d.24xlarge", False),
        (None, False),
    ],
)
def test_local_nvme_families(instance_type: Any, nvme: bool) -> None:
    assert has_local_nvme(instance_type) is nvme


def test_input_buckets_of_every_kind() -> None:
    assert input_buckets(Kind.TRAINING_JOB, training()) == ["patient-records"]
    assert input_buckets(Kind.PROCESSING_JOB, processing()) == ["raw-data"]
    transform = {"TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "s3://scoring/in/"}}}}
    assert input_buckets(Kind.TRANSFORM_JOB, transform) == ["scoring"]
    model = {"PrimaryContainer": {"ModelDataUrl": "s3://models/m.tar.gz"}, "Containers": [{"ModelDataUrl": "s3://b2/"}]}
    assert input_buckets(Kind.MODEL, model) == ["b2", "models"]
    assert input_buckets(Kind.TRAINING_JOB, {"InputDataConfig": [{"DataSource": "x"}, "y"]}) == []


def test_worst_severity() -> None:
    assert worst([]) is Severity.INFORMATIONAL
    findings = evaluate(Kind.NOTEBOOK_INSTANCE, {"KmsKeyId": KEY, "SubnetId": "subnet-1"})
    assert worst(findings) is Severity.HIGH
    assert worst(evaluate(Kind.NOTEBOOK_INSTANCE, {"SubnetId": "s", "DirectInternetAccess": "Disabled"})) is (
        Severity.HIGH
    )
    assert worst(evaluate(Kind.FEATURE_GROUP, {"OfflineStoreConfig": {"S3StorageConfig": {}}})) is Severity.MEDIUM


def test_instance_storage_module_matches_the_pinned_moto_data() -> None:
    # tools/generate_instance_storage.py writes the module; a moto upgrade must regenerate it.
    spec = importlib.util.spec_from_file_location("generator", ROOT / "tools" / "generate_instance_storage.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (ROOT / "layers" / "core" / "mlwarden" / "rules" / "instance_storage.py").read_text(encoding="utf-8")
    assert committed == generator.render(generator.nvme_families())


def test_sample_state_change_detail_is_a_describe_shape() -> None:
    # The AWS documentation's sample carries the whole DescribeTrainingJob answer (keys as placeholders).
    sample = json.loads((ROOT / "events" / "sagemaker" / "training-job-state-change.json").read_text())
    assert rules(Kind.TRAINING_JOB, sample["detail"]).keys() <= {VOLUME, OUTPUT, NETWORK}
