"""Mutated real-shaped events never crash block_public_s3 and never reach AWS unless they are genuine triggers.

Starts from every sample in events/, applies random damage (dropped keys, nulls, wrong types,
huge and non-ASCII strings, lists where scalars belong, deep nesting) and runs the handler on
moto. `make test` runs 2,000 examples; `make fuzz` runs MLWARDEN_FUZZ_EXAMPLES (10,000).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from mutations import damaged_events, distinct_id

from mlwarden import clients, s3
from mlwarden.errors import AlertDeliveryFailed, RemediationFailed
from mlwarden.events import ApiCall, parse_event
from mlwarden.loopguard import is_own_change

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = [
    json.loads(path.read_text()) for path in sorted((ROOT / "events").rglob("*.json")) if path.name != "env.json"
]
EXAMPLES = int(os.environ.get("MLWARDEN_FUZZ_EXAMPLES", "2000"))
OUTCOMES = {"remediated", "would-remediate", "flagged", "compliant", "exempt", "ignored", "failed"}
WRITES = {"PutPublicAccessBlock", "DeletePublicAccessBlock", "PutBucketTagging", "PutBucketAcl", "PutBucketPolicy"}
REMEDIATOR = "arn:aws:iam::123456789012:role/BlockPublicS3Role"


def _genuine_trigger(event: Any) -> bool:
    parsed = parse_event(event)
    if isinstance(parsed, ApiCall) and (parsed.error_code or is_own_change(parsed, REMEDIATOR)):
        return False
    return not isinstance(s3.target_of(parsed), str)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(event=damaged_events(SAMPLES))
def test_damaged_events_end_in_an_outcome_and_touch_aws_only_when_genuine(
    event: Any, aws: Any, make_handler: Callable[..., Any]
) -> None:
    handler = _handler(aws, make_handler)
    distinct_id(event)
    calls: list[str] = []
    for service in ("s3", "s3control"):
        clients.client(service).meta.events.register(
            "before-call.*.*", lambda model, **_: calls.append(model.name), unique_id=f"fuzz-{service}"
        )
    try:
        outcome = handler(event)["outcome"]
    except (RemediationFailed, AlertDeliveryFailed) as err:
        outcome = err.outcome.outcome.value  # the deliberate re-raise after a recorded failure

    assert outcome in OUTCOMES
    if not _genuine_trigger(event):
        assert outcome == "ignored"
        assert calls == []
    assert not ({c for c in calls} & WRITES) or _genuine_trigger(event)


_HANDLERS: dict[int, Any] = {}


def _handler(aws: Any, make_handler: Callable[..., Any]) -> Any:
    # One handler per moto world: importing it per example would dominate the run time.
    if id(aws) not in _HANDLERS:
        _HANDLERS.clear()
        for name in ("mlw-training-data-acl", "mlw-training-data-policy", "mlw-feature-store"):
            aws.bucket(name, acl="public-read")
        aws.bucket("mlw-public-website", acl="public-read", tags={"mlwarden:exempt": "true"})
        aws.bucket("mlw-model-artifacts", block=dict.fromkeys(s3.FLAGS, True))
        _HANDLERS[id(aws)] = make_handler()
    return _HANDLERS[id(aws)]
