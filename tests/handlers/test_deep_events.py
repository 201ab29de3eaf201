"""An event nested as deep as EventBridge's size limit allows crashes no handler and turns no check off.

EventBridge limits an event to 256 KB but not its depth
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html), and Lambda hands the
handler already-parsed JSON. A 256 KB event can nest about 37,000 levels; the checks walk parts of an
event recursively (SageMaker's request parameters were walked key by key and raised RecursionError), so
parse_event cuts containers deeper than MAX_EVENT_DEPTH.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.events import MAX_EVENT_DEPTH, cut_to_depth, within_depth

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
EVENT_SIZE_LIMIT = 256 * 1024
LEVEL = '{"a": }'  # what each level adds to the JSON text
LEVELS = (EVENT_SIZE_LIMIT - 2_000) // len(LEVEL)  # the rest of a sample event fits in 2,000 bytes

SAMPLES = {
    "block_public_s3": "s3/put-bucket-acl-public.json",
    "tag_pii_bucket": "macie/sensitive-data-personal.json",
    "flag_wildcard_iam": "iam/put-role-policy-s3-wildcard.json",
    "check_sagemaker_encryption": "sagemaker/create-training-job-unencrypted.json",
}
# Where each handler finds the resource it checks: nested that deep, the event names none.
RESOURCE_BRANCH = {
    "block_public_s3": "requestParameters",
    "tag_pii_bucket": "resourcesAffected",
    "flag_wildcard_iam": "requestParameters",
    "check_sagemaker_encryption": "requestParameters",
}


def nested(levels: int) -> dict[str, Any]:
    """{"a": {"a": ... {} ...}}, built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("app", SAMPLES)
@pytest.mark.parametrize("branch", ["detail", "resource"])
def test_a_256_kb_deeply_nested_event_ends_ignored(
    make_handler: Callable[..., Any], sample_event: Callable[[str], dict[str, Any]], app: str, branch: str
) -> None:
    event = sample_event(SAMPLES[app])
    if branch == "detail":
        event["detail"] = nested(LEVELS)
    else:
        event["detail"][RESOURCE_BRANCH[app]] = nested(LEVELS)

    result = make_handler(app=app)(event)

    assert result["outcome"] == "ignored"
    assert result["reason"]


def test_a_deep_branch_beside_the_bucket_does_not_stop_the_fix(
    aws: Any, make_handler: Callable[..., Any], sample_event: Callable[[str], dict[str, Any]]
) -> None:
    aws.bucket("mlw-training-data-acl", acl="public-read")
    event = sample_event(SAMPLES["block_public_s3"])
    event["detail"]["requestParameters"]["x-amz-meta"] = nested(LEVELS)

    result = make_handler()(event)

    assert result["outcome"] == "remediated"
    assert aws.block_of("mlw-training-data-acl") == ALL_ON
    assert len(aws.alerts()) == 1


def test_a_deep_branch_in_a_training_job_request_does_not_stop_the_check(
    aws: Any, make_handler: Callable[..., Any], sample_event: Callable[[str], dict[str, Any]]
) -> None:
    # Before: the SageMaker check walked the request parameters recursively and raised RecursionError.
    event = sample_event(SAMPLES["check_sagemaker_encryption"])
    event["detail"]["requestParameters"]["tags"] = [nested(LEVELS)]

    result = make_handler(app="check_sagemaker_encryption")(event)

    assert result["outcome"] == "flagged"
    (alert,) = aws.alerts()
    assert alert.outcome["resource"] == result["resource"]


@pytest.mark.parametrize(
    ("value", "limit", "within"),
    [
        ({}, 0, False),
        ("text", 0, True),
        ({"a": 1}, 1, True),
        ({"a": {"b": [1]}}, 2, False),
        ({"a": {"b": [1]}}, 3, True),
        (nested(MAX_EVENT_DEPTH), MAX_EVENT_DEPTH + 1, True),
        (nested(MAX_EVENT_DEPTH + 1), MAX_EVENT_DEPTH + 1, False),
    ],
)
def test_within_depth_counts_containers(value: Any, limit: int, within: bool) -> None:
    assert within_depth(value, limit) is within


def test_cut_to_depth_keeps_shallow_values_and_cuts_deep_ones() -> None:
    shallow = {"detail": {"requestParameters": {"bucketName": "b"}}}
    assert cut_to_depth(shallow) is shallow
    cut = cut_to_depth({"keep": "x", "deep": nested(LEVELS)}, limit=3)
    assert cut == {"keep": "x", "deep": {"a": {"a": None}}}
