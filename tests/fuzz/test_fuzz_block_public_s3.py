"""Mutated real-shaped events never crash block_public_s3 and never reach AWS unless they are genuine triggers.

Starts from every sample in events/, applies random damage (dropped keys, nulls, wrong types,
huge and non-ASCII strings, lists where scalars belong, deep nesting) and runs the handler on
moto. `make test` runs 2,000 examples; `make fuzz` runs MLWARDEN_FUZZ_EXAMPLES (10,000).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from mutations import OUTCOMES, SAMPLES, damaged_events, fuzz_settings, run_damaged

from mlwarden.checks import block_public_s3 as s3
from mlwarden.events import ApiCall, parse_event, parse_security_hub_finding
from mlwarden.pipeline import security_hub_target

pytestmark = pytest.mark.fuzz

WRITES = {"PutPublicAccessBlock", "DeletePublicAccessBlock", "PutBucketTagging", "PutBucketAcl", "PutBucketPolicy"}


def _genuine_trigger(event: Any) -> bool:
    finding = parse_security_hub_finding(event)
    if finding is not None:
        return not isinstance(security_hub_target(s3.CHECK, finding), str)
    parsed = parse_event(event)
    if isinstance(parsed, ApiCall) and parsed.error_code:
        return False
    return not isinstance(s3.targets_from_event(parsed), str)


@fuzz_settings
@given(event=damaged_events(SAMPLES))
def test_damaged_events_end_in_an_outcome_and_touch_aws_only_when_genuine(
    event: Any, aws: Any, make_handler: Callable[..., Any]
) -> None:
    handler = _handler(aws, make_handler)
    outcome, calls = run_damaged(handler, event, ("s3", "s3control"))

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
