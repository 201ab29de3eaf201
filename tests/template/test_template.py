"""What template.yaml promises: one least-privilege role per function, rules that never lose an event."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mlwarden import clients, exemptions, fanout, flapguard, organization, outcome_store, pii_memory
from mlwarden.checks import CheckUnit, load
from mlwarden.checks import block_public_s3 as s3
from mlwarden.checks import check_sagemaker_encryption as sagemaker
from mlwarden.checks import flag_wildcard_iam as iam
from mlwarden.checks import guard_kms_keys as kms
from mlwarden.checks import guard_s3_data as data
from mlwarden.checks import tag_pii_bucket as macie
from mlwarden.checks import watch_inputs as watch
from mlwarden.fanout import DEPLOYED_SWEEP_CHECKS
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]


def _units() -> list[CheckUnit]:
    """The checks the deployed sweep reaches: those with a work queue and a UNIT (targets_from_inventory)."""
    found = []
    for name in DEPLOYED_SWEEP_CHECKS:
        try:
            found.append(load(name))
        except KeyError:  # no UNIT yet
            continue
    return found


SWEEP_UNITS = _units()
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {name: r for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
# The functions that run a check on events (and on sweep pages); the sweep planner only lists (test_sweep_template).
CHECK_FUNCTIONS = {name: r for name, r in FUNCTIONS.items() if name != "SweepPlannerFunction"}

# Actions IAM accepts only with Resource "*" (they have no resource type), and why we need them.
ACTIONS_WITHOUT_RESOURCE_TYPE = {
    "s3:GetAccountPublicAccessBlock": "account-level block, block_public_s3 (and tag_pii_bucket's public check)",
    "s3:PutAccountPublicAccessBlock": "account-level block, block_public_s3",
    "s3:ListAllMyBuckets": "the sweep lists the buckets, block_public_s3",
    "tag:GetResources": "the sweep reads the buckets' tags in bulk, block_public_s3 and sweep_planner",
    "iam:GetAccountAuthorizationDetails": "the sweep reads the account's IAM in one call, flag_wildcard_iam",
    "macie2:ListFindings": "the sweep lists the region's sensitive-data findings, tag_pii_bucket",
    "macie2:GetFindings": "the sweep reads the listed findings, tag_pii_bucket",
    "xray:PutTraceSegments": "tracing, only when EnableTracing=true",
    "xray:PutTelemetryRecords": "tracing, only when EnableTracing=true",
    "iam:ListPolicies": "find the ARN of the policy id a Config event names, flag_wildcard_iam",
    **dict.fromkeys(sagemaker.SWEEP_PERMISSIONS, "the sweep's SageMaker inventory, check_sagemaker_encryption"),
    "macie2:GetMacieSession": "is Macie enabled or paused, watch_inputs",
    "macie2:GetAutomatedDiscoveryConfiguration": "is automated sensitive-data discovery on, watch_inputs",
    "macie2:UpdateMacieSession": "switch a paused Macie on again, only when ReenableMacie=true",
    "macie2:UpdateAutomatedDiscoveryConfiguration": "switch discovery on again, only when ReenableMacie=true",
    "events:ListRules": "the liveness canary reads the state of ML Warden's own rules, watch_inputs",
    "kms:ListAliases": "the aliases a bucket's default encryption may name a key by, guard_kms_keys",
}
# What every function needs besides its own check's actions.
COMMON_ACTIONS = (
    {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sns:Publish",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "sqs:SendMessage",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    | outcome_store.PERMISSIONS
    | exemptions.READ_PERMISSIONS
    # The SQS event source mapping that delivers sweep pages polls the check's own queue with its role.
    | fanout.RECEIVE_PERMISSIONS
    # Organization mode (OrganizationId set): act through member roles, name accounts in alerts.
    | clients.MEMBER_ROLE_PERMISSIONS
    | organization.LABEL_PERMISSIONS
)


def _sweep_permissions(check: Any) -> frozenset[str]:
    """What a check's inventory adds (its UNIT's sweep_permissions), once the check has a unit."""
    unit = getattr(check, "UNIT", None)
    return unit.sweep_permissions if unit is not None else frozenset()


# Each function's check module declares the actions its code calls, its inventory's included.
CHECK_ACTIONS = {
    "BlockPublicS3Function": s3.BUCKET_PERMISSIONS | s3.ACCOUNT_PERMISSIONS | _sweep_permissions(s3),
    "TagPiiBucketFunction": macie.PERMISSIONS | _sweep_permissions(macie),
    "CheckSageMakerEncryptionFunction": sagemaker.DESCRIBE_PERMISSIONS
    | sagemaker.BUCKET_PERMISSIONS
    | sagemaker.STOP_PERMISSIONS
    | sagemaker.ROOT_PERMISSIONS
    | _sweep_permissions(sagemaker),
    "FlagWildcardIamFunction": iam.POLICY_PERMISSIONS
    | iam.LIST_PERMISSIONS
    | iam.REVERT_PERMISSIONS
    | _sweep_permissions(iam),
    # The planner lists what each check sweeps, and sends pages (COMMON_ACTIONS has sqs:SendMessage).
    "SweepPlannerFunction": frozenset().union(*(unit.sweep_permissions for unit in SWEEP_UNITS)),
    "WatchInputsFunction": watch.TRAIL_PERMISSIONS
    | watch.MACIE_READ_PERMISSIONS
    | watch.MACIE_REENABLE_PERMISSIONS
    | watch.RULE_PERMISSIONS
    | watch.RULE_LIST_PERMISSIONS
    | watch.CANARY_PERMISSIONS
    | watch.IAM_CANARY_PERMISSIONS,
    "GuardKmsKeysFunction": kms.PERMISSIONS,
    "GuardS3DataFunction": data.PERMISSIONS,
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for statement in _as_list(policy_document["Statement"]):
        if isinstance(statement, dict) and "Fn::If" in statement:
            # conditional statements: check the statement of either branch that exists
            statements += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
        else:
            statements.append(statement)
    return statements


def _role_of(function: dict[str, Any]) -> str:
    role = function["Properties"]["Role"]
    assert "Fn::GetAtt" in role, "each function names its own role"
    return role["Fn::GetAtt"][0]


def _role_statements(role_name: str) -> list[dict[str, Any]]:
    role = RESOURCES[role_name]
    assert "ManagedPolicyArns" not in role["Properties"], "managed policies are broader than the code needs"
    return [s for p in role["Properties"]["Policies"] for s in _statements(p["PolicyDocument"])]


def _all_policy_statements() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resource in RESOURCES.items():
        properties = resource.get("Properties", {})
        for policy in properties.get("Policies", []):
            found += [(name, s) for s in _statements(policy["PolicyDocument"])]
        for key in ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument"):
            if key in properties:
                found += [(name, s) for s in _statements(properties[key])]
    return found


def test_every_function_has_its_own_role() -> None:
    roles = [_role_of(f) for f in FUNCTIONS.values()]
    assert len(roles) == len(set(roles))
    for role in roles:
        assert RESOURCES[role]["Type"] == "AWS::IAM::Role"
        trust = RESOURCES[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]


# AWS's default key policy statement for customer managed keys: the account root may do kms:* on the key, so
# IAM policies decide (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html). The one
# wildcard action the template may hold, and only in a key policy.
DEFAULT_KEY_POLICY_STATEMENT = {
    "Sid": "EnableIamPolicies",
    "Effect": "Allow",
    "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
    "Action": "kms:*",
    "Resource": "*",
}


def test_no_statement_anywhere_has_a_wildcard_action() -> None:
    for name, statement in _all_policy_statements():
        if RESOURCES[name]["Type"] == "AWS::KMS::Key" and statement == DEFAULT_KEY_POLICY_STATEMENT:
            continue
        assert "NotAction" not in statement, f"{name} uses NotAction"
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{name} has wildcard action {action}"


def test_resource_star_only_for_actions_without_resource_types() -> None:
    for role in (_role_of(f) for f in FUNCTIONS.values()):
        for statement in _role_statements(role):
            if statement["Resource"] == "*":
                for action in _as_list(statement["Action"]):
                    assert action in ACTIONS_WITHOUT_RESOURCE_TYPE, f"{role}: {action} on * can be scoped"


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_role_grants_exactly_what_the_code_calls(function_name: str) -> None:
    granted = {
        action
        for statement in _role_statements(_role_of(FUNCTIONS[function_name]))
        for action in _as_list(statement["Action"])
    }
    assert granted - COMMON_ACTIONS == CHECK_ACTIONS[function_name]


def test_bucket_actions_are_scoped_to_bucket_arns() -> None:
    for statement in _role_statements("BlockPublicS3Role"):
        actions = set(_as_list(statement["Action"]))
        if actions & s3.BUCKET_PERMISSIONS:
            assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::*"}


def test_sns_and_kms_are_scoped_to_the_alert_topic_and_its_key() -> None:
    for statement in _role_statements("BlockPublicS3Role"):
        actions = set(_as_list(statement["Action"]))
        if "sns:Publish" in actions:
            assert statement["Resource"] == {"Ref": "AlertTopic"}
        if actions & {"kms:GenerateDataKey", "kms:Decrypt"}:
            assert statement["Resource"] == {
                "Fn::If": ["CreateAlertKey", {"Fn::GetAtt": ["AlertKey", "Arn"]}, {"Ref": "AlertKeyArn"}]
            }
            assert "kms:ViaService" in statement["Condition"]["StringEquals"]


def _rules() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (function_name, event_name, event["Properties"])
        for function_name, function in FUNCTIONS.items()
        for event_name, event in function["Properties"]["Events"].items()
        if event["Type"] == "EventBridgeRule"
    ]


def test_every_function_is_triggered_by_rules() -> None:
    for function_name in CHECK_FUNCTIONS:
        assert any(rule[0] == function_name for rule in _rules())


@pytest.mark.parametrize(("function_name", "event_name", "rule"), _rules())
def test_every_rule_has_retries_and_an_encrypted_dead_letter_queue(
    function_name: str, event_name: str, rule: dict[str, Any]
) -> None:
    assert rule["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert rule["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 3600
    queue = rule["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    queue_properties = RESOURCES[queue]["Properties"]
    assert queue_properties.get("SqsManagedSseEnabled") or queue_properties.get("KmsMasterKeyId")
    # EventBridge may only send to the queue if the queue policy names this rule.
    policies = [r for r in RESOURCES.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    allowed_rules = [
        arn["Fn::GetAtt"][0]
        for policy in policies
        if {"Ref": queue} in policy["Properties"]["Queues"]
        for statement in _statements(policy["Properties"]["PolicyDocument"])
        if statement["Effect"] == "Allow" and statement["Principal"] == {"Service": "events.amazonaws.com"}
        for arn in statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    ]
    assert f"{function_name}{event_name}" in allowed_rules


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_failed_invocations_go_to_the_dead_letter_queue(function_name: str) -> None:
    config = FUNCTIONS[function_name]["Properties"]["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    queue = on_failure["Destination"]["Fn::GetAtt"][0]
    rule_queues = {rule["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0] for fn, _, rule in _rules() if fn == function_name}
    assert rule_queues == {queue}


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_every_function_logs_to_a_log_group_with_retention(function_name: str) -> None:
    group = FUNCTIONS[function_name]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert RESOURCES[group]["Type"] == "AWS::Logs::LogGroup"
    assert RESOURCES[group]["Properties"]["RetentionInDays"]


def test_every_log_group_has_retention() -> None:
    for name, resource in RESOURCES.items():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert resource["Properties"].get("RetentionInDays"), name


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_alarms_on_errors_and_dead_letter_depth_notify_the_operations_topic(function_name: str) -> None:
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    errors = [
        a for a in alarms if a["MetricName"] == "Errors" and a["Dimensions"][0]["Value"] == {"Ref": function_name}
    ]
    queue = FUNCTIONS[function_name]["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"][
        "Destination"
    ]["Fn::GetAtt"][0]
    depth = [
        a
        for a in alarms
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and a["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue, "QueueName"]}
    ]
    assert errors and depth
    for alarm in errors + depth:
        assert alarm["AlarmActions"] == [{"Ref": "OperationsTopic"}]


def test_lost_alerts_are_alarmed_per_check() -> None:
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    lost = {
        next(d["Value"] for d in a["Dimensions"] if d["Name"] == "check")
        for a in alarms
        if a["Namespace"] == "MLWarden" and a["MetricName"] == "AlertFailed"
    }
    assert lost == {s3.CHECK, macie.CHECK, sagemaker.CHECK, iam.CHECK, watch.CHECK, kms.CHECK, data.CHECK}


def test_parameters_and_defaults() -> None:
    parameters = TEMPLATE["Parameters"]
    assert parameters["RemediationMode"]["Default"] == "enforce"
    assert parameters["RemediationMode"]["AllowedValues"] == ["enforce", "dry-run"]
    assert parameters["AlertEmail"]["Default"] == ""
    assert parameters["ExemptTagKey"]["Default"] == "mlwarden:exempt"
    assert parameters["EnableTracing"]["Default"] == "false"
    assert parameters["CreateCloudTrail"]["Default"] == "false"
    assert parameters["FlapThreshold"]["Default"] == 3
    assert parameters["TagPiiObjects"]["Default"] == "false"
    # The issue wants a public bucket holding PII locked in enforce mode; RemediationMode=dry-run still rules.
    assert parameters["LockPublicPiiBuckets"]["Default"] == "true"


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_functions_get_their_settings_and_their_own_role_for_the_loop_guard(function_name: str) -> None:
    env = {
        **TEMPLATE["Globals"]["Function"]["Environment"]["Variables"],
        **FUNCTIONS[function_name]["Properties"]["Environment"]["Variables"],
    }
    assert env["ALERT_TOPIC_ARN"] == {"Ref": "AlertTopic"}
    assert env["REMEDIATION_MODE"] == {"Ref": "RemediationMode"}
    assert env["EXEMPT_TAG_KEY"] == {"Ref": "ExemptTagKey"}
    assert env["REMEDIATOR_ROLE_ARN"] == {"Fn::GetAtt": [_role_of(FUNCTIONS[function_name]), "Arn"]}
    assert env["MLWARDEN_TRACING"] == {"Ref": "EnableTracing"}
    assert env["OUTCOME_TABLE"] == {"Ref": "OutcomeTable"}
    assert env["FLAP_THRESHOLD"] == {"Ref": "FlapThreshold"}


def test_outcome_table_is_on_demand_encrypted_and_expires_its_records() -> None:
    table = RESOURCES["OutcomeTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    # Powertools' idempotency records and the flap guard's counts both expire through this attribute.
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_outcome_table_actions_are_item_actions_on_that_table_alone(function_name: str) -> None:
    assert flapguard.PERMISSIONS <= outcome_store.PERMISSIONS
    dynamodb = [
        s
        for s in _role_statements(_role_of(FUNCTIONS[function_name]))
        if any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))
        and s["Resource"] != {"Fn::GetAtt": ["ExemptionTable", "Arn"]}
        and s["Sid"] != "RecordSweepProgress"  # the sweep's progress items: tests/template/test_outcome_table_access
    ]
    assert len(dynamodb) == 1
    assert set(_as_list(dynamodb[0]["Action"])) == outcome_store.PERMISSIONS
    assert dynamodb[0]["Resource"] == {"Fn::GetAtt": ["OutcomeTable", "Arn"]}


def test_tracing_is_off_by_default_and_its_permission_is_conditional() -> None:
    assert TEMPLATE["Globals"]["Function"]["Tracing"] == {"Fn::If": ["TracingEnabled", "Active", "Disabled"]}
    for function in FUNCTIONS.values():
        raw = RESOURCES[_role_of(function)]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        tracing = [s for s in raw if "Fn::If" in s]
        assert tracing and tracing[0]["Fn::If"][0] == "TracingEnabled"


def test_layer_is_built_by_sam_for_the_lambda_runtime() -> None:
    layer = RESOURCES["CoreLayer"]
    # layers/core/Makefile installs the pinned requirements as python3.13 arm64 wheels (tests/built checks them)
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert (ROOT / "layers" / "core" / "Makefile").read_text().count("--python-version 3.13") == 1
    assert layer["Properties"]["ContentUri"] == "layers/core/"
    assert TEMPLATE["Globals"]["Function"]["Runtime"] == "python3.13"
    assert TEMPLATE["Globals"]["Function"]["Architectures"] == ["arm64"]


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_sam_local_env_file_configures_every_function(function_name: str) -> None:
    env_file = json.loads((ROOT / "events" / "env.json").read_text())
    variables = env_file[function_name]
    assert {"ALERT_TOPIC_ARN", "REMEDIATION_MODE", "EXEMPT_TAG_KEY", "REMEDIATOR_ROLE_ARN"} <= set(variables)
    assert variables["AWS_ENDPOINT_URL"].startswith("http")


def test_optional_trail_is_off_by_default_and_its_bucket_is_private() -> None:
    assert RESOURCES["ManagementEventsTrail"]["Condition"] == "CreateTrail"
    bucket = RESOURCES["TrailBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def _conditional_statements(role_name: str) -> dict[str, dict[str, Any]]:
    raw = RESOURCES[role_name]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    return {s["Fn::If"][0]: s["Fn::If"][1] for s in raw if "Fn::If" in s}


def test_tag_pii_bucket_optional_writes_are_granted_only_under_their_parameter() -> None:
    conditions = TEMPLATE["Conditions"]
    assert conditions["LockPublicPiiBucketsEnabled"] == {"Fn::Equals": [{"Ref": "LockPublicPiiBuckets"}, "true"]}
    assert conditions["TagPiiObjectsEnabled"] == {"Fn::Equals": [{"Ref": "TagPiiObjects"}, "true"]}
    conditional = _conditional_statements("TagPiiBucketRole")
    assert set(_as_list(conditional["LockPublicPiiBucketsEnabled"]["Action"])) == macie.LOCK_PERMISSIONS
    assert set(_as_list(conditional["TagPiiObjectsEnabled"]["Action"])) == macie.OBJECT_PERMISSIONS
    assert conditional["TagPiiObjectsEnabled"]["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::*/*"}
    unconditional = {
        action
        for statement in RESOURCES["TagPiiBucketRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if "Fn::If" not in statement
        for action in _as_list(statement["Action"])
    }
    assert not unconditional & (macie.LOCK_PERMISSIONS | macie.OBJECT_PERMISSIONS)


def test_tag_pii_bucket_switches_reach_the_function() -> None:
    env = FUNCTIONS["TagPiiBucketFunction"]["Properties"]["Environment"]["Variables"]
    assert env["TAG_PII_OBJECTS"] == {"Ref": "TagPiiObjects"}
    assert env["LOCK_PUBLIC_PII_BUCKETS"] == {"Ref": "LockPublicPiiBuckets"}


def test_tag_pii_bucket_bucket_actions_are_scoped_to_bucket_arns() -> None:
    for statement in _role_statements("TagPiiBucketRole"):
        actions = set(_as_list(statement["Action"]))
        if actions & (macie.TAG_PERMISSIONS | macie.LOCK_PERMISSIONS):
            assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::*"}


def test_endpoint_variable_is_declared_empty_so_sam_local_can_override_it() -> None:
    # sam local invoke --env-vars only overrides variables the template declares.
    assert TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["AWS_ENDPOINT_URL"] == ""


# --- check_sagemaker_encryption -----------------------------------------------------------------------------

SAGEMAKER_ARN = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:"


def _raw_statements(role_name: str) -> list[dict[str, Any]]:
    return list(RESOURCES[role_name]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"])


def test_sagemaker_actions_are_scoped_to_the_resource_types_they_read() -> None:
    for statement in _role_statements("CheckSageMakerEncryptionRole"):
        actions = set(_as_list(statement["Action"]))
        sagemaker_actions = {a for a in actions if a.startswith("sagemaker:")}
        if not sagemaker_actions or sagemaker_actions <= sagemaker.SWEEP_PERMISSIONS:
            continue
        resources = [r["Fn::Sub"] for r in _as_list(statement["Resource"])]
        assert all(r.startswith(SAGEMAKER_ARN) and r.endswith("/*") for r in resources), resources
        kinds = {r.removeprefix(SAGEMAKER_ARN).removesuffix("/*") for r in resources}
        if sagemaker_actions & (sagemaker.STOP_PERMISSIONS - {"sagemaker:ListTags"}):
            assert kinds == {"training-job", "processing-job", "transform-job", "hyper-parameter-tuning-job"}
        if "sagemaker:UpdateNotebookInstance" in sagemaker_actions:
            assert kinds == {"notebook-instance"}


def test_stop_and_list_tags_are_granted_only_when_stop_unencrypted_jobs_is_true() -> None:
    assert TEMPLATE["Parameters"]["StopUnencryptedJobs"]["Default"] == "false"
    assert TEMPLATE["Conditions"]["StopJobsEnabled"] == {"Fn::Equals": [{"Ref": "StopUnencryptedJobs"}, "true"]}
    unconditional = {
        action
        for statement in _raw_statements("CheckSageMakerEncryptionRole")
        if "Fn::If" not in statement
        for action in _as_list(statement["Action"])
    }
    assert not unconditional & (sagemaker.STOP_PERMISSIONS | sagemaker.ROOT_PERMISSIONS)
    conditional = [s["Fn::If"] for s in _raw_statements("CheckSageMakerEncryptionRole") if "Fn::If" in s]
    stop = [branches for branches in conditional if branches[0] == "StopJobsEnabled"]
    assert len(stop) == 1
    assert set(stop[0][1]["Action"]) == sagemaker.STOP_PERMISSIONS
    assert stop[0][2] == {"Ref": "AWS::NoValue"}


def test_notebook_root_fix_is_off_by_default_and_granted_only_when_turned_on() -> None:
    assert TEMPLATE["Parameters"]["DisableNotebookRootAccess"]["Default"] == "false"
    assert TEMPLATE["Conditions"]["DisableNotebookRootEnabled"] == {
        "Fn::Equals": [{"Ref": "DisableNotebookRootAccess"}, "true"]
    }
    env = FUNCTIONS["CheckSageMakerEncryptionFunction"]["Properties"]["Environment"]["Variables"]
    assert env[sagemaker.ROOT_ENV] == {"Ref": "DisableNotebookRootAccess"}
    conditional = [s["Fn::If"] for s in _raw_statements("CheckSageMakerEncryptionRole") if "Fn::If" in s]
    [root] = [branches for branches in conditional if branches[0] == "DisableNotebookRootEnabled"]
    assert set(root[1]["Action"]) == sagemaker.ROOT_PERMISSIONS
    assert root[2] == {"Ref": "AWS::NoValue"}


def test_stop_setting_reaches_the_function() -> None:
    env = FUNCTIONS["CheckSageMakerEncryptionFunction"]["Properties"]["Environment"]["Variables"]
    assert env[sagemaker.STOP_ENV] == {"Ref": "StopUnencryptedJobs"}


def test_reverting_policy_versions_is_off_by_default_and_its_permissions_are_conditional() -> None:
    assert TEMPLATE["Parameters"]["RevertCriticalPolicyVersions"]["Default"] == "false"
    assert TEMPLATE["Conditions"]["RevertCriticalVersions"] == {
        "Fn::Equals": [{"Ref": "RevertCriticalPolicyVersions"}, "true"]
    }
    variables = FUNCTIONS["FlagWildcardIamFunction"]["Properties"]["Environment"]["Variables"]
    assert variables[iam.REVERT_VARIABLE] == {"Ref": "RevertCriticalPolicyVersions"}
    raw = RESOURCES["FlagWildcardIamRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    unconditional = {a for s in raw if "Fn::If" not in s for a in _as_list(s["Action"])}
    assert not unconditional & iam.REVERT_PERMISSIONS
    conditional = [s["Fn::If"] for s in raw if "Fn::If" in s and s["Fn::If"][0] == "RevertCriticalVersions"]
    assert len(conditional) == 1
    assert set(conditional[0][1]["Action"]) == iam.REVERT_PERMISSIONS
    assert conditional[0][2] == {"Ref": "AWS::NoValue"}


def test_iam_rule_says_iam_events_arrive_in_us_east_1_only() -> None:
    description = FUNCTIONS["FlagWildcardIamFunction"]["Properties"]["Description"]
    assert "us-east-1" in description
    pattern = FUNCTIONS["FlagWildcardIamFunction"]["Properties"]["Events"]["CloudTrail"]["Properties"]["Pattern"]
    assert set(pattern["detail"]["eventName"]) == iam.ROUTED_API_CALLS


# The resource type each IAM action of flag_wildcard_iam authorizes, from the Service Authorization Reference
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html):
# role, user and group actions are granted on that type's ARNs in the account only.
_IAM_RESOURCE_TYPE = re.compile(r"^iam:(?:\w*?)(Role|User|Group)s?(?:Policies|Policy|Tags)?$")


def test_iam_principal_actions_are_scoped_to_their_resource_type() -> None:
    checked = set()
    for statement in _role_statements("FlagWildcardIamRole"):
        for action in _as_list(statement["Action"]):
            if action == "iam:ListGroupsForUser":
                kind = "user"  # authorizes on the user whose groups are listed
            elif action == "iam:GetGroup":
                kind = "group"
            elif match := _IAM_RESOURCE_TYPE.match(action):
                kind = match[1].lower()
            else:
                continue
            checked.add(action)
            arn = f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:{kind}/*"
            assert statement["Resource"] == {"Fn::Sub": arn}, f"{action} is not scoped to {kind} ARNs"
    policy_actions = {
        "iam:GetPolicy",
        "iam:GetPolicyVersion",
        "iam:ListEntitiesForPolicy",
        "iam:ListPolicyTags",
        "iam:TagPolicy",
        "iam:UntagPolicy",
    }
    assert checked == iam.POLICY_PERMISSIONS - policy_actions


# The remembered PII classification (`tag_pii_bucket#pii#<bucket arn>` in the outcome table): tag_pii_bucket
# writes it; block_public_s3 and check_sagemaker_encryption only read it. A role narrowed to its own items
# (dynamodb:LeadingKeys) must still let the readers GetItem the `tag_pii_bucket#pii#` items.
PII_RECORD_ACTIONS = {
    "TagPiiBucketFunction": pii_memory.WRITE_PERMISSIONS | pii_memory.READ_PERMISSIONS,
    "BlockPublicS3Function": pii_memory.READ_PERMISSIONS,
    "CheckSageMakerEncryptionFunction": pii_memory.READ_PERMISSIONS,
}


@pytest.mark.parametrize("function_name", sorted(PII_RECORD_ACTIONS))
def test_the_pii_record_is_reachable_by_the_functions_that_use_it(function_name: str) -> None:
    on_table = set()
    for statement in _role_statements(_role_of(FUNCTIONS[function_name])):
        if statement["Resource"] == {"Fn::GetAtt": ["OutcomeTable", "Arn"]}:
            on_table |= set(_as_list(statement["Action"]))
    assert PII_RECORD_ACTIONS[function_name] <= on_table
