"""Wildcard IAM policies: read the policy as IAM holds it now, analyse it, tag and alert.

Triggers: CloudTrail IAM calls that create, change or attach a policy, and the AWS Config managed
rules about admin and full-service access. IAM is global: its CloudTrail events reach EventBridge in
us-east-1 only, so the rules that feed this check live there.

Flag, don't break: a policy with findings of MEDIUM or above is tagged `mlwarden:wildcard` = its
highest severity (customer-managed policies), or its role or user is (inline policies, and AWS-managed
policies, which cannot be tagged). Groups cannot be tagged: the alert says so. The one optional fix
(off by default) sets the previous version back as default after a CreatePolicyVersion introduced
full administrator access.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import ApiCall, ComplianceChange, Event, Unrecognised, decode_policy_document
from mlwarden.exemptions import NOT_EXEMPT, Exemption, exemption_for
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored
from mlwarden.policy_analysis import Analysis, analyze, rank
from mlwarden.settings import Settings, SettingsError

CHECK = "flag_wildcard_iam"
WILDCARD_TAG = "mlwarden:wildcard"
FLAG_AT = Severity.MEDIUM  # findings below this are reported in details but do not flag
IAM_EVENT_SOURCE = "iam.amazonaws.com"
# SetDefaultPolicyVersion is not in the list, but it is how a version created as non-default
# (reported, not flagged) comes into force: without it that path would go unseen.
POLICY_API_CALLS = frozenset({"CreatePolicy", "CreatePolicyVersion", "SetDefaultPolicyVersion"})
INLINE_API_CALLS = {"PutRolePolicy": "role", "PutUserPolicy": "user", "PutGroupPolicy": "group"}
ATTACH_API_CALLS = {"AttachRolePolicy": "role", "AttachUserPolicy": "user", "AttachGroupPolicy": "group"}
# AWS Config managed rules, matched by prefix (deployed names carry suffixes; Security Hub adds a prefix).
CONFIG_RULES = ("iam-policy-no-statements-with-admin-access", "iam-policy-no-statements-with-full-access")
REVERT_VARIABLE = "REVERT_CRITICAL_POLICY_VERSIONS"

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
POLICY_PERMISSIONS = frozenset(
    {
        "iam:GetPolicy",
        "iam:GetPolicyVersion",
        "iam:GetRolePolicy",
        "iam:GetUserPolicy",
        "iam:GetGroupPolicy",
        "iam:ListPolicyTags",
        "iam:ListRoleTags",
        "iam:ListUserTags",
        "iam:TagPolicy",
        "iam:UntagPolicy",
        "iam:TagRole",
        "iam:TagUser",
    }
)
# Config names a policy by its id: finding its ARN needs ListPolicies, which has no resource type.
LIST_PERMISSIONS = frozenset({"iam:ListPolicies"})
# Only when REVERT_CRITICAL_POLICY_VERSIONS=true (granted under a template Condition).
REVERT_PERMISSIONS = frozenset({"iam:ListPolicyVersions", "iam:SetDefaultPolicyVersion"})

PrincipalKind = Literal["role", "user", "group"]
_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
_POLICY_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}|aws):policy/([\w+=,.@/-]{1,1024})$")
_POLICY_ID = re.compile(r"^[A-Z0-9]{16,128}$")  # ANPA... in AWS
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


@dataclass(frozen=True)
class IamOptions:
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
    kind: PrincipalKind
    name: str

    def arn(self, partition: str, account: str | None) -> str:
        return f"arn:{partition}:iam::{account or 'unknown'}:{self.kind}/{self.name}"


@dataclass(frozen=True)
class ManagedPolicyTarget:
    """A managed policy: created, given a new version, attached, or named by Config."""

    policy_arn: str
    principal: Principal | None = None
    # The document the event carries (CreatePolicy, CreatePolicyVersion): used only if IAM can't be read.
    event_document: Mapping[str, Any] | None = None
    new_default_version: bool = False
    # CreatePolicyVersion without setAsDefault: the event's version grants nothing until made default.
    non_default_version: bool = False

    @property
    def aws_managed(self) -> bool:
        return self.policy_arn.split(":")[4] == "aws"


@dataclass(frozen=True)
class InlinePolicyTarget:
    principal: Principal
    policy_name: str
    event_document: Mapping[str, Any] | None


@dataclass(frozen=True)
class ConfigPolicyTarget:
    """Config's resourceId of an AWS::IAM::Policy is the policy id (ANPA...), not its ARN."""

    policy_id: str


@dataclass(frozen=True)
class PrincipalTarget:
    """A role or user whose exempt tag was set (TagRole, TagUser, or CreateRole/CreateUser with tags)."""

    principal: Principal


Target = ManagedPolicyTarget | InlinePolicyTarget | ConfigPolicyTarget | PrincipalTarget
# Calls routed here because they may set the exempt tag (run_check ignores them when they do not).
TAG_API_CALLS: dict[str, PrincipalKind] = {
    "TagRole": "role",
    "CreateRole": "role",
    "TagUser": "user",
    "CreateUser": "user",
}


def partition_of(region: str | None) -> str:
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _document(value: Any) -> Mapping[str, Any] | None:
    try:
        return decode_policy_document(value)
    except RecursionError:
        return None  # nested deeper than json allows: IAM would not have accepted it either


def target_of(event: Event) -> Target | str:
    """The policy an event is about, or the reason it is not this check's."""
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
    if what == "CreatePolicy":
        name, path = event.parameter("policyName"), event.parameter("path") or "/"
        if name is None or not _NAME.match(name) or not path.startswith("/") or not path.endswith("/"):
            return "CreatePolicy names no valid policy"
        account = event.recipient_account or event.actor.account
        if account is None:
            return "CreatePolicy names no account"
        arn = f"arn:{partition_of(event.aws_region)}:iam::{account}:policy{path}{name}"
        return ManagedPolicyTarget(arn, event_document=_document(event.request_parameters.get("policyDocument")))
    if what == "CreatePolicyVersion":
        version_of = _policy_arn(event.parameter("policyArn"))
        if version_of is None:
            return "CreatePolicyVersion names no valid policy ARN"
        set_as_default = str(event.request_parameters.get("setAsDefault", "")).lower() == "true"
        return ManagedPolicyTarget(
            version_of,
            event_document=_document(event.request_parameters.get("policyDocument")),
            new_default_version=set_as_default,
            non_default_version=not set_as_default,
        )
    if what == "SetDefaultPolicyVersion":
        made_default = _policy_arn(event.parameter("policyArn"))
        if made_default is None:
            return "SetDefaultPolicyVersion names no valid policy ARN"
        return ManagedPolicyTarget(made_default)
    if what in INLINE_API_CALLS:
        kind: PrincipalKind = INLINE_API_CALLS[what]  # type: ignore[assignment]
        principal = _principal(kind, event.parameter(f"{kind}Name"), what)
        if isinstance(principal, str):
            return principal
        policy_name = event.parameter("policyName")
        if policy_name is None or not _NAME.match(policy_name):
            return f"{what} names no valid policy"
        return InlinePolicyTarget(principal, policy_name, _document(event.request_parameters.get("policyDocument")))
    if what == "TagPolicy":
        tagged = _policy_arn(event.parameter("policyArn"))
        return ManagedPolicyTarget(tagged) if tagged is not None else "TagPolicy names no valid policy ARN"
    if what in TAG_API_CALLS:
        tagged_principal = _principal(TAG_API_CALLS[what], event.parameter(f"{TAG_API_CALLS[what]}Name"), what)
        return tagged_principal if isinstance(tagged_principal, str) else PrincipalTarget(tagged_principal)
    if what in ATTACH_API_CALLS:
        kind = ATTACH_API_CALLS[what]  # type: ignore[assignment]
        principal = _principal(kind, event.parameter(f"{kind}Name"), what)
        if isinstance(principal, str):
            return principal
        attached = _policy_arn(event.parameter("policyArn"))
        if attached is None:
            return f"{what} names no valid policy ARN"
        return ManagedPolicyTarget(attached, principal=principal)
    return f"IAM call {what} does not create, change or attach a policy"


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


@dataclass(frozen=True)
class PolicyDocument:
    document: Mapping[str, Any] | None
    source: str  # where it was read: "live default version v3", "live inline policy", "event (...)"
    version_id: str | None = None


def _read_default_version(policy_arn: str) -> PolicyDocument:
    iam = clients.client("iam")
    policy = _call("iam:GetPolicy", iam.get_policy, PolicyArn=policy_arn)["Policy"]
    version_id = str(policy["DefaultVersionId"])
    return _read_version(policy_arn, version_id, f"live default version {version_id}")


def _read_version(policy_arn: str, version_id: str, source: str) -> PolicyDocument:
    iam = clients.client("iam")
    version = _call("iam:GetPolicyVersion", iam.get_policy_version, PolicyArn=policy_arn, VersionId=version_id)
    return PolicyDocument(_document(version["PolicyVersion"].get("Document")), source, version_id)


def _read_inline(principal: Principal, policy_name: str) -> PolicyDocument:
    iam = clients.client("iam")
    reader = {"role": iam.get_role_policy, "user": iam.get_user_policy, "group": iam.get_group_policy}[principal.kind]
    action = f"iam:Get{principal.kind.capitalize()}Policy"
    names = {f"{principal.kind.capitalize()}Name": principal.name, "PolicyName": policy_name}
    response = _call(action, reader, **names)
    return PolicyDocument(_document(response.get("PolicyDocument")), "live inline policy")


def _with_fallback(read: Callable[[], PolicyDocument], event_document: Mapping[str, Any] | None) -> PolicyDocument:
    """Live state wins; the event's own document only when IAM can't be read (and the outcome says so)."""
    try:
        return read()
    except AwsCallFailed as err:
        if event_document is None:
            raise
        return PolicyDocument(event_document, f"event (live read failed: {err.action} {err.code})")


def _resolve_policy_id(policy_id: str) -> str | None:
    paginator = clients.client("iam").get_paginator("list_policies")
    try:
        for page in paginator.paginate(Scope="Local"):
            for policy in page.get("Policies", []):
                if policy.get("PolicyId") == policy_id:
                    return str(policy["Arn"])
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("iam:ListPolicies", err) from err
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


def _write_tag(kind: str, name: str, value: str) -> None:
    """TagPolicy/TagRole/TagUser add or overwrite the given keys only: the other tags stay."""
    iam = clients.client("iam")
    tags = [{"Key": WILDCARD_TAG, "Value": value}]
    if kind == "policy":
        _call("iam:TagPolicy", iam.tag_policy, PolicyArn=name, Tags=tags)
    elif kind == "role":
        _call("iam:TagRole", iam.tag_role, RoleName=name, Tags=tags)
    else:
        _call("iam:TagUser", iam.tag_user, UserName=name, Tags=tags)


# --- deciding --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    """What is being decided on: the policy, where it lives, and what can carry the flag."""

    resource: str
    document: PolicyDocument
    # ("policy", arn) | ("role", name) | ("user", name) | None when nothing can be tagged
    tag_target: tuple[str, str] | None
    untaggable_reason: str | None
    exemption_sources: tuple[tuple[str, str], ...]
    target: Target


def flag_wildcard_policy(event: Event, settings: Settings, options: IamOptions | None = None) -> Outcome:
    target = target_of(event)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    trigger = Trigger.of(event)
    options = options or IamOptions()
    resource = _resource_of(target, trigger)
    try:
        if isinstance(target, PrincipalTarget):
            return _principal_flag(target, trigger, resource)
        subject = _subject(target, trigger)
        if subject is None:
            return ignored(CHECK, event, "Config names a policy that no longer exists")
        return _decide(subject, trigger, settings, options)
    except _Gone as gone:
        return ignored(CHECK, event, f"the policy or its principal no longer exists ({gone})")
    except AwsCallFailed as err:
        return call_failed(CHECK, trigger, resource, "could not read or flag the policy", err)


def _resource_of(target: Target, trigger: Trigger) -> str:
    if isinstance(target, ManagedPolicyTarget):
        return target.policy_arn
    if isinstance(target, PrincipalTarget):
        return target.principal.arn(partition_of(trigger.region), trigger.account)
    if isinstance(target, InlinePolicyTarget):
        principal = target.principal.arn(partition_of(trigger.region), trigger.account)
        return f"{principal} (inline policy {target.policy_name})"
    return f"AWS::IAM::Policy {target.policy_id}"


def _principal_flag(target: PrincipalTarget, trigger: Trigger, resource: str) -> Outcome:
    """A role or user is judged by the flag ML Warden keeps on it: the highest severity of all its policies."""
    flag = _tags(target.principal.kind, target.principal.name).get(WILDCARD_TAG) or ""
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": resource}
    if flag in Severity.__members__ and rank(Severity(flag)) >= rank(FLAG_AT):
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=Severity(flag),
            reason=f"the {target.principal.kind} carries {WILDCARD_TAG}={flag}: one of its policies was flagged",
            details={WILDCARD_TAG: flag},
            **common,
        )
    return Outcome(
        outcome=OutcomeKind.COMPLIANT,
        severity=Severity.INFORMATIONAL,
        reason=f"the {target.principal.kind} carries no {WILDCARD_TAG} flag",
        **common,
    )


def _subject(target: Target, trigger: Trigger) -> _Subject | None:
    if isinstance(target, PrincipalTarget):
        return None
    if isinstance(target, ConfigPolicyTarget):
        arn = _resolve_policy_id(target.policy_id)
        if arn is None:
            return None
        target = ManagedPolicyTarget(arn)
    if isinstance(target, InlinePolicyTarget):
        principal = target.principal
        document = _with_fallback(lambda: _read_inline(principal, target.policy_name), target.event_document)
        taggable = principal.kind != "group"
        return _Subject(
            resource=_resource_of(target, trigger),
            document=document,
            tag_target=(principal.kind, principal.name) if taggable else None,
            untaggable_reason=None if taggable else "IAM groups cannot be tagged: the group is not flagged",
            exemption_sources=((principal.kind, principal.name),) if taggable else (),
            target=target,
        )
    arn = target.policy_arn
    document = _with_fallback(lambda: _read_default_version(arn), target.event_document)
    principal_source = (
        ((target.principal.kind, target.principal.name),)
        if target.principal is not None and target.principal.kind != "group"
        else ()
    )
    if not target.aws_managed:
        return _Subject(arn, document, ("policy", arn), None, (("policy", arn), *principal_source), target)
    if principal_source:
        return _Subject(arn, document, principal_source[0], None, principal_source, target)
    reason = (
        "AWS-managed policies cannot be tagged and IAM groups cannot be tagged: nothing carries the flag"
        if target.principal is not None
        else "AWS-managed policies cannot be tagged"
    )
    return _Subject(arn, document, None, reason, (), target)


def _source_arn(source: tuple[str, str], trigger: Trigger) -> str:
    kind, name = source
    if kind == "policy":
        return name
    return f"arn:{partition_of(trigger.region)}:iam::{trigger.account or 'unknown'}:{kind}/{name}"


def _exemption(subject: _Subject, trigger: Trigger, settings: Settings) -> Exemption:
    """The first exemption in force for the policy or its principal: the registry's, or a trusted tag's.

    Tags are read only when they may count (TrustExemptionTags); unreadable tags exempt nothing.
    """
    refused: Exemption = NOT_EXEMPT
    for source in subject.exemption_sources or (("policy", subject.resource),):
        tags: dict[str, str] | None = None
        if settings.trust_exemption_tags and subject.exemption_sources:
            try:
                tags = _tags(*source)
            except AwsCallFailed:
                tags = None
        exemption = exemption_for(_source_arn(source, trigger), CHECK, tags, settings)
        if exemption.active:
            return exemption
        if refused is NOT_EXEMPT:
            refused = exemption
    return refused


def _exempt_hint(subject: _Subject, trigger: Trigger) -> str | None:
    if not subject.exemption_sources:
        return None
    return exemptions.hint(_source_arn(subject.exemption_sources[0], trigger), CHECK)


def _decide(subject: _Subject, trigger: Trigger, settings: Settings, options: IamOptions) -> Outcome:
    if subject.document.document is None:
        return Outcome(
            check=CHECK,
            outcome=OutcomeKind.IGNORED,
            severity=Severity.INFORMATIONAL,
            reason=f"the policy document ({subject.document.source}) is not readable JSON",
            trigger=trigger,
            resource=subject.resource,
        )
    analysis = analyze(subject.document.document)
    flagged = analysis.at_least(FLAG_AT)
    highest = analysis.highest or Severity.INFORMATIONAL
    details: dict[str, Any] = {
        "document_source": subject.document.source,
        "statements": analysis.statements,
        "findings": [f.as_dict() for f in analysis.findings],
    }
    if analysis.problems:
        details["problems"] = list(analysis.problems)
    latent = _latent_version_findings(subject)
    if latent:
        details["non_default_version_findings"] = latent
    if subject.untaggable_reason:
        details["not_tagged"] = subject.untaggable_reason
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": subject.resource}
    if not flagged:
        return _compliant(subject, analysis, details, common)
    exemption = _exemption(subject, trigger, settings)
    details["exemption"] = exemption.reason
    summary = _summary(analysis)
    if exemption.active:
        # Exempt resources are still alerted: at LOW when the security team granted it in the registry, at
        # the content's own severity when only a (trusted) tag exempts it.
        return Outcome(
            outcome=OutcomeKind.EXEMPT,
            severity=Severity.LOW if exemption.source == "registry" else highest,
            reason=f"{summary}, highest {highest.value}; exempt ({exemption.reason}), not tagged",
            details=details,
            **common,
        )
    if _should_revert(subject, highest, options):
        return _revert_version(
            subject, summary=summary, highest=highest, details=details, settings=settings, common=common
        )
    return _flag(subject, summary=summary, highest=highest, details=details, settings=settings, common=common)


def _latent_version_findings(subject: _Subject) -> list[dict[str, Any]]:
    """Findings of a version created as non-default: not in force, but one SetDefaultPolicyVersion away."""
    target = subject.target
    if not isinstance(target, ManagedPolicyTarget) or not target.non_default_version or target.event_document is None:
        return []
    return [f.as_dict() for f in analyze(target.event_document).at_least(FLAG_AT)]


def _summary(analysis: Analysis) -> str:
    flagged = analysis.at_least(FLAG_AT)
    rules = ", ".join(dict.fromkeys(f"{f.rule.value} ({f.severity.value})" for f in flagged))
    return f"{len(flagged)} finding(s) at {FLAG_AT.value} or above: {rules}"


def _compliant(subject: _Subject, analysis: Analysis, details: dict[str, Any], common: dict[str, Any]) -> Outcome:
    """No finding worth a flag. A customer-managed policy's stale flag is removed: the tag tells the truth."""
    lower = f"; {len(analysis.findings)} lower finding(s) in details" if analysis.findings else ""
    if subject.tag_target is not None and subject.tag_target[0] == "policy":
        arn = subject.tag_target[1]
        previous = _tags("policy", arn).get(WILDCARD_TAG)
        if previous is not None:
            iam = clients.client("iam")
            _call("iam:UntagPolicy", iam.untag_policy, PolicyArn=arn, TagKeys=[WILDCARD_TAG])
            return Outcome(
                outcome=OutcomeKind.COMPLIANT,
                severity=Severity.INFORMATIONAL,
                reason=f"no finding at {FLAG_AT.value} or above any more{lower}; stale {WILDCARD_TAG} tag removed",
                actions=("iam:UntagPolicy",),
                previous_state={WILDCARD_TAG: previous},
                new_state={WILDCARD_TAG: None},
                undo=_tag_command("policy", arn, previous),
                details=details,
                **common,
            )
    return Outcome(
        outcome=OutcomeKind.COMPLIANT,
        severity=Severity.INFORMATIONAL,
        reason=f"no finding at {FLAG_AT.value} or above{lower}",
        details=details,
        **common,
    )


def _tag_command(kind: str, name: str, value: str | None) -> str:
    where = f"--policy-arn {shlex.quote(name)}" if kind == "policy" else f"--{kind}-name {shlex.quote(name)}"
    if value is None:
        return f"aws iam untag-{kind} {where} --tag-keys {WILDCARD_TAG}"
    return f"aws iam tag-{kind} {where} --tags Key={WILDCARD_TAG},Value={value}"


def _flag(
    subject: _Subject,
    *,
    summary: str,
    highest: Severity,
    details: dict[str, Any],
    settings: Settings,
    common: dict[str, Any],
) -> Outcome:
    hint = _exempt_hint(subject, common["trigger"])
    if subject.tag_target is None:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=highest,
            reason=f"{summary}; {subject.untaggable_reason}",
            exempt_hint=hint,
            details=details,
            **common,
        )
    kind, name = subject.tag_target
    previous = _tags(kind, name).get(WILDCARD_TAG)
    desired = highest.value
    if (
        kind != "policy"
        and previous is not None
        and previous in Severity.__members__
        and rank(Severity(previous)) > rank(highest)
    ):
        # A role or user carries the highest severity of all its policies: never lower it from one of them.
        desired = previous
    where = f"{kind} {name}" if kind != "policy" else "the policy"
    if previous == desired:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=highest,
            reason=f"{summary}; {where} already tagged {WILDCARD_TAG}={desired}",
            exempt_hint=hint,
            details=details,
            **common,
        )
    state_before, state_after = {WILDCARD_TAG: previous}, {WILDCARD_TAG: desired}
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=highest,
            reason=f"{summary}; dry run: would tag {where} {WILDCARD_TAG}={desired}",
            previous_state=state_before,
            new_state=state_after,
            exempt_hint=hint,
            details=details,
            **common,
        )
    action = f"iam:Tag{kind.capitalize()}"
    _write_tag(kind, name, desired)
    after = _tags(kind, name).get(WILDCARD_TAG)
    if after != desired:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=highest,
            reason=f"{summary}; tagged {where} {WILDCARD_TAG}={desired} but it reads back as {after!r}",
            actions=(action,),
            previous_state=state_before,
            new_state={WILDCARD_TAG: after},
            error_code="VerificationFailed",
            details=details,
            **common,
        )
    return Outcome(
        outcome=OutcomeKind.FLAGGED,
        severity=highest,
        reason=f"{summary}; tagged {where} {WILDCARD_TAG}={desired}",
        actions=(action,),
        previous_state=state_before,
        new_state=state_after,
        undo=_tag_command(kind, name, previous),
        exempt_hint=hint,
        details=details,
        **common,
    )


# --- the optional fix: set the previous version back as default ------------------------------------------


def _should_revert(subject: _Subject, highest: Severity, options: IamOptions) -> bool:
    target = subject.target
    return (
        options.revert_critical_versions
        and highest is Severity.CRITICAL
        and isinstance(target, ManagedPolicyTarget)
        and target.new_default_version
        and not target.aws_managed
        and subject.document.version_id is not None
    )


def _revert_version(
    subject: _Subject,
    *,
    summary: str,
    highest: Severity,
    details: dict[str, Any],
    settings: Settings,
    common: dict[str, Any],
) -> Outcome:
    """A CreatePolicyVersion made full administrator access the default: put the previous version back."""
    arn = subject.resource
    current = subject.document.version_id
    iam = clients.client("iam")
    versions = _call("iam:ListPolicyVersions", iam.list_policy_versions, PolicyArn=arn).get("Versions", [])
    older = sorted(
        (v for v in versions if not v.get("IsDefaultVersion") and v.get("VersionId") != current),
        key=lambda v: v.get("CreateDate") or "",
        reverse=True,
    )
    if not older:
        details["not_reverted"] = "the policy has no earlier version to go back to"
        return _flag(subject, summary=summary, highest=highest, details=details, settings=settings, common=common)
    previous_id = str(older[0]["VersionId"])
    previous = _read_version(arn, previous_id, f"version {previous_id}")
    if previous.document is None or analyze(previous.document).highest is Severity.CRITICAL:
        details["not_reverted"] = f"the previous version {previous_id} is no safer"
        return _flag(subject, summary=summary, highest=highest, details=details, settings=settings, common=common)
    state_before, state_after = {"DefaultVersionId": current}, {"DefaultVersionId": previous_id}
    undo = f"aws iam set-default-policy-version --policy-arn {shlex.quote(arn)} --version-id {current}"
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=highest,
            reason=f"{summary}; dry run: would set version {previous_id} back as default",
            previous_state=state_before,
            new_state=state_after,
            details=details,
            **common,
        )
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
    return Outcome(
        outcome=OutcomeKind.REMEDIATED,
        severity=highest,
        reason=f"{summary}; version {previous_id} set back as default (version {current} is kept, not deleted)",
        actions=(action,),
        previous_state=state_before,
        new_state=state_after,
        undo=undo,
        exempt_hint=_exempt_hint(subject, common["trigger"]),
        details=details,
        **common,
    )
