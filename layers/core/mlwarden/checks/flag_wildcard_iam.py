"""Wildcard IAM policies: read the policies as IAM holds them now, analyse them, tag and alert.

Triggers: CloudTrail IAM calls that create, change, attach, detach or delete a policy or change group
membership, and the AWS Config managed rules about admin and full-service access. IAM is global: its
CloudTrail events reach EventBridge in us-east-1 only, so the rules that feed this check live there.

Flag, don't break. Two things carry the flag `mlwarden:wildcard` = highest severity (MEDIUM or above):

- a customer-managed policy, after the calls that change it (CreatePolicy, CreatePolicyVersion,
  SetDefaultPolicyVersion, DeletePolicyVersion, Config): it says what its default version grants;
- a role or user, after any call that changes what it holds (Put/Delete inline policy, Attach/Detach,
  Add/RemoveUserFromGroup): it is re-graded from all its live policies (inline and attached, and for a
  user its groups'), so the tag is raised, lowered or removed to match, whatever the order of the events.

Groups cannot be tagged: a group's policy change is reported on the group and its members are re-graded.
Roles AWS manages (IAM Identity Center `AWSReservedSSO_*`, service-linked roles) cannot be tagged either: the
finding is the outcome and the missing tag a note in it. The one optional fix (off by default) sets a
version that was the default before back as default, and only when it grades strictly lower (iam_versions).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions, iam_versions
from mlwarden.checks import CheckUnit
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import ApiCall, ComplianceChange, Event, Unrecognised, decode_policy_document, partition_of
from mlwarden.exemptions import Exemption, exemption_for
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.rules.policy_analysis import Analysis, Finding, analyze, rank
from mlwarden.settings import Settings, SettingsError

CHECK = "flag_wildcard_iam"
PrincipalKind = Literal["role", "user", "group"]
WILDCARD_TAG = "mlwarden:wildcard"
FLAG_AT = Severity.MEDIUM  # findings below this are reported in details but do not flag
IAM_EVENT_SOURCE = "iam.amazonaws.com"
# SetDefaultPolicyVersion puts a version created as non-default (reported, not flagged) in force;
# DeletePolicyVersion and DeletePolicy can leave a stale flag on the policy.
POLICY_API_CALLS = frozenset(
    {"CreatePolicy", "CreatePolicyVersion", "SetDefaultPolicyVersion", "DeletePolicyVersion", "DeletePolicy"}
)
INLINE_API_CALLS = {"PutRolePolicy": "role", "PutUserPolicy": "user", "PutGroupPolicy": "group"}
ATTACH_API_CALLS = {"AttachRolePolicy": "role", "AttachUserPolicy": "user", "AttachGroupPolicy": "group"}
# Calls that take access away: without them a principal's flag goes stale.
DELETE_INLINE_API_CALLS = {"DeleteRolePolicy": "role", "DeleteUserPolicy": "user", "DeleteGroupPolicy": "group"}
DETACH_API_CALLS = {"DetachRolePolicy": "role", "DetachUserPolicy": "user", "DetachGroupPolicy": "group"}
MEMBERSHIP_API_CALLS = frozenset({"AddUserToGroup", "RemoveUserFromGroup"})
# Routed because they may set the exempt tag (run_check ignores them when they do not): the tagged policy or
# principal is graded, so the report says whether it is non-compliant right now.
TAG_API_CALLS: dict[str, PrincipalKind] = {
    "TagRole": "role",
    "CreateRole": "role",
    "TagUser": "user",
    "CreateUser": "user",
}
# Every CloudTrail eventName the template routes to this check.
ROUTED_API_CALLS = (
    POLICY_API_CALLS
    | set(INLINE_API_CALLS)
    | set(ATTACH_API_CALLS)
    | set(DELETE_INLINE_API_CALLS)
    | set(DETACH_API_CALLS)
    | MEMBERSHIP_API_CALLS
    | {"TagPolicy"}
    | set(TAG_API_CALLS)
)
# AWS Config managed rules, matched by prefix (deployed names carry suffixes; Security Hub adds a prefix).
CONFIG_RULES = ("iam-policy-no-statements-with-admin-access", "iam-policy-no-statements-with-full-access")
REVERT_VARIABLE = "REVERT_CRITICAL_POLICY_VERSIONS"

# IAM's own size limits, in characters not counting whitespace
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html). IAM refuses larger documents,
# so a larger one (an event replayed or crafted) was never in force: it is not analysed.
MANAGED_POLICY_LIMIT = 6_144
INLINE_POLICY_LIMITS = {"role": 10_240, "user": 2_048, "group": 5_120}  # all inline policies of one principal
# The PolicyDocument parameter's own limit, times three for URL encoding: longer text is not even decoded.
_RAW_DOCUMENT_LIMIT = 3 * 131_072
# What one outcome reports: the highest findings, and counts of the rest (the alert must fit in SNS's 256 KB).
REPORTED_FINDINGS = 10
REPORTED_POLICIES = 25
# Bounded reads: 20 attached policies per role or user, 10 groups per user, 10 attached per group are IAM's
# maxima; inline policies are bounded by size. A group's members are re-graded up to MEMBER_LIMIT.
POLICY_READ_LIMIT = 150
MEMBER_LIMIT = 25
# All findings of a cut report are kept in the outcome table (one item, below DynamoDB's 400 KB) this long.
FINDINGS_KEPT_DAYS = 30
_FINDINGS_ITEM_LIMIT = 350_000
# Concurrent events for one principal: re-grade and re-tag until the tag matches, this many times at most.
TAG_ATTEMPTS = 4

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
POLICY_PERMISSIONS = frozenset(
    {
        "iam:GetPolicy",
        "iam:GetPolicyVersion",
        "iam:GetRolePolicy",
        "iam:GetUserPolicy",
        "iam:GetGroupPolicy",
        "iam:GetGroup",
        "iam:ListRolePolicies",
        "iam:ListUserPolicies",
        "iam:ListGroupPolicies",
        "iam:ListAttachedRolePolicies",
        "iam:ListAttachedUserPolicies",
        "iam:ListAttachedGroupPolicies",
        "iam:ListGroupsForUser",
        "iam:ListEntitiesForPolicy",
        "iam:ListPolicyTags",
        "iam:ListRoleTags",
        "iam:ListUserTags",
        "iam:TagPolicy",
        "iam:UntagPolicy",
        "iam:TagRole",
        "iam:UntagRole",
        "iam:TagUser",
        "iam:UntagUser",
    }
)
# Config names a policy by its id: finding its ARN needs ListPolicies, which has no resource type.
LIST_PERMISSIONS = frozenset({"iam:ListPolicies"})
# Only when REVERT_CRITICAL_POLICY_VERSIONS=true (granted under a template Condition).
REVERT_PERMISSIONS = frozenset({"iam:ListPolicyVersions", "iam:SetDefaultPolicyVersion"})

_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
_POLICY_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}|aws):policy/([\w+=,.@/-]{1,1024})$")
_POLICY_ID = re.compile(r"^[A-Z0-9]{16,128}$")  # ANPA... in AWS
_VERSION_ID = re.compile(r"^v[1-9][0-9]{0,8}$")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
_UNMODIFIABLE = "UnmodifiableEntity"


@dataclass(frozen=True)
class IamOptions:
    """This check's optional behaviour (template parameter RevertCriticalPolicyVersions)."""

    revert_critical_versions: bool = False


def load_options(environ: Mapping[str, str] | None = None) -> IamOptions:
    """This check's optional behaviour, validated at cold start."""
    env = os.environ if environ is None else environ
    raw = env.get(REVERT_VARIABLE, "false").strip().lower()
    if raw not in _TRUE | _FALSE:
        raise SettingsError(f"{REVERT_VARIABLE} must be true or false, got {raw[:40]!r}")
    return IamOptions(revert_critical_versions=raw in _TRUE)


@dataclass(frozen=True)
class Principal:
    """An IAM role, user or group, by kind and name."""

    kind: PrincipalKind
    name: str

    def arn(self, partition: str, account: str | None) -> str:
        return f"arn:{partition}:iam::{account or 'unknown'}:{self.kind}/{self.name}"


@dataclass(frozen=True)
class ManagedPolicyTarget:
    """A managed policy: created, given a new version, a version deleted, or named by Config."""

    policy_arn: str
    # The document the event carries (CreatePolicy, CreatePolicyVersion): used only if IAM can't be read.
    event_document: Any = None
    new_default_version: bool = False
    # CreatePolicyVersion without setAsDefault: the event's version grants nothing until made default.
    non_default_version: bool = False
    # SetDefaultPolicyVersion: another version is in force.
    made_default: bool = False
    # The sweep's bulk read of the account (GetAccountAuthorizationDetails), used instead of per-policy reads.
    listed: AuthorizationDetails | None = field(default=None, compare=False, repr=False)

    @property
    def default_changed(self) -> bool:
        """What the policy grants changed: the roles, users and groups holding it are re-graded."""
        return self.new_default_version or self.made_default

    @property
    def aws_managed(self) -> bool:
        return self.policy_arn.split(":")[4] == "aws"


@dataclass(frozen=True)
class PrincipalTarget:
    """A role, user or group whose policies changed: what it holds now is re-graded."""

    principal: Principal
    # What the event changed, for the alert: "inline policy NAME", a policy ARN, or "group NAME".
    changed: str
    # True when the event can only have taken access away (detach, delete, leave a group).
    reduces: bool = False
    # Put*Policy: the inline policy's name and the document the event carries (used only if IAM can't be read).
    inline_name: str | None = None
    event_document: Any = None
    # Tag and create calls: the outcome is the principal's grade even when nothing changed.
    report_grade: bool = False
    # The sweep's bulk read of the account (GetAccountAuthorizationDetails), used instead of per-principal reads.
    listed: AuthorizationDetails | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ConfigPolicyTarget:
    """Config's resourceId of an AWS::IAM::Policy is the policy id (ANPA...), not its ARN."""

    policy_id: str


Target = ManagedPolicyTarget | PrincipalTarget | ConfigPolicyTarget


def targets_from_event(event: Event) -> Target | str:
    """The policy or principal an event is about, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if isinstance(event, ApiCall):
        return _api_call_target(event)
    if isinstance(event, ComplianceChange):
        return _compliance_target(event)
    return f"{type(event).__name__} events are not IAM policy changes"


def _principal(kind: PrincipalKind, name: str | None, what: str) -> Principal | str:
    if name is None:
        return f"{what} names no {kind}"
    if not _NAME.match(name):
        return f"{what} names an invalid {kind} {name[:80]!r}"
    return Principal(kind, name)


def _policy_arn(arn: str | None) -> str | None:
    if arn is None or not _POLICY_ARN.match(arn):
        return None
    return arn


def _api_call_target(event: ApiCall) -> Target | str:
    what = event.event_name
    if event.event_source != IAM_EVENT_SOURCE:
        return f"{event.event_source} {what} is not an IAM call"
    if what in POLICY_API_CALLS:
        return _policy_call_target(event)
    if what == "TagPolicy":
        tagged = _policy_arn(event.parameter("policyArn"))
        return ManagedPolicyTarget(tagged) if tagged is not None else "TagPolicy names no valid policy ARN"
    if what in TAG_API_CALLS:
        tagged_principal = _principal(TAG_API_CALLS[what], event.parameter(f"{TAG_API_CALLS[what]}Name"), what)
        if isinstance(tagged_principal, str):
            return tagged_principal
        return PrincipalTarget(tagged_principal, changed="its tags", report_grade=True)
    if what in MEMBERSHIP_API_CALLS:
        user = _principal("user", event.parameter("userName"), what)
        group = event.parameter("groupName")
        if isinstance(user, str):
            return user
        if group is None or not _NAME.match(group):
            return f"{what} names no valid group"
        return PrincipalTarget(user, changed=f"group {group}", reduces=what == "RemoveUserFromGroup")
    for calls, inline, reduces in (
        (INLINE_API_CALLS, True, False),
        (DELETE_INLINE_API_CALLS, True, True),
        (ATTACH_API_CALLS, False, False),
        (DETACH_API_CALLS, False, True),
    ):
        if what not in calls:
            continue
        kind: PrincipalKind = calls[what]  # type: ignore[assignment]
        principal = _principal(kind, event.parameter(f"{kind}Name"), what)
        if isinstance(principal, str):
            return principal
        if not inline:
            policy = _policy_arn(event.parameter("policyArn"))
            if policy is None:
                return f"{what} names no valid policy ARN"
            return PrincipalTarget(principal, changed=policy, reduces=reduces)
        name = event.parameter("policyName")
        if name is None or not _NAME.match(name):
            return f"{what} names no valid policy"
        document = None if reduces else event.request_parameters.get("policyDocument")
        return PrincipalTarget(
            principal, changed=f"inline policy {name}", reduces=reduces, inline_name=name, event_document=document
        )
    return f"IAM call {what} does not create, change, attach or remove a policy"


def _policy_call_target(event: ApiCall) -> Target | str:
    what = event.event_name
    if what == "CreatePolicy":
        name, path = event.parameter("policyName"), event.parameter("path") or "/"
        if name is None or not _NAME.match(name) or not path.startswith("/") or not path.endswith("/"):
            return "CreatePolicy names no valid policy"
        account = event.recipient_account or event.actor.account
        if account is None:
            return "CreatePolicy names no account"
        arn = f"arn:{partition_of(event.aws_region)}:iam::{account}:policy{path}{name}"
        return ManagedPolicyTarget(arn, event_document=event.request_parameters.get("policyDocument"))
    named = _policy_arn(event.parameter("policyArn"))
    if named is None:
        return f"{what} names no valid policy ARN"
    if what == "CreatePolicyVersion":
        set_as_default = str(event.request_parameters.get("setAsDefault", "")).lower() == "true"
        return ManagedPolicyTarget(
            named,
            event_document=event.request_parameters.get("policyDocument"),
            new_default_version=set_as_default,
            non_default_version=not set_as_default,
        )
    return ManagedPolicyTarget(named, made_default=what == "SetDefaultPolicyVersion")


def _compliance_target(event: ComplianceChange) -> Target | str:
    rule = event.rule_name.removeprefix("securityhub-")
    if not rule.startswith(CONFIG_RULES):
        return f"Config rule {event.rule_name} is not a wildcard-IAM rule"
    if event.compliance != "NON_COMPLIANT":
        return f"Config rule {event.rule_name} reports {event.compliance}, nothing to flag"
    if event.resource_type != "AWS::IAM::Policy":
        return f"Config resource type {event.resource_type} is not an IAM policy"
    if _POLICY_ARN.match(event.resource_id):
        return ManagedPolicyTarget(event.resource_id)
    if _POLICY_ID.match(event.resource_id):
        return ConfigPolicyTarget(event.resource_id)
    return f"Config rule {event.rule_name} names an invalid policy id {event.resource_id[:80]!r}"


# --- documents: bounded before they are analysed ----------------------------------------------------------


@dataclass(frozen=True)
class PolicyDocument:
    """A policy document as read (None when refused), and where it was read from."""

    document: Mapping[str, Any] | None
    source: str  # where it was read: "live default version v3", "live inline policy", "event (...)"
    version_id: str | None = None
    # Why `document` is None although there was something: not JSON, or larger than IAM accepts.
    refused: str | None = None


def bounded_document(value: Any, limit: int, source: str, version_id: str | None = None) -> PolicyDocument:
    """A policy document no larger than IAM's `limit` (non-whitespace characters), or None and why."""
    if isinstance(value, str) and len(value) > _RAW_DOCUMENT_LIMIT:
        return PolicyDocument(None, source, version_id, f"{len(value):,} characters, far above IAM's {limit:,}")
    try:
        document = decode_policy_document(value)
        compact = None if document is None else json.dumps(document, separators=(",", ":"), default=str)
    except (RecursionError, ValueError, TypeError):
        document, compact = None, None
    if document is None or compact is None:
        return PolicyDocument(None, source, version_id, "not a JSON policy document")
    size = len(compact) - sum(1 for c in compact if c.isspace())
    if size > limit:
        return PolicyDocument(None, source, version_id, f"{size:,} characters, above IAM's limit of {limit:,}")
    return PolicyDocument(document, source, version_id)


# --- reading and writing IAM ----------------------------------------------------------------------------


class _Gone(Exception):
    """The policy or principal no longer exists."""


def _call(action: str, func: Callable[..., Any], **kwargs: Any) -> Any:
    """Call IAM; NoSuchEntity becomes _Gone, other errors AwsCallFailed (from the original)."""
    try:
        return func(**kwargs)
    except ClientError as err:
        if error_code(err) == "NoSuchEntity":
            raise _Gone(action) from err
        raise AwsCallFailed.from_error(action, err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error(action, err) from err


def _pages(action: str, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    """Every item of a paginated IAM list call."""
    paginator = clients.client("iam").get_paginator(operation)
    try:
        for page in paginator.paginate(**kwargs):
            yield from page.get(key, [])
    except ClientError as err:
        if error_code(err) == "NoSuchEntity":
            raise _Gone(action) from err
        raise AwsCallFailed.from_error(action, err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error(action, err) from err


def _read_default_version(policy_arn: str) -> PolicyDocument:
    iam = clients.client("iam")
    policy = _call("iam:GetPolicy", iam.get_policy, PolicyArn=policy_arn)["Policy"]
    version_id = str(policy["DefaultVersionId"])
    return _read_version(policy_arn, version_id, f"live default version {version_id}")


def _read_version(policy_arn: str, version_id: str, source: str) -> PolicyDocument:
    iam = clients.client("iam")
    version = _call("iam:GetPolicyVersion", iam.get_policy_version, PolicyArn=policy_arn, VersionId=version_id)
    return bounded_document(version["PolicyVersion"].get("Document"), MANAGED_POLICY_LIMIT, source, version_id)


def _read_inline(principal: Principal, policy_name: str) -> PolicyDocument:
    iam = clients.client("iam")
    reader = {"role": iam.get_role_policy, "user": iam.get_user_policy, "group": iam.get_group_policy}[principal.kind]
    action = f"iam:Get{principal.kind.capitalize()}Policy"
    names = {f"{principal.kind.capitalize()}Name": principal.name, "PolicyName": policy_name}
    response = _call(action, reader, **names)
    limit = INLINE_POLICY_LIMITS[principal.kind]
    return bounded_document(response.get("PolicyDocument"), limit, "live inline policy")


def _with_fallback(read: Callable[[], PolicyDocument], fallback: PolicyDocument | None) -> PolicyDocument:
    """Live state wins; the event's own document only when IAM can't be read (and the outcome says so)."""
    try:
        return read()
    except AwsCallFailed as err:
        if fallback is None or fallback.document is None:
            raise
        return PolicyDocument(fallback.document, f"event (live read failed: {err.action} {err.code})")


def _resolve_policy_id(policy_id: str) -> str | None:
    for policy in _pages("iam:ListPolicies", "list_policies", "Policies", Scope="Local"):
        if policy.get("PolicyId") == policy_id:
            return str(policy["Arn"])
    return None


def _tags(kind: str, name: str) -> dict[str, str]:
    """Tags of a policy (by ARN), role or user (by name)."""
    iam = clients.client("iam")
    if kind == "policy":
        response = _call("iam:ListPolicyTags", iam.list_policy_tags, PolicyArn=name)
    elif kind == "role":
        response = _call("iam:ListRoleTags", iam.list_role_tags, RoleName=name)
    else:
        response = _call("iam:ListUserTags", iam.list_user_tags, UserName=name)
    return {tag["Key"]: tag["Value"] for tag in response.get("Tags", [])}


def _write_flag(kind: str, name: str, value: str | None) -> str:
    """Set (Tag*: only the given key, the other tags stay) or remove (Untag*) the flag; returns the action."""
    iam = clients.client("iam")
    where = {"PolicyArn": name} if kind == "policy" else {f"{kind.capitalize()}Name": name}
    verb = "Tag" if value is not None else "Untag"
    action = f"iam:{verb}{kind.capitalize()}"
    method = getattr(iam, f"{verb.lower()}_{kind}")
    if value is None:
        _call(action, method, TagKeys=[WILDCARD_TAG], **where)
    else:
        _call(action, method, Tags=[{"Key": WILDCARD_TAG, "Value": value}], **where)
    return action


def _tag_command(kind: str, name: str, value: str | None) -> str:
    where = f"--policy-arn {shlex.quote(name)}" if kind == "policy" else f"--{kind}-name {shlex.quote(name)}"
    if value is None:
        return f"aws iam untag-{kind} {where} --tag-keys {WILDCARD_TAG}"
    return f"aws iam tag-{kind} {where} --tags Key={WILDCARD_TAG},Value={value}"


# --- grading: one or many policies ----------------------------------------------------------------------


@dataclass(frozen=True)
class GradedPolicy:
    """One policy a principal holds, with its analysis."""

    name: str  # "inline policy X", "group G inline policy X", a policy ARN
    document: PolicyDocument
    analysis: Analysis

    @property
    def highest(self) -> Severity:
        return self.analysis.highest or Severity.INFORMATIONAL

    @property
    def flag_worthy(self) -> bool:
        return rank(self.highest) >= rank(FLAG_AT)


def _graded(name: str, document: PolicyDocument) -> GradedPolicy:
    analysis = analyze(document.document) if document.document is not None else Analysis((), 0)
    if document.refused:
        analysis = Analysis(analysis.findings, analysis.statements, (f"not analysed: {document.refused}",))
    return GradedPolicy(name, document, analysis)


@dataclass(frozen=True)
class Grade:
    """Everything a principal holds, graded; the flag is the highest severity at FLAG_AT or above."""

    policies: tuple[GradedPolicy, ...]
    notes: tuple[str, ...] = ()

    @property
    def highest(self) -> Severity:
        return max((p.highest for p in self.policies), key=rank, default=Severity.INFORMATIONAL)

    @property
    def flag(self) -> str | None:
        return self.highest.value if rank(self.highest) >= rank(FLAG_AT) else None

    def findings(self) -> list[tuple[str, Finding]]:
        return [(p.name, f) for p in self.policies for f in p.analysis.findings]


def _grade_principal(
    principal: Principal, fallback: Mapping[str, PolicyDocument], listed: AuthorizationDetails | None = None
) -> Grade:
    """Read and grade every policy `principal` holds now (a user: its groups' too), within POLICY_READ_LIMIT.

    `listed`: the sweep's bulk read of the account; what it holds is used instead of the per-principal reads.
    """
    policies: list[GradedPolicy] = []
    notes: list[str] = []
    holders = [(principal, "")]
    if principal.kind == "user":
        known = listed.holdings(principal) if listed is not None else None
        groups = (
            known.groups
            if known is not None
            else [
                str(g["GroupName"])
                for g in _pages("iam:ListGroupsForUser", "list_groups_for_user", "Groups", UserName=principal.name)
            ]
        )
        holders += [(Principal("group", group), f"group {group} ") for group in groups]
    for holder, label in holders:
        for name, document in _held_policies(holder, fallback if holder == principal else {}, listed):
            if len(policies) >= POLICY_READ_LIMIT:
                notes.append(f"more than {POLICY_READ_LIMIT} policies: the rest were not read")
                return Grade(tuple(policies), tuple(notes))
            policies.append(_graded(f"{label}{name}", document))
    return Grade(tuple(policies), tuple(notes))


def _held_policies(
    holder: Principal, fallback: Mapping[str, PolicyDocument], listed: AuthorizationDetails | None = None
) -> Iterator[tuple[str, PolicyDocument]]:
    known = listed.holdings(holder) if listed is not None else None
    if known is not None:
        yield from _listed_policies(holder, known, listed)
        return
    kind = holder.kind.capitalize()
    names = {f"{kind}Name": holder.name}
    for listed_name in _pages(f"iam:List{kind}Policies", f"list_{holder.kind}_policies", "PolicyNames", **names):
        policy_name = str(listed_name)

        def read(policy_name: str = policy_name) -> PolicyDocument:
            return _read_inline(holder, policy_name)

        try:
            document = _with_fallback(read, fallback.get(policy_name))
        except _Gone:
            continue  # deleted since it was listed: that event re-grades the principal again
        yield f"inline policy {policy_name}", document
    attached = _pages(
        f"iam:ListAttached{kind}Policies", f"list_attached_{holder.kind}_policies", "AttachedPolicies", **names
    )
    for policy in attached:
        arn = str(policy["PolicyArn"])
        try:
            yield arn, _read_default_version(arn)
        except _Gone:
            continue


def _listed_policies(
    holder: Principal, known: Holdings, listed: AuthorizationDetails | None
) -> Iterator[tuple[str, PolicyDocument]]:
    """What the bulk read says `holder` holds; a managed policy it did not cover is read on its own."""
    limit = INLINE_POLICY_LIMITS[holder.kind]
    for policy_name, raw in known.inline:
        yield f"inline policy {policy_name}", bounded_document(raw, limit, "live inline policy")
    for arn in known.attached:
        document = listed.documents.get(arn) if listed is not None else None
        try:
            yield arn, document if document is not None else _read_default_version(arn)
        except _Gone:
            continue


def _report(grade: Grade, details: dict[str, Any]) -> None:
    """The highest findings and counts of the rest, so that any policy makes an alert SNS accepts."""
    everything = sorted(grade.findings(), key=lambda item: -rank(item[1].severity))
    details["findings"] = [{"policy": name, **f.as_dict()} for name, f in everything[:REPORTED_FINDINGS]]
    details["findings_total"] = len(everything)
    if len(everything) > REPORTED_FINDINGS:
        details["findings_not_shown"] = len(everything) - REPORTED_FINDINGS
        details["findings_by_rule"] = dict(Counter(f"{f.rule.value} {f.severity.value}" for _, f in everything))
    details["finding_rules"] = sorted({f.rule.value for _, f in everything if rank(f.severity) >= rank(FLAG_AT)})
    details["policies"] = [
        {"policy": p.name, "source": p.document.source, "highest": p.highest.value}
        for p in grade.policies[:REPORTED_POLICIES]
    ]
    problems = [f"{p.name}: {problem}" for p in grade.policies for problem in p.analysis.problems]
    if problems or grade.notes:
        details["problems"] = [*grade.notes, *problems][:REPORTED_FINDINGS]


def _findings_key(trigger: Trigger, resource: str) -> str:
    """What names one outcome's kept findings: the event, or (a sweep decides many resources) sweep and resource."""
    return f"{trigger.event_id}#{resource}" if trigger.is_sweep else trigger.event_id


def _keep_all_findings(grade: Grade, details: dict[str, Any], table: str | None, event_id: str) -> None:
    """When the outcome shows only the highest findings, keep all of them where a person can fetch them.

    The outcome table item `flag_wildcard_iam#findings#<event id>` holds them as gzip'd JSON (attribute
    `findings`) for FINDINGS_KEPT_DAYS; `details.all_findings` names it. Bookkeeping: a failure is a note.
    """
    if table is None or "findings_not_shown" not in details:
        return
    import gzip  # noqa: PLC0415 - about 1 ms at cold start, needed only for a cut report

    everything = [
        {"policy": name, **f.as_dict()} for name, f in sorted(grade.findings(), key=lambda i: -rank(i[1].severity))
    ]
    blob = gzip.compress(json.dumps(everything).encode())
    while len(blob) > _FINDINGS_ITEM_LIMIT and len(everything) > 1:
        everything = everything[: len(everything) // 2]
        blob = gzip.compress(json.dumps(everything).encode())
    key = f"{CHECK}#findings#{event_id}"
    try:
        clients.client("dynamodb").put_item(
            TableName=table,
            Item={
                "id": {"S": key},
                "findings": {"B": blob},
                "count": {"N": str(len(everything))},
                "expiration": {"N": str(int(time.time()) + FINDINGS_KEPT_DAYS * 86_400)},
            },
        )
    except (ClientError, BotoCoreError) as err:
        details["all_findings"] = f"not kept ({type(err).__name__})"
        return
    details["all_findings"] = (
        f"outcome table {table}, item id {key}: {len(everything)} findings, gzip'd JSON in attribute `findings`"
    )


def _summary(grade: Grade) -> str:
    flagged = [f for _, f in grade.findings() if rank(f.severity) >= rank(FLAG_AT)]
    rules = ", ".join(dict.fromkeys(f"{f.rule.value} ({f.severity.value})" for f in flagged))
    # The escalation path, in words, of the highest finding that completes (or half-completes) one.
    paths = sorted((f for f in flagged if f.path), key=lambda f: rank(f.severity), reverse=True)
    named = f"; {paths[0].path}" if paths else ""
    return f"{len(flagged)} finding(s) at {FLAG_AT.value} or above: {rules}{named}"


# --- deciding --------------------------------------------------------------------------------------------


def flag_wildcard_policy(event: Event, settings: Settings, options: IamOptions | None = None) -> Outcome:
    """The event path: the policy or principal the event names, evaluated as the sweep evaluates it."""
    target = targets_from_event(event)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    return evaluate(target, Trigger.of(event), settings, event=event, options=options)


def evaluate(
    target: Target,
    trigger: Trigger,
    settings: Settings,
    *,
    event: Event | None = None,
    options: IamOptions | None = None,
) -> Outcome:
    """Read what the policy or principal holds now, grade it, settle its flag: the same for an event and the sweep.

    `event`: what named the target, when an event did (the ignored outcomes then name the event).
    """
    outcome = _evaluate(target, trigger, settings, event, options or IamOptions())
    # One alert per resource and rule set (alert_dedup): the rules the report names identify the finding.
    rules = outcome.details.get("finding_rules")
    if isinstance(rules, list) and rules and not outcome.findings:
        outcome = replace(outcome, findings=tuple(sorted(str(rule) for rule in rules)))
    return outcome


def _evaluate(
    target: Target, trigger: Trigger, settings: Settings, event: Event | None, options: IamOptions
) -> Outcome:
    resource = _resource_of(target, trigger)

    def ignore(reason: str) -> Outcome:
        return ignored(CHECK, event, reason) if event is not None else ignored_at(CHECK, trigger, reason, resource)

    try:
        if isinstance(target, ConfigPolicyTarget):
            arn = _resolve_policy_id(target.policy_id)
            if arn is None:
                return ignore("Config names a policy that no longer exists")
            target = ManagedPolicyTarget(arn)
        if isinstance(target, PrincipalTarget):
            return _decide_principal(target, trigger, settings)
        outcome = _decide_policy(target, trigger, settings, options)
        if target.default_changed and outcome.outcome not in (OutcomeKind.IGNORED, OutcomeKind.FAILED):
            outcome = _with_holders_regraded(outcome, target.policy_arn, settings)
        return outcome
    except _Gone as gone:
        return ignore(f"the policy or its principal no longer exists ({gone})")
    except AwsCallFailed as err:
        failed = call_failed(CHECK, trigger, resource, "could not read or flag", err)
        # Only the optional revert fixes anything; every other call serves flagging.
        failed_to = "fix" if err.action in REVERT_PERMISSIONS else "flag"
        failed.details.update(failed_to=failed_to, next_step=_fix_permission_step(err))
        return failed


def _resource_of(target: Target, trigger: Trigger) -> str:
    if isinstance(target, ManagedPolicyTarget):
        return target.policy_arn
    if isinstance(target, PrincipalTarget):
        return target.principal.arn(partition_of(trigger.region), trigger.account)
    return f"AWS::IAM::Policy {target.policy_id}"


def _fix_permission_step(err: AwsCallFailed) -> str:
    return (
        f"ML Warden could not complete {err.action} ({err.code}); the event is retried. Check the function's role "
        "and IAM's health; meanwhile review the policy named in the alert yourself."
    )


def _review_step(what: str) -> str:
    return (
        f"Review {what}: replace each wildcard in the findings with the actions and ARNs the workload needs (each "
        "finding has a suggestion), or remove the policy. If the access is intended, ask the security team for an "
        "exemption."
    )


def _exemption(resource_arn: str, tag_holder: tuple[str, str], settings: Settings) -> Exemption:
    """The exemption in force for a policy or principal: the registry's, or a trusted tag's.

    Tags are read only when they may count (TrustExemptionTags); unreadable tags exempt nothing.
    """
    tags: dict[str, str] | None = None
    if settings.trust_exemption_tags:
        try:
            tags = _tags(*tag_holder)
        except AwsCallFailed:
            tags = None
    return exemption_for(resource_arn, CHECK, tags, settings)


def _exempt(summary: str, highest: Severity, exemption: Exemption, details: dict[str, Any], **common: Any) -> Outcome:
    # Exempt resources are still alerted: at LOW when the security team granted it in the registry, at the
    # content's own severity when only a (trusted) tag exempts it.
    details["exemption"] = exemption.reason
    return Outcome(
        outcome=OutcomeKind.EXEMPT,
        severity=Severity.LOW if exemption.source == "registry" else highest,
        reason=f"{summary}, highest {highest.value}; exempt ({exemption.reason}), not tagged",
        details=details,
        **common,
    )


# --- a role, user or group: re-graded from everything it holds -------------------------------------------


@dataclass(frozen=True)
class FlagChange:
    """The principal's flag before and after; `note` says why it could not be written."""

    previous: str | None
    now: str | None
    actions: tuple[str, ...] = ()
    note: str | None = None
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return self.previous != self.now


def _settle_flag(
    principal: Principal,
    grade: Grade,
    fallback: Mapping[str, PolicyDocument],
    enforce: bool,
    known_tags: Mapping[str, str] | None = None,
) -> tuple[Grade, FlagChange]:
    """Make the principal's flag say its grade; converge when concurrent events for it race.

    Each event re-grades from live state and writes the whole answer (not a change to the old tag), then reads
    both back: a writer that read before another event's change and wrote after it sees the mismatch on its
    read-back and writes again. Any order ends with the tag equal to the grade of what the principal holds.
    """
    kind, name = principal.kind, principal.name
    # The sweep's bulk read saves the first tag read; every read after a write is live.
    previous = current = (known_tags if known_tags is not None else _tags(kind, name)).get(WILDCARD_TAG)
    actions: list[str] = []
    for _ in range(TAG_ATTEMPTS):
        desired = grade.flag
        if current == desired:
            return grade, FlagChange(previous, desired, tuple(dict.fromkeys(actions)))
        if not enforce:
            return grade, FlagChange(previous, desired, dry_run=True)
        try:
            actions.append(_write_flag(kind, name, desired))
        except AwsCallFailed as err:
            if err.code != _UNMODIFIABLE:
                raise
            note = (
                f"the {kind} {name} cannot be tagged ({err.code}: AWS manages it, as it does IAM Identity Center "
                "and service-linked roles); the finding stands without a tag"
            )
            return grade, FlagChange(previous, current, note=note)
        grade = _grade_principal(principal, fallback)
        current = _tags(kind, name).get(WILDCARD_TAG)
    if current == grade.flag:
        return grade, FlagChange(previous, current, tuple(dict.fromkeys(actions)))
    raise _NotConverged(previous, current, grade.flag, tuple(actions))


class _NotConverged(Exception):
    def __init__(self, previous: str | None, current: str | None, desired: str | None, actions: tuple[str, ...]):
        super().__init__(f"flag reads back {current!r}, grade says {desired!r}")
        self.previous, self.current, self.desired, self.actions = previous, current, desired, actions


def _decide_principal(target: PrincipalTarget, trigger: Trigger, settings: Settings) -> Outcome:
    principal = target.principal
    arn = principal.arn(partition_of(trigger.region), trigger.account)
    fallback: dict[str, PolicyDocument] = {}
    if target.inline_name is not None and target.event_document is not None:
        limit = INLINE_POLICY_LIMITS[principal.kind]
        fallback[target.inline_name] = bounded_document(target.event_document, limit, "event")
    grade = _grade_principal(principal, fallback, target.listed)
    # A principal the bulk read found clean is settled on the listed tags (no call); one with findings reads its
    # tags live, which also finds it gone when it was deleted since the listing.
    listed = target.listed.holdings(principal) if target.listed is not None else None
    known_tags = listed.tags if listed is not None and grade.flag is None else None
    details: dict[str, Any] = {"changed": target.changed}
    if target.inline_name is not None:
        details["policy_name"] = target.inline_name
    event_document = fallback.get(target.inline_name or "")
    if event_document is not None and event_document.refused:
        details["event_document_not_analysed"] = event_document.refused
    changed_policy = next((p for p in grade.policies if p.name == target.changed), None)
    if changed_policy is not None:
        details["document_source"] = changed_policy.document.source
    _report(grade, details)
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": arn}
    if principal.kind == "group":
        _keep_all_findings(grade, details, settings.outcome_table, _findings_key(trigger, arn))
        return _decide_group(principal, grade, details, settings, common, listed=target.listed)
    what = f"the {principal.kind} {principal.name}"
    if grade.flag is not None:
        exemption = _exemption(arn, (principal.kind, principal.name), settings)
        if exemption.active:
            return _exempt(_summary(grade), grade.highest, exemption, details, **common)
        details["exemption"] = exemption.reason
    try:
        grade, change = _settle_flag(principal, grade, fallback, settings.enforce, known_tags)
    except _NotConverged as stuck:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=max(Severity(stuck.desired or "HIGH"), Severity.HIGH, key=rank),
            reason=f"{what} was tagged {TAG_ATTEMPTS} times but its flag {stuck}",
            actions=stuck.actions,
            previous_state={WILDCARD_TAG: stuck.previous},
            new_state={WILDCARD_TAG: stuck.current},
            error_code="VerificationFailed",
            details={**details, "failed_to": "flag", "next_step": _review_step(what)},
            **common,
        )
    _report(grade, details)  # the last read wins: a concurrent change may have moved the grade
    _keep_all_findings(grade, details, settings.outcome_table, _findings_key(trigger, arn))
    return _principal_outcome(principal, target, grade, change, details=details, settings=settings, common=common)


def _principal_outcome(
    principal: Principal,
    target: PrincipalTarget,
    grade: Grade,
    change: FlagChange,
    *,
    details: dict[str, Any],
    settings: Settings,
    common: dict[str, Any],
) -> Outcome:
    kind, name = principal.kind, principal.name
    what = f"the {kind} {name}"
    state: dict[str, Any] = {}
    if change.changed:
        state = {
            "previous_state": {WILDCARD_TAG: change.previous},
            "new_state": {WILDCARD_TAG: change.now},
            "actions": change.actions,
            "undo": None if change.dry_run else _tag_command(kind, name, change.previous),
        }
    if change.note:
        details["not_tagged"] = change.note
    done = (
        f"dry run: would tag {what} {WILDCARD_TAG}={change.now}"
        if change.dry_run and change.now is not None
        else f"dry run: would remove the flag of {what}"
        if change.dry_run
        else f"{what} is tagged {WILDCARD_TAG}={change.now}"
        if change.changed and change.now is not None
        else f"flag {WILDCARD_TAG}={change.previous} removed from {what}"
        if change.changed
        else change.note or f"{what} already tagged {WILDCARD_TAG}={change.now}"
    )
    if grade.flag is None:
        lower = f"; {len(grade.findings())} lower finding(s) in details" if grade.findings() else ""
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=f"{what} holds no policy with a finding at {FLAG_AT.value} or above{lower}"
            + (f"; {done}" if change.changed else ""),
            details=details,
            **state,
            **common,
        )
    changed_flagged = any(
        p.name == target.changed or p.name.startswith(f"{target.changed} ") for p in grade.policies if p.flag_worthy
    )
    if not change.changed and not change.note and not target.report_grade and (target.reduces or not changed_flagged):
        # Nothing new to tell: the change itself adds no finding and the flag already says the rest.
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=f"{target.changed} adds no finding; {what} stays tagged {WILDCARD_TAG}={change.now} "
            "for its other policies",
            details=details,
            **common,
        )
    details["next_step"] = _review_step(f"the policies of {what}")
    return Outcome(
        outcome=OutcomeKind.FLAGGED,
        severity=grade.highest,
        reason=f"{_summary(grade)}; {done}",
        exempt_hint=exemptions.hint(str(common["resource"]), CHECK),
        details=details,
        alert_suppressed=_reported_on_their_own(grade, principal, target.listed, common["trigger"], settings),
        **state,
        **common,
    )


@dataclass(frozen=True)
class _Regraded:
    """The flags of the principals that hold a changed group or policy, after re-grading them."""

    changes: dict[str, dict[str, str | None]]
    actions: tuple[str, ...]
    notes: tuple[str, ...]

    def record(self, details: dict[str, Any], label: str) -> None:
        if self.changes:
            details[f"{label}_retagged"] = self.changes
        if self.notes:
            details[f"{label}_notes"] = list(self.notes[:REPORTED_FINDINGS])


def _regrade_holders(holders: list[Principal], settings: Settings, trigger: Trigger) -> _Regraded:
    """Re-grade the roles and users that hold what changed, up to MEMBER_LIMIT; the rest are counted."""
    changes: dict[str, dict[str, str | None]] = {}
    actions: list[str] = []
    notes: list[str] = []
    for holder in holders[:MEMBER_LIMIT]:
        label = f"{holder.kind} {holder.name}"
        holder_arn = holder.arn(partition_of(trigger.region), trigger.account)
        if _exemption(holder_arn, (holder.kind, holder.name), settings).active:
            notes.append(f"{label} is exempt: not tagged")
            continue
        try:
            _, change = _settle_flag(holder, _grade_principal(holder, {}), {}, settings.enforce)
        except _Gone:
            continue
        except _NotConverged as stuck:
            notes.append(f"{label}: {stuck}")
            continue
        if change.changed:
            changes[label] = {"before": change.previous, "after": change.now}
            actions += change.actions
        if change.note:
            notes.append(change.note)
    if len(holders) > MEMBER_LIMIT:
        notes.append(f"{len(holders) - MEMBER_LIMIT} more not re-graded (limit {MEMBER_LIMIT})")
    return _Regraded(changes, tuple(dict.fromkeys(actions)), tuple(notes))


def _group_members(group: str) -> list[Principal]:
    return [
        Principal("user", str(u["UserName"])) for u in _pages("iam:GetGroup", "get_group", "Users", GroupName=group)
    ]


def _decide_group(
    group: Principal,
    grade: Grade,
    details: dict[str, Any],
    settings: Settings,
    common: dict[str, Any],
    *,
    listed: AuthorizationDetails | None = None,
) -> Outcome:
    """Groups cannot be tagged: report the group, and re-grade the members, who hold its policies.

    A sweep evaluates every user on its own (with its groups' policies), so it does not re-grade them here.
    """
    trigger: Trigger = common["trigger"]
    members = (
        _Regraded({}, (), ()) if trigger.is_sweep else _regrade_holders(_group_members(group.name), settings, trigger)
    )
    details["not_tagged"] = "IAM groups cannot be tagged: the group is not flagged, its members are re-graded"
    members.record(details, "members")
    changes, actions = members.changes, members.actions
    if grade.flag is None:
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=f"the group {group.name} holds no policy with a finding at {FLAG_AT.value} or above"
            + (f"; {len(changes)} member flag(s) updated" if changes else ""),
            actions=actions,
            details=details,
            **common,
        )
    details["next_step"] = _review_step(f"the policies of the group {group.name} (every member holds them)")
    return Outcome(
        outcome=OutcomeKind.FLAGGED,
        severity=grade.highest,
        reason=f"{_summary(grade)}; IAM groups cannot be tagged: {len(changes)} member flag(s) updated",
        actions=actions,
        details=details,
        alert_suppressed=_reported_on_their_own(grade, group, listed, trigger, settings),
        **common,
    )


# --- a managed policy: its default version ---------------------------------------------------------------


def _policy_holders(arn: str) -> list[Principal]:
    """The roles and users a managed policy applies to (a group's through its members)."""
    holders: list[Principal] = []
    for kind, key, name in (("role", "PolicyRoles", "RoleName"), ("user", "PolicyUsers", "UserName")):
        entities = _pages(
            "iam:ListEntitiesForPolicy", "list_entities_for_policy", key, PolicyArn=arn, EntityFilter=kind.capitalize()
        )
        holders += [Principal(kind, str(e[name])) for e in entities]  # type: ignore[arg-type]
    groups = _pages(
        "iam:ListEntitiesForPolicy", "list_entities_for_policy", "PolicyGroups", PolicyArn=arn, EntityFilter="Group"
    )
    for group in groups:
        holders += [m for m in _group_members(str(group["GroupName"])) if m not in holders]
    return holders


def _with_holders_regraded(outcome: Outcome, arn: str, settings: Settings) -> Outcome:
    """A new default version changes what every holder of the policy may do: their flags follow."""
    regraded = _regrade_holders(_policy_holders(arn), settings, outcome.trigger)
    regraded.record(outcome.details, "holders")
    if not regraded.actions:
        return outcome
    return replace(outcome, actions=tuple(dict.fromkeys((*outcome.actions, *regraded.actions))))


def _decide_policy(target: ManagedPolicyTarget, trigger: Trigger, settings: Settings, options: IamOptions) -> Outcome:
    arn = target.policy_arn
    event_document = bounded_document(target.event_document, MANAGED_POLICY_LIMIT, "event")
    listed = target.listed.documents.get(arn) if target.listed is not None else None
    document = listed or _with_fallback(lambda: _read_default_version(arn), event_document)
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": arn}
    details: dict[str, Any] = {"document_source": document.source}
    if target.event_document is not None and event_document.refused:
        details["event_document_not_analysed"] = event_document.refused
    if document.document is None:
        return Outcome(
            outcome=OutcomeKind.IGNORED,
            severity=Severity.INFORMATIONAL,
            reason=f"the policy document ({document.source}) is {document.refused or 'not readable JSON'}",
            details=details,
            **common,
        )
    if document.version_id is not None and not target.aws_managed:
        note = iam_versions.remember_default(settings.outcome_table, arn, document.version_id)
        if note:
            details["default_version_record"] = note
    grade = Grade((_graded(arn, document),))
    _report(grade, details)
    _keep_all_findings(grade, details, settings.outcome_table, _findings_key(trigger, arn))
    latent = _latent_version_findings(target)
    if latent:
        details["non_default_version_findings"] = latent
    if target.listed is not None and grade.flag is not None:
        # The sweep holds back the alerts of holders that only this policy makes non-compliant: name them here.
        holders = target.listed.holders_of(arn)
        details["held_by"] = holders[:REPORTED_POLICIES]
        details["held_by_total"] = len(holders)
    if grade.flag is None:
        return _compliant_policy(arn, grade, details, common)
    summary, highest = _summary(grade), grade.highest
    if target.aws_managed:
        details["not_tagged"] = "AWS-managed policies cannot be tagged"
        details["next_step"] = _review_step("who holds this AWS-managed policy")
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=highest,
            reason=f"{summary}; AWS-managed policies cannot be tagged",
            details=details,
            **common,
        )
    exemption = _exemption(arn, ("policy", arn), settings)
    if exemption.active:
        return _exempt(summary, highest, exemption, details, **common)
    details["exemption"] = exemption.reason
    if _should_revert(target, document, highest, options):
        return _revert_version(arn, document, grade, details=details, settings=settings, common=common)
    return _flag_policy(arn, grade, details=details, settings=settings, common=common)


def _latent_version_findings(target: ManagedPolicyTarget) -> list[dict[str, Any]]:
    """Findings of a version created as non-default: not in force, but one SetDefaultPolicyVersion away."""
    if not target.non_default_version or target.event_document is None:
        return []
    document = bounded_document(target.event_document, MANAGED_POLICY_LIMIT, "event")
    if document.document is None:
        return []
    flagged = analyze(document.document).at_least(FLAG_AT)
    return [f.as_dict() for f in flagged[:REPORTED_FINDINGS]]


def _compliant_policy(arn: str, grade: Grade, details: dict[str, Any], common: dict[str, Any]) -> Outcome:
    """No finding worth a flag. A stale flag is removed: the tag tells the truth."""
    lower = f"; {len(grade.findings())} lower finding(s) in details" if grade.findings() else ""
    previous = None if ":iam::aws:" in arn else _tags("policy", arn).get(WILDCARD_TAG)
    if previous is None:
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=f"no finding at {FLAG_AT.value} or above{lower}",
            details=details,
            **common,
        )
    action = _write_flag("policy", arn, None)
    return Outcome(
        outcome=OutcomeKind.COMPLIANT,
        severity=Severity.INFORMATIONAL,
        reason=f"no finding at {FLAG_AT.value} or above any more{lower}; stale {WILDCARD_TAG} tag removed",
        actions=(action,),
        previous_state={WILDCARD_TAG: previous},
        new_state={WILDCARD_TAG: None},
        undo=_tag_command("policy", arn, previous),
        details=details,
        **common,
    )


def _flag_policy(
    arn: str, grade: Grade, *, details: dict[str, Any], settings: Settings, common: dict[str, Any]
) -> Outcome:
    """Tag the policy with the grade of its default version (a policy's flag is about that version alone)."""
    summary, desired = _summary(grade), grade.highest.value
    details["next_step"] = _review_step("the policy's default version")
    hint = exemptions.hint(arn, CHECK)
    previous = _tags("policy", arn).get(WILDCARD_TAG)
    if previous == desired:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=grade.highest,
            reason=f"{summary}; the policy is already tagged {WILDCARD_TAG}={desired}",
            exempt_hint=hint,
            details=details,
            **common,
        )
    state_before, state_after = {WILDCARD_TAG: previous}, {WILDCARD_TAG: desired}
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=grade.highest,
            reason=f"{summary}; dry run: would tag the policy {WILDCARD_TAG}={desired}",
            previous_state=state_before,
            new_state=state_after,
            exempt_hint=hint,
            details=details,
            **common,
        )
    action = _write_flag("policy", arn, desired)
    after = _tags("policy", arn).get(WILDCARD_TAG)
    if after != desired:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=grade.highest,
            reason=f"{summary}; tagged the policy {WILDCARD_TAG}={desired} but it reads back as {after!r}",
            actions=(action,),
            previous_state=state_before,
            new_state={WILDCARD_TAG: after},
            error_code="VerificationFailed",
            details={**details, "failed_to": "flag"},
            **common,
        )
    return Outcome(
        outcome=OutcomeKind.FLAGGED,
        severity=grade.highest,
        reason=f"{summary}; tagged the policy {WILDCARD_TAG}={desired}",
        actions=(action,),
        previous_state=state_before,
        new_state=state_after,
        undo=_tag_command("policy", arn, previous),
        exempt_hint=hint,
        details=details,
        **common,
    )


# --- the optional fix: set a former default version back as default ---------------------------------------


def _should_revert(
    target: ManagedPolicyTarget, document: PolicyDocument, highest: Severity, options: IamOptions
) -> bool:
    return (
        options.revert_critical_versions
        and highest is Severity.CRITICAL
        and target.new_default_version
        and document.version_id is not None
    )


def _restorable(
    arn: str, current: str, current_highest: Severity, table: str | None
) -> tuple[GradedPolicy | None, str]:
    """The newest version that was the default before and grades strictly lower than the current one."""
    iam = clients.client("iam")
    versions = _call("iam:ListPolicyVersions", iam.list_policy_versions, PolicyArn=arn).get("Versions", [])
    known = iam_versions.known_defaults(table, arn)
    ids = sorted(
        (str(v.get("VersionId")) for v in versions if _VERSION_ID.match(str(v.get("VersionId")))),
        key=iam_versions.version_number,
        reverse=True,
    )
    former = [v for v in ids if v != current and v in known]
    staged = [v for v in ids if v != current and v not in known]
    for version_id in former:
        candidate = _graded(arn, _read_version(arn, version_id, f"version {version_id}"))
        if candidate.document.document is not None and rank(candidate.highest) < rank(current_highest):
            return candidate, ""
    never = f"; never-default version(s) {', '.join(staged)} are not candidates" if staged else ""
    if not former:
        return None, f"no earlier version is known to have been the default{never}"
    return None, f"no former default ({', '.join(former)}) grades lower than {current_highest.value}{never}"


def _revert_version(
    arn: str,
    document: PolicyDocument,
    grade: Grade,
    *,
    details: dict[str, Any],
    settings: Settings,
    common: dict[str, Any],
) -> Outcome:
    """A CreatePolicyVersion made full administrator access the default: put a former default back."""
    current = str(document.version_id)
    summary, highest = _summary(grade), grade.highest
    restored, why_not = _restorable(arn, current, highest, settings.outcome_table)
    if restored is None:
        details["not_reverted"] = why_not
        return _flag_policy(arn, grade, details=details, settings=settings, common=common)
    previous_id = str(restored.document.version_id)
    restored_report: dict[str, Any] = {}
    _report(Grade((restored,)), restored_report)
    details["restored_version"] = {
        "version": previous_id,
        "highest": restored.highest.value,
        "findings": restored_report["findings"],
        "findings_total": restored_report["findings_total"],
    }
    restored_text = (
        f"version {previous_id} (a former default, grades {restored.highest.value}"
        + (f": {_summary(Grade((restored,)))}" if restored.flag_worthy else "")
        + ")"
    )
    state_before, state_after = {"DefaultVersionId": current}, {"DefaultVersionId": previous_id}
    undo = f"aws iam set-default-policy-version --policy-arn {shlex.quote(arn)} --version-id {current}"
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=highest,
            reason=f"{summary}; dry run: would set {restored_text} back as default",
            previous_state=state_before,
            new_state=state_after,
            details=details,
            **common,
        )
    iam = clients.client("iam")
    action = "iam:SetDefaultPolicyVersion"
    _call(action, iam.set_default_policy_version, PolicyArn=arn, VersionId=previous_id)
    after = str(_call("iam:GetPolicy", iam.get_policy, PolicyArn=arn)["Policy"]["DefaultVersionId"])
    if after != previous_id:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=highest,
            reason=f"{summary}; set version {previous_id} as default but {after} reads back as default",
            actions=(action,),
            previous_state=state_before,
            new_state={"DefaultVersionId": after},
            undo=undo,
            error_code="VerificationFailed",
            details=details,
            **common,
        )
    # Our own SetDefaultPolicyVersion event is skipped by the loop guard: the policy's flag follows here.
    flag_action = _retag_after_revert(arn, restored)
    details["next_step"] = _review_step(f"why version {current} was made default, and version {previous_id}")
    return Outcome(
        outcome=OutcomeKind.REMEDIATED,
        severity=highest,
        reason=f"{summary}; {restored_text} set back as default (version {current} is kept, not deleted)",
        actions=(action, *flag_action),
        previous_state=state_before,
        new_state=state_after,
        undo=undo,
        exempt_hint=exemptions.hint(arn, CHECK),
        details=details,
        **common,
    )


def _retag_after_revert(arn: str, restored: GradedPolicy) -> tuple[str, ...]:
    desired = restored.highest.value if rank(restored.highest) >= rank(FLAG_AT) else None
    if _tags("policy", arn).get(WILDCARD_TAG) == desired:
        return ()
    return (_write_flag("policy", arn, desired),)


# --- the sweep's way in: the account's policies and principals, in one paginated read -------------------------

# GetAccountAuthorizationDetails returns every role, user and group with its inline policy documents, attached
# policies, groups and tags, and every customer-managed policy with its versions' documents: one paginated call
# instead of a List and a Get per policy and per principal. AWS-managed policies are not listed (there are over a
# thousand); the few attached to principals are read once each (GetPolicy, GetPolicyVersion).
SWEEP_PERMISSIONS = frozenset({"iam:GetAccountAuthorizationDetails"})
_LISTED_TYPES = ["User", "Role", "Group", "LocalManagedPolicy"]
# Items per page; 1,000 is the API's maximum (GetAccountAuthorizationDetails API reference, MaxItems).
AUTHORIZATION_PAGE = 1_000


@dataclass(frozen=True)
class Holdings:
    """What one role, user or group holds, as the bulk read listed it."""

    inline: tuple[tuple[str, Any], ...]  # (policy name, document)
    attached: tuple[str, ...]  # managed policy ARNs
    groups: tuple[str, ...] = ()  # a user's groups
    tags: Mapping[str, str] | None = None  # roles and users; groups cannot be tagged
    arn: str | None = None


@dataclass(frozen=True)
class AuthorizationDetails:
    """The account's IAM, read in bulk during the sweep's listing; evaluation reads from it instead of IAM."""

    principals: Mapping[tuple[str, str], Holdings]
    documents: Mapping[str, PolicyDocument]  # managed policy ARN -> its default version
    # Customer-managed policies with findings -> whether their flag already said their grade when listed
    # (flagged and alerted before this sweep). Unknown counts as flagged before: the holders then alert.
    flagged_before: Mapping[str, bool] = field(default_factory=dict)
    # Managed policy ARN -> the roles, users and groups it is attached to (ARNs, as listed), sorted.
    holders: Mapping[str, list[str]] = field(default_factory=dict)

    def holdings(self, principal: Principal) -> Holdings | None:
        return self.principals.get((principal.kind, principal.name))

    def holders_of(self, policy_arn: str) -> list[str]:
        return self.holders.get(policy_arn, [])

    def registry(self, table: str) -> list[exemptions.Entry] | None:
        """The exemption registry, read once per sweep (None when unreadable)."""
        with _REGISTRY_LOCK:
            if table not in self._registry:
                try:
                    self._registry[table] = exemptions.read_registry(table)
                except exemptions.RegistryUnreadable:
                    return None
            return self._registry[table]

    _registry: dict[str, list[exemptions.Entry]] = field(default_factory=dict, compare=False, repr=False)


_REGISTRY_LOCK = threading.Lock()


def targets_from_inventory(inventory: Inventory) -> Iterator[Target]:
    """Every customer-managed policy, and every role, user and group that holds a policy (IAM is global: the
    first region only).

    What a sweep reports per resource, so that one admin policy is alerted once, not once per holder:

    - a customer-managed policy is graded on its default version and alerted as itself (and tagged);
    - a role, user or group is graded from everything it holds, and its flag settled, as on the event path.
      It is alerted for what only it can be blamed for: its inline policies and the AWS-managed policies
      attached to it (AWS-managed policies cannot be tagged and are not swept on their own). When every
      finding comes from customer-managed policies or its groups (each reported as its own resource), its
      outcome still says `flagged` at its grade, with the alert held back (`alert_suppressed` names why).
    """
    if not inventory.first_region:
        return
    iam = clients.client("iam")  # IAM is global: the module's one client
    principals: dict[tuple[str, str], Holdings] = {}
    documents: dict[str, PolicyDocument] = {}
    policies: list[str] = []
    try:
        pages = iam.get_paginator("get_account_authorization_details").paginate(
            Filter=_LISTED_TYPES, PaginationConfig={"PageSize": AUTHORIZATION_PAGE}
        )
        for page in pages:
            _read_page(page, principals, documents, policies)
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("iam:GetAccountAuthorizationDetails", err) from err
    aws_managed = sorted({arn for held in principals.values() for arn in held.attached if ":iam::aws:" in arn})
    for arn, document in zip(aws_managed, inventory.map(_aws_managed_document, aws_managed), strict=True):
        if document is not None:
            documents[arn] = document
    # Only the policies with findings: whether they were flagged before decides whether their holders alert.
    graded = [(arn, _graded(arn, documents[arn])) for arn in policies if arn in documents]
    flag_worthy = [(arn, policy.highest.value) for arn, policy in graded if policy.flag_worthy]
    flagged_before = dict(
        zip((arn for arn, _ in flag_worthy), inventory.map(_flagged_before, flag_worthy), strict=True)
    )
    holders: dict[str, list[str]] = {}
    for (kind, name), held in sorted(principals.items()):
        for arn in held.attached:
            holders.setdefault(arn, []).append(held.arn or f"{kind}/{name}")
    listed = AuthorizationDetails(principals, documents, flagged_before, {a: sorted(h) for a, h in holders.items()})
    for arn in policies:
        yield ManagedPolicyTarget(arn, listed=listed)
    for (kind, name), held in principals.items():
        if not (held.inline or held.attached or held.groups or WILDCARD_TAG in (held.tags or {})):
            continue  # holds nothing and carries no flag: nothing to grade
        yield PrincipalTarget(Principal(kind, name), changed=SWEPT, report_grade=True, listed=listed)  # type: ignore[arg-type]


SWEPT = "everything it holds (sweep)"
_DETAIL_LISTS: tuple[tuple[PrincipalKind, str, str, str], ...] = (
    ("role", "RoleDetailList", "RoleName", "RolePolicyList"),
    ("user", "UserDetailList", "UserName", "UserPolicyList"),
    ("group", "GroupDetailList", "GroupName", "GroupPolicyList"),
)


def _read_page(
    page: Mapping[str, Any],
    principals: dict[tuple[str, str], Holdings],
    documents: dict[str, PolicyDocument],
    policies: list[str],
) -> None:
    for kind, list_key, name_key, inline_key in _DETAIL_LISTS:
        for entry in page.get(list_key, []):
            name = entry.get(name_key)
            if not isinstance(name, str) or not _NAME.match(name):
                continue
            principals[(kind, name)] = Holdings(
                inline=tuple(
                    (str(p["PolicyName"]), p.get("PolicyDocument"))
                    for p in entry.get(inline_key, [])
                    if "PolicyName" in p
                ),
                attached=tuple(
                    str(p["PolicyArn"]) for p in entry.get("AttachedManagedPolicies", []) if "PolicyArn" in p
                ),
                groups=tuple(str(g) for g in entry.get("GroupList", []) if isinstance(g, str) and _NAME.match(g)),
                tags=None if kind == "group" else {t["Key"]: t["Value"] for t in entry.get("Tags", [])},
                arn=entry.get("Arn"),
            )
    for policy in page.get("Policies", []):
        arn = _policy_arn(policy.get("Arn"))
        if arn is None:
            continue
        policies.append(arn)
        default = next((v for v in policy.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
        if default is not None and _VERSION_ID.match(str(default.get("VersionId"))):
            version_id = str(default["VersionId"])
            documents[arn] = bounded_document(
                default.get("Document"), MANAGED_POLICY_LIMIT, f"live default version {version_id}", version_id
            )


def _aws_managed_document(arn: str) -> PolicyDocument | None:
    """An AWS-managed policy's default version, read once per sweep; None leaves it to each holder's own read."""
    try:
        return _read_default_version(arn)
    except (_Gone, AwsCallFailed):
        return None


def _flagged_before(policy: tuple[str, str]) -> bool:
    arn, grade = policy
    try:
        return _tags("policy", arn).get(WILDCARD_TAG) == grade
    except (_Gone, AwsCallFailed):
        return True  # unknown: the holders alert rather than rely on the policy's alert


def _reported_on_their_own(
    grade: Grade, principal: Principal, listed: AuthorizationDetails | None, trigger: Trigger, settings: Settings
) -> str | None:
    """Why a sweep holds back a principal's alert, or None to send it.

    Held back only when every finding comes from a customer-managed policy or a group that the same sweep
    reports and alerts as its own resource, none of them exempt (an exempt policy alerts LOW: its holders
    alert at their own grade, as on the event path), and either the principal's flag already said its grade
    (alerted before) or the policy is new to ML Warden too (its alert, naming its holders, goes out now). A
    principal that gained an already-flagged policy through an event nobody delivered is alerted on its own.
    """
    if not trigger.is_sweep or listed is None:
        return None
    flagged = [policy.name for policy in grade.policies if policy.flag_worthy]
    sources = {_reporting_resource(name, trigger) for name in flagged}
    if not flagged or None in sources:
        return None
    held = listed.holdings(principal)
    known = principal.kind == "group" or (held is not None and (held.tags or {}).get(WILDCARD_TAG) == grade.flag)
    if not known and any(listed.flagged_before.get(str(source), True) for source in sources):
        return None
    if settings.exemption_table is not None:
        entries = listed.registry(settings.exemption_table)
        today = dt.datetime.now(dt.UTC).date()
        if entries is None or any(
            exemptions.best_entry(entries, str(source), CHECK, settings.max_exemption_days, today).active
            for source in sources
        ):
            return None
    shown = ", ".join(flagged[:3]) + (f" and {len(flagged) - 3} more" if len(flagged) > 3 else "")
    return f"sweep: every finding comes from {shown}, each reported and alerted as its own resource"


def _reporting_resource(policy: str, trigger: Trigger) -> str | None:
    """The resource a sweep reports a held policy on: a customer-managed policy itself (held directly or
    through a group), the group for a group's own policies; None for the principal's own (inline, AWS-managed)."""
    group = None
    if policy.startswith("group "):
        _, group, policy = policy.split(" ", 2)
    if _POLICY_ARN.match(policy) is not None and ":iam::aws:" not in policy:
        return policy
    if group is not None:
        return Principal("group", group).arn(partition_of(trigger.region), trigger.account)
    return None


def key_of(target: Target) -> dict[str, str]:
    if isinstance(target, ManagedPolicyTarget):
        return {"policy": target.policy_arn}
    if isinstance(target, PrincipalTarget):
        return {"kind": target.principal.kind, "name": target.principal.name}
    return {"policy_id": target.policy_id}


def target_of_key(key: Mapping[str, Any]) -> Target:
    """A target handed over as a key: without the bulk read, so every read is its own (live) call."""
    if "policy" in key:
        return ManagedPolicyTarget(str(key["policy"]))
    if "policy_id" in key:
        return ConfigPolicyTarget(str(key["policy_id"]))
    kind = str(key["kind"])
    if kind not in ("role", "user", "group"):
        raise KeyError(f"not a principal kind: {kind!r}")
    return PrincipalTarget(Principal(kind, str(key["name"])), changed=SWEPT, report_grade=True)  # type: ignore[arg-type]


def resource_of(target: Target) -> str:
    if isinstance(target, ManagedPolicyTarget):
        return target.policy_arn
    if isinstance(target, PrincipalTarget):
        held = target.listed.holdings(target.principal) if target.listed is not None else None
        return held.arn if held is not None and held.arn else f"{target.principal.kind}/{target.principal.name}"
    return f"AWS::IAM::Policy {target.policy_id}"


UNIT = CheckUnit(
    name=CHECK,
    decide_event=flag_wildcard_policy,
    targets_from_inventory=targets_from_inventory,
    evaluate=evaluate,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    sweep_permissions=SWEEP_PERMISSIONS,
)
