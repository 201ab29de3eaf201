"""`mlwarden replay --from-dlq`: dead-lettered events are re-driven, and deleted only after their handler succeeded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
RULE_ARN = "arn:aws:events:us-east-1:123456789012:rule/mlwarden-BlockPublicS3FunctionCloudTrail-1X2Y3Z4W5V6U"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:mlwarden-BlockPublicS3Function-AbCdEf012345:$LATEST"


def sample(relative: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / relative).read_text()))


@pytest.fixture
def dlq(aws: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    return str(aws.sqs.create_queue(QueueName="BlockPublicS3DeadLetterQueue")["QueueUrl"])


def _send_from_rule(aws: Any, queue_url: str, event: dict[str, Any]) -> None:
    """What EventBridge puts in a rule's dead-letter queue: the event, and the rule in a message attribute."""
    aws.sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(event),
        MessageAttributes={
            "RULE_ARN": {"DataType": "String", "StringValue": RULE_ARN},
            "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"},
        },
    )


def _send_from_lambda(aws: Any, queue_url: str, event: dict[str, Any]) -> None:
    """What Lambda's on-failure destination sends after the function's own retries."""
    record = {
        "version": "1.0",
        "timestamp": "2025-06-03T10:00:05.000Z",
        "requestContext": {
            "requestId": "c0ffee00-0000-4000-8000-000000000001",
            "functionArn": FUNCTION_ARN,
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "alert for block_public_s3 could not be published"},
    }
    aws.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))


def _left(aws: Any, queue_url: str) -> int:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_both_kinds_of_dead_letter_are_redriven_and_deleted(
    aws: Any, dlq: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("mlw-training-data-acl", acl="public-read")
    aws.bucket("mlw-training-data-policy", public_policy=True)
    _send_from_rule(aws, dlq, sample("s3/put-bucket-acl-public.json"))
    _send_from_lambda(aws, dlq, sample("s3/put-bucket-policy-public.json"))

    status = main(["replay", "--from-dlq", dlq, "--json"])

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert [line["deleted"] for line in lines] == [True, True]
    assert sorted(r["outcome"] for line in lines for r in line["results"]) == ["remediated", "remediated"]
    assert {r["function"] for line in lines for r in line["results"]} == {"BlockPublicS3Function"}
    assert aws.block_of("mlw-training-data-acl") == ALL_ON
    assert aws.block_of("mlw-training-data-policy") == ALL_ON
    assert len(aws.alerts()) == 2
    assert _left(aws, dlq) == 0


def test_a_message_whose_handler_fails_again_stays_in_the_queue(
    aws: Any, dlq: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("mlw-training-data-acl", acl="public-read")
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn.replace("mlwarden-alerts", "topic-that-is-gone"))
    _send_from_rule(aws, dlq, sample("s3/put-bucket-acl-public.json"))

    status = main(["replay", "--from-dlq", dlq])

    assert status == 1
    out = capsys.readouterr()
    assert "1 message(s) left in the queue" in out.out
    assert "a handler raised: left in the queue" in out.err
    assert _left(aws, dlq) == 1
    assert aws.block_of("mlw-training-data-acl") == ALL_ON  # the fix stands; only the alert is owed


def test_unreadable_and_unroutable_messages_stay_and_are_reported(
    aws: Any, dlq: str, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.sqs.send_message(QueueUrl=dlq, MessageBody="{not json")
    aws.sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(sample("unrelated/ec2-run-instances.json")))

    status = main(["replay", "--from-dlq", dlq, "--json"])

    problems = sorted(json.loads(line)["problem"] for line in capsys.readouterr().out.splitlines())
    assert status == 1
    assert problems == ["body is not JSON: left in the queue", "no function takes this event: left in the queue"]
    assert _left(aws, dlq) == 2


def test_redriving_an_event_that_was_already_handled_sends_no_second_alert(
    aws: Any, dlq: str, make_handler: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("mlw-training-data-acl", acl="public-read")
    event = sample("s3/put-bucket-acl-public.json")
    make_handler()(event)  # the event was handled after all (say, a later retry went through)
    _send_from_rule(aws, dlq, event)

    status = main(["replay", "--from-dlq", dlq, "--json"])

    # (the direct call above printed its metrics to stdout; replay's lines are the ones with a message id)
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"message_id"' in x]
    assert status == 0
    assert line["results"][0]["redelivered"] is True
    assert len(aws.alerts()) == 1


def test_files_and_from_dlq_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--from-dlq", "https://sqs.us-east-1.amazonaws.com/1/q", "x.json"]) == 2
    assert main(["replay"]) == 2
    assert "--from-dlq" in capsys.readouterr().err
