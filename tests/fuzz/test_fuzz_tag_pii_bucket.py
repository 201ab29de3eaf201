"""Mutated real-shaped events never crash tag_pii_bucket and never reach AWS unless they are genuine triggers.

Starts from every sample in events/, applies random damage (dropped keys, nulls, wrong types,
huge and non-ASCII strings, lists where scalars belong, deep nesting) and runs the handler on
moto. `make test` runs 2,000 examples; `make fuzz` runs MLWARDEN_FUZZ_EXAMPLES (10,000).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from mutations import OUTCOMES, SAMPLES, damaged_events, fuzz_settings, run_damaged

from mlwarden.checks import block_public_s3 as s3
from mlwarden.checks.tag_pii_bucket import PiiFinding, finding_of
from mlwarden.events import parse_event

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]
# Every sample, with the Macie findings twice as likely: they are this handler's input.
MACIE_TWICE = [
    *SAMPLES,
    *(json.loads(path.read_text()) for path in sorted((ROOT / "events" / "macie").glob("*.json"))),
]
WRITES = {
    "PutPublicAccessBlock",
    "DeletePublicAccessBlock",
    "PutBucketTagging",
    "DeleteBucketTagging",
    "PutObjectTagging",
    "PutBucketAcl",
    "PutBucketPolicy",
}


def _genuine_trigger(event: Any) -> bool:
    return isinstance(finding_of(parse_event(event)), PiiFinding)


@fuzz_settings
@given(event=damaged_events(MACIE_TWICE))
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
    for bucket, tags in _FOREIGN.items():  # whatever happened, nobody else's tag was lost
        current = aws.tags_of(bucket)
        assert {key: current.get(key) for key in tags} == tags
        assert all(_TAG_VALUE.match(value) for value in current.values())


_HANDLERS: dict[int, Any] = {}
_FOREIGN = {
    "mlw-training-data-acl": {"team": "ml-research", "cost-center": "ml-1234"},
    "mlw-public-website": {"mlwarden:exempt": "true"},
    "mlw-shared-datasets": {"team": "analytics"},
}
_TAG_VALUE = re.compile(r"^[\w +\-=.:/@]{0,256}$")


def _handler(aws: Any, make_handler: Callable[..., Any]) -> Any:
    # One handler per moto world: importing it per example would dominate the run time.
    if id(aws) not in _HANDLERS:
        _HANDLERS.clear()
        aws.bucket("mlw-training-data-acl", tags=_FOREIGN["mlw-training-data-acl"], block=dict.fromkeys(s3.FLAGS, True))
        aws.bucket("mlw-shared-datasets", acl="public-read", tags=_FOREIGN["mlw-shared-datasets"])
        aws.bucket("mlw-public-website", acl="public-read", tags=_FOREIGN["mlw-public-website"])
        aws.bucket("mlw-training-data-policy", acl="public-read")
        _HANDLERS[id(aws)] = make_handler(app="tag_pii_bucket", env={"TAG_PII_OBJECTS": "true"})
    return _HANDLERS[id(aws)]
