"""parse_event turns whatever EventBridge delivers into a typed event, and never raises."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.events import (
    ApiCall,
    ComplianceChange,
    MacieFinding,
    StateChange,
    Unrecognised,
    decode_policy_document,
    parse_event,
    scalar,
)

EventBuilder = Callable[..., dict[str, Any]]


# --- envelopes that are not ML Warden's -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(None, "event is a NoneType, not a JSON object", id="null"),
        pytest.param([{"source": "aws.s3"}], "event is a list, not a JSON object", id="list"),
        pytest.param("{}", "event is a str, not a JSON object", id="string"),
        pytest.param(42, "event is a int, not a JSON object", id="number"),
        pytest.param({}, "event has no EventBridge source and detail-type", id="empty-object"),
        pytest.param({"source": "aws.s3"}, "event has no EventBridge source and detail-type", id="no-detail-type"),
        pytest.param(
            {"source": ["aws.sagemaker"], "detail-type": "X", "detail": {}},
            "event has no EventBridge source and detail-type",
            id="source-as-list",  # the AWS docs' Model Package sample has this shape
        ),
    ],
)
def test_non_eventbridge_input_is_unrecognised_without_envelope(raw: Any, reason: str) -> None:
    event = parse_event(raw)

    assert event == Unrecognised(reason)


@pytest.mark.parametrize(
    "detail",
    [
        pytest.param(None, id="detail-null"),
        pytest.param("text", id="detail-string"),
        pytest.param([], id="detail-list"),
    ],
)
def test_detail_that_is_not_an_object_is_unrecognised_with_envelope(detail: Any) -> None:
    raw: dict[str, Any] = {"id": "e-1", "source": "aws.s3", "detail-type": "AWS API Call via CloudTrail"}
    if detail is not None:
        raw["detail"] = detail

    event = parse_event(raw)

    assert isinstance(event, Unrecognised)
    assert event.reason == "event detail is missing or not an object"
    assert event.envelope is not None
    assert event.envelope.id == "e-1"


def test_unknown_detail_type_is_unrecognised_and_says_which() -> None:
    event = parse_event({"source": "aws.sagemaker", "detail-type": "SageMaker Endpoint State Change", "detail": {}})

    assert isinstance(event, Unrecognised)
    assert event.reason == "detail-type 'SageMaker Endpoint State Change' is not one ML Warden handles"


def test_envelope_without_id_gets_a_placeholder() -> None:
    event = parse_event({"source": "aws.x", "detail-type": "Y", "detail": {}})

    assert isinstance(event, Unrecognised)
    assert event.envelope is not None
    assert event.envelope.id == "unknown"


# --- CloudTrail --------------------------------------------------------------------------------------------


def test_cloudtrail_call_is_parsed(cloudtrail_event: EventBuilder) -> None:
    raw = cloudtrail_event("PutBucketAcl", "training-data")

    event = parse_event(raw)

    assert isinstance(event, ApiCall)
    assert event.envelope.id == raw["id"]
    assert event.envelope.source == "aws.s3"
    assert event.event_source == "s3.amazonaws.com"
    assert event.event_name == "PutBucketAcl"
    assert event.event_id == raw["detail"]["eventID"]
    assert event.event_time == "2026-01-01T10:00:00Z"
    assert event.error_code is None
    assert event.parameter("bucketName") == "training-data"
    assert event.recipient_account == "123456789012"
    assert event.aws_region == "us-east-1"


def test_cloudtrail_call_with_null_request_parameters_has_empty_parameters(cloudtrail_event: EventBuilder) -> None:
    event = parse_event(cloudtrail_event("PutBucketPolicy", request_parameters=None))

    assert isinstance(event, ApiCall)
    assert event.request_parameters == {}
    assert event.parameter("bucketName") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("bucket", "bucket", id="string"),
        pytest.param(["bucket"], "bucket", id="one-element-list"),
        pytest.param("  bucket ", "bucket", id="padded"),
        pytest.param([""], None, id="list-of-empty"),  # S3's acl: [""]
        pytest.param("", None, id="empty"),
        pytest.param(["a", "b"], None, id="two-element-list"),
        pytest.param({"k": "v"}, None, id="object"),
        pytest.param(7, None, id="number"),
        pytest.param(None, None, id="null"),
    ],
)
def test_parameter_tolerates_s3_one_element_lists(cloudtrail_event: EventBuilder, value: Any, expected: Any) -> None:
    event = parse_event(cloudtrail_event("PutBucketAcl", request_parameters={"bucketName": value}))

    assert isinstance(event, ApiCall)
    assert event.parameter("bucketName") == expected


def test_failed_call_keeps_its_error_code(cloudtrail_event: EventBuilder) -> None:
    event = parse_event(cloudtrail_event("PutBucketAcl", "bucket-a", error_code="AccessDenied"))

    assert isinstance(event, ApiCall)
    assert event.error_code == "AccessDenied"


def test_assumed_role_actor_carries_the_issuing_role(cloudtrail_event: EventBuilder) -> None:
    event = parse_event(cloudtrail_event("PutBucketAcl", "bucket-a"))

    assert isinstance(event, ApiCall)
    assert event.actor.type == "AssumedRole"
    assert event.actor.arn == "arn:aws:sts::123456789012:assumed-role/DataScientist/data-scientist"
    assert event.actor.role_arn == "arn:aws:iam::123456789012:role/DataScientist"
    assert event.actor.account == "123456789012"
    assert event.actor.display == "arn:aws:sts::123456789012:assumed-role/DataScientist/data-scientist (AssumedRole)"


def test_service_actor_is_shown_by_invoked_by(cloudtrail_event: EventBuilder) -> None:
    identity = {"type": "AWSService", "invokedBy": "cloudformation.amazonaws.com"}

    event = parse_event(cloudtrail_event("CreateBucket", "bucket-a", user_identity=identity))

    assert isinstance(event, ApiCall)
    assert event.actor.role_arn is None
    assert event.actor.display == "cloudformation.amazonaws.com (AWSService)"


@pytest.mark.parametrize("identity", [None, "root", [], {}])
def test_missing_or_malformed_user_identity_gives_an_unknown_actor(
    cloudtrail_event: EventBuilder, identity: Any
) -> None:
    event = parse_event(cloudtrail_event("PutBucketAcl", "bucket-a", user_identity=identity))

    assert isinstance(event, ApiCall)
    assert event.actor.display == "unknown principal"


@pytest.mark.parametrize("missing", ["eventName", "eventSource"])
def test_cloudtrail_detail_without_name_or_source_is_unrecognised(cloudtrail_event: EventBuilder, missing: str) -> None:
    raw = cloudtrail_event("PutBucketAcl", "bucket-a")
    del raw["detail"][missing]

    event = parse_event(raw)

    assert isinstance(event, Unrecognised)
    assert event.reason == "CloudTrail detail has no eventName or eventSource"


@pytest.mark.parametrize(
    "bad",
    ["12345678901", "1234567890123", "12345678901a", "", 123456789012, None, " 123456789012"],
)
def test_bad_account_ids_are_dropped(cloudtrail_event: EventBuilder, bad: Any) -> None:
    raw = cloudtrail_event("PutBucketAcl", "bucket-a")
    raw["account"] = bad
    raw["detail"]["recipientAccountId"] = bad
    raw["detail"]["userIdentity"]["accountId"] = bad

    event = parse_event(raw)

    assert isinstance(event, ApiCall)
    assert event.envelope.account is None
    assert event.recipient_account is None
    assert event.actor.account is None


def test_recipient_account_falls_back_to_the_envelope(cloudtrail_event: EventBuilder) -> None:
    raw = cloudtrail_event("PutBucketAcl", "bucket-a")
    del raw["detail"]["recipientAccountId"]
    del raw["detail"]["awsRegion"]
    raw["region"] = "eu-west-1"

    event = parse_event(raw)

    assert isinstance(event, ApiCall)
    assert event.recipient_account == "123456789012"
    assert event.aws_region == "eu-west-1"


def test_long_text_is_cut(cloudtrail_event: EventBuilder) -> None:
    raw = cloudtrail_event("PutBucketAcl", "bucket-a", error_code="E" * 5000)

    event = parse_event(raw)

    assert isinstance(event, ApiCall)
    assert event.error_code == "E" * 2048


# --- AWS Config --------------------------------------------------------------------------------------------


def test_config_compliance_change_is_parsed(config_event: EventBuilder) -> None:
    raw = config_event("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "training-data", "NON_COMPLIANT")

    event = parse_event(raw)

    assert isinstance(event, ComplianceChange)
    assert event.rule_name == "s3-bucket-public-read-prohibited"
    assert event.resource_type == "AWS::S3::Bucket"
    assert event.resource_id == "training-data"
    assert event.compliance == "NON_COMPLIANT"
    assert event.previous_compliance == "COMPLIANT"
    assert event.account == "123456789012"
    assert event.aws_region == "us-east-1"


def test_config_fields_fall_back_to_the_evaluation_qualifier(config_event: EventBuilder) -> None:
    raw = config_event(
        "s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "training-data", "NON_COMPLIANT", previous=None
    )
    for key in ("configRuleName", "resourceType", "resourceId"):
        del raw["detail"][key]

    event = parse_event(raw)

    assert isinstance(event, ComplianceChange)
    assert (event.rule_name, event.resource_type, event.resource_id) == (
        "s3-bucket-public-read-prohibited",
        "AWS::S3::Bucket",
        "training-data",
    )
    assert event.previous_compliance is None


def test_config_change_without_compliance_type_is_unrecognised(config_event: EventBuilder) -> None:
    raw = config_event("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "training-data", "NON_COMPLIANT")
    del raw["detail"]["newEvaluationResult"]["complianceType"]

    event = parse_event(raw)

    assert isinstance(event, Unrecognised)
    assert "complianceType" in event.reason


# --- Macie -------------------------------------------------------------------------------------------------


def test_macie_finding_is_parsed(macie_event: EventBuilder) -> None:
    raw = macie_event("Policy:IAMUser/S3BucketPublic", "training-data")

    event = parse_event(raw)

    assert isinstance(event, MacieFinding)
    assert event.finding_type == "Policy:IAMUser/S3BucketPublic"
    assert event.finding_id == raw["detail"]["id"]
    assert event.bucket == "training-data"
    assert event.object_key is None
    assert event.severity == "High"
    assert event.account == "123456789012"
    assert event.aws_region == "us-east-1"


def test_macie_finding_without_bucket_has_none(macie_event: EventBuilder) -> None:
    event = parse_event(macie_event("Policy:IAMUser/S3BucketPublic", None))

    assert isinstance(event, MacieFinding)
    assert event.bucket is None


@pytest.mark.parametrize("missing", ["type", "id"])
def test_macie_finding_without_type_or_id_is_unrecognised(macie_event: EventBuilder, missing: str) -> None:
    raw = macie_event("Policy:IAMUser/S3BucketPublic", "training-data")
    del raw["detail"][missing]

    event = parse_event(raw)

    assert isinstance(event, Unrecognised)
    assert event.reason == "Macie finding has no type or id"


# --- never raises ------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
_detail_types = st.sampled_from(
    ["AWS API Call via CloudTrail", "Config Rules Compliance Change", "Macie Finding", "Other"]
)


@settings(max_examples=200, deadline=None)
@given(detail_type=_detail_types, detail=_json, extra=st.dictionaries(st.text(max_size=12), _json, max_size=4))
def test_parse_event_never_raises(detail_type: str, detail: Any, extra: dict[str, Any]) -> None:
    raw = {**extra, "source": "aws.s3", "detail-type": detail_type, "detail": detail}

    event = parse_event(raw)

    assert isinstance(event, ApiCall | ComplianceChange | MacieFinding | StateChange | Unrecognised)


# --- policy documents --------------------------------------------------------------------------------------

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}],
}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(POLICY, id="object"),
        pytest.param(json.dumps(POLICY), id="json-string"),
        pytest.param(json.dumps(POLICY, indent=4), id="pretty-json-string"),
        pytest.param(quote(json.dumps(POLICY)), id="url-encoded"),
        pytest.param([json.dumps(POLICY)], id="one-element-list"),
        pytest.param(f"  {json.dumps(POLICY)}\n", id="padded"),
    ],
)
def test_policy_document_is_decoded(value: Any) -> None:
    assert decode_policy_document(value) == POLICY


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("invalid-json-policy", id="invalid-json"),  # Panther fixture invalid-json-policy-should-not-alert
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param([""], id="list-of-empty"),
        pytest.param(None, id="null"),
        pytest.param("[1, 2]", id="json-array"),
        pytest.param('"text"', id="json-string-literal"),
        pytest.param(quote("{not json"), id="url-encoded-invalid"),
        pytest.param(17, id="number"),
    ],
)
def test_undecodable_policy_document_is_none(value: Any) -> None:
    assert decode_policy_document(value) is None


def _big_policy() -> dict[str, Any]:
    statements = [
        {
            "Sid": f"Reader{i}",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::1234567890{i:02d}:root"},
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::b/*",
        }
        for i in range(30)
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def test_long_policy_document_as_a_string_is_decoded() -> None:
    text = json.dumps(_big_policy())
    assert len(text) > 2048

    assert decode_policy_document(text) == _big_policy()


def test_long_policy_document_in_a_one_element_list_is_decoded() -> None:
    text = json.dumps(_big_policy())

    assert decode_policy_document([text]) == _big_policy()


def test_scalar_cuts_long_text() -> None:
    assert scalar("x" * 3000) == "x" * 2048
