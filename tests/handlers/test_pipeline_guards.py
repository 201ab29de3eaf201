"""The shared pipeline's guards, attacked: flapping, a reused event id, and saying each thing once.

Each attack comes from issue 10 or 11 and failed on the pipeline before this change: the flap hold let a
storm leave a bucket public, a crafted event id silenced the real event, and one training job alerted five
times.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlwarden import alert_dedup, flapguard
from mlwarden import pipeline as checks
from mlwarden.events import Event
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden.settings import Settings, load_settings

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
ACCOUNT = "123456789012"
REGION = "us-east-1"
EVENTS = Path(__file__).resolve().parents[2] / "events"
PII_BUCKET = "mlw-training-data-acl"  # the bucket events/macie/sensitive-data-personal.json names


def load_sample(relative: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / relative).read_text(encoding="utf-8"))
    return event


def human(name: str) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/{name}",
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/DataScientist"}},
    }


# --- a reused event id ---------------------------------------------------------------------------------------


def test_a_crafted_event_reusing_a_real_event_id_cannot_hide_the_real_event(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # Attack (issue 10, item 3): the attacker sends, first, an event with the real event's id naming a private
    # decoy bucket. Before, the real event for the public bucket then came back "compliant (redelivered)".
    aws.bucket("decoy", block=ALL_ON)
    aws.bucket("training-data", acl="public-read", tags={"mlwarden:pii": "true"})
    real = cloudtrail_event("PutBucketAcl", "training-data")
    crafted = cloudtrail_event("PutBucketAcl", "decoy")
    crafted["id"] = real["id"]

    decoy = handler(crafted)
    result = handler(real)

    assert decoy["outcome"] == "compliant"
    assert (result["outcome"], result["redelivered"]) == ("remediated", False)
    assert result["details"][checks.EVENT_ID_REUSED] is True
    assert aws.block_of("training-data") == ALL_ON
    received = aws.alerts()
    assert sorted((a.attributes["outcome"], a.attributes["severity"]) for a in received) == [
        ("flagged", "HIGH"),  # the reused id itself
        ("remediated", "CRITICAL"),
    ]
    [suspicious] = [a for a in received if a.attributes["outcome"] == "flagged"]
    assert suspicious.line("What").startswith(f"event id {real['id']} reused with a different payload")
    assert suspicious.outcome["findings"] == [checks.EVENT_ID_REUSED]


def test_a_true_redelivery_is_still_recognised_by_id_and_payload(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("training-data", acl="public-read")
    event = cloudtrail_event("PutBucketAcl", "training-data")

    first, again = handler(event), handler(copy.deepcopy(event))

    assert (first["redelivered"], again["redelivered"]) == (False, True)
    assert checks.EVENT_ID_REUSED not in again["details"]
    assert len(aws.alerts()) == 1


def test_the_reused_id_is_alerted_once_however_often_the_crafted_event_is_delivered(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("decoy", block=ALL_ON)
    real = cloudtrail_event("PutBucketAcl", "decoy")
    crafted = cloudtrail_event("PutBucketPolicy", "decoy")
    crafted["id"] = real["id"]

    handler(real)
    results = [handler(crafted) for _ in range(3)]

    assert [r["redelivered"] for r in results] == [False, True, True]
    assert [a.attributes["outcome"] for a in aws.alerts()] == ["flagged"]


# --- flapping -------------------------------------------------------------------------------------------------


def test_a_macie_pii_finding_during_a_flap_storm_locks_the_bucket(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    # Attack (issue 10, item 1): during the hold a Macie PII finding did not lock the bucket either.
    block = make_handler()
    tag = make_handler(app="tag_pii_bucket")
    aws.bucket(PII_BUCKET, acl="public-read")
    for _ in range(6):  # a storm: the bucket is flapping
        if aws.block_of(PII_BUCKET) is not None:
            aws.s3.delete_public_access_block(Bucket=PII_BUCKET)
        block(cloudtrail_event("DeleteBucketPublicAccessBlock", PII_BUCKET))
    aws.s3.delete_public_access_block(Bucket=PII_BUCKET)  # re-opened once more, and Macie finds PII now

    result = tag(load_sample("macie/sensitive-data-personal.json"))

    assert (result["outcome"], result["severity"]) == ("remediated", "CRITICAL")
    assert aws.block_of(PII_BUCKET) == ALL_ON
    assert aws.tags_of(PII_BUCKET)["mlwarden:pii"] == "true"
    assert "locking is off" not in result["reason"]
    assert aws.alerts()[-1].attributes["check"] == "tag_pii_bucket"


class Clock:
    """The flap guard's clock, moved by the storm."""

    def __init__(self) -> None:
        self.now = flapguard.time.time()

    def __call__(self) -> float:
        return self.now


def storm(aws: Any, handler: Any, build: Any, events: int, reopenings: int, clock: Clock) -> list[dict[str, Any]]:
    """`events` deliveries over two hours, `reopenings` of them humans re-opening the bucket.

    The rest is what a storm brings along: redeliveries, CloudTrail's record of ML Warden's own fix (which
    may arrive after the next re-opening), AWS Config evaluations and Macie policy findings.
    """
    build_cloudtrail_event, build_config_event, build_macie_event = build
    bucket = "training-data"
    parameters = {"bucketName": bucket, "PublicAccessBlockConfiguration": ALL_ON, "publicAccessBlock": ""}
    own = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/BlockPublicS3Role/mlwarden-BlockPublicS3",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/BlockPublicS3Role"}},
    }
    every = events // reopenings
    delivered: list[dict[str, Any]] = []
    results = []
    for i in range(events):
        clock.now += 7200 / events
        if i % every == 0:
            aws.s3.delete_public_access_block(Bucket=bucket)
            aws.s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
            event = build_cloudtrail_event("PutBucketAcl", bucket, user_identity=human(f"person-{i % 3}"))
        elif i % every == 1:
            event = build_cloudtrail_event(
                "PutBucketPublicAccessBlock", request_parameters=parameters, user_identity=own
            )
        elif i % 5 == 0:
            event = build_config_event("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", bucket, "NON_COMPLIANT")
        elif i % 5 == 1:
            event = build_macie_event("Policy:IAMUser/S3BucketPublic", bucket)
        else:
            event = delivered[i * 7919 % len(delivered)]  # a redelivery of an earlier event
        delivered.append(event)
        results.append(handler(event))
    return results


def storm_figures(
    aws: Any, handler: Any, build: Any, monkeypatch: pytest.MonkeyPatch, events: int, reopenings: int
) -> dict[str, Any]:
    clock = Clock()
    monkeypatch.setattr(flapguard.time, "time", clock)
    aws.bucket("training-data", tags={"mlwarden:pii": "true"})
    results = storm(aws, handler, build, events, reopenings, clock)
    received = aws.alerts()
    return {
        "final_block": aws.block_of("training-data"),
        "fixes": sum(r["outcome"] == "remediated" and not r["redelivered"] for r in results),
        "alerts": len(received),
        "flapping_alerts": [a.line("What")[:40] for a in received if a.attributes.get("flapping") == "true"],
        "own_role_left_open": sum("ML Warden's own role left" in r["reason"] for r in results),
    }


def test_a_storm_leaves_the_bucket_locked_and_the_alerts_bounded(
    aws: Any, handler: Any, monkeypatch: pytest.MonkeyPatch, cloudtrail_event: Any, config_event: Any, macie_event: Any
) -> None:
    build = (cloudtrail_event, config_event, macie_event)
    figures = storm_figures(aws, handler, build, monkeypatch, events=100, reopenings=10)

    assert figures["final_block"] == ALL_ON
    assert figures["fixes"] >= 10  # every human re-opening was fixed
    # Before the flap: one alert per fix; then the flapping alert; then one digest per hour at most.
    assert figures["alerts"] <= 3 + 1 + 2
    assert figures["flapping_alerts"][0].startswith("arn:aws:s3:::training-data re-opened")


@pytest.mark.fuzz
@pytest.mark.skipif(not os.environ.get("MLWARDEN_FUZZ_EXAMPLES"), reason="a 30-second soak: run by make fuzz")
def test_the_issue_s_storm_of_500_events_with_50_re_openings(
    aws: Any,
    handler: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cloudtrail_event: Any,
    config_event: Any,
    macie_event: Any,
) -> None:
    build = (cloudtrail_event, config_event, macie_event)
    figures = storm_figures(aws, handler, build, monkeypatch, events=500, reopenings=50)
    with capsys.disabled():
        print("\nstorm figures:", figures)

    assert figures["final_block"] == ALL_ON
    assert figures["fixes"] >= 50
    assert figures["alerts"] <= 3 + 1 + 2


# --- one alert per resource and finding set ------------------------------------------------------------------


def state_change(job: str, secondary: str, minute: int) -> dict[str, Any]:
    event = load_sample("sagemaker/training-job-state-change.json")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{job}"
    event["id"] = str(uuid.uuid4())
    event["resources"] = [arn]
    event["detail"].update(
        TrainingJobName=job,
        TrainingJobArn=arn,
        SecondaryStatus=secondary,
        LastModifiedTime=1748957427435 + minute * 60_000,
    )
    return event


def test_one_training_job_created_then_four_state_changes_alerts_once(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    # Bug (issue 11): one unencrypted training job sent five identical HIGH alerts.
    check = make_handler(app="check_sagemaker_encryption")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    job = "mlw-churn-xgb-unencrypted"
    sagemaker.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": "xgboost:1.7", "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution",
        OutputDataConfig={"S3OutputPath": "s3://model-artifacts/out/"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    events = [load_sample("sagemaker/create-training-job-unencrypted.json")] + [
        state_change(job, secondary, minute)
        for minute, secondary in enumerate(("Starting", "Downloading", "Training", "Uploading"), start=1)
    ]

    results = [check(event) for event in events]

    assert [r["outcome"] for r in results] == ["flagged"] * 5
    assert [r["alerted"] for r in results] == [True, False, False, False, False]
    assert all(r["alert_suppressed"] for r in results[1:])
    assert len({r["event_id"] for r in results}) == 5  # five outcomes, each recorded under its event
    assert len(aws.alerts()) == 1
    decided = [key for key in aws.outcome_records() if key.startswith("check_sagemaker_encryption.decide#")]
    assert len(decided) == 5


def pipeline_settings(aws: Any, **overrides: Any) -> Settings:
    settings = load_settings({"ALERT_TOPIC_ARN": aws.topic_arn, "OUTCOME_TABLE": aws.outcome_table})
    return replace(settings, **overrides)


def flagged(findings: tuple[str, ...], severity: Severity = Severity.HIGH) -> Any:
    def check(event: Event, settings: Settings) -> Outcome:
        trigger = Trigger.of(event)
        return Outcome(
            "check_sagemaker_encryption",
            OutcomeKind.FLAGGED,
            severity,
            "flagged",
            trigger,
            resource="arn:aws:sagemaker:us-east-1:123456789012:training-job/j",
            findings=findings,
        )

    return check


@pytest.mark.parametrize(
    ("second", "alerts_again"),
    [
        (flagged(("a", "b")), False),  # the same rules, the same severity
        (flagged(("a",)), True),  # a rule fewer
        (flagged(("a", "b", "c")), True),  # a rule more
        (flagged(("a", "b"), Severity.CRITICAL), True),  # the severity changed
    ],
)
def test_a_change_in_the_failed_rules_or_the_severity_alerts_again(
    aws: Any, cloudtrail_event: Any, second: Any, alerts_again: bool
) -> None:
    settings = pipeline_settings(aws)
    name = "check_sagemaker_encryption"
    first = checks.run_check(name, flagged(("a", "b")), cloudtrail_event("CreateTrainingJob"), settings)
    then = checks.run_check(name, second, cloudtrail_event("CreateTrainingJob"), settings)

    assert first.alerted is True
    assert then.alerted is alerts_again
    assert len(aws.alerts()) == (2 if alerts_again else 1)


def test_the_same_alert_goes_out_again_after_the_window(
    aws: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pipeline_settings(aws, alert_dedup_hours=1)
    name = "check_sagemaker_encryption"
    checks.run_check(name, flagged(("a",)), cloudtrail_event("CreateTrainingJob"), settings)
    later = alert_dedup.time.time() + 3601
    monkeypatch.setattr(alert_dedup.time, "time", lambda: later)
    again = checks.run_check(name, flagged(("a",)), cloudtrail_event("CreateTrainingJob"), settings)

    assert again.alerted is True
    assert len(aws.alerts()) == 2


def test_a_dedup_claim_is_released_when_the_alert_cannot_be_sent(aws: Any, cloudtrail_event: Any) -> None:
    from mlwarden.errors import AlertDeliveryFailed  # noqa: PLC0415

    name = "check_sagemaker_encryption"
    broken = pipeline_settings(aws, alert_topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic")
    with pytest.raises(AlertDeliveryFailed):
        checks.run_check(name, flagged(("a",)), cloudtrail_event("CreateTrainingJob"), broken)

    later = checks.run_check(name, flagged(("a",)), cloudtrail_event("CreateTrainingJob"), pipeline_settings(aws))

    assert later.alerted is True
    assert len(aws.alerts()) == 1


def test_a_planted_claim_dated_in_the_future_silences_nothing(aws: Any, cloudtrail_event: Any) -> None:
    # Attack (issue 10, item 7): state that suppresses talking is not trusted blindly either.
    name = "check_sagemaker_encryption"
    outcome = flagged(("a",))(checks.parse_event(cloudtrail_event("CreateTrainingJob")), pipeline_settings(aws))
    aws.dynamodb.put_item(
        TableName=aws.outcome_table,
        Item={"id": {"S": alert_dedup.dedup_key(name, outcome)}, "alerted_at": {"N": "32503680000"}},
    )

    result = checks.run_check(name, flagged(("a",)), cloudtrail_event("CreateTrainingJob"), pipeline_settings(aws))

    assert result.alerted is True


def test_a_planted_flap_record_dated_in_the_future_does_not_keep_flapping_quiet(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.dynamodb.put_item(
        TableName=aws.outcome_table,
        Item={
            "id": {"S": flapguard.flap_key("block_public_s3", "arn:aws:s3:::training-data")},
            "talked_at": {"N": "32503680000"},
        },
    )
    aws.bucket("training-data")
    for _ in range(4):
        aws.s3.delete_public_access_block(Bucket="training-data") if aws.block_of("training-data") else None
        aws.s3.put_bucket_acl(Bucket="training-data", ACL="public-read")
        result = handler(cloudtrail_event("PutBucketAcl", "training-data"))

    assert (result["flapping"], result["alerted"]) == (True, True)


def test_own_role_switching_the_account_block_off_is_fixed_and_critical(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # Attack (issue 10, item 4): a call claiming ML Warden's role switched the account's block off, unseen.
    own = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/BlockPublicS3Role/borrowed",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/BlockPublicS3Role"}},
    }
    event = cloudtrail_event("DeleteAccountPublicAccessBlock", request_parameters={}, user_identity=own)

    result = handler(event)

    assert (result["outcome"], result["severity"]) == ("remediated", "CRITICAL")
    assert aws.account_block() == ALL_ON
    assert "change made by ML Warden's own role left AWS::::Account:123456789012 open" in aws.only_alert().line("What")


def test_each_fix_alerts_even_with_the_same_findings_until_the_resource_flaps(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # A fix is a change ML Warden made, with its own undo: dedup never folds it (the flap guard may).
    aws.bucket("training-data", acl="public-read")
    handler(cloudtrail_event("PutBucketAcl", "training-data"))
    aws.s3.delete_public_access_block(Bucket="training-data")
    again = handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "training-data"))

    assert (again["outcome"], again["alerted"]) == ("remediated", True)
    assert len(aws.alerts()) == 2
    assert OutcomeKind.FAILED not in alert_dedup.DEDUPLICATED
