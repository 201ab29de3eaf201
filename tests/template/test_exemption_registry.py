"""What template.yaml promises about the exemption registry: only the security team writes it.

moto enforces no policy, so these rules are checked on the template itself:
- A DynamoDB table's resource-based policy is evaluated together with the caller's identity policies, and
  an explicit Deny in either wins over any Allow: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
  (resource-based policies for tables: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/rbac-examples.html)
- `aws:PrincipalArn` is the ARN of the calling IAM user or role (for an assumed-role session, the role's ARN),
  usable in any policy: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlwarden import exemptions
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_document(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
TABLE = RESOURCES["ExemptionTable"]
REGISTRY_ARN = {"Fn::GetAtt": ["ExemptionTable", "Arn"]}
# Roles with policies: the liveness canary's role holds none, so it reads nothing.
ROLES = [name for name, r in RESOURCES.items() if r["Type"] == "AWS::IAM::Role" and r["Properties"].get("Policies")]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(role: str) -> list[dict[str, Any]]:
    found = []
    for policy in RESOURCES[role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                found += [
                    branch for branch in statement["Fn::If"][1:] if isinstance(branch, dict) and "Effect" in branch
                ]
            else:
                found.append(statement)
    return found


def test_registry_is_keyed_by_resource_and_check() -> None:
    properties = TABLE["Properties"]
    assert properties["KeySchema"] == [
        {"AttributeName": "resource", "KeyType": "HASH"},
        {"AttributeName": "check", "KeyType": "RANGE"},
    ]
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_registry_denies_every_item_write_to_all_but_the_named_admins() -> None:
    [deny] = TABLE["Properties"]["ResourcePolicy"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert set(deny["Action"]) >= exemptions.WRITE_ACTIONS
    assert {"dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"} <= set(deny["Action"])
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": {"Ref": "ExemptionAdminArns"}}}


def test_without_named_admins_nobody_may_write() -> None:
    # An empty CommaDelimitedList is [""]: every principal's ARN differs from "", so the Deny applies to all.
    parameter = TEMPLATE["Parameters"]["ExemptionAdminArns"]
    assert parameter["Type"] == "CommaDelimitedList"
    assert parameter["Default"] == ""


def test_functions_only_read_the_registry() -> None:
    for role in ROLES:
        on_registry = [s for s in _statements(role) if REGISTRY_ARN in _as_list(s.get("Resource"))]
        assert len(on_registry) == 1, role
        assert set(_as_list(on_registry[0]["Action"])) == exemptions.READ_PERMISSIONS, role
        assert on_registry[0]["Effect"] == "Allow"
        for statement in _statements(role):
            actions = set(_as_list(statement.get("Action", [])))
            if statement.get("Resource") in ("*", REGISTRY_ARN):
                assert not actions & exemptions.WRITE_ACTIONS, role


def test_functions_get_the_registry_and_its_limits() -> None:
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["EXEMPTION_TABLE"] == {"Ref": "ExemptionTable"}
    assert variables["TRUST_EXEMPTION_TAGS"] == {"Ref": "TrustExemptionTags"}
    assert variables["MAX_EXEMPTION_DAYS"] == {"Ref": "MaxExemptionDays"}
    parameters = TEMPLATE["Parameters"]
    assert parameters["TrustExemptionTags"]["Default"] == "false"
    assert parameters["MaxExemptionDays"]["Default"] == 90


def test_every_call_that_can_set_the_exempt_tag_is_routed_to_the_check_that_owns_the_resource() -> None:
    def names(function: str) -> set[str]:
        pattern = RESOURCES[function]["Properties"]["Events"]["CloudTrail"]["Properties"]["Pattern"]
        return set(pattern["detail"]["eventName"])

    assert "PutBucketTagging" in names("BlockPublicS3Function")
    assert {"TagRole", "TagUser", "TagPolicy", "CreateRole", "CreateUser", "CreatePolicy"} <= names(
        "FlagWildcardIamFunction"
    )
    assert {"AddTags", "CreateTrainingJob", "CreateNotebookInstance"} <= names("CheckSageMakerEncryptionFunction")
    routed = (
        names("BlockPublicS3Function") | names("FlagWildcardIamFunction") | names("CheckSageMakerEncryptionFunction")
    )
    assert routed >= exemptions.ROUTED_FOR_THE_EXEMPT_TAG
