"""Say each thing once: the same finding on the same resource alerts once within a window.

One unencrypted training job arrives as a CreateTrainingJob call and then as several state changes;
AWS Config re-evaluates, Macie re-publishes. Each is a new event, so per-event dedup (outcome_store)
does not help. Here an alert is identified by what it says: (check, resource, outcome kind, severity,
failed findings). The first alert with that identity within `ALERT_DEDUP_HOURS` is sent; later ones are
logged and counted (metric `AlertSuppressed`). A change in the findings or the severity is a new identity
and alerts again.

Only outcomes that report a standing state are deduplicated: flagged, exempt and would-remediate. A
`remediated` outcome reports a change ML Warden made, with its own undo command (repeats of it are the
flap guard's business), and a `failed` one reports that something may be left open: both always alert.

The claims live in the outcome table as `<check>#alert#<hash of the identity>`, written with one
conditional PutItem, so of many concurrent events only one alerts. When the table cannot be used the
alert is sent: a duplicate beats silence.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import error_code
from mlwarden.observability import logger, metrics
from mlwarden.outcomes import Outcome, OutcomeKind
from mlwarden.settings import Settings

DEDUPLICATED = frozenset({OutcomeKind.FLAGGED, OutcomeKind.EXEMPT, OutcomeKind.WOULD_REMEDIATE})
PERMISSIONS = frozenset({"dynamodb:PutItem", "dynamodb:DeleteItem"})
# Concurrent invocations read their clocks at different moments: a claim this far ahead is still "now".
CLOCK_SKEW_SECONDS = 300


def dedup_key(check: str, outcome: Outcome) -> str:
    # A check that names no findings is identified by its whole reason: only the very same alert is folded.
    said = sorted(outcome.findings) if outcome.findings else [outcome.reason]
    identity = [outcome.resource, outcome.outcome.value, outcome.severity.value, said]
    return f"{check}#alert#{hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class Claim:
    """The right to send one alert; released when the alert could not be sent, so that a retry sends it."""

    table: str | None
    key: str
    token: str

    def release(self) -> None:
        if self.table is None:
            return
        try:
            clients.client("dynamodb").delete_item(
                TableName=self.table,
                Key={"id": {"S": self.key}},
                ConditionExpression="claim = :token",
                ExpressionAttributeValues={":token": {"S": self.token}},
            )
        except (ClientError, BotoCoreError) as err:
            logger.warning("alert claim not released", key=self.key, error=type(err).__name__)


def claim(settings: Settings, check: str, outcome: Outcome, now: float | None = None) -> Claim | None:
    """A claim to alert, or None when the same alert went out within the window."""
    key = dedup_key(check, outcome)
    if settings.outcome_table is None or outcome.resource is None or outcome.outcome not in DEDUPLICATED:
        return Claim(None, key, "")
    current = int(time.time() if now is None else now)
    window = settings.alert_dedup_hours * 3600
    token = uuid.uuid4().hex
    try:
        clients.client("dynamodb").put_item(
            TableName=settings.outcome_table,
            Item={
                "id": {"S": key},
                "claim": {"S": token},
                "alerted_at": {"N": str(current)},
                "expiration": {"N": str(current + window)},
                "event_id": {"S": outcome.trigger.event_id[:256]},
            },
            # A claim dated in the future is no claim: a planted item must not silence a finding.
            ConditionExpression="attribute_not_exists(id) OR alerted_at < :window_start OR alerted_at > :future",
            ExpressionAttributeValues={
                ":window_start": {"N": str(current - window)},
                ":future": {"N": str(current + CLOCK_SKEW_SECONDS)},
            },
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            metrics.add_dimension(name="check", value=check)
            metrics.add_metric(name="AlertSuppressed", unit=MetricUnit.Count, value=1)
            logger.info(
                "same alert sent within the dedup window: not sent again",
                check=check,
                outcome=outcome.outcome.value,
                severity=outcome.severity.value,
                resource=outcome.resource,
                findings=list(outcome.findings),
                event_id=outcome.trigger.event_id,
            )
            return None
        _unavailable(check, error_code(err))
    except BotoCoreError as err:
        _unavailable(check, type(err).__name__)
    else:
        return Claim(settings.outcome_table, key, token)
    return Claim(None, key, "")


def _unavailable(check: str, error: str) -> None:
    logger.warning("alert dedup unavailable, alerting anyway", check=check, error=error)
    metrics.add_metric(name="AlertDedupUnavailable", unit=MetricUnit.Count, value=1)
