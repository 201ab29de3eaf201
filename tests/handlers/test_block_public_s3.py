"""block_public_s3 in moto: the bucket's block after the event, and the alert as the subscriber received it."""

from __future__ import annotations

from typing import Any

import pytest

from mlwarden import clients
from mlwarden.settings import SettingsError

ACCOUNT = "123456789012"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
NO_BLOCK = {"PublicAccessBlockConfiguration": None}
REMEDIATOR_ROLE_ARN = "arn:aws:iam::123456789012:role/BlockPublicS3Role"


# --- a public bucket is blocked ------------------------------------------------------------------------


def test_bucket_public_by_acl_is_blocked_and_alerted(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    # Given a bucket whose ACL lets everyone read it, and no public-access block
    aws.bucket("training-data", acl="public-read")

    # When CloudTrail reports the PutBucketAcl
    result = handler(cloudtrail_event("PutBucketAcl", "training-data"))

    # Then all four settings are on
    assert aws.block_of("training-data") == ALL_ON
    # and exactly one alert went out, saying what was done and how to undo it
    alert = aws.only_alert()
    assert alert.attributes == {
        "severity": "HIGH",
        "check": "block_public_s3",
        "outcome": "remediated",
        "account": ACCOUNT,
        "region": "us-east-1",
        "controls": '["S3.2", "S3.3", "S3.8"]',  # String.Array: filter policies match any one id
    }
    assert alert.subject == "[ML Warden] HIGH fixed: block_public_s3 training-data"
    assert alert.outcome["outcome"] == "remediated"
    assert alert.outcome["severity"] == "HIGH"
    assert alert.outcome["resource"] == "arn:aws:s3:::training-data"
    assert alert.outcome["previous_state"] == NO_BLOCK
    assert alert.outcome["new_state"] == {"PublicAccessBlockConfiguration": ALL_ON}
    assert alert.outcome["actions"] == ["s3:PutBucketPublicAccessBlock"]
    assert alert.outcome["details"]["public_via"] == ["ACL grants READ to AllUsers"]
    assert alert.outcome["alerted"] is True
    assert alert.line("Undo") == "aws s3api delete-public-access-block --bucket training-data"
    assert alert.line("Done") == "s3:PutBucketPublicAccessBlock"
    assert "DataScientist" in alert.line("Who")
    assert "mlwarden exempt add arn:aws:s3:::training-data" in alert.line("Exempt")
    # and the handler returns the same outcome
    assert result["outcome"] == "remediated"
    assert result["alerted"] is True
    assert result["event_id"] == alert.outcome["event_id"]


def test_bucket_public_by_policy_is_blocked(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("model-artifacts", public_policy=True)

    handler(cloudtrail_event("PutBucketPolicy", "model-artifacts"))

    assert aws.block_of("model-artifacts") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "HIGH"
    assert alert.outcome["outcome"] == "remediated"
    assert alert.outcome["details"]["public_via"] == ["bucket policy is public"]


def test_bucket_public_by_write_acl_names_the_group(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("upload-drop", acl="authenticated-read")

    handler(cloudtrail_event("PutBucketAcl", "upload-drop"))

    assert aws.block_of("upload-drop") == ALL_ON
    assert aws.only_alert().outcome["details"]["public_via"] == ["ACL grants READ to AuthenticatedUsers"]


def test_deleted_block_on_a_private_bucket_is_restored_at_medium(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    # Given a private bucket whose block someone just deleted
    aws.bucket("feature-store")

    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "feature-store"))

    assert aws.block_of("feature-store") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "MEDIUM"
    assert alert.outcome["outcome"] == "remediated"
    assert alert.outcome["details"]["public_via"] == []


def test_partial_block_is_completed_and_its_previous_state_kept_for_undo(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    partial = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": False,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": False,
    }
    aws.bucket("eval-results", block=partial)

    handler(cloudtrail_event("PutBucketPublicAccessBlock", "eval-results"))

    assert aws.block_of("eval-results") == ALL_ON
    alert = aws.only_alert()
    assert alert.outcome["previous_state"] == {"PublicAccessBlockConfiguration": partial}
    assert alert.outcome["details"]["settings_off"] == ["IgnorePublicAcls", "RestrictPublicBuckets"]
    assert alert.line("Undo") == (
        "aws s3api put-public-access-block --bucket eval-results --public-access-block-configuration "
        "BlockPublicAcls=true,IgnorePublicAcls=false,BlockPublicPolicy=true,RestrictPublicBuckets=false"
    )


def test_public_bucket_tagged_pii_is_critical(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("patient-notes", acl="public-read", tags={"mlwarden:pii": "true"})

    handler(cloudtrail_event("PutBucketAcl", "patient-notes"))

    assert aws.block_of("patient-notes") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert alert.subject.startswith("[ML Warden] CRITICAL fixed:")
    assert alert.outcome["details"]["pii"] is True


def test_private_bucket_tagged_pii_is_not_critical(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("patient-notes", tags={"mlwarden:pii": "true"})

    handler(cloudtrail_event("DeleteBucketPublicAccessBlock", "patient-notes"))

    assert aws.only_alert().attributes["severity"] == "MEDIUM"


def test_public_grant_held_back_only_by_the_account_block_is_medium_and_still_blocked(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # The account ignores public ACLs, so the grant has no effect today: one account change from public.
    aws.s3control.put_public_access_block(
        AccountId="123456789012",
        PublicAccessBlockConfiguration={**dict.fromkeys(ALL_ON, False), "IgnorePublicAcls": True},
    )
    aws.bucket("patient-notes", acl="public-read", tags={"mlwarden:pii": "true"})

    handler(cloudtrail_event("PutBucketAcl", "patient-notes"))

    assert aws.block_of("patient-notes") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "MEDIUM"
    assert alert.outcome["details"]["public_via"] == []
    assert alert.outcome["details"]["held_back_by_account_block"] == ["ACL grants READ to AllUsers"]
    assert "only the account-level block holds back" in alert.line("What")


def test_foreign_tags_are_left_untouched(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    tags = {"team": "ml-platform", "cost-center": "4711", "mlwarden:pii": "false"}
    aws.bucket("training-data", acl="public-read", tags=tags)

    handler(cloudtrail_event("PutBucketAcl", "training-data"))

    assert aws.block_of("training-data") == ALL_ON
    assert aws.tags_of("training-data") == tags


def test_bucket_acl_and_policy_are_not_changed(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    # The fix is the block only: grants and policy stay for a person to review (and for undo to restore access).
    aws.bucket("training-data", acl="public-read", public_policy=True)
    grants_before = aws.s3.get_bucket_acl(Bucket="training-data")["Grants"]
    policy_before = aws.s3.get_bucket_policy(Bucket="training-data")["Policy"]

    handler(cloudtrail_event("PutBucketAcl", "training-data"))

    assert aws.s3.get_bucket_acl(Bucket="training-data")["Grants"] == grants_before
    assert aws.s3.get_bucket_policy(Bucket="training-data")["Policy"] == policy_before


# --- nothing to do -------------------------------------------------------------------------------------


def test_already_blocked_bucket_is_compliant_without_alert_or_write(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("training-data", acl="public-read", block=ALL_ON)
    # Rewriting the same four settings leaves no trace in moto's state, so count the write requests too.
    writes: list[str] = []
    clients.client("s3").meta.events.register(
        "before-call.s3.PutPublicAccessBlock", lambda **_: writes.append("PutPublicAccessBlock")
    )

    result = handler(cloudtrail_event("PutBucketAcl", "training-data"))

    assert result["outcome"] == "compliant"
    assert result["alerted"] is False
    assert aws.block_of("training-data") == ALL_ON
    assert aws.alerts() == []
    assert writes == []


def test_redelivered_event_gets_its_stored_outcome_with_one_write_and_one_alert(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("training-data", acl="public-read")
    event = cloudtrail_event("PutBucketAcl", "training-data")
    writes: list[str] = []
    clients.client("s3").meta.events.register(
        "before-call.s3.PutPublicAccessBlock", lambda model, **_: writes.append(model.name)
    )

    first = handler(event)
    second = handler(event)

    assert first["outcome"] == second["outcome"] == "remediated"
    assert second["previous_state"] == first["previous_state"]
    assert writes == ["PutPublicAccessBlock"]
    assert aws.block_of("training-data") == ALL_ON
    assert len(aws.alerts()) == 1


def test_without_an_outcome_table_a_replayed_event_is_compliant_the_second_time(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    handler = make_handler(env={"OUTCOME_TABLE": None})
    aws.bucket("training-data", acl="public-read")
    event = cloudtrail_event("PutBucketAcl", "training-data")

    first = handler(event)
    second = handler(event)

    assert (first["outcome"], second["outcome"]) == ("remediated", "compliant")
    assert aws.block_of("training-data") == ALL_ON
    assert len(aws.alerts()) == 1
    assert aws.outcome_records() == {}


# --- exemptions ----------------------------------------------------------------------------------------


def test_exempt_bucket_is_alerted_not_changed(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("public-demo-site", acl="public-read")
    aws.grant_exemption("arn:aws:s3:::public-demo-site", check="block_public_s3")

    result = handler(cloudtrail_event("PutBucketAcl", "public-demo-site"))

    assert result["outcome"] == "exempt"
    assert aws.block_of("public-demo-site") is None
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "LOW"
    assert alert.attributes["outcome"] == "exempt"
    assert alert.outcome["actions"] == []
    assert alert.line("Done") == "no change made"
    assert "left as is" in alert.outcome["reason"]
    assert "registry exemption for block_public_s3" in alert.outcome["reason"]
    assert "SecurityTeam/alice" in alert.outcome["reason"]


@pytest.mark.parametrize("value", ["true", "2099-01-01", "false", "2027-13-45"])
def test_exempt_tags_are_not_trusted_by_default(aws: Any, handler: Any, cloudtrail_event: Any, value: str) -> None:
    aws.bucket("public-demo-site", acl="public-read", tags={"mlwarden:exempt": value})

    handler(cloudtrail_event("PutBucketAcl", "public-demo-site"))

    assert aws.block_of("public-demo-site") == ALL_ON
    assert "not trusted (TrustExemptionTags=false)" in aws.only_alert().outcome["details"]["exemption"]


def test_custom_exempt_tag_key_is_honoured_when_tags_are_trusted(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    handler = make_handler(exempt_tag_key="security/exempt", env={"TRUST_EXEMPTION_TAGS": "true"})
    aws.bucket("public-demo-site", acl="public-read", tags={"security/exempt": "true"})
    aws.bucket("other-site", acl="public-read", tags={"mlwarden:exempt": "true"})

    exempt = handler(cloudtrail_event("PutBucketAcl", "public-demo-site"))
    other = handler(cloudtrail_event("PutBucketAcl", "other-site"))

    assert (exempt["outcome"], other["outcome"]) == ("exempt", "remediated")
    assert aws.block_of("public-demo-site") is None
    assert aws.block_of("other-site") == ALL_ON


# --- dry run -------------------------------------------------------------------------------------------


def test_dry_run_alerts_what_it_would_set_and_writes_nothing(
    aws: Any, make_handler: Any, cloudtrail_event: Any
) -> None:
    handler = make_handler(mode="dry-run")
    aws.bucket("training-data", acl="public-read")

    result = handler(cloudtrail_event("PutBucketAcl", "training-data"))

    assert result["outcome"] == "would-remediate"
    assert aws.block_of("training-data") is None
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "would-remediate"
    assert alert.attributes["severity"] == "HIGH"
    assert alert.subject == "[ML Warden] HIGH would fix (dry run): block_public_s3 training-data"
    assert alert.line("Done") == "no change made"
    assert alert.line("Would set") == (
        'PublicAccessBlockConfiguration={"BlockPublicAcls": true, "IgnorePublicAcls": true, '
        '"BlockPublicPolicy": true, "RestrictPublicBuckets": true}'
    )
    assert alert.outcome["new_state"] == {"PublicAccessBlockConfiguration": ALL_ON}
    assert alert.outcome["previous_state"] == NO_BLOCK
    assert alert.outcome["undo"] is None


# --- loop guard and events that change nothing ---------------------------------------------------------


OWN_IDENTITY = {
    "type": "AssumedRole",
    "arn": "arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/mlwarden-BlockPublicS3",
    "accountId": ACCOUNT,
    "sessionContext": {"sessionIssuer": {"type": "Role", "arn": REMEDIATOR_ROLE_ARN, "accountId": ACCOUNT}},
}


def test_own_fix_echoed_by_cloudtrail_is_ignored_after_reading_the_bucket(
    aws: Any, handler: Any, cloudtrail_event: Any
) -> None:
    aws.bucket("training-data", block=ALL_ON)
    parameters = {"bucketName": "training-data", "PublicAccessBlockConfiguration": ALL_ON, "publicAccessBlock": ""}

    result = handler(
        cloudtrail_event("PutBucketPublicAccessBlock", request_parameters=parameters, user_identity=OWN_IDENTITY)
    )

    assert (result["outcome"], result["resource"]) == ("ignored", "arn:aws:s3:::training-data")
    assert result["reason"].startswith("change made by ML Warden's own role (loop guard)")
    assert aws.alerts() == []


def test_own_role_opening_a_bucket_is_hostile_fixed_and_critical(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    # Attack: whoever can run code as ML Warden's role (say, by passing it to a new function) opens a bucket.
    # Before, any call claiming that role was ignored before the bucket was read: it stayed public, unalerted.
    aws.bucket("training-data", acl="public-read")

    result = handler(cloudtrail_event("PutBucketAcl", "training-data", user_identity=OWN_IDENTITY))

    assert (result["outcome"], result["severity"]) == ("remediated", "CRITICAL")
    assert aws.block_of("training-data") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert alert.line("What").startswith(
        "change made by ML Warden's own role left arn:aws:s3:::training-data open: bucket is public"
    )


def test_failed_call_is_ignored(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("training-data", acl="public-read")

    result = handler(cloudtrail_event("PutBucketAcl", "training-data", error_code="AccessDenied"))

    assert result["outcome"] == "ignored"
    assert result["reason"] == "PutBucketAcl failed with AccessDenied: nothing changed"
    assert aws.block_of("training-data") is None
    assert aws.alerts() == []


def test_null_request_parameters_are_ignored(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    result = handler(cloudtrail_event("PutBucketPolicy", request_parameters=None))

    assert result["outcome"] == "ignored"
    assert result["reason"] == "PutBucketPolicy names no bucket"
    assert aws.alerts() == []


@pytest.mark.parametrize(
    ("event_name", "event_source", "reason"),
    [
        ("GetObject", "s3.amazonaws.com", "S3 call GetObject cannot open public access"),
        ("PutBucketVersioning", "s3.amazonaws.com", "S3 call PutBucketVersioning cannot open public access"),
        ("PutBucketAcl", "ec2.amazonaws.com", "ec2.amazonaws.com PutBucketAcl is not an S3 call"),
    ],
)
def test_unrelated_calls_are_ignored(
    aws: Any, handler: Any, cloudtrail_event: Any, event_name: str, event_source: str, reason: str
) -> None:
    aws.bucket("training-data", acl="public-read")

    result = handler(cloudtrail_event(event_name, "training-data", event_source=event_source))

    assert (result["outcome"], result["reason"]) == ("ignored", reason)
    assert aws.block_of("training-data") is None
    assert aws.alerts() == []


def test_unrelated_detail_type_is_ignored(aws: Any, handler: Any) -> None:
    event = {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "SageMaker Training Job State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "2026-01-01T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"TrainingJobName": "job", "TrainingJobStatus": "InProgress"},
    }

    result = handler(event)

    assert result["outcome"] == "ignored"
    assert "SageMaker Training Job State Change" in result["reason"]
    assert aws.alerts() == []


def test_event_for_a_bucket_that_never_existed_is_ignored(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    result = handler(cloudtrail_event("PutBucketAcl", "no-such-bucket-here"))

    assert result["outcome"] == "ignored"
    assert result["reason"] == "the bucket no longer exists"
    assert aws.alerts() == []


def test_event_for_a_bucket_deleted_since_is_ignored(aws: Any, handler: Any, cloudtrail_event: Any) -> None:
    aws.bucket("short-lived", acl="public-read")
    event = cloudtrail_event("PutBucketAcl", "short-lived")
    aws.s3.delete_bucket(Bucket="short-lived")

    result = handler(event)

    assert (result["outcome"], result["reason"]) == ("ignored", "the bucket no longer exists")
    assert aws.alerts() == []


@pytest.mark.parametrize(
    "event",
    [
        pytest.param("not an event", id="string"),
        pytest.param(["PutBucketAcl"], id="list"),
        pytest.param(None, id="null"),
        pytest.param({"source": "aws.s3", "detail-type": "AWS API Call via CloudTrail"}, id="missing-detail"),
        pytest.param(
            {"source": "aws.s3", "detail-type": "AWS API Call via CloudTrail", "detail": "PutBucketAcl"},
            id="detail-string",
        ),
        pytest.param({"id": 7, "source": {}, "detail-type": []}, id="wrong-types"),
    ],
)
def test_malformed_event_is_ignored_without_raising(aws: Any, handler: Any, event: Any) -> None:
    result = handler(event)

    assert result["outcome"] == "ignored"
    assert result["alerted"] is False
    assert aws.alerts() == []


# --- other triggers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule", ["s3-bucket-public-read-prohibited", "securityhub-s3-bucket-public-read-prohibited-5f2e1d"]
)
def test_config_non_compliant_bucket_is_blocked(aws: Any, handler: Any, config_event: Any, rule: str) -> None:
    aws.bucket("training-data", acl="public-read")

    handler(config_event(rule, "AWS::S3::Bucket", "training-data", "NON_COMPLIANT"))

    assert aws.block_of("training-data") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "remediated"
    assert alert.outcome["trigger"]["kind"] == "config"
    assert alert.outcome["trigger"]["name"] == f"{rule} NON_COMPLIANT"
    assert alert.line("Who").startswith("config (aws.config)")


def test_config_compliant_result_changes_nothing(aws: Any, handler: Any, config_event: Any) -> None:
    aws.bucket("training-data", acl="public-read")

    result = handler(config_event("s3-bucket-public-read-prohibited", "AWS::S3::Bucket", "training-data", "COMPLIANT"))

    assert result["outcome"] == "ignored"
    assert aws.block_of("training-data") is None
    assert aws.alerts() == []


def test_macie_public_bucket_finding_is_blocked(aws: Any, handler: Any, macie_event: Any) -> None:
    aws.bucket("training-data", acl="public-read")

    handler(macie_event("Policy:IAMUser/S3BucketPublic", "training-data"))

    assert aws.block_of("training-data") == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "remediated"
    assert alert.outcome["trigger"]["kind"] == "macie"
    assert alert.outcome["trigger"]["name"] == "Policy:IAMUser/S3BucketPublic"


def test_macie_finding_of_another_type_changes_nothing(aws: Any, handler: Any, macie_event: Any) -> None:
    aws.bucket("training-data", acl="public-read")

    result = handler(macie_event("Policy:IAMUser/S3BucketEncryptionDisabled", "training-data"))

    assert result["outcome"] == "ignored"
    assert aws.block_of("training-data") is None
    assert aws.alerts() == []


# --- cold start ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ALERT_TOPIC_ARN": None}, "ALERT_TOPIC_ARN"),
        ({"REMEDIATION_MODE": "audit"}, "REMEDIATION_MODE"),
        ({"REMEDIATOR_ROLE_ARN": "BlockPublicS3Role"}, "REMEDIATOR_ROLE_ARN"),
    ],
)
def test_bad_configuration_fails_at_cold_start_naming_the_variable(
    make_handler: Any, env: dict[str, str | None], variable: str
) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable}"):
        make_handler(env=env)
