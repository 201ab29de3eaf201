"""What template.yaml promises about the deployed sweep: when it starts, how it fans out, who may do what."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mlwarden import fanout, sweep_progress
from mlwarden.fanout import DEPLOYED_SWEEP_CHECKS
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
CHECK_FUNCTIONS = {
    name: r
    for name, r in RESOURCES.items()
    if r["Type"] == "AWS::Serverless::Function"
    and str(r["Properties"]["CodeUri"]).strip("/").rsplit("/", 1)[-1] in DEPLOYED_SWEEP_CHECKS
}
PLANNER = RESOURCES["SweepPlannerFunction"]["Properties"]
GLOBAL_TIMEOUT = TEMPLATE["Globals"]["Function"]["Timeout"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(role: str) -> list[dict[str, Any]]:
    found = []
    for policy in RESOURCES[role]["Properties"]["Policies"]:
        for statement in _as_list(policy["PolicyDocument"]["Statement"]):
            if "Fn::If" in statement:
                found += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
            else:
                found.append(statement)
    return found


def _granted(role: str, action: str) -> list[Any]:
    return [
        resource
        for s in _role_statements(role)
        if s["Effect"] == "Allow" and action in _as_list(s["Action"])
        for resource in _as_list(s["Resource"])
    ]


def _check_of(function: dict[str, Any]) -> str:
    return str(function["Properties"]["CodeUri"]).strip("/").rsplit("/", 1)[-1]


def _queue_of(function_name: str) -> str:
    event = CHECK_FUNCTIONS[function_name]["Properties"]["Events"]["SweepPages"]
    assert event["Type"] == "SQS"
    return str(event["Properties"]["Queue"]["Fn::GetAtt"][0])


# --- when ---------------------------------------------------------------------------------------------------


def test_the_sweep_runs_daily_by_default_on_a_parameter() -> None:
    parameter = TEMPLATE["Parameters"]["SweepSchedule"]
    assert parameter["Default"] == "rate(1 day)"
    assert re.fullmatch(parameter["AllowedPattern"], "cron(0 3 * * ? *)")
    assert not re.fullmatch(parameter["AllowedPattern"], "daily")
    schedule = RESOURCES["SweepStartSchedule"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    assert schedule["Properties"]["ScheduleExpression"] == {"Ref": "SweepSchedule"}
    assert schedule["Properties"]["State"] == "ENABLED"


def test_the_schedule_starts_a_sweep_named_by_its_scheduled_time_with_retries_and_a_dead_letter_queue() -> None:
    target = RESOURCES["SweepStartSchedule"]["Properties"]["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["SweepPlanQueue", "Arn"]}
    # Scheduler replaces the keyword with the run's time: a retried delivery names the same sweep.
    # https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-context-attributes.html
    import json  # noqa: PLC0415

    start = json.loads(target["Input"])
    assert start["id"] == "<aws.scheduler.scheduled-time>"
    assert fanout.sweep_id_of_start({"start": "schedule", "id": "2026-01-01T03:00:00Z"}) == "sweep-2026-01-01T03-00-00Z"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]}
    # Scheduler sends to its target and its dead-letter queue with the schedule's execution role.
    role = target["RoleArn"]["Fn::GetAtt"][0]
    [trust] = RESOURCES[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert sorted(str(r) for r in _granted(role, "sqs:SendMessage")) == sorted(
        str({"Fn::GetAtt": [q, "Arn"]}) for q in ("SweepPlanQueue", "SweepDeadLetterQueue")
    )


def test_day_one_is_swept_when_this_stack_is_created() -> None:
    # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/event-detail-stack-status-change.html
    rule = RESOURCES["SweepOnStackCreatedRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.cloudformation"],
        "detail-type": ["CloudFormation Stack Status Change"],
        "detail": {"stack-id": [{"Ref": "AWS::StackId"}], "status-details": {"status": ["CREATE_COMPLETE"]}},
    }
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["SweepPlanQueue", "Arn"]}
    assert target["InputTransformer"]["InputPathsMap"] == {"id": "$.id"}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]}
    # EventBridge may send to an SQS target only if the queue's policy lets the rule do so.
    # https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions
    [allow] = [
        s
        for s in RESOURCES["SweepPlanQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Condition"]["ArnEquals"]["aws:SourceArn"] == [{"Fn::GetAtt": ["SweepOnStackCreatedRule", "Arn"]}]


# --- the fan-out ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_each_check_function_consumes_its_own_queue_with_a_concurrency_limit_and_partial_failures(
    function_name: str,
) -> None:
    # https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html (MaximumConcurrency, at least 2)
    # https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html (ReportBatchItemFailures)
    event = CHECK_FUNCTIONS[function_name]["Properties"]["Events"]["SweepPages"]["Properties"]
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "SweepConcurrency"}}
    assert TEMPLATE["Parameters"]["SweepConcurrency"]["MinValue"] >= 2
    assert event["BatchSize"] == 1
    queue = RESOURCES[_queue_of(function_name)]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    # Lambda advises a visibility timeout of six times the function's timeout for an SQS event source.
    timeout = CHECK_FUNCTIONS[function_name]["Properties"].get("Timeout", GLOBAL_TIMEOUT)
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 2
    # A page starts only with time to finish it, well within the timeout.
    assert timeout * 1000 > fanout.WORKER_MARGIN_MS


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_each_check_role_receives_from_its_own_queue_only(function_name: str) -> None:
    role = CHECK_FUNCTIONS[function_name]["Properties"]["Role"]["Fn::GetAtt"][0]
    for action in fanout.RECEIVE_PERMISSIONS:
        assert _granted(role, action) == [{"Fn::GetAtt": [_queue_of(function_name), "Arn"]}]
    assert not any(
        "SweepQueue" in str(resource) or "SweepPlanQueue" in str(resource)
        for resource in _granted(role, "sqs:SendMessage")
    )


def test_the_planner_sends_each_checks_pages_to_that_checks_queue() -> None:
    text = PLANNER["Environment"]["Variables"]["SWEEP_WORK_QUEUES"]["Fn::Sub"]
    named = dict(re.findall(r'"([a-z_0-9]+)": "\$\{([A-Za-z0-9]+)\}"', text))
    expected = {_check_of(f): _queue_of(name) for name, f in CHECK_FUNCTIONS.items()}
    assert named == expected
    assert set(named) == set(DEPLOYED_SWEEP_CHECKS)
    assert PLANNER["Environment"]["Variables"]["SWEEP_PLAN_QUEUE"] == {"Ref": "SweepPlanQueue"}
    sends = _granted("SweepPlannerRole", "sqs:SendMessage")
    assert sorted(str(r) for r in sends) == sorted(
        str({"Fn::GetAtt": [q, "Arn"]}) for q in [*expected.values(), "SweepPlanQueue"]
    )
    assert {"sqs:SendMessage"} == fanout.SEND_PERMISSIONS


def test_the_planner_lists_within_its_timeout_and_consumes_only_the_plan_queue() -> None:
    assert PLANNER["Timeout"] * 1000 > 2 * fanout.PLANNER_MARGIN_MS
    [event] = PLANNER["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["SweepPlanQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert RESOURCES["SweepPlanQueue"]["Properties"]["VisibilityTimeout"] >= 6 * PLANNER["Timeout"]
    for action in fanout.RECEIVE_PERMISSIONS:
        assert _granted("SweepPlannerRole", action) == [{"Fn::GetAtt": ["SweepPlanQueue", "Arn"]}]


def test_a_page_fits_one_sqs_message_and_a_batch_one_send() -> None:
    # SQS: a message and a SendMessageBatch request carry at most 256 KiB; a batch at most 10 messages.
    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
    assert fanout.PAGE_BYTES + 4096 < 256 * 1024
    assert fanout.BATCH_BYTES <= 256 * 1024
    assert fanout.BATCH_MESSAGES <= 10


# --- who may write ----------------------------------------------------------------------------------------


def test_only_the_planner_may_put_pages_on_the_check_queues() -> None:
    # An explicit Deny in a resource-based policy wins over any Allow in an identity policy.
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
    policy = RESOURCES["SweepQueuesPolicy"]["Properties"]
    assert sorted(q["Ref"] for q in policy["Queues"]) == sorted(_queue_of(name) for name in CHECK_FUNCTIONS)
    [deny] = [s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == "OnlyThePlannerSendsPages"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Action"] == "sqs:SendMessage"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["SweepPlannerRole", "Arn"]}}}
    assert sorted(r["Fn::GetAtt"][0] for r in deny["Resource"]) == sorted(_queue_of(n) for n in CHECK_FUNCTIONS)


def test_the_planner_role_only_lists_sends_and_counts() -> None:
    actions = {a for s in _role_statements("SweepPlannerRole") for a in _as_list(s["Action"])}
    changes = {a for a in actions if not a.split(":")[1].startswith(("Get", "List", "Describe", "Receive"))}
    assert changes == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "sqs:DeleteMessage",
        "dynamodb:UpdateItem",
        "sns:Publish",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    assert {"dynamodb:UpdateItem"} == sweep_progress.PERMISSIONS
    deny = RESOURCES["SweepPlannerRoleOnlyInItsFunction"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert {"sqs:SendMessage", "dynamodb:UpdateItem", "sns:Publish"} <= set(deny["Action"])
    # The event source mapping deletes messages with the role outside the function's code: never denied.
    assert "sqs:DeleteMessage" not in deny["Action"]
    assert deny["Condition"] == {
        "ArnNotEquals": {"lambda:SourceFunctionArn": {"Fn::GetAtt": ["SweepPlannerFunction", "Arn"]}}
    }


def test_failed_sweep_work_is_alarmed() -> None:
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    depth = [a for a in alarms if a["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["SweepDeadLetterQueue", "QueueName"]}]
    errors = [a for a in alarms if a["Dimensions"][0]["Value"] == {"Ref": "SweepPlannerFunction"}]
    listing = [a for a in alarms if a["MetricName"] == "SweepListingFailed"]
    assert depth and errors and listing
    for alarm in depth + errors + listing:
        assert alarm["AlarmActions"] == [{"Ref": "OperationsTopic"}]
