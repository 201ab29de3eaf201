"""A principal's `mlwarden:wildcard` flag converges when events for it are handled at the same time.

Real threads against moto server: each thread changes one of the role's policies and then runs the check for
its own event, as concurrent Lambda invocations would. Whatever the interleaving, the flag must end equal to
the grade of what the role holds, and no outcome may be `failed`.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlwarden import clients
from mlwarden.checks import flag_wildcard_iam as iam
from mlwarden.events import parse_event
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.settings import RemediationMode, Settings
from mlwarden_cli.emulator import FAKE_CREDENTIALS, moto_server

pytestmark = pytest.mark.integration

ROLE = "mlw-shared-training"
TAG = iam.WILDCARD_TAG
SETTINGS = Settings(
    alert_topic_arn="arn:aws:sns:us-east-1:123456789012:unused",
    remediation_mode=RemediationMode.ENFORCE,
    exempt_tag_key="mlwarden:exempt",
    remediator_role_arn=None,
)
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


def _document(index: int) -> dict[str, Any]:
    """Policy `index`: one full admin (CRITICAL), the rest s3:* (HIGH) or scoped reads (no flag)."""
    if index == 0:
        statement = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    elif index % 2:
        statement = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    else:
        statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::bucket-{index}/*"}
    return {"Version": "2012-10-17", "Statement": [statement]}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def iam_client(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)
    for name, value in {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    clients.client.cache_clear()
    client = clients.client("iam")  # built once: the threads share it, as one Lambda process would
    client.create_role(RoleName=ROLE, AssumeRolePolicyDocument=TRUST, Tags=[{"Key": "team", "Value": "ml"}])
    yield client
    clients.client.cache_clear()


def _in_parallel(count: int, work: Callable[[int], Outcome]) -> list[Outcome]:
    """Run work(0..count-1) on `count` threads released together; re-raise the first error."""
    start = threading.Barrier(count)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        start.wait()
        try:
            outcomes.append(work(index))
        except BaseException as err:  # handed to the main thread, which re-raises it
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    assert len(outcomes) == count
    return outcomes


def _check(cloudtrail_event: Callable[..., dict[str, Any]], event_name: str, parameters: dict[str, Any]) -> Outcome:
    event = cloudtrail_event(event_name, request_parameters=parameters, event_source="iam.amazonaws.com")
    return iam.flag_wildcard_policy(parse_event(event), SETTINGS)


def _flag(client: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.list_role_tags(RoleName=ROLE)["Tags"]}


@pytest.mark.parametrize("count", [12, 50])
def test_concurrent_policy_changes_for_one_role_converge_on_its_grade(
    iam_client: Any, cloudtrail_event: Callable[..., dict[str, Any]], count: int
) -> None:
    # When `count` policies are put on one role at once, each followed by the check for its own event
    def put(index: int) -> Outcome:
        document = json.dumps(_document(index))
        iam_client.put_role_policy(RoleName=ROLE, PolicyName=f"p{index}", PolicyDocument=document)
        parameters = {"roleName": ROLE, "policyName": f"p{index}", "policyDocument": document}
        return _check(cloudtrail_event, "PutRolePolicy", parameters)

    added = _in_parallel(count, put)

    # Then the flag is the highest of all (CRITICAL), other tags kept, and nothing failed
    assert _flag(iam_client) == {"team": "ml", TAG: "CRITICAL"}
    assert not [o.reason for o in added if o.outcome is OutcomeKind.FAILED]

    # When all of them are deleted at once, each followed by the check for its DeleteRolePolicy event
    def delete(index: int) -> Outcome:
        iam_client.delete_role_policy(RoleName=ROLE, PolicyName=f"p{index}")
        return _check(cloudtrail_event, "DeleteRolePolicy", {"roleName": ROLE, "policyName": f"p{index}"})

    removed = _in_parallel(count, delete)

    # Then the flag is gone (the role holds nothing), the other tags stay, and nothing failed
    assert _flag(iam_client) == {"team": "ml"}
    assert not [o.reason for o in removed if o.outcome is OutcomeKind.FAILED]


def test_concurrent_adds_and_removals_end_at_the_grade_of_what_is_left(
    iam_client: Any, cloudtrail_event: Callable[..., dict[str, Any]]
) -> None:
    # Given the admin policy and eleven others, of which the admin one and the s3:* ones are then removed
    for index in range(12):
        iam_client.put_role_policy(RoleName=ROLE, PolicyName=f"p{index}", PolicyDocument=json.dumps(_document(index)))
    iam_client.tag_role(RoleName=ROLE, Tags=[{"Key": TAG, "Value": "CRITICAL"}])

    def change(index: int) -> Outcome:
        if index == 0 or index % 2:
            iam_client.delete_role_policy(RoleName=ROLE, PolicyName=f"p{index}")
            return _check(cloudtrail_event, "DeleteRolePolicy", {"roleName": ROLE, "policyName": f"p{index}"})
        document = json.dumps(_document(index))
        parameters = {"roleName": ROLE, "policyName": f"p{index}", "policyDocument": document}
        return _check(cloudtrail_event, "PutRolePolicy", parameters)

    outcomes = _in_parallel(12, change)

    # Then only scoped reads are left: no flag
    assert _flag(iam_client) == {"team": "ml"}
    assert not [o.reason for o in outcomes if o.outcome is OutcomeKind.FAILED]
