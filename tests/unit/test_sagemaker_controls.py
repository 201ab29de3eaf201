"""Security Hub's SageMaker.1-.25, control by control: severity, Config rules, the pass and fail cases of each
control's page, the template's routing and role, and the README's coverage table.

Source of every row: https://docs.aws.amazon.com/securityhub/latest/userguide/sagemaker-controls.html
(each control's Severity, AWS Config rule, and "The control fails if ..." sentence).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden.checks import check_sagemaker_encryption as check
from mlwarden.outcomes import Severity
from mlwarden.rules import sagemaker as rules
from mlwarden.rules.sagemaker import CONTROL_RULES, NOT_COVERED, Kind, controls_of, evaluate
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
FUNCTION = TEMPLATE["Resources"]["CheckSageMakerEncryptionFunction"]
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
H, M = Severity.HIGH, Severity.MEDIUM

# control -> (Security Hub severity, the AWS Config managed rules routed for it)
CONTROLS: dict[str, tuple[Severity, tuple[str, ...]]] = {
    "SageMaker.1": (H, ("sagemaker-notebook-no-direct-internet-access",)),
    "SageMaker.2": (H, ("sagemaker-notebook-instance-inside-vpc",)),
    "SageMaker.3": (H, ("sagemaker-notebook-instance-root-access-check",)),
    "SageMaker.4": (M, ("sagemaker-endpoint-config-prod-instance-count",)),
    "SageMaker.5": (M, ("sagemaker-model-isolation-enabled",)),
    "SageMaker.8": (M, ("sagemaker-notebook-instance-platform-version",)),
    "SageMaker.9": (M, ("sagemaker-data-quality-job-encrypt-in-transit",)),
    "SageMaker.10": (M, ("sagemaker-model-explainability-job-encrypt-in-transit",)),
    "SageMaker.11": (M, ("sagemaker-data-quality-job-isolation",)),
    "SageMaker.12": (M, ("sagemaker-model-bias-job-isolation",)),
    "SageMaker.13": (M, ("sagemaker-model-quality-job-encrypt-in-transit",)),
    "SageMaker.14": (M, ("sagemaker-monitoring-schedule-isolation",)),
    "SageMaker.15": (M, ("sagemaker-model-bias-job-encrypt-in-transit",)),
    "SageMaker.16": (M, ("sagemaker-model-private-registry-required",)),
    "SageMaker.17": (M, ("sagemaker-featuregroup-encryption-at-rest",)),
    "SageMaker.18": (M, ("sagemaker-featuregroup-online-store-encryption",)),
    "SageMaker.19": (M, ("sagemaker-model-multicontainer-private-registry",)),
    "SageMaker.20": (H, ("sagemaker-model-explainability-job-network-isolation",)),
    # The second name is the conformance packs' rule for the same key (Security Hub does not deploy it).
    "SageMaker.21": (
        M,
        ("sagemaker-notebook-instance-storage-vol-kms-encrypted", "sagemaker-notebook-instance-kms-key-configured"),
    ),
    "SageMaker.22": (M, ("sagemaker-monitoring-schedule-traffic-encryption",)),
    "SageMaker.23": (M, ("sagemaker-inf-experiment-instance-storage-kms-encrypted",)),
    "SageMaker.24": (M, ("sagemaker-inf-experiment-data-storage-kms-encrypted",)),
    "SageMaker.25": (H, ("sagemaker-model-quality-job-definition-isolation",)),
}


def by_control() -> dict[str, rules.Rule]:
    return {control: rule for rule in CONTROL_RULES for control in rule.controls}


def test_every_control_is_covered_once_or_said_why_not() -> None:
    covered = [control for rule in CONTROL_RULES for control in rule.controls]
    assert len(covered) == len(set(covered))
    assert sorted(covered + list(NOT_COVERED), key=rules.control_number) == [f"SageMaker.{n}" for n in range(1, 26)]
    assert set(NOT_COVERED) == {"SageMaker.6", "SageMaker.7"}  # tagging only


@pytest.mark.parametrize("control", sorted(CONTROLS, key=rules.control_number))
def test_severity_and_config_rules_are_security_hubs(control: str) -> None:
    severity, config_rules = CONTROLS[control]
    rule = by_control()[control]
    assert (rule.severity, rule.config_rules) == (severity, config_rules)
    assert rule.kinds


def test_config_routing_is_every_controls_rules_plus_the_endpoint_key_rule() -> None:
    routed = {name for _, names in CONTROLS.values() for name in names}
    assert set(check.CONFIG_RULES) == routed | {"sagemaker-endpoint-configuration-kms-key-configured"}
    # A prefix never matches another routed rule's name (each event is read as exactly one rule).
    for name in check.CONFIG_RULES:
        assert [other for other in check.CONFIG_RULES if other.startswith(name)] == [name]


VPC = {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}


def monitoring(instances: int, *, encrypted: bool | None, isolated: bool | None) -> dict[str, Any]:
    network: dict[str, Any] = {}
    if encrypted is not None:
        network["EnableInterContainerTrafficEncryption"] = encrypted
    if isolated is not None:
        network["EnableNetworkIsolation"] = isolated
    return {
        "JobResources": {"ClusterConfig": {"InstanceCount": instances, "VolumeKmsKeyId": KEY}},
        "NetworkConfig": network,
    }


def scheduled(network: dict[str, Any] | None) -> dict[str, Any]:
    definition: dict[str, Any] = {"MonitoringResources": {"ClusterConfig": {"InstanceCount": 1, "VolumeKmsKeyId": KEY}}}
    if network is not None:
        definition["NetworkConfig"] = network
    return {"MonitoringScheduleConfig": {"MonitoringJobDefinition": definition}}


NOTEBOOK_OK = {
    "KmsKeyId": KEY,
    "SubnetId": "subnet-1",
    "DirectInternetAccess": "Disabled",
    "RootAccess": "Disabled",
    "PlatformIdentifier": "notebook-al2023-v1",
}
MODEL_OK = {"EnableNetworkIsolation": True, "PrimaryContainer": {"ImageConfig": {"RepositoryAccessMode": "Vpc"}}}

# (control, kind, description, fails): each control page's pass and fail case, in the Describe* spelling.
CASES: list[tuple[str, Kind, dict[str, Any], bool]] = [
    ("SageMaker.1", Kind.NOTEBOOK_INSTANCE, {**NOTEBOOK_OK, "DirectInternetAccess": "Enabled"}, True),
    ("SageMaker.1", Kind.NOTEBOOK_INSTANCE, NOTEBOOK_OK, False),
    ("SageMaker.2", Kind.NOTEBOOK_INSTANCE, {**NOTEBOOK_OK, "SubnetId": None}, True),
    ("SageMaker.2", Kind.NOTEBOOK_INSTANCE, NOTEBOOK_OK, False),
    ("SageMaker.3", Kind.NOTEBOOK_INSTANCE, {**NOTEBOOK_OK, "RootAccess": "Enabled"}, True),
    ("SageMaker.3", Kind.NOTEBOOK_INSTANCE, NOTEBOOK_OK, False),
    (
        "SageMaker.4",
        Kind.ENDPOINT_CONFIG,
        {"KmsKeyId": KEY, "ProductionVariants": [{"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]},
        True,
    ),
    (
        "SageMaker.4",
        Kind.ENDPOINT_CONFIG,
        {"KmsKeyId": KEY, "ProductionVariants": [{"InstanceType": "ml.m5.large", "InitialInstanceCount": 2}]},
        False,
    ),
    # "This control applies only to instance-based endpoint configuration."
    (
        "SageMaker.4",
        Kind.ENDPOINT_CONFIG,
        {"ProductionVariants": [{"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1}}]},
        False,
    ),
    ("SageMaker.5", Kind.MODEL, {**MODEL_OK, "EnableNetworkIsolation": False, "VpcConfig": VPC}, True),
    ("SageMaker.5", Kind.MODEL, {**MODEL_OK, "EnableNetworkIsolation": None}, True),
    ("SageMaker.5", Kind.MODEL, MODEL_OK, False),
    ("SageMaker.8", Kind.NOTEBOOK_INSTANCE, {**NOTEBOOK_OK, "PlatformIdentifier": "notebook-al2-v2"}, True),
    ("SageMaker.8", Kind.NOTEBOOK_INSTANCE, {**NOTEBOOK_OK, "PlatformIdentifier": "notebook-al1-v1"}, True),
    ("SageMaker.8", Kind.NOTEBOOK_INSTANCE, NOTEBOOK_OK, False),
    # .9 and .15: their Config rules pass a job definition with fewer than two instances.
    ("SageMaker.9", Kind.DATA_QUALITY_JOB_DEFINITION, monitoring(2, encrypted=False, isolated=True), True),
    ("SageMaker.9", Kind.DATA_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=False, isolated=True), False),
    ("SageMaker.9", Kind.DATA_QUALITY_JOB_DEFINITION, monitoring(2, encrypted=True, isolated=True), False),
    ("SageMaker.10", Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION, monitoring(1, encrypted=None, isolated=True), True),
    ("SageMaker.10", Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=True), False),
    ("SageMaker.11", Kind.DATA_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=False), True),
    ("SageMaker.11", Kind.DATA_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=True), False),
    ("SageMaker.12", Kind.MODEL_BIAS_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=None), True),
    ("SageMaker.12", Kind.MODEL_BIAS_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=True), False),
    ("SageMaker.13", Kind.MODEL_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=False, isolated=True), True),
    ("SageMaker.13", Kind.MODEL_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=True), False),
    ("SageMaker.14", Kind.MONITORING_SCHEDULE, scheduled({"EnableInterContainerTrafficEncryption": True}), True),
    ("SageMaker.14", Kind.MONITORING_SCHEDULE, scheduled(None), True),
    (
        "SageMaker.14",
        Kind.MONITORING_SCHEDULE,
        scheduled({"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True}),
        False,
    ),
    ("SageMaker.15", Kind.MODEL_BIAS_JOB_DEFINITION, monitoring(3, encrypted=False, isolated=True), True),
    ("SageMaker.15", Kind.MODEL_BIAS_JOB_DEFINITION, monitoring(1, encrypted=False, isolated=True), False),
    ("SageMaker.16", Kind.MODEL, {**MODEL_OK, "PrimaryContainer": {"Image": "x"}}, True),
    (
        "SageMaker.16",
        Kind.MODEL,
        {**MODEL_OK, "PrimaryContainer": {"ImageConfig": {"RepositoryAccessMode": "Platform"}}},
        True,
    ),
    ("SageMaker.16", Kind.MODEL, MODEL_OK, False),
    ("SageMaker.17", Kind.FEATURE_GROUP, {"OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://f/"}}}, True),
    (
        "SageMaker.17",
        Kind.FEATURE_GROUP,
        {"OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://f/", "KmsKeyId": KEY}}},
        False,
    ),
    ("SageMaker.18", Kind.FEATURE_GROUP, {"OnlineStoreConfig": {"EnableOnlineStore": True}}, True),
    (
        "SageMaker.18",
        Kind.FEATURE_GROUP,
        {"OnlineStoreConfig": {"EnableOnlineStore": True, "SecurityConfig": {"KmsKeyId": KEY}}},
        False,
    ),
    (
        "SageMaker.18",
        Kind.FEATURE_GROUP,
        {"OnlineStoreConfig": {"EnableOnlineStore": True, "StorageType": "InMemory"}},
        False,
    ),
    (
        "SageMaker.19",
        Kind.MODEL,
        {
            "EnableNetworkIsolation": True,
            "Containers": [{"ImageConfig": {"RepositoryAccessMode": "Vpc"}}, {"Image": "no-image-config"}],
        },
        True,
    ),
    (
        "SageMaker.19",
        Kind.MODEL,
        {"EnableNetworkIsolation": True, "Containers": [{"ImageConfig": {"RepositoryAccessMode": "Vpc"}}]},
        False,
    ),
    ("SageMaker.20", Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=False), True),
    ("SageMaker.20", Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=True), False),
    ("SageMaker.21", Kind.NOTEBOOK_INSTANCE, {**NOTEBOOK_OK, "KmsKeyId": None}, True),
    ("SageMaker.21", Kind.NOTEBOOK_INSTANCE, NOTEBOOK_OK, False),
    ("SageMaker.22", Kind.MONITORING_SCHEDULE, scheduled({"EnableNetworkIsolation": True}), True),
    (
        "SageMaker.22",
        Kind.MONITORING_SCHEDULE,
        scheduled({"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True}),
        False,
    ),
    ("SageMaker.23", Kind.INFERENCE_EXPERIMENT, {"Name": "shadow"}, True),
    ("SageMaker.23", Kind.INFERENCE_EXPERIMENT, {"KmsKey": KEY}, False),
    ("SageMaker.24", Kind.INFERENCE_EXPERIMENT, {"KmsKey": KEY, "DataStorageConfig": {"Destination": "s3://c"}}, True),
    (
        "SageMaker.24",
        Kind.INFERENCE_EXPERIMENT,
        {"KmsKey": KEY, "DataStorageConfig": {"Destination": "s3://c", "KmsKey": KEY}},
        False,
    ),
    ("SageMaker.25", Kind.MODEL_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=False), True),
    ("SageMaker.25", Kind.MODEL_QUALITY_JOB_DEFINITION, monitoring(1, encrypted=True, isolated=True), False),
]


def _description(description: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in description.items() if value is not None}


@pytest.mark.parametrize(
    ("control", "kind", "description", "fails"),
    CASES,
    ids=[f"{c}-{'fail' if f else 'pass'}-{i}" for i, (c, _, _, f) in enumerate(CASES)],
)
def test_each_control_fails_and_passes_as_its_page_says(
    control: str, kind: Kind, description: dict[str, Any], fails: bool
) -> None:
    failed = {c for finding in evaluate(kind, _description(description)) for c in finding.rule.controls}
    assert (control in failed) is fails


def test_every_covered_control_has_a_pass_and_a_fail_case() -> None:
    assert {(control, fails) for control, _, _, fails in CASES} == {
        (control, fails) for control in by_control() for fails in (True, False)
    }


def test_a_schedule_naming_a_job_definition_is_not_graded_on_settings_it_does_not_hold() -> None:
    named = {"MonitoringScheduleConfig": {"MonitoringJobDefinitionName": "dq", "MonitoringType": "DataQuality"}}
    assert evaluate(Kind.MONITORING_SCHEDULE, named) == []


def test_pii_raises_a_models_missing_isolation_one_step() -> None:
    [finding] = [f for f in evaluate(Kind.MODEL, {**MODEL_OK, "EnableNetworkIsolation": False}, pii=True)]
    assert (finding.rule.controls, finding.rule.severity) == (("SageMaker.5",), Severity.HIGH)


@pytest.mark.parametrize("kind", list(Kind))
def test_compliant_outcomes_name_the_controls_of_their_kind(kind: Kind) -> None:
    expected = [control for control in by_control() if kind in by_control()[control].kinds]
    assert list(controls_of(kind)) == sorted(expected, key=rules.control_number)


# --- the template: routed calls, Config rules, pattern size, role --------------------------------------------

# EventBridge quota "Event pattern size: 2,048 characters" (adjustable, but not by a stack):
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html
EVENT_PATTERN_LIMIT = 2048


def _patterns() -> dict[str, dict[str, Any]]:
    events = FUNCTION["Properties"]["Events"]
    # EventBridge rules only: the sweep's SQS event source has no pattern.
    return {name: event["Properties"]["Pattern"] for name, event in events.items() if "Pattern" in event["Properties"]}


def test_cloudtrail_rule_routes_exactly_the_calls_the_check_reads() -> None:
    names = set(_patterns()["CloudTrail"]["detail"]["eventName"])
    assert names == set(check.API_CALLS) | {"AddTags"}


def test_config_rules_are_routed_by_plain_and_security_hub_names() -> None:
    plain = [entry["prefix"] for entry in _patterns()["ConfigCompliance"]["detail"]["configRuleName"]]
    security_hub = [entry["prefix"] for entry in _patterns()["SecurityHubConfigCompliance"]["detail"]["configRuleName"]]
    assert plain == list(check.CONFIG_RULES)
    assert security_hub == [f"securityhub-{name}" for name in check.CONFIG_RULES]


@pytest.mark.parametrize("name", ["CloudTrail", "ConfigCompliance", "SecurityHubConfigCompliance"])
def test_every_pattern_fits_eventbridges_size_quota(name: str) -> None:
    assert len(json.dumps(_patterns()[name], separators=(",", ":"))) <= EVENT_PATTERN_LIMIT


def test_the_role_describes_every_kind_on_its_own_resource_type() -> None:
    statements = TEMPLATE["Resources"]["CheckSageMakerEncryptionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    granted: dict[str, set[str]] = {}
    for statement in statements["Statement"]:
        if "Fn::If" in statement:
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            granted.setdefault(action, set()).update(
                r["Fn::Sub"].rsplit(":", 1)[1] if isinstance(r, dict) and "Fn::Sub" in r else str(r) for r in resources
            )
    for kind, api in check._DESCRIBE.items():
        assert f"{kind.value}/*" in granted[f"sagemaker:{api.action}"], kind
    for action in check.SWEEP_PERMISSIONS:
        assert granted[action] == {"*"}


# --- the README's coverage table --------------------------------------------------------------------------------


def test_readme_coverage_table_is_the_rendered_one() -> None:
    spec = importlib.util.spec_from_file_location("render", ROOT / "tools" / "render_sagemaker_coverage.py")
    assert spec is not None
    assert spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    text = (ROOT / "README.md").read_text()
    assert text == render.rendered(text), "README.md is stale: run tools/render_sagemaker_coverage.py"
