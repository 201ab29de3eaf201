"""Pure rules of tag_pii_bucket: reading findings, tag values, merging tags. No AWS."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.checks import tag_pii_bucket as macie
from mlwarden.checks.tag_pii_bucket import (
    BUCKET_TAG_KEYS,
    BUCKET_TAG_LIMIT,
    OBJECT_TAG_KEYS,
    OBJECT_TAG_LIMIT,
    PiiFinding,
    PiiOptions,
    decode_types,
    detection_type,
    encode_types,
    finding_of,
    higher_severity,
    load_options,
    plan_tags,
    timestamp,
)
from mlwarden.events import parse_event
from mlwarden.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "fixtures" / "real" / "macie" / "finding_detail_only"
_TAG_VALUE = re.compile(r"^[A-Za-z0-9 +\-=._:/@]{0,256}$")


def _envelope(detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "e1",
        "source": "aws.macie",
        "detail-type": "Macie Finding",
        "account": "123456789012",
        "region": "us-east-1",
        "time": "2026-01-01T10:00:00Z",
        "detail": detail,
    }


def _finding(
    types: dict[str, int] | None = None, severity: str | None = "High", seen_at: str | None = "2026-01-01T10:00:00Z"
) -> PiiFinding:
    return PiiFinding(
        finding_id="f1",
        finding_type="SensitiveData:S3Object/Personal",
        bucket="b",
        object_key=None,
        severity=severity,
        seen_at=seen_at,
        detections=types if types is not None else {"NAME": 3},
    )


# --- reading findings (recorded samples, MIT-0, tests/fixtures/real/NOTICE.md) -------------------------------


@pytest.mark.parametrize(
    ("fixture", "finding_type", "severity", "detections"),
    [
        (
            "aws-samples-reveal__avro.json",
            "SensitiveData:S3Object/Multiple",
            "High",
            {"USA_SOCIAL_SECURITY_NUMBER": 30, "PHONE_NUMBER": 30, "NAME": 14, "ADDRESS": 14, "CREDIT_CARD_NUMBER": 27},
        ),
        (
            "aws-samples-reveal__cdi.json",
            "SensitiveData:S3Object/CustomIdentifier",
            "Medium",
            {"custom:email_check": 1},
        ),
    ],
)
def test_recorded_findings_yield_types_and_counts(
    fixture: str, finding_type: str, severity: str, detections: dict[str, int]
) -> None:
    detail = json.loads((REAL / fixture).read_text())

    found = finding_of(parse_event(_envelope(detail)))

    assert isinstance(found, PiiFinding)
    assert found.finding_type == finding_type
    assert found.severity == severity
    assert found.detections == detections
    assert found.bucket == "DOC-EXAMPLE-BUCKET1"


@pytest.mark.parametrize("fixture", sorted(p.name for p in REAL.glob("*.json")))
def test_every_recorded_finding_is_read(fixture: str) -> None:
    found = finding_of(parse_event(_envelope(json.loads((REAL / fixture).read_text()))))

    assert isinstance(found, PiiFinding)
    assert found.detections
    assert found.seen_at is not None


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ({"description": "High", "score": 3}, "High"),
        ({"description": "medium"}, "Medium"),
        ({"score": 1}, "Low"),
        ({"description": "Severe", "score": 9}, None),
        ({"score": True}, None),
        (None, None),
        ("High", None),
    ],
)
def test_severity_from_description_then_score(severity: Any, expected: str | None) -> None:
    detail = json.loads((REAL / "aws-samples-reveal__cdi.json").read_text())
    detail["severity"] = severity

    found = finding_of(parse_event(_envelope(detail)))

    assert isinstance(found, PiiFinding)
    assert found.severity == expected


@pytest.mark.parametrize(
    ("finding_type", "reason"),
    [
        ("Policy:IAMUser/S3BucketPublic", "is not a sensitive-data finding"),
        ("SensitiveData", "is not a sensitive-data finding"),
    ],
)
def test_non_sensitive_data_findings_are_not_this_checks(finding_type: str, reason: str) -> None:
    detail = json.loads((REAL / "aws-samples-reveal__cdi.json").read_text())
    detail["type"] = finding_type

    found = finding_of(parse_event(_envelope(detail)))

    assert isinstance(found, str)
    assert reason in found


# --- tag values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "custom", "expected"),
    [
        ("AWS_CREDENTIALS", False, "AWS_CREDENTIALS"),
        ("USA_SOCIAL_SECURITY_NUMBER", False, "USA_SOCIAL_SECURITY_NUMBER"),
        ("email check", True, "custom:email_check"),
        ("Kunden-Nr. (DE) #1", True, "custom:Kunden-Nr._DE_1"),
        ("ünïcödé", True, "custom:n_c_d"),
        ("+++", True, "custom:unnamed"),
        ("   ", False, None),
        ("x" * 300, False, "x" * 64),
    ],
)
def test_detection_types_become_safe_tokens(name: str, custom: bool, expected: str | None) -> None:
    assert detection_type(name, custom=custom) == expected


def test_types_that_fit_are_sorted_and_space_separated() -> None:
    assert encode_types({"NAME", "ADDRESS", "custom:x"}) == ("ADDRESS NAME custom:x", 0)


def test_types_that_do_not_fit_keep_a_sorted_prefix_and_count_the_rest() -> None:
    types = {f"TYPE_{i:02}_{'X' * 40}" for i in range(10)}

    value, left_out = encode_types(types)

    assert len(value) <= 256
    assert _TAG_VALUE.match(value)
    assert value.split()[:-1] == sorted(types)[: 10 - left_out]
    assert value.split()[-1] == f"+{left_out}"
    assert encode_types(set(reversed(sorted(types)))) == (value, left_out)  # deterministic


def test_decoding_drops_the_overflow_marker_and_invalid_tokens() -> None:
    assert decode_types("ADDRESS NAME +3 bad#token") == {"ADDRESS", "NAME"}
    assert decode_types(None) == set()


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (None, "Low", "Low"),
        ("Low", "High", "High"),
        ("High", "Low", "High"),
        ("Medium", None, "Medium"),
        ("garbage", "Medium", "Medium"),
        (None, None, None),
    ],
)
def test_severity_is_never_lowered(current: str | None, new: str | None, expected: str | None) -> None:
    assert higher_severity(current, new) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-03T13:05:11.842Z", "2025-06-03T13:05:11Z"),
        ("2025-06-03T15:05:11+02:00", "2025-06-03T13:05:11Z"),
        ("2025-06-03T13:05:11", "2025-06-03T13:05:11Z"),
        ("yesterday", None),
        (1717420000, None),
    ],
)
def test_timestamps_are_normalised_to_utc_seconds(value: Any, expected: str | None) -> None:
    assert timestamp(value) == expected


# --- merging ---------------------------------------------------------------------------------------------


def test_plan_keeps_foreign_tags_and_merges_ours() -> None:
    current = {"team": "ml", "mlwarden:exempt": "true", "mlwarden:pii-types": "NAME", "mlwarden:pii-severity": "High"}

    plan = plan_tags(current, _finding({"ADDRESS": 2}, severity="Low"), BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    assert plan.tags == {
        "team": "ml",
        "mlwarden:exempt": "true",
        "mlwarden:pii": "true",
        "mlwarden:pii-severity": "High",
        "mlwarden:pii-types": "ADDRESS NAME",
        "mlwarden:pii-last-finding": "f1",
        "mlwarden:pii-last-seen": "2026-01-01T10:00:00Z",
    }
    assert plan.new_types == ("ADDRESS",)
    assert plan.classification_changed
    assert not plan.truncated


def test_plan_of_what_is_already_there_is_no_change() -> None:
    first = plan_tags({"team": "ml"}, _finding(), BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    again = plan_tags(first.tags, _finding(), BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    assert not again.changed
    assert not again.classification_changed


def test_plan_writes_in_priority_order_when_the_limit_is_near() -> None:
    current = {f"k{i}": "v" for i in range(8)}

    plan = plan_tags(current, _finding(), OBJECT_TAG_KEYS, OBJECT_TAG_LIMIT)

    assert list(plan.own) == ["mlwarden:pii", "mlwarden:pii-severity"]
    assert plan.dropped_keys == ("mlwarden:pii-types",)
    assert len(plan.tags) == OBJECT_TAG_LIMIT


def test_object_plan_has_no_last_finding_tags() -> None:
    plan = plan_tags({}, _finding(), OBJECT_TAG_KEYS, OBJECT_TAG_LIMIT)

    assert set(plan.own) == {"mlwarden:pii", "mlwarden:pii-severity", "mlwarden:pii-types"}


def test_finding_without_time_does_not_replace_a_recorded_one() -> None:
    current = {"mlwarden:pii-last-finding": "old", "mlwarden:pii-last-seen": "2026-01-01T00:00:00Z"}

    plan = plan_tags(current, _finding(seen_at=None), BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    assert plan.own["mlwarden:pii-last-finding"] == "old"


# --- options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, PiiOptions(tag_objects=False, lock_public_buckets=True)),
        ({"TAG_PII_OBJECTS": "", "LOCK_PUBLIC_PII_BUCKETS": " "}, PiiOptions(False, True)),
        ({"TAG_PII_OBJECTS": "TRUE", "LOCK_PUBLIC_PII_BUCKETS": "false"}, PiiOptions(True, False)),
    ],
)
def test_options_default_and_parse(env: dict[str, str], expected: PiiOptions) -> None:
    assert load_options(env) == expected


@pytest.mark.parametrize("name", ["TAG_PII_OBJECTS", "LOCK_PUBLIC_PII_BUCKETS"])
def test_invalid_options_name_the_variable(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_options({name: "maybe"})


def test_pii_tag_is_the_key_block_public_s3_reads() -> None:
    from mlwarden.checks import block_public_s3 as s3  # noqa: PLC0415

    assert macie.PII_TAG == s3.PII_TAG == "mlwarden:pii"


# --- values that cannot be real times (issue 10, item 6) -------------------------------------------------

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-01:00",  # beyond UTC's year 9999: astimezone raised OverflowError
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "2027-01-01T00:00:00Z",  # a year ahead: would pin the last-seen tags until then
        "2026-01-01T12:16:00Z",  # beyond the 15 minutes of clock skew AWS tolerates
    ],
)
def test_times_that_cannot_be_real_are_treated_as_absent(value: str) -> None:
    assert timestamp(value, now=NOW) is None


def test_a_time_within_clock_skew_is_kept() -> None:
    assert timestamp("2026-01-01T12:14:00Z", now=NOW) == "2026-01-01T12:14:00Z"


def test_a_future_last_seen_tag_does_not_pin_the_last_finding() -> None:
    current = {"mlwarden:pii": "true", "mlwarden:pii-last-seen": "9999-12-31T23:59:59-01:00"}

    plan = plan_tags(current, _finding(seen_at="2026-01-01T10:00:00Z"), BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    assert plan.own["mlwarden:pii-last-seen"] == "2026-01-01T10:00:00Z"
    assert plan.own["mlwarden:pii-last-finding"] == "f1"


def test_a_future_updated_at_is_noted_and_the_created_at_used() -> None:
    detail = json.loads((ROOT / "events/macie/sensitive-data-personal.json").read_text())["detail"]
    detail.update(updatedAt="9999-12-31T23:59:59-01:00", createdAt="2025-06-03T13:05:11Z")

    finding = finding_of(parse_event(_envelope(detail)))

    assert isinstance(finding, PiiFinding)
    assert finding.seen_at == "2025-06-03T13:05:11Z"
    assert finding.notes == (
        "updatedAt is not a usable time (unparseable, out of range or in the future): treated as absent",
    )


_tag_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
_times = st.one_of(
    _tag_text,
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.builds(
        lambda y, off: f"{y:04d}-12-31T23:59:59{off}", st.integers(1, 9999), st.sampled_from(["-01:00", "+14:00", "Z"])
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    own=st.dictionaries(st.sampled_from(BUCKET_TAG_KEYS), st.one_of(_tag_text, _times), max_size=5),
    updated_at=st.one_of(st.none(), _times),
    created_at=st.one_of(st.none(), _times),
)
def test_no_tag_value_or_finding_time_stops_the_check_from_deciding(
    own: dict[str, str], updated_at: str | None, created_at: str | None
) -> None:
    # Any value read from the bucket's tags or the finding: the finding is read and the merge planned.
    detail = json.loads((ROOT / "events/macie/sensitive-data-personal.json").read_text())["detail"]
    detail.update(updatedAt=updated_at, createdAt=created_at)
    finding = finding_of(parse_event(_envelope(detail)))
    assert isinstance(finding, PiiFinding)

    plan = plan_tags(own, finding, BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    assert plan.own["mlwarden:pii"] == "true"
    assert finding.types <= decode_types(plan.own["mlwarden:pii-types"])
    for value in plan.own.values():
        assert _TAG_VALUE.match(value) or value in own.values()  # ours are valid; unusable old ones kept as read
    last_seen = plan.own.get("mlwarden:pii-last-seen")
    if last_seen is not None and last_seen != own.get("mlwarden:pii-last-seen"):
        assert timestamp(last_seen) == last_seen  # what we write is a real, non-future time


def test_merging_into_a_cut_value_without_the_record_never_lowers_its_count() -> None:
    # "+3" stands for three types this writer cannot see; one of them may be the type it brings.
    assert encode_types({"A", "B", "C"}, cut_before="A B +3") == ("A B C +2", 2)
    assert encode_types({"A", "B"}, cut_before="A B +3") == ("A B +3", 3)
    assert encode_types({"A", "B"}, cut_before=None) == ("A B", 0)


def test_ties_on_time_are_broken_by_finding_id_so_writers_agree() -> None:
    current = {"mlwarden:pii-last-seen": "2026-01-01T10:00:00Z", "mlwarden:pii-last-finding": "f2"}

    plan = plan_tags(current, _finding(seen_at="2026-01-01T10:00:00Z"), BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)

    assert plan.own["mlwarden:pii-last-finding"] == "f2"  # "f1" < "f2": the recorded one stays
