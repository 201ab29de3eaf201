"""ML Warden practises its own least privilege: its analyzer finds nothing above LOW in template.yaml.

The template is read as `mlwarden lint` reads it (intrinsic functions resolved to plausible values, both
branches of a statement-level Fn::If), so `make validate`'s `mlwarden lint template.yaml` agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlwarden.outcomes import Severity
from mlwarden.rules.policy_analysis import analyze, rank
from mlwarden_cli.lint import Policy, Resolver, delegates_to_iam, policies_in
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
POLICIES: list[Policy] = policies_in(ROOT / "template.yaml") or []


def test_the_template_has_the_policies_we_expect_to_check() -> None:
    names = {policy.name for policy in POLICIES}
    assert {"BlockPublicS3Role/block-public-s3", "FlagWildcardIamRole/flag-wildcard-iam", "AlertKey/KeyPolicy"} <= names


def test_the_default_key_statement_is_left_to_iam_and_only_it() -> None:
    # AWS's default key policy statement (account root may do kms:*: IAM decides) grants nothing by itself;
    # tests/template/test_deploy_rules.py pins it exactly. Every other key statement is analysed.
    statements = TEMPLATE["Resources"]["AlertKey"]["Properties"]["KeyPolicy"]["Statement"]
    resolved = [Resolver(TEMPLATE).resolve(s) for s in statements]
    (key_policy,) = [policy for policy in POLICIES if policy.name == "AlertKey/KeyPolicy"]

    assert [s["Sid"] for s in resolved if delegates_to_iam(s)] == ["EnableIamPolicies"]
    assert len(key_policy.document["Statement"]) == len(statements) - 1


def test_resolver_gives_plausible_arns() -> None:
    resolver = Resolver(TEMPLATE)
    assert resolver.resolve({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/*"}) == (
        "arn:aws:iam::123456789012:policy/*"
    )
    assert resolver.resolve({"Fn::GetAtt": ["FlagWildcardIamLogGroup", "Arn"]}).startswith("arn:aws:logs:us-east-1:")
    assert resolver.resolve({"Fn::Sub": "${TrailBucket.Arn}/AWSLogs/${AWS::AccountId}/*"}) == (
        "arn:aws:s3:::trailbucket/AWSLogs/123456789012/*"
    )


@pytest.mark.parametrize("policy", POLICIES, ids=[policy.name for policy in POLICIES])
def test_no_finding_above_low(policy: Policy) -> None:
    analysis = analyze(policy.document)
    above_low = [f.as_dict() for f in analysis.findings if rank(f.severity) > rank(Severity.LOW)]
    assert above_low == [], f"{policy.name}: {above_low}"
    assert analysis.problems == ()


def test_a_planted_wildcard_would_be_caught() -> None:
    (role,) = [policy for policy in POLICIES if policy.name == "FlagWildcardIamRole/flag-wildcard-iam"]
    planted: dict[str, Any] = {
        "Statement": [*role.document["Statement"], {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]
    }

    findings = analyze(planted).findings

    # iam:PassRole on every role: half an escalation path (MEDIUM), whatever else the role holds
    assert [f.rule.value for f in findings if rank(f.severity) > rank(Severity.LOW)] == ["partial-escalation"]
