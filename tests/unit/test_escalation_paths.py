"""Issue 12: the analyzer evaluates Deny as IAM does within one document, grades escalation by the paths a
policy completes (catalogue: pathfinding.cloud + ML additions), treats account-wide ARNs as `*` and
leaves out statements whose Condition can never be true. One row per case; each row's class is named.

IAM rules encoded here, from the IAM User Guide:
- policy evaluation within one policy, explicit Deny overrides Allow:
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
- NotAction / NotResource: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html
  and https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notresource.html
- a condition key absent from the request makes a non-IfExists operator false; aws:TokenIssueTime is
  only present with temporary credentials:
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.rules import escalation
from mlwarden.rules.policy_analysis import Analysis, Reach, analyze, never_true, resource_reach

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ACCOUNT_ROLES = "arn:aws:iam::123456789012:role/*"


def allow(action: Any, resource: Any = "*", **more: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


def deny(action: Any, resource: Any = "*", **more: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **more}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def above_low(analysis: Analysis) -> list[tuple[str, str]]:
    return [(f.rule.value, f.severity.value) for f in analysis.findings if f.severity.value not in ("LOW", "INFO")]


def paths(analysis: Analysis) -> set[str]:
    return {p for f in analysis.findings for p in f.paths if f.rule.value == "privilege-escalation"}


IAM_STAR = [("service-wildcard", "HIGH"), ("privilege-escalation", "HIGH"), ("partial-escalation", "MEDIUM")]


# --- Deny, NotAction and NotResource within one document --------------------------------------------------
DENY_CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("Allow iam:* next to Deny iam:*", policy(allow("iam:*"), deny("iam:*")), []),
    ("Allow * next to Deny *", policy(allow("*"), deny("*")), []),
    (
        "Deny NotAction leaves one harmless action of Allow *",
        policy(allow("*"), {"Effect": "Deny", "NotAction": "s3:GetObject", "Resource": "*"}),
        [],
    ),
    (
        "Deny NotAction leaves iam:PassRole: half a path, nothing more",
        policy(allow("*"), {"Effect": "Deny", "NotAction": ["iam:PassRole"], "Resource": "*"}),
        [("partial-escalation", "MEDIUM")],
    ),
    (
        "Deny NotAction leaves a complete path",
        policy(
            allow("*"),
            {"Effect": "Deny", "NotAction": ["iam:PassRole", "sagemaker:CreateTrainingJob"], "Resource": "*"},
        ),
        [("privilege-escalation", "HIGH")],
    ),
    (
        "Allow NotAction next to Deny *",
        policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, deny("*")),
        [],
    ),
    (
        "Allow NotAction iam:* and Deny NotAction s3:* leave s3:*",
        policy(
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
            {"Effect": "Deny", "NotAction": "s3:*", "Resource": "*"},
        ),
        [("service-wildcard", "HIGH")],
    ),
    ("NotResource * grants nothing", policy({"Effect": "Allow", "Action": "*", "NotResource": "*"}), []),
    (
        "NotResource on one policy still reaches every other policy",
        policy({"Effect": "Allow", "Action": "iam:CreatePolicyVersion", "NotResource": "arn:aws:iam::1:policy/x"}),
        [("not-resource", "MEDIUM"), ("privilege-escalation", "HIGH")],
    ),
    (
        "Deny on the create half breaks the path",
        policy(allow(["iam:PassRole", "sagemaker:CreateTrainingJob"]), deny("sagemaker:CreateTrainingJob")),
        [("partial-escalation", "MEDIUM")],
    ),
    (
        "Deny on every role of the account covers PassRole on them",
        policy(allow("iam:PassRole", ACCOUNT_ROLES), deny("iam:*", "arn:aws:iam::123456789012:role/*")),
        [],
    ),
    (
        "Deny with NotResource on every resource but one takes that one's grant away",
        policy(
            allow("iam:PassRole", "arn:aws:iam::123456789012:role/admin"),
            {"Effect": "Deny", "Action": "iam:PassRole", "NotResource": "arn:aws:iam::123456789012:role/ml-*"},
        ),
        [],
    ),
    (
        "a Deny with a Condition may not apply: it takes nothing away",
        policy(allow("iam:*"), deny("iam:*", Condition={"Bool": {"aws:MultiFactorAuthPresent": "false"}})),
        IAM_STAR,
    ),
    (
        "a Deny whose Condition is never true takes nothing away",
        policy(allow("iam:*"), deny("iam:*", Condition={"DateLessThan": {"aws:CurrentTime": "2001-01-01T00:00:00Z"}})),
        IAM_STAR,
    ),
    # Attacks on the Deny evaluation: a Deny IAM would reject must not silence the Allows next to it.
    (
        "a Deny without Action or NotAction silences nothing",
        policy(allow("iam:*"), {"Effect": "Deny", "Resource": "*"}),
        IAM_STAR,
    ),
    (
        "a Deny without Resource in an identity policy silences nothing",
        policy(allow("iam:*"), {"Effect": "Deny", "Action": "iam:*"}),
        IAM_STAR,
    ),
    (
        "Deny on one named role leaves PassRole on * (the other roles)",
        policy(allow("iam:PassRole"), deny("iam:PassRole", "arn:aws:iam::123456789012:role/admin")),
        [("partial-escalation", "MEDIUM")],
    ),
]


@pytest.mark.parametrize(("document", "expected"), [c[1:] for c in DENY_CASES], ids=[c[0] for c in DENY_CASES])
def test_deny_notaction_notresource(document: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert above_low(analyze(document, now=NOW)) == expected


# --- combinations: one row per class of escalation ----------------------------------------------------------
PASS_ROLE = allow("iam:PassRole")
COMBINATIONS: list[tuple[str, dict[str, Any], str]] = [
    # self-escalation: change a policy the holder is bound by
    ("self: new policy version", policy(allow("iam:CreatePolicyVersion")), "iam-001"),
    ("self: inline role policy", policy(allow("iam:PutRolePolicy")), "iam-005"),
    ("self: attach to a group", policy(allow("iam:AttachGroupPolicy")), "iam-010"),
    ("self: join a group", policy(allow("iam:AddUserToGroup")), "iam-013"),
    # principal access: credentials for someone else, or change who may assume a role
    ("principal: access key for another user", policy(allow("iam:CreateAccessKey")), "iam-002"),
    ("principal: console password", policy(allow("iam:CreateLoginProfile")), "iam-004"),
    ("principal: trust policy", policy(allow("iam:UpdateAssumeRolePolicy")), "iam-012"),
    ("principal: assume any role", policy(allow("sts:AssumeRole")), "sts-001"),
    # new compute with a passed role, then code runs there
    ("passrole: EC2 instance", policy(PASS_ROLE, allow("ec2:RunInstances")), "ec2-001"),
    (
        "passrole: Lambda function, invoked",
        policy(PASS_ROLE, allow(["lambda:CreateFunction", "lambda:InvokeFunction"])),
        "lambda-001",
    ),
    ("passrole: SageMaker notebook", policy(PASS_ROLE, allow("sagemaker:CreateNotebookInstance")), "sagemaker-001"),
    ("passrole: SageMaker training job", policy(PASS_ROLE, allow("sagemaker:CreateTrainingJob")), "sagemaker-002"),
    ("passrole: CloudFormation stack", policy(PASS_ROLE, allow("cloudformation:CreateStack")), "cloudformation-001"),
    (
        "passrole: AgentCore code interpreter",
        policy(
            PASS_ROLE,
            allow(
                [
                    "bedrock-agentcore:CreateCodeInterpreter",
                    "bedrock-agentcore:StartCodeInterpreterSession",
                    "bedrock-agentcore:InvokeCodeInterpreter",
                ]
            ),
        ),
        "bedrock-001",
    ),
    # existing compute: commands on running instances, sessions, stacks, builds, notebooks
    ("existing: command on instances", policy(allow("ssm:SendCommand")), "ssm-002"),
    (
        "existing: command on every instance of the account",
        policy(allow("ssm:SendCommand", ["arn:aws:ec2:*:123456789012:instance/*", "arn:aws:ssm:*::document/*"])),
        "ssm-002",
    ),
    ("existing: session on instances", policy(allow("ssm:StartSession")), "ssm-001"),
    ("existing: stack update", policy(allow("cloudformation:UpdateStack")), "cloudformation-002"),
    (
        "existing: change set",
        policy(allow(["cloudformation:CreateChangeSet", "cloudformation:ExecuteChangeSet"])),
        "cloudformation-005",
    ),
    ("existing: build with an overridden spec", policy(allow("codebuild:StartBuild")), "codebuild-002"),
    (
        "existing: instance user data",
        policy(allow(["ec2:ModifyInstanceAttribute", "ec2:StopInstances", "ec2:StartInstances"])),
        "ec2-002",
    ),
    (
        "existing: launch template",
        policy(allow(["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"])),
        "ec2-004",
    ),
    ("existing: function code", policy(allow("lambda:UpdateFunctionCode")), "lambda-003"),
    ("existing: notebook URL", policy(allow("sagemaker:CreatePresignedNotebookInstanceUrl")), "sagemaker-004"),
    (
        "existing: notebook lifecycle configuration",
        policy(
            allow(
                [
                    "sagemaker:CreateNotebookInstanceLifecycleConfig",
                    "sagemaker:StopNotebookInstance",
                    "sagemaker:UpdateNotebookInstance",
                    "sagemaker:StartNotebookInstance",
                ]
            )
        ),
        "sagemaker-005",
    ),
    # ML Warden's additions
    (
        "ML: SageMaker endpoint",
        policy(
            PASS_ROLE,
            allow(["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint"]),
        ),
        "mlwarden-sagemaker-03",
    ),
    (
        "ML: AgentCore runtime",
        policy(PASS_ROLE, allow(["bedrock-agentcore:CreateAgentRuntime", "bedrock-agentcore:InvokeAgentRuntime"])),
        "mlwarden-bedrock-01",
    ),
    ("existing: job submission", policy(allow("batch:SubmitJob")), "mlwarden-batch-01"),
    ("existing: container exec", policy(allow(["ecs:ExecuteCommand", "ecs:DescribeTasks"])), "mlwarden-ecs-01"),
    (
        "existing: state machine update",
        policy(allow(["states:UpdateStateMachine", "states:StartExecution"])),
        "mlwarden-states-01",
    ),
    (
        "self: Identity Center permission set",
        policy(allow(["sso:PutInlinePolicyToPermissionSet", "sso:ProvisionPermissionSet"])),
        "mlwarden-sso-01",
    ),
]


@pytest.mark.parametrize(("document", "path_id"), [c[1:] for c in COMBINATIONS], ids=[c[0] for c in COMBINATIONS])
def test_complete_path_on_star_is_high(document: dict[str, Any], path_id: str) -> None:
    analysis = analyze(document, now=NOW)

    assert path_id in paths(analysis)
    assert analysis.highest is not None
    assert analysis.highest.value == "HIGH"


HALVES: list[tuple[str, dict[str, Any], str]] = [
    ("PassRole alone", policy(PASS_ROLE), "sagemaker:CreateTrainingJob (sagemaker-002)"),
    (
        "PassRole + CreateFunction lacks the invoke",
        policy(PASS_ROLE, allow("lambda:CreateFunction")),
        "lambda:InvokeFunction (lambda-001)",
    ),
]


@pytest.mark.parametrize(("document", "lack"), [c[1:] for c in HALVES], ids=[c[0] for c in HALVES])
def test_half_a_path_is_medium_and_names_what_it_lacks(document: dict[str, Any], lack: str) -> None:
    analysis = analyze(document, now=NOW)

    (half,) = [f for f in analysis.findings if f.rule.value == "partial-escalation"]
    assert half.severity.value == "MEDIUM"
    assert lack in half.lacks
    assert not paths(analysis)


@pytest.mark.parametrize(
    "document",
    [
        policy(allow("iam:PassRole", "arn:aws:iam::123456789012:role/train"), allow("sagemaker:CreateTrainingJob")),
        policy(allow("ec2:RunInstances")),  # compute without a role to pass: half only with PassRole first
        policy(allow("lambda:InvokeFunction")),  # a trigger without the change it would trigger
        policy(allow(["ec2:DescribeInstances", "ecs:DescribeTasks"])),  # read-only helpers of a path
        policy(allow("iam:PassRole", "arn:aws:s3:::bucket/*")),  # an ARN of another service reaches no role
        # SendCommand and StartSession authorize on the instance too: documents alone run nothing
        # (AWS managed AWSCloud9EnvironmentMember, AWSApplicationMigrationSSMAccess)
        policy(allow(["ssm:SendCommand", "ssm:StartSession"], "arn:aws:ssm:*:*:document/*")),
    ],
    ids=[
        "PassRole to one role + training",
        "RunInstances alone",
        "invoke alone",
        "describe helpers",
        "PassRole on an S3 ARN",
        "ssm on documents only",
    ],
)
def test_no_escalation(document: dict[str, Any]) -> None:
    analysis = analyze(document, now=NOW)

    assert [f for f in analysis.findings if f.paths] == []


def test_path_across_statements_names_both_and_reads_as_the_issue_asks() -> None:
    analysis = analyze(
        policy(allow("iam:PassRole", ACCOUNT_ROLES), allow("sagemaker:CreateTrainingJob", Sid="Train")), now=NOW
    )

    (finding,) = [f for f in analysis.findings if f.rule.value == "privilege-escalation"]
    assert finding.severity.value == "HIGH"
    assert finding.statements == (0, 1)
    assert finding.path == (
        "iam:PassRole on all roles + sagemaker:CreateTrainingJob: run code as any role that trusts SageMaker"
    )
    assert finding.as_dict()["path"] == finding.path
    assert finding.message == finding.path


# --- account-wide and name-prefix ARNs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("resource", "reach"),
    [
        ("*", Reach.ANY),
        ("arn:aws:iam::*:role/*", Reach.ANY),
        ("arn:aws:iam::123456789012:role/*", Reach.ANY),
        ("arn:aws:iam::123456789012:policy/*", Reach.ANY),
        ("arn:aws:lambda:us-east-1:123456789012:function:*", Reach.ANY),
        ("arn:aws:iam::*:policy/team-*", Reach.PREFIX),
        ("arn:aws:iam::123456789012:role/service-role/*", Reach.PREFIX),
        ("arn:aws:iam::123456789012:role/ml-?", Reach.PREFIX),
        ("arn:aws:iam::123456789012:role/train", Reach.NARROW),
    ],
)
def test_resource_reach(resource: str, reach: Reach) -> None:
    assert resource_reach(resource) is reach


ARN_CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]], str]] = [
    (
        "PassRole on every role of the account + training",
        policy(allow("iam:PassRole", ACCOUNT_ROLES), allow("sagemaker:CreateTrainingJob")),
        [("privilege-escalation", "HIGH")],
        "on all roles",
    ),
    (
        "AttachRolePolicy on every role of the account",
        policy(allow("iam:AttachRolePolicy", ACCOUNT_ROLES)),
        [("privilege-escalation", "HIGH")],
        "on all roles",
    ),
    (
        "PutRolePolicy on every role of the account",
        policy(allow("iam:PutRolePolicy", ACCOUNT_ROLES)),
        [("privilege-escalation", "HIGH")],
        "on all roles",
    ),
    (
        "CreatePolicyVersion on a policy-name prefix in every account",
        policy(allow("iam:CreatePolicyVersion", "arn:aws:iam::*:policy/team-*")),
        [("privilege-escalation", "MEDIUM")],
        "on policies matching policy/team-*",
    ),
    (
        "PassRole on a role-name prefix + training",
        policy(allow("iam:PassRole", "arn:aws:iam::123456789012:role/ml-*"), allow("sagemaker:CreateTrainingJob")),
        [("privilege-escalation", "MEDIUM")],
        "on roles matching role/ml-*",
    ),
    (
        "a complete path lowered by a restricting condition",
        policy(
            PASS_ROLE, allow("sagemaker:CreateTrainingJob", Condition={"StringEquals": {"aws:ResourceTag/team": "ml"}})
        ),
        [("privilege-escalation", "MEDIUM")],
        "on all roles",
    ),
]


@pytest.mark.parametrize(("document", "expected", "words"), [c[1:] for c in ARN_CASES], ids=[c[0] for c in ARN_CASES])
def test_account_wide_and_prefix_arns(document: dict[str, Any], expected: list[tuple[str, str]], words: str) -> None:
    analysis = analyze(document, now=NOW)

    assert above_low(analysis) == expected
    assert words in next(f.path for f in analysis.findings if f.paths)


# --- conditions that can never be true ----------------------------------------------------------------------
ADMIN = allow("*")
CONDITIONS: list[tuple[str, dict[str, Any], bool]] = [
    (
        "DateLessThan aws:TokenIssueTime in the past",
        {"DateLessThan": {"aws:TokenIssueTime": "2020-01-01T00:00:00Z"}},
        True,
    ),
    ("DateLessThan aws:CurrentTime in the past", {"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, True),
    ("DateLessThanEquals aws:EpochTime in the past", {"DateLessThanEquals": {"aws:EpochTime": "1000000000"}}, True),
    ("every listed date in the past", {"DateLessThan": {"aws:CurrentTime": ["2020-01-01", "2021-01-01"]}}, True),
    (
        "Null true on a key another operator needs",
        {"Null": {"aws:SourceVpce": "true"}, "StringEquals": {"aws:SourceVpce": "vpce-1"}},
        True,
    ),
    ("a date in the future", {"DateLessThan": {"aws:CurrentTime": "2999-01-01T00:00:00Z"}}, False),
    ("one of the dates in the future", {"DateLessThan": {"aws:CurrentTime": ["2020-01-01", "2999-01-01"]}}, False),
    (
        "a token issued an hour before now may still be valid",
        {"DateLessThan": {"aws:TokenIssueTime": "2026-06-01T00:00:00Z"}},
        False,
    ),
    ("an unparseable date never removes a statement", {"DateLessThan": {"aws:CurrentTime": "yesterday"}}, False),
    ("a date on another key", {"DateLessThan": {"aws:MultiFactorAuthAge": "2020-01-01"}}, False),
    (
        "IfExists with Null true is satisfiable",
        {"Null": {"aws:SourceVpce": "true"}, "StringEqualsIfExists": {"aws:SourceVpce": "v"}},
        False,
    ),
    ("a malformed block", {"DateLessThan": "2020-01-01"}, False),
]


@pytest.mark.parametrize(("condition", "impossible"), [c[1:] for c in CONDITIONS], ids=[c[0] for c in CONDITIONS])
def test_impossible_conditions_remove_the_statement(condition: dict[str, Any], impossible: bool) -> None:
    document = policy({**ADMIN, "Condition": condition})

    analysis = analyze(document, now=datetime(2026, 6, 1, 1, tzinfo=UTC))

    assert (never_true(condition, now=datetime(2026, 6, 1, 1, tzinfo=UTC)) is not None) is impossible
    assert (analysis.findings == ()) is impossible


# --- malformed documents: never a crash ----------------------------------------------------------------------
_TEXT = st.sampled_from(
    ["*", "iam:*", "iam:PassRole", "s3:Get*", "sagemaker:CreateTrainingJob", "", "x", "arn:aws:iam::1:role/*"]
)
_VALUE = st.one_of(st.none(), st.integers(), _TEXT, st.lists(st.one_of(_TEXT, st.integers(), st.none()), max_size=3))
_CONDITION = st.one_of(
    _VALUE,
    st.dictionaries(
        st.sampled_from(["DateLessThan", "Null", "StringEquals", "Bool", "ForAnyValue:StringLike", "x"]),
        st.one_of(
            _VALUE, st.dictionaries(st.sampled_from(["aws:CurrentTime", "aws:EpochTime", "aws:SourceVpce"]), _VALUE)
        ),
        max_size=2,
    ),
)
_STATEMENT = st.fixed_dictionaries(
    {},
    optional={
        "Effect": st.sampled_from(["Allow", "Deny", "allow", 1]),
        "Action": _VALUE,
        "NotAction": _VALUE,
        "Resource": _VALUE,
        "NotResource": _VALUE,
        "Condition": _CONDITION,
        "Sid": _VALUE,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_STATEMENT, _VALUE), max_size=4))
def test_any_document_is_analysed_without_a_crash(statements: list[Any]) -> None:
    analysis = analyze({"Statement": statements}, now=NOW)

    for finding in analysis.findings:
        assert finding.message
        finding.as_dict()


# --- the compiled catalogue -----------------------------------------------------------------------------------
def test_compiled_catalogue_is_current_against_the_script_input() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_escalation_paths  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    source = json.loads(build_escalation_paths.SOURCE.read_text(encoding="utf-8"))

    expected = build_escalation_paths.render(build_escalation_paths.build(source))

    assert build_escalation_paths.OUTPUT.read_text(encoding="utf-8") == expected, "run `make catalogue`"


def test_catalogue_records_source_version_licence_and_knows_its_actions() -> None:
    catalogue = escalation.catalogue()

    assert catalogue.source.startswith("https://github.com/DataDog/pathfinding.cloud @ ")
    assert len(catalogue.version) == 40
    assert catalogue.license == "Apache-2.0"
    assert len(catalogue.paths) >= 80
    assert len({p.id for p in catalogue.paths}) == len(catalogue.paths)
    unknown = [a for p in catalogue.paths for a in p.actions if escalation.spelled(a.lower()) == a.lower()]
    assert unknown == [], "every path action is in AWS's action catalogue"


def test_catalogue_ships_with_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"escalation_paths.json"' in pyproject
