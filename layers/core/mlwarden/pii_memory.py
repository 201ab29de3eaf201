"""What Macie found in a bucket, remembered in state ML Warden owns, so that removing a tag forgets nothing.

The `mlwarden:pii*` tags live on the bucket, where anyone with `s3:PutBucketTagging` can remove them
and quietly lower every later grading (public PII bucket CRITICAL -> HIGH, SageMaker job HIGH -> LOW).
So tag_pii_bucket also keeps one item per bucket in the outcome table, `tag_pii_bucket#pii#<bucket arn>`
(item ids start with the owning check's name, so a role can be limited to its own items with
`dynamodb:LeadingKeys`). tag_pii_bucket alone writes it; block_public_s3 and check_sagemaker_encryption
only read it (GetItem).

The item holds the union of detection types and the set of Macie severities seen, both grown with one
atomic `ADD` (sets): concurrent findings for one bucket cannot lose each other's types, whatever the order,
and the full set survives where the 256-character tag value has to cut it. It has no `expiration`
attribute, so the table's TTL never removes it: PII does not leave a bucket by itself, and a classification
that expired would be the same silent downgrade as a removed tag. A person who has cleaned a bucket
deletes the item (`aws dynamodb delete-item`), which only the security team's principals can do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.observability import logger, metrics
from mlwarden.settings import Settings

OWNER = "tag_pii_bucket"
MACIE_SEVERITIES = ("Low", "Medium", "High")  # ascending
# tag_pii_bucket writes the item; the checks that grade with it only read it.
WRITE_PERMISSIONS = frozenset({"dynamodb:UpdateItem"})
READ_PERMISSIONS = frozenset({"dynamodb:GetItem"})


def item_id(bucket_arn: str) -> str:
    return f"{OWNER}#pii#{bucket_arn}"


@dataclass(frozen=True)
class RememberedPii:
    types: frozenset[str]
    severity: str | None  # the highest Macie severity seen: Low | Medium | High
    first_found: str | None  # when ML Warden first recorded PII in the bucket (UTC)
    # The types recorded before the update that returned this (what a finding added is types - known_before).
    known_before: frozenset[str] = frozenset()
    # The latest finding recorded (a maximum by time, then id): concurrent findings agree on the last seen.
    latest_seen: str | None = None
    latest_finding: str | None = None


def _of(item: dict[str, Any]) -> RememberedPii:
    types = frozenset(str(t) for t in item.get("types", {}).get("SS", []) if t != "-")
    seen = [str(s) for s in item.get("severities", {}).get("SS", []) if s in MACIE_SEVERITIES]
    first = item.get("first_found", {}).get("S")
    latest_seen, latest_finding = item.get("latest_seen", {}).get("S"), item.get("latest_finding", {}).get("S")
    return RememberedPii(
        types=types,
        severity=max(seen, key=MACIE_SEVERITIES.index) if seen else None,
        first_found=str(first) if first is not None else None,
        latest_seen=str(latest_seen) if latest_seen is not None else None,
        latest_finding=str(latest_finding) if latest_finding is not None else None,
    )


def remember(
    settings: Settings,
    bucket_arn: str,
    types: Iterable[str],
    severity: str | None,
    now: str,
    *,
    latest: tuple[str, str] | None = None,
) -> RememberedPii | None:
    """Add a finding's types, severity and (seen at, id) to the bucket's record; the record after the update
    (as far as this update knows: a concurrent one may have added more).

    None without an outcome table. A failed update raises AwsCallFailed.
    """
    if settings.outcome_table is None:
        return None
    dynamodb = clients.client("dynamodb")
    key = {"id": {"S": item_id(bucket_arn)}}
    # DynamoDB sets cannot be empty; "-" stands for "no type or severity in this finding" and is never read.
    values: dict[str, Any] = {
        ":types": {"SS": sorted(set(types)) or ["-"]},
        ":severities": {"SS": [severity] if severity in MACIE_SEVERITIES else ["-"]},
        ":now": {"S": now},
        ":bucket": {"S": bucket_arn},
    }
    try:
        response = dynamodb.update_item(
            TableName=settings.outcome_table,
            Key=key,
            UpdateExpression=(
                "ADD types :types, severities :severities "
                "SET first_found = if_not_exists(first_found, :now), updated_at = :now, bucket_arn = :bucket"
            ),
            ExpressionAttributeValues=values,
            ReturnValues="ALL_OLD",  # what was known before this finding; the union is computed here
        )
        before = _of(response.get("Attributes", {}))
        newest = (before.latest_seen, before.latest_finding)
        if latest is not None and (
            before.latest_seen is None or latest > (before.latest_seen, before.latest_finding or "")
        ):
            newest = latest
            _record_latest(dynamodb, settings.outcome_table, key, latest)
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("dynamodb:UpdateItem", err) from err
    seen = [s for s in (before.severity, severity) if s in MACIE_SEVERITIES]
    return RememberedPii(
        types=before.types | set(types),
        severity=max(seen, key=MACIE_SEVERITIES.index) if seen else None,
        first_found=before.first_found or now,
        known_before=before.types,
        latest_seen=newest[0],
        latest_finding=newest[1],
    )


def _record_latest(dynamodb: Any, table: str, key: dict[str, Any], latest: tuple[str, str]) -> None:
    """Set the latest finding only if it is later (a maximum: a condition, since DynamoDB has no MAX)."""
    try:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET latest_seen = :seen, latest_finding = :finding",
            ConditionExpression=(
                "attribute_not_exists(latest_seen) OR latest_seen < :seen "
                "OR (latest_seen = :seen AND latest_finding < :finding)"
            ),
            ExpressionAttributeValues={":seen": {"S": latest[0]}, ":finding": {"S": latest[1]}},
        )
    except ClientError as err:
        if error_code(err) != "ConditionalCheckFailedException":  # a later finding is recorded already
            raise


@dataclass(frozen=True)
class Recall:
    """The remembered classification as a reader sees it."""

    record: RememberedPii | None
    # Why the record could not be read (the table is down, say); the caller grades on the tags alone.
    unreadable: str | None = None


def recall(settings: Settings, bucket_arn: str, check: str) -> Recall:
    """The bucket's remembered classification; never raises (a reader then grades on the tags alone)."""
    if settings.outcome_table is None:
        return Recall(None)
    try:
        item = (
            clients.client("dynamodb")
            .get_item(TableName=settings.outcome_table, Key={"id": {"S": item_id(bucket_arn)}}, ConsistentRead=True)
            .get("Item")
        )
    except (ClientError, BotoCoreError) as err:
        code = error_code(err) if isinstance(err, ClientError) else type(err).__name__
        logger.warning("remembered PII classification unreadable, grading on tags alone", check=check, error=code)
        metrics.add_metric(name="PiiRecordUnreadable", unit=MetricUnit.Count, value=1)
        return Recall(None, unreadable=code)
    return Recall(_of(item) if item else None)
