"""`mlwarden replay --from-dlq`: re-drive the events in a dead-letter queue through their handlers.

Two kinds of message end up in ML Warden's dead-letter queues:
- EventBridge's, after the rule's retries: the body is the event, the message attributes name the
  target (TARGET_ARN, the function) and the rule (RULE_ARN).
- Lambda's on-failure destination, after the function's own retries: the body is an invocation
  record whose `requestPayload` is the event and whose `requestContext.functionArn` names the function.

The event goes to the function the message names, and only there (the other targets of the same
event already succeeded). A message is deleted only once that function reached a decision other
than `ignored` (remediated, flagged, compliant, exempt, ...). Every other message (unreadable, naming
no function of the template, ignored there, or raised again) was not handled: with a hold queue it is
moved there for a person, with the reason in a message attribute; without one it stays in the
dead-letter queue and is reported. The queue is long-polled until it reports empty, so messages
that a short poll misses (SQS samples a subset of its servers) are not left behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from mlwarden_cli.replay import UNROUTED, Replayed, Replayer
from mlwarden_cli.template import FunctionSpec, Template

# Messages stay invisible to other readers while their handler runs, and while this run keeps them.
VISIBILITY_TIMEOUT_SECONDS = 300
# Long polls of 15 s: SQS allows 20, but a poll must end before the clients' read timeout (20 s) or the
# client would time out and retry an answer that is on its way.
LONG_POLL_SECONDS = 15
# Empty long polls in a row while the queue still counts messages (delayed, or in flight in another reader)
# before the re-drive gives up on them and reports them.
MAX_EMPTY_POLLS = 6
# SQS allows 10 message attributes; the hold reason is added only where there is room.
MAX_MESSAGE_ATTRIBUTES = 10
HOLD_REASON_ATTRIBUTE = "MLWARDEN_HOLD_REASON"
HOLD_SOURCE_ATTRIBUTE = "MLWARDEN_SOURCE_QUEUE"
_REGION_IN_URL = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")
# A decision was reached: anything a check returns except `ignored` (and `failed`, which raises).
_NOT_A_DECISION = frozenset({"ignored", "failed", UNROUTED})


class Disposition(StrEnum):
    DELETED = "deleted"  # handled: removed from the dead-letter queue
    HELD = "held"  # not handled: moved to the hold queue
    KEPT = "kept"  # not handled: left in the dead-letter queue


@dataclass(frozen=True)
class RedriveOptions:
    hold_queue_url: str | None = None
    limit: int | None = None
    wait_seconds: int = LONG_POLL_SECONDS


@dataclass(frozen=True)
class Redriven:
    message_id: str
    results: tuple[Replayed, ...]
    disposition: Disposition
    problem: str | None = None

    @property
    def deleted(self) -> bool:
        return self.disposition is Disposition.DELETED

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "deleted": self.deleted,
            "disposition": self.disposition.value,
            "problem": self.problem,
            "results": [r.as_json() for r in self.results],
        }


class RedriveError(RuntimeError):
    """The re-drive cannot start (the hold queue is the dead-letter queue itself)."""


def queue_region(queue_url: str) -> str | None:
    match = _REGION_IN_URL.match(queue_url)
    return match.group(1) if match else None


def unwrap(body: Any, attributes: Mapping[str, Any], template: Template) -> tuple[Any, list[FunctionSpec] | None]:
    """The event in a dead-lettered message, and the function it failed in (None: the message names none)."""
    if isinstance(body, Mapping) and isinstance(body.get("requestContext"), Mapping) and "requestPayload" in body:
        function_arn = str(body["requestContext"].get("functionArn") or "")
        return body["requestPayload"], _functions_named_in(_function_name(function_arn), template)
    target_arn = _attribute(attributes, "TARGET_ARN")
    if ":function:" in target_arn:
        return body, _functions_named_in(_function_name(target_arn), template)
    return body, _functions_named_in(_attribute(attributes, "RULE_ARN").rsplit("/", 1)[-1], template)


def _attribute(attributes: Mapping[str, Any], name: str) -> str:
    value = attributes.get(name)
    return str(value.get("StringValue") or "") if isinstance(value, Mapping) else ""


def _function_name(function_arn: str) -> str:
    if ":function:" not in function_arn:
        return ""
    return function_arn.split(":function:", 1)[1].split(":", 1)[0]


def _functions_named_in(deployed_name: str, template: Template) -> list[FunctionSpec] | None:
    if not deployed_name:
        return None
    # Deployed names carry the logical id; the longest match wins (FooFunction inside FooFunctionBar).
    named = [f for f in template.functions if f.logical_id in deployed_name]
    if not named:
        return None
    return [max(named, key=lambda f: len(f.logical_id))]


def redrive(queue_url: str, replayer: Replayer, sqs: Any, options: RedriveOptions) -> Iterator[Redriven]:
    """Re-drive every message until the queue reports empty (or `options.limit` messages)."""
    if options.hold_queue_url is not None:
        if options.hold_queue_url == queue_url:
            raise RedriveError("the hold queue must not be the dead-letter queue itself")
        sqs.get_queue_attributes(QueueUrl=options.hold_queue_url, AttributeNames=["QueueArn"])  # exists, reachable
    handled = empty_polls = 0
    seen: set[str] = set()
    kept: dict[str, str] = {}  # message id -> receipt handle, invisible to others while this run lasts
    try:
        while options.limit is None or handled < options.limit:
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10 if options.limit is None else max(1, min(10, options.limit - handled)),
                WaitTimeSeconds=options.wait_seconds,
                VisibilityTimeout=VISIBILITY_TIMEOUT_SECONDS,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            for message in messages:  # one this run kept came back (a run longer than the visibility timeout)
                if message["MessageId"] in kept:
                    kept[message["MessageId"]] = message["ReceiptHandle"]
            fresh = [m for m in messages if m["MessageId"] not in seen]
            if not fresh:
                empty_polls += 1
                if _reports_empty(sqs, queue_url, len(kept)) or empty_polls >= MAX_EMPTY_POLLS:
                    return
                continue
            empty_polls = 0
            for message in fresh:
                seen.add(message["MessageId"])
                handled += 1
                redriven = _redrive_one(queue_url, message, replayer, sqs, options.hold_queue_url)
                if redriven.disposition is Disposition.KEPT:
                    kept[redriven.message_id] = message["ReceiptHandle"]
                yield redriven
    finally:
        # What stays in the queue is visible again right away, to a person or the next re-drive.
        # Best effort: a message whose handle went stale becomes visible anyway when its visibility timeout ends.
        for receipt_handle in kept.values():
            with suppress(ClientError):
                sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=0)


def _reports_empty(sqs: Any, queue_url: str, kept_by_this_run: int) -> bool:
    counts = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    visible, delayed, in_flight = (
        int(counts.get(f"ApproximateNumberOfMessages{kind}", 0)) for kind in ("", "Delayed", "NotVisible")
    )
    waiting = visible + delayed
    in_flight_elsewhere = in_flight - kept_by_this_run
    return waiting == 0 and in_flight_elsewhere <= 0


def unhandled_reason(results: tuple[Replayed, ...], named: bool) -> str | None:
    """Why the message was not handled, or None when the function it names reached a decision."""
    if not named:
        return "the message names no function of this template"
    if not results or all(r.outcome == UNROUTED for r in results):
        return "no function takes this event"
    for result in results:
        if result.raised:
            return f"{result.function} raised: {result.reason}"
        if result.outcome in _NOT_A_DECISION:
            return f"{result.function} did not decide ({result.outcome}): {result.reason}"
    return None


def _redrive_one(
    queue_url: str, message: Mapping[str, Any], replayer: Replayer, sqs: Any, hold_queue_url: str | None
) -> Redriven:
    message_id = str(message["MessageId"])
    try:
        body = json.loads(message.get("Body") or "")
    except (ValueError, RecursionError):
        results: tuple[Replayed, ...] = ()
        problem: str | None = "body is not JSON"
    else:
        event, functions = unwrap(body, message.get("MessageAttributes") or {}, replayer.template)
        results = tuple(replayer.replay(event, f"dlq:{message_id}", only=functions)) if functions else ()
        problem = unhandled_reason(results, named=functions is not None)
    if problem is None:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return Redriven(message_id, results, Disposition.DELETED)
    if hold_queue_url is None:
        return Redriven(message_id, results, Disposition.KEPT, f"{problem}: left in the queue")
    try:
        _move(message, queue_url, hold_queue_url, problem, sqs)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        return Redriven(message_id, results, Disposition.KEPT, f"{problem}: not moved ({code}), left in the queue")
    return Redriven(message_id, results, Disposition.HELD, f"{problem}: moved to the hold queue")


def _move(message: Mapping[str, Any], queue_url: str, hold_queue_url: str, problem: str, sqs: Any) -> None:
    """Send the message, body and attributes unchanged, to the hold queue; delete it here only once sent."""
    attributes = {
        name: {key: value[key] for key in ("DataType", "StringValue", "BinaryValue") if key in value}
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    for name, text in ((HOLD_REASON_ATTRIBUTE, problem[:1000]), (HOLD_SOURCE_ATTRIBUTE, queue_url)):
        if len(attributes) < MAX_MESSAGE_ATTRIBUTES:
            attributes[name] = {"DataType": "String", "StringValue": text}
    fifo = {}
    if hold_queue_url.endswith(".fifo"):
        fifo = {"MessageGroupId": "mlwarden-redrive", "MessageDeduplicationId": str(message["MessageId"])}
    sqs.send_message(
        QueueUrl=hold_queue_url, MessageBody=message.get("Body") or "", MessageAttributes=attributes, **fifo
    )
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
