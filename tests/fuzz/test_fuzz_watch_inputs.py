"""Mutated events never crash watch_inputs, and it writes (StartLogging, EnableRule) only for genuine triggers.

Events: every sample in events/ with random damage (as tests/fuzz/test_fuzz_block_public_s3.py), run on
moto with the stopped trail and the disabled own rule the watch_inputs samples name. `make test` runs 2,000
examples; `make fuzz` runs MLWARDEN_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from hypothesis import given
from mutations import OUTCOMES, SAMPLES, damaged_events, fuzz_settings, run_damaged

from mlwarden.checks import watch_inputs as watch
from mlwarden.events import ApiCall, parse_event

pytestmark = pytest.mark.fuzz

REMEDIATOR = "arn:aws:iam::123456789012:role/mlwarden-WatchInputsRole-A1S2D3F4G5H6"
WRITES = {"StartLogging", "EnableRule", "UpdateMacieSession", "UpdateAutomatedDiscoveryConfiguration"}
OPTIONS = watch.WatchOptions(
    own_name_prefix="mlwarden-", canary_parameter="/mlwarden/liveness-canary", canary_role="mlwarden-liveness-canary"
)


def _genuine_trigger(event: Any) -> bool:
    parsed = parse_event(event)
    if isinstance(parsed, ApiCall) and parsed.error_code:
        return False
    return not isinstance(watch.targets_from_event(parsed, OPTIONS), str)


_HANDLERS: dict[int, Any] = {}


def _handler(aws: Any, make_handler: Callable[..., Any]) -> Any:
    if id(aws) not in _HANDLERS:
        _HANDLERS.clear()
        aws.s3.create_bucket(Bucket="mlw-trail-logs")
        cloudtrail = boto3.client("cloudtrail", region_name="us-east-1")
        cloudtrail.create_trail(Name="mlw-management-events", S3BucketName="mlw-trail-logs")
        events = boto3.client("events", region_name="us-east-1")
        events.put_rule(
            Name="mlwarden-BlockPublicS3FunctionCloudTrail-1A2B3C4D5E6F",
            EventPattern=json.dumps({"source": ["aws.s3"]}),
            State="DISABLED",
        )
        _HANDLERS[id(aws)] = make_handler(
            app="watch_inputs",
            remediator_role_arn=REMEDIATOR,
            env={
                "OWN_NAME_PREFIX": "mlwarden-",
                "CANARY_PARAMETER": "/mlwarden/liveness-canary",
                "CANARY_ROLE_NAME": "mlwarden-liveness-canary",
            },
        )
    return _HANDLERS[id(aws)]


@fuzz_settings
@given(event=damaged_events(SAMPLES))
def test_damaged_events_end_in_an_outcome_and_write_only_when_genuine(
    event: Any, aws: Any, make_handler: Callable[..., Any]
) -> None:
    handler = _handler(aws, make_handler)
    outcome, calls = run_damaged(handler, event, ("cloudtrail", "events", "macie2"))

    assert outcome in OUTCOMES
    if not _genuine_trigger(event):
        assert outcome == "ignored"
        assert calls == []
    assert not (set(calls) & WRITES) or _genuine_trigger(event)
