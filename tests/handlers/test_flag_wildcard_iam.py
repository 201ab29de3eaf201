"""flag_wildcard_iam in moto: the tags on policies, roles and users after the event, and the alert received."""

from __future__ import annotations

import gzip
import json
import tracemalloc
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
    # The resource is an ARN a person can act on; the policy's name is beside it
    assert alert.outcome["resource"] == f"arn:aws:iam::{ACCOUNT}:role/mlw-data-scientist"
    assert alert.outcome["details"]["policy_name"] == "s3-everything"
    assert alert.outcome["actions"] == ["iam:TagRole"]
    assert alert.outcome["previous_state"] == {TAG: None}
    assert alert.outcome["new_state"] == {TAG: "HIGH"}
    assert alert.line("Undo") == f"aws iam untag-role --role-name mlw-data-scientist --tag-keys {TAG}"
    assert "DataScientist" in alert.line("Who")
    (finding,) = alert.outcome["details"]["findings"]
    assert finding["policy"] == "inline policy s3-everything"
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
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))
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
    alert = aws.only_alert().outcome
    findings = [f for f in alert["details"]["findings"] if f["severity"] != "LOW"]
    assert [(f["rule"], f["actions"]) for f in findings] == [
        ("privilege-escalation", ["iam:PassRole", "sagemaker:CreateTrainingJob"])
    ]
    # The alert names the path it completes, in words.
    path = "iam:PassRole on all roles + sagemaker:CreateTrainingJob: run code as any role that trusts SageMaker"
    assert findings[0]["path"] == path
    assert path in alert["reason"]


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
    iam.put_role_policy(RoleName="r", PolicyName="admin", PolicyDocument=json.dumps(ADMIN))
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
    assert alert.outcome["resource"] == f"arn:aws:iam::{ACCOUNT}:role/new-role"
    assert alert.outcome["details"]["changed"] == ADMINISTRATOR_ACCESS
    assert alert.outcome["details"]["findings"][0]["policy"] == ADMINISTRATOR_ACCESS
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


def test_own_change_to_a_principal_that_is_gone_is_ignored(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # The loop guard no longer skips on identity: the check reads live state, and there is none to read.
    identity = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/FlagWildcardIamRole/session",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": OWN_ROLE_ARN}},
    }

    result = handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING, user_identity=identity))

    assert result["outcome"] == "ignored"
    assert "no longer exists" in result["reason"]


def test_invalid_revert_setting_fails_at_cold_start(make_iam_handler: Any) -> None:
    with pytest.raises(SettingsError, match="REVERT_CRITICAL_POLICY_VERSIONS"):
        make_iam_handler(env={"REVERT_CRITICAL_POLICY_VERSIONS": "maybe"})


@pytest.mark.parametrize("code", ["AccessDenied", "Throttling"])
def test_tag_write_refused_is_a_failed_flag_that_raises_and_never_says_failed_to_fix(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))

    def refuse(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "TagRole")

    monkeypatch.setattr(clients.client("iam"), "tag_role", refuse)

    with pytest.raises(Exception, match="flag_wildcard_iam failed"):
        handler(put_role_policy_event(cloudtrail_event, "r", S3_EVERYTHING))
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert alert.outcome["error_code"] == code
    # The check only flags: the subject says what failed, and the body what to do about it
    assert "FAILED to flag" in alert.subject
    assert "fix" not in alert.subject
    assert "iam:TagRole" in alert.line("To do")


# --- stale flags: a principal is re-graded from what it holds now (issue 11) -------------------------------

PASS_AND_CREATE_FUNCTION = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["iam:PassRole", "lambda:CreateFunction"], "Resource": "*"}],
}
NOT_ACTION_ADMIN = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"}],
}


def test_detaching_administrator_access_lowers_the_role_flag_to_what_it_still_holds(
    aws: Any, iam: Any, handler: Any, sample_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a role flagged CRITICAL for AdministratorAccess that also holds s3:* on *
    role_with_administrator_access(iam, monkeypatch, "mlw-data-scientist")
    iam.put_role_policy(
        RoleName="mlw-data-scientist", PolicyName="s3-everything", PolicyDocument=json.dumps(S3_EVERYTHING)
    )
    iam.tag_role(
        RoleName="mlw-data-scientist", Tags=[{"Key": TAG, "Value": "CRITICAL"}, {"Key": "team", "Value": "ds"}]
    )

    # When AdministratorAccess is detached and CloudTrail reports it
    iam.detach_role_policy(RoleName="mlw-data-scientist", PolicyArn=ADMINISTRATOR_ACCESS)
    result = handler(sample_event("iam/detach-role-policy-administrator-access.json"))

    # Then the flag says what the role still holds, and the lowered flag is alerted
    assert role_tags(iam, "mlw-data-scientist") == {TAG: "HIGH", "team": "ds"}
    assert result["outcome"] == "flagged"
    assert result["previous_state"] == {TAG: "CRITICAL"}
    assert result["new_state"] == {TAG: "HIGH"}
    assert aws.only_alert().outcome["details"]["finding_rules"] == ["service-wildcard"]


def test_deleting_the_last_flagged_inline_policy_removes_the_flag_quietly(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    iam.create_role(
        RoleName="mlw-data-scientist",
        AssumeRolePolicyDocument=TRUST,
        Tags=[{"Key": TAG, "Value": "HIGH"}, {"Key": "team", "Value": "ds"}],
    )
    iam.put_role_policy(RoleName="mlw-data-scientist", PolicyName="read", PolicyDocument=json.dumps(TIGHT))

    result = handler(sample_event("iam/delete-role-policy-s3-wildcard.json"))

    assert role_tags(iam, "mlw-data-scientist") == {"team": "ds"}
    assert result["outcome"] == "compliant"
    assert result["actions"] == ["iam:UntagRole"]
    assert result["undo"] == f"aws iam tag-role --role-name mlw-data-scientist --tags Key={TAG},Value=HIGH"
    assert aws.alerts() == []


def test_attach_event_for_a_policy_detached_since_flags_nothing(
    aws: Any, iam: Any, handler: Any, sample_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given AdministratorAccess was attached and detached again before the attach event is handled
    role_with_administrator_access(iam, monkeypatch, "mlw-data-scientist")
    iam.detach_role_policy(RoleName="mlw-data-scientist", PolicyArn=ADMINISTRATOR_ACCESS)

    result = handler(sample_event("iam/attach-role-policy-administrator-access.json"))

    assert role_tags(iam, "mlw-data-scientist") == {}
    assert result["outcome"] == "compliant"
    assert aws.alerts() == []


def _researchers_group(iam: Any, *members: str) -> None:
    iam.create_group(GroupName="mlw-researchers")
    iam.put_group_policy(
        GroupName="mlw-researchers", PolicyName="all-but-iam", PolicyDocument=json.dumps(NOT_ACTION_ADMIN)
    )
    for member in members:
        iam.add_user_to_group(GroupName="mlw-researchers", UserName=member)


def test_user_joining_an_admin_group_is_flagged(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    iam.create_user(UserName="mlw-pipeline-bot")
    _researchers_group(iam, "mlw-pipeline-bot")

    result = handler(sample_event("iam/add-user-to-group.json"))

    assert user_tags(iam, "mlw-pipeline-bot") == {TAG: "CRITICAL"}
    alert = aws.only_alert()
    assert alert.outcome["resource"] == f"arn:aws:iam::{ACCOUNT}:user/mlw-pipeline-bot"
    assert alert.outcome["details"]["findings"][0]["policy"] == "group mlw-researchers inline policy all-but-iam"
    assert result["severity"] == "CRITICAL"


def test_user_leaving_an_admin_group_loses_its_flag(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    iam.create_user(UserName="mlw-pipeline-bot", Tags=[{"Key": TAG, "Value": "CRITICAL"}])
    _researchers_group(iam)  # the user has left already

    result = handler(sample_event("iam/remove-user-from-group.json"))

    assert user_tags(iam, "mlw-pipeline-bot") == {}
    assert result["outcome"] == "compliant"
    assert result["actions"] == ["iam:UntagUser"]


def test_group_policy_change_flags_the_members_who_hold_it(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    iam.create_user(UserName="alice")
    iam.create_user(UserName="bob")
    aws.grant_exemption(f"arn:aws:iam::{ACCOUNT}:user/bob", check="flag_wildcard_iam")
    _researchers_group(iam, "alice", "bob")

    result = handler(sample_event("iam/put-group-policy-notaction.json"))

    assert user_tags(iam, "alice") == {TAG: "CRITICAL"}
    assert TAG not in user_tags(iam, "bob")
    assert result["outcome"] == "flagged"
    assert result["details"]["members_retagged"] == {"user alice": {"before": None, "after": "CRITICAL"}}
    assert "user bob is exempt: not tagged" in result["details"]["members_notes"]


def test_deleting_a_policy_version_removes_a_stale_policy_flag(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    arn = iam.create_policy(
        PolicyName="mlw-training", PolicyDocument=json.dumps(TIGHT), Tags=[{"Key": TAG, "Value": "CRITICAL"}]
    )["Policy"]["Arn"]

    result = handler(sample_event("iam/delete-policy-version.json"))

    assert policy_tags(iam, arn) == {}
    assert result["outcome"] == "compliant"
    assert result["actions"] == ["iam:UntagPolicy"]


# --- principals AWS manages cannot be tagged: the finding is the outcome (issue 11) ---------------------


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("AWSReservedSSO_AdministratorAccess_0123456789abcdef", "/aws-reserved/sso.amazonaws.com/"),
        ("AWSServiceRoleForSupport", "/aws-service-role/support.amazonaws.com/"),
    ],
)
def test_unmodifiable_role_with_full_admin_is_flagged_critical_with_a_note(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch, role: str, path: str
) -> None:
    # Given a role AWS manages (IAM refuses TagRole on it with UnmodifiableEntity; moto does not know that)
    iam.create_role(RoleName=role, Path=path, AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName=role, PolicyName="inline", PolicyDocument=json.dumps(ADMIN))

    def unmodifiable(**_: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "UnmodifiableEntity", "Message": "Cannot perform the operation on the protected role"}},
            "TagRole",
        )

    monkeypatch.setattr(clients.client("iam"), "tag_role", unmodifiable)

    # When its inline policy is reported
    result = handler(put_role_policy_event(cloudtrail_event, role, ADMIN))

    # Then the outcome is the finding, not a failure: CRITICAL, findings kept, a note about the tag
    assert result["outcome"] == "flagged"
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert "FAILED" not in alert.subject
    assert alert.outcome["details"]["findings"][0]["rule"] == "full-admin"
    assert "cannot be tagged (UnmodifiableEntity" in alert.outcome["details"]["not_tagged"]
    assert role_tags(iam, role) == {}


def test_flagged_alert_says_what_to_do(aws: Any, iam: Any, handler: Any, sample_event: Any) -> None:
    iam.create_role(RoleName="mlw-data-scientist", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(
        RoleName="mlw-data-scientist", PolicyName="s3-everything", PolicyDocument=json.dumps(S3_EVERYTHING)
    )

    handler(sample_event("iam/put-role-policy-s3-wildcard.json"))

    assert "the policies of the role mlw-data-scientist" in aws.only_alert().line("To do")


# --- bounded work on unbounded input (issue 11) --------------------------------------------------------
# IAM's size limits: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html
# SNS refuses messages above 256 KB: https://docs.aws.amazon.com/sns/latest/api/API_Publish.html

SNS_LIMIT = 262_144


def _wildcard_statements(count: int) -> dict[str, Any]:
    """A document of `count` statements, each a different wildcard finding."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": [f"s3:Get{i}*", "ec2:*"], "Resource": "*"} for i in range(count)],
    }


def _create_version_event(cloudtrail_event: Any, arn: str, document: Any, *, default: bool) -> dict[str, Any]:
    text = document if isinstance(document, str) else json.dumps(document)
    parameters = {"policyArn": arn, "policyDocument": text, "setAsDefault": default}
    return cloudtrail_event("CreatePolicyVersion", request_parameters=parameters, event_source="iam.amazonaws.com")


def test_256_kb_staged_version_in_an_event_is_not_analysed_and_the_alert_is_delivered(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any
) -> None:
    # Given an event carrying a document of 256 KB, far above IAM's 6,144 characters for a managed policy
    arn = iam.create_policy(PolicyName="p", PolicyDocument=json.dumps(S3_EVERYTHING))["Policy"]["Arn"]
    huge = _wildcard_statements(4_000)
    assert len(json.dumps(huge)) > 200_000

    result = handler(_create_version_event(cloudtrail_event, arn, huge, default=False))

    # Then the live default version decides; the event's document is refused, and the alert fits in SNS
    assert result["outcome"] == "flagged"
    assert "above IAM's limit of 6,144" in result["details"]["event_document_not_analysed"]
    assert "non_default_version_findings" not in result["details"]
    alert = aws.only_alert()
    assert len(alert.body) < SNS_LIMIT // 8


def test_unreadable_policy_with_a_256_kb_event_document_fails_with_a_small_alert(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(S3_EVERYTHING))

    def refuse(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRolePolicy")

    monkeypatch.setattr(clients.client("iam"), "get_role_policy", refuse)

    with pytest.raises(Exception, match="flag_wildcard_iam failed"):
        handler(put_role_policy_event(cloudtrail_event, "r", _wildcard_statements(4_000)))
    alert = aws.only_alert()
    assert alert.attributes["outcome"] == "failed"
    assert len(alert.body) < SNS_LIMIT // 8


def test_findings_reported_are_the_highest_ten_with_counts_of_the_rest(
    aws: Any, iam: Any, handler: Any, cloudtrail_event: Any
) -> None:
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    document = _wildcard_statements(60)
    document["Statement"].append({"Effect": "Allow", "Action": "*", "Resource": "*"})
    iam.put_role_policy(RoleName="r", PolicyName="inline", PolicyDocument=json.dumps(document))

    handler(put_role_policy_event(cloudtrail_event, "r", document))

    details = aws.only_alert().outcome["details"]
    assert len(details["findings"]) == 10
    assert details["findings"][0]["rule"] == "full-admin"  # highest first
    assert details["findings_total"] > 60
    assert details["findings_not_shown"] == details["findings_total"] - 10
    assert sum(details["findings_by_rule"].values()) == details["findings_total"]
    # and all of them are kept in the outcome table, where the alert says
    (key,) = [k for k in aws.outcome_records() if k.startswith("flag_wildcard_iam#findings#")]
    assert key in details["all_findings"]
    kept = json.loads(gzip.decompress(aws.outcome_records()[key]["findings"]))
    assert len(kept) == details["findings_total"]
    assert kept[:10] == details["findings"]


def test_10_mb_event_document_is_refused_without_being_decoded(cloudtrail_event: Any) -> None:
    from mlwarden.checks import flag_wildcard_iam as iam_module  # noqa: PLC0415 - the module under test, without AWS

    text = json.dumps(_wildcard_statements(1))[:-2] + ", " + ", ".join(["{}"] * 2_500_000) + "]}"
    assert len(text) > 10_000_000
    tracemalloc.start()
    try:
        document = iam_module.bounded_document(text, iam_module.MANAGED_POLICY_LIMIT, "event")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert document.document is None
    assert "far above IAM's 6,144" in (document.refused or "")
    assert peak < 1_000_000


# --- RevertCriticalPolicyVersions restores only a former default that grades lower (issue 10) ------------


def _revert_handler(make_iam_handler: Any) -> Any:
    return make_iam_handler(env={"REVERT_CRITICAL_POLICY_VERSIONS": "true"})


def _staged_then_admin(iam: Any, first: dict[str, Any]) -> str:
    """v1 = `first`; v2 staged, never default (PassRole + lambda:CreateFunction on *); v3 admin, made default."""
    arn: str = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(first))["Policy"]["Arn"]
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(PASS_AND_CREATE_FUNCTION), SetAsDefault=False)
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ADMIN), SetAsDefault=True)
    return arn


def test_revert_never_restores_a_staged_version_granting_passrole_and_create_function(
    aws: Any, iam: Any, make_iam_handler: Any, sample_event: Any
) -> None:
    # Given an attacker staged v2 (never default: PassRole + lambda:CreateFunction on *), then made admin v3 default
    arn = _staged_then_admin(iam, TIGHT)

    # When the revert option handles the CreatePolicyVersion of v3
    result = _revert_handler(make_iam_handler)(sample_event("iam/create-policy-version-admin.json"))

    # Then v1 (the default CreatePolicy made) is restored, not the staged v2, and the alert says what it grants
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v1"
    assert result["outcome"] == "remediated"
    alert = aws.only_alert()
    assert alert.outcome["new_state"] == {"DefaultVersionId": "v1"}
    assert alert.outcome["details"]["restored_version"]["version"] == "v1"
    assert alert.outcome["details"]["restored_version"]["highest"] == "INFORMATIONAL"
    assert "a former default, grades INFORMATIONAL" in alert.outcome["reason"]
    assert policy_tags(iam, arn) == {}


def test_revert_flags_only_when_the_only_former_default_is_no_safer(
    aws: Any, iam: Any, make_iam_handler: Any, sample_event: Any
) -> None:
    # Given v1 (the only version ever default) is admin too, and v2 is a staged escalation
    arn = _staged_then_admin(iam, ADMIN)

    result = _revert_handler(make_iam_handler)(sample_event("iam/create-policy-version-admin.json"))

    # Then nothing is restored: the check flags, says why, and never calls it fixed
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v3"
    assert result["outcome"] == "flagged"
    assert policy_tags(iam, arn) == {TAG: "CRITICAL"}
    not_reverted = aws.only_alert().outcome["details"]["not_reverted"]
    assert "no former default (v1) grades lower than CRITICAL" in not_reverted
    assert "never-default version(s) v2 are not candidates" in not_reverted


def test_revert_restores_the_newest_former_default_it_saw_and_reports_its_findings(
    aws: Any, iam: Any, make_iam_handler: Any, sample_event: Any, cloudtrail_event: Any
) -> None:
    # Given v2 (s3:* on *) was made default, and ML Warden saw it as the default
    handler = _revert_handler(make_iam_handler)
    arn = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(TIGHT))["Policy"]["Arn"]
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(S3_EVERYTHING), SetAsDefault=True)
    handler(_create_version_event(cloudtrail_event, arn, S3_EVERYTHING, default=True))
    assert policy_tags(iam, arn) == {TAG: "HIGH"}
    assert len(aws.alerts()) == 1

    # When admin v3 is made default
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ADMIN), SetAsDefault=True)
    result = handler(sample_event("iam/create-policy-version-admin.json"))

    # Then v2, the default just before, is restored; the alert reports its HIGH finding and the flag follows it
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v2"
    assert result["outcome"] == "remediated"
    first, revert = aws.alerts()
    assert first.subject.startswith("[ML Warden] HIGH flagged")
    restored = revert.outcome["details"]["restored_version"]
    assert restored["version"] == "v2"
    assert restored["highest"] == "HIGH"
    assert restored["findings"][0]["rule"] == "service-wildcard"
    assert policy_tags(iam, arn) == {TAG: "HIGH"}
    assert set(aws.outcome_records()[f"flag_wildcard_iam#default#{arn}"]["versions"]) == {"v2", "v3"}


def test_new_default_version_re_grades_every_role_and_user_holding_the_policy(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    # Given a tight policy held by a role directly and by a user through a group
    arn = iam.create_policy(PolicyName="mlw-training", PolicyDocument=json.dumps(TIGHT))["Policy"]["Arn"]
    iam.create_role(RoleName="trainer", AssumeRolePolicyDocument=TRUST)
    iam.attach_role_policy(RoleName="trainer", PolicyArn=arn)
    iam.create_user(UserName="alice")
    iam.create_group(GroupName="trainers")
    iam.attach_group_policy(GroupName="trainers", PolicyArn=arn)
    iam.add_user_to_group(GroupName="trainers", UserName="alice")

    # When admin v2 is made the default
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ADMIN), SetAsDefault=True)
    result = handler(sample_event("iam/create-policy-version-admin.json"))

    # Then the policy and everyone holding it are flagged
    assert policy_tags(iam, arn) == {TAG: "CRITICAL"}
    assert role_tags(iam, "trainer") == {TAG: "CRITICAL"}
    assert user_tags(iam, "alice") == {TAG: "CRITICAL"}
    assert set(result["details"]["holders_retagged"]) == {"role trainer", "user alice"}
    assert set(result["actions"]) == {"iam:TagPolicy", "iam:TagRole", "iam:TagUser"}

    # When v1 is made the default again, the flags come off everyone
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v1")
    handler(sample_event("iam/set-default-policy-version.json") | {"id": "another-event-id"})

    assert policy_tags(iam, arn) == {}
    assert role_tags(iam, "trainer") == {}
    assert user_tags(iam, "alice") == {}


def test_the_same_findings_on_a_role_reported_again_under_a_new_event_alert_once(
    aws: Any, iam: Any, handler: Any, sample_event: Any
) -> None:
    # Bug (issue 11): dedup was per event id, so every re-report of the same findings alerted again.
    first = sample_event("iam/put-role-policy-s3-wildcard.json")
    iam.create_role(RoleName="mlw-data-scientist", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(
        RoleName="mlw-data-scientist",
        PolicyName="s3-everything",
        PolicyDocument=first["detail"]["requestParameters"]["policyDocument"],
    )
    again = {**first, "id": "5f0c3b8e-0000-4000-8000-000000000002"}

    results = [handler(first), handler(again)]

    assert [r["outcome"] for r in results] == ["flagged", "flagged"]
    assert results[0]["findings"] and results[0]["findings"] == results[1]["findings"]
    assert [r["alerted"] for r in results] == [True, False]
    assert len(aws.alerts()) == 1
