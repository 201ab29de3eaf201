"""Faults moto cannot produce: AccessDenied, a write that does not take, SNS down, throttling.

S3 (and SNS where it fails) is driven by botocore's Stubber with expected_params for
every call; the alert topic and its subscriber queue stay in moto.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from mlwarden import clients
from mlwarden.errors import AlertDeliveryFailed, AwsCallFailed, RemediationFailed
from mlwarden.settings import SettingsError

BUCKET = "training-data"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
OWNER = {"DisplayName": "owner", "ID": "a" * 64}


def stub_reads_of_a_public_bucket(stub: Stubber, tags: dict[str, str] | None = None) -> None:
    """The four reads block_public_s3 makes on a bucket with no block whose ACL is public-read: its exposure
    (block, ACL, policy status; the account block comes from s3control), then its tags."""
    bucket = {"Bucket": BUCKET}
    stub.add_client_error(
        "get_public_access_block",
        service_error_code="NoSuchPublicAccessBlockConfiguration",
        service_message="The public access block configuration was not found",
        http_status_code=404,
        expected_params=bucket,
    )
    stub.add_response(
        "get_bucket_acl",
        {
            "Owner": OWNER,
            "Grants": [
                {"Grantee": {"Type": "CanonicalUser", "ID": OWNER["ID"]}, "Permission": "FULL_CONTROL"},
                {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
            ],
        },
        bucket,
    )
    stub.add_client_error(
        "get_bucket_policy_status",
        service_error_code="NoSuchBucketPolicy",
        service_message="The bucket policy does not exist",
        http_status_code=404,
        expected_params=bucket,
    )
    stub.add_response(
        "get_bucket_tagging",
        {"TagSet": [{"Key": key, "Value": value} for key, value in (tags or {"team": "ml"}).items()]},
        bucket,
    )


def put_block() -> dict[str, Any]:
    return {"Bucket": BUCKET, "PublicAccessBlockConfiguration": ALL_ON}


# --- AccessDenied on the write ---------------------------------------------------------------------------


def test_access_denied_on_the_write_is_alerted_and_raised(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub_reads_of_a_public_bucket(stub)
        stub.add_client_error(
            "put_public_access_block",
            service_error_code="AccessDenied",
            service_message="Access Denied",
            http_status_code=403,
            expected_params=put_block(),
        )

        with pytest.raises(RemediationFailed) as raised:
            handler(event)

        stub.assert_no_pending_responses()

    # The exception keeps the chain: RemediationFailed <- AwsCallFailed <- ClientError
    cause = raised.value.__cause__
    assert isinstance(cause, AwsCallFailed)
    assert (cause.action, cause.code, cause.access_denied) == ("s3:PutBucketPublicAccessBlock", "AccessDenied", True)
    assert isinstance(cause.__cause__, ClientError)
    assert cause.__cause__.response["Error"]["Code"] == "AccessDenied"
    assert raised.value.outcome.outcome.value == "failed"
    # and the security team was told which permission is missing
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert alert.attributes["severity"] == "HIGH"
    assert alert.subject == "[ML Warden] HIGH FAILED to fix: block_public_s3 training-data"
    assert "s3:PutBucketPublicAccessBlock" in alert.line("What")
    assert alert.outcome["error_code"] == "AccessDenied"
    assert alert.outcome["details"]["failed_action"] == "s3:PutBucketPublicAccessBlock"
    assert alert.outcome["undo"] is None


def test_failed_write_on_a_public_pii_bucket_keeps_its_severity_and_exposure(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub_reads_of_a_public_bucket(stub, tags={"mlwarden:pii": "true"})
        stub.add_client_error(
            "put_public_access_block", "AccessDenied", "Access Denied", 403, expected_params=put_block()
        )

        with pytest.raises(RemediationFailed):
            handler(event)

        stub.assert_no_pending_responses()

    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert alert.outcome["details"]["public_via"] == ["ACL grants READ to AllUsers"]


def test_access_denied_on_the_first_read_is_alerted_and_raised(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub.add_client_error(
            "get_public_access_block", "AccessDenied", "Access Denied", 403, expected_params={"Bucket": BUCKET}
        )

        with pytest.raises(RemediationFailed) as raised:
            handler(event)

        stub.assert_no_pending_responses()

    assert isinstance(raised.value.__cause__, AwsCallFailed)
    assert raised.value.__cause__.action == "s3:GetBucketPublicAccessBlock"
    assert "s3:GetBucketPublicAccessBlock" in aws.only_alert().line("What")


# --- the write does not take -----------------------------------------------------------------------------


def test_block_that_reads_back_partial_is_a_failure(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    partial = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub_reads_of_a_public_bucket(stub)
        stub.add_response("put_public_access_block", {}, put_block())
        stub.add_response("get_public_access_block", {"PublicAccessBlockConfiguration": partial}, {"Bucket": BUCKET})

        with pytest.raises(RemediationFailed) as raised:
            handler(event)

        stub.assert_no_pending_responses()

    assert raised.value.outcome.error_code == "VerificationFailed"
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert alert.outcome["error_code"] == "VerificationFailed"
    assert alert.outcome["actions"] == ["s3:PutBucketPublicAccessBlock"]
    assert alert.outcome["new_state"] == {"PublicAccessBlockConfiguration": partial}
    assert alert.outcome["previous_state"] == {"PublicAccessBlockConfiguration": None}
    assert alert.outcome["undo"] == "aws s3api delete-public-access-block --bucket training-data"


def test_block_written_but_unreadable_keeps_the_action_and_the_undo(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub_reads_of_a_public_bucket(stub)
        stub.add_response("put_public_access_block", {}, put_block())
        stub.add_client_error(
            "get_public_access_block", "AccessDenied", "Access Denied", 403, expected_params={"Bucket": BUCKET}
        )

        with pytest.raises(RemediationFailed) as raised:
            handler(event)

        stub.assert_no_pending_responses()

    assert isinstance(raised.value.__cause__, AwsCallFailed)
    alert = aws.only_alert()
    assert alert.outcome["outcome"] == "failed"
    assert alert.outcome["actions"] == ["s3:PutBucketPublicAccessBlock"]
    assert alert.outcome["undo"] == "aws s3api delete-public-access-block --bucket training-data"
    assert alert.outcome["details"]["failed_action"] == "s3:GetBucketPublicAccessBlock"
    assert "could not be read back" in alert.line("What")


# --- SNS down after a successful fix -----------------------------------------------------------------------


def fail_next_publish(stub: Stubber, topic_arn: str, code: str = "InternalError") -> None:
    stub.add_client_error(
        "publish",
        service_error_code=code,
        service_message="We encountered an internal error. Please try again.",
        http_status_code=500,
        expected_params={
            "TopicArn": topic_arn,
            "Subject": "[ML Warden] HIGH fixed: block_public_s3 training-data",
            "Message": ANY,
            "MessageAttributes": ANY,
        },
    )


def test_alert_that_cannot_be_published_raises_after_the_fix(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket(BUCKET, acl="public-read")
    with Stubber(clients.client("sns", "us-east-1")) as sns_stub:
        fail_next_publish(sns_stub, aws.topic_arn)

        with pytest.raises(AlertDeliveryFailed) as raised:
            handler(cloudtrail_event("PutBucketAcl", BUCKET))

        sns_stub.assert_no_pending_responses()

    # The fix stands
    assert aws.block_of(BUCKET) == ALL_ON
    # and the error says what failed, chained to the AWS error
    cause = raised.value.__cause__
    assert isinstance(cause, AwsCallFailed)
    assert (cause.action, cause.code) == ("sns:Publish", "InternalError")
    assert isinstance(cause.__cause__, ClientError)
    assert raised.value.outcome.outcome.value == "remediated"
    assert raised.value.outcome.alerted is False
    assert aws.alerts() == []


def test_alert_to_a_topic_that_does_not_exist_raises_after_the_fix(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    handler = make_handler(topic_arn="arn:aws:sns:us-east-1:123456789012:deleted-topic")
    aws.bucket(BUCKET, acl="public-read")

    with pytest.raises(AlertDeliveryFailed) as raised:
        handler(cloudtrail_event("PutBucketAcl", BUCKET))

    assert aws.block_of(BUCKET) == ALL_ON
    assert isinstance(raised.value.__cause__, AwsCallFailed)
    assert raised.value.__cause__.action == "sns:Publish"


def test_retry_after_a_lost_alert_delivers_the_alert(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket(BUCKET, acl="public-read")
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("sns", "us-east-1")) as sns_stub:
        fail_next_publish(sns_stub, aws.topic_arn)
        with pytest.raises(AlertDeliveryFailed):
            handler(event)
        sns_stub.assert_no_pending_responses()

    # EventBridge retries the same event once SNS is back: the stored outcome is alerted, nothing is re-done.
    retried = handler(event)

    assert (retried["outcome"], retried["alerted"]) == ("remediated", True)
    received = aws.alerts()
    assert [alert.attributes["outcome"] for alert in received] == ["remediated"]
    assert "Before:    PublicAccessBlockConfiguration=none" in received[0].body


def test_fifo_alert_topic_is_rejected_at_cold_start_or_receives_alerts(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    fifo = aws.sns.create_topic(Name="mlwarden-alerts.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    aws.bucket(BUCKET, acl="public-read")
    try:
        handler = make_handler(topic_arn=fifo)
    except SettingsError:
        return  # rejected at cold start: acceptable

    handler(cloudtrail_event("PutBucketAcl", BUCKET))


# --- throttling --------------------------------------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>R1</RequestId></Error>"
)


def test_throttled_read_is_retried_by_botocore(
    aws: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stubber answers above botocore's retry layer, so throttle at the HTTP layer instead:
    # the first GetPublicAccessBlock gets 503 SlowDown, everything after it reaches moto.
    aws.bucket(BUCKET, acl="public-read")
    throttled: list[str] = []

    def throttle_once(request: Any, **_: Any) -> AWSResponse | None:
        if not throttled and request.method == "GET" and "publicAccessBlock" in request.url:
            throttled.append(request.url)
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Raw(SLOW_DOWN))
        return None

    clients.client("s3").meta.events.register_first("before-send.s3", throttle_once)
    backoffs: list[float] = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", backoffs.append)

    result = handler(cloudtrail_event("PutBucketAcl", BUCKET))

    assert len(throttled) == 1
    assert len(backoffs) == 1  # botocore backed off once, then the retry succeeded
    assert result["outcome"] == "remediated"
    assert aws.block_of(BUCKET) == ALL_ON


# --- reads that fail without stopping the fix ----------------------------------------------------------------


def test_unreadable_acl_still_blocks_and_says_exposure_is_unknown(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    bucket = {"Bucket": BUCKET}
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub.add_client_error(
            "get_public_access_block", "NoSuchPublicAccessBlockConfiguration", "not found", 404, expected_params=bucket
        )
        stub.add_client_error("get_bucket_acl", "AccessDenied", "Access Denied", 403, expected_params=bucket)
        stub.add_client_error("get_bucket_policy_status", "NoSuchBucketPolicy", "none", 404, expected_params=bucket)
        stub.add_client_error(
            "get_bucket_tagging", "NoSuchTagSet", "The TagSet does not exist", 404, expected_params=bucket
        )
        stub.add_response("put_public_access_block", {}, put_block())
        stub.add_response("get_public_access_block", {"PublicAccessBlockConfiguration": ALL_ON}, bucket)

        result = handler(event)

        stub.assert_no_pending_responses()

    assert result["outcome"] == "remediated"
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "HIGH"
    assert alert.outcome["details"]["exposure_unknown"] == ["acl (AccessDenied)"]
    assert "could not be read" in alert.outcome["reason"]


def test_unreadable_tags_fail_closed_and_the_bucket_is_blocked(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    # Tags may exempt (TrustExemptionTags=true) and the bucket may carry one, but it cannot be read: none applies.
    handler = make_handler(env={"TRUST_EXEMPTION_TAGS": "true"})
    bucket = {"Bucket": BUCKET}
    event = cloudtrail_event("PutBucketAcl", BUCKET)
    with Stubber(clients.client("s3")) as stub:
        stub.add_client_error(
            "get_public_access_block", "NoSuchPublicAccessBlockConfiguration", "not found", 404, expected_params=bucket
        )
        stub.add_response(
            "get_bucket_acl",
            {"Owner": OWNER, "Grants": [{"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]},
            bucket,
        )
        stub.add_client_error("get_bucket_policy_status", "NoSuchBucketPolicy", "none", 404, expected_params=bucket)
        stub.add_client_error("get_bucket_tagging", "AccessDenied", "Access Denied", 403, expected_params=bucket)
        stub.add_response("put_public_access_block", {}, put_block())
        stub.add_response("get_public_access_block", {"PublicAccessBlockConfiguration": ALL_ON}, bucket)

        result = handler(event)

        stub.assert_no_pending_responses()

    assert result["outcome"] == "remediated"
    assert result["details"]["tags_unreadable"] is True
    assert "fail closed" in result["details"]["exemption"]


# --- account level -----------------------------------------------------------------------------------------

ACCOUNT = {"AccountId": "123456789012"}


def test_access_denied_on_the_account_write_is_alerted_and_raised(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # S3 (ListBuckets, no buckets) stays in moto; S3 Control is stubbed.
    event = cloudtrail_event("DeleteAccountPublicAccessBlock")
    with Stubber(clients.client("s3control")) as stub:
        stub.add_client_error(
            "get_public_access_block", "NoSuchPublicAccessBlockConfiguration", "not found", 404, expected_params=ACCOUNT
        )
        stub.add_client_error(
            "put_public_access_block",
            "AccessDenied",
            "Access Denied",
            403,
            expected_params={**ACCOUNT, "PublicAccessBlockConfiguration": ALL_ON},
        )

        with pytest.raises(RemediationFailed) as raised:
            handler(event)

        stub.assert_no_pending_responses()

    cause = raised.value.__cause__
    assert isinstance(cause, AwsCallFailed)
    assert cause.action == "s3:PutAccountPublicAccessBlock"
    assert isinstance(cause.__cause__, ClientError)
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert alert.outcome["resource"] == "AWS::::Account:123456789012"
    assert "s3:PutAccountPublicAccessBlock" in alert.line("What")


def test_account_block_that_reads_back_partial_is_a_failure(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    partial = dict(ALL_ON, RestrictPublicBuckets=False)
    event = cloudtrail_event("DeleteAccountPublicAccessBlock")
    with Stubber(clients.client("s3control")) as stub:
        stub.add_client_error(
            "get_public_access_block", "NoSuchPublicAccessBlockConfiguration", "not found", 404, expected_params=ACCOUNT
        )
        stub.add_response("put_public_access_block", {}, {**ACCOUNT, "PublicAccessBlockConfiguration": ALL_ON})
        stub.add_response("get_public_access_block", {"PublicAccessBlockConfiguration": partial}, ACCOUNT)

        with pytest.raises(RemediationFailed) as raised:
            handler(event)

        stub.assert_no_pending_responses()

    assert raised.value.outcome.error_code == "VerificationFailed"
    alert = aws.only_alert()
    assert alert.outcome["new_state"] == {"PublicAccessBlockConfiguration": partial}
    assert alert.outcome["actions"] == ["s3:PutAccountPublicAccessBlock"]
