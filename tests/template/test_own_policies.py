"""ML Warden practises its own least privilege: its analyzer finds nothing above LOW in template.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mlwarden.outcomes import Severity
from mlwarden.policy_analysis import analyze, rank
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "mlwarden",
    "AWS::URLSuffix": "amazonaws.com",
}
POLICY_KEYS = ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument")


def _arn(name: str) -> str:
    """A plausible ARN for a template resource, by its type (SAM's generated rules included)."""
    account, region = PSEUDO["AWS::AccountId"], PSEUDO["AWS::Region"]
    kind = RESOURCES.get(name, {}).get("Type", "AWS::Events::Rule")
    return {
        "AWS::Logs::LogGroup": f"arn:aws:logs:{region}:{account}:log-group:{name}:*",
        "AWS::SQS::Queue": f"arn:aws:sqs:{region}:{account}:{name}",
        "AWS::SNS::Topic": f"arn:aws:sns:{region}:{account}:{name}",
        "AWS::KMS::Key": f"arn:aws:kms:{region}:{account}:key/{name.lower()}-0000",
        "AWS::IAM::Role": f"arn:aws:iam::{account}:role/{name}",
        "AWS::S3::Bucket": f"arn:aws:s3:::{name.lower()}",
        "AWS::Serverless::Function": f"arn:aws:lambda:{region}:{account}:function:{name}",
        "AWS::Events::Rule": f"arn:aws:events:{region}:{account}:rule/{name}",
    }.get(kind, f"arn:aws:cloudformation:{region}:{account}:stack/{name}")


def _ref(name: str) -> str:
    if name in PSEUDO:
        return PSEUDO[name]
    if name in TEMPLATE.get("Parameters", {}):
        return str(TEMPLATE["Parameters"][name].get("Default", name))
    if RESOURCES.get(name, {}).get("Type") == "AWS::S3::Bucket":
        return name.lower()
    return _arn(name)


def _sub(text: str, variables: dict[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in variables:
            return str(resolve(variables[key]))
        if key.endswith(".Arn"):
            return _arn(key.removesuffix(".Arn"))
        return _ref(key)

    return re.sub(r"\$\{([^}!]+)\}", replace, text)


def resolve(value: Any) -> Any:
    """Intrinsic functions to plausible values; Fn::If is left for `_variants` to branch on."""
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return _ref(value["Ref"])
    if "Fn::GetAtt" in value:
        name, attribute = value["Fn::GetAtt"]
        return _arn(name) if attribute == "Arn" else f"{name}-{attribute}"
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return _sub(sub, {}) if isinstance(sub, str) else _sub(sub[0], sub[1])
    if "Fn::If" in value:
        # a value-level condition (the alert key: the stack's own or AlertKeyArn): check the stack's own
        return resolve(value["Fn::If"][1])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(str(resolve(p)) for p in parts)
    return {key: resolve(v) for key, v in value.items()}


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement, both branches of a statement-level Fn::If (AWS::NoValue dropped)."""
    raw = document["Statement"]
    found = []
    for statement in raw if isinstance(raw, list) else [raw]:
        branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
        found += [resolve(b) for b in branches if isinstance(b, dict) and "Effect" in b]
    return found


def _delegates_to_iam(statement: dict[str, Any]) -> bool:
    """AWS's default key policy statement: the account may do kms:* on the key, so IAM policies decide.

    It names one key (the one whose policy holds it) and grants nothing by itself: the analyzer reads identity
    policies and would call it a service wildcard. tests/template/test_deploy_rules.py pins it exactly.
    """
    return statement.get("Sid") == "EnableIamPolicies" and statement.get("Action") == "kms:*"


def _policies() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resource in RESOURCES.items():
        properties = resource.get("Properties", {})
        for policy in properties.get("Policies", []):
            found.append((f"{name}/{policy['PolicyName']}", policy["PolicyDocument"]))
        for key in POLICY_KEYS:
            if key in properties:
                document = properties[key]
                if key == "KeyPolicy":
                    document = {**document, "Statement": [s for s in document["Statement"] if not _delegates_to_iam(s)]}
                found.append((f"{name}/{key}", document))
    return found


POLICIES = _policies()


def test_the_template_has_the_policies_we_expect_to_check() -> None:
    names = {name for name, _ in POLICIES}
    assert {"BlockPublicS3Role/block-public-s3", "FlagWildcardIamRole/flag-wildcard-iam", "AlertKey/KeyPolicy"} <= names


def test_resolver_gives_plausible_arns() -> None:
    assert resolve({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/*"}) == (
        "arn:aws:iam::123456789012:policy/*"
    )
    assert resolve({"Fn::GetAtt": ["FlagWildcardIamLogGroup", "Arn"]}).startswith("arn:aws:logs:us-east-1:")
    assert resolve({"Fn::Sub": "${TrailBucket.Arn}/AWSLogs/${AWS::AccountId}/*"}) == (
        "arn:aws:s3:::trailbucket/AWSLogs/123456789012/*"
    )


@pytest.mark.parametrize(("name", "document"), POLICIES, ids=[name for name, _ in POLICIES])
def test_no_finding_above_low(name: str, document: dict[str, Any]) -> None:
    statements = _statements(document)
    analysis = analyze({"Version": "2012-10-17", "Statement": statements})
    above_low = [f.as_dict() for f in analysis.findings if rank(f.severity) > rank(Severity.LOW)]
    assert above_low == [], f"{name}: {above_low}"
    assert analysis.problems == ()


def test_a_planted_wildcard_would_be_caught() -> None:
    role = RESOURCES["FlagWildcardIamRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    planted = {"Statement": [*role["Statement"], {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]}

    findings = analyze({"Statement": _statements(planted)}).findings

    assert [f.rule.value for f in findings if rank(f.severity) > rank(Severity.LOW)] == ["privilege-escalation"]
