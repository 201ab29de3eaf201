"""Recognise the CloudTrail events that ML Warden's own fixes produce, in the home account and every member."""

from __future__ import annotations

from mlwarden.events import ApiCall


def _role_name(role_arn: str) -> str:
    # arn:aws:iam::123456789012:role/path/Name -> Name (assumed-role ARNs drop the path)
    return role_arn.rsplit("/", 1)[-1]


def _account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def is_own_change(call: ApiCall, remediator_role_arn: str | None, member_role_name: str | None = None) -> bool:
    """True when the call was made by a session of the remediator's own role, or of the member role.

    In a member account ML Warden acts as that account's member role (MEMBER_ROLE_NAME, created by
    member.yaml without a path), so a call by a session of `arn:...:iam::<the event's account>:role/<name>`
    is ML Warden's own too. The pipeline treats "own" as a claim to check, not a pass: a member admin who
    makes their own role of that name only gets their changes fixed and alerted as CRITICAL.
    """
    return _is_session_of(call, remediator_role_arn) or (
        member_role_name is not None
        and call.recipient_account is not None
        and _is_session_of(call, f"arn:{_partition(call)}:iam::{call.recipient_account}:role/{member_role_name}")
    )


def _partition(call: ApiCall) -> str:
    arn = call.actor.role_arn or call.actor.arn or ""
    parts = arn.split(":")
    return parts[1] if len(parts) > 5 and parts[1] else "aws"


def _is_session_of(call: ApiCall, role_arn: str | None) -> bool:
    if not role_arn:
        return False
    actor = call.actor
    if actor.role_arn is not None:
        return actor.role_arn == role_arn
    # Some records carry only the session ARN: arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION
    if actor.arn and ":assumed-role/" in actor.arn:
        session_role = actor.arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        return session_role == _role_name(role_arn) and _account(actor.arn) == _account(role_arn)
    return False
