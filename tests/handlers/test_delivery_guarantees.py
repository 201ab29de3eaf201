"""The delivery guarantees (README, "Guarantees"), proven on moto with injected faults.

1. Every event ends in exactly one recorded outcome.
2. Delivering the same event N times yields one remediation and one alert.
3. A failed alert never undoes or hides a remediation: the retry sends only the alert.
4. Flapping changes the talking, never the fixing (flap guard).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse

from mlwarden import clients, flapguard
from mlwarden.errors import AlertDeliveryFailed, RemediationFailed
from mlwarden.outcome_store import EventInProgress, OutcomeStore
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
BUCKET = "training-data"
ACCOUNT = "123456789012"


def fail_calls(client: Any, operation: str, code: str, times: int, status: int = 403) -> list[str]:
    """Answer the next `times` calls of `operation` with an AWS error; returns the log of answered calls."""
    answered: list[str] = []
    remaining = itertools.count(times, -1)

    def answer(model: Any, **_: Any) -> Any:
        if next(remaining) <= 0:
            return None
        answered.append(model.name)
        return (
            type("Http", (), {"status_code": status})(),
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        )

    service = client.meta.service_model.service_name
    client.meta.events.register(f"before-call.{service}.{operation}", answer)
    return answered


def count_calls(client: Any, operation: str) -> list[str]:
    calls: list[str] = []
    service = client.meta.service_model.service_name
    client.meta.events.register(f"before-call.{service}.{operation}", lambda model, **_: calls.append(model.name))
    return calls


# --- guarantee 2: N deliveries, one remediation, one alert ---------------------------------------------------


def test_twenty_deliveries_of_one_event_make_one_write_and_one_alert(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket(BUCKET, acl="public-read")
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    writes = count_calls(clients.client("s3"), "PutPublicAccessBlock")

    results = [handler(event) for _ in range(20)]

    assert writes == ["PutPublicAccessBlock"]
    assert {r["outcome"] for r in results} == {"remediated"}
    assert [r["redelivered"] for r in results] == [False] + [True] * 19
    assert len(aws.alerts()) == 1
    assert aws.block_of(BUCKET) == ALL_ON


def test_a_failure_retried_until_it_succeeds_is_alerted_once_as_failed_and_once_as_fixed(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket(BUCKET, acl="public-read")
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    denied = fail_calls(clients.client("s3"), "PutPublicAccessBlock", "AccessDenied", times=2)

    for _ in range(2):  # Lambda's two retries of a failed event
        with pytest.raises(RemediationFailed):
            handler(event)
    fixed = handler(event)  # the permission was granted in between

    assert denied == ["PutPublicAccessBlock"] * 2
    assert (fixed["outcome"], fixed["redelivered"]) == ("remediated", False)
    assert [a.attributes["outcome"] for a in aws.alerts()] == ["failed", "remediated"]
    assert aws.block_of(BUCKET) == ALL_ON


# --- guarantee 3: a lost alert is re-sent, the fix is not re-done --------------------------------------------


def test_sns_down_after_the_fix_then_back_sends_only_the_alert(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket(BUCKET, acl="public-read")
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    writes = count_calls(clients.client("s3"), "PutPublicAccessBlock")
    fail_calls(clients.client("sns", "us-east-1"), "Publish", "InternalError", times=1, status=500)

    with pytest.raises(AlertDeliveryFailed):
        handler(event)  # raised so that Lambda retries the event
    assert aws.block_of(BUCKET) == ALL_ON
    assert aws.alerts() == []

    retried = handler(event)

    assert writes == ["PutPublicAccessBlock"]
    assert (retried["outcome"], retried["redelivered"], retried["alerted"]) == ("remediated", True, True)
    assert [a.attributes["outcome"] for a in aws.alerts()] == ["remediated"]


# --- DynamoDB unavailable: security beats dedup -------------------------------------------------------------


def test_without_dynamodb_the_fix_still_happens_and_a_duplicate_alert_is_the_price(
    aws: Any, make_handler: Any, cloudtrail_event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = make_handler(env={"OUTCOME_TABLE": "table-that-does-not-exist"})
    aws.bucket(BUCKET, acl="public-read")
    event = cloudtrail_event("PutBucketAcl", BUCKET)

    first = handler(event)
    aws.s3.delete_public_access_block(Bucket=BUCKET)  # a human re-opens it before the redelivery
    second = handler(event)

    assert (first["outcome"], second["outcome"]) == ("remediated", "remediated")
    assert aws.block_of(BUCKET) == ALL_ON
    assert len(aws.alerts()) == 2
    assert "outcome store unavailable, going on without it" in caplog.text


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


THROTTLED = json.dumps(
    {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate of requests exceeds"}
).encode()


def test_dynamodb_throttled_once_is_retried_by_botocore_and_still_deduplicates(
    aws: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Throttle at the HTTP layer, below botocore's retries: the first UpdateItem (the flap guard's count of the
    # fix) gets a 400 ThrottlingException. moto's own before-send hook still executes the request, so the retry
    # repeats it: the fix is one attribute keyed by the event, so the repeat does not count it twice.
    aws.bucket(BUCKET, acl="public-read")
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    throttled: list[str] = []

    def throttle_once(request: Any, **_: Any) -> AWSResponse | None:
        if not throttled and request.headers.get("X-Amz-Target", b"").endswith(b"UpdateItem"):
            throttled.append("UpdateItem")
            return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Body(THROTTLED))
        return None

    clients.client("dynamodb").meta.events.register_first("before-send.dynamodb", throttle_once)
    backoffs: list[float] = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", backoffs.append)

    first = handler(event)
    again = handler(event)

    assert throttled == ["UpdateItem"]
    assert len(backoffs) == 1
    assert (first["redelivered"], again["redelivered"]) == (False, True)
    assert len(aws.alerts()) == 1


# --- the same event handled concurrently --------------------------------------------------------------------


def _outcome(event_id: str) -> Outcome:
    trigger = Trigger(event_id, "aws.s3", "cloudtrail", "PutBucketAcl", None, None, "123456789012", "us-east-1")
    return Outcome("block_public_s3", OutcomeKind.REMEDIATED, Severity.HIGH, "fixed", trigger, resource="arn")


def test_a_delivery_that_arrives_while_the_first_is_in_progress_raises_for_a_later_retry(aws: Any) -> None:
    store = OutcomeStore(aws.outcome_table, "event-1")

    def decide_while_a_duplicate_arrives() -> Outcome:
        with pytest.raises(EventInProgress):
            OutcomeStore(aws.outcome_table, "event-1").decide_once("block_public_s3", lambda: _outcome("event-1"))
        return _outcome("event-1")

    decided = store.decide_once("block_public_s3", decide_while_a_duplicate_arrives)

    assert decided.first_delivery is True
    again = OutcomeStore(aws.outcome_table, "event-1").decide_once("block_public_s3", lambda: _outcome("x"))
    assert (again.first_delivery, again.outcome.trigger.event_id) == (False, "event-1")


def test_records_are_keyed_by_check_and_event_and_expire(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket(BUCKET, acl="public-read")
    handler(cloudtrail_event("PutBucketAcl", BUCKET))

    records = aws.outcome_records()
    decide = [r for key, r in records.items() if key.startswith("block_public_s3.decide#")]
    alert = [r for key, r in records.items() if key.startswith("block_public_s3.alert.remediated#")]
    assert len(decide) == len(alert) == 1
    assert decide[0]["status"] == "COMPLETED"
    assert json.loads(decide[0]["data"])["outcome"] == "remediated"
    assert int(decide[0]["expiration"]) > 0


# --- guarantee 4: flapping changes the talking, never the fixing -------------------------------------------


def reopen_and_deliver(aws: Any, handler: Any, cloudtrail_event: Any, times: int) -> list[dict[str, Any]]:
    results = []
    for _ in range(times):
        if aws.block_of(BUCKET) is not None:
            aws.s3.delete_public_access_block(Bucket=BUCKET)
        results.append(handler(cloudtrail_event("DeleteBucketPublicAccessBlock", BUCKET)))
    return results


def test_a_bucket_re_opened_six_times_is_fixed_six_times_with_one_flapping_alert(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # Attack (issue 10, item 1): re-opening a bucket a few times made ML Warden stop fixing it for an hour.
    aws.bucket(BUCKET, acl="public-read")

    results = reopen_and_deliver(aws, handler, cloudtrail_event, 6)

    assert [r["outcome"] for r in results] == ["remediated"] * 6
    assert aws.block_of(BUCKET) == ALL_ON  # the last re-opening is fixed too
    assert [(r["severity"], r["flapping"], r["alerted"]) for r in results] == [
        ("HIGH", False, True),
        ("HIGH", False, True),
        ("HIGH", False, True),
        ("CRITICAL", True, True),  # one too many within the hour: the flapping alert
        ("HIGH", True, False),  # fixed, logged and counted; folded into the next digest
        ("HIGH", True, False),
    ]
    received = aws.alerts()
    assert len(received) == 4
    flapping = received[3]
    assert flapping.attributes["flapping"] == "true"
    assert "flapping" not in received[0].attributes
    assert flapping.subject != received[0].subject
    assert flapping.subject.startswith("[ML Warden] CRITICAL FLAPPING")
    assert flapping.line("What").startswith(
        "arn:aws:s3:::training-data re-opened 4 times in 1 minutes by "
        f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/data-scientist"
    )


def test_a_digest_goes_out_once_per_interval_while_the_bucket_keeps_flapping(
    aws: Any, make_handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = make_handler(env={"FLAP_DIGEST_MINUTES": "30"})
    aws.bucket(BUCKET, acl="public-read")
    reopen_and_deliver(aws, handler, cloudtrail_event, 6)  # 3 alerts, the flapping alert, 2 fixes folded
    later = flapguard.time.time() + 30 * 60 + 1
    monkeypatch.setattr(flapguard.time, "time", lambda: later)

    results = reopen_and_deliver(aws, handler, cloudtrail_event, 3)

    assert [(r["outcome"], r["alerted"]) for r in results] == [
        ("remediated", True),  # the digest: the interval has passed
        ("remediated", False),
        ("remediated", False),
    ]
    digest = aws.alerts()[-1]
    assert len(aws.alerts()) == 5
    assert digest.attributes["flapping"] == "true"
    assert digest.line("What").startswith("still flapping: fixed 3 more times since the last alert")
    assert aws.block_of(BUCKET) == ALL_ON


def test_after_a_quiet_hour_a_re_opening_alerts_as_usual(
    aws: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket(BUCKET, acl="public-read")
    reopen_and_deliver(aws, handler, cloudtrail_event, 4)

    later = flapguard.time.time() + flapguard.WINDOW_SECONDS + 1
    monkeypatch.setattr(flapguard.time, "time", lambda: later)
    [result] = reopen_and_deliver(aws, handler, cloudtrail_event, 1)

    assert (result["outcome"], result["severity"], result["flapping"]) == ("remediated", "HIGH", False)
    assert aws.block_of(BUCKET) == ALL_ON


def test_flap_threshold_is_a_setting(aws: Any, make_handler: Any, cloudtrail_event: Any) -> None:
    handler = make_handler(env={"FLAP_THRESHOLD": "1"})
    aws.bucket(BUCKET, acl="public-read")
    first = handler(cloudtrail_event("PutBucketAcl", BUCKET))
    aws.s3.delete_public_access_block(Bucket=BUCKET)
    second = handler(cloudtrail_event("DeleteBucketPublicAccessBlock", BUCKET))

    assert (first["severity"], second["severity"], second["flapping"]) == ("HIGH", "CRITICAL", True)


def test_flap_guard_fails_open_when_its_table_is_unreadable(
    aws: Any, make_handler: Any, cloudtrail_event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    handler = make_handler(env={"OUTCOME_TABLE": "table-that-does-not-exist", "FLAP_THRESHOLD": "1"})
    aws.bucket(BUCKET, acl="public-read")
    outcomes = reopen_and_deliver(aws, handler, cloudtrail_event, 3)

    assert [(o["outcome"], o["alerted"]) for o in outcomes] == [("remediated", True)] * 3
    assert aws.block_of(BUCKET) == ALL_ON
    assert "fix counter unavailable, alerting this fix as usual" in caplog.text


def test_a_stored_hold_from_an_older_release_cannot_stop_a_fix(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    # Attack (issue 10, item 7): one item with a hold until the year 3000 kept a public PII bucket unfixed.
    for key in (f"flap#block_public_s3#arn:aws:s3:::{BUCKET}", f"block_public_s3#flap#arn:aws:s3:::{BUCKET}"):
        aws.dynamodb.put_item(
            TableName=aws.outcome_table,
            Item={"id": {"S": key}, "hold_until": {"N": "32503680000"}, "talked_at": {"N": "32503680000"}},
        )
    aws.bucket(BUCKET, acl="public-read", tags={"mlwarden:pii": "true"})

    result = handler(cloudtrail_event("PutBucketAcl", BUCKET))

    assert (result["outcome"], result["severity"], result["alerted"]) == ("remediated", "CRITICAL", True)
    assert aws.block_of(BUCKET) == ALL_ON


def test_an_outcome_too_large_for_one_item_is_stored_cut_and_still_answers_redeliveries(aws: Any) -> None:
    event_id = "\U00010000\x1f" * 40_000  # about 400 KB once JSON-escaped: more than one DynamoDB item holds
    big = replace(_outcome(event_id), details={"statements": ["s3:*"] * 50_000}, undo="x" * 100_000)

    first = OutcomeStore(aws.outcome_table, event_id).decide_once("block_public_s3", lambda: big)
    again = OutcomeStore(aws.outcome_table, event_id).decide_once("block_public_s3", lambda: _outcome("x"))

    assert (first.first_delivery, again.first_delivery) == (True, False)
    assert again.outcome.trigger.event_id == event_id
    assert (again.outcome.outcome, again.outcome.resource) == (OutcomeKind.REMEDIATED, "arn")
    assert again.outcome.details == {"stored_details_cut": True}
