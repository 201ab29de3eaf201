"""`mlwarden replay --from-dlq` against moto server: a message is deleted only after the function it names
reached a decision other than `ignored`; the rest goes to a hold queue for a person (or stays, exit 1);
the queue is long-polled until it reports empty."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlwarden import clients
from mlwarden_cli.dlq import HOLD_REASON_ATTRIBUTE, LONG_POLL_SECONDS
from mlwarden_cli.emulator import FAKE_CREDENTIALS, moto_server
from mlwarden_cli.local import create_local_resources
from mlwarden_cli.main import main
from mlwarden_cli.template import load_template

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
RULE_ARN = "arn:aws:events:us-east-1:123456789012:rule/mlwarden-BlockPublicS3FunctionCloudTrail-1X2Y3Z4W5V6U"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:mlwarden-BlockPublicS3Function-AbCdEf012345"
# Short long polls keep the tests fast; the default is SQS's longest (20 s).
WAIT = ["--wait-seconds", "1"]

pytestmark = pytest.mark.integration


def sample(relative: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / relative).read_text()))


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


class World:
    """A fresh moto server state: the template's table and topic (through local init), an alert inbox, queues."""

    def __init__(self, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)
        for name, value in {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": endpoint,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }.items():
            monkeypatch.setenv(name, value)
        clients.client.cache_clear()
        for name, value in create_local_resources(load_template(ROOT / "template.yaml"), endpoint).items():
            monkeypatch.setenv(name, value)
        self.s3, self.sqs, sns = (boto3.client(s, region_name="us-east-1") for s in ("s3", "sqs", "sns"))
        self.inbox = self.sqs.create_queue(QueueName="inbox")["QueueUrl"]
        # alerts as a subscriber receives them
        sns.subscribe(TopicArn=os.environ["ALERT_TOPIC_ARN"], Protocol="sqs", Endpoint=self.arn(self.inbox))
        self.dlq = self.sqs.create_queue(QueueName="BlockPublicS3DeadLetterQueue")["QueueUrl"]
        self.hold = self.sqs.create_queue(QueueName="redrive-hold")["QueueUrl"]

    def arn(self, queue_url: str) -> str:
        return str(
            self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        )

    def send_from_rule(self, event: Any, *, delay: int = 0) -> None:
        """What EventBridge puts in a rule target's dead-letter queue: the event; target and rule as attributes."""
        self.sqs.send_message(
            QueueUrl=self.dlq,
            MessageBody=json.dumps(event),
            DelaySeconds=delay,
            MessageAttributes={
                "RULE_ARN": {"DataType": "String", "StringValue": RULE_ARN},
                "TARGET_ARN": {"DataType": "String", "StringValue": FUNCTION_ARN},
                "ERROR_CODE": {"DataType": "String", "StringValue": "SDK_CLIENT_ERROR"},
            },
        )

    def send_from_lambda(self, event: Any) -> None:
        """What Lambda's on-failure destination sends after the function's own retries."""
        record = {
            "version": "1.0",
            "timestamp": "2025-06-03T10:00:05.000Z",
            "requestContext": {
                "requestId": "c0ffee00-0000-4000-8000-000000000001",
                "functionArn": f"{FUNCTION_ARN}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "alert for block_public_s3 could not be published"},
        }
        self.sqs.send_message(QueueUrl=self.dlq, MessageBody=json.dumps(record))

    def counts(self, queue_url: str) -> tuple[int, int]:
        """(visible, in flight)"""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []
        while messages := self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            received += messages
            for message in messages:
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return received

    def block_of(self, bucket: str) -> dict[str, bool] | None:
        try:
            return dict(self.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"])
        except self.s3.exceptions.ClientError:
            return None

    def public_bucket(self, name: str) -> str:
        self.s3.create_bucket(Bucket=name)
        self.s3.put_bucket_acl(Bucket=name, ACL="public-read")
        return name


@pytest.fixture
def world(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield World(endpoint, monkeypatch)
    clients.client.cache_clear()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _damaged(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its request parameters lost: the function ends `ignored` ("names no bucket")."""
    event = json.loads(json.dumps(event))
    event["detail"]["requestParameters"] = None
    return event


def test_both_kinds_of_dead_letter_are_redriven_and_deleted(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.public_bucket("mlw-training-data-acl")
    world.s3.create_bucket(Bucket="mlw-training-data-policy")
    world.s3.put_bucket_acl(Bucket="mlw-training-data-policy", ACL="public-read-write")
    world.send_from_rule(sample("s3/put-bucket-acl-public.json"))
    world.send_from_lambda(sample("s3/put-bucket-policy-public.json"))

    status = main(["replay", "--from-dlq", world.dlq, "--json", *WAIT])

    lines = _lines(capsys)
    assert status == 0
    assert [line["disposition"] for line in lines] == ["deleted", "deleted"]
    assert {r["function"] for line in lines for r in line["results"]} == {"BlockPublicS3Function"}
    assert world.block_of("mlw-training-data-acl") == ALL_ON
    assert world.counts(world.dlq) == (0, 0)
    assert len(world.drain(world.inbox)) == 2


def test_an_ignored_outcome_is_not_deleted_it_goes_to_the_hold_queue(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a damaged payload and an event dead-lettered by a function that does not take it
    world.send_from_rule(_damaged(sample("s3/put-bucket-acl-public.json")))
    world.send_from_rule(sample("iam/put-role-policy-s3-wildcard.json"))

    status = main(["replay", "--from-dlq", world.dlq, "--hold-queue", world.hold, "--json", *WAIT])

    # Then neither is deleted: both wait, unchanged, in the hold queue for a person, with the reason
    lines = _lines(capsys)
    assert status == 0
    assert [line["disposition"] for line in lines] == ["held", "held"]
    assert all("did not decide (ignored)" in line["problem"] for line in lines)
    assert world.counts(world.dlq) == (0, 0)
    held = world.drain(world.hold)
    assert sorted(json.loads(m["Body"])["detail"]["eventName"] for m in held) == ["PutBucketAcl", "PutRolePolicy"]
    assert all(m["MessageAttributes"]["TARGET_ARN"]["StringValue"] == FUNCTION_ARN for m in held)
    assert all("ignored" in m["MessageAttributes"][HOLD_REASON_ATTRIBUTE]["StringValue"] for m in held)


def test_without_a_hold_queue_an_ignored_message_stays_visible_and_exit_is_1(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.send_from_rule(_damaged(sample("s3/put-bucket-acl-public.json")))

    status = main(["replay", "--from-dlq", world.dlq, *WAIT])

    out = capsys.readouterr()
    assert status == 1
    assert "1 left in the queue" in out.out
    assert "did not decide (ignored)" in out.err
    # visible again at once, for a person or the next re-drive
    assert world.counts(world.dlq) == (1, 0)


def test_a_message_whose_handler_fails_again_stays_in_the_queue(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.public_bucket("mlw-training-data-acl")
    monkeypatch.setenv("ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:topic-that-is-gone")
    world.send_from_rule(sample("s3/put-bucket-acl-public.json"))

    status = main(["replay", "--from-dlq", world.dlq, *WAIT])

    assert status == 1
    assert "BlockPublicS3Function raised" in capsys.readouterr().err
    assert world.counts(world.dlq) == (1, 0)
    assert world.block_of("mlw-training-data-acl") == ALL_ON  # the fix stands; only the alert is owed


def test_unreadable_and_unnamed_messages_are_held(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.sqs.send_message(QueueUrl=world.dlq, MessageBody="{not json")
    world.sqs.send_message(QueueUrl=world.dlq, MessageBody=json.dumps(sample("s3/put-bucket-acl-public.json")))

    status = main(["replay", "--from-dlq", world.dlq, "--hold-queue", world.hold, "--json", *WAIT])

    problems = sorted(line["problem"] for line in _lines(capsys))
    assert status == 0
    assert problems == [
        "body is not JSON: moved to the hold queue",
        "the message names no function of this template: moved to the hold queue",
    ]
    assert len(world.drain(world.hold)) == 2


def test_long_polling_reaches_messages_a_first_empty_poll_misses(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one message still delayed and one that another reader holds in flight for two seconds
    world.public_bucket("mlw-late-1")
    world.public_bucket("mlw-late-2")
    world.send_from_rule(_for_bucket(sample("s3/put-bucket-acl-public.json"), "mlw-late-1"), delay=2)
    world.send_from_rule(_for_bucket(sample("s3/put-bucket-acl-public.json"), "mlw-late-2"))
    assert world.sqs.receive_message(QueueUrl=world.dlq, VisibilityTimeout=2)["Messages"]
    assert world.counts(world.dlq) == (0, 1)

    status = main(["replay", "--from-dlq", world.dlq, "--json", *WAIT])

    # Then both are re-driven: the queue is polled until it reports empty
    assert status == 0
    assert [line["disposition"] for line in _lines(capsys)] == ["deleted", "deleted"]
    assert world.block_of("mlw-late-1") == ALL_ON
    assert world.block_of("mlw-late-2") == ALL_ON
    assert world.counts(world.dlq) == (0, 0)


def _for_bucket(event: dict[str, Any], bucket: str) -> dict[str, Any]:
    event = json.loads(json.dumps(event).replace("mlw-training-data-acl", bucket))
    event["id"] = f"{event['id'][:-12]}{abs(hash(bucket)) % 10**12:012d}"
    return event


def test_redriving_an_event_that_was_already_handled_sends_no_second_alert(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.public_bucket("mlw-training-data-acl")
    event = sample("s3/put-bucket-acl-public.json")
    assert main(["replay", "--json", str(EVENTS / "s3/put-bucket-acl-public.json")]) == 0  # handled after all
    capsys.readouterr()
    world.send_from_rule(event)

    status = main(["replay", "--from-dlq", world.dlq, "--json", *WAIT])

    (line,) = _lines(capsys)
    assert status == 0
    assert line["results"][0]["redelivered"] is True
    assert line["disposition"] == "deleted"
    assert len(world.drain(world.inbox)) == 1


def test_the_hold_queue_must_be_another_queue(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.send_from_rule(sample("s3/put-bucket-acl-public.json"))

    assert main(["replay", "--from-dlq", world.dlq, "--hold-queue", world.dlq, *WAIT]) == 2
    assert "hold queue" in capsys.readouterr().err
    assert world.counts(world.dlq) == (1, 0)


def test_files_and_from_dlq_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--from-dlq", "https://sqs.us-east-1.amazonaws.com/1/q", "x.json"]) == 2
    assert main(["replay"]) == 2
    assert main(["replay", "--hold-queue", "https://sqs.us-east-1.amazonaws.com/1/h", "x.json"]) == 2
    assert "--from-dlq" in capsys.readouterr().err


def test_a_long_poll_ends_before_the_clients_read_timeout() -> None:
    # A 20 s poll on a client that gives up reading after 20 s timed out and was retried instead of answered.
    assert clients.client("sqs", "us-east-1").meta.config.read_timeout > LONG_POLL_SECONDS
