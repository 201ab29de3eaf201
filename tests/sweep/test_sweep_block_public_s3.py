"""The sweep evaluates every bucket as the event path would: same outcome, same alert, nothing said twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden import checks, clients
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.settings import load_settings
from mlwarden.sweep import Summary, new_sweep_id, sweep_check
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler

UNIT = checks.load("block_public_s3")


def _sweep(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "enforce") -> list[Outcome]:
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", mode)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    settings = load_settings()
    summary = Summary(new_sweep_id())
    return list(sweep_check(UNIT, Inventory(ACCOUNT, REGION), settings, summary.sweep_id, summary=summary))


def _by_resource(outcomes: list[Outcome]) -> dict[str | None, Outcome]:
    return {outcome.resource: outcome for outcome in outcomes}


def test_the_sweep_finds_and_fixes_what_the_event_path_fixes(
    aws: AwsWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.s3control.put_public_access_block(
        AccountId=ACCOUNT,
        PublicAccessBlockConfiguration=dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
        ),
    )
    aws.bucket("public-acl", acl="public-read")
    aws.bucket("pii-open", acl="public-read", tags={"mlwarden:pii": "true"})
    aws.bucket(
        "locked",
        block=dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
        ),
    )

    outcomes = _by_resource(_sweep(monkeypatch, aws))

    assert outcomes["arn:aws:s3:::locked"].outcome is OutcomeKind.COMPLIANT
    assert outcomes["arn:aws:s3:::public-acl"].outcome is OutcomeKind.REMEDIATED
    assert outcomes["arn:aws:s3:::pii-open"].outcome is OutcomeKind.REMEDIATED
    assert outcomes["AWS::::Account:" + ACCOUNT].outcome is OutcomeKind.COMPLIANT
    assert aws.block_of("public-acl") == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    subjects = sorted(alert.subject for alert in aws.alerts())
    assert len(subjects) == 2, subjects


def test_a_second_sweep_over_unchanged_resources_sends_nothing(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.bucket("open-no-block")
    first = _sweep(monkeypatch, aws, mode="dry-run")
    assert any(o.outcome is OutcomeKind.WOULD_REMEDIATE for o in first)
    assert len(aws.alerts()) == 2  # the bucket and the account block

    second = _sweep(monkeypatch, aws, mode="dry-run")

    assert [o.outcome for o in second] == [o.outcome for o in first]
    assert len(aws.alerts()) == 2
    assert all(not o.alerted for o in second)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"acl": "public-read"}, OutcomeKind.REMEDIATED),
        ({"acl": "public-read", "tags": {"mlwarden:pii": "true"}}, OutcomeKind.REMEDIATED),
        ({}, OutcomeKind.REMEDIATED),
        (
            {
                "block": dict.fromkeys(
                    ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
                )
            },
            OutcomeKind.COMPLIANT,
        ),
    ],
)
def test_event_path_and_sweep_give_the_same_outcome_for_the_same_state(
    aws: AwsWorld,
    make_handler: Callable[..., Handler],
    cloudtrail_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    setup: dict[str, Any],
    expected: OutcomeKind,
) -> None:
    aws.bucket("via-event", **setup)
    aws.bucket("via-sweep", **setup)

    by_event = make_handler(mode="dry-run")(cloudtrail_event("PutBucketAcl", "via-event"))
    clients.client.cache_clear()
    by_sweep = _by_resource(_sweep(monkeypatch, aws, mode="dry-run"))["arn:aws:s3:::via-sweep"]

    dry = OutcomeKind.WOULD_REMEDIATE if expected is OutcomeKind.REMEDIATED else expected
    assert by_event["outcome"] == by_sweep.outcome.value == dry.value
    assert by_event["severity"] == by_sweep.severity.value
    assert by_event["findings"] == list(by_sweep.findings)
    assert by_event["details"] == by_sweep.details
