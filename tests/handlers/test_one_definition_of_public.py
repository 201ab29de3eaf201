"""One definition of "public": block_public_s3 and tag_pii_bucket grade the same bucket state the same way.

Issue 11: with the account-level block on and no public grant, tag_pii_bucket said "CRITICAL: PII in a
public bucket" while block_public_s3 said MEDIUM. Both now read exposure through `s3.bucket_exposure`.
Each row is one bucket state (bucket block, account block, ACL, policy); both checks run over it in
dry-run (neither changes it), on a bucket already classified as holding PII, with a Macie finding of
severity Low (so the finding's own severity never hides the exposure's grade).

The rule encoded: S3 treats a grant as public unless the bucket's or the account's block neutralises it
(IgnorePublicAcls for ACL grants, RestrictPublicBuckets for public policies), and the effective setting
is the most restrictive of the two levels.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/access-control-block-public-access.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
ALL_OFF = dict.fromkeys(ALL_ON, False)
BUCKET = "mlw-training-data-acl"  # the bucket events/macie/sensitive-data-personal.json names

# name: (bucket block, account block, canned ACL, public policy, expected grade, public)
STATES: dict[str, tuple[dict[str, bool] | None, dict[str, bool] | None, str | None, bool, str, bool]] = {
    "public ACL, no blocks": (None, None, "public-read", False, "CRITICAL", True),
    "public policy, no blocks": (None, None, None, True, "CRITICAL", True),
    "no grant, no blocks": (None, None, None, False, "MEDIUM", False),
    # the state of the bug: the account block on, no public grant
    "no grant, account block on": (None, ALL_ON, None, False, "MEDIUM", False),
    "public ACL held back by the account block": (None, ALL_ON, "public-read", False, "MEDIUM", False),
    "public policy held back by the account block": (ALL_OFF, ALL_ON, None, True, "MEDIUM", False),
    "public ACL ignored by the bucket's own block": (
        {**ALL_ON, "RestrictPublicBuckets": False},
        None,
        "public-read",
        False,
        "MEDIUM",
        False,
    ),
    "public policy, only RestrictPublicBuckets off": (
        {**ALL_ON, "BlockPublicPolicy": False, "RestrictPublicBuckets": False},
        None,
        None,
        True,
        "CRITICAL",
        True,
    ),
    "bucket block fully on": (ALL_ON, None, "public-read", False, "INFORMATIONAL", False),
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_both_checks_agree_on_exposure(
    aws: Any, make_handler: Callable[..., Any], sample_event: Any, state: str
) -> None:
    bucket_block, account_block, acl, public_policy, grade, public = STATES[state]
    aws.bucket(BUCKET, acl=acl, public_policy=public_policy, tags={"mlwarden:pii": "true"})
    if bucket_block is not None:
        aws.s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=bucket_block)
    if account_block is not None:
        aws.s3control.put_public_access_block(AccountId="123456789012", PublicAccessBlockConfiguration=account_block)
    finding = sample_event("macie/sensitive-data-personal.json")
    finding["detail"]["severity"] = {"description": "Low", "score": 1}
    blocker = make_handler(mode="dry-run")
    tagger = make_handler(app="tag_pii_bucket", mode="dry-run", env={"OUTCOME_TABLE": None})

    blocked = blocker(
        {**sample_event("s3/put-bucket-acl-public.json"), "id": "acl-event"} if acl else _policy_event(sample_event)
    )
    tagged = tagger(finding)

    if grade == "INFORMATIONAL":
        assert blocked["outcome"] == "compliant"
        assert tagged["severity"] == "LOW"  # the finding's own severity: nothing exposed
        assert "public" not in tagged["reason"]
        return
    exposure = tagged["details"]["public_access"]
    assert blocked["severity"] == tagged["severity"] == grade
    assert blocked["details"]["public_via"] == exposure["public_via"]
    assert blocked["details"]["held_back_by_account_block"] == exposure["held_back_by_account_block"]
    assert ("PII in a public bucket" in tagged["reason"]) is public
    assert bool(blocked["details"]["public_via"]) is public


def _policy_event(sample_event: Any) -> dict[str, Any]:
    event = sample_event("s3/put-bucket-policy-public.json")
    event["detail"]["requestParameters"]["bucketName"] = BUCKET
    return event
