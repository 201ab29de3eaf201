"""Alert rendering: a subject SNS accepts, a body a person can act on, attributes a filter policy can use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.alerts import SUBJECT_LIMIT, render, subject_for
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger

BUCKET_63 = "ml-training-data-" + "x" * 46
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def trigger(**overrides: Any) -> Trigger:
    values: dict[str, Any] = {
        "event_id": "e-1",
        "source": "aws.s3",
        "kind": "cloudtrail",
        "name": "PutBucketAcl",
        "actor": "arn:aws:sts::123456789012:assumed-role/DataScientist/alice (AssumedRole)",
        "time": "2026-01-01T10:00:00Z",
        "account": "123456789012",
        "region": "us-east-1",
    }
    values.update(overrides)
    return Trigger(**values)


def remediated(resource: str = "arn:aws:s3:::training-data", **overrides: Any) -> Outcome:
    values: dict[str, Any] = {
        "check": "block_public_s3",
        "outcome": OutcomeKind.REMEDIATED,
        "severity": Severity.HIGH,
        "reason": "bucket is public (ACL grants READ to AllUsers); all four settings turned on and verified",
        "trigger": trigger(),
        "resource": resource,
        "actions": ("s3:PutBucketPublicAccessBlock",),
        "previous_state": {"PublicAccessBlockConfiguration": None},
        "new_state": {"PublicAccessBlockConfiguration": ALL_ON},
        "undo": "aws s3api delete-public-access-block --bucket training-data",
        "exempt_hint": "add the tag mlwarden:exempt=true to bucket training-data",
        "details": {"public_via": ["ACL grants READ to AllUsers"]},
    }
    values.update(overrides)
    return Outcome(**values)


def body_line(body: str, label: str) -> str:
    for line in body.splitlines():
        if line.startswith(f"{label}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label} line in:\n{body}")


def outcome_json(body: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(body.split("\nOutcome (JSON):\n", 1)[1])
    return parsed


def test_subject_names_severity_headline_check_and_bucket() -> None:
    assert subject_for(remediated()) == "[ML Warden] HIGH fixed: block_public_s3 training-data"


def test_subject_for_an_account_keeps_the_account_resource() -> None:
    outcome = remediated(resource="AWS::::Account:123456789012")

    assert subject_for(outcome) == "[ML Warden] HIGH fixed: block_public_s3 AWS::::Account:123456789012"


def test_subject_without_resource_says_unknown() -> None:
    assert subject_for(remediated(resource=None)).endswith("unknown resource")


@pytest.mark.parametrize("kind", list(OutcomeKind))
@pytest.mark.parametrize("severity", list(Severity))
def test_subject_fits_sns_limit_with_the_longest_bucket_name(kind: OutcomeKind, severity: Severity) -> None:
    subject = subject_for(remediated(f"arn:aws:s3:::{BUCKET_63}", outcome=kind, severity=severity))

    assert len(subject) < 100
    assert subject.isascii()
    assert subject.isprintable()


def test_long_subject_is_cut_with_an_ellipsis() -> None:
    subject = subject_for(
        remediated(f"arn:aws:s3:::{BUCKET_63}", outcome=OutcomeKind.WOULD_REMEDIATE, severity=Severity.CRITICAL)
    )

    assert len(subject) == SUBJECT_LIMIT
    assert subject.endswith("...")
    assert subject.startswith("[ML Warden] CRITICAL would fix (dry run): block_public_s3 ml-training-data-")


def test_non_ascii_and_line_breaks_are_replaced_in_the_subject() -> None:
    subject = subject_for(remediated(resource="données-été\nbucket\t"))

    assert subject == "[ML Warden] HIGH fixed: block_public_s3 donn?es-?t??bucket?"


@settings(max_examples=200, deadline=None)
@given(resource=st.text(max_size=300), check=st.text(min_size=1, max_size=80))
def test_any_subject_is_printable_ascii_under_100_characters(resource: str, check: str) -> None:
    subject = subject_for(remediated(resource=resource, check=check))

    assert len(subject) < 100
    assert all(" " <= char <= "~" for char in subject)


def test_attributes_carry_severity_check_outcome_account_region() -> None:
    alert = render(remediated())

    assert alert.attributes == {
        "severity": {"DataType": "String", "StringValue": "HIGH"},
        "check": {"DataType": "String", "StringValue": "block_public_s3"},
        "outcome": {"DataType": "String", "StringValue": "remediated"},
        "account": {"DataType": "String", "StringValue": "123456789012"},
        "region": {"DataType": "String", "StringValue": "us-east-1"},
    }


def test_missing_account_and_region_attributes_are_unknown_not_empty() -> None:
    alert = render(remediated(trigger=trigger(account=None, region=None)))

    assert alert.attributes["account"]["StringValue"] == "unknown"
    assert alert.attributes["region"]["StringValue"] == "unknown"


def test_body_says_what_where_who_done_undo_exempt() -> None:
    body = render(remediated()).body

    assert body.splitlines()[0] == "ML Warden block_public_s3: fixed (HIGH)"
    assert body_line(body, "What").startswith("bucket is public (ACL grants READ to AllUsers)")
    assert body_line(body, "Where") == "arn:aws:s3:::training-data (account 123456789012, region us-east-1)"
    assert body_line(body, "Who") == (
        "arn:aws:sts::123456789012:assumed-role/DataScientist/alice (AssumedRole), via PutBucketAcl "
        "at 2026-01-01T10:00:00Z (event e-1)"
    )
    assert body_line(body, "Done") == "s3:PutBucketPublicAccessBlock"
    assert body_line(body, "Now") == (
        'PublicAccessBlockConfiguration={"BlockPublicAcls": true, "IgnorePublicAcls": true, '
        '"BlockPublicPolicy": true, "RestrictPublicBuckets": true}'
    )
    before = body_line(body, "Before")
    assert before.startswith("PublicAccessBlockConfiguration=")
    assert "true" not in before  # no configuration before the fix
    assert body_line(body, "Undo") == "aws s3api delete-public-access-block --bucket training-data"
    assert body_line(body, "Exempt") == "add the tag mlwarden:exempt=true to bucket training-data"


def test_body_ends_with_the_outcome_as_json() -> None:
    outcome = remediated()

    parsed = outcome_json(render(outcome).body)

    assert parsed == json.loads(json.dumps(outcome.as_dict()))
    assert parsed["outcome"] == "remediated"
    assert parsed["previous_state"] == {"PublicAccessBlockConfiguration": None}
    assert parsed["trigger"]["name"] == "PutBucketAcl"


def test_dry_run_body_says_what_would_be_set() -> None:
    body = render(remediated(outcome=OutcomeKind.WOULD_REMEDIATE, actions=(), undo=None)).body

    assert body_line(body, "Done") == "no change made"
    assert body_line(body, "Would set").startswith('PublicAccessBlockConfiguration={"BlockPublicAcls": true')
    assert "\nNow:" not in body
    assert "\nUndo:" not in body


def test_config_trigger_without_actor_names_the_source() -> None:
    body = render(remediated(trigger=trigger(actor=None, kind="config", source="aws.config", time=None))).body

    assert body_line(body, "Who").startswith("config (aws.config), via PutBucketAcl at unknown time")


@pytest.mark.parametrize(
    ("kind", "needs_alert"),
    [
        (OutcomeKind.REMEDIATED, True),
        (OutcomeKind.WOULD_REMEDIATE, True),
        (OutcomeKind.FLAGGED, True),
        (OutcomeKind.EXEMPT, True),
        (OutcomeKind.FAILED, True),
        (OutcomeKind.COMPLIANT, False),
        (OutcomeKind.IGNORED, False),
    ],
)
def test_only_outcomes_for_a_human_need_an_alert(kind: OutcomeKind, needs_alert: bool) -> None:
    assert remediated(outcome=kind).needs_alert is needs_alert


def test_outcome_metric_names_are_camel_case() -> None:
    assert [kind.metric_name for kind in OutcomeKind] == [
        "Remediated",
        "WouldRemediate",
        "Flagged",
        "Compliant",
        "Exempt",
        "Ignored",
        "Failed",
    ]
