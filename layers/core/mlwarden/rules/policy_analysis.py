"""A linter-grade reading of an IAM identity policy: pure code, no AWS calls.

Normalises every shape IAM accepts (Statement as an object or a list, Action/Resource as a string or
a list, NotAction/NotResource, Conditions) and evaluates the document the way IAM does within one
policy: an unconditional Deny that covers an action on a resource removes it from what the Allows
grant (with Action or NotAction, Resource or NotResource on either side); `NotResource: "*"` grants
nothing; a statement whose Condition can never be true is left out. Then it reports what is granted:

- CRITICAL  Allow of `*` (or NotAction) on `*`: full administrator.
- HIGH      a complete privilege-escalation path (escalation.py: sets of actions that together let the
            holder act with more privilege) on every resource of the action's type in the account or
            in every account; Allow of `service:*` on `*`.
- MEDIUM    a complete path on a name-prefix pattern (`role/ml-*`), or half of a path on `*` (the
            finding names what it lacks); `service:*` (or `*`, or NotAction) on specific resources;
            wildcard data-access actions (`s3:Get*`, `s3:*Object`, in the DATA_SERVICES) or wildcards
            reaching resource policies (Permissions management) on `*`; Allow with NotResource.
- LOW       an action that takes a resource, allowed on `*` (parliament's RESOURCE_STAR).
- INFORMATIONAL  actions AWS's catalogue does not know (typos, retired actions).

`*` on an action that takes no resource (`s3:ListAllMyBuckets`) is no finding: IAM accepts nothing
else. A Condition that restricts where the grant applies (`aws:ResourceTag/...`, `aws:SourceVpce`,
`aws:PrincipalOrgID`, ...) lowers a finding one step and is named in it. Deny statements only take
permissions away and are not findings; a Deny with a Condition may not apply, so it takes nothing away.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any

from mlwarden.outcomes import Severity
from mlwarden.rules import action_catalogue, escalation
from mlwarden.rules.action_catalogue import ActionInfo

SEVERITY_ORDER = (Severity.INFORMATIONAL, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
_MAX_LISTED = 20  # actions named per finding; the rest are counted
# Keys that narrow a grant to some resources, networks or principals. "IfExists" operators and
# Null=true do not: they pass when the key is absent.
_RESTRICTING_KEYS = frozenset(
    {
        "aws:sourcevpce",
        "aws:sourcevpc",
        "aws:sourceip",
        "aws:vpcsourceip",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principalaccount",
        "aws:resourceaccount",
        "aws:resourceorgid",
        "aws:resourceorgpaths",
        "aws:sourceaccount",
        "aws:sourcearn",
        "aws:sourceorgid",
        "aws:calledvia",
        "aws:calledviafirst",
        "aws:calledvialast",
        "aws:viaawsservice",
        "iam:passedtoservice",
        "iam:policyarn",
        "iam:permissionsboundary",
        "kms:viaservice",
        # Key policies: "the caller's account", as in AWS managed keys' own policies.
        "kms:calleraccount",
        "sts:externalid",
    }
)
_RESTRICTING_KEY_PATTERN = re.compile(r"^[a-z0-9-]+:(resourcetag|principaltag|requestedregion)(/.*)?$")
# Services whose Read/Write actions reach the data itself (objects, items, secrets, records, images).
DATA_SERVICES = frozenset(
    {
        "s3",
        "s3-object-lambda",
        "dynamodb",
        "secretsmanager",
        "ssm",
        "kms",
        "rds-data",
        "redshift-data",
        "athena",
        "glue",
        "lakeformation",
        "sqs",
        "kinesis",
        "firehose",
        "logs",
        "es",
        "aoss",
        "elasticfilesystem",
        "ecr",
        "codecommit",
        "sagemaker",
        "bedrock",
        "backup",
    }
)
# Read-level actions that describe a resource rather than return its data.
_METADATA_PREFIXES = ("Describe", "List")
_WILDCARD_TAIL = re.compile(r"[*/]*\*")
_GLOB = re.compile(r"[*?]")
_TYPED_WILDCARD_TAIL = re.compile(r"([\w.-]+[/:])?[*/]*\*")


# The services whose ARNs an action's resources carry, where they are not the action's own.
_RESOURCE_SERVICES = {"sts": ("iam",), "ec2-instance-connect": ("ec2",), "ssm": ("ssm", "ec2")}
# Actions IAM authorizes on several resources at once, of which one is the compute the code runs on: a grant
# that does not reach that compute (a document only) runs nothing.
_INSTANCES = ("arn:*:ec2:*:*:instance/*", "arn:*:ssm:*:*:managed-instance/*")
_TARGETS = {"ssm:sendcommand": _INSTANCES, "ssm:startsession": _INSTANCES}
# Date operators that can only ever compare against the past: a token is issued before the request.
_TIME_KEYS = frozenset({"aws:currenttime", "aws:epochtime", "aws:tokenissuetime"})
# Temporary credentials live at most 36 hours; a token issued before now minus this is expired.
_LONGEST_SESSION = timedelta(hours=36)


class Rule(StrEnum):
    FULL_ADMIN = "full-admin"
    SERVICE_WILDCARD = "service-wildcard"
    PRIVILEGE_ESCALATION = "privilege-escalation"
    PARTIAL_ESCALATION = "partial-escalation"
    DATA_ACCESS_WILDCARD = "data-access-wildcard"
    NOT_ACTION = "not-action"
    NOT_RESOURCE = "not-resource"
    RESOURCE_STAR = "resource-star"
    UNKNOWN_ACTION = "unknown-action"
    DECRYPT_ON_ANY_KEY = "decrypt-on-any-key"


class Reach(IntEnum):
    """How many resources of an action's type a resource pattern reaches."""

    NARROW = 0  # named resources
    PREFIX = 1  # a name-prefix pattern: `role/ml-*`, `policy/team-*`
    ANY = 2  # every resource of the type in the account, or in every account


_WHY = {
    Rule.FULL_ADMIN: "allows every action on every resource: full administrator",
    Rule.SERVICE_WILDCARD: "allows every action of the service, including the ones that change permissions or "
    "delete data",
    Rule.PRIVILEGE_ESCALATION: "completes a privilege-escalation path: together these actions let the holder act "
    "with more privilege than this policy says",
    Rule.PARTIAL_ESCALATION: "half of a privilege-escalation path: one more grant would complete it",
    Rule.DATA_ACCESS_WILDCARD: "a wildcard that reaches data (read or write) or resource policies in every "
    "resource of the service",
    Rule.NOT_ACTION: "NotAction allows every action except the listed ones, including future ones",
    Rule.NOT_RESOURCE: "NotResource allows the actions on every resource except the listed ones",
    Rule.RESOURCE_STAR: "allowed on every resource although the action can be scoped to resource ARNs",
    Rule.UNKNOWN_ACTION: "not an action in AWS's catalogue (a typo, or a retired or too new action)",
    Rule.DECRYPT_ON_ANY_KEY: "decrypts with every KMS key: whatever any key protects (training data, models, "
    "volumes) is readable by the holder",
}
_SUGGESTION = {
    Rule.FULL_ADMIN: "grant the actions the workload calls, on the ARNs it uses; keep administrator access for "
    "break-glass roles with MFA",
    Rule.SERVICE_WILDCARD: "list the actions the workload calls (IAM Access Analyzer can generate them from "
    "CloudTrail) and scope them to resource ARNs",
    Rule.PRIVILEGE_ESCALATION: "scope to specific ARNs (iam:PassRole to the one role, with an iam:PassedToService "
    "condition); never grant these on * or on every role of the account",
    Rule.PARTIAL_ESCALATION: "scope it to the ARNs the workload needs before the missing half is granted elsewhere",
    Rule.DATA_ACCESS_WILDCARD: "name the actions and scope them to the buckets, tables or keys the workload needs",
    Rule.NOT_ACTION: "use Action with the actions needed instead of NotAction",
    Rule.NOT_RESOURCE: "use Resource with the ARNs needed instead of NotResource",
    Rule.RESOURCE_STAR: "replace * with the ARNs the workload uses",
    Rule.UNKNOWN_ACTION: "check the spelling against the Service Authorization Reference",
    Rule.DECRYPT_ON_ANY_KEY: "allow kms:Decrypt and kms:ReEncryptFrom only on the key ARNs the workload uses",
}
# The Security Hub controls a rule answers (KMS.1: customer managed policies, KMS.2: inline policies).
RULE_CONTROLS = {Rule.DECRYPT_ON_ANY_KEY: ("KMS.1", "KMS.2")}
# Security Hub KMS.1/KMS.2 (AWS Config rule iam-customer-policy-blocked-kms-actions): these actions must not
# be allowed on all keys. https://docs.aws.amazon.com/securityhub/latest/userguide/kms-controls.html
DECRYPT_ACTIONS = ("kms:decrypt", "kms:reencryptfrom")


def is_any_resource(resource: str) -> bool:
    """`*`, or an ARN that names every resource of its type in every account (parliament's "effectively star").

    `arn:aws:s3:::*`, `arn:*:cloudtrail:*:*:trail/*` and `arn:aws:iam::*:role/*` are; an ARN that names
    an account (`arn:aws:iam::123456789012:role/*`) is scoped to that account and is not (for
    escalation it reaches as far: see `resource_reach`).
    """
    if resource == "*":
        return True
    parts = resource.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return False
    _, _, service, region, account, rest = parts
    if service in ("*", "") or account == "*":
        return bool(_TYPED_WILDCARD_TAIL.fullmatch(rest))
    if account == "" and region in ("", "*"):
        return bool(_WILDCARD_TAIL.fullmatch(rest))
    return False


def resource_reach(resource: str) -> Reach:
    """How far a resource pattern reaches for escalation.

    Every role of one account (`arn:aws:iam::123456789012:role/*`) is as good as every role anywhere:
    the holder picks the most privileged one. A name prefix (`role/ml-*`, `policy/team-*`) is one step
    narrower; a named resource is narrow.
    """
    if is_any_resource(resource):
        return Reach.ANY
    parts = resource.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return Reach.PREFIX if _GLOB.search(resource) else Reach.NARROW
    account, rest = parts[4], parts[5]
    if account and _TYPED_WILDCARD_TAIL.fullmatch(rest):
        return Reach.ANY
    return Reach.PREFIX if _GLOB.search(rest) else Reach.NARROW


def rank(severity: Severity) -> int:
    return SEVERITY_ORDER.index(severity)


def _lower(severity: Severity) -> Severity:
    return SEVERITY_ORDER[max(rank(severity) - 1, 1)] if severity is not Severity.INFORMATIONAL else severity


@dataclass(frozen=True)
class Finding:
    """One rule one statement breaks (or one escalation path statements complete), with the actions and
    resources involved."""

    statement: int  # index in the Statement list (0 for a single statement object); the first one involved
    sid: str | None
    rule: Rule
    severity: Severity
    actions: tuple[str, ...]  # as written in the policy (escalation findings: the path's actions)
    resources: tuple[str, ...]
    # Escalation actions a wildcard reaches, from the path catalogue.
    expands_to: tuple[str, ...] = ()
    # Restricting condition keys that lowered the severity one step.
    conditions: tuple[str, ...] = ()
    # Escalation findings: the catalogue ids of the paths completed (or half-completed), the path named in
    # words, every statement involved, and for a half path what each would still need.
    paths: tuple[str, ...] = ()
    path: str = ""
    statements: tuple[int, ...] = ()
    lacks: tuple[str, ...] = ()

    @property
    def why(self) -> str:
        return _WHY[self.rule]

    @property
    def suggestion(self) -> str:
        return _SUGGESTION[self.rule]

    @property
    def controls(self) -> tuple[str, ...]:
        """The Security Hub control ids this finding fails."""
        return RULE_CONTROLS.get(self.rule, ())

    @property
    def message(self) -> str:
        """One line for an alert or a linter: the path in words, or the actions and why they matter."""
        if self.path:
            return self.path
        actions = ", ".join(_capped(self.actions))
        return f"{actions}: {self.why}"

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "statement": self.statement,
            "sid": self.sid,
            "rule": self.rule.value,
            "severity": self.severity.value,
            "actions": _capped(self.actions),
            "resources": _capped(self.resources),
            "why": self.why,
            "suggestion": self.suggestion,
        }
        if self.controls:
            shown["controls"] = list(self.controls)
        if self.expands_to:
            shown["expands_to"] = _capped(self.expands_to)
        if self.conditions:
            shown["lowered_by_condition"] = list(self.conditions)
        if self.paths:
            shown["path"] = self.path
            shown["paths"] = _capped(self.paths)
            shown["statements"] = list(self.statements)
        if self.lacks:
            shown["lacks"] = _capped(self.lacks)
        return shown


def _capped(values: tuple[str, ...]) -> list[str]:
    if len(values) <= _MAX_LISTED:
        return list(values)
    return [*values[:_MAX_LISTED], f"... and {len(values) - _MAX_LISTED} more"]


@dataclass(frozen=True)
class Analysis:
    """The findings of one policy document, and the shapes that could not be read."""

    findings: tuple[Finding, ...]
    statements: int
    # Shapes IAM would reject or that could not be read; the rest of the document is still analysed.
    problems: tuple[str, ...] = field(default=())

    @property
    def highest(self) -> Severity | None:
        return max((f.severity for f in self.findings), key=rank, default=None)

    def at_least(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if rank(f.severity) >= rank(severity))


def _strings(value: Any) -> tuple[list[str], bool]:
    """Strings from a string or a list; the flag says something else was there."""
    if value is None:
        return [], False
    if isinstance(value, str):
        return [value], False
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, str)]
        return texts, len(texts) != len(value)
    return [], True


def restricting_conditions(condition: Any, services: frozenset[str] | None = None) -> tuple[str, ...]:
    """The condition keys that narrow where a statement applies, as written.

    Operators that pass when the key is absent do not narrow anything: `...IfExists`, `Null: true` and
    the negated ones (`StringNotEquals`, `ArnNotLike`, `NotIpAddress`, ...). A service's own key
    (`ec2:ResourceTag/...`) narrows only that service's actions: `services` are the statement's.
    """
    if not isinstance(condition, Mapping):
        return ()
    found: list[str] = []
    for operator, clauses in condition.items():
        if not isinstance(operator, str) or not isinstance(clauses, Mapping):
            continue
        if operator.endswith("IfExists") or "Not" in operator.split(":")[-1]:
            continue
        for key, value in clauses.items():
            if not isinstance(key, str):
                continue
            if operator == "Null" and str(value).lower() != "false":
                continue
            lower = key.lower()
            prefix = lower.split(":", 1)[0]
            if services is not None and prefix != "aws" and prefix not in services:
                continue
            if lower in _RESTRICTING_KEYS or _RESTRICTING_KEY_PATTERN.match(lower):
                found.append(key)
    return tuple(dict.fromkeys(found))


def never_true(condition: Any, now: datetime | None = None) -> str | None:
    """Why a Condition can never be true, or None. Anything unparseable is taken as possibly true.

    Two cases are certain: a `DateLessThan(Equals)` on a time key (`aws:CurrentTime`, `aws:EpochTime`,
    `aws:TokenIssueTime`) whose every date is in the past (for a token: older than the longest session),
    and `Null: true` on a key that another operator, in the same block, requires to have a value.
    """
    if not isinstance(condition, Mapping):
        return None
    moment = now or datetime.now(UTC)
    must_be_absent: set[str] = set()
    must_be_present: set[str] = set()
    for operator, clauses in condition.items():
        if not isinstance(operator, str) or not isinstance(clauses, Mapping):
            return None  # IAM rejects it; never let a malformed block remove a statement
        for key, value in clauses.items():
            if not isinstance(key, str):
                return None
            lower = key.lower()
            if operator == "Null":
                if str(value).lower() == "true":
                    must_be_absent.add(lower)
                continue
            if not operator.endswith("IfExists") and ":" not in operator:
                must_be_present.add(lower)
            if operator in ("DateLessThan", "DateLessThanEquals") and lower in _TIME_KEYS:
                dates = [_date(v) for v in (value if isinstance(value, list) else [value])]
                limit = moment - (_LONGEST_SESSION if lower == "aws:tokenissuetime" else timedelta(0))
                if dates and all(d is not None and d < limit for d in dates):
                    return f"{operator} {key} is in the past"
    contradicted = sorted(must_be_absent & must_be_present)
    if contradicted:
        return f"{contradicted[0]} must be both absent (Null) and present"
    return None


def _date(value: Any) -> datetime | None:
    text = str(value).strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Statement:
    """One statement, normalised: tuples of strings, the Condition as written."""

    index: int
    sid: str | None
    allow: bool
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    resources: tuple[str, ...]
    not_resources: tuple[str, ...]
    condition: Any
    # Neither Resource nor NotResource: a resource or trust policy, about the resource it is attached to.
    on_attached_resource: bool

    @property
    def services(self) -> frozenset[str]:
        return frozenset(a.split(":", 1)[0].lower() for a in self.actions + self.not_actions if ":" in a)

    def grants_nothing(self) -> bool:
        return "*" in self.not_resources or not (self.actions or self.not_actions)


def _parse(index: int, statement: Mapping[str, Any], problems: list[str]) -> _Statement | None:
    effect = statement.get("Effect")
    if effect not in ("Allow", "Deny"):
        problems.append(f"statement {index} has Effect {str(effect)[:20]!r}, neither Allow nor Deny")
        return None
    actions, odd_actions = _strings(statement.get("Action"))
    not_actions, odd_not_actions = _strings(statement.get("NotAction"))
    resources, odd_resources = _strings(statement.get("Resource"))
    not_resources, odd_not_resources = _strings(statement.get("NotResource"))
    if odd_actions or odd_not_actions or odd_resources or odd_not_resources:
        problems.append(f"statement {index} has an Action or Resource that is not a string or a list of strings")
    if "Action" in statement and "NotAction" in statement:
        problems.append(f"statement {index} has both Action and NotAction (IAM rejects it)")
    elif not actions and not not_actions:
        problems.append(f"statement {index} has no Action or NotAction")
    sid = statement.get("Sid")
    return _Statement(
        index=index,
        sid=sid if isinstance(sid, str) else None,
        allow=effect == "Allow",
        # Action and NotAction together: IAM rejects it; read as NotAction, the side that grants more.
        actions=() if not_actions else tuple(actions),
        not_actions=tuple(not_actions),
        resources=tuple(resources),
        not_resources=tuple(not_resources),
        condition=statement.get("Condition"),
        on_attached_resource="Resource" not in statement and "NotResource" not in statement,
    )


def analyze(document: Mapping[str, Any] | Any, now: datetime | None = None) -> Analysis:
    """Findings for one policy document (a parsed JSON object), as of `now` (for time conditions)."""
    if not isinstance(document, Mapping):
        return Analysis((), 0, ("the policy is not a JSON object",))
    raw = document.get("Statement")
    if isinstance(raw, Mapping):
        raw_statements: list[Any] = [raw]
    elif isinstance(raw, list):
        raw_statements = raw
    else:
        return Analysis((), 0, ("the policy has no Statement",))
    problems: list[str] = []
    allows: list[_Statement] = []
    denies: list[_Statement] = []
    for index, raw_statement in enumerate(raw_statements):
        if not isinstance(raw_statement, Mapping):
            problems.append(f"statement {index} is not an object")
            continue
        parsed = _parse(index, raw_statement, problems)
        if parsed is None or never_true(parsed.condition, now) is not None:
            continue
        if parsed.allow:
            allows.append(parsed)
        elif parsed.condition is None and (parsed.actions or parsed.not_actions):
            # A conditional Deny may not apply, and one without actions is rejected by IAM: neither
            # takes anything away (a malformed Deny must never silence the Allows next to it).
            denies.append(parsed)
    findings: list[Finding] = []
    admin: set[int] = set()
    for allow in allows:
        if allow.grants_nothing():
            continue
        effective = _after_denies(allow, denies)
        if effective is not None:
            found = _statement_findings(effective)
            findings += found
            if any(f.rule is Rule.FULL_ADMIN for f in found):
                admin.add(allow.index)  # every path is complete there: full-admin says it all
    findings += _escalation_findings([a for a in allows if a.index not in admin], denies)
    return Analysis(tuple(findings), len(raw_statements), tuple(problems))


# --- IAM's wildcard matching ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _glob(pattern: str) -> re.Pattern[str]:
    """A pattern's regex; its `?` does not match a wildcard, so `a?` does not cover `a*`."""
    return re.compile("".join(".*" if c == "*" else "[^*?]" if c == "?" else re.escape(c) for c in pattern))


def _covers_action(general: str, specific: str) -> bool:
    """Every action `specific` can match is matched by `general` (case-insensitive, as IAM compares)."""
    return bool(_glob(general.strip().lower()).fullmatch(specific.strip().lower()))


# For the other rule sets (bucket policies): one way to match an action pattern.
covers_action = _covers_action


@functools.lru_cache(maxsize=4096)
def _any_action_glob(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a list of action patterns: matches what any of them covers (lower-case input)."""
    return re.compile("|".join(f"(?:{_glob(p.strip().lower()).pattern})" for p in patterns) or "(?!)")


def _covered_by_any(patterns: tuple[str, ...], action: str) -> bool:
    return bool(_any_action_glob(patterns).fullmatch(action.strip().lower()))


def _covers_resource(general: str, specific: str) -> bool:
    return bool(_glob(general).fullmatch(specific))


def _resources_overlap(one: str, other: str) -> bool:
    """Whether some resource matches both patterns; two ARNs are compared part by part."""
    one_parts, other_parts = one.split(":", 5), other.split(":", 5)
    if len(one_parts) == len(other_parts) == 6 and not one.startswith("*") and not other.startswith("*"):
        return all(_patterns_overlap(a, b) for a, b in zip(one_parts, other_parts, strict=True))
    return _patterns_overlap(one, other)


def _patterns_overlap(one: str, other: str) -> bool:
    if _covers_resource(one, other) or _covers_resource(other, one):
        return True
    if not (_GLOB.search(one) and _GLOB.search(other)):
        return False
    # Both wildcards, neither covers the other: they overlap unless their fixed prefixes disagree.
    head, tail = _GLOB.split(one, 1)[0], _GLOB.split(other, 1)[0]
    return head.startswith(tail) or tail.startswith(head)


def _deny_covers_resource(deny: _Statement, resource: str, attached: bool = False) -> bool:
    """Whether a Deny covers a resource an Allow names; `attached`: the Allow names none either (a
    resource policy), and only a Deny without Resource, or on `*`, covers it."""
    if deny.on_attached_resource:
        return attached
    if deny.resources:
        return "*" in deny.resources or any(_covers_resource(pattern, resource) for pattern in deny.resources)
    return not any(_resources_overlap(pattern, resource) for pattern in deny.not_resources)


def _deny_covers_action(deny: _Statement, action: str) -> bool:
    if deny.actions:
        return _covered_by_any(deny.actions, action)
    if not _GLOB.search(action):
        return not _covered_by_any(deny.not_actions, action)
    return not any(
        _covers_action(pattern, action) or _covers_action(action, pattern) or _actions_may_overlap(action, pattern)
        for pattern in deny.not_actions
    )


def _actions_may_overlap(one: str, other: str) -> bool:
    if not (_GLOB.search(one) and _GLOB.search(other)):
        return False
    expanded = action_catalogue.expand(one)
    return not expanded or any(_covers_action(other, info.full_name) for info in expanded)


# --- Deny, statement by statement (for the per-statement rules) ------------------------------------------


def _after_denies(allow: _Statement, denies: list[_Statement]) -> _Statement | None:
    """What an Allow still grants after every unconditional Deny of the document; None for nothing."""
    current: _Statement | None = allow
    for deny in denies:
        if current is None:
            return None
        current = _subtract(current, deny)
    return current


def _subtract(allow: _Statement, deny: _Statement) -> _Statement | None:
    reached = allow.resources if allow.resources else ("*",)
    covered = [r for r in reached if _deny_covers_resource(deny, r, allow.on_attached_resource)]
    if len(covered) == len(reached):
        return _without_actions(allow, deny)
    every_action = all(_deny_covers_action(deny, a) for a in allow.actions) if allow.actions else False
    if covered and every_action and allow.resources:
        kept = tuple(r for r in allow.resources if r not in covered)
        return _replace(allow, resources=kept)
    return allow


def _without_actions(allow: _Statement, deny: _Statement) -> _Statement | None:
    if allow.not_actions:  # allows everything but X
        if deny.actions:
            excepted = allow.not_actions + deny.actions
            return None if _covered_by_any(excepted, "*") else _replace(allow, not_actions=excepted)
        kept = [n for n in deny.not_actions if not _covered_by_any(allow.not_actions, n)]
        return _replace(allow, actions=tuple(kept), not_actions=()) if kept else None
    if deny.actions:
        kept = [a for a in allow.actions if not _covered_by_any(deny.actions, a)]
    else:  # the Deny spares only its NotAction list: what the Allow grants of it is left
        kept = []
        for granted in allow.actions:
            if not _GLOB.search(granted):
                kept += [granted] if _covered_by_any(deny.not_actions, granted) else []
                continue
            for spared in deny.not_actions:
                kept += _intersection(granted, spared)
    kept = list(dict.fromkeys(kept))
    return _replace(allow, actions=tuple(kept)) if kept else None


def _intersection(one: str, other: str) -> list[str]:
    if _covers_action(one, other):
        return [other]
    if _covers_action(other, one):
        return [one]
    if not _actions_may_overlap(one, other):
        return []
    expanded = action_catalogue.expand(one)
    if not expanded:
        return [one]  # not knowable from the catalogue: keep the grant rather than lose a finding
    return [info.full_name for info in expanded if _covers_action(other, info.full_name)]


def _replace(statement: _Statement, **changes: Any) -> _Statement:
    fields = {name: getattr(statement, name) for name in statement.__dataclass_fields__}
    return _Statement(**{**fields, **changes})


# --- per-statement rules ---------------------------------------------------------------------------------


def _statement_findings(statement: _Statement) -> list[Finding]:
    actions, not_actions = list(statement.actions), list(statement.not_actions)
    resources, not_resources = list(statement.resources), list(statement.not_resources)
    any_resource = bool(not_resources) or any(is_any_resource(r) for r in resources)
    shown_resources = tuple(resources) if resources else tuple(f"NotResource {r}" for r in not_resources)

    grouped: dict[Rule, tuple[Severity, list[str], list[str]]] = {}

    def add(rule: Rule, severity: Severity, action: str, expands_to: Iterable[str] = ()) -> None:
        _, listed, expanded = grouped.setdefault(rule, (severity, [], []))
        grouped[rule] = (max(severity, grouped[rule][0], key=rank), listed, expanded)
        if action not in listed:
            listed.append(action)
        expanded += [e for e in expands_to if e not in expanded]

    if not_actions:
        if any_resource:
            add(Rule.FULL_ADMIN, Severity.CRITICAL, "NotAction " + ", ".join(not_actions))
        else:
            add(Rule.NOT_ACTION, Severity.MEDIUM, "NotAction " + ", ".join(not_actions))
    for action in actions:
        _classify(action, any_resource, add)
    if not_resources:
        add(Rule.NOT_RESOURCE, Severity.MEDIUM, ", ".join(actions) or "NotAction")

    restricting = restricting_conditions(statement.condition, statement.services)
    findings = []
    for rule, (severity, listed, expanded) in grouped.items():
        # The decrypt rule follows Security Hub's KMS.1/.2, which ignore conditions: MEDIUM whatever they say.
        lowered = restricting and rule not in (Rule.UNKNOWN_ACTION, Rule.DECRYPT_ON_ANY_KEY)
        findings.append(
            Finding(
                statement=statement.index,
                sid=statement.sid,
                rule=rule,
                severity=_lower(severity) if lowered else severity,
                actions=tuple(listed),
                resources=shown_resources,
                expands_to=tuple(expanded),
                conditions=restricting if lowered else (),
            )
        )
    return findings


def _classify(action: str, any_resource: bool, add: Callable[..., None]) -> None:
    for rule, severity, text, expands_to in _classification(action, any_resource):
        add(rule, severity, text, expands_to)


@functools.lru_cache(maxsize=32768)
def _classification(action: str, any_resource: bool) -> tuple[tuple[Rule, Severity, str, tuple[str, ...]], ...]:
    """What one Action entry is, on `*` or not: pure, so remembered (policies repeat the same actions)."""
    found: list[tuple[Rule, Severity, str, tuple[str, ...]]] = []

    def add(rule: Rule, severity: Severity, text: str, expands_to: Iterable[str] = ()) -> None:
        found.append((rule, severity, text, tuple(expands_to)))

    _classify_one(action, any_resource, add)
    return tuple(found)


def _classify_one(action: str, any_resource: bool, add: Callable[..., None]) -> None:
    text = action.strip()
    if any_resource and _decrypts(text):
        add(Rule.DECRYPT_ON_ANY_KEY, Severity.MEDIUM, text)
    if text in ("*", "*:*"):
        add(Rule.FULL_ADMIN if any_resource else Rule.SERVICE_WILDCARD, _wide(any_resource, Severity.CRITICAL), text)
        return
    service, separator, name = text.partition(":")
    if not separator or not service or not name:
        add(Rule.UNKNOWN_ACTION, Severity.INFORMATIONAL, text)
        return
    if set(name) <= {"*"}:
        # Name what the wildcard reaches that escalates (iam:*, lambda:*, glue:*, ec2:* ...).
        reached = sorted(escalation.spelled(key) for key in escalation.matched_by(text))
        add(Rule.SERVICE_WILDCARD, _wide(any_resource, Severity.HIGH), text, reached)
        return
    if "*" in service or "?" in service:
        # "s*:Get*" and the like: IAM matches the service part too. Treat as the service wildcard it is.
        add(Rule.SERVICE_WILDCARD, _wide(any_resource, Severity.HIGH), text)
        return
    if "*" in name or "?" in name:
        matched = action_catalogue.expand(text)
        if not matched:
            add(Rule.UNKNOWN_ACTION, Severity.INFORMATIONAL, text)
        elif any_resource:
            _classify_wildcard_on_any(text, matched, add)
        return
    info = action_catalogue.lookup(text)
    if info is None:
        add(Rule.UNKNOWN_ACTION, Severity.INFORMATIONAL, text)
    elif any_resource and info.takes_resource and not _decrypts(text):
        add(Rule.RESOURCE_STAR, Severity.LOW, text)


def _decrypts(action: str) -> bool:
    """The action (or wildcard) allows kms:Decrypt or kms:ReEncryptFrom; `*` alone is full admin, said so already."""
    if action in ("*", "*:*"):
        return False
    pattern = _glob(action.lower())
    return any(pattern.fullmatch(decrypt) for decrypt in DECRYPT_ACTIONS)


def _wide(any_resource: bool, severity: Severity) -> Severity:
    return severity if any_resource else Severity.MEDIUM


def _classify_wildcard_on_any(text: str, matched: tuple[ActionInfo, ...], add: Callable[..., None]) -> None:
    scoped = [info for info in matched if info.takes_resource]
    if any(
        info.access_level == "Permissions management"
        or (
            info.access_level in ("Read", "Write")
            and info.service in DATA_SERVICES
            and not info.name.startswith(_METADATA_PREFIXES)
        )
        for info in scoped
    ):
        add(Rule.DATA_ACCESS_WILDCARD, Severity.MEDIUM, text)
    elif scoped:
        add(Rule.RESOURCE_STAR, Severity.LOW, text)


# --- escalation paths, across statements -----------------------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    """The widest grant of one path action in the document."""

    reach: Reach
    statement: _Statement
    resource: str
    restricting: tuple[str, ...]

    def better_than(self, other: _Grant | None) -> bool:
        if other is None:
            return True
        return (self.reach, not self.restricting) > (other.reach, not other.restricting)


def _escalation_grants(allows: list[_Statement], denies: list[_Statement]) -> dict[str, _Grant]:
    best: dict[str, _Grant] = {}
    for allow in allows:
        if allow.on_attached_resource or allow.grants_nothing():
            continue  # resource and trust policies grant to others; paths are about the holder's own policy
        if allow.actions:
            keys = frozenset().union(*(escalation.matched_by(a) for a in allow.actions))
        else:
            keys = escalation.escalation_actions() - frozenset().union(
                *(escalation.matched_by(a) for a in allow.not_actions)
            )
        if not keys:
            continue
        resources = allow.resources or ("*",)  # NotResource without "*": every resource but a few
        restricting = restricting_conditions(allow.condition, allow.services)
        for key in keys:
            info = action_catalogue.lookup(key)
            takes_resource = info is None or info.takes_resource
            for resource in resources:
                if any(_deny_covers_action(d, key) and _deny_covers_resource(d, resource) for d in denies):
                    continue
                reach = _reach(key, resource) if takes_resource else Reach.ANY
                grant = _Grant(reach, allow, resource, restricting)
                if reach > Reach.NARROW and grant.better_than(best.get(key)):
                    best[key] = grant
    return best


def _reach(key: str, resource: str) -> Reach:
    """`resource_reach`, for an ARN of a type the action acts on; another service's ARN reaches nothing."""
    parts = resource.split(":", 3)
    if len(parts) == 4 and parts[0] == "arn":
        service = key.split(":", 1)[0]
        if not any(_covers_resource(parts[2], s) for s in _RESOURCE_SERVICES.get(service, (service,))):
            return Reach.NARROW
        targets = _TARGETS.get(key)
        if targets and not any(_resources_overlap(target, resource) for target in targets):
            return Reach.NARROW  # e.g. ssm:SendCommand on documents only: no instance to run on
    return resource_reach(resource)


def _escalation_findings(allows: list[_Statement], denies: list[_Statement]) -> list[Finding]:
    grants = _escalation_grants(allows, denies)
    if not grants:
        return []
    complete: list[tuple[escalation.EscalationPath, list[_Grant]]] = []
    partial: list[tuple[escalation.EscalationPath, list[_Grant]]] = []
    for path in escalation.catalogue().paths:
        held = [grants[key] for key in path.keys if key in grants]
        if len(held) == len(path.keys):
            complete.append((path, held))
        elif _half_held(path, grants):
            partial.append((path, held))
    completed_keys = {key for path, _ in complete for key in path.keys}
    partial = [(p, held) for p, held in partial if not {k for k in p.keys if k in grants} <= completed_keys]

    findings = []
    for rule, found in ((Rule.PRIVILEGE_ESCALATION, complete), (Rule.PARTIAL_ESCALATION, partial)):
        by_severity: dict[Severity, list[tuple[escalation.EscalationPath, list[_Grant]]]] = {}
        for path, held in found:
            by_severity.setdefault(_path_severity(rule, held), []).append((path, held))
        for severity, group in by_severity.items():
            findings.append(_path_finding(rule, severity, group, grants))
    return findings


def _half_held(path: escalation.EscalationPath, grants: dict[str, _Grant]) -> bool:
    """Half a path: its first acting step (PassRole, the update, the change set) and at least half of the
    acting steps are held. Read-only helpers (`ec2:DescribeInstances`) never make half a path alone."""
    if not path.weighty or path.weighty[0] not in grants:
        return False
    return 2 * sum(key in grants for key in path.weighty) >= len(path.weighty)


def _path_severity(rule: Rule, held: list[_Grant]) -> Severity:
    reach = min(g.reach for g in held)
    if rule is Rule.PRIVILEGE_ESCALATION:
        severity = Severity.HIGH if reach is Reach.ANY else Severity.MEDIUM
    else:
        severity = Severity.MEDIUM if reach is Reach.ANY else Severity.LOW
    return _lower(severity) if any(g.restricting for g in held) else severity


def _path_finding(
    rule: Rule,
    severity: Severity,
    group: list[tuple[escalation.EscalationPath, list[_Grant]]],
    grants: dict[str, _Grant],
) -> Finding:
    group.sort(key=lambda item: (len(item[0].keys), item[0].id))
    held = [g for _, gs in group for g in gs]
    statements = sorted({g.statement.index for g in held})
    first = min(held, key=lambda g: g.statement.index).statement
    keys = list(dict.fromkeys(k for path, _ in group for k in path.keys if k in grants))
    lacks = tuple(
        f"{' + '.join(escalation.spelled(k) for k in path.keys if k not in grants)} ({path.id})" for path, _ in group
    )
    text = _path_text(group[0][0], grants)
    if rule is Rule.PARTIAL_ESCALATION:
        text = f"{text}; lacks {lacks[0]}"
    if len(group) > 1:
        text += f" (and {len(group) - 1} more path{'s' if len(group) > 2 else ''})"
    return Finding(
        statement=first.index,
        sid=first.sid,
        rule=rule,
        severity=severity,
        actions=tuple(escalation.spelled(k) for k in keys),
        resources=tuple(dict.fromkeys(g.resource for g in held)),
        conditions=tuple(dict.fromkeys(c for g in held for c in g.restricting)),
        paths=tuple(path.id for path, _ in group),
        path=text,
        statements=tuple(statements),
        lacks=lacks if rule is Rule.PARTIAL_ESCALATION else (),
    )


def _path_text(path: escalation.EscalationPath, grants: dict[str, _Grant]) -> str:
    """`iam:PassRole on all roles + sagemaker:CreateTrainingJob: run code as any role that trusts SageMaker`."""
    parts = []
    for key in path.keys:
        grant = grants.get(key)
        name = escalation.spelled(key)
        if grant is not None and key.startswith(("iam:", "sts:")):
            words = _resource_words(name)
            if grant.reach is Reach.ANY:
                name += f" on all {words}"
            else:
                name += f" on {words} matching {grant.resource.rsplit(':', 1)[-1]}"
        if grant is not None:
            parts.append(name)
    return f"{' + '.join(parts)}: {path.outcome}"


def _resource_words(action: str) -> str:
    name = action.split(":", 1)[-1]
    for word, words in (("Role", "roles"), ("User", "users"), ("Group", "groups"), ("Policy", "policies")):
        if word in name:
            return words
    return "resources"
