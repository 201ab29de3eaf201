"""A linter-grade reading of an IAM identity policy: pure code, no AWS calls.

Normalises every shape IAM accepts (Statement as an object or a list, Action/Resource as a string or
a list, NotAction/NotResource, Conditions) and reports findings per statement:

- CRITICAL  Allow of `*` (or NotAction) on `*`: full administrator.
- HIGH      Allow of `service:*` on `*`; Allow of a privilege-escalation action on `*`, written out or
            reached through a wildcard (`iam:Put*`, `iam:*Policy*`).
- MEDIUM    `service:*` (or `*`, or NotAction) on specific resources; wildcard data-access actions
            (`s3:Get*`, `s3:*Object`, in the DATA_SERVICES) or wildcards reaching resource policies
            (Permissions management) on `*`; Allow with NotResource.
- LOW       an action that takes a resource, allowed on `*` (parliament's RESOURCE_STAR).
- INFORMATIONAL  actions AWS's catalogue does not know (typos, retired actions).

`*` on an action that takes no resource (`s3:ListAllMyBuckets`) is no finding: IAM accepts nothing
else. A Condition that restricts where the grant applies (`aws:ResourceTag/...`, `aws:SourceVpce`,
`aws:PrincipalOrgID`, ...) lowers a finding one step and is named in it. Deny statements only take
permissions away and are not findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mlwarden import action_catalogue
from mlwarden.action_catalogue import ActionInfo
from mlwarden.outcomes import Severity

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
_TYPED_WILDCARD_TAIL = re.compile(r"([\w.-]+[/:])?[*/]*\*")


class Rule(StrEnum):
    FULL_ADMIN = "full-admin"
    SERVICE_WILDCARD = "service-wildcard"
    PRIVILEGE_ESCALATION = "privilege-escalation"
    DATA_ACCESS_WILDCARD = "data-access-wildcard"
    NOT_ACTION = "not-action"
    NOT_RESOURCE = "not-resource"
    RESOURCE_STAR = "resource-star"
    UNKNOWN_ACTION = "unknown-action"


_WHY = {
    Rule.FULL_ADMIN: "allows every action on every resource: full administrator",
    Rule.SERVICE_WILDCARD: "allows every action of the service, including the ones that change permissions or "
    "delete data",
    Rule.PRIVILEGE_ESCALATION: "lets the holder grant itself more than this policy says (new policy versions, "
    "attached or inline policies, access keys, or code that runs as any role it passes)",
    Rule.DATA_ACCESS_WILDCARD: "a wildcard that reaches data (read or write) or resource policies in every "
    "resource of the service",
    Rule.NOT_ACTION: "NotAction allows every action except the listed ones, including future ones",
    Rule.NOT_RESOURCE: "NotResource allows the actions on every resource except the listed ones",
    Rule.RESOURCE_STAR: "allowed on every resource although the action can be scoped to resource ARNs",
    Rule.UNKNOWN_ACTION: "not an action in AWS's catalogue (a typo, or a retired or too new action)",
}
_SUGGESTION = {
    Rule.FULL_ADMIN: "grant the actions the workload calls, on the ARNs it uses; keep administrator access for "
    "break-glass roles with MFA",
    Rule.SERVICE_WILDCARD: "list the actions the workload calls (IAM Access Analyzer can generate them from "
    "CloudTrail) and scope them to resource ARNs",
    Rule.PRIVILEGE_ESCALATION: "scope to specific ARNs (iam:PassRole to the one role, with an iam:PassedToService "
    "condition); never grant these on *",
    Rule.DATA_ACCESS_WILDCARD: "name the actions and scope them to the buckets, tables or keys the workload needs",
    Rule.NOT_ACTION: "use Action with the actions needed instead of NotAction",
    Rule.NOT_RESOURCE: "use Resource with the ARNs needed instead of NotResource",
    Rule.RESOURCE_STAR: "replace * with the ARNs the workload uses",
    Rule.UNKNOWN_ACTION: "check the spelling against the Service Authorization Reference",
}


def is_any_resource(resource: str) -> bool:
    """`*`, or an ARN that names every resource of its type in every account (parliament's "effectively star").

    `arn:aws:s3:::*`, `arn:*:cloudtrail:*:*:trail/*` and `arn:aws:iam::*:role/*` are; an ARN that names
    an account (`arn:aws:iam::123456789012:role/*`) is scoped to that account and is not.
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


def rank(severity: Severity) -> int:
    return SEVERITY_ORDER.index(severity)


def _lower(severity: Severity) -> Severity:
    return SEVERITY_ORDER[max(rank(severity) - 1, 1)] if severity is not Severity.INFORMATIONAL else severity


@dataclass(frozen=True)
class Finding:
    """One rule one statement breaks, with the actions and resources involved."""

    statement: int  # index in the Statement list (0 for a single statement object)
    sid: str | None
    rule: Rule
    severity: Severity
    actions: tuple[str, ...]  # as written in the policy
    resources: tuple[str, ...]
    # Privilege-escalation actions a wildcard reaches, from the catalogue.
    expands_to: tuple[str, ...] = ()
    # Restricting condition keys that lowered the severity one step.
    conditions: tuple[str, ...] = ()

    @property
    def why(self) -> str:
        return _WHY[self.rule]

    @property
    def suggestion(self) -> str:
        return _SUGGESTION[self.rule]

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
        if self.expands_to:
            shown["expands_to"] = _capped(self.expands_to)
        if self.conditions:
            shown["lowered_by_condition"] = list(self.conditions)
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


def analyze(document: Mapping[str, Any] | Any) -> Analysis:
    """Findings for one policy document (a parsed JSON object)."""
    if not isinstance(document, Mapping):
        return Analysis((), 0, ("the policy is not a JSON object",))
    raw = document.get("Statement")
    if isinstance(raw, Mapping):
        statements: list[Any] = [raw]
    elif isinstance(raw, list):
        statements = raw
    else:
        return Analysis((), 0, ("the policy has no Statement",))
    findings: list[Finding] = []
    problems: list[str] = []
    for index, statement in enumerate(statements):
        if not isinstance(statement, Mapping):
            problems.append(f"statement {index} is not an object")
            continue
        findings += _statement_findings(index, statement, problems)
    return Analysis(tuple(findings), len(statements), tuple(problems))


def _statement_findings(index: int, statement: Mapping[str, Any], problems: list[str]) -> list[Finding]:
    effect = statement.get("Effect")
    if effect != "Allow":
        if effect != "Deny":
            problems.append(f"statement {index} has Effect {str(effect)[:20]!r}, neither Allow nor Deny")
        return []
    actions, odd_actions = _strings(statement.get("Action"))
    not_actions, odd_not_actions = _strings(statement.get("NotAction"))
    resources, odd_resources = _strings(statement.get("Resource"))
    not_resources, odd_not_resources = _strings(statement.get("NotResource"))
    if odd_actions or odd_not_actions or odd_resources or odd_not_resources:
        problems.append(f"statement {index} has an Action or Resource that is not a string or a list of strings")
    # No Resource and no NotResource: a resource or trust policy, about the resource it is attached to.
    any_resource = bool(not_resources) or any(is_any_resource(r) for r in resources)
    if "Action" in statement and "NotAction" in statement:
        problems.append(f"statement {index} has both Action and NotAction (IAM rejects it)")
    elif not actions and not not_actions:
        problems.append(f"statement {index} has no Action or NotAction")
    shown_resources = tuple(resources) if resources else tuple(f"NotResource {r}" for r in not_resources)
    sid = statement.get("Sid") if isinstance(statement.get("Sid"), str) else None

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

    services = frozenset(a.split(":", 1)[0].lower() for a in actions + not_actions if ":" in a)
    restricting = restricting_conditions(statement.get("Condition"), services)
    findings = []
    for rule, (severity, listed, expanded) in grouped.items():
        lowered = restricting and rule is not Rule.UNKNOWN_ACTION
        findings.append(
            Finding(
                statement=index,
                sid=sid,
                rule=rule,
                severity=_lower(severity) if lowered else severity,
                actions=tuple(listed),
                resources=shown_resources,
                expands_to=tuple(expanded),
                conditions=restricting if lowered else (),
            )
        )
    return findings


def _classify(action: str, any_resource: bool, add: Any) -> None:
    text = action.strip()
    if text in ("*", "*:*"):
        add(Rule.FULL_ADMIN if any_resource else Rule.SERVICE_WILDCARD, _wide(any_resource, Severity.CRITICAL), text)
        return
    service, separator, name = text.partition(":")
    if not separator or not service or not name:
        add(Rule.UNKNOWN_ACTION, Severity.INFORMATIONAL, text)
        return
    if set(name) <= {"*"}:
        # Name what the wildcard reaches that escalates (iam:*, lambda:*, glue:*, ec2:* ...).
        reached = [info.full_name for info in action_catalogue.expand(text) if info.escalates]
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
    elif any_resource and info.escalates:
        add(Rule.PRIVILEGE_ESCALATION, Severity.HIGH, text)
    elif any_resource and info.takes_resource:
        add(Rule.RESOURCE_STAR, Severity.LOW, text)


def _wide(any_resource: bool, severity: Severity) -> Severity:
    return severity if any_resource else Severity.MEDIUM


def _classify_wildcard_on_any(text: str, matched: tuple[ActionInfo, ...], add: Any) -> None:
    escalations = [info.full_name for info in matched if info.escalates]
    if escalations:
        add(Rule.PRIVILEGE_ESCALATION, Severity.HIGH, text, escalations)
        return
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
