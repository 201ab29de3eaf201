"""Security Hub findings in: a FAILED, NEW, ACTIVE finding for a control a check owns is evaluated on live state by
that check; ML Warden's own findings, and findings already handled in Security Hub, are not."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlwarden import checks, securityhub
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden_cli.template import load_template
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
S3_8 = json.loads((ROOT / "events" / "securityhub" / "control-s3-8-bucket-block-off.json").read_text())
ALL_ON = dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)


def _with(finding_changes: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(S3_8)
    event["detail"]["findings"][0].update(finding_changes)
    return event


def _routes(event: dict[str, Any]) -> set[str]:
    return {function.logical_id for function in TEMPLATE.route(event)}


def test_a_failed_control_finding_is_fixed_on_live_state_and_alerted(
    aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("mlw-feature-store")

    result = make_handler()(S3_8)

    assert result["outcome"] == "remediated"
    assert result["trigger"]["kind"] == "securityhub"
    assert result["trigger"]["name"] == "S3.8 FAILED"
    assert aws.block_of("mlw-feature-store") == ALL_ON
    assert aws.only_alert().outcome["controls"] == ["S3.2", "S3.3", "S3.8"]


def test_a_finding_whose_bucket_is_already_blocked_changes_nothing(
    aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    aws.bucket("mlw-feature-store", block=ALL_ON)

    assert make_handler()(S3_8)["outcome"] == "compliant"
    assert aws.alerts() == []


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"Workflow": {"Status": "SUPPRESSED"}}, "FAILED/SUPPRESSED/ACTIVE"),
        ({"Workflow": {"Status": "RESOLVED"}}, "FAILED/RESOLVED/ACTIVE"),
        ({"Workflow": {"Status": "NOTIFIED"}}, "FAILED/NOTIFIED/ACTIVE"),
        ({"RecordState": "ARCHIVED"}, "FAILED/NEW/ARCHIVED"),
        ({"Compliance": {"Status": "PASSED", "SecurityControlId": "S3.8"}}, "PASSED/NEW/ACTIVE"),
        ({"Compliance": {"Status": "FAILED", "SecurityControlId": "IAM.1"}}, "IAM.1 is not one"),
        ({"GeneratorId": "mlwarden/block_public_s3"}, "own Security Hub finding"),
        ({"Id": "mlwarden/block_public_s3/S3.8/arn:aws:s3:::mlw-feature-store"}, "own Security Hub finding"),
        (
            {"Resources": [{"Type": "AwsEc2Instance", "Id": "arn:aws:ec2:us-east-1:123456789012:instance/i-1"}]},
            "AwsEc2Instance is not a bucket",
        ),
        ({"Resources": []}, "names no resource"),
    ],
)
def test_findings_not_to_act_on_route_nowhere_and_are_ignored_if_delivered(
    aws: AwsWorld, make_handler: Callable[..., Handler], changes: dict[str, Any], why: str
) -> None:
    aws.bucket("mlw-feature-store")
    event = _with(changes)

    if "Resources" not in changes:
        assert _routes(event) == set()
    result = make_handler()(event)

    assert result["outcome"] == "ignored"
    assert why in result["reason"]
    assert aws.block_of("mlw-feature-store") is None
    assert aws.alerts() == []


def test_ml_wardens_own_imported_finding_never_comes_back(aws: AwsWorld) -> None:
    trigger = Trigger("e-1", "aws.s3", "cloudtrail", "PutBucketAcl", None, None, ACCOUNT, REGION)
    outcome = Outcome(
        "block_public_s3",
        OutcomeKind.FLAGGED,
        Severity.HIGH,
        "open",
        trigger,
        resource="arn:aws:s3:::mlw-feature-store",
        controls=("S3.8",),
    )
    (own,) = (planned.finding for planned in securityhub.plan(outcome))
    event = {**S3_8, "detail": {"findings": [own]}}

    assert _routes(event) == set()


def _owned_controls(name: str) -> frozenset[str]:
    try:
        return checks.load(name).controls
    except KeyError:  # a check without a CheckUnit owns no control
        return frozenset()


def test_each_function_listens_for_exactly_the_controls_its_check_owns() -> None:
    by_function = {name.replace("_", "") + "function": name for name in checks.CHECK_NAMES}
    for function in TEMPLATE.functions:
        name = by_function.get(function.logical_id.lower())
        if name is None:
            continue
        rules = [rule for rule in function.rules if rule.pattern.get("source") == ["aws.securityhub"]]
        routed = {
            control
            for rule in rules
            for control in rule.pattern["detail"]["findings"]["Compliance"]["SecurityControlId"]
        }
        assert routed == set(_owned_controls(name)), function.logical_id
    assert by_function["blockpublics3function"] == "block_public_s3"
