"""guard_kms_keys and guard_s3_data by sweep: the event path's outcome for the same state, nothing said twice,
every page of the listings read."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from mlwarden import checks, clients
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.rules.bucket_policy import requires_https
from mlwarden.settings import load_settings
from mlwarden.sweep import Summary, new_sweep_id, sweep_check
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler, wrap_cloudtrail

KMS = checks.load("guard_kms_keys")
DATA = checks.load("guard_s3_data")


def _sweep(unit: Any, monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "enforce") -> list[Outcome]:
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", mode)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    settings = load_settings()
    summary = Summary(new_sweep_id())
    return list(sweep_check(unit, Inventory(ACCOUNT, REGION), settings, summary.sweep_id, summary=summary))


def _by_resource(outcomes: list[Outcome]) -> dict[str | None, Outcome]:
    return {outcome.resource: outcome for outcome in outcomes}


def test_the_sweep_cancels_the_deletion_of_a_key_in_use_and_rotates_the_others(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = boto3.client("kms", region_name=REGION)
    in_use = kms.create_key(Tags=[{"TagKey": "mlwarden:protects", "TagValue": "feature store"}])["KeyMetadata"]
    kms.enable_key_rotation(KeyId=in_use["KeyId"])
    kms.schedule_key_deletion(KeyId=in_use["KeyId"], PendingWindowInDays=7)
    unrotated = kms.create_key()["KeyMetadata"]

    outcomes = _by_resource(_sweep(KMS, monkeypatch, aws))

    assert outcomes[in_use["Arn"]].outcome is OutcomeKind.REMEDIATED
    assert outcomes[in_use["Arn"]].controls == ("KMS.3",)
    assert kms.describe_key(KeyId=in_use["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert outcomes[unrotated["Arn"]].controls == ("KMS.4",)
    assert kms.get_key_rotation_status(KeyId=unrotated["KeyId"])["KeyRotationEnabled"] is True


def test_the_key_listing_reads_every_page(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    kms = boto3.client("kms", region_name=REGION)
    created = {kms.create_key()["KeyMetadata"]["Arn"] for _ in range(5)}
    monkeypatch.setattr("mlwarden.checks.guard_kms_keys._LIST_KEYS_PAGE", 2)

    listed = {KMS.resource_of(t) for t in KMS.targets_from_inventory(Inventory(ACCOUNT, REGION))}

    assert listed == created


def test_a_second_key_sweep_over_unchanged_keys_sends_nothing(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3.client("kms", region_name=REGION).create_key()
    first = _sweep(KMS, monkeypatch, aws, mode="dry-run")
    assert [o.outcome for o in first] == [OutcomeKind.WOULD_REMEDIATE]
    assert len(aws.alerts()) == 1

    second = _sweep(KMS, monkeypatch, aws, mode="dry-run")

    assert [o.outcome for o in second] == [OutcomeKind.WOULD_REMEDIATE]
    assert len(aws.alerts()) == 1


def test_key_event_and_sweep_give_the_same_outcome_for_the_same_state(
    aws: AwsWorld, make_handler: Callable[..., Handler], monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = boto3.client("kms", region_name=REGION)
    key = kms.create_key(Tags=[{"TagKey": "mlwarden:pii", "TagValue": "true"}])["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    event = wrap_cloudtrail(
        {
            "eventSource": "kms.amazonaws.com",
            "eventName": "DisableKey",
            "awsRegion": REGION,
            "requestParameters": {"keyId": key["KeyId"]},
            "recipientAccountId": ACCOUNT,
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/Mallory"},
        }
    )

    by_event = make_handler(app="guard_kms_keys", mode="dry-run")(event)
    clients.client.cache_clear()
    by_sweep = _by_resource(_sweep(KMS, monkeypatch, aws, mode="dry-run"))[key["Arn"]]

    assert by_event["outcome"] == by_sweep.outcome.value == "would-remediate"
    assert by_event["severity"] == by_sweep.severity.value == "CRITICAL"
    assert by_event["findings"] == list(by_sweep.findings)
    assert by_event["controls"] == list(by_sweep.controls)


def test_the_sweep_makes_pii_buckets_https_only_and_flags_open_access_points(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("pii-data", tags={"mlwarden:pii": "true"})
    aws.bucket("plain")
    aws.s3control.create_access_point(
        AccountId=ACCOUNT,
        Name="open-point",
        Bucket="plain",
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": False,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )

    outcomes = _by_resource(_sweep(DATA, monkeypatch, aws))

    assert outcomes["arn:aws:s3:::pii-data"].outcome is OutcomeKind.REMEDIATED
    policy = json.loads(aws.s3.get_bucket_policy(Bucket="pii-data")["Policy"])
    assert requires_https(policy, "arn:aws:s3:::pii-data")
    assert outcomes["arn:aws:s3:::plain"].outcome is OutcomeKind.FLAGGED
    point = outcomes[f"arn:aws:s3:{REGION}:{ACCOUNT}:accesspoint/open-point"]
    assert point.controls == ("S3.19",)
    assert point.findings == ("access-point-block-off",)


def test_the_access_point_listing_reads_every_page(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.bucket("plain")
    for n in range(5):
        aws.s3control.create_access_point(AccountId=ACCOUNT, Name=f"point-{n}", Bucket="plain")
    monkeypatch.setattr("mlwarden.checks.guard_s3_data._LIST_ACCESS_POINTS_PAGE", 2)

    listed = {DATA.resource_of(t) for t in DATA.targets_from_inventory(Inventory(ACCOUNT, REGION))}

    assert {f"arn:aws:s3:{REGION}:{ACCOUNT}:accesspoint/point-{n}" for n in range(5)} <= listed
    assert "arn:aws:s3:::plain" in listed


def test_bucket_event_and_sweep_give_the_same_outcome_for_the_same_state(
    aws: AwsWorld,
    make_handler: Callable[..., Handler],
    cloudtrail_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("via-event", "via-sweep"):
        aws.bucket(name, tags={"mlwarden:pii": "true"})

    by_event = make_handler(app="guard_s3_data", mode="dry-run")(cloudtrail_event("DeleteBucketPolicy", "via-event"))
    clients.client.cache_clear()
    by_sweep = _by_resource(_sweep(DATA, monkeypatch, aws, mode="dry-run"))["arn:aws:s3:::via-sweep"]

    assert by_event["outcome"] == by_sweep.outcome.value == "would-remediate"
    assert by_event["severity"] == by_sweep.severity.value
    assert by_event["findings"] == list(by_sweep.findings)
    assert by_event["controls"] == list(by_sweep.controls)
