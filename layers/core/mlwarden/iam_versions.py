"""Which versions of a managed policy were ever its default: the only versions a revert may restore.

IAM keeps no history of defaults: `ListPolicyVersions` gives each version's CreateDate and whether it is the
default now, and a `SetDefaultPolicyVersion` event does not say which version it replaced. A version created
with `setAsDefault=false` and never made default ("staged") was never chosen by anyone, so restoring it could
put in force what nobody ever ran. Two facts are sound:

- `v1` was the default: `CreatePolicy` always creates v1 as the default version (version ids are never reused).
- every version this check has read as the live default was the default then. It records them in the outcome
  table under `flag_wildcard_iam#default#<policy arn>` (a string set, grown with DynamoDB's ADD, so
  concurrent writers merge instead of overwriting). Only this check's role writes items under its name.

Without an outcome table only v1 is known, which is conservative: fewer reverts, never a staged version.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.observability import logger

CHECK = "flag_wildcard_iam"
FIRST_VERSION = "v1"  # CreatePolicy's version: the policy's first default


def record_key(policy_arn: str) -> str:
    return f"{CHECK}#default#{policy_arn}"


def remember_default(table: str | None, policy_arn: str, version_id: str) -> str | None:
    """Add `version_id` to the policy's known defaults; returns a note when it could not be recorded.

    Losing this record only makes a later revert more cautious (fewer known defaults), so a DynamoDB failure is
    a note in the outcome, not a failed check.
    """
    if table is None:
        return "no outcome table: only v1 is known to have been a default"
    try:
        clients.client("dynamodb").update_item(
            TableName=table,
            Key={"id": {"S": record_key(policy_arn)}},
            UpdateExpression="ADD versions :seen",
            ExpressionAttributeValues={":seen": {"SS": [version_id]}},
        )
    except (ClientError, BotoCoreError) as err:
        logger.warning("default version not recorded", policy=policy_arn, error=type(err).__name__)
        return f"the default version could not be recorded ({type(err).__name__})"
    return None


def known_defaults(table: str | None, policy_arn: str) -> frozenset[str]:
    """Version ids known to have been the policy's default (v1 always); unreadable record: v1 only."""
    known = {FIRST_VERSION}
    if table is None:
        return frozenset(known)
    try:
        item = clients.client("dynamodb").get_item(
            TableName=table, Key={"id": {"S": record_key(policy_arn)}}, ConsistentRead=True
        )
    except (ClientError, BotoCoreError) as err:
        logger.warning("default versions not readable", policy=policy_arn, error=type(err).__name__)
        return frozenset(known)
    versions = item.get("Item", {}).get("versions", {}).get("SS", [])
    known.update(v for v in versions if isinstance(v, str))
    return frozenset(known)


def version_number(version_id: str) -> int:
    """`v12` -> 12: IAM numbers versions in creation order; anything else sorts first."""
    digits = version_id[1:] if version_id.startswith("v") else ""
    return int(digits) if digits.isdigit() and len(digits) < 10 else -1
