"""Rules AWS enforces at deploy or delivery time that moto does not: each test names the AWS page it encodes.

moto accepts any key, queue and topic policy, so a green handler test says nothing about whether CloudFormation
can create the stack or whether a dead letter, an alarm or an alert can actually be delivered. These tests read
template.yaml and check each resource policy against the rule AWS documents for it. Where a rule is a function
(`_alias_problems`, `_alarm_publish_problems`, ...), a second test plants the mistake it exists for and expects
it to be caught, so the rule cannot pass by finding nothing to look at.
"""

from __future__ import annotations

import copy
import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern

from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FIXTURES = ROOT / "tests" / "fixtures"

ACCOUNT_ROOT = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
# The alert key is the stack's own or the one a user brings (parameter AlertKeyArn).
ALERT_KEY = {"Fn::If": ["CreateAlertKey", {"Fn::GetAtt": ["AlertKey", "Arn"]}, {"Ref": "AlertKeyArn"}]}

KEY_POLICY_DEFAULT = "https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html"
ALIAS_ACCESS = "https://docs.aws.amazon.com/kms/latest/developerguide/alias-access.html"
EVENTBRIDGE_DLQ = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html"
EVENTBRIDGE_TARGET_POLICIES = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html"
SNS_KEY_MANAGEMENT = "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html"
CLOUDWATCH_ALARM_SNS = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Notify_Users_Alarm_Changes.html"
# CloudFormation names an alarm <stack name>-<logical id>-<suffix>.
THIS_STACKS_ALARMS = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:${AWS::StackName}-*"
LAMBDA_DESTINATIONS = "https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html"


# --- reading the template -----------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


def _branches(value: Any) -> list[Any]:
    """The values a property can take: both branches of a value-level Fn::If, AWS::NoValue dropped."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [b for branch in value["Fn::If"][1:] for b in _branches(branch) if b != {"Ref": "AWS::NoValue"}]
    return [value]


def _names(value: Any) -> set[str]:
    """Logical ids or parameters a Ref/GetAtt (or each Fn::If branch of one) points at."""
    found = set()
    for branch in _branches(value):
        if isinstance(branch, dict) and "Ref" in branch:
            found.add(branch["Ref"])
        elif isinstance(branch, dict) and "Fn::GetAtt" in branch:
            found.add(branch["Fn::GetAtt"][0])
    return found


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for raw in _as_list(document["Statement"]) for s in _branches(raw) if isinstance(s, dict)]


def _allows(statement: dict[str, Any], action: str) -> bool:
    if statement["Effect"] != "Allow":
        return False
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in _as_list(statement["Action"]))


def _key_statements(key: str) -> list[dict[str, Any]]:
    return _statements(RESOURCES[key]["Properties"]["KeyPolicy"])


def _topic_policy_statements(topic: str) -> list[dict[str, Any]] | None:
    """The topic's resource policy, or None when it keeps SNS's default policy (the account may publish)."""
    policies = [
        p["Properties"]["PolicyDocument"]
        for p in _of_type("AWS::SNS::TopicPolicy").values()
        if {"Ref": topic} in p["Properties"]["Topics"]
    ]
    return [s for document in policies for s in _statements(document)] if policies else None


def _queue_policy_statements(queue: str) -> list[dict[str, Any]]:
    return [
        s
        for p in _of_type("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue} in p["Properties"]["Queues"]
        for s in _statements(p["Properties"]["PolicyDocument"])
    ]


def _source_arns(statement: dict[str, Any]) -> list[Any]:
    condition = statement.get("Condition", {})
    return [
        arn
        for operator in ("ArnEquals", "ArnLike")
        for arn in _as_list(condition.get(operator, {}).get("aws:SourceArn", []))
    ]


def _role_statements(role: str) -> list[dict[str, Any]]:
    return [s for p in RESOURCES[role]["Properties"].get("Policies", []) for s in _statements(p["PolicyDocument"])]


def _rules() -> Iterator[tuple[str, dict[str, Any], str]]:
    """(rule logical id, dead-letter config, target) for every EventBridge rule, SAM's generated ones included."""
    for function_name, function in _of_type("AWS::Serverless::Function").items():
        for event_name, event in function["Properties"]["Events"].items():
            if event["Type"] == "EventBridgeRule":
                # SAM names the AWS::Events::Rule it generates <function logical id><event name>.
                yield f"{function_name}{event_name}", event["Properties"].get("DeadLetterConfig", {}), function_name
    for rule_name, rule in _of_type("AWS::Events::Rule").items():
        for target in rule["Properties"]["Targets"]:
            yield rule_name, target.get("DeadLetterConfig", {}), next(iter(_names(target["Arn"])))


def _alarm_topics() -> dict[str, set[str]]:
    """Alarm logical id -> the topics its actions publish to."""
    return {
        name: {
            topic
            for key in ("AlarmActions", "OKActions", "InsufficientDataActions")
            for a in alarm["Properties"].get(key, [])
            for topic in _names(a)
        }
        for name, alarm in _of_type("AWS::CloudWatch::Alarm").items()
    }


# --- KMS: the default key policy, and alias management ----------------------------------------------------


def test_alert_key_policy_is_exactly_aws_default_key_policy() -> None:
    # KEY_POLICY_DEFAULT: "Allows access to the AWS account and enables IAM policies". The only statement: the
    # functions get their use of the key from their roles, and no service publishes to the alert topic.
    assert _key_statements("AlertKey") == [
        {"Sid": "EnableIamPolicies", "Effect": "Allow", "Principal": ACCOUNT_ROOT, "Action": "kms:*", "Resource": "*"}
    ]


def _alias_problems(key_policy_statements: list[dict[str, Any]]) -> list[str]:
    """ALIAS_ACCESS: creating, re-pointing or deleting an alias needs the action on the key too, and that
    permission must come from the key policy (directly or by delegating to IAM through the account root)."""
    account = [s for s in key_policy_statements if s.get("Principal") == ACCOUNT_ROOT]
    return [
        f"the key policy does not let the account call {action} on the key"
        for action in ("kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias")
        if not any(_allows(s, action) for s in account)
    ]


@pytest.mark.parametrize("alias", sorted(_of_type("AWS::KMS::Alias")))
def test_every_alias_can_be_created_and_deleted_under_its_keys_policy(alias: str) -> None:
    (key,) = _names(RESOURCES[alias]["Properties"]["TargetKeyId"])

    assert _alias_problems(_key_statements(key)) == []


def test_alias_rule_catches_a_hand_picked_action_list_without_alias_management() -> None:
    # The policy the first real `sam deploy` rolled back on: AlertKeyAlias was refused.
    hand_picked = {
        "Effect": "Allow",
        "Principal": ACCOUNT_ROOT,
        "Action": ["kms:DescribeKey", "kms:PutKeyPolicy", "kms:EnableKey", "kms:DisableKey", "kms:ScheduleKeyDeletion"],
        "Resource": "*",
    }

    assert len(_alias_problems([hand_picked])) == 3


# --- AlertKeyArn: a user's own key replaces the stack's ---------------------------------------------------


def _references(value: Any, inside_alert_key_choice: bool = False) -> Iterator[tuple[str, bool]]:
    """Every Ref/GetAtt name in `value`, and whether it sits inside an Fn::If on CreateAlertKey."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item, inside_alert_key_choice)
    elif isinstance(value, dict):
        if "Ref" in value:
            yield value["Ref"], inside_alert_key_choice
        elif "Fn::GetAtt" in value:
            yield value["Fn::GetAtt"][0], inside_alert_key_choice
        elif "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            if "${AlertKey" in text:
                yield "AlertKey", inside_alert_key_choice
        for key, item in value.items():
            if key == "Fn::If" and item[0] == "CreateAlertKey":
                yield from _references(item[1:], True)
            elif key not in ("Ref", "Fn::GetAtt"):
                yield from _references(item, inside_alert_key_choice)


def test_alert_key_arn_brings_a_key_and_then_no_key_or_alias_is_created() -> None:
    parameter = TEMPLATE["Parameters"]["AlertKeyArn"]
    assert parameter["Default"] == ""
    assert TEMPLATE["Conditions"]["CreateAlertKey"] == {"Fn::Equals": [{"Ref": "AlertKeyArn"}, ""]}
    assert RESOURCES["AlertKey"]["Condition"] == "CreateAlertKey"
    assert RESOURCES["AlertKeyAlias"]["Condition"] == "CreateAlertKey"
    assert RESOURCES["AlertTopic"]["Properties"]["KmsMasterKeyId"] == {
        "Fn::If": ["CreateAlertKey", {"Ref": "AlertKey"}, {"Ref": "AlertKeyArn"}]
    }


def test_nothing_outside_the_key_and_its_alias_references_the_stacks_key_unconditionally() -> None:
    # A plain !GetAtt AlertKey.Arn in a role fails the whole deploy when AlertKeyArn is set: the key does not exist.
    unconditional = [
        name
        for name, resource in RESOURCES.items()
        if name not in ("AlertKey", "AlertKeyAlias")
        for referenced, conditional in _references(resource)
        if referenced in ("AlertKey", "AlertKeyAlias") and not conditional
    ]
    assert unconditional == []


# --- EventBridge: each rule may send to its dead-letter queue ---------------------------------------------


@pytest.mark.parametrize(("rule", "dead_letter", "target"), list(_rules()), ids=[r[0] for r in _rules()])
def test_every_rule_may_send_to_its_dead_letter_queue(rule: str, dead_letter: dict[str, Any], target: str) -> None:
    # EVENTBRIDGE_DLQ: EventBridge needs sqs:SendMessage on the queue from the queue's policy, conditioned on the
    # rule's ARN; a queue encrypted with a customer managed key would also need a key grant (ours use SQS SSE).
    (queue,) = _names(dead_letter["Arn"])
    properties = RESOURCES[queue]["Properties"]
    assert properties.get("SqsManagedSseEnabled") is True and "KmsMasterKeyId" not in properties
    allowed_rules = {
        name
        for s in _queue_policy_statements(queue)
        if s["Principal"] == {"Service": "events.amazonaws.com"} and _allows(s, "sqs:SendMessage")
        for arn in _source_arns(s)
        for name in _names(arn)
    }
    assert rule in allowed_rules, f"{queue}'s policy does not let {rule} send to it"


# --- Lambda: each function may send to its on-failure destination -----------------------------------------


@pytest.mark.parametrize(
    "function",
    sorted(name for name, f in _of_type("AWS::Serverless::Function").items() if "EventInvokeConfig" in f["Properties"]),
)
def test_every_function_role_may_send_to_its_on_failure_destination(function: str) -> None:
    # LAMBDA_DESTINATIONS: Lambda sends the invocation record with the function's execution role, so that role
    # needs sqs:SendMessage on the destination queue (a queue policy does not help).
    properties = RESOURCES[function]["Properties"]
    (queue,) = _names(properties["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"])
    (role,) = _names(properties["Role"])
    granted = [
        s
        for s in _role_statements(role)
        if _allows(s, "sqs:SendMessage") and {"Fn::GetAtt": [queue, "Arn"]} in _as_list(s["Resource"])
    ]
    assert granted, f"{role} may not send failed invocations to {queue}"


# --- SNS: publishers may use the topic's key ------------------------------------------------------------------


def _publishers(topic: str) -> list[str]:
    return sorted(
        role
        for role in _of_type("AWS::IAM::Role")
        if any(_allows(s, "sns:Publish") and {"Ref": topic} in _as_list(s["Resource"]) for s in _role_statements(role))
    )


@pytest.mark.parametrize("role", _publishers("AlertTopic"))
def test_every_role_that_publishes_alerts_may_use_the_alert_key_through_sns(role: str) -> None:
    # SNS_KEY_MANAGEMENT: a publisher to an encrypted topic needs kms:GenerateDataKey* and kms:Decrypt on the
    # topic's key. The key policy delegates to IAM (test above), so the role's own statement is what grants it.
    key_statements = [s for s in _role_statements(role) if s["Resource"] == ALERT_KEY]
    assert any(_allows(s, "kms:GenerateDataKey") for s in key_statements)
    assert any(_allows(s, "kms:Decrypt") for s in key_statements)
    for statement in key_statements:
        assert statement["Condition"]["StringEquals"]["kms:ViaService"] == {
            "Fn::Sub": "sns.${AWS::Region}.amazonaws.com"
        }


def test_the_alert_topic_has_publishers() -> None:
    assert len(_publishers("AlertTopic")) == len(_of_type("AWS::Serverless::Function"))


# --- CloudWatch alarms and EventBridge rules may publish to their topics ---------------------------------


def _service_publish_problems(topic: dict[str, Any], topic_name: str, service: str) -> list[str]:
    """What stops `service` from publishing to the topic: its topic policy, or its encryption key.

    SNS_KEY_MANAGEMENT ("compatibility between event sources from AWS services and encrypted topics"): an AWS
    service publishing to an encrypted topic needs kms:Decrypt and kms:GenerateDataKey* in the key's policy. SNS's
    AWS-managed key (alias/aws/sns) has a policy nobody can change, so it can never allow that.
    """
    problems = []
    statements = _topic_policy_statements(topic_name)
    if statements is not None and not any(
        s.get("Principal") == {"Service": service} and _allows(s, "sns:Publish") for s in statements
    ):
        problems.append(f"{topic_name}'s policy does not let {service} publish")
    for key in _branches(topic.get("Properties", {}).get("KmsMasterKeyId")):
        if key is None:
            continue
        if isinstance(key, str) and "alias/aws/sns" in key:
            problems.append(f"{topic_name} uses SNS's AWS-managed key: {service} can never use it")
            continue
        names = _names(key) & set(RESOURCES)
        if not names:
            problems.append(f"{topic_name} uses a key from outside the stack: its policy cannot be checked here")
        for name in names:
            key_statements = [s for s in _key_statements(name) if s.get("Principal") == {"Service": service}]
            for action in ("kms:Decrypt", "kms:GenerateDataKey"):
                if not any(_allows(s, action) for s in key_statements):
                    problems.append(f"{name}'s policy does not give {service} {action}")
    return problems


@pytest.mark.parametrize("alarm", sorted(_alarm_topics()))
def test_every_alarm_may_publish_to_its_topics(alarm: str) -> None:
    # CLOUDWATCH_ALARM_SNS with SNS_KEY_MANAGEMENT. And the topic policy lets this stack's alarms in by ARN.
    for topic in _alarm_topics()[alarm]:
        assert _service_publish_problems(RESOURCES[topic], topic, "cloudwatch.amazonaws.com") == []
        statements = _topic_policy_statements(topic) or []
        alarm_arns = {
            json.dumps(arn)  # one statement, scoped to this stack's alarm names
            for s in statements
            if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
            for arn in _source_arns(s)
        }
        assert alarm_arns == {json.dumps({"Fn::Sub": THIS_STACKS_ALARMS})}


def test_alarm_rule_catches_the_alert_topic_and_the_aws_managed_key() -> None:
    # Alarms used to publish to the alert topic: its key grants no service, so they would never arrive.
    assert _service_publish_problems(RESOURCES["AlertTopic"], "AlertTopic", "cloudwatch.amazonaws.com") == [
        "AlertKey's policy does not give cloudwatch.amazonaws.com kms:Decrypt",
        "AlertKey's policy does not give cloudwatch.amazonaws.com kms:GenerateDataKey",
        "AlertTopic uses a key from outside the stack: its policy cannot be checked here",
    ]
    aws_managed = {"Type": "AWS::SNS::Topic", "Properties": {"KmsMasterKeyId": "alias/aws/sns"}}
    assert _service_publish_problems(aws_managed, "Planted", "cloudwatch.amazonaws.com") == [
        "Planted uses SNS's AWS-managed key: cloudwatch.amazonaws.com can never use it"
    ]


@pytest.mark.parametrize(
    ("rule", "target"), [(r, t) for r, _, t in _rules() if RESOURCES[t]["Type"] == "AWS::SNS::Topic"]
)
def test_every_rule_may_publish_to_its_topic_target(rule: str, target: str) -> None:
    # EVENTBRIDGE_TARGET_POLICIES, "Amazon SNS permissions": the topic policy allows events.amazonaws.com,
    # conditioned on the rule's ARN; an encrypted topic's key would need an unconditioned grant too.
    assert _service_publish_problems(RESOURCES[target], target, "events.amazonaws.com") == []
    allowed = {
        name
        for s in _topic_policy_statements(target) or []
        if s.get("Principal") == {"Service": "events.amazonaws.com"}
        for arn in _source_arns(s)
        for name in _names(arn)
    }
    assert rule in allowed


# --- the operations channel: ML Warden's own health, independent of the alert topic and its key --------------


def test_every_alarm_reports_to_the_operations_topic_only() -> None:
    assert _alarm_topics()
    assert all(topics == {"OperationsTopic"} for topics in _alarm_topics().values()), _alarm_topics()


def test_operations_topic_depends_on_neither_the_alert_topic_nor_its_key() -> None:
    topic = RESOURCES["OperationsTopic"]
    # Unencrypted on purpose (explained in its checkov skip): a second key could be disabled just like the first.
    assert "KmsMasterKeyId" not in topic["Properties"]
    assert "CKV_AWS_26" in {skip["id"] for skip in topic["Metadata"]["checkov"]["skip"]}
    assert not {"AlertTopic", "AlertKey", "AlertKeyArn"} & {n for n, _ in _references(topic)}
    for statement in _topic_policy_statements("OperationsTopic") or []:
        assert not {"AlertTopic", "AlertKey"} & {n for n, _ in _references(statement)}


def test_operations_email_subscribes_to_the_operations_topic() -> None:
    parameter = TEMPLATE["Parameters"]["OperationsEmail"]
    assert parameter["Default"] == ""
    subscription = RESOURCES["OperationsEmailSubscription"]
    assert subscription["Condition"] == "HasOperationsEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "OperationsTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "OperationsEmail"},
    }
    assert TEMPLATE["Outputs"]["OperationsTopicArn"]["Value"] == {"Ref": "OperationsTopic"}


def _alarms_on(namespace: str, metric: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in _of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == namespace and a["Properties"]["MetricName"] == metric
    ]


def test_every_dead_letter_queue_has_a_depth_alarm() -> None:
    watched = {
        name
        for alarm in _alarms_on("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        for d in alarm["Dimensions"]
        for name in _names(d["Value"])
    }
    # A queue with a redrive policy is a work queue (the sweep's): its failures go to a dead-letter queue,
    # and the depth of that one is alarmed.
    dead_letter = {name for name, q in _of_type("AWS::SQS::Queue").items() if "RedrivePolicy" not in q["Properties"]}
    assert watched == dead_letter


def test_failed_sns_deliveries_of_alerts_are_alarmed() -> None:
    (alarm,) = _alarms_on("AWS/SNS", "NumberOfNotificationsFailed")
    assert alarm["Dimensions"] == [{"Name": "TopicName", "Value": {"Fn::GetAtt": ["AlertTopic", "TopicName"]}}]
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/alertkey-0000"


def _key_state_rule() -> dict[str, Any]:
    return RESOURCES["AlertKeyStateRule"]["Properties"]


def _pattern_for(key_arn_branch: int) -> Any:
    """The rule's pattern with the alert key resolved to KEY_ARN (branch 1: the stack's key, 2: AlertKeyArn)."""
    pattern = copy.deepcopy(_key_state_rule()["EventPattern"])
    (choice,) = pattern["detail"]["responseElements"]["keyId"]
    assert choice == ALERT_KEY
    assert choice["Fn::If"][key_arn_branch] in ({"Fn::GetAtt": ["AlertKey", "Arn"]}, {"Ref": "AlertKeyArn"})
    pattern["detail"]["responseElements"]["keyId"] = [KEY_ARN]
    return EventPattern.load(json.dumps(pattern))


def _kms_event(event_name: str, key_arn: str = KEY_ARN) -> dict[str, Any]:
    event = json.loads((FIXTURES / "kms" / "disable-key.json").read_text())
    event["detail"]["eventName"] = event_name
    event["detail"]["responseElements"]["keyId"] = key_arn
    event["detail"]["resources"][0]["ARN"] = key_arn
    return event


@pytest.mark.parametrize("key_arn_branch", [1, 2], ids=["stack key", "AlertKeyArn"])
@pytest.mark.parametrize(
    ("event_name", "key_arn", "reported"),
    [
        ("DisableKey", KEY_ARN, True),
        ("ScheduleKeyDeletion", KEY_ARN, True),
        ("DisableKey", "arn:aws:kms:us-east-1:123456789012:key/another-key", False),
        ("EnableKey", KEY_ARN, False),
        ("CancelKeyDeletion", KEY_ARN, False),
    ],
)
def test_alert_key_disabled_or_scheduled_for_deletion_is_reported(
    key_arn_branch: int, event_name: str, key_arn: str, reported: bool
) -> None:
    # The caller may name the key by alias (the fixture does): the rule matches the ARN CloudTrail records.
    assert _pattern_for(key_arn_branch).matches_event(_kms_event(event_name, key_arn)) is reported


def test_key_state_rule_reports_to_operations_with_retries_and_a_dead_letter_queue() -> None:
    (target,) = _key_state_rule()["Targets"]
    assert target["Arn"] == {"Ref": "OperationsTopic"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert _names(target["DeadLetterConfig"]["Arn"]) == {"OperationsDeadLetterQueue"}
    # No RoleArn: EVENTBRIDGE_TARGET_POLICIES says SNS targets are authorised by the topic policy alone.
    assert "RoleArn" not in target


def test_key_state_message_takes_only_fields_the_event_has() -> None:
    # The topic is not KMS-encrypted: the message carries the key, the call, the actor and the time, not the record.
    transformer = _key_state_rule()["Targets"][0]["InputTransformer"]
    event = _kms_event("ScheduleKeyDeletion")
    for path in transformer["InputPathsMap"].values():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        assert isinstance(value, str) and value
    assert set(transformer["InputPathsMap"]) == {"eventName", "actor", "key", "time"}
    for placeholder in transformer["InputPathsMap"]:
        assert f"<{placeholder}>" in transformer["InputTemplate"]
