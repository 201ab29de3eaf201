"""What template.yaml promises for watch_inputs: its rules match the check's calls, the canary is scheduled,
the liveness alarm cannot stay quiet, and a stack outside us-east-1 says it sees no IAM event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlwarden import liveness
from mlwarden.checks import watch_inputs as watch
from mlwarden_cli.template import load_document, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTION = RESOURCES["WatchInputsFunction"]["Properties"]
EVENTS = FUNCTION["Events"]
ROUTING = load_template(ROOT / "template.yaml")


def _statements() -> list[tuple[str | None, dict[str, Any]]]:
    """(condition or None, statement) for every statement of the function's role."""
    found: list[tuple[str | None, dict[str, Any]]] = []
    for policy in RESOURCES["WatchInputsRole"]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                condition, granted, _ = statement["Fn::If"]
                found.append((condition, granted))
            else:
                found.append((None, statement))
    return found


def _granted(action: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (c, s) for c, s in _statements() if action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]


def test_every_watched_call_is_in_a_rule_and_every_rule_call_is_watched() -> None:
    names: set[str] = set()
    for event in EVENTS.values():
        if event["Type"] != "EventBridgeRule":
            continue
        pattern = event["Properties"]["Pattern"]
        assert pattern["detail"]["errorCode"] == [{"exists": False}], "a refused call changed nothing"
        for name in pattern["detail"]["eventName"]:
            names.add(name if isinstance(name, str) else name["prefix"].removesuffix("20"))
    watched = (
        watch.TRAIL_CALLS | watch.MACIE_CALLS | watch.RULE_CALLS | watch.FUNCTION_CALLS | watch.ROLE_CALLS
    ) | watch.CANARY_CALLS
    assert names == watched


def test_the_canary_is_a_function_with_a_schedule_event_whose_input_is_a_tick() -> None:
    [schedule] = [e for e in EVENTS.values() if e["Type"] == "ScheduleV2"]
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == {"Fn::Sub": "rate(${LivenessCanaryMinutes} minutes)"}
    assert liveness.is_tick(json.loads(properties["Input"]))
    assert properties["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["WatchInputsDeadLetterQueue", "Arn"]}
    assert TEMPLATE["Parameters"]["LivenessCanaryMinutes"]["Default"] == 15


def test_the_canary_changes_the_resources_its_rules_wait_for() -> None:
    environment = FUNCTION["Environment"]["Variables"]
    parameter = RESOURCES["LivenessCanaryParameter"]["Properties"]["Name"]
    assert environment["CANARY_PARAMETER"] == parameter == {"Fn::Sub": "/${AWS::StackName}/liveness-canary"}
    arrived = EVENTS["LivenessCanaryArrived"]["Properties"]["Pattern"]["detail"]["requestParameters"]["name"]
    assert arrived == [parameter]
    role_name = RESOURCES["LivenessCanaryRole"]["Properties"]["RoleName"]
    assert environment["CANARY_ROLE_NAME"] == {"Fn::If": ["IsUsEast1", role_name, ""]}
    assert EVENTS["IamLivenessCanaryArrived"]["Properties"]["Pattern"]["detail"]["requestParameters"] == {
        "roleName": [role_name]
    }
    assert environment["OWN_NAME_PREFIX"] == {"Fn::Sub": "${AWS::StackName}-"}


def test_the_canary_role_can_do_nothing_and_exists_only_where_iam_events_arrive() -> None:
    role = RESOURCES["LivenessCanaryRole"]
    assert role["Condition"] == "IsUsEast1"
    assert "Policies" not in role["Properties"]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert not [
        r
        for r in RESOURCES.values()
        if r["Type"] == "AWS::IAM::RolePolicy" and r["Properties"]["RoleName"] == {"Ref": "LivenessCanaryRole"}
    ]


def test_the_canary_may_change_only_its_own_resources() -> None:
    [(condition, ssm)] = _granted("ssm:PutParameter")
    assert condition is None
    parameter = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${AWS::StackName}"
    assert ssm["Resource"] == {"Fn::Sub": f"{parameter}/liveness-canary"}
    [(condition, iam)] = _granted("iam:UpdateRole")
    assert condition == "IsUsEast1"
    assert iam["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${AWS::StackName}-liveness-canary"
    }


def test_own_rules_may_be_enabled_only_if_they_are_the_stacks() -> None:
    [(condition, statement)] = _granted("events:EnableRule")
    assert condition is None
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/${AWS::StackName}-*"
    }


def test_switching_macie_on_is_granted_only_when_asked() -> None:
    for action in watch.MACIE_REENABLE_PERMISSIONS:
        assert [c for c, _ in _granted(action)] == ["ReenableMacieEnabled"]
    assert TEMPLATE["Parameters"]["ReenableMacie"]["Default"] == "false"


def test_the_liveness_alarm_fires_when_nothing_arrives_for_the_window_whatever_broke() -> None:
    # Missing data breaching: a dead canary, schedule, rule, function or trail publishes nothing at all.
    for name, metric in (("LivenessAlarm", "CanaryArrived"), ("IamLivenessAlarm", "IamCanaryArrived")):
        alarm = RESOURCES[name]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("MLWarden", metric)
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {"check": watch.CHECK, "service": "mlwarden"}
        assert alarm["Period"] == 60
        assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == {"Ref": "LivenessWindowMinutes"}
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 1)
        assert alarm["TreatMissingData"] == "breaching"
        assert alarm["AlarmActions"] == [{"Ref": "OperationsTopic"}]
    assert RESOURCES["IamLivenessAlarm"]["Condition"] == "IsUsEast1"
    window = TEMPLATE["Parameters"]["LivenessWindowMinutes"]
    # CloudWatch: EvaluationPeriods x Period at most one day.
    assert (window["Default"], window["MaxValue"] * 60 <= 86_400) == (30, True)


def test_a_stack_outside_us_east_1_says_it_sees_no_iam_event() -> None:
    value = TEMPLATE["Outputs"]["IamEventsArrive"]["Value"]["Fn::If"]
    assert value[0] == "IsUsEast1"
    assert TEMPLATE["Conditions"]["IsUsEast1"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    assert value[1].startswith("yes")
    assert value[2]["Fn::Sub"].startswith("NO: ${AWS::Region} receives no IAM CloudTrail events")


def test_own_role_changes_reach_watch_inputs_only_for_the_stacks_roles() -> None:
    # The pattern filters by the stack's prefix: other roles' policy changes stay flag_wildcard_iam's alone.
    record = {
        "eventSource": "iam.amazonaws.com",
        "eventName": "DetachRolePolicy",
        "requestParameters": {"roleName": "team-role", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
    }
    event = {"source": "aws.iam", "detail-type": "AWS API Call via CloudTrail", "detail": record}
    assert "WatchInputsFunction" not in {f.logical_id for f in ROUTING.route(event)}
    record["requestParameters"]["roleName"] = "mlwarden-BlockPublicS3Role-ABC"
    assert "WatchInputsFunction" in {f.logical_id for f in ROUTING.route(event)}
