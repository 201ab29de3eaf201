"""Every read-modify-write of the pipeline converges under real threads against moto server.

EventBridge delivers at least once and in parallel: the same event may run in several invocations at
once, and a storm brings many events for one resource together. These tests run the pipeline in 20
threads against moto server over HTTP and assert what AWS holds afterwards and what the alert subscriber
received.

moto server answers requests in threads but applies a DynamoDB write by copying the item, changing the
copy and putting it back, without a lock: two concurrent writes to one item can lose one of them, and
two conditional writes can both pass. DynamoDB itself applies each write to an item atomically,
conditions included ("Condition expressions", DynamoDB developer guide:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html).
So the server here handles one request at a time: each request is atomic as in DynamoDB, while the
callers stay really concurrent and interleave between requests in any order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from mlwarden import clients, flapguard
from mlwarden import pipeline as checks
from mlwarden.checks import block_public_s3 as s3
from mlwarden.events import Event
from mlwarden.outcome_store import EventInProgress
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden.settings import Settings, load_settings
from mlwarden_cli.emulator import FAKE_CREDENTIALS, create_outcome_table, free_port

pytestmark = pytest.mark.integration

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
THREADS = 20


# moto's own server application, served one request at a time.
_SERIAL_SERVER = (
    "import sys\n"
    "from werkzeug.serving import run_simple\n"
    "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n"
    "run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)\n"
)


@contextmanager
def serial_moto_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _SERIAL_SERVER, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **FAKE_CREDENTIALS},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                assert process.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with serial_moto_server() as url:
        yield url


@dataclass
class Account:
    settings: Settings
    s3: Any
    sqs: Any
    dynamodb: Any
    queue: str

    def alerts(self) -> list[dict[str, Any]]:
        """The SNS notifications the subscriber queue received."""
        received = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return received
            for message in messages:
                received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def account(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Account:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    clients.client.cache_clear()

    def client(service: str) -> Any:
        return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint)

    dynamodb, sns, sqs = client("dynamodb"), client("sns"), client("sqs")
    table = create_outcome_table(dynamodb)
    topic = sns.create_topic(Name="mlwarden-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    settings = load_settings({"ALERT_TOPIC_ARN": topic, "OUTCOME_TABLE": table})
    return Account(settings, client("s3"), sqs, dynamodb, queue)


def in_threads(work: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(work, range(count)))


def delivered(run: Callable[[], Outcome], attempts: int = 50) -> Outcome:
    """One delivery as Lambda makes it: an invocation that finds the event in progress elsewhere is retried."""
    for _ in range(attempts):
        try:
            return run()
        except EventInProgress:
            time.sleep(0.05)
    raise AssertionError("still in progress after every retry")


def test_twenty_concurrent_deliveries_of_one_event_fix_once_and_alert_once(
    account: Account, cloudtrail_event: Any
) -> None:
    account.s3.create_bucket(Bucket="training-data")
    account.s3.put_bucket_acl(Bucket="training-data", ACL="public-read")
    event = cloudtrail_event("PutBucketAcl", "training-data")
    writes: list[str] = []
    clients.client("s3").meta.events.register(
        "before-call.s3.PutPublicAccessBlock", lambda model, **_: writes.append(model.name)
    )

    outcomes = in_threads(
        lambda _: delivered(
            lambda: checks.run_check("block_public_s3", s3.block_public_access, event, account.settings)
        )
    )

    assert writes == ["PutPublicAccessBlock"]
    assert {o.outcome for o in outcomes} == {OutcomeKind.REMEDIATED}
    # The deciding invocation may itself be retried (another one was sending the alert): then it, too, finds
    # the stored outcome. Either way one decision, one write, one alert.
    assert sum(not o.redelivered for o in outcomes) <= 1
    assert len(account.alerts()) == 1
    assert account.s3.get_public_access_block(Bucket="training-data")["PublicAccessBlockConfiguration"] == ALL_ON


def fix_of(event_id: str) -> Outcome:
    trigger = Trigger(event_id, "aws.s3", "cloudtrail", "PutBucketAcl", "someone", None, "123456789012", "us-east-1")
    return Outcome("block_public_s3", OutcomeKind.REMEDIATED, Severity.HIGH, "fixed", trigger, resource="arn:b")


def test_twenty_concurrent_fixes_of_one_resource_are_all_counted_and_flap_alert_once(account: Account) -> None:
    outcomes = in_threads(lambda i: flapguard.note_fix(account.settings, "block_public_s3", fix_of(f"e{i}"), f"e{i}"))

    talking = [o for o in outcomes if o.flapping and o.alert_suppressed is None]
    assert len(talking) == 1, "one flapping alert however many fixes race"
    assert talking[0].severity is Severity.CRITICAL
    assert sum(1 for o in outcomes if not o.flapping) == account.settings.flap_threshold
    item = account.dynamodb.get_item(
        TableName=account.settings.outcome_table,
        Key={"id": {"S": flapguard.flap_key("block_public_s3", "arn:b")}},
        ConsistentRead=True,
    )["Item"]
    assert sum(1 for name in item if name.startswith("fix_")) == THREADS  # no fix overwrote another
    assert item["total_fixes"] == {"N": str(THREADS)}


def test_the_same_fix_counted_concurrently_twice_is_one_fix(account: Account) -> None:
    in_threads(lambda _: flapguard.note_fix(account.settings, "block_public_s3", fix_of("e1"), "e1#payload"), 5)

    item = account.dynamodb.get_item(
        TableName=account.settings.outcome_table, Key={"id": {"S": flapguard.flap_key("block_public_s3", "arn:b")}}
    )["Item"]
    assert sum(1 for name in item if name.startswith("fix_")) == 1


def flag_job(event: Event, settings: Settings) -> Outcome:
    return Outcome(
        "check_sagemaker_encryption",
        OutcomeKind.FLAGGED,
        Severity.HIGH,
        "training job unencrypted",
        Trigger.of(event),
        resource="arn:aws:sagemaker:us-east-1:123456789012:training-job/j",
        findings=("output-not-encrypted-with-kms-key",),
    )


def test_twenty_concurrent_events_with_the_same_finding_alert_once(account: Account, cloudtrail_event: Any) -> None:
    events = [cloudtrail_event("CreateTrainingJob", event_source="sagemaker.amazonaws.com") for _ in range(THREADS)]

    outcomes = in_threads(
        lambda i: checks.run_check("check_sagemaker_encryption", flag_job, events[i], account.settings)
    )

    assert sum(o.alerted for o in outcomes) == 1
    assert sum(o.alert_suppressed is not None for o in outcomes) == THREADS - 1
    assert len(account.alerts()) == 1
    claims = account.dynamodb.scan(TableName=account.settings.outcome_table)["Items"]
    assert len([c for c in claims if c["id"]["S"].startswith("check_sagemaker_encryption#alert#")]) == 1
