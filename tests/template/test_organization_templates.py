"""What organization mode's templates promise: member.yaml deployable by StackSets, the same patterns and
permissions as the hub's functions, a hub bus that admits only the organization, single-account by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden import clients
from mlwarden_cli import org_templates
from mlwarden_cli.template import load_document, load_template
from tests.template.test_template import CHECK_ACTIONS, COMMON_ACTIONS

ROOT = Path(__file__).resolve().parents[2]
HUB = load_document(ROOT / "template.yaml")
MEMBER = load_document(ROOT / "member.yaml")
HUB_RESOURCES: dict[str, Any] = HUB["Resources"]
MEMBER_RESOURCES: dict[str, Any] = MEMBER["Resources"]
FUNCTIONS = {n: r for n, r in HUB_RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
# Each check's optional writes, granted under a parameter (test_template checks the hub's side of them).
OPTIONAL_ACTIONS = {
    "TagPiiBucketFunction": {"s3:PutBucketPublicAccessBlock", "s3:GetObjectTagging", "s3:PutObjectTagging"},
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for statement in _as_list(document["Statement"]):
        if "Fn::If" in statement:
            found += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
        else:
            found.append(statement)
    return found


def _hub_patterns() -> dict[tuple[str, str], Any]:
    return {
        (function, event): spec["Properties"]["Pattern"]
        for function, resource in FUNCTIONS.items()
        for event, spec in resource["Properties"]["Events"].items()
        if spec["Type"] == "EventBridgeRule"
    }


def test_member_yaml_and_the_hubs_organization_rules_are_generated_from_template_yaml() -> None:
    # A change to a function's rule or role that is not carried to member.yaml fails here:
    # python -m mlwarden_cli.org_templates rewrites both.
    assert org_templates.main(["--check"]) == 0


# --- member.yaml: what StackSets can deploy, and nothing a member could alter ------------------------------


def test_member_template_is_plain_cloudformation_with_no_function_and_no_nested_stack() -> None:
    # Service-managed StackSets deploy neither transformed (SAM) templates nor ones that need
    # CAPABILITY_AUTO_EXPAND: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/stacksets-concepts.html
    assert "Transform" not in MEMBER
    types = {resource["Type"] for resource in MEMBER_RESOURCES.values()}
    assert types == {"AWS::IAM::Role", "AWS::Events::Rule"}


def test_member_template_passes_cfn_lint() -> None:
    from cfnlint.api import lint_file  # noqa: PLC0415 - cfn-lint loads its specs on import: this test only

    assert [str(match) for match in lint_file(ROOT / "member.yaml")] == []


def test_no_member_statement_has_a_wildcard_action() -> None:
    for name, resource in MEMBER_RESOURCES.items():
        properties = resource["Properties"]
        documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
        documents += [properties["AssumeRolePolicyDocument"]] if "AssumeRolePolicyDocument" in properties else []
        for document in documents:
            for statement in _statements(document):
                for action in _as_list(statement["Action"]):
                    assert "*" not in action, f"{name}: {action}"


def test_every_hub_rule_is_forwarded_by_a_member_rule_with_the_same_pattern() -> None:
    forwarded = {
        name: rule["Properties"]["EventPattern"]
        for name, rule in MEMBER_RESOURCES.items()
        if rule["Type"] == "AWS::Events::Rule"
    }
    expected = {f"{function}{event}ToHub": pattern for (function, event), pattern in _hub_patterns().items()}
    assert forwarded == expected


def test_member_rules_send_to_the_hub_bus_through_a_role_that_may_only_put_events_there() -> None:
    # EventBridge recommends a role on a rule whose target is an event bus in another account:
    # https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-bus-perms.html
    role = MEMBER_RESOURCES["ForwardToHubRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    [statement] = [s for p in role["Policies"] for s in _statements(p["PolicyDocument"])]
    assert (statement["Action"], statement["Resource"]) == ("events:PutEvents", {"Ref": "HubEventBusArn"})
    for rule in (r for r in MEMBER_RESOURCES.values() if r["Type"] == "AWS::Events::Rule"):
        [target] = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Ref": "HubEventBusArn"}
        assert target["RoleArn"] == {"Fn::GetAtt": ["ForwardToHubRole", "Arn"]}
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] >= 3600


def test_iam_events_are_forwarded_from_us_east_1_only_and_nothing_from_the_hubs_home_region() -> None:
    # IAM's CloudTrail events reach EventBridge in us-east-1 only:
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/cloudtrail-integration.html
    conditions = MEMBER["Conditions"]
    assert conditions["ForwardGlobalEvents"] == {
        "Fn::And": [{"Condition": "Forward"}, {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}]
    }
    assert conditions["Forward"] == {"Fn::Not": [{"Condition": "IsHubHome"}]}
    for name, rule in MEMBER_RESOURCES.items():
        if rule["Type"] != "AWS::Events::Rule":
            continue
        global_source = "aws.iam" in rule["Properties"]["EventPattern"]["source"]
        assert rule["Condition"] == ("ForwardGlobalEvents" if global_source else "Forward"), name


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_the_member_role_holds_exactly_each_checks_permissions(function: str) -> None:
    role = MEMBER_RESOURCES["MemberRole"]["Properties"]
    check = FUNCTIONS[function]["Properties"]["CodeUri"].rstrip("/").rsplit("/", 1)[-1]
    [policy] = [p for p in role["Policies"] if p["PolicyName"] == check]
    granted = {a for s in _statements(policy["PolicyDocument"]) for a in _as_list(s["Action"])}
    expected = (CHECK_ACTIONS[function] | OPTIONAL_ACTIONS.get(function, set())) - COMMON_ACTIONS
    assert granted == expected


def test_the_member_role_grants_only_what_the_checks_call() -> None:
    role = MEMBER_RESOURCES["MemberRole"]["Properties"]
    granted = {a for p in role["Policies"] for s in _statements(p["PolicyDocument"]) for a in _as_list(s["Action"])}
    assert granted <= set().union(*CHECK_ACTIONS.values(), *OPTIONAL_ACTIONS.values())
    assert not granted & COMMON_ACTIONS  # tables, topic, keys, logs stay with the hub's function roles


def test_the_member_role_trusts_only_the_hubs_function_roles_and_only_ml_wardens_sessions() -> None:
    role = MEMBER_RESOURCES["MemberRole"]
    assert role["Properties"]["RoleName"] == {"Ref": "MemberRoleName"}
    assert MEMBER["Parameters"]["MemberRoleName"]["Default"] == HUB["Parameters"]["MemberRoleName"]["Default"]
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:root"}}
    assert set(trust["Action"]) == clients.MEMBER_ROLE_PERMISSIONS
    assert trust["Condition"]["ArnEquals"] == {"aws:PrincipalArn": {"Ref": "TrustedRoleArns"}}
    # The session name and source identity the client factory sets are the ones the trust requires.
    assert trust["Condition"]["StringLike"] == {
        "sts:RoleSessionName": f"{clients.SESSION_PREFIX}*",
        "sts:SourceIdentity": clients.SOURCE_IDENTITY,
    }
    assert clients.session_name("check_sagemaker_encryption", "x" * 36).startswith(clients.SESSION_PREFIX)


def test_the_member_role_exists_once_per_account_and_not_in_the_hub() -> None:
    assert MEMBER_RESOURCES["MemberRole"]["Condition"] == "CreateMemberRole"
    condition = json.dumps(MEMBER["Conditions"]["CreateMemberRole"])
    assert "RoleRegion" in condition and "HubAccountId" in condition


# --- the hub: organization bus and its rules -----------------------------------------------------------------


def test_organization_mode_is_off_by_default() -> None:
    template = load_template(ROOT / "template.yaml")
    assert HUB["Parameters"]["OrganizationId"]["Default"] == ""
    assert template.condition_holds("OrganizationMode") is False
    for name in ("OrganizationEventBus", "OrganizationEventBusPolicy"):
        assert HUB_RESOURCES[name]["Condition"] == "OrganizationMode"


def test_the_hub_bus_admits_only_the_organization() -> None:
    # aws:PrincipalOrgID on an event bus policy: https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-bus-perms.html
    policy = HUB_RESOURCES["OrganizationEventBusPolicy"]["Properties"]
    assert policy["EventBusName"] == {"Ref": "OrganizationEventBus"}
    statement = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    assert [r for r in HUB_RESOURCES.values() if r["Type"] == "AWS::Events::EventBusPolicy"] == [
        HUB_RESOURCES["OrganizationEventBusPolicy"]
    ]


def test_every_hub_rule_has_a_twin_on_the_organization_bus_feeding_the_same_function() -> None:
    for (function, event), pattern in _hub_patterns().items():
        rule = HUB_RESOURCES[f"{function}{event}FromOrganization"]
        assert rule["Condition"] == "OrganizationMode"
        properties = rule["Properties"]
        assert properties["EventBusName"] == {"Ref": "OrganizationEventBus"}
        assert properties["EventPattern"] == pattern
        [target] = properties["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [function, "Arn"]}
        sam_event = FUNCTIONS[function]["Properties"]["Events"][event]["Properties"]
        assert target["RetryPolicy"] == sam_event["RetryPolicy"]
        assert target["DeadLetterConfig"] == sam_event["DeadLetterConfig"]
        permission = HUB_RESOURCES[f"{function}{event}FromOrganizationPermission"]["Properties"]
        assert permission["SourceArn"] == {"Fn::GetAtt": [f"{function}{event}FromOrganization", "Arn"]}


def test_functions_may_assume_member_roles_only_in_organization_mode_and_only_in_the_organization() -> None:
    for function in FUNCTIONS.values():
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        raw = HUB_RESOURCES[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        [assume] = [
            s["Fn::If"] for s in raw if "Fn::If" in s and "sts:AssumeRole" in _as_list(s["Fn::If"][1].get("Action", []))
        ]
        condition, statement, otherwise = assume
        assert (condition, otherwise) == ("OrganizationMode", {"Ref": "AWS::NoValue"})
        assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"}
        assert statement["Condition"] == {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}


def test_member_trusted_role_arns_output_names_every_function_role() -> None:
    listed = HUB["Outputs"]["MemberTrustedRoleArns"]["Value"]["Fn::Join"][1]
    roles = {item["Fn::GetAtt"][0] for item in listed}
    assert roles == {function["Properties"]["Role"]["Fn::GetAtt"][0] for function in FUNCTIONS.values()}


def test_functions_get_the_member_role_name_and_the_organization() -> None:
    variables = HUB["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["MEMBER_ROLE_NAME"] == {"Ref": "MemberRoleName"}
    assert variables["ORGANIZATION_ID"] == {"Ref": "OrganizationId"}
    assert HUB["Parameters"]["MemberRoleName"]["Default"] == "MLWardenMember"
