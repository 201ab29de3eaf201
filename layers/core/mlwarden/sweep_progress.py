"""How far one deployed sweep has got, and its summary sent exactly once: one item in the outcome table.

The planner and the workers run in separate invocations of separate functions, so completion needs
shared state. One item per sweep, `sweep#<sweep id>`, holds:

- `pages_planned`: the ids of the pages the planner sent (a string set: ADD is idempotent, so a planner
  retried after a crash can send the same pages again without counting them twice);
- `planning_done`: the planner has listed everything;
- `pages_done`: the ids of the pages a worker finished, and the page's counts (evaluated, by check, outcome
  and severity, alerted), added in the same UpdateItem whose condition makes each page count once;
- `summary_at`: set by the one invocation whose conditional update claims the summary.

Every update returns the item as it left it. The update that completes the sweep (the last page, or the
planner finishing after the last page) therefore sees it complete; it then claims the summary with a
conditional update, so exactly one invocation sends it, however many run at once. A summary that cannot be
sent releases its claim and raises: the worker's message comes back and the next attempt sends it.

Every role that writes these items may write only keys starting with `sweep#` besides its own check's
(dynamodb:LeadingKeys in template.yaml).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.outcomes import Outcome, OutcomeKind

KEY_PREFIX = "sweep#"
# The item actions these records need, granted on keys starting with KEY_PREFIX only.
PERMISSIONS = frozenset({"dynamodb:UpdateItem"})
# A sweep's record outlives the daily sweep that made it: long enough to read yesterday's from the table.
RECORD_DAYS = 7
_DAY_SECONDS = 86_400
# Attribute names of the counters, prefixed so that no check or severity name can collide with the others.
_COUNTERS = {"check": "by_check", "outcome": "by_outcome", "severity": "by_severity"}


def key_of(sweep_id: str) -> str:
    return f"{KEY_PREFIX}{sweep_id}"


@dataclass
class SweepCounts:
    """What some pages of one sweep found (a page's, or the whole sweep's once it completed)."""

    sweep_id: str
    evaluated: int = 0
    alerted: int = 0
    failed: int = 0
    by_check: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    listing_failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    pages: int = 0

    def add(self, outcome: Outcome) -> None:
        self.evaluated += 1
        self.alerted += int(outcome.alerted)
        self.failed += int(outcome.outcome is OutcomeKind.FAILED)
        self.by_check[outcome.check] += 1
        self.by_outcome[outcome.outcome.value] += 1
        if outcome.outcome not in (OutcomeKind.COMPLIANT, OutcomeKind.IGNORED):
            self.by_severity[outcome.severity.value] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "evaluated": self.evaluated,
            "seconds": self.seconds,
            "pages": self.pages,
            "by_check": dict(self.by_check),
            "by_outcome": dict(self.by_outcome),
            "by_severity": dict(self.by_severity),
            "alerted": self.alerted,
            "failed": self.failed,
            "listing_failures": sorted(self.listing_failures),
        }


class ProgressStore:
    """The progress item of one sweep in the outcome table."""

    def __init__(self, table: str, sweep_id: str, region: str | None = None) -> None:
        self.table = table
        self.sweep_id = sweep_id
        self._dynamodb = clients.client("dynamodb", region)

    # --- the planner -------------------------------------------------------------------------------------

    def start(self, account: str, region: str, now: float | None = None) -> None:
        """Create the record (a second start of the same sweep keeps the first start time)."""
        current = time.time() if now is None else now
        self._update(
            "SET started_at = if_not_exists(started_at, :now), account_id = :account, sweep_region = :region, "
            "expiration = :expires",
            {
                ":now": {"N": str(round(current, 3))},
                ":account": {"S": account},
                ":region": {"S": region},
                ":expires": {"N": str(int(current) + RECORD_DAYS * _DAY_SECONDS)},
            },
        )

    def planned(self, page_ids: Iterable[str]) -> None:
        ids = sorted(set(page_ids))
        if ids:
            self._update("ADD pages_planned :pages", {":pages": {"SS": ids}})

    def planning_done(self, listing_failures: Iterable[str] = ()) -> SweepCounts | None:
        """Everything is listed; the sweep's counts if this completed it and this call claimed its summary."""
        failures = sorted(set(listing_failures))
        expression = "SET planning_done = :yes"
        values: dict[str, Any] = {":yes": {"BOOL": True}}
        if failures:
            expression += " ADD listing_failures :failures"
            values[":failures"] = {"SS": failures}
        return self._claim_if_complete(self._update(expression, values))

    # --- the workers -------------------------------------------------------------------------------------

    def page_done(self, page_id: str, counts: SweepCounts) -> SweepCounts | None:
        """Count one page once; the sweep's counts if this completed it and this call claimed its summary.

        A page delivered again (a retried message) is not counted again, but it may still complete the
        sweep: the summary an earlier attempt could not send goes out now.
        """
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":page": {"S": page_id},
            ":pages": {"SS": [page_id]},
            ":evaluated": {"N": str(counts.evaluated)},
            ":alerted": {"N": str(counts.alerted)},
            ":failed": {"N": str(counts.failed)},
        }
        adds = ["pages_done :pages", "evaluated :evaluated", "alerted :alerted", "failed :failed"]
        for kind, counter in (
            ("check", counts.by_check),
            ("outcome", counts.by_outcome),
            ("severity", counts.by_severity),
        ):
            for index, (name, value) in enumerate(sorted(counter.items())):
                names[f"#{kind}{index}"] = f"{_COUNTERS[kind]}.{name}"
                values[f":{kind}{index}"] = {"N": str(value)}
                adds.append(f"#{kind}{index} :{kind}{index}")
        try:
            item = self._update(
                "ADD " + ", ".join(adds),
                values,
                names=names,
                condition="NOT contains(pages_done, :page)",
            )
        except _AlreadyCounted:
            item = self._update("SET last_redelivery = :now", {":now": {"N": str(int(time.time()))}})
        return self._claim_if_complete(item)

    def release_summary(self) -> None:
        """The summary could not be sent: let the next attempt claim it."""
        self._update("REMOVE summary_at", {})

    # --- completion --------------------------------------------------------------------------------------

    def _claim_if_complete(self, item: dict[str, Any]) -> SweepCounts | None:
        if not _complete(item) or "summary_at" in item:
            return None
        try:
            self._update(
                "SET summary_at = :now",
                {":now": {"N": str(int(time.time()))}},
                condition="attribute_not_exists(summary_at)",
            )
        except _AlreadyCounted:
            return None  # another invocation claimed it first
        return counts_of(self.sweep_id, item)

    def _update(
        self,
        expression: str,
        values: dict[str, Any],
        *,
        names: dict[str, str] | None = None,
        condition: str | None = None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"id": {"S": key_of(self.sweep_id)}},
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            attributes: dict[str, Any] = self._dynamodb.update_item(**kwargs).get("Attributes", {})
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                raise _AlreadyCounted from err
            raise AwsCallFailed.from_error("dynamodb:UpdateItem", err) from err
        except BotoCoreError as err:
            raise AwsCallFailed.from_error("dynamodb:UpdateItem", err) from err
        return attributes


class _AlreadyCounted(Exception):
    """A conditional update found its work done already."""


def _complete(item: dict[str, Any]) -> bool:
    if not item.get("planning_done", {}).get("BOOL"):
        return False
    planned = set(item.get("pages_planned", {}).get("SS", []))
    done = set(item.get("pages_done", {}).get("SS", []))
    return planned <= done


def counts_of(sweep_id: str, item: dict[str, Any]) -> SweepCounts:
    """The whole sweep's counts from its record (attribute values as DynamoDB returns them)."""

    def number(name: str) -> int:
        return int(item.get(name, {}).get("N", "0"))

    counts = SweepCounts(
        sweep_id=sweep_id,
        evaluated=number("evaluated"),
        alerted=number("alerted"),
        failed=number("failed"),
        listing_failures=list(item.get("listing_failures", {}).get("SS", [])),
        pages=len(item.get("pages_planned", {}).get("SS", [])),
    )
    for name, value in item.items():
        kind, _, key = name.partition(".")
        for counter_kind, attribute in _COUNTERS.items():
            if kind == attribute:
                getattr(counts, f"by_{counter_kind}")[key] += int(value["N"])
    if "started_at" in item:
        counts.seconds = round(max(0.0, time.time() - float(item["started_at"]["N"])), 3)
    return counts
