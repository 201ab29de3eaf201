"""SageMaker security rules: pure functions over a resource's description, no AWS calls.

Each rule has a name, a severity and an explanation a data scientist can act on. The input is
what SageMaker's Describe* call answers (or the same keys from an event), so the rules can be
tested row by row without AWS. `evaluate` returns every rule the resource fails.

A rule that answers an AWS Security Hub control (SageMaker.1 to SageMaker.25, in the Foundational and
AI Security Best Practices standards) names it, the AWS Config managed rules Security Hub evaluates it
with, and the resource kinds it grades: search for the control id to find everything about it. The
severity of such a rule is Security Hub's for the control. `CONTROL_RULES` lists them, `NOT_COVERED`
says why the others are left out; the README's coverage table is rendered from both
(`coverage_rows`, checked by tests/unit/test_sagemaker_controls.py).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from mlwarden.outcomes import Severity
from mlwarden.rules.instance_storage import NVME_FAMILIES


class Kind(StrEnum):
    """SageMaker resource types, spelt as in their ARNs (arn:...:sagemaker:REGION:ACCOUNT:<kind>/<name>)."""

    TRAINING_JOB = "training-job"
    PROCESSING_JOB = "processing-job"
    TRANSFORM_JOB = "transform-job"
    TUNING_JOB = "hyper-parameter-tuning-job"
    AUTOML_JOB = "automl-job"
    NOTEBOOK_INSTANCE = "notebook-instance"
    ENDPOINT_CONFIG = "endpoint-config"
    MODEL = "model"
    DOMAIN = "domain"
    DATA_QUALITY_JOB_DEFINITION = "data-quality-job-definition"
    MODEL_QUALITY_JOB_DEFINITION = "model-quality-job-definition"
    MODEL_BIAS_JOB_DEFINITION = "model-bias-job-definition"
    MODEL_EXPLAINABILITY_JOB_DEFINITION = "model-explainability-job-definition"
    MONITORING_SCHEDULE = "monitoring-schedule"
    FEATURE_GROUP = "feature-group"
    INFERENCE_EXPERIMENT = "inference-experiment"


@dataclass(frozen=True)
class Rule:
    """One encryption or exposure rule, its severity and what it means."""

    name: str
    severity: Severity
    explanation: str
    # What to change, about the failing fields ("{fields}"): the alert's "What to do now" for this rule.
    next_step: str = "fix {fields}"
    # The Security Hub controls this rule answers, and the AWS Config managed rules that evaluate them
    # (Security Hub deploys them as "securityhub-<rule>-<suffix>", conformance packs under the plain name).
    controls: tuple[str, ...] = ()
    config_rules: tuple[str, ...] = ()
    # The resource kinds a control rule grades (for the coverage table and the Config routing).
    kinds: tuple[Kind, ...] = ()
    # A safe fix ML Warden can make, and the template parameter that turns it on (off by default).
    remediation: str | None = None


VOLUME_KEY = Rule(
    "storage-volume-not-encrypted-with-kms-key",
    Severity.HIGH,
    "The disk the instances use while they run (training data, checkpoints, scratch files) is not encrypted "
    "with your own KMS key. Set a KMS key so that access to the data can be controlled and revoked.",
    "set {fields} to your KMS key",
)
OUTPUT_KEY = Rule(
    "output-not-encrypted-with-kms-key",
    Severity.HIGH,
    "The results written to S3 (model artifacts, processed data, predictions, captured requests) are not "
    "encrypted with your own KMS key. Set a KMS key for the output.",
    "set {fields} to your KMS key",
)
INTER_CONTAINER = Rule(
    "inter-container-traffic-not-encrypted",
    Severity.MEDIUM,
    "Several instances work together and exchange data (for example gradients) unencrypted over the network. "
    "Turn on inter-container traffic encryption.",
    "set {fields} to true",
)
NO_NETWORK_ISOLATION = Rule(
    "no-vpc-and-no-network-isolation",
    Severity.LOW,
    "The containers run outside your VPC with network isolation off, so they can reach the internet and could "
    "send data anywhere. Run in a VPC (VpcConfig) or turn on network isolation.",
    "run it in your VPC or with network isolation: set {fields}",
)
NO_NETWORK_ISOLATION_PII = Rule(
    NO_NETWORK_ISOLATION.name,
    Severity.HIGH,
    NO_NETWORK_ISOLATION.explanation + " Its input data is tagged as personal data (mlwarden:pii=true).",
    NO_NETWORK_ISOLATION.next_step,
)
# --- notebook instances: SageMaker.1, .2, .3, .8, .21 ------------------------------------------------------

NOTEBOOK_INTERNET = Rule(
    "notebook-direct-internet-access",
    Severity.HIGH,
    "The notebook instance has direct internet access, so data can leave without passing your network "
    "controls. Create it in a VPC subnet with DirectInternetAccess Disabled.",
    "set DirectInternetAccess to Disabled, with a SubnetId and SecurityGroupIds of your VPC",
    controls=("SageMaker.1",),
    config_rules=("sagemaker-notebook-no-direct-internet-access",),
    kinds=(Kind.NOTEBOOK_INSTANCE,),
)
NOTEBOOK_OUTSIDE_VPC = Rule(
    "notebook-not-in-vpc",
    Severity.HIGH,
    "The notebook instance is not launched in a subnet of your own VPC: its network traffic cannot be "
    "controlled by your security groups, routes and endpoints. Create it with a SubnetId of your VPC.",
    "create a new notebook instance with SubnetId and SecurityGroupIds of your VPC (the setting cannot be updated)",
    controls=("SageMaker.2",),
    config_rules=("sagemaker-notebook-instance-inside-vpc",),
    kinds=(Kind.NOTEBOOK_INSTANCE,),
)
NOTEBOOK_ROOT = Rule(
    "notebook-root-access",
    Severity.HIGH,
    "Users of the notebook instance have root access: they can change its software and security settings. "
    "Set RootAccess Disabled unless root is needed.",
    "stop the notebook instance, set RootAccess to Disabled (UpdateNotebookInstance), then start it again",
    controls=("SageMaker.3",),
    config_rules=("sagemaker-notebook-instance-root-access-check",),
    kinds=(Kind.NOTEBOOK_INSTANCE,),
    remediation="DisableNotebookRootAccess=true: root access is turned off on a stopped notebook instance",
)
# Security Hub's parameter supportedPlatformIdentifierVersions (not customizable).
SUPPORTED_NOTEBOOK_PLATFORMS = frozenset({"notebook-al2023-v1"})
NOTEBOOK_PLATFORM = Rule(
    "notebook-unsupported-platform",
    Severity.MEDIUM,
    "The notebook instance runs on a platform (PlatformIdentifier) that no longer gets SageMaker's security "
    "patches and bug fixes. Move it to a supported platform.",
    "create a new notebook instance with PlatformIdentifier " + ", ".join(sorted(SUPPORTED_NOTEBOOK_PLATFORMS)),
    controls=("SageMaker.8",),
    config_rules=("sagemaker-notebook-instance-platform-version",),
    kinds=(Kind.NOTEBOOK_INSTANCE,),
)
NOTEBOOK_KEY = Rule(
    "notebook-volume-not-encrypted-with-kms-key",
    Severity.MEDIUM,
    "The notebook instance's storage volume (notebooks, data sets, model artifacts) is not encrypted with "
    "your own KMS key, so access to it cannot be controlled or revoked through a key policy.",
    "create a new notebook instance with KmsKeyId (it cannot be set later) and move the data over",
    controls=("SageMaker.21",),
    # The second name is the conformance packs' rule for the same setting.
    config_rules=(
        "sagemaker-notebook-instance-storage-vol-kms-encrypted",
        "sagemaker-notebook-instance-kms-key-configured",
    ),
    kinds=(Kind.NOTEBOOK_INSTANCE,),
)

# --- endpoint configurations: SageMaker.4 --------------------------------------------------------------------

ENDPOINT_SINGLE_INSTANCE = Rule(
    "endpoint-variant-single-instance",
    Severity.MEDIUM,
    "A production variant starts with one instance: SageMaker cannot spread it over Availability Zones, so one "
    "instance or zone failing takes the model offline. Start each instance-based variant with two or more.",
    "create a new endpoint configuration with InitialInstanceCount 2 or more for {fields}",
    controls=("SageMaker.4",),
    config_rules=("sagemaker-endpoint-config-prod-instance-count",),
    kinds=(Kind.ENDPOINT_CONFIG,),
)

# --- models: SageMaker.5, .16, .19 ---------------------------------------------------------------------------

MODEL_NETWORK_ISOLATION = Rule(
    "model-network-isolation-off",
    Severity.MEDIUM,
    "The model's containers run with network isolation off: they can call out to the internet and other AWS "
    "services, and get AWS credentials, even inside a VPC. Create the model with EnableNetworkIsolation true.",
    "create a new model with EnableNetworkIsolation true",
    controls=("SageMaker.5",),
    config_rules=("sagemaker-model-isolation-enabled",),
    kinds=(Kind.MODEL,),
)
MODEL_PRIMARY_REGISTRY = Rule(
    "model-primary-container-public-registry",
    Severity.MEDIUM,
    "The model's primary container image is not pulled from a private registry in your VPC "
    "(ImageConfig.RepositoryAccessMode Vpc), so the image does not come through your VPC endpoints.",
    "create a new model whose PrimaryContainer.ImageConfig.RepositoryAccessMode is Vpc",
    controls=("SageMaker.16",),
    config_rules=("sagemaker-model-private-registry-required",),
    kinds=(Kind.MODEL,),
)
MODEL_PIPELINE_REGISTRY = Rule(
    "model-pipeline-container-public-registry",
    Severity.MEDIUM,
    "A container of the model's inference pipeline is not pulled from a private registry in your VPC "
    "(ImageConfig.RepositoryAccessMode Vpc), so its image does not come through your VPC endpoints.",
    "create a new model whose containers all have ImageConfig.RepositoryAccessMode Vpc: {fields}",
    controls=("SageMaker.19",),
    config_rules=("sagemaker-model-multicontainer-private-registry",),
    kinds=(Kind.MODEL,),
)

DOMAIN_KEY = Rule(
    "studio-domain-not-encrypted-with-kms-key",
    Severity.HIGH,
    "The Studio domain's shared storage (every user's home directory) is not encrypted with your own KMS key. "
    "Create the domain with KmsKeyId.",
    "set KmsKeyId to your KMS key",
)
DOMAIN_PUBLIC = Rule(
    "studio-domain-public-internet",
    Severity.MEDIUM,
    "Studio apps in this domain reach the internet directly (AppNetworkAccessType PublicInternetOnly). "
    "Use VpcOnly so traffic goes through your VPC.",
    "set AppNetworkAccessType to VpcOnly",
)
PLAINTEXT_CREDENTIALS = Rule(
    "credentials-in-plain-text",
    Severity.HIGH,
    "A password, secret, token or access key is passed as a plain environment variable or hyperparameter: "
    "anyone who can describe the resource can read it, and it is stored in logs and job history. Use Secrets "
    "Manager (pass the secret's ARN and read it in the container) and rotate the exposed value.",
    "rotate the value exposed in {fields} now, then store it in Secrets Manager and pass only the secret's ARN",
)
# A name alone is no proof of a value: the recommended pattern passes a secret's name, path or file there.
CREDENTIAL_NAME = Rule(
    "credential-named-parameter",
    Severity.MEDIUM,
    "An environment variable or hyperparameter is named like a password, secret, token or key, but its value "
    "does not look like one (no key shape, not long and random). If it holds the value itself, anyone who can "
    "describe the resource can read it: move it to Secrets Manager. If it names or points to a secret, rename "
    "it (for example DB_SECRET_NAME, TOKEN_PATH) so that it reads as a reference.",
    "check the value of {fields}: pass a secret's ARN, name or file path there, never the secret itself",
)

# --- model monitoring: SageMaker.9 to .15, .20, .22, .25 -----------------------------------------------------
# Monitoring job definitions cannot be updated: a failing one is recreated. A monitoring schedule's own
# network settings (.14, .22) exist only when it embeds its job definition; a schedule that names a job
# definition runs with that definition's settings, graded by the definition's own controls.


def _monitoring_traffic(kind: Kind, what: str, control: str, config_rule: str) -> Rule:
    return Rule(
        f"{kind.value}-inter-container-traffic-not-encrypted",
        Severity.MEDIUM,
        f"The {what} monitoring job's instances exchange data (captured requests, model output) unencrypted over "
        "the network. Turn on inter-container traffic encryption.",
        f"create a new {kind.value.replace('-', ' ')} with NetworkConfig.EnableInterContainerTrafficEncryption true",
        controls=(control,),
        config_rules=(config_rule,),
        kinds=(kind,),
    )


def _monitoring_isolation(kind: Kind, what: str, control: str, config_rule: str, severity: Severity) -> Rule:
    return Rule(
        f"{kind.value}-network-isolation-off",
        severity,
        f"The {what} monitoring job's containers run with network isolation off: they can reach the internet and "
        "send the captured data anywhere. Turn on network isolation.",
        f"create a new {kind.value.replace('-', ' ')} with NetworkConfig.EnableNetworkIsolation true",
        controls=(control,),
        config_rules=(config_rule,),
        kinds=(kind,),
    )


DATA_QUALITY_TRAFFIC = _monitoring_traffic(
    Kind.DATA_QUALITY_JOB_DEFINITION, "data quality", "SageMaker.9", "sagemaker-data-quality-job-encrypt-in-transit"
)
MODEL_EXPLAINABILITY_TRAFFIC = _monitoring_traffic(
    Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION,
    "model explainability",
    "SageMaker.10",
    "sagemaker-model-explainability-job-encrypt-in-transit",
)
DATA_QUALITY_ISOLATION = _monitoring_isolation(
    Kind.DATA_QUALITY_JOB_DEFINITION,
    "data quality",
    "SageMaker.11",
    "sagemaker-data-quality-job-isolation",
    Severity.MEDIUM,
)
MODEL_BIAS_ISOLATION = _monitoring_isolation(
    Kind.MODEL_BIAS_JOB_DEFINITION, "model bias", "SageMaker.12", "sagemaker-model-bias-job-isolation", Severity.MEDIUM
)
MODEL_QUALITY_TRAFFIC = _monitoring_traffic(
    Kind.MODEL_QUALITY_JOB_DEFINITION, "model quality", "SageMaker.13", "sagemaker-model-quality-job-encrypt-in-transit"
)
SCHEDULE_ISOLATION = _monitoring_isolation(
    Kind.MONITORING_SCHEDULE, "scheduled", "SageMaker.14", "sagemaker-monitoring-schedule-isolation", Severity.MEDIUM
)
MODEL_BIAS_TRAFFIC = _monitoring_traffic(
    Kind.MODEL_BIAS_JOB_DEFINITION, "model bias", "SageMaker.15", "sagemaker-model-bias-job-encrypt-in-transit"
)
MODEL_EXPLAINABILITY_ISOLATION = _monitoring_isolation(
    Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION,
    "model explainability",
    "SageMaker.20",
    "sagemaker-model-explainability-job-network-isolation",
    Severity.HIGH,
)
SCHEDULE_TRAFFIC = _monitoring_traffic(
    Kind.MONITORING_SCHEDULE, "scheduled", "SageMaker.22", "sagemaker-monitoring-schedule-traffic-encryption"
)
MODEL_QUALITY_ISOLATION = _monitoring_isolation(
    Kind.MODEL_QUALITY_JOB_DEFINITION,
    "model quality",
    "SageMaker.25",
    "sagemaker-model-quality-job-definition-isolation",
    Severity.HIGH,
)

# --- Feature Store: SageMaker.17, .18 ------------------------------------------------------------------------

FEATURE_OFFLINE_KEY = Rule(
    "feature-group-offline-store-not-encrypted-with-kms-key",
    Severity.MEDIUM,
    "The feature group's offline store (its S3 copy of every record) is not encrypted with your own KMS key.",
    "create a new feature group with OfflineStoreConfig.S3StorageConfig.KmsKeyId (it cannot be updated)",
    controls=("SageMaker.17",),
    config_rules=("sagemaker-featuregroup-encryption-at-rest",),
    kinds=(Kind.FEATURE_GROUP,),
)
FEATURE_ONLINE_KEY = Rule(
    "feature-group-online-store-not-encrypted-with-kms-key",
    Severity.MEDIUM,
    "The feature group's online store (standard storage, read at inference time) is not encrypted with your "
    "own KMS key.",
    "create a new feature group with OnlineStoreConfig.SecurityConfig.KmsKeyId (it cannot be updated)",
    controls=("SageMaker.18",),
    config_rules=("sagemaker-featuregroup-online-store-encryption",),
    kinds=(Kind.FEATURE_GROUP,),
)

# --- inference experiments: SageMaker.23, .24 ----------------------------------------------------------------

EXPERIMENT_VOLUME_KEY = Rule(
    "inference-experiment-volume-not-encrypted-with-kms-key",
    Severity.MEDIUM,
    "The shadow test's instances keep model artifacts and inference data on storage volumes that are not "
    "encrypted with your own KMS key.",
    "create a new inference experiment with KmsKey",
    controls=("SageMaker.23",),
    config_rules=("sagemaker-inf-experiment-instance-storage-kms-encrypted",),
    kinds=(Kind.INFERENCE_EXPERIMENT,),
)
EXPERIMENT_CAPTURE_KEY = Rule(
    "inference-experiment-capture-not-encrypted-with-kms-key",
    Severity.MEDIUM,
    "The requests and responses the shadow test captures to S3 are not encrypted with your own KMS key.",
    "create a new inference experiment with DataStorageConfig.KmsKey",
    controls=("SageMaker.24",),
    config_rules=("sagemaker-inf-experiment-data-storage-kms-encrypted",),
    kinds=(Kind.INFERENCE_EXPERIMENT,),
)

# Every rule that answers a Security Hub control, in control order.
CONTROL_RULES = (
    NOTEBOOK_INTERNET,
    NOTEBOOK_OUTSIDE_VPC,
    NOTEBOOK_ROOT,
    ENDPOINT_SINGLE_INSTANCE,
    MODEL_NETWORK_ISOLATION,
    NOTEBOOK_PLATFORM,
    DATA_QUALITY_TRAFFIC,
    MODEL_EXPLAINABILITY_TRAFFIC,
    DATA_QUALITY_ISOLATION,
    MODEL_BIAS_ISOLATION,
    MODEL_QUALITY_TRAFFIC,
    SCHEDULE_ISOLATION,
    MODEL_BIAS_TRAFFIC,
    MODEL_PRIMARY_REGISTRY,
    FEATURE_OFFLINE_KEY,
    FEATURE_ONLINE_KEY,
    MODEL_PIPELINE_REGISTRY,
    MODEL_EXPLAINABILITY_ISOLATION,
    NOTEBOOK_KEY,
    SCHEDULE_TRAFFIC,
    EXPERIMENT_VOLUME_KEY,
    EXPERIMENT_CAPTURE_KEY,
    MODEL_QUALITY_ISOLATION,
)
# The controls no API call can break, and why they are left out.
NOT_COVERED = {
    "SageMaker.6": "tagging of app image configurations only: out of scope unless a user asks",
    "SageMaker.7": "tagging of images only: out of scope unless a user asks",
}
# Config rules beyond the standard (conformance packs deploy them; Security Hub does not).
EXTRA_CONFIG_RULES: dict[str, Kind] = {"sagemaker-endpoint-configuration-kms-key-configured": Kind.ENDPOINT_CONFIG}


def config_rule_kinds() -> dict[str, tuple[Kind, ...]]:
    """Every AWS Config managed rule routed to this check, and the resource kinds it grades."""
    routed: dict[str, tuple[Kind, ...]] = {name: (kind,) for name, kind in EXTRA_CONFIG_RULES.items()}
    for rule in CONTROL_RULES:
        for name in rule.config_rules:
            routed[name] = tuple(dict.fromkeys((*routed.get(name, ()), *rule.kinds)))
    return routed


def controls_of(kind: Kind) -> tuple[str, ...]:
    """The Security Hub controls that grade a resource kind, in control order."""
    return tuple(control for rule in CONTROL_RULES if kind in rule.kinds for control in rule.controls)


def control_number(control: str) -> int:
    return int(control.rsplit(".", 1)[1])


RULES = (
    VOLUME_KEY,
    OUTPUT_KEY,
    INTER_CONTAINER,
    NO_NETWORK_ISOLATION,
    DOMAIN_KEY,
    DOMAIN_PUBLIC,
    PLAINTEXT_CREDENTIALS,
    CREDENTIAL_NAME,
    *CONTROL_RULES,
)


@dataclass(frozen=True)
class Finding:
    """A rule a description breaks, and the fields where."""

    rule: Rule
    # Where the problem is, as field paths of the description (never values).
    fields: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "severity": self.rule.severity.value,
            "fields": list(self.fields),
            "explanation": self.rule.explanation,
        }


# --- reading the description -------------------------------------------------------------------------------


def _get(description: Mapping[str, Any], path: str) -> Any:
    value: Any = description
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _set(value: Any) -> bool:
    """A field counts as set when it holds something other than null, "" or {}."""
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | list):
        return bool(value)
    return value is not None


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def has_local_nvme(instance_type: Any) -> bool:
    """ml.p4d.24xlarge -> EC2 family p4d: does it carry local NVMe storage (no volume key possible)?"""
    if not isinstance(instance_type, str):
        return False
    parts = instance_type.strip().lower().split(".")
    if len(parts) != 3 or parts[0] != "ml":
        return False
    return parts[1] in NVME_FAMILIES


def _bucket_of(uri: Any) -> str | None:
    if isinstance(uri, str) and uri.startswith("s3://"):
        bucket = uri[5:].split("/", 1)[0]
        return bucket or None
    return None


# --- the shape of each resource type -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """Where one kind of resource keeps the settings the rules read (field paths)."""

    volume_key: str | None = None
    instance_type: str | None = None
    instance_count: str | None = None
    output_key: str | None = None
    inter_container: str | None = None
    vpc: str | None = None
    isolation: str | None = None
    environments: tuple[str, ...] = ()
    hyperparameters: str | None = None
    # The rule a missing volume key breaks (a control's own rule where one applies).
    volume_rule: Rule = VOLUME_KEY
    inter_container_rule: Rule = INTER_CONTAINER
    # Fewer instances than this: inter-container encryption has no effect, and the rule passes.
    inter_container_min: int = 2
    # A control that requires network isolation itself (a VPC is no substitute): its rule.
    isolation_rule: Rule | None = None
    # Where the settings live; when absent (a schedule naming a job definition) the rules above do not apply.
    present: str | None = None


def _monitoring_shape(app: str, output: str, traffic: Rule, isolation: Rule, *, traffic_min: int) -> _Shape:
    """A monitoring job definition (Describe{DataQuality,ModelQuality,ModelBias,ModelExplainability}JobDefinition)."""
    return _Shape(
        volume_key="JobResources.ClusterConfig.VolumeKmsKeyId",
        instance_type="JobResources.ClusterConfig.InstanceType",
        instance_count="JobResources.ClusterConfig.InstanceCount",
        output_key=f"{output}.KmsKeyId",
        inter_container="NetworkConfig.EnableInterContainerTrafficEncryption",
        isolation="NetworkConfig.EnableNetworkIsolation",
        environments=(f"{app}.Environment",),
        inter_container_rule=traffic,
        inter_container_min=traffic_min,
        isolation_rule=isolation,
    )


_SCHEDULED = "MonitoringScheduleConfig.MonitoringJobDefinition"

_SHAPES: dict[Kind, _Shape] = {
    Kind.TRAINING_JOB: _Shape(
        volume_key="ResourceConfig.VolumeKmsKeyId",
        instance_type="ResourceConfig.InstanceType",
        instance_count="ResourceConfig.InstanceCount",
        output_key="OutputDataConfig.KmsKeyId",
        inter_container="EnableInterContainerTrafficEncryption",
        vpc="VpcConfig",
        isolation="EnableNetworkIsolation",
        environments=("Environment",),
        hyperparameters="HyperParameters",
    ),
    Kind.PROCESSING_JOB: _Shape(
        volume_key="ProcessingResources.ClusterConfig.VolumeKmsKeyId",
        instance_type="ProcessingResources.ClusterConfig.InstanceType",
        instance_count="ProcessingResources.ClusterConfig.InstanceCount",
        output_key="ProcessingOutputConfig.KmsKeyId",
        inter_container="NetworkConfig.EnableInterContainerTrafficEncryption",
        vpc="NetworkConfig.VpcConfig",
        isolation="NetworkConfig.EnableNetworkIsolation",
        environments=("Environment",),
    ),
    Kind.TRANSFORM_JOB: _Shape(
        volume_key="TransformResources.VolumeKmsKeyId",
        instance_type="TransformResources.InstanceType",
        output_key="TransformOutput.KmsKeyId",
        environments=("Environment",),
    ),
    Kind.TUNING_JOB: _Shape(
        volume_key="TrainingJobDefinition.ResourceConfig.VolumeKmsKeyId",
        instance_type="TrainingJobDefinition.ResourceConfig.InstanceType",
        instance_count="TrainingJobDefinition.ResourceConfig.InstanceCount",
        output_key="TrainingJobDefinition.OutputDataConfig.KmsKeyId",
        inter_container="TrainingJobDefinition.EnableInterContainerTrafficEncryption",
        vpc="TrainingJobDefinition.VpcConfig",
        isolation="TrainingJobDefinition.EnableNetworkIsolation",
        environments=("TrainingJobDefinition.Environment",),
        hyperparameters="TrainingJobDefinition.StaticHyperParameters",
    ),
    # DescribeAutoMLJob nests SecurityConfig in AutoMLJobConfig; DescribeAutoMLJobV2 has it at the top level.
    Kind.AUTOML_JOB: _Shape(output_key="OutputDataConfig.KmsKeyId"),
    Kind.NOTEBOOK_INSTANCE: _Shape(volume_key="KmsKeyId", volume_rule=NOTEBOOK_KEY),
    Kind.ENDPOINT_CONFIG: _Shape(volume_key="KmsKeyId"),
    # SageMaker.5 asks for network isolation whether or not the model runs in a VPC.
    Kind.MODEL: _Shape(
        isolation="EnableNetworkIsolation",
        isolation_rule=MODEL_NETWORK_ISOLATION,
        environments=("PrimaryContainer.Environment",),
    ),
    Kind.DOMAIN: _Shape(),
    # SageMaker.9 and .15 (their Config rules) pass a single instance; .10 and .13 ask for encryption regardless.
    Kind.DATA_QUALITY_JOB_DEFINITION: _monitoring_shape(
        "DataQualityAppSpecification",
        "DataQualityJobOutputConfig",
        DATA_QUALITY_TRAFFIC,
        DATA_QUALITY_ISOLATION,
        traffic_min=2,
    ),
    Kind.MODEL_QUALITY_JOB_DEFINITION: _monitoring_shape(
        "ModelQualityAppSpecification",
        "ModelQualityJobOutputConfig",
        MODEL_QUALITY_TRAFFIC,
        MODEL_QUALITY_ISOLATION,
        traffic_min=1,
    ),
    Kind.MODEL_BIAS_JOB_DEFINITION: _monitoring_shape(
        "ModelBiasAppSpecification", "ModelBiasJobOutputConfig", MODEL_BIAS_TRAFFIC, MODEL_BIAS_ISOLATION, traffic_min=2
    ),
    Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION: _monitoring_shape(
        "ModelExplainabilityAppSpecification",
        "ModelExplainabilityJobOutputConfig",
        MODEL_EXPLAINABILITY_TRAFFIC,
        MODEL_EXPLAINABILITY_ISOLATION,
        traffic_min=1,
    ),
    Kind.MONITORING_SCHEDULE: _Shape(
        volume_key=f"{_SCHEDULED}.MonitoringResources.ClusterConfig.VolumeKmsKeyId",
        instance_type=f"{_SCHEDULED}.MonitoringResources.ClusterConfig.InstanceType",
        instance_count=f"{_SCHEDULED}.MonitoringResources.ClusterConfig.InstanceCount",
        output_key=f"{_SCHEDULED}.MonitoringOutputConfig.KmsKeyId",
        inter_container=f"{_SCHEDULED}.NetworkConfig.EnableInterContainerTrafficEncryption",
        isolation=f"{_SCHEDULED}.NetworkConfig.EnableNetworkIsolation",
        environments=(f"{_SCHEDULED}.Environment",),
        inter_container_rule=SCHEDULE_TRAFFIC,
        inter_container_min=1,
        isolation_rule=SCHEDULE_ISOLATION,
        present=_SCHEDULED,
    ),
    Kind.FEATURE_GROUP: _Shape(),
    Kind.INFERENCE_EXPERIMENT: _Shape(volume_key="KmsKey", volume_rule=EXPERIMENT_VOLUME_KEY),
}


def _applies(shape: _Shape, description: Mapping[str, Any]) -> bool:
    return shape.present is None or _set(_get(description, shape.present))


def _automl_security(description: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if isinstance(description.get("SecurityConfig"), Mapping):
        return "SecurityConfig", description["SecurityConfig"]
    return "AutoMLJobConfig.SecurityConfig", _mapping(_get(description, "AutoMLJobConfig.SecurityConfig"))


def input_buckets(kind: Kind, description: Mapping[str, Any]) -> list[str]:
    """The S3 buckets a resource reads its data from (to look up their PII tag)."""
    uris: list[Any] = []
    channels = _list(description.get("InputDataConfig")) + _list(description.get("AutoMLJobInputDataConfig"))
    if kind is Kind.TUNING_JOB:
        channels = _list(_get(description, "TrainingJobDefinition.InputDataConfig"))
        for definition in _list(description.get("TrainingJobDefinitions")):
            channels += _list(_mapping(definition).get("InputDataConfig"))
    uris += [_get(_mapping(channel), "DataSource.S3DataSource.S3Uri") for channel in channels]
    uris += [_get(_mapping(i), "S3Input.S3Uri") for i in _list(description.get("ProcessingInputs"))]
    uris.append(_get(description, "TransformInput.DataSource.S3DataSource.S3Uri"))
    containers = [description.get("PrimaryContainer"), *_list(description.get("Containers"))]
    uris += [_mapping(container).get("ModelDataUrl") for container in containers]
    return sorted({bucket for bucket in (_bucket_of(uri) for uri in uris) if bucket})


# --- credentials -------------------------------------------------------------------------------------------
#
# Stopping a job needs evidence of a secret VALUE: a key shape (access key ids, private keys, known token
# prefixes), or a long random-looking string under a credential's name. A credential's name with any other
# value is MEDIUM; a reference (a secret's ARN, name, path or file) is the recommended pattern, not a finding.

_NAME_WORDS = frozenset({"secret", "password", "passwd", "token", "credential", "credentials", "apikey"})
_NAME_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")})
# A last word that makes the name a reference to a secret: DB_SECRET_NAME, TOKEN_PATH, PASSWORD_FILE.
_REFERENCE_WORDS = frozenset({"name", "arn", "path", "file", "dir", "ref", "uri", "url", "location", "endpoint"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Shapes that are a secret wherever they appear, whatever the name.
_SECRET_SHAPES = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"  # AWS access key ids (long-term, temporary)
    r"|(?<![A-Za-z0-9])(?:"
    r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|sk-[A-Za-z0-9_-]{20,}|sk_live_[A-Za-z0-9]{20,}"  # OpenAI-style and Stripe secret keys
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face tokens
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab personal access tokens
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r")|-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----"
)
# A value that points at a secret (a secret store, a file, a URL) is a reference, not a secret.
_REFERENCE_VALUE = re.compile(r"^(arn:aws[a-z-]*:|\{\{resolve:|/|\./|~/|[a-z][a-z0-9+.-]*://)")
_HEX_TOKEN = re.compile(r"^(?=(?:[^0-9a-fA-F]*[0-9a-fA-F]){32})[0-9a-fA-F-]+$")
_ALPHABET_TOKEN = re.compile(r"^[A-Za-z0-9+/=_.-]{20,}$")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", name).lower()) if w]


def credential_name(name: str) -> bool:
    """SECRET, DB_PASSWORD, hfToken, API_KEY, AWS_SECRET_ACCESS_KEY; not max_new_tokens, tokenizer, DB_SECRET_NAME."""
    words = _words(name)
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    if any(word in _NAME_WORDS for word in words):
        return True
    return any(pair in _NAME_PAIRS for pair in itertools.pairwise(words))


def credential_value(value: str) -> bool:
    """Does the value carry a secret's own shape (an access key id, a known token prefix, a private key)?"""
    return bool(_SECRET_SHAPES.search(value))


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def random_looking(value: str) -> bool:
    """A long string that reads as generated, not written: 32+ hex digits, or mixed-case letters and digits."""
    text = value.strip()
    if len(text) < 20 or _REFERENCE_VALUE.match(text):
        return False
    if _HEX_TOKEN.match(text):
        return True
    if not _ALPHABET_TOKEN.match(text):
        return False
    classes = sum(bool(re.search(pattern, text)) for pattern in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes == 3 and _entropy(text) >= 4.0


def credential_rule(name: str, value: str) -> Rule | None:
    """PLAINTEXT_CREDENTIALS on evidence of a value, CREDENTIAL_NAME for a name alone, None for neither."""
    if credential_value(value):
        return PLAINTEXT_CREDENTIALS
    if not credential_name(name) or _REFERENCE_VALUE.match(value.strip()):
        return None
    return PLAINTEXT_CREDENTIALS if random_looking(value) else CREDENTIAL_NAME


def _credential_fields(path: str, values: Any) -> Iterator[tuple[Rule, str]]:
    for name, value in _mapping(values).items():
        if not isinstance(name, str) or not isinstance(value, str) or not value.strip():
            continue
        rule = credential_rule(name, value)
        if rule is not None:
            yield rule, f"{path}.{name}"


# --- the rules ---------------------------------------------------------------------------------------------


def evaluate(kind: Kind, description: Mapping[str, Any], *, pii: bool = False) -> list[Finding]:
    """Every rule the described resource fails, in RULES order. `pii`: an input bucket is tagged PII."""
    shape = _SHAPES[kind]
    return [
        *_volume(kind, shape, description),
        *_output(kind, shape, description),
        *_inter_container(kind, shape, description),
        *_network(kind, shape, description, pii),
        *_isolation(shape, description, pii),
        *_notebook(kind, description),
        *_endpoint_variants(kind, description),
        *_model_registry(kind, description),
        *_feature_group(kind, description),
        *_inference_experiment(kind, description),
        *_domain(kind, description),
        *_credentials(kind, shape, description),
    ]


def _volume(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    if kind is Kind.AUTOML_JOB:
        prefix, security = _automl_security(description)
        return [] if _set(security.get("VolumeKmsKeyId")) else [Finding(VOLUME_KEY, (f"{prefix}.VolumeKmsKeyId",))]
    if kind is Kind.ENDPOINT_CONFIG:
        return _endpoint_volume(description)
    if shape.volume_key is None or not _applies(shape, description) or _set(_get(description, shape.volume_key)):
        return []
    if kind is Kind.TRAINING_JOB and _list(_get(description, "ResourceConfig.InstanceGroups")):
        groups = [_mapping(g) for g in _list(_get(description, "ResourceConfig.InstanceGroups"))]
        if all(has_local_nvme(g.get("InstanceType")) for g in groups):
            return []
    elif shape.instance_type and has_local_nvme(_get(description, shape.instance_type)):
        return []
    return [Finding(shape.volume_rule, (shape.volume_key,))]


def _endpoint_volume(description: Mapping[str, Any]) -> list[Finding]:
    if _set(description.get("KmsKeyId")):
        return []
    variants = [_mapping(v) for v in _list(description.get("ProductionVariants"))]
    # Serverless variants have no instance type and take no key; local NVMe instances take none either.
    needs_key = [t for t in (v.get("InstanceType") for v in variants) if isinstance(t, str) and not has_local_nvme(t)]
    return [Finding(VOLUME_KEY, ("KmsKeyId",))] if needs_key else []


def _output(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    if kind is Kind.ENDPOINT_CONFIG:
        missing = []
        capture = _mapping(description.get("DataCaptureConfig"))
        if capture and capture.get("EnableCapture", True) is not False and not _set(capture.get("KmsKeyId")):
            missing.append("DataCaptureConfig.KmsKeyId")
        async_output = _mapping(_get(description, "AsyncInferenceConfig.OutputConfig"))
        if async_output and not _set(async_output.get("KmsKeyId")):
            missing.append("AsyncInferenceConfig.OutputConfig.KmsKeyId")
        return [Finding(OUTPUT_KEY, tuple(missing))] if missing else []
    if shape.output_key is None or not _applies(shape, description) or _set(_get(description, shape.output_key)):
        return []
    if kind is Kind.PROCESSING_JOB and not _list(_get(description, "ProcessingOutputConfig.Outputs")):
        return []  # a job that writes nothing has no output to encrypt
    return [Finding(OUTPUT_KEY, (shape.output_key,))]


def _instances(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> int:
    """How many instances take part at once (one means inter-container encryption has no effect)."""
    if kind is Kind.TRAINING_JOB:
        groups = _list(_get(description, "ResourceConfig.InstanceGroups"))
        if groups:
            return sum(_count(_mapping(g).get("InstanceCount")) for g in groups)
    count = _count(_get(description, shape.instance_count)) if shape.instance_count else 0
    if kind is Kind.TUNING_JOB:
        parallel = _count(_get(description, "HyperParameterTuningJobConfig.ResourceLimits.MaxParallelTrainingJobs"))
        return max(count, 1) * max(parallel, 1)
    return count


def _inter_container(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    if shape.inter_container is None or not _applies(shape, description):
        return []
    if _get(description, shape.inter_container) is True:
        return []
    if shape.inter_container_min > 1 and _instances(kind, shape, description) < shape.inter_container_min:
        return []
    return [Finding(shape.inter_container_rule, (shape.inter_container,))]


def _network(kind: Kind, shape: _Shape, description: Mapping[str, Any], pii: bool) -> list[Finding]:
    rule = NO_NETWORK_ISOLATION_PII if pii else NO_NETWORK_ISOLATION
    if kind is Kind.AUTOML_JOB:
        prefix, security = _automl_security(description)
        return [] if _set(security.get("VpcConfig")) else [Finding(rule, (f"{prefix}.VpcConfig",))]
    if shape.vpc is None or shape.isolation is None:
        return []
    if _set(_get(description, shape.vpc)) or _get(description, shape.isolation) is True:
        return []
    return [Finding(rule, (shape.vpc, shape.isolation))]


_ONE_STEP_UP = {Severity.LOW: Severity.MEDIUM, Severity.MEDIUM: Severity.HIGH, Severity.HIGH: Severity.CRITICAL}


def raised_for_pii(rule: Rule) -> Rule:
    """The rule one severity step up, for a resource whose input data is tagged as personal data."""
    return replace(
        rule,
        severity=_ONE_STEP_UP.get(rule.severity, rule.severity),
        explanation=rule.explanation + " Its input data is tagged as personal data (mlwarden:pii=true).",
    )


def _isolation(shape: _Shape, description: Mapping[str, Any], pii: bool) -> list[Finding]:
    """A control that requires network isolation: anything but true fails (unset means off)."""
    if shape.isolation_rule is None or shape.isolation is None or not _applies(shape, description):
        return []
    if _get(description, shape.isolation) is True:
        return []
    rule = raised_for_pii(shape.isolation_rule) if pii else shape.isolation_rule
    return [Finding(rule, (shape.isolation,))]


def _notebook(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    if kind is not Kind.NOTEBOOK_INSTANCE:
        return []
    findings = []
    # Both default to Enabled when the create call leaves them out.
    if description.get("DirectInternetAccess", "Enabled") != "Disabled":
        findings.append(Finding(NOTEBOOK_INTERNET, ("DirectInternetAccess",)))
    if not _set(description.get("SubnetId")):
        findings.append(Finding(NOTEBOOK_OUTSIDE_VPC, ("SubnetId",)))
    if description.get("RootAccess", "Enabled") != "Disabled":
        findings.append(Finding(NOTEBOOK_ROOT, ("RootAccess",)))
    # DescribeNotebookInstance always names the platform; an event copy without it is not judged on it.
    platform = description.get("PlatformIdentifier")
    if platform is not None and platform not in SUPPORTED_NOTEBOOK_PLATFORMS:
        findings.append(Finding(NOTEBOOK_PLATFORM, ("PlatformIdentifier",)))
    return findings


def _endpoint_variants(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    """SageMaker.4: an instance-based production variant starting with exactly one instance."""
    if kind is not Kind.ENDPOINT_CONFIG:
        return []
    single = [
        f"ProductionVariants[{index}].InitialInstanceCount"
        for index, variant in enumerate(_mapping(v) for v in _list(description.get("ProductionVariants")))
        if isinstance(variant.get("InstanceType"), str) and _count(variant.get("InitialInstanceCount")) == 1
    ]
    return [Finding(ENDPOINT_SINGLE_INSTANCE, tuple(single))] if single else []


def _private_registry(container: Any) -> bool:
    return bool(_get(_mapping(container), "ImageConfig.RepositoryAccessMode") == "Vpc")


def _model_registry(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    """SageMaker.16 (the primary container) and .19 (every container of an inference pipeline)."""
    if kind is not Kind.MODEL:
        return []
    findings = []
    primary = description.get("PrimaryContainer")
    if isinstance(primary, Mapping) and _set(primary) and not _private_registry(primary):
        findings.append(Finding(MODEL_PRIMARY_REGISTRY, ("PrimaryContainer.ImageConfig.RepositoryAccessMode",)))
    public = [
        f"Containers[{index}].ImageConfig.RepositoryAccessMode"
        for index, container in enumerate(_list(description.get("Containers")))
        if not _private_registry(container)
    ]
    if public:
        findings.append(Finding(MODEL_PIPELINE_REGISTRY, tuple(public)))
    return findings


def _feature_group(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    """SageMaker.17 (offline store) and .18 (online store with standard storage)."""
    if kind is not Kind.FEATURE_GROUP:
        return []
    findings = []
    offline = _mapping(description.get("OfflineStoreConfig"))
    if offline and not _set(_get(offline, "S3StorageConfig.KmsKeyId")):
        findings.append(Finding(FEATURE_OFFLINE_KEY, ("OfflineStoreConfig.S3StorageConfig.KmsKeyId",)))
    online = _mapping(description.get("OnlineStoreConfig"))
    standard = online.get("StorageType", "Standard") != "InMemory"
    if online.get("EnableOnlineStore") is True and standard and not _set(_get(online, "SecurityConfig.KmsKeyId")):
        findings.append(Finding(FEATURE_ONLINE_KEY, ("OnlineStoreConfig.SecurityConfig.KmsKeyId",)))
    return findings


def _inference_experiment(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    """SageMaker.24: captured data written without a KMS key (.23, the volume key, is the shape's volume rule)."""
    if kind is not Kind.INFERENCE_EXPERIMENT:
        return []
    storage = _mapping(description.get("DataStorageConfig"))
    if storage and not _set(storage.get("KmsKey")):
        return [Finding(EXPERIMENT_CAPTURE_KEY, ("DataStorageConfig.KmsKey",))]
    return []


def _domain(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    if kind is not Kind.DOMAIN:
        return []
    findings = []
    if not _set(description.get("KmsKeyId")):
        findings.append(Finding(DOMAIN_KEY, ("KmsKeyId",)))
    if description.get("AppNetworkAccessType", "PublicInternetOnly") != "VpcOnly":
        findings.append(Finding(DOMAIN_PUBLIC, ("AppNetworkAccessType",)))
    return findings


def _credentials(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    found: list[tuple[Rule, str]] = []
    for path in shape.environments:
        found += _credential_fields(path, _get(description, path))
    if shape.hyperparameters:
        found += _credential_fields(shape.hyperparameters, _get(description, shape.hyperparameters))
    if kind is Kind.MODEL:
        for index, container in enumerate(_list(description.get("Containers"))):
            found += _credential_fields(f"Containers[{index}].Environment", _mapping(container).get("Environment"))
    if kind is Kind.TUNING_JOB:
        for index, definition in enumerate(_list(description.get("TrainingJobDefinitions"))):
            found += _credential_fields(
                f"TrainingJobDefinitions[{index}].StaticHyperParameters",
                _mapping(definition).get("StaticHyperParameters"),
            )
    findings = []
    for rule in (PLAINTEXT_CREDENTIALS, CREDENTIAL_NAME):
        fields = tuple(field for found_rule, field in found if found_rule is rule)
        if fields:
            findings.append(Finding(rule, fields))
    return findings


def worst(findings: list[Finding]) -> Severity:
    order = [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]
    for severity in order:
        if any(f.rule.severity is severity for f in findings):
            return severity
    return Severity.INFORMATIONAL
