"""SNS alerts: readable by a person in an email, filterable by a machine.

Every outcome worth a human's attention (all but `compliant` and `ignored`)
becomes one message: a subject under SNS's 100-character limit, a plain-text body
(what, where, who, what was done, and what to do now), the outcome as JSON, and
message attributes for SNS filter policies.

What an alert may carry: resource names, types, counts and the actor (a session
name may be an e-mail address: the security team needs it). What it never carries:
sensitive values, and the values of other teams' tags (an alert names tag keys;
it shows values only for ML Warden's own `mlwarden:` keys).

However large the outcome (a 10 KB policy's findings, a Macie finding with
thousands of detections), the whole published message stays within
ALERT_BUDGET_BYTES: long lists and texts are cut, the JSON block stays valid and
keeps every top-level key, and its `truncated` entry counts what was left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions
from mlwarden.errors import ACCESS_DENIED_CODES, AwsCallFailed
from mlwarden.outcomes import Outcome, OutcomeKind

SUBJECT_LIMIT = 99  # SNS allows fewer than 100 characters
_SUBJECT_UNSAFE = re.compile(r"[^\x20-\x7e]")
# What cannot travel in an SNS message (not UTF-8: lone surrogates) or in an SQS subscriber's copy (control
# characters outside tab, line feed and carriage return). Text from events may carry any of them.
_UNSENDABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
# In the human part one value stays on one line, so a value cannot forge a line such as "Undo:".
_LINE_BREAKS = re.compile(r"[\t\n\r\x85\u2028\u2029]")
ATTRIBUTE_LIMIT = 256

# SNS refuses a message above 262,144 bytes, counting the body and every attribute's name, type and value
# (https://docs.aws.amazon.com/sns/latest/api/API_MessageAttributeValue.html). An SQS subscriber receives the
# body JSON-escaped inside SNS's envelope (quotes and line breaks double), so alerts keep to a quarter of it:
# no refusal, and so no event retried for ever over an alert that cannot be sent.
SNS_MESSAGE_LIMIT_BYTES = 262_144
ALERT_BUDGET_BYTES = SNS_MESSAGE_LIMIT_BYTES // 4

_HEADLINE = {
    OutcomeKind.REMEDIATED: "fixed",
    OutcomeKind.WOULD_REMEDIATE: "would fix (dry run)",
    OutcomeKind.FLAGGED: "flagged",
    OutcomeKind.EXEMPT: "exempt, left as is",
    OutcomeKind.FAILED: "FAILED",
    OutcomeKind.COMPLIANT: "compliant",
    OutcomeKind.IGNORED: "ignored",
}

# Someone keeps re-opening the resource (flapguard): its own subject, and the message attribute flapping=true.
_FLAPPING_HEADLINE = "FLAPPING (re-opened again and again)"


@dataclass(frozen=True)
class Alert:
    subject: str
    body: str
    attributes: dict[str, dict[str, str]]

    @property
    def size_bytes(self) -> int:
        """What SNS counts against its limit: subject, body and each attribute's name, type and value (UTF-8)."""
        parts = [self.subject, self.body]
        for name, value in self.attributes.items():
            parts += [name, *value.values()]
        return sum(len(part.encode("utf-8")) for part in parts)


# --- what failed -------------------------------------------------------------------------------------------


def _failed_action(outcome: Outcome) -> str | None:
    """The AWS action a failed outcome stopped at: the call that raised, else the last one that did not take."""
    action = outcome.details.get("failed_action")
    if isinstance(action, str) and action:
        return action
    return outcome.actions[-1] if outcome.actions else None


def failed_headline(outcome: Outcome) -> str:
    """ "FAILED to fix" only when a fix was being made: a check that only reads or tags never claims one.

    A check may say it itself (`details.failed_to`, e.g. "flag"); else it follows from the AWS action that failed.
    """
    failed_to = outcome.details.get("failed_to")
    if isinstance(failed_to, str) and failed_to:
        return f"FAILED to {failed_to}"
    action = _failed_action(outcome)
    if action is None:
        return "FAILED"
    verb = action.rsplit(":", 1)[-1]
    if verb.startswith(("Get", "List", "Describe", "Head")):
        return "FAILED to check"
    if verb.startswith(("Tag", "Untag")) or "Tagging" in verb:
        return "FAILED to tag"
    if verb.startswith("Stop"):
        return "FAILED to stop"
    return "FAILED to fix"


def headline(outcome: Outcome) -> str:
    """What happened, in a few words; a check that only flags never says it failed to fix."""
    if outcome.outcome is OutcomeKind.FAILED:
        return failed_headline(outcome)
    if outcome.flapping:
        return _FLAPPING_HEADLINE
    return _HEADLINE[outcome.outcome]


def subject_for(outcome: Outcome) -> str:
    resource = outcome.resource or "unknown resource"
    short = resource.split(":::", 1)[-1] if resource.startswith("arn:") else resource
    if short.startswith("arn:"):
        # Regional ARNs (arn:aws:sagemaker:REGION:ACCOUNT:training-job/NAME): the type and name say enough.
        short = short.rsplit(":", 1)[-1]
    text = f"[ML Warden] {outcome.severity.value} {headline(outcome)}: {outcome.check} {short}"
    text = _SUBJECT_UNSAFE.sub("?", text)
    return text if len(text) <= SUBJECT_LIMIT else text[: SUBJECT_LIMIT - 3] + "..."


# --- other teams' tags ------------------------------------------------------------------------------------
#
# An alert names ML Warden's own tags (keys starting with "mlwarden:") with their values. Other teams' tags
# are theirs: neither key nor value is copied, only how many there are.

OWN_TAG_PREFIX = "mlwarden:"
# Neither is a valid tag key or value (AWS tags allow letters, digits, spaces and + - = . _ : / @ only), so
# a command copied from an alert with them fails instead of writing them.
HIDDEN_TAG_KEY = "<key not shown>"
HIDDEN_TAG_VALUE = "<value not shown>"
OTHER_TAGS = "(other tags)"
_TAG_CONTAINERS = frozenset({"tags", "tagset", "tag_set"})
# A tag as AWS CLI commands spell it: JSON {"Key":"k","Value":"v"} and shorthand Key=k,Value=v.
_JSON_TAG = re.compile(r'("Key"\s*:\s*")((?:[^"\\]|\\.)*)("\s*,\s*"Value"\s*:\s*")((?:[^"\\]|\\.)*)(")')
_SHORTHAND_TAG = re.compile(r"(Key=)([^,\s'\"]+)(,Value=)(\"[^\"]*\"|[^\s,'\"\]}]*)")


def _own_tag(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(OWN_TAG_PREFIX)


def _hide_in_text(text: str) -> str:
    def json_tag(match: re.Match[str]) -> str:
        return match[0] if _own_tag(match[2]) else f"{match[1]}{HIDDEN_TAG_KEY}{match[3]}{HIDDEN_TAG_VALUE}{match[5]}"

    def shorthand_tag(match: re.Match[str]) -> str:
        return match[0] if _own_tag(match[2]) else f"{match[1]}{HIDDEN_TAG_KEY}{match[3]}{HIDDEN_TAG_VALUE}"

    return _SHORTHAND_TAG.sub(shorthand_tag, _JSON_TAG.sub(json_tag, text))


def _hide_tags(value: dict[str, Any], under_tags: bool) -> dict[str, Any]:
    """One mapping with others' tags hidden: a {"Key": k, "Value": v} pair, or a tag map (counted)."""
    keys = {key.lower(): key for key in value}
    if "key" in keys and "value" in keys:
        if _own_tag(value[keys["key"]]):
            return value
        return {**value, keys["key"]: HIDDEN_TAG_KEY, keys["value"]: HIDDEN_TAG_VALUE}
    if under_tags and all(isinstance(v, str | None) for v in value.values()):
        own = {k: v for k, v in value.items() if _own_tag(k)}
        others = len(value) - len(own)
        return {**own, OTHER_TAGS: f"{others} not shown"} if others else own
    return value


# --- bounded size ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    items: int  # per list or mapping below the top level
    chars: int  # per text
    depth: int


# Tried in order until the message fits; an ordinary outcome fits the first untouched.
_LIMITS = (
    _Limits(items=200, chars=8_000, depth=12),
    _Limits(items=50, chars=2_000, depth=10),
    _Limits(items=20, chars=1_000, depth=8),
    _Limits(items=5, chars=300, depth=6),
    _Limits(items=2, chars=120, depth=4),
)


class _Cutter:
    """One walk over the outcome: hides others' tag values, cuts long lists, mappings and texts, and counts per
    path what was left out. Hiding comes first, so that a cut never leaves half a tag value behind."""

    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.cut: dict[str, dict[str, int]] = {}

    def text(self, value: str, path: str) -> str:
        value = _hide_in_text(_UNSENDABLE.sub("?", value))
        if len(value) <= self.limits.chars:
            return value
        left_out = len(value) - self.limits.chars
        self.cut[path] = {"characters_kept": self.limits.chars, "characters_left_out": left_out}
        return f"{value[: self.limits.chars]}... [{left_out} more characters cut]"

    def key(self, key: Any) -> str:
        return _UNSENDABLE.sub("?", str(key))[: self.limits.chars]

    def value(self, value: Any, path: str, depth: int = 0, under_tags: bool = False) -> Any:
        if isinstance(value, str):
            return self.text(value, path)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= self.limits.depth:
            self.cut[path] = {"levels_left_out": 1}
            return "[nested too deep: left out]"
        if isinstance(value, dict):
            # Keys come from events too (a state's or a finding's names): sendable and bounded like any text.
            shown = _hide_tags({self.key(k): v for k, v in value.items()}, under_tags)
            items = list(shown.items())
            # The top level and the trigger are small and fixed: the JSON block always has all their keys.
            limit = len(items) if depth == 0 or path == "trigger" else self.limits.items
            if len(items) > limit:
                self.cut[path] = {"kept": limit, "left_out": len(items) - limit}
            return {
                k: self.value(v, f"{path}.{k}" if path else k, depth + 1, under_tags or k.lower() in _TAG_CONTAINERS)
                for k, v in items[:limit]
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            limit = self.limits.items
            if len(items) > limit:
                self.cut[path] = {"kept": limit, "left_out": len(items) - limit}
            return [self.value(v, f"{path}[{i}]", depth + 1, under_tags) for i, v in enumerate(items[:limit])]
        return self.text(str(value), path)


# --- the body ----------------------------------------------------------------------------------------------


def _state_line(state: Any) -> str:
    if not state:
        return "(none recorded)"
    if not isinstance(state, dict):
        return json.dumps(state)
    return ", ".join(f"{key}={'none' if value is None else json.dumps(value)}" for key, value in state.items())


def _exempt_command(data: dict[str, Any]) -> str:
    """How a person keeps the resource as it is: the check's own hint, else the registry command."""
    hint = data.get("exempt_hint")
    return str(hint) if hint else exemptions.hint(str(data.get("resource") or "RESOURCE_ARN"), str(data["check"]))


def _next_step(data: dict[str, Any]) -> str | None:
    """The check's own next step: the outcome's `next_step`, or (as flag_wildcard_iam writes it) its details'."""
    details = data.get("details")
    step = data.get("next_step") or (details.get("next_step") if isinstance(details, dict) else None)
    return str(step) if step else None


def what_to_do(outcome: Outcome) -> list[str]:
    """The alert's "What to do now" steps, for other channels (Security Hub's remediation text)."""
    steps = list(_what_to_do(outcome, outcome.as_dict()))
    step = outcome.next_step
    return [step, *steps] if step else steps


def _what_to_do(outcome: Outcome, data: dict[str, Any]) -> Iterator[str]:
    """The "What to do now" paragraph: from the outcome's kind and its undo; the check's step is "To do" above."""
    kind = outcome.outcome
    to_do = _next_step(data) is not None
    undo = data.get("undo")
    if kind is OutcomeKind.REMEDIATED:
        yield "ML Warden changed this resource. Verify that the change is wanted" + (
            ", and do what To do above says." if to_do else "."
        )
        yield f"To undo it: {undo}" if undo else "It cannot be undone by one command: see Before above."
        yield f"To keep it as it was, {_exempt_command(data)}"
    elif kind is OutcomeKind.WOULD_REMEDIATE:
        yield "Dry run: nothing was changed. In enforce mode ML Warden would make the change shown above."
        yield "Next: do what To do above says." if to_do else "Next: make that change yourself, or decide it is wanted."
        yield f"If it must stay as it is, {_exempt_command(data)}"
    elif kind is OutcomeKind.FLAGGED:
        done = "it only added its tag" if outcome.actions else "it made no change"
        yield f"ML Warden flags this resource; {done}. The owner of the resource must fix it."
        yield "Next: do what To do above says." if to_do else "Next: fix what What above names."
        if undo:
            yield f"To remove ML Warden's tag again: {undo}"
        yield f"If it must stay as it is, {_exempt_command(data)}"
    elif kind is OutcomeKind.EXEMPT:
        exemption = data.get("details", {}).get("exemption") if isinstance(data.get("details"), dict) else None
        yield "Nothing was changed because the resource is exempt" + (f" ({exemption})." if exemption else ".")
        yield (
            "Check that the exemption is still wanted; to end it: mlwarden exempt revoke "
            f"{data.get('resource') or 'RESOURCE_ARN'}"
        )
    elif kind is OutcomeKind.FAILED:
        yield from _failed_steps(outcome, data)


def _failed_steps(outcome: Outcome, data: dict[str, Any]) -> Iterator[str]:
    action = _failed_action(outcome)
    code = outcome.error_code or "an error"
    if outcome.error_code == "VerificationFailed":
        yield f"{action or 'The change'} was made but did not read back as set: someone or something changed it again."
    else:
        yield f"{action or 'An AWS call'} failed with {code}."
    if outcome.error_code in ACCESS_DENIED_CODES:
        yield (
            f"Check that ML Warden's role may call {action} on this resource (template.yaml grants it) and that "
            "no SCP, permissions boundary or resource policy denies it."
        )
    if _next_step(data):
        yield "By hand: do what To do above says."
    elif outcome.new_state and headline(outcome) == "FAILED to fix":
        yield f"By hand: set {_state_line(data.get('new_state'))} on {data.get('resource') or 'the resource'}."
    else:
        yield "By hand: check the resource yourself against What above."
    yield (
        "ML Warden raised, so the event is retried and then kept in the dead-letter queue; "
        "once the cause is fixed, re-drive it: mlwarden replay --from-dlq QUEUE_URL"
    )


def _body(outcome: Outcome, data: dict[str, Any], cut: dict[str, dict[str, int]]) -> str:
    trigger = data["trigger"]
    who = trigger.get("actor") or f"{trigger.get('kind')} ({trigger.get('source')})"
    actions = data.get("actions") or []
    lines = [
        f"ML Warden {data['check']}: {headline(outcome)} ({data['severity']})",
        "",
        f"What:      {data['reason']}",
        f"Where:     {data.get('resource') or 'unknown'} (account {_account_line(trigger)}, "
        f"region {trigger.get('region') or 'unknown'})",
        f"Who:       {who}, via {trigger.get('name')} at {trigger.get('time') or 'unknown time'} "
        f"(event {data.get('event_id')})",
        f"Done:      {', '.join(str(a) for a in actions) if actions else 'no change made'}",
    ]
    if outcome.outcome is OutcomeKind.WOULD_REMEDIATE and data.get("new_state"):
        lines.append(f"Would set: {_state_line(data['new_state'])}")
    elif data.get("new_state"):
        lines.append(f"Now:       {_state_line(data['new_state'])}")
    if data.get("previous_state") is not None:
        lines.append(f"Before:    {_state_line(data['previous_state'])}")
    if data.get("undo"):
        lines.append(f"Undo:      {data['undo']}")
    to_do = _next_step(data)
    if to_do:
        lines.append(f"To do:     {to_do}")
    if data.get("exempt_hint"):
        lines.append(f"Exempt:    {data['exempt_hint']}")
    if cut:
        left_out = sum(c.get("left_out", 0) for c in cut.values())
        lines.append(
            f"Cut:       this alert was shortened to stay within SNS's size limit ({left_out} list entries and "
            f"{sum(c.get('characters_left_out', 0) for c in cut.values())} characters left out; "
            'per field in the JSON\'s "truncated")'
        )
    lines += ["", "What to do now:", *(f"  {step}" for step in _what_to_do(outcome, data))]
    lines = [_LINE_BREAKS.sub(" ", line) for line in lines]
    lines += ["", "Outcome (JSON):", json.dumps(data, indent=2, sort_keys=True)]
    return "\n".join(lines)


def _account_line(trigger: dict[str, Any]) -> str:
    """ACCOUNT, or ACCOUNT "name" in OU when organization mode knows the account's name and OU."""
    line = str(trigger.get("account") or "unknown")
    if trigger.get("account_name"):
        line += f" {json.dumps(str(trigger['account_name']))}"
    if trigger.get("organizational_unit"):
        line += f" in {trigger['organizational_unit']}"
    return line


def _attributes(outcome: Outcome) -> dict[str, dict[str, str]]:
    """SNS message attributes for subscription filter policies."""
    trigger = outcome.trigger

    def attribute(value: str | None) -> dict[str, str]:
        # Printable ASCII, bounded: a value from an event can neither make SNS refuse the message nor swell it.
        return {"DataType": "String", "StringValue": _SUBJECT_UNSAFE.sub("?", value or "unknown")[:ATTRIBUTE_LIMIT]}

    attributes = {
        "severity": attribute(outcome.severity.value),
        "check": attribute(outcome.check),
        "outcome": attribute(outcome.outcome.value),
        "account": attribute(trigger.account),
        "region": attribute(trigger.region),
    }
    if trigger.account_name:
        attributes["account_name"] = attribute(trigger.account_name)
    if trigger.organizational_unit:
        attributes["organizational_unit"] = attribute(trigger.organizational_unit)
    if outcome.flapping:
        attributes["flapping"] = attribute("true")
    return attributes


def render(outcome: Outcome) -> Alert:
    attributes = _attributes(outcome)
    subject = subject_for(outcome)
    data = outcome.as_dict()
    for limits in _LIMITS:
        cutter = _Cutter(limits)
        bounded: dict[str, Any] = cutter.value(data, "")
        if cutter.cut:
            bounded["truncated"] = cutter.cut
        alert = Alert(subject=subject, body=_body(outcome, bounded, cutter.cut), attributes=attributes)
        if alert.size_bytes <= ALERT_BUDGET_BYTES:
            return alert
    return _smallest(outcome, data, subject, attributes)


def _smallest(outcome: Outcome, data: dict[str, Any], subject: str, attributes: dict[str, dict[str, str]]) -> Alert:
    """The last resort for an outcome no limit made small enough: its large parts left out, and counted."""
    cutter = _Cutter(_LIMITS[-1])
    kept = {key: value for key, value in data.items() if key not in ("details", "previous_state", "new_state")}
    bounded: dict[str, Any] = cutter.value(kept, "")
    cut = {**cutter.cut, **{key: {"left_out": 1} for key in ("details", "previous_state", "new_state")}}
    bounded.update({"details": {}, "previous_state": None, "new_state": None, "truncated": cut})
    return Alert(subject=subject, body=_body(outcome, bounded, cut), attributes=attributes)


def publish(outcome: Outcome, topic_arn: str) -> str:
    """Publish the outcome's alert; returns the SNS message id."""
    alert = render(outcome.with_alerted())
    region = topic_arn.split(":")[3]
    try:
        response = clients.client("sns", region).publish(
            TopicArn=topic_arn,
            Subject=alert.subject,
            Message=alert.body,
            MessageAttributes=alert.attributes,
        )
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("sns:Publish", err) from err
    return str(response["MessageId"])
