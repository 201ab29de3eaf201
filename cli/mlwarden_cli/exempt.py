"""`mlwarden exempt add|list|revoke`: the security team's way to grant, see and revoke exemptions.

Entries go to the registry table (EXEMPTION_TABLE), whose resource-based policy lets only the
principals in the template's ExemptionAdminArns write. Who granted an entry is the caller's identity
(sts:GetCallerIdentity), never an argument. Every change is alerted on ALERT_TOPIC_ARN; if the alert
cannot be sent, the change is rolled back, so no exemption exists that the team was not told about.
AWS is reached as `replay` reaches it: the standard environment, AWS_ENDPOINT_URL included.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import alerts, clients
from mlwarden.errors import AwsCallFailed
from mlwarden.exemptions import (
    ALL_CHECKS,
    CHECKS,
    Entry,
    RegistryUnreadable,
    entry_from_item,
    names_something,
    parse_date,
    read_registry,
)
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CHECK = "exemption_registry"
_MAX_DAYS_RANGE = range(1, 366)


class UsageError(ValueError):
    """Arguments or environment that `exempt` refuses (exit 2)."""


def add_parsers(commands: Any) -> None:
    exempt = commands.add_parser("exempt", help="grant, list or revoke exemptions in the registry (EXEMPTION_TABLE)")
    actions = exempt.add_subparsers(dest="exempt_command", required=True)
    add = actions.add_parser("add", help="grant an exemption (alerted); exit 2 if --until is past or too far")
    add.add_argument("resource_arn", metavar="RESOURCE_ARN", help="an ARN, or an ARN pattern with * and ?")
    add.add_argument("--until", required=True, metavar="YYYY-MM-DD", help="last day the exemption counts (UTC)")
    add.add_argument("--reason", required=True, metavar="TEXT", help="why, and a ticket: shown in every alert")
    add.add_argument("--check", default=ALL_CHECKS, choices=(*CHECKS, ALL_CHECKS), help="default: all")
    listing = actions.add_parser("list", help="every entry, and whether it is in force today")
    listing.add_argument("--json", action="store_true", help="a JSON array")
    revoke = actions.add_parser("revoke", help="delete every entry for RESOURCE_ARN (alerted)")
    revoke.add_argument("resource_arn", metavar="RESOURCE_ARN")


def run(args: Any) -> int:
    try:
        table = _required("EXEMPTION_TABLE", "the exemption registry table (template output ExemptionTableName)")
        max_days = _max_days()
        if args.exempt_command == "list":
            return _list(table, max_days, as_json=args.json)
        topic = _required("ALERT_TOPIC_ARN", "every registry change is alerted on the alert topic")
        if args.exempt_command == "add":
            return _add(table, topic, max_days, args)
        return _revoke(table, topic, args.resource_arn)
    except UsageError as err:
        print(f"mlwarden exempt: {err}", file=sys.stderr)
        return EXIT_USAGE
    except AwsCallFailed as err:
        print(f"mlwarden exempt: {err.explanation}", file=sys.stderr)
        return EXIT_FAILED


def _required(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise UsageError(f"{name} is not set: {what}")
    return value


def _max_days() -> int:
    raw = os.environ.get("MAX_EXEMPTION_DAYS", "").strip() or "90"
    days = int(raw) if re.fullmatch(r"[0-9]{1,4}", raw) else 0
    if days not in _MAX_DAYS_RANGE:
        raise UsageError(f"MAX_EXEMPTION_DAYS must be a whole number from 1 to 365, got {raw[:40]!r}")
    return days


def _aws(action: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error(action, err) from err


def validate_resource(resource: str) -> str:
    """An ARN (or pattern) naming something specific: `*` alone, or in the service, would exempt too much."""
    resource = resource.strip()
    if not names_something(resource):
        raise UsageError(
            f"RESOURCE_ARN must be an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE, * and ? allowed in the "
            f"resource but not alone) or AWS::::Account:ID, got {resource!r}"
        )
    return resource


def validate_until(until: str, max_days: int, today: dt.date) -> dt.date:
    date = parse_date(until)
    if date is None:
        raise UsageError(f"--until must be a date YYYY-MM-DD, got {until!r}")
    if date < today:
        raise UsageError(f"--until {date.isoformat()} is in the past")
    if (date - today).days > max_days:
        latest = (today + dt.timedelta(days=max_days)).isoformat()
        raise UsageError(f"--until {date.isoformat()} is beyond the maximum of {max_days} days (latest {latest})")
    return date


def _caller() -> tuple[str, str | None]:
    identity = _aws("sts:GetCallerIdentity", clients.client("sts").get_caller_identity)
    return str(identity["Arn"]), identity.get("Account")


def _add(table: str, topic: str, max_days: int, args: Any) -> int:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    resource = validate_resource(args.resource_arn)
    expires = validate_until(args.until, max_days, now.date())
    reason, check = " ".join(args.reason.split()), str(args.check)
    if not reason or len(reason) > 500:
        raise UsageError("--reason must be 1 to 500 characters")
    granted_by, account = _caller()
    entry = Entry(resource, check, reason, granted_by, now, expires)
    dynamodb = clients.client("dynamodb")
    old = _aws("dynamodb:PutItem", dynamodb.put_item, TableName=table, Item=entry.as_item(), ReturnValues="ALL_OLD")
    replaced = entry_from_item(old.get("Attributes") or {})
    what = f"exemption ({check} checks) granted until {expires.isoformat()}: {reason}"
    if replaced is not None:
        what += f" (replaces the entry until {replaced.expires_at.isoformat()} by {replaced.granted_by})"
    severity, state = _current_state(resource)

    def undo() -> None:
        if replaced is not None:
            dynamodb.put_item(TableName=table, Item=replaced.as_item())
        else:
            dynamodb.delete_item(TableName=table, Key={"resource": {"S": resource}, "check": {"S": check}})

    outcome = _outcome(
        "exempt add",
        actor=granted_by,
        account=account,
        topic=topic,
        resource=resource,
        severity=severity,
        reason=f"{what}; {state}",
        entry=entry,
    )
    return _alert_or_undo(outcome, topic, undo, f"granted: {resource} ({check}) until {expires.isoformat()}")


def _revoke(table: str, topic: str, resource: str) -> int:
    resource = resource.strip()
    dynamodb = clients.client("dynamodb")
    response = _aws(
        "dynamodb:Query",
        dynamodb.query,
        TableName=table,
        KeyConditionExpression="#r = :r",
        ExpressionAttributeNames={"#r": "resource"},
        ExpressionAttributeValues={":r": {"S": resource}},
        ConsistentRead=True,
    )
    entries = [e for e in (entry_from_item(i) for i in response.get("Items", [])) if e is not None]
    if not entries:
        print(f"mlwarden exempt: no exemption registered for {resource}", file=sys.stderr)
        return EXIT_FAILED
    revoked_by, account = _caller()
    for entry in entries:
        key = {"resource": {"S": entry.resource}, "check": {"S": entry.check}}
        _aws("dynamodb:DeleteItem", dynamodb.delete_item, TableName=table, Key=key)
    checks = ", ".join(e.check for e in entries)
    what = f"exemption revoked ({checks}); it was granted by {entries[0].granted_by}: {entries[0].reason}"

    def undo() -> None:
        for entry in entries:
            dynamodb.put_item(TableName=table, Item=entry.as_item())

    outcome = _outcome(
        "exempt revoke",
        actor=revoked_by,
        account=account,
        topic=topic,
        resource=resource,
        severity=Severity.MEDIUM,
        reason=what,
        entry=None,
    )
    return _alert_or_undo(outcome, topic, undo, f"revoked: {resource} ({checks})")


def _current_state(resource: str) -> tuple[Severity, str]:
    """HIGH when the resource is non-compliant now. The CLI checks an S3 bucket's own block; other resources
    are judged by their check at their next event."""
    parts = resource.split(":", 5)
    if len(parts) == 6 and parts[2] == "s3" and parts[5] and not any(c in parts[5] for c in "*?/"):
        try:
            config = clients.client("s3").get_public_access_block(Bucket=parts[5])["PublicAccessBlockConfiguration"]
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchPublicAccessBlockConfiguration":
                return Severity.HIGH, "the bucket is non-compliant now: it has no public-access block"
            return Severity.MEDIUM, f"the bucket's block could not be read ({code})"
        if not all(config.get(flag) for flag in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                                  "RestrictPublicBuckets")):  # fmt: skip
            return Severity.HIGH, "the bucket is non-compliant now: its public-access block is not fully on"
        return Severity.MEDIUM, "the bucket's public-access block is fully on now"
    return Severity.MEDIUM, "compliance is judged by the check at the resource's next event"


def _outcome(
    name: str,
    *,
    actor: str,
    account: str | None,
    topic: str,
    resource: str,
    severity: Severity,
    reason: str,
    entry: Entry | None,
) -> Outcome:
    trigger = Trigger(
        event_id=str(uuid.uuid4()),
        source="mlwarden.cli",
        kind="registry",
        name=name,
        actor=actor,
        time=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        account=account,
        region=topic.split(":")[3],
    )
    return Outcome(
        check=CHECK,
        outcome=OutcomeKind.FLAGGED,
        severity=severity,
        reason=reason,
        trigger=trigger,
        resource=resource,
        details={"entry": entry.as_dict()} if entry is not None else {},
    )


def _alert_or_undo(outcome: Outcome, topic: str, undo: Callable[[], None], done: str) -> int:
    try:
        alerts.publish(outcome, topic)
    except AwsCallFailed as err:
        undo()
        print(f"mlwarden exempt: the alert could not be sent ({err.explanation}); change rolled back", file=sys.stderr)
        return EXIT_FAILED
    print(done)
    return EXIT_OK


def _list(table: str, max_days: int, *, as_json: bool) -> int:
    try:
        entries = read_registry(table)
    except RegistryUnreadable as err:
        print(f"mlwarden exempt: cannot read {table}: {err}", file=sys.stderr)
        return EXIT_FAILED
    today = dt.datetime.now(dt.UTC).date()
    rows = []
    for entry in sorted(entries, key=lambda e: (e.resource, e.check)):
        why_not = entry.in_force(today, max_days)
        rows.append({**entry.as_dict(), "in_force": why_not is None, "status": why_not or "in force"})
    if as_json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print("no exemptions registered")
    for row in rows:
        print(f"{row['resource']}  {row['check']}  until {row['expires_at']}  {row['status']}  "
              f"by {row['granted_by']}: {row['reason']}")  # fmt: skip
    return EXIT_OK
