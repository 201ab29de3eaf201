"""Exemption rules without AWS: which tag values and registry entries exempt, and for how long."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from mlwarden.events import parse_event
from mlwarden.exemptions import Entry, best_entry, entry_from_item, exemption_from_tags, read_tag_value, tag_set_by
from mlwarden.settings import RemediationMode, Settings

KEY = "mlwarden:exempt"
TODAY = dt.date(2026, 6, 15)
UNTRUSTED = Settings(
    alert_topic_arn="arn:aws:sns:us-east-1:123456789012:t",
    remediation_mode=RemediationMode.ENFORCE,
    exempt_tag_key=KEY,
    remediator_role_arn=None,
)
TRUSTED = replace(UNTRUSTED, trust_exemption_tags=True)


def entry(
    resource: str = "arn:aws:s3:::site", check: str = "all", granted: str = "2026-06-01", days: int = 30
) -> Entry:
    granted_at = dt.datetime.fromisoformat(granted).replace(tzinfo=dt.UTC)
    return Entry(resource, check, "SEC-1", "arn:aws:iam::123456789012:role/Security", granted_at,
                 granted_at.date() + dt.timedelta(days=days))  # fmt: skip


# --- tags ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "2026-07-01", "TRUE"])
def test_untrusted_tags_never_exempt(value: str) -> None:
    exemption = exemption_from_tags({KEY: value}, UNTRUSTED, TODAY)

    assert exemption.active is False
    assert "not trusted (TrustExemptionTags=false)" in exemption.reason
    assert exemption.refused_tag is not None


@pytest.mark.parametrize(
    ("value", "active"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("2026-06-15", True, id="today"),
        pytest.param("2026-09-13", True, id="90-days-away"),
        pytest.param("2026-09-14", False, id="91-days-away"),
        pytest.param("9999-12-31", False, id="forever"),
        pytest.param("2026-06-14", False, id="yesterday"),
        # issue 10, item 2: values that used to exempt forever
        pytest.param("never", False, id="never"),
        pytest.param("expired", False, id="expired"),
        pytest.param("revoked", False, id="revoked"),
        pytest.param("not exempt", False, id="not-exempt"),
        pytest.param("yes", False, id="yes"),
        pytest.param("until 2026-07-01", False, id="date-in-a-note"),
        pytest.param("2026-02-30", False, id="impossible-date"),
        pytest.param("", False, id="empty"),
    ],
)
def test_trusted_tags_exempt_only_true_or_a_date_within_the_maximum(value: str, active: bool) -> None:
    exemption = exemption_from_tags({KEY: value}, TRUSTED, TODAY)

    assert exemption.active is active, exemption.reason
    assert (exemption.source == "tag") is active


def test_tag_values_are_never_repeated_into_reasons() -> None:
    # A tag value is free text: the reason shows a date, true, or only its length.
    value = read_tag_value("alice@example.com wants this open", 90, TODAY)

    assert "alice" not in value.shown
    assert value.refused is not None


def test_no_tags_or_unreadable_tags_do_not_exempt() -> None:
    assert exemption_from_tags(None, TRUSTED, TODAY).active is False
    assert exemption_from_tags({}, TRUSTED, TODAY).active is False


# --- registry entries ----------------------------------------------------------------------------------


def test_entry_in_force_exempts_and_names_who_granted_it() -> None:
    exemption = best_entry([entry()], "arn:aws:s3:::site", "block_public_s3", 90, TODAY)

    assert exemption.active is True
    assert exemption.source == "registry"
    assert exemption.granted_by == "arn:aws:iam::123456789012:role/Security"
    assert exemption.expires == dt.date(2026, 7, 1)


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        pytest.param(entry(days=10), "expired on 2026-06-11", id="expired"),
        pytest.param(entry(days=365), "longer than the maximum of 90 days", id="beyond-maximum"),
        pytest.param(entry(granted="2026-07-01"), "granted in the future", id="future-grant"),
    ],
)
def test_entry_not_in_force_does_not_exempt(candidate: Entry, why: str) -> None:
    exemption = best_entry([candidate], "arn:aws:s3:::site", "block_public_s3", 90, TODAY)

    assert exemption.active is False
    assert why in exemption.reason


@pytest.mark.parametrize(
    ("pattern", "check", "resource", "covered"),
    [
        ("arn:aws:s3:::site", "all", "arn:aws:s3:::site", True),
        ("arn:aws:s3:::site", "block_public_s3", "arn:aws:s3:::site", True),
        ("arn:aws:s3:::site", "tag_pii_bucket", "arn:aws:s3:::site", False),
        ("arn:aws:s3:::site", "all", "arn:aws:s3:::site2", False),
        ("arn:aws:s3:::web-*", "all", "arn:aws:s3:::web-cards-2027", True),
        ("arn:aws:s3:::web-*", "all", "arn:aws:s3:::training", False),
    ],
)
def test_entry_covers_its_resource_or_pattern_and_check(pattern: str, check: str, resource: str, covered: bool) -> None:
    assert entry(resource=pattern, check=check).covers(resource, "block_public_s3") is covered


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"resource": {"S": "arn:aws:s3:::x"}, "check": {"S": "all"}},
        {
            "resource": {"S": "arn:aws:s3:::x"},
            "check": {"S": "all"},
            "granted_at": {"S": "x"},
            "expires_at": {"S": "y"},
        },
        {"resource": {"N": "1"}, "check": {"S": "all"}, "granted_at": {"S": "2026-01-01"}, "expires_at": {"S": "2026"}},
    ],
)
def test_damaged_items_are_no_entries(item: dict[str, dict[str, str]]) -> None:
    assert entry_from_item(item) is None


def test_item_round_trip() -> None:
    original = entry()

    assert entry_from_item(original.as_item()) == original


# --- which calls set the exempt tag ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "source", "parameters", "value"),
    [
        pytest.param(
            "PutBucketTagging",
            "s3.amazonaws.com",
            {"bucketName": "b", "Tagging": {"xmlns": "x", "TagSet": {"Tag": {"Key": KEY, "Value": "true"}}}},
            "true",
            id="s3-one-tag-is-an-object",
        ),
        pytest.param(
            "PutBucketTagging",
            "s3.amazonaws.com",
            {"Tagging": {"TagSet": {"Tag": [{"Key": "a", "Value": "b"}, {"Key": KEY, "Value": "2026-07-01"}]}}},
            "2026-07-01",
            id="s3-tag-list",
        ),
        pytest.param(
            "CreateBucket",
            "s3.amazonaws.com",
            {"bucketName": "b", "CreateBucketConfiguration": {"Tags": {"Tag": [{"Key": KEY, "Value": "true"}]}}},
            "true",
            id="s3-create-bucket-with-tags",
        ),
        pytest.param("TagRole", "iam.amazonaws.com", {"roleName": "r", "tags": [{"key": KEY, "value": "never"}]},
                     "a value that is neither true nor YYYY-MM-DD (5 characters)", id="iam-tag-role"),
        pytest.param("CreateTrainingJob", "sagemaker.amazonaws.com",
                     {"trainingJobName": "j", "tags": [{"key": KEY, "value": "true"}]}, "true", id="sagemaker-create"),
        pytest.param("PutBucketAcl", "s3.amazonaws.com", {"bucketName": "b", "key": KEY, "value": "true"}, None,
                     id="not-under-a-tags-key"),
        pytest.param("TagRole", "iam.amazonaws.com", {"roleName": "r", "tags": [{"key": "team", "value": "x"}]}, None,
                     id="other-tags-only"),
    ],
)  # fmt: skip
def test_calls_that_set_the_exempt_tag_wherever_the_service_puts_it(
    cloudtrail_event: Any, event_name: str, source: str, parameters: dict[str, Any], value: str | None
) -> None:
    event = parse_event(cloudtrail_event(event_name, request_parameters=parameters, event_source=source))

    change = tag_set_by(event, UNTRUSTED, TODAY)

    assert (change.value.shown if change else None) == value
    if change is not None:
        assert change.call == event_name
        assert "DataScientist" in change.actor


@pytest.mark.parametrize("pattern", ["*", "arn:aws:s3:::*", "arn:aws:*:::x", "arn:aws:s3:::/*", "mlw-site"])
def test_a_registry_pattern_that_names_nothing_exempts_nothing(pattern: str) -> None:
    # Written around the CLI (console, API), such an entry would exempt every resource: it is ignored.
    assert entry(resource=pattern).covers("arn:aws:s3:::mlw-site", "block_public_s3") is False
