"""The client factory in organization mode: which account each client acts in, and how sessions are named."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from moto.sts.models import sts_backends

from mlwarden import clients
from mlwarden.settings import SettingsError, load_settings
from tests.conftest import ACCOUNT, REGION, TOPIC_ARN, AwsWorld, FakeLambdaContext, Handler, build_cloudtrail_event

MEMBER = "111111111111"
ROLE = "MLWardenMember"


def _ml_warden_sessions(account: str) -> list[str]:
    roles = sts_backends[account]["aws"].assumed_roles
    return [role.session_name for role in roles if role.session_name.startswith(clients.SESSION_PREFIX)]


@pytest.mark.parametrize(
    "parts",
    [
        ("block_public_s3", "6a3c4f0e-1b2d-4c5e-8f90-0a1b2c3d4e5f"),
        ("check_sagemaker_encryption", "6a3c4f0e-1b2d-4c5e-8f90-0a1b2c3d4e5f"),
        ("sweep-6a3c4f0e-1b2d-4c5e-8f90-0a1b2c3d4e5f",),
        ("tag_pii_bucket", "id with spaces/and:colons"),
    ],
)
def test_session_names_say_ml_warden_and_are_valid_for_sts(parts: tuple[str, ...]) -> None:
    # RoleSessionName: 2-64 characters of [\w+=,.@-]
    # (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html)
    name = clients.session_name(*parts)
    assert name.startswith("mlwarden-")
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", name)


def test_inside_a_member_account_resource_clients_are_the_members_and_state_clients_the_hubs(aws: AwsWorld) -> None:
    with clients.acting_in(MEMBER, REGION, member_role_name=ROLE, session="mlwarden-test-1"):
        clients.client("s3").create_bucket(Bucket="made-in-the-member")
        tables = clients.client("dynamodb").list_tables()["TableNames"]
        topics = [t["TopicArn"] for t in clients.client("sns", REGION).list_topics()["Topics"]]

    assert aws.outcome_table in tables  # the hub's table, read from inside the member's context
    assert TOPIC_ARN in topics
    assert "made-in-the-member" not in [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]
    assert clients.client("s3").list_buckets()["Buckets"] == aws.s3.list_buckets()["Buckets"]  # home again


def test_one_assumed_session_per_account_and_session_name_and_a_new_one_per_event(aws: AwsWorld) -> None:
    for session in ("mlwarden-event-1", "mlwarden-event-1", "mlwarden-event-2"):
        with clients.acting_in(MEMBER, REGION, member_role_name=ROLE, session=session):
            clients.client("s3").list_buckets()

    assert _ml_warden_sessions(MEMBER) == ["mlwarden-event-1", "mlwarden-event-2"]


@pytest.mark.parametrize(("account", "role"), [(ACCOUNT, ROLE), (MEMBER, None), (None, ROLE)])
def test_no_role_is_assumed_for_the_home_account_without_a_member_role_or_an_account(
    aws: AwsWorld, account: str | None, role: str | None
) -> None:
    with clients.acting_in(account, REGION, member_role_name=role, session="mlwarden-x") as acting:
        assert acting is None or acting.role_arn is None
        clients.client("s3").list_buckets()

    assert _ml_warden_sessions(MEMBER) == []
    assert _ml_warden_sessions(ACCOUNT) == []


def test_the_hub_accounts_event_from_another_region_is_acted_on_in_that_region(aws: AwsWorld) -> None:
    # member.yaml forwards the hub account's other regions to the organization bus in the hub's home region.
    with clients.acting_in(ACCOUNT, "eu-west-1", member_role_name=ROLE, session="mlwarden-x"):
        assert clients.client("sagemaker").meta.region_name == "eu-west-1"
        assert clients.client("dynamodb").meta.region_name == REGION  # the hub's own table stays home

    assert _ml_warden_sessions(ACCOUNT) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEMBER_ROLE_NAME", "role/with/slashes"),
        ("MEMBER_ROLE_NAME", "x" * 65),
        ("MEMBER_ROLE_NAME", "arn:aws:iam::111111111111:role/MLWardenMember"),
        ("ORGANIZATION_ID", "123456789012"),
        ("ORGANIZATION_ID", "o-short"),
    ],
)
def test_invalid_organization_settings_fail_at_cold_start_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({"ALERT_TOPIC_ARN": TOPIC_ARN, variable: value})


def test_organization_settings_are_off_unless_given() -> None:
    settings = load_settings({"ALERT_TOPIC_ARN": TOPIC_ARN, "MEMBER_ROLE_NAME": " ", "ORGANIZATION_ID": ""})
    assert (settings.member_role_name, settings.organization_id) == (None, None)


def test_an_alert_goes_out_without_the_account_name_when_organizations_refuses(
    aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    # No organization in this moto: DescribeAccount is refused. The name is a courtesy; the alert is not.
    bucket = aws.bucket("open-in-the-hub")

    make_handler(env={"ORGANIZATION_ID": "o-exampleorgid1", "MEMBER_ROLE_NAME": ROLE})(
        build_cloudtrail_event("DeleteBucketPublicAccessBlock", bucket)
    )

    alert = aws.only_alert()
    assert alert.attributes["account"] == ACCOUNT
    assert "account_name" not in alert.attributes


def test_in_lambda_the_home_account_comes_from_the_functions_own_arn_without_a_call(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Single-account deployments get MEMBER_ROLE_NAME too: their events must not cost an STS call.
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.13")
    context = FakeLambdaContext(invoked_function_arn=f"arn:aws:lambda:{REGION}:{MEMBER}:function:mlwarden-X")

    assert clients.home_account(context) == MEMBER  # moto's own account would say 123456789012
    assert clients.home_account(None) == ACCOUNT
