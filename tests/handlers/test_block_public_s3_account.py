"""block_public_s3 at account level: the account's block in moto (s3control), and exempt buckets respected."""

from __future__ import annotations

from typing import Any

import pytest

ACCOUNT = "123456789012"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def test_deleted_account_block_is_restored_when_no_bucket_is_exempt(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # Given an account without its block and buckets none of which is exempt
    aws.bucket("training-data", tags={"team": "ml"})
    aws.bucket("model-artifacts")

    # When someone deletes the account's block
    result = handler(
        cloudtrail_event("DeleteAccountPublicAccessBlock", request_parameters={"host": ["s3-control.amazonaws.com"]})
    )

    # Then it is back on, all four settings
    assert aws.account_block() == ALL_ON
    assert result["outcome"] == "remediated"
    alert = aws.only_alert()
    assert alert.attributes == {
        "severity": "HIGH",
        "check": "block_public_s3",
        "outcome": "remediated",
        "account": ACCOUNT,
        "region": "us-east-1",
        "controls": '["S3.1"]',  # String.Array: filter policies match any one id
    }
    assert alert.outcome["resource"] == f"AWS::::Account:{ACCOUNT}"
    assert alert.outcome["previous_state"] == {"PublicAccessBlockConfiguration": None}
    assert alert.outcome["actions"] == ["s3:PutAccountPublicAccessBlock"]
    assert alert.line("Undo") == f"aws s3control delete-public-access-block --account-id {ACCOUNT}"
    # and no bucket's own block was touched
    assert aws.block_of("training-data") is None
    assert aws.tags_of("training-data") == {"team": "ml"}


def test_partial_account_block_is_completed_with_an_exact_undo(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    partial = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }
    aws.s3control.put_public_access_block(AccountId=ACCOUNT, PublicAccessBlockConfiguration=partial)

    handler(cloudtrail_event("PutAccountPublicAccessBlock"))

    assert aws.account_block() == ALL_ON
    alert = aws.only_alert()
    assert alert.outcome["details"]["settings_off"] == ["BlockPublicPolicy", "RestrictPublicBuckets"]
    assert alert.line("Undo") == (
        f"aws s3control put-public-access-block --account-id {ACCOUNT} --public-access-block-configuration "
        "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false"
    )


@pytest.mark.parametrize("exempt_how", ["tag", "registry"])
def test_an_exempt_bucket_does_not_keep_the_account_block_off(
    aws: Any, make_handler: Any, cloudtrail_event: Any, exempt_how: str
) -> None:
    # Attack (issue 10, item 2): one attacker-owned exempt bucket used to stop the account block's restoration.
    handler = make_handler(env={"TRUST_EXEMPTION_TAGS": "true"})
    aws.bucket("attacker-site", acl="public-read", tags={"mlwarden:exempt": "true"} if exempt_how == "tag" else None)
    if exempt_how == "registry":
        aws.grant_exemption("arn:aws:s3:::attacker-site")

    result = handler(cloudtrail_event("DeleteAccountPublicAccessBlock"))

    assert result["outcome"] == "remediated"
    assert aws.account_block() == ALL_ON


def test_a_registry_exemption_for_the_account_keeps_its_block_off(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.grant_exemption(f"AWS::::Account:{ACCOUNT}", check="block_public_s3")

    result = handler(cloudtrail_event("DeleteAccountPublicAccessBlock"))

    assert aws.account_block() is None
    assert result["outcome"] == "exempt"
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "MEDIUM"
    assert "registry exemption for block_public_s3" in alert.outcome["reason"]
    assert alert.outcome["actions"] == []


def test_account_already_blocked_is_compliant(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.s3control.put_public_access_block(AccountId=ACCOUNT, PublicAccessBlockConfiguration=ALL_ON)

    result = handler(cloudtrail_event("PutAccountPublicAccessBlock"))

    assert result["outcome"] == "compliant"
    assert aws.account_block() == ALL_ON
    assert aws.alerts() == []


def test_config_account_rule_routes_to_the_account(aws: Any, handler: Any, config_event: Any) -> None:
    event = config_event(
        "securityhub-s3-account-level-public-access-blocks-periodic-3c4d5e", "AWS::::Account", ACCOUNT, "NON_COMPLIANT"
    )

    handler(event)

    assert aws.account_block() == ALL_ON
    alert = aws.only_alert()
    assert alert.outcome["resource"] == f"AWS::::Account:{ACCOUNT}"
    assert alert.outcome["trigger"]["kind"] == "config"


def test_dry_run_leaves_the_account_block_off(aws: Any, make_handler: Any, cloudtrail_event: Any) -> None:
    handler = make_handler(mode="dry-run")

    handler(cloudtrail_event("DeleteAccountPublicAccessBlock"))

    assert aws.account_block() is None
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "would-remediate"
    assert alert.outcome["new_state"] == {"PublicAccessBlockConfiguration": ALL_ON}
