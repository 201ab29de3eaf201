"""Who may write what ML Warden relies on: each role only its own check's outcome items, only from its function.

Issue 10, item 7: every function's role could write any item of the outcome table, and one item (a flap
hold until the year 3000) kept a public PII bucket unfixed. Nothing stored can make a check skip a
resource any more (tests/handlers), and these tests pin the permissions that keep one check's role out of
another check's items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlwarden import alert_dedup, flapguard, outcome_store, sweep_progress
from mlwarden.checks import CHECK_NAMES
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = {name: r for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
# The functions that run a check (functions/<check>/); the sweep planner only lists and counts.
CHECK_FUNCTIONS = {name: r for name, r in FUNCTIONS.items() if name != "SweepPlannerFunction"}
# The deployed sweep's progress items (sweep_progress): counts only, shared by the planner and every check.
SWEEP_PROGRESS = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["sweep#*"]}}
# Actions a function's code calls to change state; reads and what Lambda does on the function's behalf
# (logs, traces, the dead-letter queue, KMS through SNS) are not among them.
_NOT_WRITES = ("Get", "List", "Describe", "Scan", "Query")
_LAMBDA_ON_ITS_BEHALF = ("logs:", "xray:", "sqs:", "kms:")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for statement in _as_list(document["Statement"]):
        if "Fn::If" in statement:  # a statement granted only under a template condition
            found += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Action" in s]
        else:
            found.append(statement)
    return found


def _check_of(function: dict[str, Any]) -> str:
    """The check a function runs is its folder's name (functions/<check>/)."""
    return str(function["Properties"]["CodeUri"]).strip("/").rsplit("/", 1)[-1]


def _role_of(function: dict[str, Any]) -> str:
    return str(function["Properties"]["Role"]["Fn::GetAtt"][0])


def _role_statements(role: str) -> list[dict[str, Any]]:
    return [s for p in RESOURCES[role]["Properties"]["Policies"] for s in _statements(p["PolicyDocument"])]


def test_the_stores_call_only_the_item_actions_the_roles_grant() -> None:
    assert flapguard.PERMISSIONS | alert_dedup.PERMISSIONS <= outcome_store.PERMISSIONS


@pytest.mark.parametrize("function_name", sorted(CHECK_FUNCTIONS))
def test_every_outcome_table_statement_is_limited_to_its_own_checks_items(function_name: str) -> None:
    # dynamodb:LeadingKeys is the partition key of the items a request touches; ForAllValues makes every key
    # of a request match. https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/specifying-conditions.html
    check = _check_of(FUNCTIONS[function_name])
    table = [
        s
        for s in _role_statements(_role_of(FUNCTIONS[function_name]))
        if s["Resource"] == {"Fn::GetAtt": ["OutcomeTable", "Arn"]} and s.get("Condition") != SWEEP_PROGRESS
    ]
    assert table, "every check records its outcomes"
    for statement in table:
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] == {"Fn::GetAtt": ["OutcomeTable", "Arn"]}
        assert statement["Condition"] == {
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{check}.*", f"{check}#*"]}
        }


@pytest.mark.parametrize(
    "function_name",
    sorted(n for n, r in FUNCTIONS.items() if "SweepPages" in r["Properties"].get("Events", {}) or "Planner" in n),
)
def test_sweep_progress_items_are_only_updated_never_read_put_or_deleted(function_name: str) -> None:
    # A role may touch `sweep#` items besides its own check's: with UpdateItem alone, it can add to a sweep's
    # counts or claim its summary, and nothing it writes there is read by a check deciding about a resource.
    progress = [s for s in _role_statements(_role_of(FUNCTIONS[function_name])) if s.get("Condition") == SWEEP_PROGRESS]
    assert len(progress) == 1
    assert progress[0]["Effect"] == "Allow"
    assert progress[0]["Action"] == "dynamodb:UpdateItem"
    assert progress[0]["Resource"] == {"Fn::GetAtt": ["OutcomeTable", "Arn"]}
    assert set(_as_list(progress[0]["Action"])) == sweep_progress.PERMISSIONS
    assert sweep_progress.key_of("sweep-x").startswith("sweep#")
    assert not any(sweep_progress.key_of("sweep-x").startswith(f"{check}") for check in CHECK_NAMES)


def test_the_planner_touches_no_checks_items() -> None:
    table = [
        s
        for s in _role_statements(_role_of(FUNCTIONS["SweepPlannerFunction"]))
        if s["Resource"] == {"Fn::GetAtt": ["OutcomeTable", "Arn"]}
    ]
    assert [s["Condition"] for s in table] == [SWEEP_PROGRESS]


def test_every_key_the_pipeline_writes_starts_with_the_check_name() -> None:
    from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger  # noqa: PLC0415

    trigger = Trigger("e", "aws.s3", "cloudtrail", "PutBucketAcl", None, None, None, None)
    outcome = Outcome("tag_pii_bucket", OutcomeKind.FLAGGED, Severity.HIGH, "r", trigger, resource="arn:aws:s3:::b")
    for key in (
        flapguard.flap_key("tag_pii_bucket", "arn:aws:s3:::b"),
        flapguard.flap_key("tag_pii_bucket", "x" * 5000),
        alert_dedup.dedup_key("tag_pii_bucket", outcome),
    ):
        assert key.startswith("tag_pii_bucket#")
        assert len(key.encode()) <= 2048  # DynamoDB's partition key limit


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_trust_names_lambda_in_this_account(function_name: str) -> None:
    # AWS documents aws:SourceArn for policies on a function (who may invoke it), not for the execution
    # role's trust, so the trust cannot name one function; it names Lambda and this account.
    # https://docs.aws.amazon.com/lambda/latest/dg/permissions-source-function-arn.html
    [trust] = RESOURCES[_role_of(FUNCTIONS[function_name])]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_every_write_of_a_role_is_refused_outside_its_own_function(function_name: str) -> None:
    # Lambda puts lambda:SourceFunctionArn into the request context of every AWS call the function's code
    # makes; a negated ARN operator also matches when the key is absent (credentials used elsewhere).
    # https://docs.aws.amazon.com/lambda/latest/dg/permissions-source-function-arn.html
    role = _role_of(FUNCTIONS[function_name])
    writes = {
        str(action)
        for statement in _role_statements(role)
        for action in _as_list(statement["Action"])
        if not str(action).startswith(_LAMBDA_ON_ITS_BEHALF) and not str(action).split(":")[1].startswith(_NOT_WRITES)
    }
    [guard] = [
        r["Properties"]
        for r in RESOURCES.values()
        if r["Type"] == "AWS::IAM::RolePolicy" and r["Properties"]["RoleName"] == {"Ref": role}
    ]
    [deny] = _statements(guard["PolicyDocument"])
    assert deny["Effect"] == "Deny"
    assert writes <= set(deny["Action"])
    assert deny["Condition"] == {"ArnNotEquals": {"lambda:SourceFunctionArn": {"Fn::GetAtt": [function_name, "Arn"]}}}


def test_flap_and_dedup_parameters_reach_every_function() -> None:
    parameters = TEMPLATE["Parameters"]
    assert (parameters["FlapDigestMinutes"]["Default"], parameters["AlertDedupHours"]["Default"]) == (60, 24)
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["FLAP_DIGEST_MINUTES"] == {"Ref": "FlapDigestMinutes"}
    assert env["ALERT_DEDUP_HOURS"] == {"Ref": "AlertDedupHours"}
