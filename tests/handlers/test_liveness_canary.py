"""The liveness canary against moto, on a clock the test controls: sent, arrived, overdue.

The canary writes its SSM parameter (and, in us-east-1, its IAM role's description); the CloudTrail
events of those calls come back to watch_inputs, which notes their arrival; the canary compares the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from mlwarden import liveness
from tests.conftest import ACCOUNT, REGION, AwsWorld, Handler, load_sample

WATCH_ROLE = "mlwarden-WatchInputsRole-A1S2D3F4G5H6"
WATCH_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{WATCH_ROLE}"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
TICK = {"mlwarden": "liveness-canary"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(liveness, "now", fake)
    yield fake


@pytest.fixture
def canary(aws: AwsWorld, make_handler: Callable[..., Handler]) -> Handler:
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/mlwarden/liveness-canary", Value="not yet written", Type="String"
    )
    boto3.client("iam", region_name=REGION).create_role(
        RoleName="mlwarden-liveness-canary", AssumeRolePolicyDocument="{}", Description="ML Warden liveness canary"
    )
    return make_handler(
        app="watch_inputs",
        remediator_role_arn=WATCH_ROLE_ARN,
        env={
            "OWN_NAME_PREFIX": "mlwarden-",
            "CANARY_PARAMETER": "/mlwarden/liveness-canary",
            "CANARY_ROLE_NAME": "mlwarden-liveness-canary",
            "LIVENESS_WINDOW_MINUTES": "30",
        },
    )


def _arrival(sample: str, clock: Clock, called_minutes: float) -> dict[str, Any]:
    """The canary's CloudTrail event (as events/ holds it), for a call made `called_minutes` after T0."""
    event = copy.deepcopy(load_sample(sample))
    called = liveness.stamp(T0 + timedelta(minutes=called_minutes))
    event["id"] = f"{event['id']}-{called}"
    event["detail"]["eventTime"] = called
    event["time"] = called
    return event


def test_the_canary_changes_its_resources_and_notes_when(aws: AwsWorld, canary: Handler, clock: Clock) -> None:
    result = canary(TICK)
    value = boto3.client("ssm", region_name=REGION).get_parameter(Name="/mlwarden/liveness-canary")["Parameter"]
    assert value["Value"] == "2026-01-01T10:00:00Z"
    role = boto3.client("iam", region_name=REGION).get_role(RoleName="mlwarden-liveness-canary")["Role"]
    assert role["Description"] == "ML Warden liveness canary 2026-01-01T10:00:00Z"
    assert result["paths"] == ["ssm", "iam"]
    assert result["overdue"] == {}
    record = liveness.read(aws.outcome_table, REGION)
    assert record.first_sent == record.last_sent == T0


def test_arrivals_within_the_window_keep_the_canary_quiet_and_a_silence_makes_it_overdue(
    aws: AwsWorld, canary: Handler, clock: Clock
) -> None:
    # t=0: first tick; t=2: both canary events arrive (2 minutes after the call)
    canary(TICK)
    clock.at(2)
    assert canary(_arrival("ssm/put-parameter-liveness-canary.json", clock, 0))["outcome"] == "ignored"
    canary(_arrival("iam/update-role-liveness-canary.json", clock, 0))
    record = liveness.read(aws.outcome_table, REGION)
    assert record.arrival("ssm") == T0 + timedelta(minutes=2)
    assert record.last_delay_seconds == {"ssm": 120.0, "iam": 120.0}
    # t=15 and t=30: ticks, nothing more arrives; the last arrival is still within 30 minutes
    clock.at(15)
    assert canary(TICK)["overdue"] == {}
    clock.at(31)
    assert canary(TICK)["overdue"] == {}
    # t=45: 43 minutes since the last arrival: overdue on both paths
    clock.at(45)
    overdue = canary(TICK)["overdue"]
    assert sorted(overdue) == ["iam", "ssm"]
    assert "since 2026-01-01T10:02:00Z" in overdue["ssm"]


def test_a_canary_event_that_never_arrives_is_overdue_once_the_window_has_passed(
    aws: AwsWorld, canary: Handler, clock: Clock
) -> None:
    canary(TICK)
    clock.at(29)
    assert canary(TICK)["overdue"] == {}  # still within the first window
    clock.at(30)
    assert "arrived ever" in canary(TICK)["overdue"]["ssm"]


def test_a_write_of_the_canary_parameter_by_someone_else_proves_nothing(
    aws: AwsWorld, canary: Handler, clock: Clock
) -> None:
    # Attack: keep the canary "alive" by writing its parameter by hand while ML Warden's own rules are broken.
    canary(TICK)
    event = _arrival("ssm/put-parameter-liveness-canary.json", clock, 0)
    identity = event["detail"]["userIdentity"]
    identity["arn"] = f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/jdoe"
    identity["sessionContext"]["sessionIssuer"]["arn"] = f"arn:aws:iam::{ACCOUNT}:role/DataScientist"
    clock.at(1)
    assert canary(event)["outcome"] == "ignored"
    assert liveness.read(aws.outcome_table, REGION).arrival("ssm") is None


def test_a_late_redelivery_never_moves_the_arrival_back(aws: AwsWorld, canary: Handler, clock: Clock) -> None:
    canary(TICK)
    clock.at(20)
    canary(_arrival("ssm/put-parameter-liveness-canary.json", clock, 15))
    clock.at(10)  # an older arrival noted after it (out of order)
    liveness.note_arrival(aws.outcome_table, REGION, "ssm", T0, clock())
    assert liveness.read(aws.outcome_table, REGION).arrival("ssm") == T0 + timedelta(minutes=20)


def test_the_canary_enables_a_disabled_own_rule_which_cannot_report_its_own_disabling(
    aws: AwsWorld, canary: Handler, clock: Clock
) -> None:
    # The rule that carries DisableRule calls cannot deliver the event of its own disabling: the tick finds it.
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="mlwarden-WatchInputsFunctionOwnResources-Z9X8", EventPattern='{"source":["aws.events"]}')
    events.put_targets(
        Rule="mlwarden-WatchInputsFunctionOwnResources-Z9X8",
        Targets=[{"Id": "fn", "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:mlwarden-WatchInputs"}],
    )
    events.disable_rule(Name="mlwarden-WatchInputsFunctionOwnResources-Z9X8")
    events.put_rule(Name="team-rule", EventPattern='{"source":["aws.s3"]}', State="DISABLED")
    result = canary(TICK)
    assert events.describe_rule(Name="mlwarden-WatchInputsFunctionOwnResources-Z9X8")["State"] == "ENABLED"
    assert events.describe_rule(Name="team-rule")["State"] == "DISABLED"
    assert [r["outcome"] for r in result["own_rules"]] == ["remediated"]
    alert = aws.only_alert()
    assert alert.outcome["severity"] == "CRITICAL"
    assert "found by the liveness canary" in alert.outcome["reason"]
