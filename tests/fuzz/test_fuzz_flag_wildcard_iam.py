"""Mutated events never crash flag_wildcard_iam, and arbitrary policy documents never crash the analyzer.

Events: every sample in events/ with random damage (as tests/fuzz/test_fuzz_block_public_s3.py), run on
moto with the policies, roles and users the IAM samples name. Documents: any JSON value, deeply nested
and huge ones included. `make test` runs 2,000 examples; `make fuzz` runs MLWARDEN_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mutations import OUTCOMES, SAMPLES, damaged_events, fuzz_settings, run_damaged

from mlwarden.checks import flag_wildcard_iam as iam
from mlwarden.events import ApiCall, parse_event
from mlwarden.rules.policy_analysis import Analysis, analyze

pytestmark = pytest.mark.fuzz

REMEDIATOR = "arn:aws:iam::123456789012:role/FlagWildcardIamRole"
WRITES = {"TagPolicy", "TagRole", "TagUser", "UntagPolicy", "SetDefaultPolicyVersion"}
ADMIN = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


def _genuine_trigger(event: Any) -> bool:
    parsed = parse_event(event)
    if isinstance(parsed, ApiCall) and parsed.error_code:
        return False
    return not isinstance(iam.targets_from_event(parsed), str)


@fuzz_settings
@given(event=damaged_events(SAMPLES))
def test_damaged_events_end_in_an_outcome_and_touch_iam_only_when_genuine(
    event: Any, aws: Any, make_handler: Callable[..., Any]
) -> None:
    handler = _handler(aws, make_handler)
    outcome, calls = run_damaged(handler, event, ("iam",))

    assert outcome in OUTCOMES
    if not _genuine_trigger(event):
        assert outcome == "ignored"
        assert calls == []
    assert not (set(calls) & WRITES) or _genuine_trigger(event)


_HANDLERS: dict[int, Any] = {}


def _handler(aws: Any, make_handler: Callable[..., Any]) -> Any:
    if id(aws) not in _HANDLERS:
        _HANDLERS.clear()
        client = boto3.client("iam", region_name="us-east-1")
        for role in ("mlw-data-scientist", "mlw-training", "new-role"):
            client.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST)
            client.put_role_policy(RoleName=role, PolicyName="s3-everything", PolicyDocument=ADMIN)
        client.create_user(UserName="mlw-pipeline-bot")
        client.put_user_policy(UserName="mlw-pipeline-bot", PolicyName="pass-any-role", PolicyDocument=ADMIN)
        client.create_group(GroupName="mlw-researchers")
        client.put_group_policy(GroupName="mlw-researchers", PolicyName="all-but-iam", PolicyDocument=ADMIN)
        for name in ("mlw-sagemaker-everything", "mlw-training"):
            client.create_policy(PolicyName=name, PolicyDocument=ADMIN)
        _HANDLERS[id(aws)] = make_handler(
            app="flag_wildcard_iam", remediator_role_arn=REMEDIATOR, env={iam.REVERT_VARIABLE: "true"}
        )
    return _HANDLERS[id(aws)]


# --- the analyzer on any document ---------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["*", "s3:*", "iam:Pass*", "Allow", "Deny", "arn:aws:s3:::*", "aws:SourceVpce", "?:*", ":"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(
            st.sampled_from(
                ["Statement", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Sid", "x"]
            ),
            children,
            max_size=6,
        ),
    ),
    max_leaves=60,
)


@fuzz_settings
@given(document=_JSON)
def test_analyzer_never_raises_on_any_json(document: Any) -> None:
    assert isinstance(analyze(document), Analysis)
    assert isinstance(analyze({"Statement": document}), Analysis)
    assert isinstance(analyze({"Statement": [{"Effect": "Allow", "Action": document, "Resource": document}]}), Analysis)


def test_deeply_nested_policy_is_a_problem_not_a_crash() -> None:
    deep: Any = "s3:*"
    for _ in range(50_000):
        deep = [deep]
    analysis = analyze({"Statement": [{"Effect": "Allow", "Action": deep, "Resource": "*", "Condition": deep}]})
    assert analysis.problems
    # A deeply nested JSON string (as CloudTrail could carry) decodes to None instead of raising RecursionError.
    target = iam.targets_from_event(
        parse_event(
            {
                "source": "aws.iam",
                "detail-type": "AWS API Call via CloudTrail",
                "detail": {
                    "eventSource": "iam.amazonaws.com",
                    "eventName": "PutRolePolicy",
                    "requestParameters": {"roleName": "r", "policyName": "p", "policyDocument": "[" * 100_000},
                },
            }
        )
    )
    assert isinstance(target, iam.PrincipalTarget)
    document = iam.bounded_document(target.event_document, iam.INLINE_POLICY_LIMITS["role"], "event")
    assert document.document is None
    assert document.refused == "not a JSON policy document"


def test_huge_policy_is_analysed_in_bounded_time() -> None:
    statements = [
        {"Effect": "Allow", "Action": [f"s3:Get{i}*", "iam:Put*", "s3:GetObject", "ec2:*"], "Resource": "*"}
        for i in range(5_000)
    ]
    started = time.perf_counter()
    analysis = analyze({"Statement": statements})
    assert time.perf_counter() - started < 10
    assert len(analysis.findings) >= 5_000
