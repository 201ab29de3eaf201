"""`mlwarden replay --from-dlq QUEUE_URL`: re-drive dead-lettered events through the handlers.

Two kinds of message land in a handler's dead-letter queue:
- from an EventBridge rule whose retries ran out: the body is the event itself, and the message
  attribute RULE_ARN names the rule (deployed as `<stack>-<Function><Event>-<suffix>`);
- from Lambda's on-failure destination after the function's own retries: the body is an invocation
  record whose `requestPayload` is the event and whose `requestContext.functionArn` names the function.
When the message names a function, the event goes to that function only (the other targets of the
same event already succeeded); otherwise it is routed by the template's rules. A message is deleted
only after every handler it went to returned without raising; anything else stays in the queue for
the next re-drive (or a person), and is reported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlwarden_cli.replay import Replayed, Replayer
from mlwarden_cli.template import FunctionSpec, Template

# Messages stay invisible to other readers while their handler runs.
VISIBILITY_TIMEOUT_SECONDS = 300
_REGION_IN_URL = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


@dataclass(frozen=True)
class Redriven:
    message_id: str
    results: tuple[Replayed, ...]
    deleted: bool
    problem: str | None = None


def queue_region(queue_url: str) -> str | None:
    match = _REGION_IN_URL.match(queue_url)
    return match.group(1) if match else None


def unwrap(body: Any, attributes: Mapping[str, Any], template: Template) -> tuple[Any, list[FunctionSpec] | None]:
    """The event in a dead-lettered message, and the function it failed in when the message says so."""
    if isinstance(body, Mapping) and isinstance(body.get("requestContext"), Mapping) and "requestPayload" in body:
        function_arn = str(body["requestContext"].get("functionArn") or "")
        function_name = function_arn.split(":function:", 1)[-1].split(":", 1)[0]
        return body["requestPayload"], _functions_named_in(function_name, template)
    rule_arn = str((attributes.get("RULE_ARN") or {}).get("StringValue") or "")
    rule_name = rule_arn.rsplit("/", 1)[-1]
    return body, _functions_named_in(rule_name, template)


def _functions_named_in(deployed_name: str, template: Template) -> list[FunctionSpec] | None:
    if not deployed_name:
        return None
    # Deployed names carry the logical id; the longest match wins (FooFunction inside FooFunctionBar).
    named = [f for f in template.functions if f.logical_id in deployed_name]
    if not named:
        return None
    return [max(named, key=lambda f: len(f.logical_id))]


def redrive(queue_url: str, replayer: Replayer, sqs: Any, limit: int | None = None) -> Iterator[Redriven]:
    handled = 0
    seen: set[str] = set()
    while limit is None or handled < limit:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10 if limit is None else max(1, min(10, limit - handled)),
            WaitTimeSeconds=0,
            VisibilityTimeout=VISIBILITY_TIMEOUT_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            handled += 1
            yield _redrive_one(queue_url, message, replayer, sqs)


def _redrive_one(queue_url: str, message: Mapping[str, Any], replayer: Replayer, sqs: Any) -> Redriven:
    message_id = str(message["MessageId"])
    try:
        body = json.loads(message.get("Body") or "")
    except ValueError:
        return Redriven(message_id, (), deleted=False, problem="body is not JSON: left in the queue")
    event, functions = unwrap(body, message.get("MessageAttributes") or {}, replayer.template)
    results = tuple(replayer.replay(event, f"dlq:{message_id}", only=functions))
    if any(r.raised for r in results):
        return Redriven(message_id, results, deleted=False, problem="a handler raised: left in the queue")
    if all(r.function is None for r in results):
        return Redriven(message_id, results, deleted=False, problem="no function takes this event: left in the queue")
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return Redriven(message_id, results, deleted=True)
