"""What the sweep tests share: the settings a sweep runs with, one sweep of one check, the outcome compared."""

from __future__ import annotations

from typing import Any

import pytest

from mlwarden.checks import CheckUnit
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.settings import Settings, load_settings
from mlwarden.sweep import Summary, new_sweep_id, sweep_check
from tests.conftest import ACCOUNT, REGION, AwsWorld


def sweep_settings(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str) -> Settings:
    """The settings of a function deployed against `aws` (outcome table, registry, alert topic)."""
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("REMEDIATION_MODE", mode)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    return load_settings()


def sweep(unit: CheckUnit, monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "enforce") -> list[Outcome]:
    """One sweep of one check over the test account's region, outcomes in listing order."""
    settings = sweep_settings(monkeypatch, aws, mode)
    summary = Summary(new_sweep_id())
    return list(sweep_check(unit, Inventory(ACCOUNT, REGION), settings, summary.sweep_id, summary=summary))


def assert_same_outcome(by_event: dict[str, Any], by_sweep: Outcome, expected: OutcomeKind) -> None:
    """The event path's outcome (as the handler returns it) and the sweep's say the same thing."""
    assert by_event["outcome"] == by_sweep.outcome.value == expected.value
    assert by_event["severity"] == by_sweep.severity.value
    assert by_event["findings"] == list(by_sweep.findings)
