"""Never flap with a human: a resource fixed more than N times within an hour is left alone for an hour.

When someone keeps re-opening what ML Warden keeps closing, fixing it again and again only floods the
security team and fights a person who may have a reason. The fix that crosses the threshold is the
last one: the resource stays as ML Warden set it, one CRITICAL alert says someone keeps re-opening it,
and further re-openings within the hour are recorded (log line and metric) but neither changed nor
alerted. After the hour, normal remediation resumes.

The counts live in the outcome table, one item per (check, resource): `flap#<check>#<resource>`, with
the times of recent fixes, the end of a hold, and the table's TTL attribute. When the table is
unreadable the guard fails open: fixing beats not flapping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import error_code
from mlwarden.observability import logger, metrics
from mlwarden.settings import Settings

WINDOW_SECONDS = 3600
# The DynamoDB item actions the guard calls (the outcome store adds its own).
PERMISSIONS = frozenset({"dynamodb:GetItem", "dynamodb:UpdateItem"})


@dataclass(frozen=True)
class FixCount:
    """How often a resource was fixed in the window, and whether this fix starts a hold."""

    fixes_in_window: int
    # True for the one fix that crossed the threshold: it starts the hold and carries the CRITICAL alert.
    hold_started: bool
    hold_until: int | None


def _key(check: str, resource: str) -> dict[str, dict[str, str]]:
    return {"id": {"S": f"flap#{check}#{resource}"}}


def held_until(settings: Settings, check: str, resource: str, now: float | None = None) -> int | None:
    """The end of a hold on this resource (epoch seconds), or None when ML Warden may change it."""
    if settings.outcome_table is None:
        return None
    current = int(now if now is not None else time.time())
    try:
        item = (
            clients.client("dynamodb")
            .get_item(TableName=settings.outcome_table, Key=_key(check, resource), ConsistentRead=True)
            .get("Item", {})
        )
    except (ClientError, BotoCoreError) as err:
        _unavailable(check, err)
        return None
    until = int(item.get("hold_until", {}).get("N", "0"))
    return until if until > current else None


def count_fix(settings: Settings, check: str, resource: str, now: float | None = None) -> FixCount | None:
    """Count a fix ML Warden just made; start the hold when it is one too many. None when not counted."""
    if settings.outcome_table is None:
        return None
    current = int(now if now is not None else time.time())
    dynamodb = clients.client("dynamodb")
    try:
        item = dynamodb.update_item(
            TableName=settings.outcome_table,
            Key=_key(check, resource),
            UpdateExpression="SET fixes = list_append(if_not_exists(fixes, :none), :now), expiration = :expires",
            ExpressionAttributeValues={
                ":none": {"L": []},
                ":now": {"L": [{"N": str(current)}]},
                ":expires": {"N": str(current + 2 * WINDOW_SECONDS)},
            },
            ReturnValues="ALL_NEW",
        )["Attributes"]
    except (ClientError, BotoCoreError) as err:
        _unavailable(check, err)
        return None
    recent = [int(t["N"]) for t in item.get("fixes", {}).get("L", []) if int(t["N"]) > current - WINDOW_SECONDS]
    if len(recent) <= settings.flap_threshold:
        return FixCount(len(recent), hold_started=False, hold_until=None)
    until = current + WINDOW_SECONDS
    try:
        # Conditional, so that of two concurrent fixes only one starts the hold and alerts.
        dynamodb.update_item(
            TableName=settings.outcome_table,
            Key=_key(check, resource),
            UpdateExpression="SET hold_until = :until, fixes = :recent, expiration = :expires",
            ConditionExpression="attribute_not_exists(hold_until) OR hold_until < :now",
            ExpressionAttributeValues={
                ":until": {"N": str(until)},
                ":recent": {"L": [{"N": str(t)} for t in recent]},
                ":expires": {"N": str(until + WINDOW_SECONDS)},
                ":now": {"N": str(current)},
            },
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return FixCount(len(recent), hold_started=False, hold_until=until)
        _unavailable(check, err)
        return FixCount(len(recent), hold_started=False, hold_until=None)
    except BotoCoreError as err:
        _unavailable(check, err)
        return FixCount(len(recent), hold_started=False, hold_until=None)
    metrics.add_metric(name="FlapHoldStarted", unit=MetricUnit.Count, value=1)
    return FixCount(len(recent), hold_started=True, hold_until=until)


def _unavailable(check: str, err: ClientError | BotoCoreError) -> None:
    logger.warning(
        "fix counter unavailable, remediating without the flap guard",
        check=check,
        error=error_code(err) if isinstance(err, ClientError) else type(err).__name__,
    )
    metrics.add_metric(name="FlapGuardUnavailable", unit=MetricUnit.Count, value=1)
