"""The sweep grades every policy and principal as the event path does, alerting each admin policy once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto.iam.models import iam_backends

from mlwarden import checks, clients
from mlwarden.checks import flag_wildcard_iam as iam_check
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger
from mlwarden.sweep import evaluate_targets, list_targets, new_sweep_id, now_iso
from tests.conftest import ACCOUNT, REGION, AwsWorld
from tests.handlers.test_faults_every_handler import IAM_THROTTLED, Throttle, _body
from tests.handlers.test_flag_wildcard_iam import ADMIN, ADMINISTRATOR_ACCESS, S3_EVERYTHING, TIGHT, TRUST
from tests.sweep.support import assert_same_outcome, sweep, sweep_settings

UNIT = checks.load("flag_wildcard_iam")
TAG = "mlwarden:wildcard"


@pytest.fixture
def iam(aws: AwsWorld) -> Any:
    return boto3.client("iam", region_name="us-east-1")


def _sweep(monkeypatch: pytest.MonkeyPatch, aws: AwsWorld, mode: str = "enforce") -> dict[str | None, Outcome]:
    return {outcome.resource: outcome for outcome in sweep(UNIT, monkeypatch, aws, mode)}


def _role(iam: Any, name: str, inline: dict[str, Any] | None = None, attached: tuple[str, ...] = ()) -> str:
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
    if inline is not None:
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=json.dumps(inline))
    for arn in attached:
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def _policy(iam: Any, name: str, document: dict[str, Any]) -> str:
    arn: str = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    return arn


def _tag(response: dict[str, Any]) -> str | None:
    return {t["Key"]: t["Value"] for t in response["Tags"]}.get(TAG)


def test_an_admin_policy_is_alerted_once_and_its_holders_are_tagged_quietly(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an admin policy held by two roles and a user (through a group), a role with an inline s3:* policy
    # and a role with a tight one
    admin = _policy(iam, "mlw-admin", ADMIN)
    holders = [_role(iam, f"holder-{i}", attached=(admin,)) for i in (1, 2)]
    iam.create_group(GroupName="admins")
    iam.attach_group_policy(GroupName="admins", PolicyArn=admin)
    iam.create_user(UserName="alice")
    iam.add_user_to_group(GroupName="admins", UserName="alice")
    inline_s3 = _role(iam, "inline-s3", inline=S3_EVERYTHING)
    tight = _role(iam, "tight", inline=TIGHT)

    # When the sweep runs in enforce mode
    outcomes = _sweep(monkeypatch, aws)

    # Then every resource carries its flag, as the event path would set it
    assert outcomes[admin].outcome is OutcomeKind.FLAGGED
    assert outcomes[admin].severity is Severity.CRITICAL
    assert _tag(iam.list_policy_tags(PolicyArn=admin)) == "CRITICAL"
    for holder in holders:
        assert outcomes[holder].outcome is OutcomeKind.FLAGGED
        assert outcomes[holder].severity is Severity.CRITICAL
        assert outcomes[holder].alert_suppressed is not None
    for name in ("holder-1", "holder-2"):
        assert _tag(iam.list_role_tags(RoleName=name)) == "CRITICAL"
    assert _tag(iam.list_user_tags(UserName="alice")) == "CRITICAL"
    assert outcomes[inline_s3].outcome is OutcomeKind.FLAGGED
    assert _tag(iam.list_role_tags(RoleName="inline-s3")) == outcomes[inline_s3].severity.value
    assert outcomes[tight].outcome is OutcomeKind.COMPLIANT
    assert _tag(iam.list_role_tags(RoleName="tight")) is None
    # and the subscriber hears about the admin policy once and the inline policy once: not once per holder
    alerted = sorted(alert.outcome["resource"] for alert in aws.alerts())
    assert alerted == sorted([admin, inline_s3]), alerted


def test_the_policys_alert_names_the_holders_whose_alerts_it_stands_for(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _policy(iam, "mlw-admin", ADMIN)
    holders = sorted(_role(iam, f"holder-{i}", attached=(admin,)) for i in range(3))

    _sweep(monkeypatch, aws, mode="dry-run")

    alert = aws.only_alert()
    assert alert.outcome["resource"] == admin
    assert alert.outcome["details"]["held_by"] == holders
    assert alert.outcome["details"]["held_by_total"] == 3


def test_a_principal_that_gained_a_flagged_policy_unseen_is_alerted_on_its_own(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an admin policy already flagged by a sweep, with its first holder tagged
    admin = _policy(iam, "mlw-admin", ADMIN)
    _role(iam, "holder-1", attached=(admin,))
    _sweep(monkeypatch, aws)
    assert [alert.outcome["resource"] for alert in aws.alerts()] == [admin]
    # When a second role gets the policy and the AttachRolePolicy event never arrives
    newcomer = _role(iam, "holder-2", attached=(admin,))

    outcomes = _sweep(monkeypatch, aws)

    # Then the next sweep alerts the newcomer itself: the policy's own alert is not repeated
    assert outcomes[newcomer].alerted
    assert [alert.outcome["resource"] for alert in aws.alerts()] == [admin, newcomer]
    assert _tag(iam.list_role_tags(RoleName="holder-2")) == "CRITICAL"


def test_holders_of_an_exempt_policy_alert_at_their_own_grade(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exemption is for the policy (alerted LOW), not for whoever it is attached to (CRITICAL, as on events).
    admin = _policy(iam, "mlw-admin", ADMIN)
    holder = _role(iam, "holder", attached=(admin,))
    aws.grant_exemption(admin, check="flag_wildcard_iam")

    outcomes = _sweep(monkeypatch, aws)

    assert outcomes[admin].outcome is OutcomeKind.EXEMPT
    assert outcomes[holder].alert_suppressed is None
    severities = {alert.outcome["resource"]: alert.outcome["severity"] for alert in aws.alerts()}
    assert severities == {admin: "LOW", holder: "CRITICAL"}


def test_an_aws_managed_admin_policy_is_alerted_on_each_principal_it_is_attached_to(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto loads the AWS-managed policies it ships when its IAM backend is (re)built with this set
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    iam_backends[ACCOUNT]["global"].reset()
    first = _role(iam, "ops-1", attached=(ADMINISTRATOR_ACCESS,))
    second = _role(iam, "ops-2", attached=(ADMINISTRATOR_ACCESS,))

    outcomes = _sweep(monkeypatch, aws)

    assert ADMINISTRATOR_ACCESS not in outcomes  # not swept on its own: graded through its holders
    for role in (first, second):
        assert outcomes[role].outcome is OutcomeKind.FLAGGED
        assert outcomes[role].severity is Severity.CRITICAL
    assert sorted(alert.outcome["resource"] for alert in aws.alerts()) == [first, second]


def test_a_second_sweep_over_unchanged_policies_sends_nothing(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _policy(iam, "mlw-admin", ADMIN)
    _role(iam, "holder", attached=(admin,))
    _role(iam, "inline-admin", inline=ADMIN)
    first = _sweep(monkeypatch, aws, mode="dry-run")
    assert len(aws.alerts()) == 2

    second = _sweep(monkeypatch, aws, mode="dry-run")

    assert {r: o.outcome for r, o in second.items()} == {r: o.outcome for r, o in first.items()}
    assert len(aws.alerts()) == 2
    assert not any(outcome.alerted for outcome in second.values())


def _comparable(details: dict[str, Any]) -> Any:
    """The details both ways in share (what changed is the event's to say), with the resources' names made one."""
    shared = {
        k: v
        for k, v in details.items()
        if k not in ("changed", "policy_name", "document_source", "held_by", "held_by_total")
    }
    return json.loads(json.dumps(shared).replace("via-event", "via-sweep"))


@pytest.mark.parametrize(
    ("document", "expected"),
    [(ADMIN, OutcomeKind.FLAGGED), (S3_EVERYTHING, OutcomeKind.FLAGGED), (TIGHT, OutcomeKind.COMPLIANT)],
    ids=["admin", "s3-everything", "tight"],
)
def test_event_path_and_sweep_grade_a_role_the_same(
    aws: AwsWorld,
    iam: Any,
    make_handler: Callable[..., Any],
    cloudtrail_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    document: dict[str, Any],
    expected: OutcomeKind,
) -> None:
    _role(iam, "via-event", inline=document)
    via_sweep = _role(iam, "via-sweep", inline=document)
    parameters = {"roleName": "via-event", "policyName": "inline", "policyDocument": json.dumps(document)}
    event = cloudtrail_event("PutRolePolicy", request_parameters=parameters, event_source="iam.amazonaws.com")

    by_event = make_handler(app="flag_wildcard_iam")(event)
    clients.client.cache_clear()
    by_sweep = _sweep(monkeypatch, aws)[via_sweep]

    assert_same_outcome(by_event, by_sweep, expected)
    assert _comparable(by_event["details"]) == _comparable(by_sweep.details)
    assert _tag(iam.list_role_tags(RoleName="via-event")) == _tag(iam.list_role_tags(RoleName="via-sweep"))


@pytest.mark.parametrize(
    ("document", "expected"),
    [(ADMIN, OutcomeKind.FLAGGED), (TIGHT, OutcomeKind.COMPLIANT)],
    ids=["admin", "tight"],
)
def test_event_path_and_sweep_grade_a_policy_the_same(
    aws: AwsWorld,
    iam: Any,
    make_handler: Callable[..., Any],
    cloudtrail_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    document: dict[str, Any],
    expected: OutcomeKind,
) -> None:
    via_event = _policy(iam, "via-event", document)
    via_sweep = _policy(iam, "via-sweep", document)
    parameters = {"policyName": "via-event", "policyDocument": json.dumps(document)}
    event = cloudtrail_event("CreatePolicy", request_parameters=parameters, event_source="iam.amazonaws.com")

    by_event = make_handler(app="flag_wildcard_iam")(event)
    clients.client.cache_clear()
    by_sweep = _sweep(monkeypatch, aws)[via_sweep]

    assert by_event["resource"] == via_event
    assert_same_outcome(by_event, by_sweep, expected)
    assert _comparable(by_event["details"]) == _comparable(by_sweep.details)
    assert _tag(iam.list_policy_tags(PolicyArn=via_event)) == _tag(iam.list_policy_tags(PolicyArn=via_sweep))


@pytest.fixture
def iam_requests(aws: AwsWorld) -> Iterator[list[str]]:
    """The IAM operations ML Warden's client sends, in order."""
    sent: list[str] = []

    def note(request: Any, **_: Any) -> None:
        body = _body(request).decode()
        sent.append(next(p[len("Action=") :] for p in body.split("&") if p.startswith("Action=")))

    clients.client("iam").meta.events.register("before-send.iam", note)
    yield sent


def test_a_sweep_reads_the_account_in_one_call_and_each_policy_once(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch, iam_requests: list[str]
) -> None:
    # Given 5 clean policies and 5 roles holding clean inline and attached policies
    for i in range(5):
        arn = _policy(iam, f"clean-{i}", TIGHT)
        _role(iam, f"clean-{i}", inline=TIGHT, attached=(arn,))

    outcomes = _sweep(monkeypatch, aws, mode="dry-run")

    assert len(outcomes) == 10
    assert all(o.outcome is OutcomeKind.COMPLIANT for o in outcomes.values())
    # one listing call; a clean policy costs its tag read (a stale flag is removed); a clean role costs nothing
    assert iam_requests.count("GetAccountAuthorizationDetails") == 1
    assert iam_requests.count("ListPolicyTags") == 5
    assert len(iam_requests) == 6, iam_requests


def test_throttling_while_listing_is_retried(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch, iam_requests: list[str]
) -> None:
    inline_admin = _role(iam, "inline-admin", inline=ADMIN)
    throttle = Throttle(
        "iam",
        lambda request: b"Action=GetAccountAuthorizationDetails" in _body(request),
        400,
        "text/xml",
        IAM_THROTTLED,
    )
    throttle.install()

    outcomes = _sweep(monkeypatch, aws)

    assert throttle.throttled, "the listing was not throttled"
    assert outcomes[inline_admin].outcome is OutcomeKind.FLAGGED
    assert _tag(iam.list_role_tags(RoleName="inline-admin")) == "CRITICAL"


def test_a_principal_or_policy_deleted_between_listing_and_evaluation_is_ignored(
    aws: AwsWorld, iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _policy(iam, "short-lived", ADMIN)
    role = _role(iam, "short-lived", inline=ADMIN)
    settings = sweep_settings(monkeypatch, aws, "dry-run")
    inventory = Inventory(ACCOUNT, REGION)
    targets = list_targets(UNIT, inventory)
    iam.delete_policy(PolicyArn=admin)
    iam.delete_role_policy(RoleName="short-lived", PolicyName="inline")
    iam.delete_role(RoleName="short-lived")

    trigger = Trigger.sweep(new_sweep_id(), ACCOUNT, REGION, now_iso())
    outcomes = {o.resource: o for o in evaluate_targets(UNIT, targets, inventory, settings=settings, trigger=trigger)}

    assert outcomes[admin].outcome is OutcomeKind.IGNORED
    assert outcomes[role].outcome is OutcomeKind.IGNORED
    assert aws.alerts() == []


# --- pagination: moto answers GetAccountAuthorizationDetails in one page, so botocore's Stubber pages it ----

FILTER = ["User", "Role", "Group", "LocalManagedPolicy"]


def _role_detail(name: str) -> dict[str, Any]:
    return {
        "RoleName": name,
        "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "RolePolicyList": [{"PolicyName": "inline", "PolicyDocument": json.dumps(TIGHT)}],
        "AttachedManagedPolicies": [],
        "Tags": [],
    }


def _policy_detail(name: str) -> dict[str, Any]:
    return {
        "PolicyName": name,
        "Arn": f"arn:aws:iam::{ACCOUNT}:policy/{name}",
        "DefaultVersionId": "v2",
        "PolicyVersionList": [
            {"VersionId": "v1", "IsDefaultVersion": False, "Document": json.dumps(ADMIN)},
            {"VersionId": "v2", "IsDefaultVersion": True, "Document": json.dumps(TIGHT)},
        ],
    }


def test_the_listing_reads_every_page(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iam_check, "AUTHORIZATION_PAGE", 2)
    with Stubber(clients.client("iam")) as stub:
        stub.add_response(
            "get_account_authorization_details",
            {"RoleDetailList": [_role_detail("a"), _role_detail("b")], "IsTruncated": True, "Marker": "page-2"},
            expected_params={"Filter": FILTER, "MaxItems": 2},
        )
        stub.add_response(
            "get_account_authorization_details",
            {"RoleDetailList": [_role_detail("c")], "Policies": [_policy_detail("p")], "IsTruncated": False},
            expected_params={"Filter": FILTER, "MaxItems": 2, "Marker": "page-2"},
        )

        targets = list_targets(UNIT, Inventory(ACCOUNT, REGION))

        stub.assert_no_pending_responses()
    assert sorted(UNIT.resource_of(t) for t in targets) == [
        f"arn:aws:iam::{ACCOUNT}:policy/p",
        *(f"arn:aws:iam::{ACCOUNT}:role/{name}" for name in "abc"),
    ]
    policy = next(t for t in targets if isinstance(t, iam_check.ManagedPolicyTarget))
    assert policy.listed is not None
    listed = policy.listed.documents[policy.policy_arn]
    assert (listed.version_id, listed.document) == ("v2", TIGHT)  # the default version, not the admin v1


def test_the_iam_inventory_lists_in_the_first_region_only(aws: AwsWorld) -> None:
    assert list_targets(UNIT, Inventory(ACCOUNT, "eu-west-1", first_region=False)) == []


def test_a_target_survives_its_key(aws: AwsWorld) -> None:
    role = iam_check.PrincipalTarget(iam_check.Principal("role", "r"), changed=iam_check.SWEPT, report_grade=True)
    policy = iam_check.ManagedPolicyTarget(f"arn:aws:iam::{ACCOUNT}:policy/p")
    for target in (role, policy):
        assert UNIT.target_of_key(json.loads(json.dumps(UNIT.key_of(target)))) == target
