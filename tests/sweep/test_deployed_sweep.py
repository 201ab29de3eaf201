"""The deployed sweep: the planner's pages, the checks' functions fed by a fake of the SQS event source mapping.

The fake keeps Lambda's SQS contract (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html): a batch is
`{"Records": [...]}`, each record with `messageId`, `receiptHandle`, `body`, `attributes`
(ApproximateReceiveCount...), `eventSource` "aws:sqs", `eventSourceARN` and `awsRegion`; the function answers
`{"batchItemFailures": [{"itemIdentifier": <messageId>}]}` (ReportBatchItemFailures,
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html) and the mapping deletes every
other message of the batch, while the failed ones become visible again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from mlwarden import clients, fanout
from mlwarden.checks import load
from mlwarden.settings import SettingsError
from tests.conftest import ACCOUNT, ALL_ON, REGION, AwsWorld, FakeLambdaContext, Handler

UNIT = load("block_public_s3")
PLANNER_CONTEXT = FakeLambdaContext(function_name="mlwarden-SweepPlanner")


@dataclass
class Queues:
    plan: str
    work: str
    plan_arn: str
    work_arn: str


@pytest.fixture
def queues(aws: AwsWorld) -> Queues:
    plan = aws.sqs.create_queue(QueueName="sweep-plan")["QueueUrl"]
    work = aws.sqs.create_queue(QueueName="block-public-s3-sweep")["QueueUrl"]
    return Queues(plan, work, _arn_of(aws, plan), _arn_of(aws, work))


def _arn_of(aws: AwsWorld, url: str) -> str:
    return str(aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


class ShortOfTime(FakeLambdaContext):
    """A planner invocation that has less than PLANNER_MARGIN_MS left after its first batch of pages."""

    def get_remaining_time_in_millis(self) -> int:
        return fanout.PLANNER_MARGIN_MS - 1


def _receive(aws: AwsWorld, url: str, max_messages: int = 10) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=max_messages, AttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", [])
    return messages


def lambda_sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping invokes a function with, for these received messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": message.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": message.get("Attributes", {}).get("SentTimestamp", "0"),
                    "SenderId": "AROAEXAMPLE:mlwarden-SweepPlanner",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(message["Body"].encode()).hexdigest(),  # SQS computes this digest
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for message in messages
        ]
    }


def deliver(aws: AwsWorld, url: str, arn: str, function: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The event source mapping: batches until the queue is empty; deletes what the function did not fail.

    Returns how many batches were delivered. Failed messages are made visible again at once.
    """
    batches = 0
    while messages := _receive(aws, url):
        batches += 1
        response = function(lambda_sqs_event(messages, arn))
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] in failed:
                aws.sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if failed:
            return batches
    return batches


def _settings_env(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, queues: Queues, mode: str = "enforce") -> None:
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", mode)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    monkeypatch.setenv("SWEEP_WORK_QUEUES", json.dumps({"block_public_s3": queues.work}))
    monkeypatch.setenv("SWEEP_PLAN_QUEUE", queues.plan)


def _planner(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, queues: Queues, mode: str = "enforce") -> Any:
    from tests.conftest import FUNCTIONS, import_fresh  # noqa: PLC0415

    _settings_env(monkeypatch, aws, queues, mode)
    return import_fresh(FUNCTIONS / "sweep_planner" / "app.py")


def _start(aws: AwsWorld, queues: Queues, execution_id: str) -> None:
    """What the schedule's target input puts on the plan queue (template.yaml, SweepSchedule)."""
    aws.sqs.send_message(
        QueueUrl=queues.plan,
        MessageBody=json.dumps({"start": "schedule", "id": execution_id, "time": "2026-01-01T03:00:00Z"}),
    )


def _plan(aws: AwsWorld, queues: Queues, planner: Any, context: FakeLambdaContext = PLANNER_CONTEXT) -> int:
    return deliver(aws, queues.plan, queues.plan_arn, lambda event: planner.lambda_handler(event, context))


def _pages(aws: AwsWorld, queues: Queues) -> list[dict[str, Any]]:
    found = []
    while messages := _receive(aws, queues.work):
        for message in messages:
            found.append(json.loads(message["Body"]))
            aws.sqs.delete_message(QueueUrl=queues.work, ReceiptHandle=message["ReceiptHandle"])
    return found


def _progress(aws: AwsWorld, sweep_id: str) -> dict[str, Any]:
    item: dict[str, Any] = aws.dynamodb.get_item(TableName=aws.outcome_table, Key={"id": {"S": f"sweep#{sweep_id}"}})[
        "Item"
    ]
    return item


# --- the planner --------------------------------------------------------------------------------------------


def test_planner_sends_every_bucket_and_the_account_as_pages_of_keys(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {f"bucket-{index:03d}" for index in range(230)}
    for name in names:
        aws.s3.create_bucket(Bucket=name)
    planner = _planner(monkeypatch, aws, queues)
    _start(aws, queues, "exec-1")

    _plan(aws, queues, planner)

    pages = _pages(aws, queues)
    assert sorted(len(page["keys"]) for page in pages) == [31, 100, 100]  # 230 buckets and the account
    assert {page["sweep_id"] for page in pages} == {"sweep-exec-1"}
    assert {(page["check"], page["account"], page["region"]) for page in pages} == {
        ("block_public_s3", ACCOUNT, REGION)
    }
    targets = [UNIT.target_of_key(key) for page in pages for key in page["keys"]]
    assert len(targets) == len(set(targets)) == 231
    assert {UNIT.resource_of(t) for t in targets} == {f"arn:aws:s3:::{n}" for n in names} | {
        f"AWS::::Account:{ACCOUNT}"
    }
    progress = _progress(aws, "sweep-exec-1")
    assert set(progress["pages_planned"]["SS"]) == {"0", "1", "2"}
    assert progress["planning_done"] == {"BOOL": True}
    assert all(len(json.dumps(page)) < fanout.PAGE_BYTES for page in pages)


def test_planner_short_of_time_continues_from_the_last_key_sent_and_sends_each_target_once(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "PAGE_KEYS", 2)
    monkeypatch.setattr(fanout, "BATCH_MESSAGES", 2)
    for index in range(11):
        aws.s3.create_bucket(Bucket=f"bucket-{index:02d}")
    planner = _planner(monkeypatch, aws, queues)
    _start(aws, queues, "exec-2")

    invocations = _plan(aws, queues, planner, ShortOfTime())

    pages = _pages(aws, queues)
    keys = [json.dumps(key, sort_keys=True) for page in pages for key in page["keys"]]
    assert len(keys) == len(set(keys)) == 12
    assert sorted(int(page["page"]) for page in pages) == list(range(6))
    # One batch (2 pages) per invocation before the time margin: the start, then continuations; the last finds
    # nothing after the last key it was given.
    assert invocations == 4
    assert _progress(aws, "sweep-exec-2")["planning_done"] == {"BOOL": True}


def test_a_continuation_whose_last_key_is_gone_sends_everything_again_rather_than_skip(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(3):
        aws.s3.create_bucket(Bucket=f"bucket-{index}")
    planner = _planner(monkeypatch, aws, queues)
    resume = {"check": "block_public_s3", "after": {"bucket": "deleted-meanwhile", "partition": "aws"}, "page": 7}
    aws.sqs.send_message(QueueUrl=queues.plan, MessageBody=json.dumps({"sweep_id": "sweep-exec-3", "resume": resume}))

    _plan(aws, queues, planner)

    [page] = _pages(aws, queues)
    assert page["page"] == "7"
    assert len(page["keys"]) == 4


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", json.dumps({"start": "schedule"}), json.dumps({"start": "x", "id": "../../etc"})],
)
def test_planner_ignores_a_start_it_cannot_read_and_sends_nothing(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    aws.s3.create_bucket(Bucket="some-bucket")
    planner = _planner(monkeypatch, aws, queues)
    aws.sqs.send_message(QueueUrl=queues.plan, MessageBody=body)

    _plan(aws, queues, planner)

    assert _pages(aws, queues) == []
    assert _receive(aws, queues.plan) == []  # not retried: a malformed message never becomes valid


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SWEEP_WORK_QUEUES": ""}, "SWEEP_WORK_QUEUES"),
        ({"SWEEP_WORK_QUEUES": '{"no_such_check": "https://sqs.us-east-1.amazonaws.com/123456789012/q"}'}, "SWEEP"),
        ({"SWEEP_WORK_QUEUES": "[1]"}, "SWEEP_WORK_QUEUES"),
        ({"SWEEP_PLAN_QUEUE": "not a url"}, "SWEEP_PLAN_QUEUE"),
    ],
)
def test_planner_configuration_is_validated_at_cold_start(variables: dict[str, str], named: str) -> None:
    env = {
        "SWEEP_WORK_QUEUES": '{"block_public_s3": "https://sqs.us-east-1.amazonaws.com/123456789012/work"}',
        "SWEEP_PLAN_QUEUE": "https://sqs.us-east-1.amazonaws.com/123456789012/plan",
        **variables,
    }
    with pytest.raises(SettingsError, match=named):
        fanout.load_plan(env)


# --- the fan-out: planner, queue, the check's own function --------------------------------------------------


def _sweep_once(
    aws: AwsWorld,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
    make_handler: Callable[..., Handler],
    execution_id: str,
    mode: str = "enforce",
) -> int:
    planner = _planner(monkeypatch, aws, queues, mode)
    _start(aws, queues, execution_id)
    _plan(aws, queues, planner)
    worker = make_handler(mode=mode)
    return deliver(aws, queues.work, queues.work_arn, worker)


def test_two_scheduled_sweeps_fix_and_alert_once_and_the_second_is_silent(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch, make_handler: Callable[..., Handler]
) -> None:
    aws.s3control.put_public_access_block(AccountId=ACCOUNT, PublicAccessBlockConfiguration=ALL_ON)
    aws.bucket("public-acl", acl="public-read")
    aws.bucket("no-block")
    aws.bucket("locked", block=ALL_ON)

    _sweep_once(aws, queues, monkeypatch, make_handler, "day-1")

    assert aws.block_of("public-acl") == ALL_ON
    assert aws.block_of("no-block") == ALL_ON
    first = aws.alerts()
    per_resource = sorted(a.outcome["resource"] for a in first if a.outcome["check"] == "block_public_s3")
    assert per_resource == ["arn:aws:s3:::no-block", "arn:aws:s3:::public-acl"]
    [summary] = [a for a in first if a.outcome["check"] == "sweep"]
    assert summary.outcome["details"]["evaluated"] == 4
    assert summary.outcome["details"]["by_outcome"] == {"remediated": 2, "compliant": 2}
    assert summary.outcome["details"]["alerted"] == 2
    assert summary.outcome["severity"] in {"HIGH", "MEDIUM"}

    _sweep_once(aws, queues, monkeypatch, make_handler, "day-2")

    assert aws.alerts() == first  # nothing new: no per-resource alert and no summary
    day_two = _progress(aws, "sweep-day-2")
    assert day_two["evaluated"] == {"N": "4"}
    assert "summary_at" in day_two


def test_a_dry_run_sweep_alerts_each_finding_once_across_days(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("open-no-block")

    _sweep_once(aws, queues, monkeypatch, make_handler, "dry-1", mode="dry-run")
    _sweep_once(aws, queues, monkeypatch, make_handler, "dry-2", mode="dry-run")

    checks = sorted(a.outcome["check"] for a in aws.alerts())
    assert checks == ["block_public_s3", "block_public_s3", "sweep"]  # the bucket, the account block, one summary
    assert aws.block_of("open-no-block") is None


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"sweep_id": "sweep-x", "check": "flag_wildcard_iam", "account": ACCOUNT, "region": REGION,
                    "page": "0", "keys": [{"bucket": "b"}]}),
        json.dumps({"sweep_id": "sweep-x", "check": "block_public_s3", "account": ACCOUNT, "region": REGION,
                    "page": "0", "keys": []}),
        json.dumps({"sweep_id": "../x", "check": "block_public_s3", "account": ACCOUNT, "region": REGION,
                    "page": "0", "keys": [{"bucket": "b"}]}),
    ],
)  # fmt: skip
def test_a_message_that_is_not_a_page_for_this_check_is_ignored_not_retried(
    aws: AwsWorld, queues: Queues, make_handler: Callable[..., Handler], body: str
) -> None:
    aws.bucket("open-no-block")
    aws.sqs.send_message(QueueUrl=queues.work, MessageBody=body)

    deliver(aws, queues.work, queues.work_arn, make_handler())

    assert _receive(aws, queues.work) == []
    assert aws.block_of("open-no-block") is None
    assert aws.alerts() == []


def test_an_unreadable_key_ends_ignored_and_the_rest_of_the_page_is_evaluated(
    aws: AwsWorld, queues: Queues, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("open-no-block")
    page = fanout.Page(
        "sweep-k", "block_public_s3", ACCOUNT, REGION, "0", ({"nothing": 1}, {"bucket": "open-no-block"})
    )
    aws.sqs.send_message(QueueUrl=queues.work, MessageBody=page.body())

    deliver(aws, queues.work, queues.work_arn, make_handler())

    assert aws.block_of("open-no-block") == ALL_ON
    assert _progress(aws, "sweep-k")["by_outcome.ignored"] == {"N": "1"}


def test_a_page_whose_alert_cannot_be_sent_comes_back_and_is_counted_once(
    aws: AwsWorld, queues: Queues, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("open-no-block")
    page = fanout.Page("sweep-a", "block_public_s3", ACCOUNT, REGION, "0", ({"bucket": "open-no-block"},))
    aws.sqs.send_message(QueueUrl=queues.work, MessageBody=page.body())
    missing_topic = aws.topic_arn + "-deleted"

    deliver(aws, queues.work, queues.work_arn, make_handler(mode="dry-run", topic_arn=missing_topic))

    # Delivered again (and after the queue's maxReceiveCount kept in the sweep dead-letter queue).
    attributes = aws.sqs.get_queue_attributes(QueueUrl=queues.work, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"
    assert aws.alerts() == []
    deliver(aws, queues.work, queues.work_arn, make_handler(mode="dry-run"))
    assert [a.outcome["resource"] for a in aws.alerts()] == ["arn:aws:s3:::open-no-block"]
    assert _progress(aws, "sweep-a")["evaluated"] == {"N": "1"}


def test_the_summary_is_logged_and_counted_as_metrics_with_the_same_dimensions_from_any_function(
    aws: AwsWorld,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
    make_handler: Callable[..., Handler],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    aws.bucket("open-no-block")

    _sweep_once(aws, queues, monkeypatch, make_handler, "metrics-1", mode="dry-run")

    captured = capsys.readouterr()
    emitted = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{") and "_aws" in line]
    sweep_metrics = {
        name: (
            blob[name][0] if isinstance(blob[name], list) else blob[name],
            blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        )
        for blob in emitted
        for name in blob
        if name.startswith("Sweep")
    }
    assert sweep_metrics["SweepCompleted"] == (1.0, [["service"]])
    assert sweep_metrics["SweepResourcesEvaluated"] == (2.0, [["service"]])  # the bucket and the account
    assert sweep_metrics["SweepNewAlerts"][0] == 2.0
    finished = [record.__dict__ for record in caplog.records if record.getMessage() == "sweep finished"]
    assert len(finished) == 1
    assert finished[0]["evaluated"] == 2
    assert finished[0]["by_check"] == {"block_public_s3": 2}


def test_a_bucket_deleted_between_planning_and_its_page_ends_ignored_and_the_sweep_completes(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("short-lived")
    aws.bucket("open-no-block")
    planner = _planner(monkeypatch, aws, queues, "dry-run")
    _start(aws, queues, "deleted-1")
    _plan(aws, queues, planner)
    aws.s3.delete_bucket(Bucket="short-lived")

    deliver(aws, queues.work, queues.work_arn, make_handler(mode="dry-run"))

    progress = _progress(aws, "sweep-deleted-1")
    assert progress["by_outcome.ignored"] == {"N": "1"}
    assert "summary_at" in progress
    resources = sorted(a.outcome["resource"] for a in aws.alerts() if a.outcome["check"] == "block_public_s3")
    assert resources == [f"AWS::::Account:{ACCOUNT}", "arn:aws:s3:::open-no-block"]


def test_a_check_that_cannot_be_listed_is_named_in_a_high_summary_alert(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    planner = _planner(monkeypatch, aws, queues)
    s3 = clients.client("s3", REGION)
    stubber = Stubber(s3)
    stubber.add_client_error(
        "list_buckets",
        service_error_code="AccessDenied",
        http_status_code=403,
        expected_params={"BucketRegion": REGION, "MaxBuckets": 10_000},
    )
    _start(aws, queues, "denied-1")

    with stubber:
        _plan(aws, queues, planner)

    stubber.assert_no_pending_responses()
    assert _pages(aws, queues) == []
    [summary] = aws.alerts()
    assert summary.outcome["check"] == "sweep"
    assert summary.outcome["severity"] == "HIGH"
    assert summary.outcome["details"]["listing_failures"] == ["block_public_s3 in us-east-1: AccessDenied"]
    assert "could not list" in summary.outcome["reason"]


class NearlyOutOfTime(FakeLambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return fanout.WORKER_MARGIN_MS - 1


def test_a_worker_short_of_time_starts_no_page_and_returns_each_for_delivery_again(
    aws: AwsWorld, queues: Queues, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("open-no-block")
    pages = [
        fanout.Page("sweep-t", "block_public_s3", ACCOUNT, REGION, str(n), ({"bucket": "open-no-block"},))
        for n in range(2)
    ]
    for page in pages:
        aws.sqs.send_message(QueueUrl=queues.work, MessageBody=page.body())
    worker = make_handler(mode="dry-run")
    messages = _receive(aws, queues.work)

    response = worker.module.lambda_handler(lambda_sqs_event(messages, queues.work_arn), NearlyOutOfTime())

    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        m["MessageId"] for m in messages
    )
    assert aws.alerts() == []


def test_a_listing_throttled_once_is_retried_by_botocore_and_every_target_is_sent(
    aws: AwsWorld, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(3):
        aws.s3.create_bucket(Bucket=f"bucket-{index}")
    planner = _planner(monkeypatch, aws, queues)
    throttled: list[str] = []

    def slow_down_once(request: Any, **_: Any) -> AWSResponse | None:
        # S3 answers an overloaded request with 503 SlowDown; botocore's standard retries take it from there.
        if throttled or request.method != "GET" or "bucket-region" not in request.url:
            return None
        throttled.append(request.url)
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _RawBody(body))

    clients.client("s3", REGION).meta.events.register_first("before-send.s3", slow_down_once)
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda _: None)
    _start(aws, queues, "throttled-1")

    _plan(aws, queues, planner)

    assert len(throttled) == 1
    [page] = _pages(aws, queues)
    assert len(page["keys"]) == 4  # the account and three buckets


class _RawBody:
    def __init__(self, content: bytes) -> None:
        self.content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.content

    def read(self, *_: Any) -> bytes:
        return self.content
