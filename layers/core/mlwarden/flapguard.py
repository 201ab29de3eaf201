"""Flapping changes the talking, never the fixing.

When someone keeps re-opening what ML Warden keeps closing, every re-opening is still fixed: the fix is
cheap and idempotent, and a resource that must stay open needs an exemption, not persistence. What
changes is what the security team hears. Up to the threshold each fix alerts as usual. The fix that
crosses it (more than `FLAP_THRESHOLD` fixes of one resource within an hour) sends one CRITICAL alert,
"re-opened N times in M minutes by <actors>", with its own subject and the SNS message attribute
`flapping=true`. After that, at most one digest per resource every `FLAP_DIGEST_MINUTES`; the fixes in
between are logged and counted (metric `FixWhileFlapping`), not alerted one by one.

Nothing stored here can make a check skip a resource: the guard runs after the fix and only decides
whether its alert is sent, summed up or folded into the next digest.

The counts live in the outcome table, one item per (check, resource): `<check>#flap#<resource>` (the
key starts with the check's name, so each role may write only its own items). Each fix is its own
attribute, keyed by the event, so concurrent fixes never overwrite each other and a redelivered event
is not counted twice; the flapping alert and each digest are claimed with a conditional write, so of
many concurrent fixes only one talks. When the table cannot be used the guard fails open: the fix alerts
as usual.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import error_code
from mlwarden.observability import logger, metrics
from mlwarden.outcomes import Outcome, Severity
from mlwarden.settings import Settings

WINDOW_SECONDS = 3600
# Fixes kept per resource: more than the highest threshold, few enough for one DynamoDB item.
KEPT_FIXES = 200
ACTORS_SHOWN = 10
# Concurrent invocations read their clocks at different moments: a time this far ahead is still "now".
CLOCK_SKEW_SECONDS = 300
# The DynamoDB item action the guard calls (the outcome store adds its own).
PERMISSIONS = frozenset({"dynamodb:UpdateItem"})
_FIX_PREFIX = "fix_"
# DynamoDB keys hold at most 2048 bytes: longer resource names are hashed.
_LONGEST_RESOURCE_IN_KEY = 1024


def flap_key(check: str, resource: str) -> str:
    if len(resource.encode()) > _LONGEST_RESOURCE_IN_KEY:
        resource = "sha256:" + hashlib.sha256(resource.encode()).hexdigest()
    return f"{check}#flap#{resource}"


def note_fix(settings: Settings, check: str, outcome: Outcome, fix_id: str, now: float | None = None) -> Outcome:
    """Count a fix ML Warden just made; the outcome comes back changed only in what it says and whether it alerts."""
    if settings.outcome_table is None or outcome.resource is None:
        return outcome
    current = time.time() if now is None else now
    table = _FlapItem(settings, check, outcome.resource)
    try:
        item = table.add_fix(fix_id, _actor(outcome), current)
    except (ClientError, BotoCoreError) as err:
        _unavailable(check, err)
        return outcome
    fixes = _fixes(item)
    recent = [fix for fix in fixes if fix[0] > current - WINDOW_SECONDS]
    table.forget([name for _, _, name in fixes[: max(len(fixes) - len(recent), len(fixes) - KEPT_FIXES)]])
    if len(recent) <= settings.flap_threshold:
        return outcome

    metrics.add_dimension(name="check", value=check)
    metrics.add_metric(name="FixWhileFlapping", unit=MetricUnit.Count, value=1)
    minutes = max(1, math.ceil((current - recent[0][0]) / 60))
    actors = sorted({actor for _, actor, _ in recent})
    more = len(actors) - ACTORS_SHOWN
    shown = ", ".join(actors[:ACTORS_SHOWN]) + (f" and {more} more" if more > 0 else "")
    flapping: dict[str, Any] = {
        "fixes_in_window": len(recent),
        "window_minutes": minutes,
        "actors": actors[:ACTORS_SHOWN],
        "threshold": settings.flap_threshold,
        "digest_minutes": settings.flap_digest_minutes,
    }
    said = f"{outcome.resource} re-opened {len(recent)} times in {minutes} minutes by {shown}"
    advice = (
        "ML Warden fixes it again every time. Find out who re-opens it and why; a resource that must stay "
        f"open needs an exemption. Further re-openings are summed up at most every {settings.flap_digest_minutes} "
        "minutes"
    )
    try:
        if table.claim_flapping_alert(current):
            metrics.add_metric(name="FlappingAlert", unit=MetricUnit.Count, value=1)
            return _talking(outcome, f"{said}. {advice}. This time: {outcome.reason}", flapping)
        since_last = table.claim_digest(current)
    except (ClientError, BotoCoreError) as err:
        _unavailable(check, err)
        return outcome
    if since_last is not None:
        metrics.add_metric(name="FlappingDigest", unit=MetricUnit.Count, value=1)
        reason = f"still flapping: fixed {since_last} more times since the last alert; {said}. {advice}"
        flapping["fixes_since_last_alert"] = since_last
        return _talking(outcome, f"{reason}. This time: {outcome.reason}", flapping)
    logger.info(
        "fixed again while flapping: alert folded into the next digest",
        check=check,
        resource=outcome.resource,
        fixes_in_window=len(recent),
        event_id=outcome.trigger.event_id,
    )
    return replace(
        outcome,
        flapping=True,
        details={**outcome.details, "flapping": flapping},
        alert_suppressed=(
            f"flapping: the flapping alert went out; fixes are summed up at most every "
            f"{settings.flap_digest_minutes} minutes"
        ),
    )


def _talking(outcome: Outcome, reason: str, flapping: dict[str, Any]) -> Outcome:
    return replace(
        outcome,
        severity=Severity.CRITICAL,
        reason=reason,
        flapping=True,
        details={**outcome.details, "flapping": flapping},
    )


def _actor(outcome: Outcome) -> str:
    trigger = outcome.trigger
    return trigger.actor or f"{trigger.kind} ({trigger.source})"


def _fixes(item: dict[str, Any]) -> list[tuple[float, str, str]]:
    """(time, actor, attribute name) of every fix the item holds, oldest first; damaged entries are skipped."""
    fixes = []
    for name, value in item.items():
        if not name.startswith(_FIX_PREFIX):
            continue
        try:
            entry = value["M"]
            fixes.append((float(entry["t"]["N"]), str(entry["a"]["S"]), name))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(fixes)


class _FlapItem:
    """One resource's flap record; every write is a single conditional or commutative UpdateItem."""

    def __init__(self, settings: Settings, check: str, resource: str) -> None:
        self._dynamodb = clients.client("dynamodb")
        self._table = str(settings.outcome_table)
        self._key = {"id": {"S": flap_key(check, resource)}}
        self._digest_seconds = settings.flap_digest_minutes * 60

    def _update(self, **kwargs: Any) -> dict[str, Any]:
        return dict(self._dynamodb.update_item(TableName=self._table, Key=self._key, **kwargs))

    def add_fix(self, fix_id: str, actor: str, now: float) -> dict[str, Any]:
        attribute = _FIX_PREFIX + hashlib.sha256(fix_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        item: dict[str, Any] = self._update(
            UpdateExpression=(
                "SET #fix = :fix, total_fixes = if_not_exists(total_fixes, :zero) + :one, expiration = :expires"
            ),
            ExpressionAttributeNames={"#fix": attribute},
            ExpressionAttributeValues={
                ":fix": {"M": {"t": {"N": f"{now:.3f}"}, "a": {"S": actor[:256]}}},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
                ":expires": {"N": str(int(now) + 2 * max(WINDOW_SECONDS, self._digest_seconds))},
            },
            ReturnValues="ALL_NEW",
        ).get("Attributes", {})
        return item

    def forget(self, attributes: list[str]) -> None:
        """Drop fixes older than the window (or beyond the kept number); a failure only leaves them for later."""
        if not attributes:
            return
        names = {f"#f{i}": name for i, name in enumerate(attributes[:100])}
        try:
            self._update(UpdateExpression="REMOVE " + ", ".join(names), ExpressionAttributeNames=names)
        except (ClientError, BotoCoreError) as err:
            logger.info("old fixes not dropped yet", error=type(err).__name__)

    def claim_flapping_alert(self, now: float) -> bool:
        """True for the one fix that starts a flapping episode: no flapping alert or digest for a window and more."""
        quiet_since = now - WINDOW_SECONDS - self._digest_seconds
        return (
            self._claim(
                "attribute_not_exists(talked_at) OR talked_at < :quiet_since OR talked_at > :future",
                {":quiet_since": {"N": f"{quiet_since:.3f}"}},
                now,
            )
            is not None
        )

    def claim_digest(self, now: float) -> int | None:
        """The number of fixes since the last flapping alert or digest, for the one fix that sends the digest."""
        old = self._claim(
            "talked_at < :due OR talked_at > :future", {":due": {"N": f"{now - self._digest_seconds:.3f}"}}, now
        )
        if old is None:
            return None
        return int(old.get("total_fixes", {}).get("N", "0")) - int(old.get("reported_fixes", {}).get("N", "0"))

    def _claim(self, condition: str, values: dict[str, Any], now: float) -> dict[str, Any] | None:
        # Each condition also accepts a time well in the future (beyond the clock skew between concurrent
        # invocations): a planted item must not keep the guard quiet.
        try:
            old: dict[str, Any] = self._update(
                UpdateExpression="SET talked_at = :now, reported_fixes = total_fixes",
                ConditionExpression=condition,
                ExpressionAttributeValues={
                    ":now": {"N": f"{now:.3f}"},
                    ":future": {"N": f"{now + CLOCK_SKEW_SECONDS:.3f}"},
                    **values,
                },
                ReturnValues="ALL_OLD",
            ).get("Attributes", {})
            return old
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                return None
            raise


def _unavailable(check: str, err: ClientError | BotoCoreError) -> None:
    logger.warning(
        "fix counter unavailable, alerting this fix as usual",
        check=check,
        error=error_code(err) if isinstance(err, ClientError) else type(err).__name__,
    )
    metrics.add_metric(name="FlapGuardUnavailable", unit=MetricUnit.Count, value=1)
