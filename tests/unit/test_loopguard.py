"""The loop guard recognises CloudTrail events made by ML Warden's own role, and only those."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mlwarden.events import ApiCall, parse_event
from mlwarden.loopguard import is_own_change

ROLE = "arn:aws:iam::123456789012:role/BlockPublicS3Role"
ROLE_WITH_PATH = "arn:aws:iam::123456789012:role/service-role/mlwarden/BlockPublicS3Role"


def assumed_role(session_arn: str | None, issuer_arn: str | None) -> dict[str, Any]:
    identity: dict[str, Any] = {"type": "AssumedRole", "accountId": "123456789012"}
    if session_arn:
        identity["arn"] = session_arn
    if issuer_arn:
        identity["sessionContext"] = {"sessionIssuer": {"type": "Role", "arn": issuer_arn}}
    return identity


def call(cloudtrail_event: Callable[..., dict[str, Any]], identity: dict[str, Any]) -> ApiCall:
    event = parse_event(cloudtrail_event("PutPublicAccessBlock", "bucket-a", user_identity=identity))
    assert isinstance(event, ApiCall)
    return event


@pytest.mark.parametrize(
    ("identity", "remediator", "own"),
    [
        pytest.param(
            assumed_role("arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/fn-session", ROLE),
            ROLE,
            True,
            id="issuer-arn-matches",
        ),
        pytest.param(
            assumed_role("arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/fn-session", ROLE_WITH_PATH),
            ROLE_WITH_PATH,
            True,
            id="role-with-path-issuer-matches",
        ),
        pytest.param(
            assumed_role("arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/fn-session", None),
            ROLE,
            True,
            id="session-arn-only",
        ),
        pytest.param(
            assumed_role("arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/fn-session", None),
            ROLE_WITH_PATH,
            True,
            id="session-arn-only-role-with-path",  # assumed-role ARNs drop the path
        ),
        pytest.param(
            assumed_role(
                "arn:aws:sts::123456789012:assumed-role/DataScientist/alice",
                "arn:aws:iam::123456789012:role/DataScientist",
            ),
            ROLE,
            False,
            id="other-role",
        ),
        pytest.param(
            assumed_role("arn:aws:sts::123456789012:assumed-role/BlockPublicS3RoleX/s", None),
            ROLE,
            False,
            id="session-of-a-role-with-a-longer-name",
        ),
        pytest.param(
            assumed_role("arn:aws:sts::210987654321:assumed-role/BlockPublicS3Role/fn-session", None),
            ROLE,
            False,
            id="same-role-name-other-account",
        ),
        pytest.param(
            assumed_role(
                "arn:aws:sts::210987654321:assumed-role/BlockPublicS3Role/fn-session",
                "arn:aws:iam::210987654321:role/BlockPublicS3Role",
            ),
            ROLE,
            False,
            id="same-role-name-other-account-issuer",
        ),
        pytest.param(
            assumed_role(
                "arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/fn-session",
                "arn:aws:iam::123456789012:role/Other",
            ),
            ROLE,
            False,
            id="issuer-wins-over-session-name",
        ),
        pytest.param(
            {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/BlockPublicS3Role"},
            ROLE,
            False,
            id="user-with-the-role-name",
        ),
        pytest.param({"type": "Root", "arn": "arn:aws:iam::123456789012:root"}, ROLE, False, id="root"),
        pytest.param({}, ROLE, False, id="no-identity"),
        pytest.param(
            assumed_role("arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/fn-session", ROLE),
            None,
            False,
            id="no-remediator-configured",
        ),
    ],
)
def test_own_change_is_recognised(
    cloudtrail_event: Callable[..., dict[str, Any]], identity: dict[str, Any], remediator: str | None, own: bool
) -> None:
    assert is_own_change(call(cloudtrail_event, identity), remediator) is own
