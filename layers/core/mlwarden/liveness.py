"""The liveness canary's record and expectation: did a canary change made here come back as an event?

Every few minutes (EventBridge Scheduler) watch_inputs makes a harmless change to a resource the stack
owns (it writes the time into its canary SSM parameter; in us-east-1 it also updates the description of
its canary IAM role) and notes when it did. CloudTrail records the call, EventBridge delivers it to
watch_inputs, which notes its arrival. Arrivals are counted as metrics (`CanaryArrived`,
`IamCanaryArrived`): a CloudWatch alarm fires when none arrived within the window, whatever broke on the
way (the trail, the rule, the function, the schedule). The canary itself also compares the two notes
(`overdue`) on every run and says so in its log and a metric.

Both notes live in one outcome-table item per region, `watch_inputs#liveness#<region>`; the times are
ISO 8601 UTC strings, so DynamoDB compares them in time order. Times are passed in: tests own the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed, error_code

OWNER = "watch_inputs"
# The Scheduler's input that makes an invocation a canary tick (template.yaml, LivenessCanary schedule).
TICK_KEY = "mlwarden"
TICK_VALUE = "liveness-canary"
PATHS = ("ssm", "iam")
SOURCE = "mlwarden.liveness"
PERMISSIONS = frozenset({"dynamodb:GetItem", "dynamodb:UpdateItem"})


def now() -> datetime:
    """The current time: the one clock the canary and the watcher read (tests replace it)."""
    return datetime.now(UTC)


def is_tick(raw_event: Any) -> bool:
    """The scheduled invocation that makes the canary change (not an EventBridge event)."""
    return isinstance(raw_event, Mapping) and raw_event.get(TICK_KEY) == TICK_VALUE


def item_id(region: str) -> str:
    return f"{OWNER}#liveness#{region}"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """What the canary and the watcher noted for one region."""

    first_sent: datetime | None = None
    last_sent: datetime | None = None
    # Per path (ssm, iam): when the latest canary event arrived, and how long it took from the call.
    last_arrival: Mapping[str, datetime] | None = None
    last_delay_seconds: Mapping[str, float] | None = None

    def arrival(self, path: str) -> datetime | None:
        return (self.last_arrival or {}).get(path)


def overdue(record: Record, path: str, now: datetime, window: timedelta) -> str | None:
    """Why the canary's events on `path` are overdue, or None while they arrive (or the canary is new).

    Overdue: the canary has been sending for at least `window`, and no event arrived within the last
    `window`. A time in the future counts as absent: it cannot be a real arrival.
    """
    if record.first_sent is None or now - record.first_sent < window:
        return None
    arrived = record.arrival(path)
    if arrived is not None and arrived > now:
        arrived = None
    if arrived is not None and now - arrived < window:
        return None
    since = f"since {stamp(arrived)}" if arrived is not None else "ever"
    return (
        f"no {path} canary event arrived {since}: the canary has been changing its resource since "
        f"{stamp(record.first_sent)} (latest {stamp(record.last_sent or record.first_sent)}), and nothing came "
        f"back within {int(window.total_seconds() // 60)} minutes. CloudTrail, the EventBridge rule or the "
        "function is not working in this region"
    )


def read(table: str, region: str) -> Record:
    """The region's record; an empty one when there is none. AwsCallFailed when it cannot be read."""
    try:
        item = clients.client("dynamodb").get_item(
            TableName=table, Key={"id": {"S": item_id(region)}}, ConsistentRead=True
        )
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("dynamodb:GetItem", err) from err
    found = item.get("Item") or {}
    arrivals = {path: parse_stamp(found.get(f"arrived_{path}", {}).get("S")) for path in PATHS}
    delays = {path: found.get(f"delay_{path}", {}).get("N") for path in PATHS}
    return Record(
        first_sent=parse_stamp(found.get("first_sent", {}).get("S")),
        last_sent=parse_stamp(found.get("last_sent", {}).get("S")),
        last_arrival={path: moment for path, moment in arrivals.items() if moment is not None},
        last_delay_seconds={path: float(delay) for path, delay in delays.items() if delay is not None},
    )


def note_sent(table: str, region: str, now: datetime) -> None:
    """The canary changed its resource at `now` (first_sent is kept from the first time)."""
    _update(
        table,
        region,
        "SET last_sent = :now, first_sent = if_not_exists(first_sent, :now)",
        {":now": {"S": stamp(now)}},
        None,
    )


def note_arrival(table: str, region: str, path: str, called_at: datetime | None, now: datetime) -> float | None:
    """A canary event arrived at `now`; returns the delay from the call in seconds (None if unknown).

    Concurrent or late deliveries only move the arrival forward (a conditional update keeps the latest).
    """
    if path not in PATHS:
        raise ValueError(f"unknown canary path {path!r}")
    delay = None if called_at is None else max(0.0, (now - called_at).total_seconds())
    values: dict[str, Any] = {":now": {"S": stamp(now)}}
    expression = f"SET arrived_{path} = :now"
    if delay is not None:
        expression += f", delay_{path} = :delay"
        values[":delay"] = {"N": str(round(delay, 3))}
    _update(table, region, expression, values, f"attribute_not_exists(arrived_{path}) OR arrived_{path} < :now")
    return delay


def _update(table: str, region: str, expression: str, values: dict[str, Any], condition: str | None) -> None:
    arguments: dict[str, Any] = {
        "TableName": table,
        "Key": {"id": {"S": item_id(region)}},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": values,
    }
    if condition is not None:
        arguments["ConditionExpression"] = condition
    try:
        clients.client("dynamodb").update_item(**arguments)
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return  # a later arrival is already noted
        raise AwsCallFailed.from_error("dynamodb:UpdateItem", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("dynamodb:UpdateItem", err) from err
