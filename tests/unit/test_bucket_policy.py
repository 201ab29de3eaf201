"""Bucket policy rules, one row per case: S3.5 (HTTPS only) and S3.6 (grants to other accounts).

Pass and fail cases from the Security Hub control pages
(https://docs.aws.amazon.com/securityhub/latest/userguide/s3-controls.html#s3-5 and #s3-6) and the AWS Config
rule s3-bucket-ssl-requests-only (https://docs.aws.amazon.com/config/latest/developerguide/s3-bucket-ssl-requests-only.html).
"""

from __future__ import annotations

from typing import Any

import pytest

from mlwarden.rules import bucket_policy
from mlwarden.rules.bucket_policy import HTTPS_ONLY_SID, foreign_grants, https_only_merged, requires_https

ACCOUNT = "123456789012"
OTHER = "111122223333"
ARN = "arn:aws:s3:::training-data"


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def deny_http(**changes: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "AllowSSLRequestsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [ARN, f"{ARN}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    statement.update(changes)
    return {k: v for k, v in statement.items() if v is not None}


HTTPS_CASES = [
    ("no policy", None, False),
    ("the Config rule's compliant example", policy(deny_http()), True),
    ("Principal AWS *", policy(deny_http(Principal={"AWS": "*"})), True),
    ("Action *", policy(deny_http(Action="*")), True),
    ("BoolIfExists", policy(deny_http(Condition={"BoolIfExists": {"aws:SecureTransport": False}})), True),
    ("Resource *", policy(deny_http(Resource="*")), True),
    ("objects only", policy(deny_http(Resource=f"{ARN}/*")), True),
    ("an Allow with SecureTransport true is not a deny", policy(deny_http(Effect="Allow")), False),
    ("only one principal denied", policy(deny_http(Principal={"AWS": f"arn:aws:iam::{OTHER}:root"})), False),
    ("only GetObject denied", policy(deny_http(Action="s3:GetObject")), False),
    ("another bucket's objects", policy(deny_http(Resource="arn:aws:s3:::other/*")), False),
    ("the bucket but not its objects", policy(deny_http(Resource=ARN)), False),
    ("SecureTransport true", policy(deny_http(Condition={"Bool": {"aws:SecureTransport": "true"}})), False),
    (
        "narrowed by a second condition",
        policy(
            deny_http(Condition={"Bool": {"aws:SecureTransport": "false"}, "IpAddress": {"aws:SourceIp": "1.2.3.4"}})
        ),
        False,
    ),
    # The Sid proves nothing: a planted look-alike that allows does not count.
    ("our Sid on an Allow", policy(deny_http(Sid=HTTPS_ONLY_SID, Effect="Allow")), False),
]


@pytest.mark.parametrize(("document", "compliant"), [c[1:] for c in HTTPS_CASES], ids=[c[0] for c in HTTPS_CASES])
def test_requires_https(document: dict[str, Any] | None, compliant: bool) -> None:
    assert requires_https(document, ARN) is compliant


def test_merge_keeps_every_other_statement_and_replaces_a_planted_look_alike() -> None:
    grant = {
        "Sid": "Readers",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "s3:GetObject",
        "Resource": f"{ARN}/*",
    }
    planted = deny_http(Sid=HTTPS_ONLY_SID, Effect="Allow")
    before = {"Version": "2012-10-17", "Id": "keep-me", "Statement": [grant, planted]}

    merged = https_only_merged(before, ARN)

    assert merged["Id"] == "keep-me"
    assert merged["Statement"][0] == grant
    assert [s.get("Sid") for s in merged["Statement"]] == ["Readers", HTTPS_ONLY_SID]
    assert requires_https(merged, ARN)
    assert before["Statement"] == [grant, planted]  # the input is not changed


def test_merge_into_a_single_statement_object_and_into_no_policy() -> None:
    single = {"Version": "2012-10-17", "Statement": deny_http(Effect="Allow", Sid="One")}
    assert [s["Sid"] for s in https_only_merged(single, ARN)["Statement"]] == ["One", HTTPS_ONLY_SID]
    assert https_only_merged(None, ARN)["Statement"] == [bucket_policy.https_only_statement(ARN)]


def allow(principal: Any, action: Any = "s3:GetObject", **extra: Any) -> dict[str, Any]:
    return {
        "Sid": "Grant",
        "Effect": "Allow",
        "Principal": principal,
        "Action": action,
        "Resource": f"{ARN}/*",
        **extra,
    }


FOREIGN_CASES = [
    ("own account root", policy(allow({"AWS": f"arn:aws:iam::{ACCOUNT}:root"})), []),
    ("own role", policy(allow({"AWS": f"arn:aws:iam::{ACCOUNT}:role/Trainer"})), []),
    ("another account", policy(allow({"AWS": f"arn:aws:iam::{OTHER}:root"})), [(f"arn:aws:iam::{OTHER}:root",)]),
    ("another account by id", policy(allow({"AWS": OTHER})), [(OTHER,)]),
    (
        "an assumed role of another account",
        policy(allow({"AWS": f"arn:aws:sts::{OTHER}:assumed-role/R/s"})),
        [(f"arn:aws:sts::{OTHER}:assumed-role/R/s",)],
    ),
    ("anyone", policy(allow("*")), [("*",)]),
    ("a service principal", policy(allow({"Service": "cloudtrail.amazonaws.com"})), []),
    (
        "anyone, limited to this account by aws:PrincipalAccount",
        policy(allow("*", Condition={"StringEquals": {"aws:PrincipalAccount": ACCOUNT}})),
        [],
    ),
    (
        "anyone, limited to the organization (configured)",
        policy(allow("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}})),
        [],
    ),
    (
        "anyone, limited to another organization",
        policy(allow("*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-zzzzzzzzzz"}})),
        [("*",)],
    ),
    (
        "a wildcard account condition limits nothing",
        policy(allow("*", Condition={"StringLike": {"aws:PrincipalAccount": "*"}})),
        [("*",)],
    ),
    (
        "a negated condition limits nothing",
        policy(allow("*", Condition={"StringNotEquals": {"aws:PrincipalAccount": OTHER}})),
        [("*",)],
    ),
    (
        "a service principal limited by aws:SourceAccount",
        policy(
            allow({"AWS": f"arn:aws:iam::{OTHER}:root"}, Condition={"StringEquals": {"aws:SourceAccount": ACCOUNT}})
        ),
        [],
    ),
    (
        "another account, taken back by an unconditional Deny",
        policy(
            allow({"AWS": f"arn:aws:iam::{OTHER}:root"}),
            {"Effect": "Deny", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "s3:*", "Resource": "*"},
        ),
        [],
    ),
    (
        "another account, taken back by a Deny to everyone outside this account",
        policy(
            allow({"AWS": f"arn:aws:iam::{OTHER}:root"}),
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalAccount": ACCOUNT}},
            },
        ),
        [],
    ),
    (
        "a Deny of other actions takes nothing back",
        policy(
            allow({"AWS": f"arn:aws:iam::{OTHER}:root"}, action=["s3:GetObject", "s3:PutObject"]),
            {
                "Effect": "Deny",
                "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
                "Action": "s3:PutObject",
                "Resource": "*",
            },
        ),
        [(f"arn:aws:iam::{OTHER}:root",)],
    ),
    ("a trusted account", policy(allow({"AWS": "444455556666"})), []),
]


@pytest.mark.parametrize(("document", "expected"), [c[1:] for c in FOREIGN_CASES], ids=[c[0] for c in FOREIGN_CASES])
def test_foreign_grants(document: dict[str, Any], expected: list[tuple[str, ...]]) -> None:
    grants = foreign_grants(document, ACCOUNT, trusted=frozenset({"444455556666"}), organization="o-abcdefghij")
    assert [g.principals for g in grants] == expected


@pytest.mark.parametrize(
    ("action", "controls_bucket"),
    [
        ("s3:GetObject", False),
        ("s3:PutBucketPolicy", True),
        ("s3:Put*", True),
        ("s3:*", True),
        ("s3:PutObjectAcl", True),
    ],
)
def test_s3_6_fails_on_grants_that_control_the_bucket(action: str, controls_bucket: bool) -> None:
    (grant,) = foreign_grants(policy(allow({"AWS": OTHER}, action=action)), ACCOUNT)
    assert grant.controls_bucket is controls_bucket
