"""tag_pii_bucket against moto: the bucket's tag set after each finding, escalation, exemption, dry-run."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jmespath
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from mlwarden import clients
from mlwarden.errors import RemediationFailed
from mlwarden.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "fixtures" / "real" / "macie" / "finding_detail_only"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
PII_BUCKET = "mlw-training-data-acl"
PUBLIC_BUCKET = "mlw-shared-datasets"
FOREIGN = {"team": "ml-research", "cost-center": "ml-1234", "owner": "data-platform"}
PERSONAL_TYPES = "ADDRESS DATE_OF_BIRTH NAME PHONE_NUMBER USA_SOCIAL_SECURITY_NUMBER"
# What events/macie/sensitive-data-personal.json writes on a bucket without PII tags.
PERSONAL_TAGS = {
    "mlwarden:pii": "true",
    "mlwarden:pii-severity": "High",
    "mlwarden:pii-types": PERSONAL_TYPES,
    "mlwarden:pii-last-finding": "7b3d5f9a1c2e4a6b8d0f2a4c6e8b0d1f",
    "mlwarden:pii-last-seen": "2025-06-03T13:05:11Z",
}
_TAG_VALUE = re.compile(r"^[A-Za-z0-9 +\-=._:/@]{0,256}$")


@pytest.fixture
def tagger(make_handler: Callable[..., Any]) -> Callable[..., Any]:
    """tag_pii_bucket without the outcome table: these tests replay one event to prove resource-level
    idempotency (Macie re-publishes a finding as new events); event-id dedup is tested on its own below."""

    def make(**kwargs: Any) -> Any:
        env = {"OUTCOME_TABLE": None, **kwargs.pop("env", {})}
        return make_handler(app="tag_pii_bucket", env=env, **kwargs)

    return make


def test_the_same_event_delivered_again_is_neither_re_done_nor_re_alerted(
    aws: Any, make_handler: Callable[..., Any], sample_event: Any
) -> None:
    aws.bucket(PUBLIC_BUCKET, acl="public-read")
    handler = make_handler(app="tag_pii_bucket")
    event = sample_event("macie/sensitive-data-financial.json")

    first, second = handler(event), handler(event)

    assert (first["redelivered"], second["redelivered"]) == (False, True)
    assert second["outcome"] == first["outcome"]
    assert len(aws.alerts()) == 1


def own_tags(tags: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in tags.items() if key.startswith("mlwarden:pii")}


def finding(sample_event: Callable[[str], dict[str, Any]], name: str, **detail: Any) -> dict[str, Any]:
    event = copy.deepcopy(sample_event(f"macie/sensitive-data-{name}.json"))
    event["detail"].update(detail)
    return event


def wrap(detail: dict[str, Any], bucket: str) -> dict[str, Any]:
    """A recorded finding (tests/fixtures/real) in its EventBridge envelope, aimed at a moto bucket."""
    detail = copy.deepcopy(detail)
    detail["resourcesAffected"]["s3Bucket"]["name"] = bucket
    return {
        "version": "0",
        "id": f"event-{detail['id']}",
        "detail-type": "Macie Finding",
        "source": "aws.macie",
        "account": "123456789012",
        "time": "2026-01-01T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def custom_identifiers(names: list[str]) -> dict[str, Any]:
    return {
        "detections": [{"arn": f"id-{i}", "name": name, "count": 1} for i, name in enumerate(names)],
        "totalCount": len(names),
    }


# --- tagging -------------------------------------------------------------------------------------------


def test_personal_finding_tags_a_private_bucket_and_keeps_its_tags(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON)

    result = tagger()(sample_event("macie/sensitive-data-personal.json"))

    assert result["outcome"] == "remediated"
    assert result["severity"] == "HIGH"
    assert aws.tags_of(PII_BUCKET) == {**FOREIGN, **PERSONAL_TAGS}
    assert aws.block_of(PII_BUCKET) == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["check"] == "tag_pii_bucket"
    assert "s3:PutBucketTagging" in alert.line("Done")
    # Undo removes only ML Warden's keys (PutBucketTagging replaces the set: restoring it would wipe others').
    run_tag_undo(aws, PII_BUCKET, alert.line("Undo"))
    assert aws.tags_of(PII_BUCKET) == FOREIGN


def run_tag_undo(aws: Any, bucket: str, undo: str) -> None:
    """Run the alert's tag undo as the AWS CLI would: its --query (JMESPath) over the tags as they are now,
    then PutBucketTagging with the result."""
    match = re.search(r"get-bucket-tagging --bucket \S+ --query '([^']*)' --output json", undo)
    assert match, undo
    assert undo.startswith(f"aws s3api put-bucket-tagging --bucket {bucket} --tagging ")
    current = aws.s3.get_bucket_tagging(Bucket=bucket)
    aws.s3.put_bucket_tagging(Bucket=bucket, Tagging=jmespath.search(match.group(1), current))


def test_undo_restores_only_the_keys_ml_warden_wrote_and_keeps_tags_set_since(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    # Given a bucket tagged by a finding, and a tag its owners add afterwards
    aws.bucket(PII_BUCKET, tags={"team": "ml-research"}, block=ALL_ON)
    tagger()(sample_event("macie/sensitive-data-personal.json"))
    aws.s3.put_bucket_tagging(
        Bucket=PII_BUCKET,
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in {**aws.tags_of(PII_BUCKET), "retention": "1y"}.items()]},
    )

    # When a person runs the alert's undo
    run_tag_undo(aws, PII_BUCKET, aws.only_alert().line("Undo"))

    # Then only ML Warden's keys are gone; the tag added since stays (the old undo restored {"team"} alone)
    assert aws.tags_of(PII_BUCKET) == {"team": "ml-research", "retention": "1y"}


def test_undo_puts_back_the_previous_values_of_our_keys(aws: Any, tagger: Any, sample_event: Any) -> None:
    earlier = {**FOREIGN, "mlwarden:pii": "true", "mlwarden:pii-severity": "Low", "mlwarden:pii-types": "NAME"}
    aws.bucket(PII_BUCKET, tags=earlier, block=ALL_ON)
    tagger()(sample_event("macie/sensitive-data-personal.json"))

    run_tag_undo(aws, PII_BUCKET, aws.only_alert().line("Undo"))

    assert aws.tags_of(PII_BUCKET) == earlier


def test_bucket_without_tags_is_tagged_and_undo_removes_our_keys(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)

    tagger()(sample_event("macie/sensitive-data-personal.json"))

    assert own_tags(aws.tags_of(PII_BUCKET))["mlwarden:pii"] == "true"
    undo = aws.only_alert().line("Undo")
    assert "delete-bucket-tagging" not in undo  # would also delete tags set after the finding
    aws.s3.put_bucket_tagging(
        Bucket=PII_BUCKET,
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in {**aws.tags_of(PII_BUCKET), "added": "later"}.items()]},
    )
    run_tag_undo(aws, PII_BUCKET, undo)
    assert aws.tags_of(PII_BUCKET) == {"added": "later"}


def test_tags_written_by_someone_else_between_findings_survive(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON)
    handler = tagger()
    handler(sample_event("macie/sensitive-data-personal.json"))
    # Someone else writes the whole set again, with their own new tag and a changed value.
    changed = {**aws.tags_of(PII_BUCKET), "owner": "ml-platform", "data-class": "restricted"}
    aws.s3.put_bucket_tagging(
        Bucket=PII_BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in changed.items()]}
    )

    handler(sample_event("macie/sensitive-data-multiple.json"))

    tags = aws.tags_of(PII_BUCKET)
    assert {k: tags[k] for k in ("team", "cost-center", "owner", "data-class")} == {
        **FOREIGN,
        "owner": "ml-platform",
        "data-class": "restricted",
    }
    assert "CREDIT_CARD_NUMBER" in tags["mlwarden:pii-types"].split()


def test_severity_is_never_lowered_and_types_accumulate(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)
    handler = tagger()
    handler(sample_event("macie/sensitive-data-personal.json"))  # High

    result = handler(sample_event("macie/sensitive-data-custom-identifier.json"))  # Medium, a later finding

    tags = aws.tags_of(PII_BUCKET)
    assert tags["mlwarden:pii-severity"] == "High"
    assert tags["mlwarden:pii-types"] == f"{PERSONAL_TYPES} custom:email_check"
    assert tags["mlwarden:pii-last-finding"] == "9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f"
    assert result["severity"] == "HIGH"  # the bucket's severity, not only this finding's


def test_a_higher_severity_raises_the_tag(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON, tags={"mlwarden:pii": "true", "mlwarden:pii-severity": "Low"})

    tagger()(sample_event("macie/sensitive-data-personal.json"))

    assert aws.tags_of(PII_BUCKET)["mlwarden:pii-severity"] == "High"


@pytest.mark.parametrize(
    ("setup", "sample"),
    [
        pytest.param(lambda aws: aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON), "multiple", id="tagged"),
        pytest.param(
            lambda aws: aws.bucket(PII_BUCKET, tags={f"t{i}": "v" for i in range(48)}, block=ALL_ON),
            "personal",
            id="truncated",
        ),
        pytest.param(lambda aws: aws.bucket(PUBLIC_BUCKET, acl="public-read"), "financial", id="locked"),
    ],
)
def test_replaying_the_same_finding_changes_nothing_and_sends_no_second_alert(
    aws: Any, tagger: Any, sample_event: Any, setup: Callable[[Any], str], sample: str
) -> None:
    bucket = setup(aws)
    handler = tagger()
    handler(sample_event(f"macie/sensitive-data-{sample}.json"))
    tags, block = aws.tags_of(bucket), aws.block_of(bucket)
    # Macie publishes the same finding again as a new EventBridge event (a new event id).
    again = sample_event(f"macie/sensitive-data-{sample}.json")
    again["id"] = "b1f0c9e2-0000-4000-8000-000000000001"

    result = handler(again)

    assert result["outcome"] == "compliant"
    assert result["actions"] == []
    assert (aws.tags_of(bucket), aws.block_of(bucket)) == (tags, block)
    assert len(aws.alerts()) == 1


def test_a_recurring_finding_moves_only_the_last_seen_tag_without_an_alert(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)
    handler = tagger()
    handler(sample_event("macie/sensitive-data-personal.json"))
    aws.alerts()

    result = handler(finding(sample_event, "personal", updatedAt="2025-07-01T09:00:00.000Z"))

    assert result["outcome"] == "compliant"
    assert result["actions"] == ["s3:PutBucketTagging"]
    assert aws.tags_of(PII_BUCKET)["mlwarden:pii-last-seen"] == "2025-07-01T09:00:00Z"
    assert len(aws.alerts()) == 1  # the first finding's


def test_an_older_finding_arriving_late_does_not_replace_the_latest(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)
    handler = tagger()
    handler(sample_event("macie/sensitive-data-custom-identifier.json"))  # 2025-06-05

    handler(sample_event("macie/sensitive-data-personal.json"))  # 2025-06-03, delivered later

    tags = aws.tags_of(PII_BUCKET)
    assert tags["mlwarden:pii-last-finding"] == "9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f"
    assert tags["mlwarden:pii-last-seen"] == "2025-06-05T02:31:09Z"
    assert "USA_SOCIAL_SECURITY_NUMBER" in tags["mlwarden:pii-types"]  # the types still merge


@pytest.mark.parametrize("fixture", ["aws-samples-reveal__avro.json", "aws-samples-reveal__json.json"])
def test_recorded_multiple_findings_tag_every_detection_type(aws: Any, tagger: Any, fixture: str) -> None:
    detail = json.loads((REAL / fixture).read_text())
    expected = sorted(
        detection["type"]
        for category in detail["classificationDetails"]["result"]["sensitiveData"]
        for detection in category["detections"]
    )
    aws.bucket("recorded-bucket", block=ALL_ON)

    result = tagger()(wrap(detail, "recorded-bucket"))

    assert result["outcome"] == "remediated"
    assert aws.tags_of("recorded-bucket")["mlwarden:pii-types"] == " ".join(expected)
    assert result["details"]["finding"]["detection_count"] == sum(
        d["count"] for c in detail["classificationDetails"]["result"]["sensitiveData"] for d in c["detections"]
    )


# --- S3's tag rules ------------------------------------------------------------------------------------


def test_fifty_tag_limit_keeps_foreign_tags_writes_what_fits_and_alerts(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    foreign = {f"cost-tag-{i:02}": f"value-{i}" for i in range(47)}
    aws.bucket(PII_BUCKET, tags=foreign, block=ALL_ON)

    result = tagger()(sample_event("macie/sensitive-data-personal.json"))

    tags = aws.tags_of(PII_BUCKET)
    assert len(tags) == 50
    assert {k: tags[k] for k in foreign} == foreign
    # Priority order: pii, severity, types; the last-finding bookkeeping did not fit.
    assert set(own_tags(tags)) == {"mlwarden:pii", "mlwarden:pii-severity", "mlwarden:pii-types"}
    assert result["details"]["tags"]["dropped_keys"] == ["mlwarden:pii-last-finding", "mlwarden:pii-last-seen"]
    assert "TRUNCATED" in aws.only_alert().line("What")


def test_full_tag_set_cannot_be_tagged_and_is_flagged(aws: Any, tagger: Any, sample_event: Any) -> None:
    foreign = {f"t{i:02}": "v" for i in range(50)}
    aws.bucket(PII_BUCKET, tags=foreign, block=ALL_ON)

    result = tagger()(sample_event("macie/sensitive-data-personal.json"))

    assert result["outcome"] == "flagged"
    assert result["actions"] == []
    assert aws.tags_of(PII_BUCKET) == foreign
    assert "cannot be tagged" in aws.only_alert().line("What")


def test_types_tag_stays_within_s3_value_rules_and_says_what_it_left_out(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    names = [f"Customer ref #{i} (EU) ünïcode/ñ" for i in range(30)]
    event = sample_event("macie/sensitive-data-custom-identifier.json")
    event["detail"]["classificationDetails"]["result"]["customDataIdentifiers"] = custom_identifiers(names)
    aws.bucket(PII_BUCKET, block=ALL_ON)

    result = tagger()(event)

    value = aws.tags_of(PII_BUCKET)["mlwarden:pii-types"]
    assert len(value) <= 256
    assert _TAG_VALUE.match(value)
    assert value.startswith("custom:Customer_ref_0_EU_")
    left_out = result["details"]["tags"]["types_left_out"]
    assert left_out > 0
    assert value.endswith(f" +{left_out}")
    assert "left out of mlwarden:pii-types" in aws.only_alert().line("What")


def test_same_overflowing_finding_twice_gives_the_same_value(aws: Any, tagger: Any, sample_event: Any) -> None:
    event = sample_event("macie/sensitive-data-custom-identifier.json")
    event["detail"]["classificationDetails"]["result"]["customDataIdentifiers"] = custom_identifiers(
        [f"identifier number {i}" for i in range(40)]
    )
    aws.bucket(PII_BUCKET, block=ALL_ON)
    handler = tagger()
    handler(event)
    first = aws.tags_of(PII_BUCKET)

    result = handler(event)

    assert result["outcome"] == "compliant"
    assert aws.tags_of(PII_BUCKET) == first


# --- no sensitive values --------------------------------------------------------------------------------

CANARIES = ("123-45-6789", "4111111111111111", "jane.doe@example.com", "AKIAIOSFODNN7EXAMPLE")


def test_no_sensitive_value_reaches_logs_alerts_or_the_outcome(
    aws: Any, tagger: Any, sample_event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Findings carry no values, but occurrences, column names and keys are free text: plant canaries there.
    event = sample_event("macie/sensitive-data-personal.json")
    detections = event["detail"]["classificationDetails"]["result"]["sensitiveData"][0]["detections"]
    detections[0]["occurrences"]["cells"][0]["cellReference"] = CANARIES[0]
    detections[1]["occurrences"]["cells"][0]["columnName"] = CANARIES[1]
    detections[2]["sample"] = CANARIES[2]
    event["detail"]["resourcesAffected"]["s3Object"]["key"] = f"exports/{CANARIES[2]}/{CANARIES[3]}.csv"
    event["detail"]["resourcesAffected"]["s3Object"]["path"] = f"{PII_BUCKET}/exports/{CANARIES[3]}.csv"
    aws.bucket(PII_BUCKET, block=ALL_ON)
    caplog.set_level(logging.DEBUG)

    result = tagger(env={"POWERTOOLS_LOG_LEVEL": "DEBUG"})(event)

    # Every record with every field Powertools would print (message and extra keys).
    logs = "\n".join(json.dumps(record.__dict__, default=str) for record in caplog.records)
    alert = aws.only_alert()
    assert "check decided" in logs  # the handler's own records were captured
    for text in (
        logs,
        alert.body,
        alert.subject,
        json.dumps(result),
        json.dumps(aws.tags_of(PII_BUCKET)),
    ):
        for canary in CANARIES:
            assert canary not in text


# --- escalation ------------------------------------------------------------------------------------------


def test_pii_in_a_public_bucket_is_critical_and_locked_in_enforce(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PUBLIC_BUCKET, acl="public-read", tags={"team": "analytics"})

    result = tagger()(sample_event("macie/sensitive-data-financial.json"))

    assert result["outcome"] == "remediated"
    assert result["severity"] == "CRITICAL"
    assert aws.block_of(PUBLIC_BUCKET) == ALL_ON
    assert aws.tags_of(PUBLIC_BUCKET)["team"] == "analytics"
    assert aws.tags_of(PUBLIC_BUCKET)["mlwarden:pii-types"] == "CREDIT_CARD_NUMBER CREDIT_CARD_SECURITY_CODE"
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert "PII in a public bucket" in alert.line("What")
    assert alert.line("Done") == "s3:PutBucketPublicAccessBlock, s3:PutBucketTagging"  # locked first
    assert "aws s3api delete-public-access-block --bucket mlw-shared-datasets" in alert.line("Undo")


def test_block_partly_off_without_a_public_grant_is_locked_but_not_called_public(
    aws: Any, tagger: Any, sample_event: Any
) -> None:
    aws.bucket(PII_BUCKET, block={**ALL_ON, "RestrictPublicBuckets": False})

    result = tagger()(sample_event("macie/sensitive-data-personal.json"))

    # block_public_s3 grades this state MEDIUM; the Macie finding's own severity (High) is the floor.
    assert result["severity"] == "HIGH"
    assert "public bucket" not in result["reason"]
    assert "block is off (no public grant yet" in result["reason"]
    assert aws.block_of(PII_BUCKET) == ALL_ON


def test_public_policy_bucket_is_locked(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PUBLIC_BUCKET, public_policy=True)

    result = tagger()(sample_event("macie/sensitive-data-financial.json"))

    assert result["outcome"] == "remediated"
    assert "bucket policy is public" in result["reason"]
    assert aws.block_of(PUBLIC_BUCKET) == ALL_ON


def test_exempt_public_bucket_is_tagged_but_never_locked(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket("mlw-public-website", acl="public-read", tags={"mlwarden:exempt": "true", "purpose": "model cards"})
    aws.grant_exemption("arn:aws:s3:::mlw-public-website")

    result = tagger()(sample_event("macie/sensitive-data-credentials.json"))

    assert result["outcome"] == "exempt"
    assert result["severity"] == "CRITICAL"
    assert aws.block_of("mlw-public-website") is None
    tags = aws.tags_of("mlw-public-website")
    assert tags["mlwarden:exempt"] == "true"
    assert tags["mlwarden:pii-types"] == "AWS_CREDENTIALS OPENSSH_PRIVATE_KEY"
    alert = aws.only_alert()
    assert "exempt" in alert.line("What")
    assert alert.line("Done") == "s3:PutBucketTagging"


@pytest.mark.parametrize(
    ("bucket", "sample", "env"),
    [
        ("mlw-public-website", "credentials", {}),
        (PUBLIC_BUCKET, "financial", {"LOCK_PUBLIC_PII_BUCKETS": "false"}),
    ],
    ids=["exempt", "locking-off"],
)
def test_replayed_finding_on_a_bucket_left_public_is_not_alerted_twice(
    aws: Any, tagger: Any, sample_event: Any, bucket: str, sample: str, env: dict[str, str]
) -> None:
    aws.bucket(bucket, acl="public-read")
    aws.grant_exemption("arn:aws:s3:::mlw-public-website")
    handler = tagger(env=env)
    handler(sample_event(f"macie/sensitive-data-{sample}.json"))
    tags = aws.tags_of(bucket)

    result = handler(sample_event(f"macie/sensitive-data-{sample}.json"))

    assert result["outcome"] == "compliant"
    assert "left unlocked" in result["reason"]
    assert aws.tags_of(bucket) == tags
    assert aws.block_of(bucket) is None
    assert len(aws.alerts()) == 1


def test_a_new_finding_on_an_exempt_public_bucket_is_alerted_again(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket("mlw-public-website", acl="public-read")
    aws.grant_exemption("arn:aws:s3:::mlw-public-website")
    handler = tagger()
    handler(sample_event("macie/sensitive-data-credentials.json"))

    result = handler(finding(sample_event, "credentials", id="another-finding", updatedAt="2025-07-01T00:00:00Z"))

    assert result["outcome"] == "exempt"
    assert len(aws.alerts()) == 2


def test_dry_run_with_locking_off_says_it_would_not_lock(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PUBLIC_BUCKET, acl="public-read")

    result = tagger(mode="dry-run", env={"LOCK_PUBLIC_PII_BUCKETS": "false"})(
        sample_event("macie/sensitive-data-financial.json")
    )

    assert result["outcome"] == "would-remediate"
    assert "not locked: locking is off" in result["reason"]
    assert aws.tags_of(PUBLIC_BUCKET) == {}
    assert aws.block_of(PUBLIC_BUCKET) is None


def test_locking_can_be_turned_off(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PUBLIC_BUCKET, acl="public-read")

    result = tagger(env={"LOCK_PUBLIC_PII_BUCKETS": "false"})(sample_event("macie/sensitive-data-financial.json"))

    assert result["outcome"] == "flagged"
    assert result["severity"] == "CRITICAL"
    assert aws.block_of(PUBLIC_BUCKET) is None
    assert aws.tags_of(PUBLIC_BUCKET)["mlwarden:pii"] == "true"
    assert "LOCK_PUBLIC_PII_BUCKETS=false" in aws.only_alert().line("What")


# --- dry-run ---------------------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_says_what_it_would_do(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PUBLIC_BUCKET, acl="public-read", tags={"team": "analytics"})

    result = tagger(mode="dry-run")(sample_event("macie/sensitive-data-financial.json"))

    assert result["outcome"] == "would-remediate"
    assert result["severity"] == "CRITICAL"
    assert result["actions"] == []
    assert aws.tags_of(PUBLIC_BUCKET) == {"team": "analytics"}
    assert aws.block_of(PUBLIC_BUCKET) is None
    alert = aws.only_alert()
    assert "would tag the bucket" in alert.line("What")
    assert "mlwarden:pii-types" in alert.line("Would set")


def test_dry_run_on_a_private_bucket_writes_no_tags(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON)

    result = tagger(mode="dry-run")(sample_event("macie/sensitive-data-personal.json"))

    assert result["outcome"] == "would-remediate"
    assert aws.tags_of(PII_BUCKET) == FOREIGN
    assert "dry run: would tag" in aws.only_alert().line("What")


# --- object tagging ---------------------------------------------------------------------------------------


def test_objects_are_not_tagged_by_default(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)
    key = "raw/customers/2025-05/customers.csv"
    aws.s3.put_object(Bucket=PII_BUCKET, Key=key, Body=b"x", Tagging="source=crm")

    tagger()(sample_event("macie/sensitive-data-personal.json"))

    assert aws.s3.get_object_tagging(Bucket=PII_BUCKET, Key=key)["TagSet"] == [{"Key": "source", "Value": "crm"}]


def test_object_tagging_merges_within_the_ten_tag_limit(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)
    key = "raw/customers/2025-05/customers.csv"
    foreign = "&".join(f"k{i}=v{i}" for i in range(8))
    aws.s3.put_object(Bucket=PII_BUCKET, Key=key, Body=b"x", Tagging=foreign)

    result = tagger(env={"TAG_PII_OBJECTS": "true"})(sample_event("macie/sensitive-data-personal.json"))

    tags = {t["Key"]: t["Value"] for t in aws.s3.get_object_tagging(Bucket=PII_BUCKET, Key=key)["TagSet"]}
    assert len(tags) == 10
    assert {f"k{i}" for i in range(8)} <= set(tags)
    assert tags["mlwarden:pii"] == "true"
    assert tags["mlwarden:pii-severity"] == "High"
    assert result["details"]["object"]["dropped_keys"] == ["mlwarden:pii-types"]
    assert "s3:PutObjectTagging" in result["actions"]


def test_object_gone_still_tags_the_bucket(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, block=ALL_ON)

    result = tagger(env={"TAG_PII_OBJECTS": "true"})(sample_event("macie/sensitive-data-personal.json"))

    assert result["outcome"] == "remediated"
    assert result["details"]["object"] == {"tagged": False, "reason": "the object no longer exists"}


@pytest.mark.parametrize(("name", "value"), [("TAG_PII_OBJECTS", "yes"), ("LOCK_PUBLIC_PII_BUCKETS", "1")])
def test_invalid_switch_fails_at_cold_start_naming_the_variable(tagger: Any, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        tagger(env={name: value})


# --- bad input and failures --------------------------------------------------------------------------------


def _policy_finding(sample_event: Any) -> dict[str, Any]:
    event: dict[str, Any] = sample_event("macie/policy-s3-bucket-public.json")
    return event


@pytest.mark.parametrize(
    "make_event",
    [
        pytest.param(lambda s: None, id="none"),
        pytest.param(lambda s: [], id="list"),
        pytest.param(lambda s: {}, id="empty"),
        pytest.param(_policy_finding, id="policy-finding"),
        pytest.param(lambda s: finding(s, "personal", resourcesAffected={"s3Bucket": None}), id="no-bucket"),
        pytest.param(
            lambda s: finding(s, "personal", resourcesAffected={"s3Bucket": {"name": "../etc/passwd"}}),
            id="invalid-bucket",
        ),
        pytest.param(lambda s: finding(s, "personal", resourcesAffected="mlw"), id="resources-not-object"),
        pytest.param(lambda s: finding(s, "personal", type=None), id="no-type"),
        pytest.param(lambda s: {**s("macie/sensitive-data-personal.json"), "detail": "x"}, id="detail-string"),
        pytest.param(lambda s: s("s3/put-bucket-acl-public.json"), id="cloudtrail"),
    ],
)
def test_bad_input_is_ignored_without_touching_aws(
    aws: Any, tagger: Any, sample_event: Any, make_event: Callable[[Any], Any]
) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN)
    aws.bucket("mlw-training-data-policy", public_policy=True)
    handler = tagger()
    calls: list[str] = []
    clients.client("s3").meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))

    result = handler(make_event(sample_event))

    assert result["outcome"] == "ignored"
    assert calls == []
    assert aws.tags_of(PII_BUCKET) == FOREIGN
    assert aws.alerts() == []


def test_bucket_deleted_before_the_finding_is_ignored(aws: Any, tagger: Any, sample_event: Any) -> None:
    result = tagger()(sample_event("macie/sensitive-data-personal.json"))

    assert result["outcome"] == "ignored"
    assert result["reason"] == "the bucket no longer exists"


def test_finding_with_damaged_detections_still_marks_the_bucket(aws: Any, tagger: Any, sample_event: Any) -> None:
    event = sample_event("macie/sensitive-data-personal.json")
    event["detail"]["classificationDetails"]["result"]["sensitiveData"] = [
        None,
        {"detections": "x"},
        {"detections": [{"type": 5, "count": "many"}]},
    ]
    event["detail"]["severity"] = None
    aws.bucket(PII_BUCKET, block=ALL_ON)

    result = tagger()(event)

    assert result["outcome"] == "remediated"
    assert own_tags(aws.tags_of(PII_BUCKET)) == {
        "mlwarden:pii": "true",
        "mlwarden:pii-last-finding": "7b3d5f9a1c2e4a6b8d0f2a4c6e8b0d1f",
        "mlwarden:pii-last-seen": "2025-06-03T13:05:11Z",
    }


def test_unreadable_tags_fail_without_writing_and_are_retried(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON)
    handler = tagger()
    s3 = clients.client("s3")
    with Stubber(s3) as stub:
        stub.add_response(
            "get_public_access_block", {"PublicAccessBlockConfiguration": ALL_ON}, {"Bucket": PII_BUCKET}
        )  # locked first: the bucket's block is read before its tags
        stub.add_client_error(
            "get_bucket_tagging",
            service_error_code="AccessDenied",
            http_status_code=403,
            expected_params={"Bucket": PII_BUCKET},
        )
        with pytest.raises(RemediationFailed) as raised:
            handler(sample_event("macie/sensitive-data-personal.json"))
        stub.assert_no_pending_responses()

    assert raised.value.outcome.error_code == "AccessDenied"
    assert aws.tags_of(PII_BUCKET) == FOREIGN
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert "permission s3:GetBucketTagging is missing" in alert.line("What")


def test_tag_write_refused_is_a_failure(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON)
    handler = tagger()
    s3 = clients.client("s3")
    with Stubber(s3) as stub:
        stub.add_response(
            "get_public_access_block", {"PublicAccessBlockConfiguration": ALL_ON}, {"Bucket": PII_BUCKET}
        )  # locked first: the bucket's block is read before its tags
        stub.add_response(
            "get_bucket_tagging",
            {"TagSet": [{"Key": k, "Value": v} for k, v in FOREIGN.items()]},
            expected_params={"Bucket": PII_BUCKET},
        )
        stub.add_client_error(
            "put_bucket_tagging",
            service_error_code="AccessDenied",
            http_status_code=403,
            expected_params={
                "Bucket": PII_BUCKET,
                "Tagging": {"TagSet": [{"Key": k, "Value": v} for k, v in {**FOREIGN, **PERSONAL_TAGS}.items()]},
            },
        )
        with pytest.raises(RemediationFailed) as raised:
            handler(sample_event("macie/sensitive-data-personal.json"))
        stub.assert_no_pending_responses()

    assert raised.value.outcome.details["failed_action"] == "s3:PutBucketTagging"
    assert raised.value.outcome.actions == ()
    assert aws.only_alert().attributes["outcome"] == "failed"


# --- what each outcome costs in AWS calls ------------------------------------------------------------------


def test_calls_per_outcome_read_before_write_and_verify(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PII_BUCKET, tags=FOREIGN, block=ALL_ON)
    aws.bucket(PUBLIC_BUCKET, acl="public-read")
    handler = tagger()
    calls: list[str] = []
    for service in ("s3", "s3control"):
        clients.client(service).meta.events.register(
            "before-call.*.*", lambda model, **_: calls.append(model.name), unique_id=f"count-{service}"
        )

    handler(sample_event("macie/sensitive-data-personal.json"))
    tagged, calls[:] = list(calls), []
    handler(sample_event("macie/sensitive-data-personal.json"))
    replayed, calls[:] = list(calls), []
    handler(sample_event("macie/sensitive-data-financial.json"))
    escalated = list(calls)

    assert tagged == ["GetPublicAccessBlock", "GetBucketTagging", "PutBucketTagging", "GetBucketTagging"]
    assert replayed == ["GetPublicAccessBlock", "GetBucketTagging"]
    assert escalated == [
        # locked first, on block_public_s3's path: bucket block, account block (grading), ACL, policy status,
        # tags (exemption, PII), then lock and verify
        *("GetPublicAccessBlock", "GetPublicAccessBlock", "GetBucketAcl", "GetBucketPolicyStatus", "GetBucketTagging"),
        *("PutPublicAccessBlock", "GetPublicAccessBlock"),
        *("GetBucketTagging", "PutBucketTagging", "GetBucketTagging"),  # classified second: merge, write, read back
    ]


# --- the shipped samples (events/), in the state the demo gives their buckets ----------------------------

# sample -> outcome of tag_pii_bucket; every other sample is ignored
SAMPLE_OUTCOMES = {
    "macie/sensitive-data-personal.json": "remediated",
    # On its own (a fresh bucket) the republished finding is a first finding; after the first, see the demo.
    "macie/sensitive-data-personal-republished.json": "remediated",
    "macie/sensitive-data-multiple.json": "remediated",
    "macie/sensitive-data-custom-identifier.json": "remediated",
    "macie/sensitive-data-financial.json": "remediated",  # public: CRITICAL and locked
    "macie/sensitive-data-credentials.json": "exempt",
}
SAMPLE_FILES = sorted(
    str(path.relative_to(ROOT / "events")) for path in (ROOT / "events").rglob("*.json") if path.name != "env.json"
)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_event(aws: Any, tagger: Any, sample_event: Any, name: str) -> None:
    aws.bucket(PII_BUCKET, tags={"team": "ml-research", "mlwarden:pii": "true"}, block=ALL_ON)
    aws.bucket(PUBLIC_BUCKET, acl="public-read", tags={"team": "analytics"})
    aws.bucket("mlw-public-website", acl="public-read", tags={"mlwarden:exempt": "2099-12-31"})
    aws.grant_exemption("arn:aws:s3:::mlw-public-website")
    for bucket in ("mlw-training-data-policy", "mlw-feature-store", "mlw-model-artifacts"):
        aws.bucket(bucket)
    expected = SAMPLE_OUTCOMES.get(name, "ignored")

    result = tagger()(sample_event(name))

    assert result["outcome"] == expected, result["reason"]
    assert len(aws.alerts()) == (0 if expected == "ignored" else 1)
    if name == "macie/sensitive-data-financial.json":
        assert result["severity"] == "CRITICAL"
        assert aws.block_of(PUBLIC_BUCKET) == ALL_ON
    else:
        assert aws.block_of(PUBLIC_BUCKET) is None
    if expected == "ignored":
        assert "mlwarden:pii-types" not in aws.tags_of(PII_BUCKET)


def test_lock_refused_still_classifies_and_fails_saying_it_is_public(aws: Any, tagger: Any, sample_event: Any) -> None:
    aws.bucket(PUBLIC_BUCKET, acl="public-read")
    handler = tagger()
    refused: list[str] = []

    def refuse_lock(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        refused.append(params["url"])
        error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {}}
        return AWSResponse(params["url"], 403, {}, None), error

    clients.client("s3").meta.events.register("before-call.s3.PutPublicAccessBlock", refuse_lock)

    with pytest.raises(RemediationFailed) as raised:
        handler(sample_event("macie/sensitive-data-financial.json"))

    assert len(refused) == 1
    assert PUBLIC_BUCKET in refused[0]  # the lock was attempted on this bucket
    outcome = raised.value.outcome
    assert outcome.severity.value == "CRITICAL"
    assert outcome.actions == ("s3:PutBucketTagging",)
    assert outcome.undo is not None and f"put-bucket-tagging --bucket {PUBLIC_BUCKET}" in outcome.undo
    assert aws.tags_of(PUBLIC_BUCKET)["mlwarden:pii"] == "true"
    assert aws.block_of(PUBLIC_BUCKET) is None
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert "permission s3:PutBucketPublicAccessBlock is missing" in alert.line("What")


@pytest.mark.parametrize("code", ["AccessDenied", "SlowDown"])
def test_tagging_refused_still_locks_the_public_pii_bucket_and_says_it_is_public(
    aws: Any, tagger: Any, sample_event: Any, code: str
) -> None:
    # Attack (issue 10, item 9): deny the function s3:PutBucketTagging (or throttle it) and the old code
    # failed before it ever looked at exposure: the public PII bucket stayed open, the alert said nothing of it.
    aws.bucket(PUBLIC_BUCKET, acl="public-read", tags={"team": "analytics"})
    handler = tagger()

    def refuse_tagging(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {}}
        return AWSResponse(params["url"], 403 if code == "AccessDenied" else 503, {}, None), error

    clients.client("s3").meta.events.register("before-call.s3.PutBucketTagging", refuse_tagging)

    with pytest.raises(RemediationFailed) as raised:
        handler(sample_event("macie/sensitive-data-financial.json"))

    assert aws.block_of(PUBLIC_BUCKET) == ALL_ON  # locked although classification failed
    assert aws.tags_of(PUBLIC_BUCKET) == {"team": "analytics"}
    outcome = raised.value.outcome
    assert outcome.severity.value == "CRITICAL"
    assert outcome.actions == ("s3:PutBucketPublicAccessBlock",)
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert alert.attributes["severity"] == "CRITICAL"
    what = alert.line("What")
    assert "PII in a public bucket (ACL grants READ to AllUsers" in what
    assert "public-access block turned on and verified" in what
    assert "could not tag the bucket" in what
