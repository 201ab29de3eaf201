"""Pure parts of watch_inputs: which selectors feed ML Warden, when the canary is overdue, the options.

Event selectors: "By default, trails created without specific event selectors will be configured to log
all read and write management events" and IncludeManagementEvents / ReadWriteType default to true / All
(https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_EventSelector.html); advanced selectors
select management events with eventCategory Equals Management and may keep only reads with readOnly Equals
true (https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_AdvancedFieldSelector.html).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlwarden import liveness
from mlwarden.checks.watch_inputs import load_options
from mlwarden.rules.trail_selectors import records_management_writes
from mlwarden.settings import SettingsError


def _advanced(*fields: tuple[str, list[str]]) -> dict[str, Any]:
    return {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": f, "Equals": v} for f, v in fields]}]}


@pytest.mark.parametrize(
    ("selectors", "feeds"),
    [
        ({}, True),  # never set: CloudTrail's default records all management events
        ({"EventSelectors": [], "AdvancedEventSelectors": []}, True),
        ({"EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": True}]}, True),
        ({"EventSelectors": [{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}]}, True),
        ({"EventSelectors": [{}]}, True),  # both fields default: All, true
        ({"EventSelectors": [{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": True}]}, False),
        ({"EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": False}]}, False),
        # Panther's "Event Selector Disabled" record (Apache-2.0): data events only, read only
        (
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "ReadOnly",
                        "IncludeManagementEvents": False,
                        "DataResources": [{"Type": "AWS::S3::Object", "Values": []}],
                    }
                ]
            },
            False,
        ),
        (_advanced(("eventCategory", ["Management"])), True),
        (_advanced(("eventCategory", ["Management"]), ("readOnly", ["false"])), True),
        (_advanced(("eventCategory", ["Management"]), ("readOnly", ["true"])), False),
        (_advanced(("eventCategory", ["Data"]), ("resources.type", ["AWS::S3::Object"])), False),
        ({"EventSelectors": "not a list"}, True),  # unreadable counts as never set, never as "narrowed"
        ({"EventSelectors": [None, "x"]}, False),
    ],
)
def test_which_selectors_record_management_writes(selectors: dict[str, Any], feeds: bool) -> None:
    assert records_management_writes(selectors) is feeds


T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)
WINDOW = timedelta(minutes=30)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("first_sent", "arrived", "now", "overdue"),
    [
        (None, None, 60, False),  # the canary never ran: its alarm, not this, says so
        (0, None, 29, False),  # within the first window
        (0, None, 30, True),
        (0, 2, 31, False),
        (0, 2, 32, True),
        (0, 40, 45, False),
        (0, 90, 45, True),  # an arrival in the future cannot be real: counted as absent
    ],
)
def test_when_the_canary_is_overdue(first_sent: float | None, arrived: float | None, now: float, overdue: bool) -> None:
    record = liveness.Record(
        first_sent=None if first_sent is None else _at(first_sent),
        last_sent=None if first_sent is None else _at(first_sent),
        last_arrival={} if arrived is None else {"ssm": _at(arrived)},
    )
    assert (liveness.overdue(record, "ssm", _at(now), WINDOW) is not None) is overdue


def test_options_default_to_watching_nothing_of_its_own() -> None:
    options = load_options({})
    assert (options.own_name_prefix, options.deployer_arns, options.reenable_macie) == (None, (), False)
    assert options.liveness_window == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEPLOYER_PRINCIPAL_ARN", "deployer"),
        ("DEPLOYER_PRINCIPAL_ARN", "arn:aws:s3:::bucket"),
        ("OWN_NAME_PREFIX", "mlwarden"),  # without the dash, "mlwardenX-..." would count as own
        ("OWN_NAME_PREFIX", "-"),
        ("LIVENESS_WINDOW_MINUTES", "5"),
        ("LIVENESS_WINDOW_MINUTES", "thirty"),
        ("REENABLE_MACIE", "yes"),
        ("CANARY_ROLE_NAME", "a role"),
    ],
)
def test_invalid_options_fail_at_cold_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_options({name: value})


def test_several_deployers_may_be_named() -> None:
    options = load_options(
        {"DEPLOYER_PRINCIPAL_ARN": "arn:aws:iam::123456789012:role/Ci, arn:aws:iam::123456789012:user/alice"}
    )
    assert options.deployer_arns == ("arn:aws:iam::123456789012:role/Ci", "arn:aws:iam::123456789012:user/alice")
