"""What a bucket policy says about transport and other accounts: pure rules, no AWS calls.

- S3.5 (Security Hub "S3 general purpose buckets should require requests to use SSL", AWS Config rule
  s3-bucket-ssl-requests-only): the policy denies every S3 action on the bucket's objects to everyone when
  `aws:SecureTransport` is false. `https_only_merged` adds that statement, with a recognisable Sid, to what is
  there; it never touches another statement. AWS services that read a bucket (CloudTrail, Config, SageMaker,
  replication) call S3 over TLS, so the deny locks none of them out.
  https://docs.aws.amazon.com/securityhub/latest/userguide/s3-controls.html#s3-5
- S3.6 ("S3 general purpose bucket policies should restrict access to other AWS accounts"): an Allow to a
  principal of another account, or to anyone, that no condition narrows to this account, a trusted account or
  the organization, and no Deny takes back. Security Hub's control fails on the grants that let another account
  change the bucket's policy, ACLs or encryption (`S3_6_ACTIONS`): those are HIGH, other grants MEDIUM.
  https://docs.aws.amazon.com/securityhub/latest/userguide/s3-controls.html#s3-6
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlwarden.rules.policy_analysis import covers_action

HTTPS_ONLY_SID = "MLWardenDenyInsecureTransport"
# S3's limit on a bucket policy's size (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-policies.html).
MAX_POLICY_BYTES = 20 * 1024
# The actions Security Hub's S3.6 does not let another account hold.
S3_6_ACTIONS = (
    "s3:DeleteBucketPolicy",
    "s3:PutBucketAcl",
    "s3:PutBucketPolicy",
    "s3:PutEncryptionConfiguration",
    "s3:PutObjectAcl",
)
_ACCOUNT_IN_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:(?:iam|sts)::(\d{12}):")
_ACCOUNT = re.compile(r"^\d{12}$")
# Condition keys that name who the caller is, and the values a grant is then limited to.
_ACCOUNT_KEYS = frozenset({"aws:principalaccount", "aws:sourceaccount", "aws:resourceaccount"})
_ORG_KEYS = frozenset({"aws:principalorgid", "aws:sourceorgid"})
_POSITIVE_OPERATORS = frozenset({"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike"})


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(policy: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if policy is None:
        return []
    return [s for s in _as_list(policy.get("Statement")) if isinstance(s, Mapping)]


def _strings(value: Any) -> list[str]:
    return [v for v in _as_list(value) if isinstance(v, str)]


def _aws_principals(statement: Mapping[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, Mapping):
        return _strings(principal.get("AWS"))
    return []


# --- S3.5 ---------------------------------------------------------------------------------------------------


def _is_false(value: Any) -> bool:
    return any(str(v).strip().lower() == "false" for v in _as_list(value))


def _denies_plain_http(statement: Mapping[str, Any], bucket_arn: str) -> bool:
    if statement.get("Effect") != "Deny" or "*" not in _aws_principals(statement):
        return False
    if not any(
        covers_action(a, "s3:GetObject") and covers_action(a, "s3:PutObject") for a in _strings(statement.get("Action"))
    ):
        return False
    objects = f"{bucket_arn}/*"
    if not any(covers_action(r, objects) for r in _strings(statement.get("Resource"))):
        return False
    condition = statement.get("Condition")
    # Only the transport condition: a second one (an IP range, say) would narrow the deny to some requests.
    if not isinstance(condition, Mapping) or len(condition) != 1:
        return False
    operator, clauses = next(iter(condition.items()))
    if operator not in ("Bool", "BoolIfExists") or not isinstance(clauses, Mapping) or len(clauses) != 1:
        return False
    key, value = next(iter(clauses.items()))
    return str(key).lower() == "aws:securetransport" and _is_false(value)


def requires_https(policy: Mapping[str, Any] | None, bucket_arn: str) -> bool:
    """The policy denies reading and writing the bucket's objects over plain HTTP, to everyone (S3.5).

    Decided on what the statements do, never on a Sid: a statement named like ours that allows, or that
    covers other resources, does not count.
    """
    return any(_denies_plain_http(statement, bucket_arn) for statement in statements(policy))


def https_only_statement(bucket_arn: str) -> dict[str, Any]:
    return {
        "Sid": HTTPS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def https_only_merged(policy: Mapping[str, Any] | None, bucket_arn: str) -> dict[str, Any]:
    """The policy with ML Warden's HTTPS-only statement: every other statement kept as it is.

    A statement that already carries our Sid is replaced (a look-alike someone planted must not stand in
    for the deny); everything else, Version and Id included, is kept.
    """
    merged: dict[str, Any] = dict(policy) if policy is not None else {"Version": "2012-10-17"}
    kept = [
        s
        for s in _as_list(merged.get("Statement", []))
        if not (isinstance(s, Mapping) and s.get("Sid") == HTTPS_ONLY_SID)
    ]
    merged["Statement"] = [*kept, https_only_statement(bucket_arn)]
    return merged


def size_of(policy: Mapping[str, Any]) -> int:
    """The policy's size as written by ML Warden (compact JSON), in bytes."""
    return len(json.dumps(policy, separators=(",", ":")).encode())


# --- S3.6 ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignGrant:
    """An Allow that reaches principals outside the account (or anyone), after Denies and conditions."""

    statement: str  # Sid, or "statement N"
    principals: tuple[str, ...]  # as written; "*" for anyone
    actions: tuple[str, ...]
    # The grant lets another account change the bucket's policy, ACLs or encryption: Security Hub S3.6 fails.
    controls_bucket: bool


def _account_of(principal: str) -> str | None:
    if _ACCOUNT.match(principal):
        return principal
    found = _ACCOUNT_IN_ARN.match(principal)
    return found.group(1) if found else None


def _limited_to(condition: Any, allowed_accounts: frozenset[str], organization: str | None) -> bool:
    """The statement's condition limits it to the allowed accounts or the organization (positive operators only)."""
    if not isinstance(condition, Mapping):
        return False
    for operator, clauses in condition.items():
        if operator.split(":")[-1] not in _POSITIVE_OPERATORS or not isinstance(clauses, Mapping):
            continue
        for key, value in clauses.items():
            values = _strings(value)
            if not values or any("*" in v or "?" in v for v in values):
                continue
            lower = key.lower()
            if lower in _ACCOUNT_KEYS and set(values) <= allowed_accounts:
                return True
            if lower in _ORG_KEYS and organization is not None and set(values) == {organization}:
                return True
            if lower == "aws:principalarn" and all(_account_of(v) in allowed_accounts for v in values):
                return True
    return False


def _deny_takes_back(deny: Mapping[str, Any], principal: str, actions: list[str], allowed: frozenset[str]) -> bool:
    """An unconditional Deny of these actions to this principal (or to everyone), or a Deny to everyone outside
    the allowed accounts (`StringNotEquals aws:PrincipalAccount`), takes the grant back."""
    if not all(any(covers_action(d, a) for d in _strings(deny.get("Action"))) for a in actions):
        return False
    denied = _aws_principals(deny)
    condition = deny.get("Condition")
    if not condition:
        return "*" in denied or principal in denied
    if "*" not in denied or not isinstance(condition, Mapping) or len(condition) != 1:
        return False
    operator, clauses = next(iter(condition.items()))
    if operator != "StringNotEquals" or not isinstance(clauses, Mapping) or len(clauses) != 1:
        return False
    key, value = next(iter(clauses.items()))
    if key.lower() != "aws:principalaccount":
        return False
    outside = _account_of(principal)
    return principal != "*" and outside is not None and outside not in set(_strings(value))


def foreign_grants(
    policy: Mapping[str, Any] | None,
    account: str,
    *,
    trusted: frozenset[str] = frozenset(),
    organization: str | None = None,
) -> list[ForeignGrant]:
    """The policy's grants to principals outside `account`, the trusted accounts and the organization (S3.6)."""
    allowed = frozenset({account, *trusted})
    every = statements(policy)
    denies = [s for s in every if s.get("Effect") == "Deny"]
    found: list[ForeignGrant] = []
    for index, statement in enumerate(every):
        if statement.get("Effect") != "Allow":
            continue
        actions = _strings(statement.get("Action")) or ["*"]  # NotAction: everything but a few
        if _limited_to(statement.get("Condition"), allowed, organization):
            continue
        outside = [
            p
            for p in _aws_principals(statement)
            if (p == "*" or (_account_of(p) is not None and _account_of(p) not in allowed))
            and not any(_deny_takes_back(d, p, actions, allowed) for d in denies)
        ]
        if outside:
            found.append(
                ForeignGrant(
                    statement=str(statement.get("Sid") or f"statement {index}"),
                    principals=tuple(outside),
                    actions=tuple(actions),
                    controls_bucket=any(covers_action(a, b) for a in actions for b in S3_6_ACTIONS),
                )
            )
    return found
