"""Per-event outcome records, so that an event delivered again is not acted on again and is alerted once.

EventBridge and Lambda deliver at least once and retry. For each (check, event id) the outcome
table holds two kinds of record, written through Powertools' idempotency utility:

- `<check>.decide#<hash of event id>`: the outcome of deciding and acting. A redelivery gets the
  stored outcome back instead of acting again. A `failed` outcome is not kept (Powertools removes
  the record when the function raises), so a retry tries the fix again.
- `<check>.alert.<outcome>#<hash>`: the alert for that kind of outcome was published. A retry after
  a lost alert finds the outcome stored and only sends the alert; a `failed` outcome that fails again
  on every retry is alerted once.

Without a table, or when DynamoDB fails before the check ran, the check runs anyway: security
beats dedup. The price is a possible duplicate alert; it is logged and counted (`OutcomeStoreUnavailable`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from mlwarden import clients
from mlwarden.observability import logger, metrics
from mlwarden.outcomes import Outcome, OutcomeKind, outcome_from_dict

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError


@functools.cache
def _idempotency() -> tuple[ModuleType, ModuleType]:
    """Powertools' idempotency utility and its exceptions, imported on the first event that has a table.

    About 20 modules (the utility, its middleware factory, jmespath helpers, boto3's DynamoDB types): imported
    at cold start they cost every handler several percent of it (`make bench`), and replay without a table
    never needs them.
    """
    from aws_lambda_powertools.utilities import idempotency  # noqa: PLC0415 - see the docstring
    from aws_lambda_powertools.utilities.idempotency import exceptions  # noqa: PLC0415

    return idempotency, exceptions


# The DynamoDB item actions of Powertools' idempotency utility and of the flap guard.
PERMISSIONS = frozenset({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"})
# Records outlive the longest redelivery: EventBridge retries a target for up to 24 hours.
RECORD_LIFETIME_SECONDS = 25 * 3600
# Without a Lambda context (replay, tests), an in-progress record is taken over after the function timeout.
DEFAULT_REMAINING_MILLIS = 60_000


# A DynamoDB item holds at most 400 KB; the stored outcome stays well below it, whatever the event carried.
STORED_OUTCOME_LIMIT = 64_000


def _storable(outcome: Outcome) -> dict[str, Any]:
    """The outcome as plain JSON (a previous state may hold dates or tuples), small enough for one item.

    The event id is the record's key already; an outcome too large to keep whole keeps what the alert
    of a retry needs (what, where, done, before, undo) and says that its details were cut.
    """
    data: dict[str, Any] = json.loads(json.dumps(outcome.as_dict(), default=str))
    data["event_id"] = None
    if len(json.dumps(data)) > STORED_OUTCOME_LIMIT:
        data["details"] = {"stored_details_cut": True}
        data["reason"] = data["reason"][:2000]
        data["trigger"] = {k: v[:512] if isinstance(v, str) else v for k, v in data["trigger"].items()}
        for key in ("previous_state", "new_state", "undo", "exempt_hint"):
            if len(json.dumps(data[key])) > STORED_OUTCOME_LIMIT // 8:
                data[key] = None
    return data


class EventInProgress(Exception):
    """Another invocation is handling this very event right now; raised so that Lambda retries it later."""


class _NotKept(Exception):
    """Carries a `failed` outcome out of the idempotent function, so that its record is removed."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class _FixedTimeContext:
    def get_remaining_time_in_millis(self) -> int:
        return DEFAULT_REMAINING_MILLIS


@dataclass(frozen=True)
class Decided:
    """An outcome, and whether this delivery decided it or found it stored."""

    outcome: Outcome
    # False when an earlier delivery of the same event decided (and acted) already.
    first_delivery: bool


class OutcomeStore:
    def __init__(self, table_name: str, event_id: str, lambda_context: Any = None) -> None:
        self.table_name = table_name
        self.event_id = event_id
        self._context: Any = lambda_context if lambda_context is not None else _FixedTimeContext()

    def decide_once(self, check: str, decide: Callable[[], Outcome]) -> Decided:
        decided_here: list[Outcome] = []

        def decide_and_keep(data: dict[str, str]) -> dict[str, Any]:
            outcome = decide()
            decided_here.append(outcome)
            if outcome.outcome is OutcomeKind.FAILED:
                raise _NotKept(outcome)
            return _storable(outcome)

        _, errors = _idempotency()
        try:
            stored = self._once(f"{check}.decide", decide_and_keep)
        except _NotKept as failed:
            return Decided(failed.outcome, first_delivery=True)
        except errors.IdempotencyAlreadyInProgressError as err:
            raise EventInProgress(f"{check}: event {self.event_id} is being handled by another invocation") from err
        except errors.IdempotencyPersistenceLayerError as err:
            self._unavailable(check, "decide", err)
            if decided_here:  # the check ran; only keeping its record failed
                return Decided(decided_here[0], first_delivery=True)
            return Decided(decide(), first_delivery=True)
        if decided_here:
            return Decided(decided_here[0], first_delivery=True)
        try:
            return Decided(outcome_from_dict({**stored, "event_id": self.event_id}), first_delivery=False)
        except ValueError:
            logger.warning("stored outcome unreadable, deciding again", check=check, event_id=self.event_id)
            return Decided(decide(), first_delivery=True)

    def alert_once(self, outcome: Outcome, publish: Callable[[], str]) -> bool:
        """Publish unless this kind of outcome of this event was alerted before. True if sent now."""
        sent_here: list[str] = []

        def publish_and_note(data: dict[str, str]) -> dict[str, str]:
            sent_here.append(publish())
            return {"message_id": sent_here[-1]}

        _, errors = _idempotency()
        try:
            self._once(f"{outcome.check}.alert.{outcome.outcome.value}", publish_and_note)
        except errors.IdempotencyAlreadyInProgressError as err:
            raise EventInProgress(f"{outcome.check}: alert for event {self.event_id} is being sent") from err
        except errors.IdempotencyPersistenceLayerError as err:
            self._unavailable(outcome.check, "alert", err)
            if not sent_here:
                publish()
            return True
        return bool(sent_here)

    def _once(self, key_prefix: str, function: Callable[[dict[str, str]], Any]) -> Any:
        idempotency, _ = _idempotency()
        config = idempotency.IdempotencyConfig(
            event_key_jmespath="event_id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=RECORD_LIFETIME_SECONDS,
        )
        config.register_lambda_context(self._context)
        layer = idempotency.DynamoDBPersistenceLayer(
            table_name=self.table_name, boto3_client=clients.client("dynamodb")
        )
        once = idempotency.idempotent_function(
            data_keyword_argument="data", config=config, persistence_store=layer, key_prefix=key_prefix
        )(function)
        return once(data={"event_id": self.event_id})

    def _unavailable(self, check: str, stage: str, err: IdempotencyPersistenceLayerError) -> None:
        cause = err.__cause__
        logger.warning(
            "outcome store unavailable, going on without it",
            check=check,
            stage=stage,
            event_id=self.event_id,
            table=self.table_name,
            error=type(cause).__name__ if cause is not None else type(err).__name__,
        )
        metrics.add_metric(name="OutcomeStoreUnavailable", unit=MetricUnit.Count, value=1)
