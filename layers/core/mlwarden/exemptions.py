"""Exemptions: granted by the security team in the registry, with an owner and an end.

The registry is the stack's DynamoDB table (EXEMPTION_TABLE). Only the principals named in the
template's ExemptionAdminArns may write it (the table's resource-based policy denies everyone else,
ML Warden's own functions included); the functions only read it. Each entry names a resource ARN or
an ARN pattern (`*` and `?`, so a bucket can be registered before it exists), a check or `all`, a
reason, who granted it (from their caller identity, never typed in), when, and until when.

An entry counts only while it is in force and no longer than MAX_EXEMPTION_DAYS from when it was
granted: an entry written past the maximum, by hand or by an old CLI, does not exempt.

Resource tags count only with TRUST_EXEMPTION_TAGS=true, and then only `true` or a `YYYY-MM-DD`
within the maximum duration from today. Every other value (`never`, `revoked`, `9999-12-31`) is not
an exemption; the decision notes it so the alert shows the refused tag.

Reading the registry never crashes a check: an unreadable registry or a damaged entry means "not
exempt" (fail closed), noted in the reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import error_code
from mlwarden.events import ApiCall, Event
from mlwarden.observability import logger
from mlwarden.outcomes import Outcome, OutcomeKind, Severity
from mlwarden.settings import Settings

ALL_CHECKS = "all"
CHECKS = (
    "block_public_s3",
    "tag_pii_bucket",
    "flag_wildcard_iam",
    "check_sagemaker_encryption",
    "guard_kms_keys",
    "guard_s3_data",
)
# The DynamoDB action the functions need on the registry: read only.
READ_PERMISSIONS = frozenset({"dynamodb:Scan"})
# What the exempt CLI and the registry's administrators call; the functions are never granted these.
WRITE_ACTIONS = frozenset({"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"})

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TRUE = "true"


@dataclass(frozen=True)
class Exemption:
    """Whether a resource is exempt from remediation, why, and until when."""

    active: bool
    reason: str
    expires: dt.date | None = None
    # "registry" or "tag" when active; None otherwise.
    source: str | None = None
    granted_by: str | None = None
    # A tag that asked for an exemption and was refused (untrusted, or a value that does not exempt).
    refused_tag: str | None = None


NOT_EXEMPT = Exemption(active=False, reason="no exemption")


@dataclass(frozen=True)
class Entry:
    """One registry item."""

    resource: str
    check: str
    reason: str
    granted_by: str
    granted_at: dt.datetime
    expires_at: dt.date

    def covers(self, resource_arn: str, check: str) -> bool:
        # A pattern that names nothing (`*`, `arn:aws:s3:::*`) is refused here too, not only by the CLI.
        return (
            self.check in (ALL_CHECKS, check)
            and names_something(self.resource)
            and fnmatchcase(resource_arn, self.resource)
        )

    def in_force(self, today: dt.date, max_days: int) -> str | None:
        """None when the entry exempts today, else why it does not."""
        if self.expires_at < today:
            return f"registry exemption expired on {self.expires_at.isoformat()}"
        if self.granted_at.date() > today:
            return "registry exemption is granted in the future"
        if (self.expires_at - self.granted_at.date()).days > max_days:
            return f"registry exemption runs longer than the maximum of {max_days} days"
        return None

    def as_item(self) -> dict[str, dict[str, str]]:
        return {
            "resource": {"S": self.resource},
            "check": {"S": self.check},
            "reason": {"S": self.reason},
            "granted_by": {"S": self.granted_by},
            "granted_at": {"S": self.granted_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "expires_at": {"S": self.expires_at.isoformat()},
        }

    def as_dict(self) -> dict[str, str]:
        return {key: value["S"] for key, value in self.as_item().items()}


def entry_from_item(item: Mapping[str, Any]) -> Entry | None:
    """An entry from a DynamoDB item; None when it is damaged (it then exempts nothing)."""

    def text(name: str) -> str | None:
        value = item.get(name)
        return value.get("S") if isinstance(value, Mapping) and isinstance(value.get("S"), str) else None

    resource, check, expires, granted = text("resource"), text("check"), text("expires_at"), text("granted_at")
    if not resource or not check or expires is None or granted is None:
        return None
    expires_at = parse_date(expires)
    try:
        granted_at = dt.datetime.fromisoformat(granted.replace("Z", "+00:00"))
    except ValueError:
        return None
    if expires_at is None:
        return None
    return Entry(
        resource=resource,
        check=check,
        reason=text("reason") or "",
        granted_by=text("granted_by") or "unknown",
        granted_at=granted_at if granted_at.tzinfo else granted_at.replace(tzinfo=dt.UTC),
        expires_at=expires_at,
    )


_ACCOUNT_RESOURCE = re.compile(r"^AWS::::Account:\d{12}$")


def names_something(resource: str) -> bool:
    """An account (AWS::::Account:ID), or an ARN whose service is named and whose resource part is more than
    wildcards: `arn:aws:s3:::web-*` names something, `*` and `arn:aws:s3:::*` do not."""
    if _ACCOUNT_RESOURCE.match(resource):
        return True
    parts = resource.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[2] or "*" in parts[2] or "?" in parts[2]:
        return False
    return bool(parts[5].strip("*?/"))


def parse_date(value: str) -> dt.date | None:
    match = _DATE.match(value.strip())
    if match is None:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


class RegistryUnreadable(Exception):
    """The registry could not be read; the caller fails closed."""


def read_registry(table: str) -> list[Entry]:
    """Every readable entry; damaged items are skipped. RegistryUnreadable when DynamoDB fails."""
    entries: list[Entry] = []
    try:
        for page in clients.client("dynamodb").get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            entries.extend(e for e in (entry_from_item(i) for i in page.get("Items", [])) if e is not None)
    except (ClientError, BotoCoreError) as err:
        code = error_code(err) if isinstance(err, ClientError) else type(err).__name__
        raise RegistryUnreadable(code) from err
    return entries


def exemption_for(
    resource_arn: str,
    check: str,
    tags: Mapping[str, str] | None,
    settings: Settings,
    today: dt.date | None = None,
) -> Exemption:
    """Is this resource exempt from this check today? The registry first, then (if trusted) its tag."""
    today = today or dt.datetime.now(dt.UTC).date()
    registry = _from_registry(resource_arn, check, settings, today)
    tag = exemption_from_tags(tags, settings, today)
    if registry.active:
        return registry if tag.refused_tag is None else replace(registry, refused_tag=tag.refused_tag)
    if tag.active:
        return tag
    reasons = [r.reason for r in (registry, tag) if r is not NOT_EXEMPT]
    return Exemption(active=False, reason="; ".join(reasons) or NOT_EXEMPT.reason, refused_tag=tag.refused_tag)


def _from_registry(resource_arn: str, check: str, settings: Settings, today: dt.date) -> Exemption:
    if settings.exemption_table is None:
        return NOT_EXEMPT
    try:
        entries = read_registry(settings.exemption_table)
    except RegistryUnreadable as err:
        logger.warning("exemption registry unreadable, no exemption applies", error=str(err))
        return Exemption(active=False, reason=f"the exemption registry could not be read ({err}): not exempt")
    return best_entry(entries, resource_arn, check, settings.max_exemption_days, today)


def best_entry(entries: Iterable[Entry], resource_arn: str, check: str, max_days: int, today: dt.date) -> Exemption:
    """The entry in force that lasts longest, or why none counts."""
    covering = [e for e in entries if e.covers(resource_arn, check)]
    valid = [e for e in covering if e.in_force(today, max_days) is None]
    if valid:
        entry = max(valid, key=lambda e: e.expires_at)
        return Exemption(
            active=True,
            reason=(
                f"registry exemption for {entry.check} until {entry.expires_at.isoformat()}, granted by "
                f"{entry.granted_by}: {entry.reason}"
            ),
            expires=entry.expires_at,
            source="registry",
            granted_by=entry.granted_by,
        )
    if covering:
        return Exemption(active=False, reason=str(covering[0].in_force(today, max_days)))
    return NOT_EXEMPT


@dataclass(frozen=True)
class TagValue:
    """An exempt tag's value as ML Warden reads it; `shown` is safe for logs (a date, true, or a length)."""

    shown: str
    expires: dt.date | None
    # None when the value would exempt (if tags were trusted), else why it does not.
    refused: str | None


def read_tag_value(value: str, max_days: int, today: dt.date) -> TagValue:
    text = value.strip()
    if text.lower() == _TRUE:
        return TagValue("true", None, None)
    date = parse_date(text)
    if date is None:
        return TagValue(
            f"a value that is neither true nor YYYY-MM-DD ({len(text)} characters)", None, "not true or a date"
        )
    if date < today:
        return TagValue(date.isoformat(), date, f"its date {date.isoformat()} has passed")
    if (date - today).days > max_days:
        return TagValue(date.isoformat(), date, f"its date is more than the maximum of {max_days} days away")
    return TagValue(date.isoformat(), date, None)


def exemption_from_tags(tags: Mapping[str, str] | None, settings: Settings, today: dt.date | None = None) -> Exemption:
    """What the resource's exempt tag asks for, and whether it counts."""
    key = settings.exempt_tag_key
    if tags is None and settings.trust_exemption_tags:
        return Exemption(active=False, reason="tags could not be read, so no tag exemption applies (fail closed)")
    if tags is None or key not in tags:
        return NOT_EXEMPT
    today = today or dt.datetime.now(dt.UTC).date()
    value = read_tag_value(tags[key], settings.max_exemption_days, today)
    if not settings.trust_exemption_tags:
        why = f"tag {key}={value.shown} does not exempt: exemption tags are not trusted (TrustExemptionTags=false)"
        return Exemption(active=False, reason=why, refused_tag=value.shown)
    if value.refused is not None:
        return Exemption(
            active=False, reason=f"tag {key}={value.shown} does not exempt: {value.refused}", refused_tag=value.shown
        )
    until = f"until {value.expires.isoformat()}" if value.expires else f"for up to {settings.max_exemption_days} days"
    return Exemption(active=True, reason=f"tagged {key}={value.shown} ({until})", expires=value.expires, source="tag")


# --- someone sets the exempt tag ------------------------------------------------------------------------

_SEVERITY_ORDER = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")


# Calls the checks' rules route only because they may set the exempt tag; without it they are ignored unread.
# Not PutBucketTagging: block_public_s3 decides it in any case, because it can remove mlwarden:pii (s3.py).
ROUTED_FOR_THE_EXEMPT_TAG = frozenset({"TagRole", "TagUser", "TagPolicy", "CreateRole", "CreateUser", "AddTags"})


@dataclass(frozen=True)
class TagChange:
    """A CloudTrail call that sets the exempt tag (TagRole, PutBucketTagging, AddTags, Create* with tags)."""

    actor: str
    call: str
    value: TagValue


def tag_set_by(event: Event, settings: Settings, today: dt.date | None = None) -> TagChange | None:
    """The exempt tag this call sets, wherever the service puts tags in its request; None if it sets none."""
    if not isinstance(event, ApiCall):
        return None
    found = _tag_value(event.request_parameters, settings.exempt_tag_key, under_tags=False, depth=0)
    if found is None:
        return None
    value = read_tag_value(found, settings.max_exemption_days, today or dt.datetime.now(dt.UTC).date())
    return TagChange(actor=event.actor.display, call=event.event_name, value=value)


def _tag_value(node: Any, key: str, *, under_tags: bool, depth: int) -> str | None:
    """S3 nests Tagging.TagSet.Tag[{Key, Value}], IAM and SageMaker send tags[{key, value}]: search under any
    request key that names tags, to a bounded depth."""
    if depth > 8:
        return None
    if isinstance(node, Mapping):
        if under_tags:
            name = node.get("Key", node.get("key"))
            value = node.get("Value", node.get("value"))
            if name == key and isinstance(value, str):
                return value
        for child_key, child in node.items():
            child_under = under_tags or (isinstance(child_key, str) and "tag" in child_key.lower())
            found = _tag_value(child, key, under_tags=child_under, depth=depth + 1)
            if found is not None:
                return found
    elif isinstance(node, list):
        for child in node:
            found = _tag_value(child, key, under_tags=under_tags, depth=depth + 1)
            if found is not None:
                return found
    return None


def report_tag_change(outcome: Outcome, change: TagChange, settings: Settings) -> Outcome:
    """The check's outcome for a call that set the exempt tag, made to say so: who, until when, whether it
    counts, and whether the resource is non-compliant now (then at least HIGH). A compliant resource is still
    reported (MEDIUM): someone is preparing an exemption."""
    if outcome.outcome is OutcomeKind.IGNORED:
        return outcome
    counts = settings.trust_exemption_tags and change.value.refused is None
    if counts:
        verdict = "it counts (TrustExemptionTags=true)"
    elif not settings.trust_exemption_tags:
        verdict = "it does not count: exemption tags are not trusted (TrustExemptionTags=false); ask the security team"
    else:
        verdict = f"it does not count: {change.value.refused}"
    note = f"{change.actor} set {settings.exempt_tag_key}={change.value.shown} via {change.call}; {verdict}"
    details = {
        **outcome.details,
        "exempt_tag_set": {
            "by": change.actor,
            "call": change.call,
            "until": change.value.shown,
            "counts": counts,
        },
    }
    if outcome.outcome is OutcomeKind.COMPLIANT:
        return replace(
            outcome,
            outcome=OutcomeKind.FLAGGED,
            severity=Severity.MEDIUM,
            reason=f"{note}; the resource is compliant now ({outcome.reason})",
            details=details,
        )
    severity = max(outcome.severity, Severity.HIGH, key=lambda s: _SEVERITY_ORDER.index(s.value))
    return replace(
        outcome,
        severity=severity,
        reason=f"{note}; the resource is non-compliant now: {outcome.reason}",
        details=details,
    )


def hint(resource_arn: str, check: str) -> str:
    """How a person keeps this resource as it is: through the security team, not a tag."""
    return (
        f"ask the security team to register it: mlwarden exempt add {resource_arn} --until YYYY-MM-DD "
        f"--reason TEXT --check {check}"
    )


# --- an exempt resource that exposes PII: CRITICAL, once per resource per day -----------------------------

_DAY_SECONDS = 86_400


def at_most_daily(outcome: Outcome, settings: Settings, now: dt.datetime | None = None) -> Outcome:
    """An exempt resource still reported CRITICAL is alerted once per resource per day, not on every event.

    The mark is an outcome-table item keyed by the check's name (so each role writes only its own items);
    written conditionally, so of concurrent events one alerts. Without the table, or when it fails, every
    event alerts: a guard may reduce noise, never go quiet.
    """
    if outcome.outcome is not OutcomeKind.EXEMPT or outcome.severity is not Severity.CRITICAL:
        return outcome
    if settings.outcome_table is None or outcome.resource is None:
        return outcome
    current = now or dt.datetime.now(dt.UTC)
    key = f"{outcome.check}#exempt-critical#{outcome.resource}#{current.date().isoformat()}"
    try:
        clients.client("dynamodb").put_item(
            TableName=settings.outcome_table,
            Item={"id": {"S": key}, "expiration": {"N": str(int(current.timestamp()) + 2 * _DAY_SECONDS)}},
            ConditionExpression="attribute_not_exists(id)",
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return replace(outcome, alert_suppressed="this exempt resource's CRITICAL alert already went out today")
        logger.warning("daily alert mark unavailable, alerting", check=outcome.check, error=error_code(err))
    except BotoCoreError as err:
        logger.warning("daily alert mark unavailable, alerting", check=outcome.check, error=type(err).__name__)
    return outcome
