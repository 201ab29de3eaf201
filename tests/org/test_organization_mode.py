"""Organization mode, emulated end to end: a hub account and member accounts on one moto.

moto keys its state by account id and lets a caller assume a role ARN in another account, so the hub's
functions (run here in-process, as Lambda would run them in the hub account) act in a member account
exactly as they would in AWS: through that account's member role. `refuse_assuming_missing_roles` makes
moto refuse a role that does not exist, as AWS does, so a member without member.yaml is emulated too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.events.models import EventPattern
from moto.sts.models import sts_backends

from mlwarden import clients, organization
from mlwarden.errors import RemediationFailed
from mlwarden.events import parse_event
from mlwarden.loopguard import is_own_change
from mlwarden.organization import Account
from mlwarden.outcomes import OutcomeKind
from mlwarden.settings import SettingsError, load_settings
from mlwarden.sweep import Summary, new_sweep_id, run_organization_sweep
from mlwarden_cli.emulator import refuse_assuming_missing_roles
from mlwarden_cli.replay import Replayer
from mlwarden_cli.template import load_document, load_template
from tests.conftest import ACCOUNT, ALL_ON, REGION, AwsWorld, Handler, build_cloudtrail_event

ROOT = Path(__file__).resolve().parents[2]
MEMBER_ROLE = "MLWardenMember"
HUB_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/BlockPublicS3Role"


@dataclass
class Organization:
    id: str
    unit: str
    team_a: str
    team_b: str
    no_role: str

    def client(self, account: str, service: str) -> Any:
        """The test's own client in `account` (moto maps assumed-role keys to the role's account)."""
        sts = boto3.client("sts", region_name=REGION)
        credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/Admin", RoleSessionName="test-admin")[
            "Credentials"
        ]
        return boto3.client(
            service,
            region_name=REGION,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    def block_of(self, account: str, bucket: str) -> dict[str, bool] | None:
        s3 = self.client(account, "s3")
        try:
            return dict(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"])
        except s3.exceptions.ClientError as err:
            assert err.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration"
            return None

    def open_bucket(self, account: str, bucket: str) -> str:
        s3 = self.client(account, "s3")
        s3.create_bucket(Bucket=bucket)
        return bucket

    def settle_account_block(self, account: str) -> None:
        self.client(account, "s3control").put_public_access_block(
            AccountId=account, PublicAccessBlockConfiguration=ALL_ON
        )


@pytest.fixture
def org(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> Organization:
    """The hub (moto's default account, the management account here) and three members in one OU."""
    organizations = boto3.client("organizations", region_name=REGION)
    org_id = organizations.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    root = organizations.list_roots()["Roots"][0]["Id"]
    unit = organizations.create_organizational_unit(ParentId=root, Name="ml-teams")["OrganizationalUnit"]["Id"]
    accounts = []
    for name in ("team-a", "team-b", "team-c"):
        status = organizations.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]
        organizations.move_account(AccountId=status["AccountId"], SourceParentId=root, DestinationParentId=unit)
        accounts.append(status["AccountId"])
    world = Organization(org_id, unit, *accounts)
    for account in (world.team_a, world.team_b):  # member.yaml deployed there; not in team-c
        world.client(account, "iam").create_role(RoleName=MEMBER_ROLE, AssumeRolePolicyDocument="{}")
    refuse_assuming_missing_roles(clients.client("sts"))
    organization.describe.cache_clear()
    monkeypatch.setenv("MEMBER_ROLE_NAME", MEMBER_ROLE)
    monkeypatch.setenv("ORGANIZATION_ID", org_id)
    return world


def _member_event(event_name: str, bucket: str, account: str, actor: dict[str, Any] | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"account": account}
    if actor is not None:
        kwargs["user_identity"] = actor
    return build_cloudtrail_event(event_name, bucket, **kwargs)


def _sessions_in(account: str) -> list[str]:
    """ML Warden's role sessions opened in `account` (not the test's own nor the emulator's probes)."""
    roles = sts_backends[account]["aws"].assumed_roles
    return [role.session_name for role in roles if role.session_name.startswith(clients.SESSION_PREFIX)]


# --- events from member accounts, through the hub's bus patterns --------------------------------------------


def _routes(event: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The member.yaml rules that forward the event, and the hub's organization-bus rules that take it."""
    member = load_document(ROOT / "member.yaml")["Resources"]
    hub = load_document(ROOT / "template.yaml")["Resources"]

    def matching(resources: dict[str, Any], bus: Any) -> set[str]:
        return {
            name
            for name, resource in resources.items()
            if resource["Type"] == "AWS::Events::Rule"
            and resource["Properties"].get("EventBusName") == bus
            and EventPattern.load(json.dumps(resource["Properties"]["EventPattern"])).matches_event(event)
        }

    return matching(member, None), matching(hub, {"Ref": "OrganizationEventBus"})


def test_a_member_accounts_event_is_fixed_in_that_account_and_named_in_the_alert(
    org: Organization, aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    bucket = org.open_bucket(org.team_a, "team-a-training-data")
    event = _member_event("DeleteBucketPublicAccessBlock", bucket, org.team_a)
    forwarded, taken = _routes(event)
    assert forwarded == {"BlockPublicS3FunctionCloudTrailToHub"}
    assert taken == {"BlockPublicS3FunctionCloudTrailFromOrganization"}

    result = make_handler()(event)

    assert result["outcome"] == "remediated"
    assert org.block_of(org.team_a, bucket) == ALL_ON
    assert bucket not in [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]  # nothing written in the hub
    alert = aws.only_alert()
    assert alert.attributes["account"] == org.team_a
    assert alert.attributes["account_name"] == "team-a"
    assert alert.attributes["organizational_unit"] == f"ml-teams ({org.unit})"
    assert f'account {org.team_a} "team-a" in ml-teams' in alert.line("Where")
    [session] = _sessions_in(org.team_a)
    assert session.startswith("mlwarden-block_public_s3-")
    assert event["id"][:20] in session


def test_a_member_without_its_role_is_alerted_and_the_event_kept_for_a_retry(
    org: Organization, aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    bucket = org.open_bucket(org.no_role, "team-c-scratch")

    with pytest.raises(RemediationFailed):
        make_handler()(_member_event("DeleteBucketPublicAccessBlock", bucket, org.no_role))

    assert org.block_of(org.no_role, bucket) is None
    alert = aws.only_alert()
    assert alert.outcome["outcome"] == "failed"
    assert alert.outcome["resource"] == f"arn:aws:iam::{org.no_role}:role/{MEMBER_ROLE}"
    assert f"cannot act in account {org.no_role}" in alert.outcome["reason"]
    assert alert.outcome["error_code"] == "AccessDenied"


def test_the_hub_accounts_own_event_is_fixed_with_the_functions_own_role(
    org: Organization, aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    bucket = aws.bucket("hub-bucket")

    result = make_handler()(build_cloudtrail_event("DeleteBucketPublicAccessBlock", bucket))

    assert result["outcome"] == "remediated"
    assert aws.block_of(bucket) == ALL_ON
    assert _sessions_in(ACCOUNT) == []


def test_without_a_member_role_name_events_are_acted_on_as_before(
    org: Organization, aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    # Single-account mode (no MEMBER_ROLE_NAME): no role is assumed, whatever the event's account.
    bucket = org.open_bucket(org.team_a, "team-a-single-mode")

    make_handler(env={"MEMBER_ROLE_NAME": None, "ORGANIZATION_ID": None})(
        _member_event("DeleteBucketPublicAccessBlock", bucket, org.team_a)
    )

    assert _sessions_in(org.team_a) == []


# --- the loop guard in every account ------------------------------------------------------------------------


def _member_role_actor(account: str, session: str = "mlwarden-block_public_s3-0f0e") -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAMEMBER:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{MEMBER_ROLE}/{session}",
        "accountId": account,
        "sessionContext": {
            "sourceIdentity": "mlwarden",
            "sessionIssuer": {
                "type": "Role",
                "arn": f"arn:aws:iam::{account}:role/{MEMBER_ROLE}",
                "accountId": account,
                "userName": MEMBER_ROLE,
            },
        },
    }


def test_our_own_fix_in_a_member_account_is_recognised_by_the_loop_guard(
    org: Organization, aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    bucket = org.open_bucket(org.team_a, "team-a-fixed-by-us")
    org.client(org.team_a, "s3").put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=ALL_ON)

    result = make_handler()(
        _member_event("PutBucketPublicAccessBlock", bucket, org.team_a, _member_role_actor(org.team_a))
    )

    assert result["outcome"] == "ignored"
    assert "loop guard" in result["reason"]
    assert aws.alerts() == []


def test_a_member_admin_acting_as_a_role_of_the_member_roles_name_cannot_open_a_bucket_unseen(
    org: Organization, aws: AwsWorld, make_handler: Callable[..., Handler]
) -> None:
    # Attack: a member admin deletes member.yaml's role, makes their own MLWardenMember and opens a bucket
    # with it, hoping the loop guard takes it for ML Warden's own change.
    bucket = org.open_bucket(org.team_a, "team-a-opened-as-member-role")

    result = make_handler()(
        _member_event("DeleteBucketPublicAccessBlock", bucket, org.team_a, _member_role_actor(org.team_a, "mine"))
    )

    assert result["outcome"] == "remediated"
    assert org.block_of(org.team_a, bucket) == ALL_ON
    alert = aws.only_alert()
    assert alert.attributes["severity"] == "CRITICAL"
    assert "own-role-change-left-open" in alert.outcome["findings"]


@pytest.mark.parametrize(
    ("actor_account", "event_account", "own"),
    [
        ("111111111111", "111111111111", True),  # the member role of the event's account
        ("222222222222", "111111111111", False),  # another account's role of that name is somebody else
    ],
)
def test_the_member_role_is_ours_only_in_the_events_own_account(
    actor_account: str, event_account: str, own: bool
) -> None:
    call = parse_event(
        build_cloudtrail_event(
            "PutBucketPolicy", "b", account=event_account, user_identity=_member_role_actor(actor_account)
        )
    )
    assert is_own_change(call, HUB_ROLE_ARN, MEMBER_ROLE) is own  # type: ignore[arg-type]
    assert is_own_change(call, HUB_ROLE_ARN, None) is False  # type: ignore[arg-type]


# --- the sweep over the organization ------------------------------------------------------------------------


def test_the_sweep_covers_the_hub_and_every_member_and_reports_the_one_it_cannot_enter(
    org: Organization, aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    for account in (ACCOUNT, org.team_a, org.team_b, org.no_role):
        org.settle_account_block(account)
    aws.bucket("hub-open")
    org.open_bucket(org.team_a, "team-a-open")
    locked = org.open_bucket(org.team_b, "team-b-locked")
    org.client(org.team_b, "s3").put_public_access_block(Bucket=locked, PublicAccessBlockConfiguration=ALL_ON)
    org.open_bucket(org.no_role, "team-c-open")
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    members = organization.member_accounts([org.unit])
    assert {(a.id, a.name) for a in members} == {
        (org.team_a, "team-a"),
        (org.team_b, "team-b"),
        (org.no_role, "team-c"),
    }
    summary = Summary(new_sweep_id())

    outcomes = list(
        run_organization_sweep(
            ["block_public_s3"], [REGION], [Account(ACCOUNT), *members], load_settings(), summary=summary
        )
    )

    by_resource = {(o.trigger.account, o.resource): o.outcome for o in outcomes}
    assert by_resource[(ACCOUNT, "arn:aws:s3:::hub-open")] is OutcomeKind.REMEDIATED
    assert by_resource[(org.team_a, "arn:aws:s3:::team-a-open")] is OutcomeKind.REMEDIATED
    assert by_resource[(org.team_b, "arn:aws:s3:::team-b-locked")] is OutcomeKind.COMPLIANT
    assert by_resource[(org.no_role, f"account {org.no_role}")] is OutcomeKind.FAILED
    assert aws.block_of("hub-open") == ALL_ON
    assert org.block_of(org.team_a, "team-a-open") == ALL_ON
    assert org.block_of(org.no_role, "team-c-open") is None
    assert summary.unreachable_accounts == [f"{org.no_role}: AccessDenied"]
    alerts = aws.alerts()
    unreachable = [a for a in alerts if a.outcome["check"] == "sweep"]
    assert len(unreachable) == 1
    assert org.no_role in unreachable[0].outcome["reason"]
    assert sorted(a.outcome["resource"] for a in alerts if a.outcome["check"] == "block_public_s3") == [
        "arn:aws:s3:::hub-open",
        "arn:aws:s3:::team-a-open",
    ]
    # One session per member account for the whole sweep, named for it.
    assert _sessions_in(org.team_a) == [f"mlwarden-{summary.sweep_id}"]


def test_accounts_of_nested_units_are_listed_once_with_their_unit(org: Organization) -> None:
    organizations = boto3.client("organizations", region_name=REGION)
    child = organizations.create_organizational_unit(ParentId=org.unit, Name="ml-prod")["OrganizationalUnit"]["Id"]
    status = organizations.create_account(Email="prod@example.com", AccountName="prod")["CreateAccountStatus"]
    root = organizations.list_roots()["Roots"][0]["Id"]
    organizations.move_account(AccountId=status["AccountId"], SourceParentId=root, DestinationParentId=child)

    listed = {a.id: a for a in organization.member_accounts([org.unit, child])}

    assert listed[status["AccountId"]].organizational_unit == f"ml-prod ({child})"
    assert len(listed) == 4  # the three members and the nested one, each once


def test_replay_of_a_member_accounts_event_acts_in_that_account_with_the_current_credentials(
    org: Organization, aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `mlwarden replay` takes MEMBER_ROLE_NAME from the template (MemberRoleName's default) and assumes the
    # member role with whatever credentials it runs with.
    monkeypatch.delenv("MEMBER_ROLE_NAME")
    for name, value in (
        ("ALERT_TOPIC_ARN", aws.topic_arn),
        ("OUTCOME_TABLE", aws.outcome_table),
        ("EXEMPTION_TABLE", aws.exemption_table),
    ):
        monkeypatch.setenv(name, value)
    bucket = org.open_bucket(org.team_b, "team-b-replayed")
    event = _member_event("DeleteBucketPublicAccessBlock", bucket, org.team_b)

    [replayed] = Replayer(load_template(ROOT / "template.yaml")).replay(event, "member-event.json")

    assert (replayed.function, replayed.outcome) == ("BlockPublicS3Function", "remediated")
    assert org.block_of(org.team_b, bucket) == ALL_ON
    assert len(_sessions_in(org.team_b)) == 1


def test_the_organization_sweep_refuses_to_run_without_a_member_role_name(
    org: Organization, aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Otherwise every member would be read with the hub's credentials: the hub's buckets reported as theirs.
    monkeypatch.delenv("MEMBER_ROLE_NAME")
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)

    with pytest.raises(SettingsError, match="MEMBER_ROLE_NAME"):
        list(run_organization_sweep(["block_public_s3"], [REGION], [Account(org.team_a)], load_settings()))


def test_a_members_buckets_are_swept_on_the_inventorys_threads_through_one_session(
    org: Organization, aws: AwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 sessions are not thread-safe: the threads share one member session and make its clients in turn.
    org.settle_account_block(org.team_a)
    buckets = [org.open_bucket(org.team_a, f"team-a-shard-{n:02d}") for n in range(24)]
    for name, value in (("ALERT_TOPIC_ARN", aws.topic_arn), ("REMEDIATION_MODE", "enforce")):
        monkeypatch.setenv(name, value)
    summary = Summary(new_sweep_id())

    list(run_organization_sweep(["block_public_s3"], [REGION], [Account(org.team_a)], load_settings(), summary=summary))

    assert [org.block_of(org.team_a, bucket) for bucket in buckets] == [ALL_ON] * len(buckets)
    assert summary.by_outcome["remediated"] == len(buckets)
    assert _sessions_in(org.team_a) == [f"mlwarden-{summary.sweep_id}"]
