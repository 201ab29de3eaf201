"""The sweep re-checks ML Warden's inputs daily: every trail of the region, Macie, and its own rules."""

from __future__ import annotations

import json

import boto3
import pytest

from mlwarden import checks
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.settings import load_settings
from mlwarden.sweep import Summary, new_sweep_id, sweep_check
from tests.conftest import ACCOUNT, REGION, AwsWorld

UNIT = checks.load("watch_inputs")
TRAIL_ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/mlw-management-events"
OWN_RULE = "mlwarden-TagPiiBucketFunctionMacieSensitiveDataFinding-QWERTY"


def _sweep(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "enforce") -> dict[str | None, Outcome]:
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", mode)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    monkeypatch.setenv("OWN_NAME_PREFIX", "mlwarden-")
    summary = Summary(new_sweep_id())
    outcomes = sweep_check(UNIT, Inventory(ACCOUNT, REGION), load_settings(), summary.sweep_id, summary=summary)
    return {outcome.resource: outcome for outcome in outcomes}


@pytest.mark.parametrize(
    ("macie_enabled", "expected"),
    [
        # moto answers GetMacieSession as enabled and has no GetAutomatedDiscoveryConfiguration: status unknown.
        (True, OutcomeKind.COMPLIANT),
        # An account that never enabled Macie is not told so every day.
        (False, OutcomeKind.IGNORED),
    ],
)
def test_a_clean_account_is_silent(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch, macie_enabled: bool, expected: OutcomeKind
) -> None:
    if not macie_enabled:
        boto3.client("macie2", region_name=REGION).disable_macie()
    outcomes = _sweep(monkeypatch, aws)
    assert [o.outcome for o in outcomes.values()] == [expected]
    assert aws.alerts() == []


def test_the_sweep_restarts_a_stopped_trail_and_enables_an_own_rule_once(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.s3.create_bucket(Bucket="mlw-trail-logs")
    cloudtrail = boto3.client("cloudtrail", region_name=REGION)
    cloudtrail.create_trail(Name="mlw-management-events", S3BucketName="mlw-trail-logs")
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name=OWN_RULE, EventPattern=json.dumps({"source": ["aws.macie"]}), State="DISABLED")
    events.put_targets(Rule=OWN_RULE, Targets=[{"Id": "fn", "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f"}])

    first = _sweep(monkeypatch, aws)

    assert first[TRAIL_ARN].outcome is OutcomeKind.REMEDIATED
    assert cloudtrail.get_trail_status(Name=TRAIL_ARN)["IsLogging"] is True
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{OWN_RULE}"
    assert first[rule_arn].outcome is OutcomeKind.REMEDIATED
    assert events.describe_rule(Name=OWN_RULE)["State"] == "ENABLED"
    assert len(aws.alerts()) == 2

    second = _sweep(monkeypatch, aws)

    assert {second[TRAIL_ARN].outcome, second[rule_arn].outcome} == {OutcomeKind.COMPLIANT}
    assert len(aws.alerts()) == 2


def test_targets_travel_through_a_queue_as_keys() -> None:
    from mlwarden.checks.watch_inputs import MacieTarget, OwnRuleTarget, TrailTarget  # noqa: PLC0415

    for target in (
        TrailTarget(TRAIL_ARN, REGION, ACCOUNT),
        MacieTarget(ACCOUNT, REGION),
        OwnRuleTarget(OWN_RULE, REGION, ACCOUNT),
    ):
        key = UNIT.key_of(target)
        assert UNIT.target_of_key(json.loads(json.dumps(key))) == target
