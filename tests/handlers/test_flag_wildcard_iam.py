"""flag_wildcard_iam in moto: the tags on policies, roles and users after the event, and the alert received."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.iam.models import iam_backends

from mlwarden import clients
from mlwarden.settings import SettingsError

ACCOUNT = "123456789012"
APP = "flag_wildcard_iam"
OWN_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/FlagWildcardIamRole"
TAG = "mlwarden:wildcard"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)
S3_EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
ADMIN = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}
TIGHT = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::mlw-training-data/*"},
        {"Effect": "Allow", "Action": "sagemaker:ListTrainingJobs", "Resource": "*"},
    ],
}


@pytest.fixture
def iam(aws: Any) -> Any:
    return boto3.client("iam", region_name="us-east-1")


@pytest.fixture
def make_iam_handler(make_handler: Callable[..., Any]) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("remediator_role_arn", OWN_ROLE_ARN)
        return make_handler(app=APP, **kwargs)

    return make


@pytest.fixture
def handler(make_iam_handler: Callable[..., Any]) -> Any:
    return make_iam_handler()


def _tags(response: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in response["Tags"]}


def role_tags(iam: Any, name: str) -> dict[str, str]:
    return _tags(iam.list_role_tags(RoleName=name))


def user_tags(iam: Any, name: str) -> dict[str, str]:
    return _tags(iam.list_user_tags(UserName=name))


def policy_tags(iam: Any, arn: str) -> dict[str, str]:
    return _tags(iam.list_policy_tags(PolicyArn=arn))


def put_role_policy_event(cloudtrail_event: Any, role: str, document: Any, **kwargs: Any) -> dict[str, Any]:
    parameters = {"roleName": role, "policyName": "inline", "policyDocument": json.dumps(document)}
    return cloudtrail_event("PutRolePolicy", request_parameters=parameters, event_source="iam.amazonaws.com", **kwargs)


# --- inline policies: the role or user carries the flag ------------------------------------------------


def test_data_scientist_role_with_s3_star_is_tagged_high_and_alerted(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    # Given the role and the inline policy the sample event reports, as IAM holds them
    event = sample_event("iam/put-role-policy-s3-wildcard.json")
    iam.create_role(
        RoleName="mlw-data-scientist", AssumeRolePolicyDocument=TRUST, Tags=[{"Key": "team", "Value": "ds"}]
    )
    iam.put_role_policy(
        RoleName="mlw-data-scientist",
        PolicyName="s3-everything",
        PolicyDocument=event["detail"]["requestParameters"]["policyDocument"],
    )

    # When CloudTrail reports the PutRolePolicy
    result = handler(event)

    # Then the role is tagged HIGH, its other tags kept
    assert role_tags(iam, "mlw-data-scientist") == {"team": "ds", TAG: "HIGH"}
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "HIGH"
    assert alert.attributes["outcome"] == "flagged"
    assert alert.outcome["resource"] == f"arn:aws:iam::{ACCOUNT}:role/mlw-data-scientist (inline policy s3-everything)"
    assert alert.outcome["actions"] == ["iam:TagRole"]
    assert alert.outcome["previous_state"] == {TAG: None}
    assert alert.outcome["new_state"] == {TAG: "HIGH"}
    assert alert.line("Undo") == f"aws iam untag-role --role-name mlw-data-scientist --tag-keys {TAG}"
    assert "DataScientist" in alert.line("Who")
    (finding,) = alert.outcome["details"]["findings"]
    assert finding["statement"] == 0
    assert finding["sid"] == "AllS3"
    assert finding["rule"] == "service-wildcard"
    assert finding["actions"] == ["s3:*"]
    assert finding["resources"] == ["*"]
    assert finding["why"] and finding["suggestion"]
    assert alert.outcome["details"]["document_source"] == "live inline policy"
    assert result["outcome"] == "flagged"


def test_tight_training_role_is_not_flagged(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    iam.create_role(RoleName="mlw-training", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="mlw-training", PolicyName="read-training-data", PolicyDocument=json.dumps(TIGHT))

    result = handler(sample_event("iam/put-role-policy-tight.json"))

    assert result["outcome"] == "compliant"
    assert role_tags(iam, "mlw-training") == {}
    assert aws.alerts() == []


def test_live_policy_wins_over_the_event_document(aws: Any, iam: Any, handler: Any, cloudtrail_event: Any) -> None:
    # Given the event says s3:* but the policy was tightened since
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(TIGHT))

    result = handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))

    assert result["outcome"] == "compliant"
    assert role_tags(iam, "r") == {}


def test_unreadable_inline_policy_falls_back_to_the_event_document_and_says_so(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRolePolicy")

    def refuse(**_: Any) -> Any:
        raise denied

    monkeypatch.setattr(clients.client("iam"), "get_role_policy", refuse)

    handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))

    assert role_tags(iam, "r") == {TAG: "HIGH"}
    source = aws.only_alert().outcome["details"]["document_source"]
    assert source == "event (live read failed: iam:GetRolePolicy AccessDenied)"


def test_url_encoded_user_policy_with_passrole_on_star_is_privilege_escalation(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    event = sample_event("iam/put-user-policy-url-encoded-passrole.json")
    iam.create_user(UserName="mlw-pipeline-bot")
    iam.put_user_policy(
        UserName="mlw-pipeline-bot",
        PolicyName="pass-any-role",
        PolicyDocument=unquote(event["detail"]["requestParameters"]["policyDocument"]),
    )

    handler(event)

    assert user_tags(iam, "mlw-pipeline-bot") == {TAG: "HIGH"}
    findings = aws.only_alert().outcome["details"]["findings"]
    assert [(f["rule"], f["actions"]) for f in findings] == [
        ("privilege-escalation", ["iam:PassRole", "sagemaker:CreateTrainingJob"])
    ]


def test_group_policy_with_notaction_is_critical_and_says_groups_cannot_be_tagged(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    event = sample_event("iam/put-group-policy-notaction.json")
    iam.create_group(GroupName="mlw-researchers")
    iam.put_group_policy(
        GroupName="mlw-researchers",
        PolicyName="all-but-iam",
        PolicyDocument=event["detail"]["requestParameters"]["policyDocument"],
    )

    result = handler(event)

    assert result["outcome"] == "flagged"
    assert result["actions"] == []
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert "groups cannot be tagged" in alert.outcome["details"]["not_tagged"]
    assert "groups cannot be tagged" in alert.outcome["reason"]
    assert alert.outcome["details"]["findings"][0]["rule"] == "full-admin"


def test_role_keeps_its_higher_flag_from_another_policy(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST, Tags=[{"Key": TAG, "Value": "CRITICAL"}])
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))

    result = handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))

    assert role_tags(iam, "r") == {TAG: "CRITICAL"}
    assert result["outcome"] == "flagged"
    assert result["actions"] == []
    assert "already tagged" in result["reason"]


def test_exempt_role_is_alerted_not_tagged(aws: Any, iam: Any, handler: Any, cloudtrail_event: Any) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))
    aws.grant_exemption("arn:aws:iam::123456789012:role/r", check="flag_wildcard_iam")

    result = handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))

    assert result["outcome"] == "exempt"
    assert role_tags(iam, "r") == {}
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "exempt"
    assert alert.attributes["severity"] == "LOW"
    assert "highest HIGH" in alert.outcome["reason"]


def test_dry_run_alerts_what_it_would_tag_and_tags_nothing(
    aws: Any, iam: Any, make_iam_handler: Any, cloudtrail_event: Any
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))

    result = make_iam_handler(mode="dry-run")(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))

    assert role_tags(iam, "r") == {}
    assert result["outcome"] == "flagged"
    assert result["new_state"] == {TAG: "HIGH"}
    assert "dry run" in aws.only_alert().outcome["reason"]


# --- managed policies: the policy carries the flag ------------------------------------------------------


def test_created_policy_with_sagemaker_star_is_tagged(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    event = sample_event("iam/create-policy-sagemaker-wildcard.json")
    arn = iam.create_policy(
        PolicyName="mlw-sagemaker-everything", PolicyDocument=event["detail"]["requestParameters"]["policyDocument"]
    )["Policy"]["Arn"]

    handler(event)

    assert policy_tags(iam, arn) == {TAG: "HIGH"}
    alert = aws.only_alert()
    assert alert.outcome["resource"] == arn
    assert alert.outcome["details"]["document_source"] == "live default version v1"
    assert alert.line("Undo") == f"aws iam untag-policy --policy-arn {arn} --tag-keys {TAG}"


def _policy_with_admin_version(iam: Any) -> str:
    arn: str = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(TIGHT))["Policy"]["Arn"]
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ADMIN), SetAsDefault=True)
    return arn


def test_admin_policy_version_is_flagged_critical(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    arn = _policy_with_admin_version(iam)

    result = handler(sample_event("iam/create-policy-version-admin.json"))

    assert policy_tags(iam, arn) == {TAG: "CRITICAL"}
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v2"
    assert result["severity"] == "CRITICAL"
    assert aws.only_alert().outcome["details"]["findings"][0]["rule"] == "full-admin"


def test_revert_option_sets_the_previous_version_back(
    aws: Any, iam: Any, make_iam_handler: Any, sample_event: Any
) -> None:
    arn = _policy_with_admin_version(iam)

    handler = make_iam_handler(env={"REVERT_CRITICAL_POLICY_VERSIONS": "true"})
    result = handler(sample_event("iam/create-policy-version-admin.json"))

    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v1"
    assert result["outcome"] == "remediated"
    alert = aws.only_alert()
    assert alert.outcome["previous_state"] == {"DefaultVersionId": "v2"}
    assert alert.outcome["new_state"] == {"DefaultVersionId": "v1"}
    assert alert.line("Undo") == f"aws iam set-default-policy-version --policy-arn {arn} --version-id v2"


def test_revert_option_in_dry_run_changes_nothing(aws: Any, iam: Any, make_iam_handler: Any, sample_event: Any) -> None:
    arn = _policy_with_admin_version(iam)

    handler = make_iam_handler(mode="dry-run", env={"REVERT_CRITICAL_POLICY_VERSIONS": "true"})
    result = handler(sample_event("iam/create-policy-version-admin.json"))

    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v2"
    assert result["outcome"] == "would-remediate"


def test_admin_version_created_as_non_default_is_reported_not_flagged(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    arn = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(TIGHT))["Policy"]["Arn"]
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ADMIN), SetAsDefault=False)
    event = sample_event("iam/create-policy-version-admin.json")
    event["detail"]["requestParameters"]["setAsDefault"] = False

    result = handler(event)

    # The default version (in force) is tight; the admin version is one SetDefaultPolicyVersion away.
    assert result["outcome"] == "compliant"
    assert result["details"]["document_source"] == "live default version v1"
    assert [f["rule"] for f in result["details"]["non_default_version_findings"]] == ["full-admin"]
    assert policy_tags(iam, arn) == {}


def test_making_the_admin_version_default_later_is_flagged(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    arn = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(TIGHT))["Policy"]["Arn"]
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ADMIN), SetAsDefault=False)
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v2")

    result = handler(sample_event("iam/set-default-policy-version.json"))

    assert result["outcome"] == "flagged"
    assert policy_tags(iam, arn) == {TAG: "CRITICAL"}


def test_fixed_policy_loses_its_stale_flag(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    arn = _policy_with_admin_version(iam)
    iam.tag_policy(PolicyArn=arn, Tags=[{"Key": TAG, "Value": "CRITICAL"}, {"Key": "owner", "Value": "ml"}])
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(TIGHT), SetAsDefault=True)

    result = handler(sample_event("iam/create-policy-version-admin.json"))

    assert policy_tags(iam, arn) == {"owner": "ml"}
    assert result["outcome"] == "compliant"
    assert result["actions"] == ["iam:UntagPolicy"]
    assert aws.alerts() == []


def test_exempt_policy_is_not_tagged(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    arn = _policy_with_admin_version(iam)
    aws.grant_exemption(arn)

    result = handler(sample_event("iam/create-policy-version-admin.json"))

    assert result["outcome"] == "exempt"
    assert TAG not in policy_tags(iam, arn)


def test_config_event_finds_the_policy_by_id_and_tags_it(aws: Any, iam: Any, handler: Any, config_event: Any) -> None:
    policy = iam.create_policy(PolicyName="admin-ish", PolicyDocument=json.dumps(ADMIN))["Policy"]

    result = handler(
        config_event(
            "iam-policy-no-statements-with-admin-access-f3a9c1", "AWS::IAM::Policy", policy["PolicyId"], "NON_COMPLIANT"
        )
    )

    assert result["outcome"] == "flagged"
    assert policy_tags(iam, policy["Arn"]) == {TAG: "CRITICAL"}


def test_config_event_for_a_deleted_policy_is_ignored(aws: Any, handler: Any, sample_event: Any) -> None:
    result = handler(sample_event("config/iam-policy-no-statements-with-admin-access-noncompliant.json"))

    assert result["outcome"] == "ignored"
    assert aws.alerts() == []


ADMINISTRATOR_ACCESS = "arn:aws:iam::aws:policy/AdministratorAccess"


def role_with_administrator_access(iam: Any, monkeypatch: pytest.MonkeyPatch, role: str) -> None:
    # moto loads the AWS-managed policies it ships when its IAM backend is (re)built with this set
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    iam_backends[ACCOUNT]["global"].reset()
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST)
    iam.attach_role_policy(RoleName=role, PolicyArn=ADMINISTRATOR_ACCESS)


def test_attaching_administrator_access_tags_the_role(
    aws: Any, iam: Any, handler: Any, real_record: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_with_administrator_access(iam, monkeypatch, "new-role")
    event = real_record(
        "cloudtrail/raw_records/panther/"
        "AttachRolePolicy__aws-iam-attachadminrolepolicy__iam-role-policy-attached-with-administrator-access.json"
    )

    handler(event)

    assert role_tags(iam, "new-role") == {TAG: "CRITICAL"}
    alert = aws.only_alert()
    assert alert.outcome["resource"] == ADMINISTRATOR_ACCESS
    assert alert.outcome["actions"] == ["iam:TagRole"]


def test_attach_sample_tags_the_data_scientist_role_critical(
    aws: Any, iam: Any, handler: Any, sample_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    role_with_administrator_access(iam, monkeypatch, "mlw-data-scientist")

    result = handler(sample_event("iam/attach-role-policy-administrator-access.json"))

    assert result["severity"] == "CRITICAL"
    assert role_tags(iam, "mlw-data-scientist") == {TAG: "CRITICAL"}
    assert aws.only_alert().outcome["trigger"]["actor"].startswith("arn:aws:sts::123456789012:assumed-role/tester")


def test_attached_policy_that_no_longer_exists_is_ignored(aws: Any, iam: Any, handler: Any, real_record: Any) -> None:
    event = real_record(
        "cloudtrail/raw_records/panther/"
        "AttachUserPolicy__aws-iam-attachadminuserpolicy__iam-user-policy-attached-with-administrator-access.json"
    )

    result = handler(event)

    assert result["outcome"] == "ignored"
    assert "no longer exists" in result["reason"]


# --- bad input, failed calls, our own changes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("iam/attach-role-policy-failed.json", "failed with NoSuchEntity"),
        ("config/s3-bucket-public-read-prohibited-noncompliant.json", "not a wildcard-IAM rule"),
        ("s3/put-bucket-acl-public.json", "not an IAM call"),
        ("macie/policy-s3-bucket-public.json", "not IAM policy changes"),
    ],
)
def test_events_that_are_not_this_checks_are_ignored(
    aws: Any, handler: Any, sample_event: Any, name: str, reason: str
) -> None:
    result = handler(sample_event(name))

    assert result["outcome"] == "ignored"
    assert reason in result["reason"]
    assert aws.alerts() == []


def test_null_request_parameters_are_ignored(aws: Any, handler: Any, real_record: Any) -> None:
    result = handler(
        real_record(
            "cloudtrail/raw_records/panther/PutUserPolicy__aws-iam-accesskeycompromised__request-param-is-null.json"
        )
    )

    assert result["outcome"] == "ignored"
    assert result["reason"] == "PutUserPolicy names no user"


def test_deny_only_quarantine_policy_is_compliant(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    event = sample_event("iam/put-user-policy-deny-quarantine.json")
    parameters = event["detail"]["requestParameters"]
    iam.create_user(UserName=parameters["userName"])
    iam.put_user_policy(
        UserName=parameters["userName"],
        PolicyName=parameters["policyName"],
        PolicyDocument=parameters["policyDocument"],
    )

    assert handler(event)["outcome"] == "compliant"
    assert user_tags(iam, parameters["userName"]) == {}


def test_own_changes_are_ignored(aws: Any, iam: Any, handler: Any, cloudtrail_event: Any) -> None:
    identity = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/FlagWildcardIamRole/session",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": OWN_ROLE_ARN}},
    }

    result = handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING, user_identity=identity))

    assert result["outcome"] == "ignored"
    assert "loop guard" in result["reason"]


def test_invalid_revert_setting_fails_at_cold_start(make_iam_handler: Any) -> None:
    with pytest.raises(SettingsError, match="REVERT_CRITICAL_POLICY_VERSIONS"):
        make_iam_handler(env={"REVERT_CRITICAL_POLICY_VERSIONS": "maybe"})


def test_tag_write_denied_is_a_failed_outcome_that_raises(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))

    def refuse(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "TagRole")

    monkeypatch.setattr(clients.client("iam"), "tag_role", refuse)

    with pytest.raises(Exception, match="flag_wildcard_iam failed"):
        handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert alert.outcome["error_code"] == "AccessDenied"
