"""Recognise the CloudTrail events that ML Warden's own fixes produce."""

from __future__ import annotations

from mlwarden.events import ApiCall


def _role_name(role_arn: str) -> str:
    # arn:aws:iam::123456789012:role/path/Name -> Name (assumed-role ARNs drop the path)
    return role_arn.rsplit("/", 1)[-1]


def _account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 else ""


def is_own_change(call: ApiCall, remediator_role_arn: str | None) -> bool:
    """True when the call was made by a session of the remediator's own role."""
    if not remediator_role_arn:
        return False
    actor = call.actor
    if actor.role_arn is not None:
        return actor.role_arn == remediator_role_arn
    # Some records carry only the session ARN: arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION
    if actor.arn and ":assumed-role/" in actor.arn:
        session_role = actor.arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        return session_role == _role_name(remediator_role_arn) and _account(actor.arn) == _account(remediator_role_arn)
    return False
