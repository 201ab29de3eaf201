"""The outcome store keeps any event id EventBridge (or a damaged event) may carry: huge, non-ASCII,
control characters. The first delivery decides, every later one gets that outcome back."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.outcome_store import OutcomeStore
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger

pytestmark = pytest.mark.fuzz

EXAMPLES = max(50, int(os.environ.get("MLWARDEN_FUZZ_EXAMPLES", "2000")) // 20)
_DISTINCT = itertools.count()


def _outcome(event_id: str) -> Outcome:
    trigger = Trigger(event_id, "aws.s3", "cloudtrail", "PutBucketAcl", None, None, "123456789012", "us-east-1")
    return Outcome("block_public_s3", OutcomeKind.REMEDIATED, Severity.HIGH, "fixed", trigger, resource="arn")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw_id=st.one_of(
        st.text(),
        st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=4), st.integers(1000, 20000)),
        st.just("\x00\ud7ff\U0010ffff"),
    )
)
def test_any_event_id_is_decided_once_and_alerted_once(raw_id: str, aws: Any) -> None:
    event_id = f"{next(_DISTINCT)}-{raw_id}"
    decided = [OutcomeStore(aws.outcome_table, event_id).decide_once("block_public_s3", lambda: _outcome(event_id))]
    decided.append(OutcomeStore(aws.outcome_table, event_id).decide_once("block_public_s3", lambda: _outcome("x")))
    sent = [OutcomeStore(aws.outcome_table, event_id).alert_once(decided[0].outcome, lambda: "id") for _ in range(2)]

    assert [d.first_delivery for d in decided] == [True, False]
    assert decided[1].outcome.trigger.event_id == event_id
    assert sent == [True, False]
