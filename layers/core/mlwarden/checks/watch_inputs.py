"""ML Warden's own inputs: the trail that feeds it, Macie, and its own rules, functions and roles.

ML Warden sees only what CloudTrail, Macie and AWS Config deliver to its EventBridge rules. This check
watches the calls that blind it, and says so loudly:

- CloudTrail (CloudTrail.1, CloudTrail.3): `StopLogging` on a trail that records management events is
  undone (`StartLogging`, read back with `GetTrailStatus`) and alerted CRITICAL with the actor;
  `DeleteTrail`, an `UpdateTrail` that drops other regions or global events, and event selectors that
  stop recording management write events are alerted CRITICAL with the previous configuration (as ML
  Warden last saw it) and the undo command.
- Macie (Macie.1, Macie.2): `DisableMacie`, a session `PAUSED`, automated sensitive-data discovery
  turned off: HIGH; with REENABLE_MACIE=true a paused session and discovery are switched back on.
- ML Warden itself: `DisableRule`, `DeleteRule`, `RemoveTargets`, `PutRule` on its own rules; code,
  configuration, permission, concurrency changes and deletion of its own functions; policy changes of its
  own roles; by anyone but the deploying principal: CRITICAL, and a disabled rule is enabled again.
  Own resources are those whose name starts with OWN_NAME_PREFIX (`<stack name>-`, CloudFormation's names).
- The liveness canary (mlwarden.liveness): its own change arriving back as an event is noted.

A rule cannot report its own disabling: the canary's alarm is the backstop, and two rules carry the
EventBridge calls, so disabling one is reported by the other.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, liveness
from mlwarden.checks import CheckUnit
from mlwarden.errors import AwsCallFailed, aws_call, error_code
from mlwarden.events import ApiCall, Event, partition_of
from mlwarden.exemptions import exemption_for
from mlwarden.inventory import Inventory
from mlwarden.loopguard import is_own_change
from mlwarden.observability import logger, metrics
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.rules import trail_selectors
from mlwarden.settings import Settings, SettingsError

CHECK = "watch_inputs"

TRAIL_CALLS = frozenset({"StopLogging", "DeleteTrail", "UpdateTrail", "PutEventSelectors", "PutAdvancedEventSelectors"})
# The calls that set a trail's event selectors: after one, a trail that records no management events was narrowed.
SELECTOR_CALLS = frozenset({"PutEventSelectors", "PutAdvancedEventSelectors"})
MACIE_CALLS = frozenset({"DisableMacie", "UpdateMacieSession", "UpdateAutomatedDiscoveryConfiguration"})
RULE_CALLS = frozenset({"DisableRule", "DeleteRule", "RemoveTargets", "PutRule"})
# Lambda records its calls with the API version appended (UpdateFunctionCode20150331v2): matched without it.
FUNCTION_CALLS = frozenset(
    {
        "UpdateFunctionCode",
        "UpdateFunctionConfiguration",
        "DeleteFunction",
        "RemovePermission",
        "PutFunctionConcurrency",
    }
)
ROLE_CALLS = frozenset(
    {
        "PutRolePolicy",
        "DeleteRolePolicy",
        "AttachRolePolicy",
        "DetachRolePolicy",
        "UpdateAssumeRolePolicy",
        "PutRolePermissionsBoundary",
        "DeleteRolePermissionsBoundary",
        "DeleteRole",
    }
)
CANARY_CALLS = frozenset({"PutParameter", "UpdateRole"})
_LAMBDA_VERSION_SUFFIX = re.compile(r"20\d{6}(v\d+)?$")

CLOUDTRAIL_CONTROLS = ("CloudTrail.1", "CloudTrail.3")
MACIE_SESSION_CONTROLS = ("Macie.1",)
MACIE_DISCOVERY_CONTROLS = ("Macie.2",)

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
TRAIL_PERMISSIONS = frozenset(
    {"cloudtrail:GetTrail", "cloudtrail:GetTrailStatus", "cloudtrail:GetEventSelectors", "cloudtrail:StartLogging"}
)
# Macie's actions have no resource type: IAM only accepts Resource "*" for them.
MACIE_READ_PERMISSIONS = frozenset({"macie2:GetMacieSession", "macie2:GetAutomatedDiscoveryConfiguration"})
MACIE_REENABLE_PERMISSIONS = frozenset({"macie2:UpdateMacieSession", "macie2:UpdateAutomatedDiscoveryConfiguration"})
RULE_PERMISSIONS = frozenset({"events:DescribeRule", "events:ListTargetsByRule", "events:EnableRule"})
# ListRules has no resource type (IAM only accepts "*"): the canary's backstop lists the own rules' states.
RULE_LIST_PERMISSIONS = frozenset({"events:ListRules"})
CANARY_PERMISSIONS = frozenset({"ssm:PutParameter"})
IAM_CANARY_PERMISSIONS = frozenset({"iam:UpdateRole"})
MEMORY_PERMISSIONS = liveness.PERMISSIONS

# --- options ------------------------------------------------------------------------------------------

_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:(iam|sts)::\d{12}:[\w+=,.@/:-]+$")
_NAME_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}-$")
_PARAMETER = re.compile(r"^/?[A-Za-z0-9_.\-/]{1,1011}$")
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
LIVENESS_WINDOW_RANGE = range(10, 1441)
# An AWS region name (us-east-1, us-gov-west-1, ap-southeast-5): a client is built for it.
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


@dataclass(frozen=True)
class WatchOptions:
    """This check's configuration, validated at cold start (template.yaml sets every variable)."""

    # Changes to ML Warden's own resources by these principals (the deploying principal) are deployments.
    deployer_arns: tuple[str, ...] = ()
    # ML Warden's own rules, functions and roles are named "<stack name>-..." by CloudFormation.
    own_name_prefix: str | None = None
    canary_parameter: str | None = None
    # The canary IAM role (us-east-1 only: IAM events reach EventBridge there alone).
    canary_role: str | None = None
    liveness_window: timedelta = timedelta(minutes=30)
    reenable_macie: bool = False


def load_options(environ: Mapping[str, str] | None = None) -> WatchOptions:
    env = os.environ if environ is None else environ
    deployers = tuple(a.strip() for a in env.get("DEPLOYER_PRINCIPAL_ARN", "").split(",") if a.strip())
    for arn in deployers:
        if not _ARN.match(arn):
            raise SettingsError(
                f"DEPLOYER_PRINCIPAL_ARN must be IAM role or user ARNs separated by commas, got {arn[:120]!r}"
            )
    prefix = env.get("OWN_NAME_PREFIX", "").strip() or None
    if prefix is not None and not _NAME_PREFIX.match(prefix):
        raise SettingsError(f"OWN_NAME_PREFIX must be the stack name followed by '-', got {prefix[:80]!r}")
    parameter = env.get("CANARY_PARAMETER", "").strip() or None
    if parameter is not None and not _PARAMETER.match(parameter):
        raise SettingsError(f"CANARY_PARAMETER must be an SSM parameter name, got {parameter[:80]!r}")
    role = env.get("CANARY_ROLE_NAME", "").strip() or None
    if role is not None and not _ROLE_NAME.match(role):
        raise SettingsError(f"CANARY_ROLE_NAME must be an IAM role name, got {role[:80]!r}")
    window_raw = env.get("LIVENESS_WINDOW_MINUTES", "").strip() or "30"
    window = int(window_raw) if window_raw.isdigit() and len(window_raw) <= 5 else 0
    if window not in LIVENESS_WINDOW_RANGE:
        raise SettingsError(
            f"LIVENESS_WINDOW_MINUTES must be a whole number from {LIVENESS_WINDOW_RANGE.start} to "
            f"{LIVENESS_WINDOW_RANGE.stop - 1}, got {window_raw[:40]!r}"
        )
    reenable_raw = env.get("REENABLE_MACIE", "").strip().lower() or "false"
    if reenable_raw not in ("true", "false"):
        raise SettingsError(f"REENABLE_MACIE must be one of true | false, got {reenable_raw[:40]!r}")
    return WatchOptions(
        deployer_arns=deployers,
        own_name_prefix=prefix,
        canary_parameter=parameter,
        canary_role=role,
        liveness_window=timedelta(minutes=window),
        reenable_macie=reenable_raw == "true",
    )


# --- targets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrailTarget:
    """A trail, by the name or ARN the call used (or the inventory listed)."""

    name: str
    region: str
    account: str | None = None
    # What the call itself asked for that narrows what the trail records (UpdateTrail), e.g. global events off.
    narrowed_by_call: tuple[str, ...] = ()

    @property
    def arn(self) -> str:
        if self.name.startswith("arn:"):
            return self.name
        return f"arn:{partition_of(self.region)}:cloudtrail:{self.region}:{self.account or 'unknown'}:trail/{self.name}"


@dataclass(frozen=True)
class MacieTarget:
    """Macie in one account and region."""

    account: str
    region: str

    @property
    def resource(self) -> str:
        return f"arn:{partition_of(self.region)}:macie2:{self.region}:{self.account}:session"


@dataclass(frozen=True)
class OwnRuleTarget:
    """One of ML Warden's own EventBridge rules (default event bus)."""

    name: str
    region: str
    account: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:{partition_of(self.region)}:events:{self.region}:{self.account or 'unknown'}:rule/{self.name}"


@dataclass(frozen=True)
class OwnResourceChange:
    """A change to one of ML Warden's own functions or roles: alerted, never undone (redeploy the stack)."""

    kind: str  # "function" | "role"
    arn: str
    call: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CanaryArrival:
    """The liveness canary's own change, back as a CloudTrail event."""

    path: str  # liveness.PATHS
    region: str
    called_at: datetime | None


Target = TrailTarget | MacieTarget | OwnRuleTarget | OwnResourceChange | CanaryArrival


def targets_from_event(event: Event, options: WatchOptions) -> Target | str:
    """What a call is about, or the reason it is not this check's."""
    if not isinstance(event, ApiCall):
        return f"{type(event).__name__} is not a call this check watches"
    name = _call_name(event)
    region = event.aws_region or "us-east-1"
    if not _REGION.fullmatch(region):
        return f"{event.event_name} names an invalid region {region[:40]!r}"
    account = event.recipient_account or event.actor.account
    source = event.event_source
    if source == "cloudtrail.amazonaws.com" and name in TRAIL_CALLS:
        trail = event.parameter("name") or event.parameter("trailName")
        if trail is None:
            return f"{name} names no trail"
        return TrailTarget(trail, region, account, _narrowed_by(event) if name == "UpdateTrail" else ())
    if source == "macie2.amazonaws.com" and name in MACIE_CALLS:
        if account is None:
            return f"{name} names no account"
        return MacieTarget(account, region)
    if source == "ssm.amazonaws.com" and name == "PutParameter":
        return _canary_arrival(event, "ssm", event.parameter("name"), options.canary_parameter, region)
    if source == "iam.amazonaws.com" and name == "UpdateRole":
        return _canary_arrival(event, "iam", event.parameter("roleName"), options.canary_role, region)
    return _own_resource_target(event, name, region, account, options)


def _call_name(event: ApiCall) -> str:
    if event.event_source == "lambda.amazonaws.com":
        return _LAMBDA_VERSION_SUFFIX.sub("", event.event_name)
    return event.event_name


def _narrowed_by(event: ApiCall) -> tuple[str, ...]:
    params = event.request_parameters
    narrowed = []
    if params.get("isMultiRegionTrail") is False:
        narrowed.append("isMultiRegionTrail=false: other regions are no longer recorded")
    if params.get("includeGlobalServiceEvents") is False:
        narrowed.append("includeGlobalServiceEvents=false: IAM and other global calls are no longer recorded")
    return tuple(narrowed)


def _canary_arrival(event: ApiCall, path: str, named: str | None, canary: str | None, region: str) -> Target | str:
    if canary is None or named is None or named.lstrip("/") != canary.lstrip("/"):
        return f"{event.event_name} of {named or 'nothing'} is not the liveness canary's"
    return CanaryArrival(path, region, _time(event.event_time))


def _time(value: str | None) -> datetime | None:
    return liveness.parse_stamp(value)


def _own_resource_target(
    event: ApiCall, name: str, region: str, account: str | None, options: WatchOptions
) -> Target | str:
    source = event.event_source
    if source == "events.amazonaws.com" and name in RULE_CALLS:
        what, resource = "rule", event.parameter("name") or event.parameter("rule")
    elif source == "lambda.amazonaws.com" and name in FUNCTION_CALLS:
        what, resource = "function", event.parameter("functionName")
    elif source == "iam.amazonaws.com" and name in ROLE_CALLS:
        what, resource = "role", event.parameter("roleName")
    else:
        return f"{source} {event.event_name} is not a call this check watches"
    if resource is None:
        return f"{event.event_name} names no {what}"
    short = _short_name(resource, what)
    if options.own_name_prefix is None:
        return f"OWN_NAME_PREFIX is not set: {event.event_name} of {what} {short} cannot be told apart from ML Warden's"
    if not short.startswith(options.own_name_prefix):
        return f"{what} {short} is not one of ML Warden's own (they start with {options.own_name_prefix})"
    if what == "rule" and not _default_bus(event.parameter("eventBusName")):
        return f"rule {short} is on another event bus"
    if _by_deployer(event, options):
        return f"{event.event_name} of ML Warden's own {what} {short} by the deploying principal: a deployment"
    partition = partition_of(region)
    if what == "rule":
        return OwnRuleTarget(short, region, account)
    if what == "function":
        arn = f"arn:{partition}:lambda:{region}:{account or 'unknown'}:function:{short}"
        return OwnResourceChange("function", arn, name, _function_change_details(event, name))
    arn = f"arn:{partition}:iam::{account or 'unknown'}:role/{short}"
    return OwnResourceChange("role", arn, name, _role_change_details(event))


def _short_name(resource: str, what: str) -> str:
    if what == "function":
        # Lambda takes a name, an ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]) or a partial ARN
        # (ACCOUNT:function:NAME), each with an optional :QUALIFIER: all name the same function.
        return resource.rsplit(":function:", 1)[-1].split(":", 1)[0]
    if what == "rule" and resource.startswith("arn:"):
        return resource.rsplit("/", 1)[-1]
    return resource


def _default_bus(bus: str | None) -> bool:
    """ML Warden's rules are on the default bus, which a call may name by name or by ARN (or not at all)."""
    return bus is None or bus == "default" or bus.endswith(":event-bus/default")


def _by_deployer(event: ApiCall, options: WatchOptions) -> bool:
    actor = event.actor
    for deployer in options.deployer_arns:
        if actor.arn == deployer or (":role/" in deployer and is_own_change(event, deployer)):
            return True
    return False


def _function_change_details(event: ApiCall, name: str) -> dict[str, Any]:
    params = event.request_parameters
    # Names of what changed, never values: environment variables may hold secrets.
    details: dict[str, Any] = {"changed": sorted(k for k in params if k not in ("functionName", "qualifier"))}
    if name == "UpdateFunctionCode":
        sha = event.response_elements.get("codeSha256")
        if isinstance(sha, str):
            details["code_sha256"] = sha[:64]
    if name == "PutFunctionConcurrency":
        details["reserved_concurrent_executions"] = params.get("reservedConcurrentExecutions")
    if name == "RemovePermission":
        details["statement_id"] = event.parameter("statementId")
    return details


def _role_change_details(event: ApiCall) -> dict[str, Any]:
    return {
        key: event.parameter(key)
        for key in ("policyArn", "policyName", "permissionsBoundary")
        if event.parameter(key) is not None
    }


# --- the event path -----------------------------------------------------------------------------------


def watch(event: Event, settings: Settings, *, options: WatchOptions) -> Outcome:
    """The event path: the trail, Macie, own resource or canary the call names, evaluated on live state."""
    target = targets_from_event(event, options)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    if isinstance(target, CanaryArrival) and not (
        isinstance(event, ApiCall) and is_own_change(event, settings.remediator_role_arn)
    ):
        # Only the canary's own change proves its round trip; anyone else's write of it is not counted.
        return ignored(CHECK, event, "a change of the liveness canary's resource not made by the canary")
    return evaluate(target, Trigger.of(event), settings, event=event, options=options)


def evaluate(
    target: Target,
    trigger: Trigger,
    settings: Settings,
    *,
    event: Event | None = None,
    options: WatchOptions | None = None,
) -> Outcome:
    """Decide on live state, act, verify: the same for an event and the sweep."""
    options = options or load_options()
    call_id = event.event_id if isinstance(event, ApiCall) else None
    try:
        if isinstance(target, TrailTarget):
            return _trail(target, trigger, settings, call_id)
        if isinstance(target, MacieTarget):
            return _macie(target, trigger, settings, options, call_id)
        if isinstance(target, OwnRuleTarget):
            return _own_rule(target, trigger, settings, event, call_id)
        if isinstance(target, OwnResourceChange):
            return _own_resource(target, trigger, call_id)
        return _canary_arrived(target, trigger, settings)
    except AwsCallFailed as err:
        return call_failed(CHECK, trigger, resource_of(target), "could not check ML Warden's input", err)


def resource_of(target: Target) -> str:
    if isinstance(target, TrailTarget | OwnRuleTarget | OwnResourceChange):
        return target.arn
    if isinstance(target, MacieTarget):
        return target.resource
    return f"liveness-canary:{target.path}:{target.region}"


def _client(service: str, region: str | None) -> Any:
    """The client for `region`: the function's own (shared) client when it is the function's region."""
    if region is None or region == (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        return clients.client(service)
    return clients.client(service, region)


def _by(trigger: Trigger) -> str:
    if trigger.is_sweep:
        return f"found by the {trigger.name}"
    return f"{trigger.name} by {trigger.actor or 'unknown'}"


def _findings(base: tuple[str, ...], call_id: str | None) -> tuple[str, ...]:
    # Every hostile call is its own alert: two StopLogging calls in a day are two attacks, not one (alert dedup
    # keys on the findings). Sweep outcomes have no call id and are said once per dedup window.
    return tuple(sorted({*base, *([f"call:{call_id}"] if call_id else [])}))


# --- CloudTrail ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TrailState:
    arn: str
    name: str
    home_region: str
    multi_region: bool
    global_events: bool
    bucket: str | None
    logging: bool
    selectors: dict[str, Any]

    @property
    def records_management_writes(self) -> bool:
        return trail_selectors.records_management_writes(self.selectors)

    def as_state(self) -> dict[str, Any]:
        return {
            "TrailARN": self.arn,
            "IsLogging": self.logging,
            "IsMultiRegionTrail": self.multi_region,
            "IncludeGlobalServiceEvents": self.global_events,
            "S3BucketName": self.bucket,
            **self.selectors,
        }


class _TrailGone(Exception):
    pass


_TRAIL_GONE = frozenset({"TrailNotFoundException", "ResourceNotFoundException"})


def _read_trail(target: TrailTarget) -> _TrailState:
    cloudtrail = _client("cloudtrail", target.region)
    try:
        trail = cloudtrail.get_trail(Name=target.name)["Trail"]
    except ClientError as err:
        if error_code(err) in _TRAIL_GONE:
            raise _TrailGone from err
        raise AwsCallFailed.from_error("cloudtrail:GetTrail", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("cloudtrail:GetTrail", err) from err
    arn = str(trail.get("TrailARN") or target.arn)
    home = str(trail.get("HomeRegion") or target.region)
    home_client = _client("cloudtrail", home)
    selectors = aws_call("cloudtrail:GetEventSelectors", home_client.get_event_selectors, TrailName=arn)
    status = aws_call("cloudtrail:GetTrailStatus", home_client.get_trail_status, Name=arn)
    return _TrailState(
        arn=arn,
        name=str(trail.get("Name") or target.name),
        home_region=home,
        multi_region=bool(trail.get("IsMultiRegionTrail")),
        global_events=bool(trail.get("IncludeGlobalServiceEvents")),
        bucket=trail.get("S3BucketName"),
        logging=bool(status.get("IsLogging")),
        selectors=trail_selectors.selectors_of(selectors),
    )


def _trail(target: TrailTarget, trigger: Trigger, settings: Settings, call_id: str | None) -> Outcome:
    try:
        state = _read_trail(target)
    except _TrailGone:
        if trigger.name != "DeleteTrail":
            return ignored_at(CHECK, trigger, "the trail no longer exists", target.arn)
        return _trail_deleted(target, trigger, settings, call_id)
    common: dict[str, Any] = {
        "check": CHECK,
        "trigger": trigger,
        "resource": state.arn,
        "controls": CLOUDTRAIL_CONTROLS,
    }
    remembered = _remembered_trail(settings, state.arn)
    if state.records_management_writes and state.logging and not target.narrowed_by_call:
        _remember_trail(settings, state)
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason="the trail logs and records management write events",
            **{**common, "controls": ()},
        )
    was_feeding = remembered is not None and trail_selectors.records_management_writes(
        remembered.get("selectors") or {}
    )
    if target.narrowed_by_call or (
        not state.records_management_writes and (trigger.name in SELECTOR_CALLS or was_feeding)
    ):
        return _trail_narrowed(state, remembered, target, call_id, common)
    if not state.records_management_writes:
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason="the trail records no management events: ML Warden does not depend on it",
            **{**common, "controls": ()},
        )
    # It records management events but is not logging: ML Warden is blind to this trail's calls.
    exemption = exemption_for(state.arn, CHECK, None, settings)
    what = f"trail {state.name} stopped logging ({_by(trigger)})"
    details: dict[str, Any] = {"home_region": state.home_region, "exemption": exemption.reason}
    undo = f"aws cloudtrail stop-logging --name {shlex.quote(state.arn)} --region {state.home_region}"
    findings = _findings(("trail-not-logging",), call_id)
    if exemption.active:
        return Outcome(
            outcome=OutcomeKind.EXEMPT,
            severity=Severity.HIGH,
            reason=f"{what}; left as is: {exemption.reason}",
            details=details,
            findings=findings,
            **common,
        )
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=Severity.CRITICAL,
            reason=f"{what}; dry run: would start logging again",
            previous_state={"IsLogging": False},
            new_state={"IsLogging": True},
            details=details,
            findings=findings,
            **common,
        )
    outcome = _start_logging(state, what=what, undo=undo, details=details, findings=findings, common=common)
    if outcome.outcome is OutcomeKind.REMEDIATED:
        _remember_trail(settings, replace(state, logging=True))
    return outcome


def _start_logging(
    state: _TrailState,
    *,
    what: str,
    undo: str,
    details: dict[str, Any],
    findings: tuple[str, ...],
    common: dict[str, Any],
) -> Outcome:
    home_client = _client("cloudtrail", state.home_region)

    def failed(reason: str, err: AwsCallFailed | None, written: bool) -> Outcome:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=Severity.CRITICAL,
            reason=f"{what}; {reason}",
            actions=("cloudtrail:StartLogging",) if written else (),
            previous_state={"IsLogging": False},
            error_code=err.code if err is not None else "VerificationFailed",
            cause=err,
            details={**details, **({"failed_action": err.action} if err is not None else {})},
            findings=findings,
            **common,
        )

    try:
        aws_call("cloudtrail:StartLogging", home_client.start_logging, Name=state.arn)
    except AwsCallFailed as err:
        if err.code in _TRAIL_GONE:  # deleted between our read and our write: DeleteTrail is its own event
            return ignored_at(CHECK, common["trigger"], "the trail no longer exists", state.arn)
        return failed(f"could not start logging: {err.explanation}", err, written=False)
    try:
        after = aws_call("cloudtrail:GetTrailStatus", home_client.get_trail_status, Name=state.arn)
    except AwsCallFailed as err:
        return failed(f"logging was started but could not be read back: {err.explanation}", err, written=True)
    if not after.get("IsLogging"):
        return failed("logging was started but the trail still reads as not logging", None, written=True)
    return Outcome(
        outcome=OutcomeKind.REMEDIATED,
        severity=Severity.CRITICAL,
        reason=f"{what}; logging started again and verified (GetTrailStatus IsLogging true)",
        actions=("cloudtrail:StartLogging",),
        previous_state={"IsLogging": False},
        new_state={"IsLogging": True},
        undo=undo,
        details=details,
        findings=findings,
        next_step=(
            "Find out who stopped the trail and why: while it was stopped, ML Warden saw no calls recorded only "
            "by this trail. Look for changes made in that time in the CloudTrail event history."
        ),
        **common,
    )


def _trail_narrowed(
    state: _TrailState,
    remembered: dict[str, Any] | None,
    target: TrailTarget,
    call_id: str | None,
    common: dict[str, Any],
) -> Outcome:
    trigger: Trigger = common["trigger"]
    problems = list(target.narrowed_by_call)
    if not state.records_management_writes:
        problems.append("its event selectors no longer record management write events")
    if not state.logging:
        problems.append("it is not logging")
    restore = (remembered or {}).get("selectors") or {"EventSelectors": trail_selectors.ALL_MANAGEMENT_EVENTS}
    commands = [
        f"aws cloudtrail put-event-selectors --trail-name {shlex.quote(state.arn)} --region {state.home_region} "
        f"{trail_selectors.put_selectors_arguments(restore)}"
    ]
    if target.narrowed_by_call:
        commands.append(
            f"aws cloudtrail update-trail --name {shlex.quote(state.arn)} --region {state.home_region} "
            "--is-multi-region-trail --include-global-service-events"
        )
    if not state.logging:
        commands.append(f"aws cloudtrail start-logging --name {shlex.quote(state.arn)} --region {state.home_region}")
    return Outcome(
        outcome=OutcomeKind.FLAGGED,
        severity=Severity.CRITICAL,
        reason=(
            f"trail {state.name} no longer feeds ML Warden everything it needs ({_by(trigger)}): {'; '.join(problems)}"
        ),
        previous_state=remembered,
        new_state=state.as_state(),
        undo=" && ".join(commands),
        details={"previous_configuration_known": remembered is not None},
        findings=_findings(("trail-narrowed",), call_id),
        next_step="Restore the trail's configuration (the undo command) unless the change was approved.",
        **common,
    )


def _trail_deleted(target: TrailTarget, trigger: Trigger, settings: Settings, call_id: str | None) -> Outcome:
    remembered = _remembered_trail(settings, target.arn)
    bucket = (remembered or {}).get("S3BucketName") or "BUCKET"
    name = target.name.rsplit("/", 1)[-1]
    flags = ""
    if remembered is None or remembered.get("IsMultiRegionTrail"):
        flags += " --is-multi-region-trail"
    if remembered is None or remembered.get("IncludeGlobalServiceEvents"):
        flags += " --include-global-service-events"
    undo = (
        f"aws cloudtrail create-trail --name {shlex.quote(name)} --s3-bucket-name {shlex.quote(str(bucket))}{flags} "
        f"--region {target.region} && aws cloudtrail start-logging --name {shlex.quote(name)} --region {target.region}"
    )
    return Outcome(
        check=CHECK,
        outcome=OutcomeKind.FLAGGED,
        severity=Severity.CRITICAL,
        reason=(
            f"trail {name} was deleted by {trigger.actor or 'unknown'}: if it was the only trail recording "
            "management events here, ML Warden no longer sees any change in this region"
        ),
        trigger=trigger,
        resource=target.arn,
        previous_state=remembered,
        undo=undo,
        details={"previous_configuration_known": remembered is not None},
        findings=_findings(("trail-deleted",), call_id),
        controls=CLOUDTRAIL_CONTROLS,
        next_step="Create the trail again (the undo command; its bucket still holds the logs) unless approved.",
    )


# The last configuration ML Warden saw of a trail that fed it, kept to tell what a deletion or narrowing undid.


def _memory_id(trail_arn: str) -> str:
    return f"{CHECK}#trail#{trail_arn}"


def _remembered_trail(settings: Settings, trail_arn: str) -> dict[str, Any] | None:
    if settings.outcome_table is None:
        return None
    try:
        item = clients.client("dynamodb").get_item(
            TableName=settings.outcome_table, Key={"id": {"S": _memory_id(trail_arn)}}
        )
        remembered = json.loads(item.get("Item", {}).get("config", {}).get("S", "null"))
    except (ClientError, BotoCoreError, ValueError) as err:
        # The decision does not depend on it: the alert then says the previous configuration is unknown.
        logger.warning("trail memory unreadable", trail=trail_arn, error=type(err).__name__)
        return None
    return remembered if isinstance(remembered, dict) else None


def _remember_trail(settings: Settings, state: _TrailState) -> None:
    if settings.outcome_table is None:
        return
    try:
        clients.client("dynamodb").update_item(
            TableName=settings.outcome_table,
            Key={"id": {"S": _memory_id(state.arn)}},
            UpdateExpression="SET config = :config, seen = :seen",
            ExpressionAttributeValues={
                ":config": {"S": json.dumps({**state.as_state(), "selectors": state.selectors}, default=str)},
                ":seen": {"S": liveness.stamp(liveness.now())},
            },
        )
    except (ClientError, BotoCoreError) as err:
        logger.warning("trail memory not written", trail=state.arn, error=type(err).__name__)
        metrics.add_metric(name="TrailMemoryNotWritten", unit=MetricUnit.Count, value=1)


# --- Macie --------------------------------------------------------------------------------------------


def _macie_status(region: str) -> str:
    """ENABLED | PAUSED | DISABLED (GetMacieSession refuses when Macie is not enabled)."""
    try:
        session = _client("macie2", region).get_macie_session()
    except ClientError as err:
        code = error_code(err)
        if code == "ResourceNotFoundException" or (
            code == "AccessDeniedException" and "not enabled" in str(err.response.get("Error", {}).get("Message"))
        ):
            return "DISABLED"
        raise AwsCallFailed.from_error("macie2:GetMacieSession", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("macie2:GetMacieSession", err) from err
    return str(session.get("status") or "DISABLED")


def _discovery_status(region: str) -> str:
    """ENABLED | DISABLED | UNKNOWN (where the region or partition does not answer the call)."""
    try:
        answer = _client("macie2", region).get_automated_discovery_configuration()
    except ClientError as err:
        failed = AwsCallFailed.from_error("macie2:GetAutomatedDiscoveryConfiguration", err)
        if failed.access_denied or error_code(err) in _RETRYABLE:
            raise failed from err
        logger.warning("automated discovery status unknown", region=region, error=failed.code)
        return "UNKNOWN"
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("macie2:GetAutomatedDiscoveryConfiguration", err) from err
    return str(answer.get("status") or "DISABLED")


_RETRYABLE = frozenset({"ThrottlingException", "InternalServerException", "ServiceQuotaExceededException"})


def _macie(
    target: MacieTarget, trigger: Trigger, settings: Settings, options: WatchOptions, call_id: str | None
) -> Outcome:
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": target.resource}
    session = _macie_status(target.region)
    by = _by(trigger)
    if session == "DISABLED" and trigger.is_sweep:
        # Many accounts never enable Macie: the sweep would say so every day. Switching it off is the event.
        return ignored_at(
            CHECK, trigger, "Macie is not enabled in this region: nothing of it to watch", target.resource
        )
    if session == "DISABLED":
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=Severity.HIGH,
            reason=(
                f"Macie is not enabled in {target.region} ({by}): no sensitive-data findings reach tag_pii_bucket, "
                "so buckets holding PII are no longer classified"
            ),
            findings=_findings(("macie-disabled",), call_id),
            controls=MACIE_SESSION_CONTROLS,
            undo=f"aws macie2 enable-macie --region {target.region}",
            next_step="Enable Macie again (the undo command) unless it was switched off on purpose.",
            **common,
        )
    if session == "PAUSED":
        return _macie_switch_on(
            target,
            part="session",
            what=f"Macie is paused in {target.region} ({by}): it runs no discovery and publishes no findings",
            controls=MACIE_SESSION_CONTROLS,
            settings=settings,
            options=options,
            findings=_findings(("macie-paused",), call_id),
            common=common,
        )
    discovery = _discovery_status(target.region)
    if discovery == "DISABLED":
        return _macie_switch_on(
            target,
            part="discovery",
            what=f"Macie's automated sensitive-data discovery is off in {target.region} ({by}): new buckets with PII "
            "are not found",
            controls=MACIE_DISCOVERY_CONTROLS,
            settings=settings,
            options=options,
            findings=_findings(("macie-discovery-off",), call_id),
            common=common,
        )
    return Outcome(
        outcome=OutcomeKind.COMPLIANT,
        severity=Severity.INFORMATIONAL,
        reason=(
            "Macie is enabled and its automated sensitive-data discovery is on"
            if discovery == "ENABLED"
            else "Macie is enabled (whether its automated discovery is on could not be read here)"
        ),
        **common,
    )


def _macie_switch_on(
    target: MacieTarget,
    *,
    part: str,
    what: str,
    controls: tuple[str, ...],
    settings: Settings,
    options: WatchOptions,
    findings: tuple[str, ...],
    common: dict[str, Any],
) -> Outcome:
    macie = _client("macie2", target.region)
    if part == "session":
        command = f"aws macie2 update-macie-session --status ENABLED --region {target.region}"
        undo = f"aws macie2 update-macie-session --status PAUSED --region {target.region}"
        action, write = "macie2:UpdateMacieSession", lambda: macie.update_macie_session(status="ENABLED")
        read_back: Callable[[], str] = lambda: _macie_status(target.region)  # noqa: E731
    else:
        command = f"aws macie2 update-automated-discovery-configuration --status ENABLED --region {target.region}"
        undo = f"aws macie2 update-automated-discovery-configuration --status DISABLED --region {target.region}"
        action = "macie2:UpdateAutomatedDiscoveryConfiguration"

        def write() -> Any:
            return macie.update_automated_discovery_configuration(status="ENABLED")

        read_back = lambda: _discovery_status(target.region)  # noqa: E731
    if not (options.reenable_macie and settings.enforce):
        switch = "dry run: would switch it on again" if options.reenable_macie else "not switched on (REENABLE_MACIE)"
        return Outcome(
            outcome=OutcomeKind.FLAGGED if not options.reenable_macie else OutcomeKind.WOULD_REMEDIATE,
            severity=Severity.HIGH,
            reason=f"{what}; {switch}",
            findings=findings,
            controls=controls,
            next_step=f"Switch it on again unless this was approved: {command}",
            **common,
        )
    aws_call(action, write)
    after = read_back()
    if after != "ENABLED":
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=Severity.HIGH,
            reason=f"{what}; switched on, but it reads back as {after}",
            actions=(action,),
            error_code="VerificationFailed",
            findings=findings,
            controls=controls,
            **common,
        )
    return Outcome(
        outcome=OutcomeKind.REMEDIATED,
        severity=Severity.HIGH,
        reason=f"{what}; switched on again and verified",
        actions=(action,),
        previous_state={"status": "PAUSED" if part == "session" else "DISABLED"},
        new_state={"status": "ENABLED"},
        undo=undo,
        findings=findings,
        controls=controls,
        **common,
    )


# --- ML Warden's own rules, functions and roles -------------------------------------------------------


def _own_rule(
    target: OwnRuleTarget, trigger: Trigger, settings: Settings, event: Event | None, call_id: str | None
) -> Outcome:
    events = _client("events", target.region)
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": target.arn}
    by = _by(trigger)
    redeploy = "Redeploy the stack (sam deploy) to restore the rule as the template defines it."
    try:
        rule = events.describe_rule(Name=target.name)
    except ClientError as err:
        if error_code(err) != "ResourceNotFoundException":
            raise AwsCallFailed.from_error("events:DescribeRule", err) from err
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=Severity.CRITICAL,
            reason=f"ML Warden's rule {target.name} was deleted ({by}): the events it carried reach nobody",
            findings=_findings(("own-rule-deleted",), call_id),
            next_step=redeploy,
            **common,
        )
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("events:DescribeRule", err) from err
    details: dict[str, Any] = {}
    if isinstance(event, ApiCall) and event.parameter("eventPattern") is not None:
        details["new_event_pattern"] = event.parameter("eventPattern")
    targets = aws_call("events:ListTargetsByRule", events.list_targets_by_rule, Rule=target.name).get("Targets", [])
    problems = []
    if not targets:
        problems.append("it has no target left")
    if rule.get("State") != "ENABLED":
        return _enable_rule(
            target,
            rule=rule,
            by=by,
            problems=problems,
            details=details,
            call_id=call_id,
            settings=settings,
            common=common,
        )
    if problems or not trigger.is_sweep:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=Severity.CRITICAL,
            reason=f"ML Warden's rule {target.name} was changed ({by}){': ' + '; '.join(problems) if problems else ''}",
            details=details,
            findings=_findings(("own-rule-changed", *(["own-rule-no-target"] if not targets else [])), call_id),
            next_step=redeploy,
            **common,
        )
    return Outcome(
        outcome=OutcomeKind.COMPLIANT,
        severity=Severity.INFORMATIONAL,
        reason="the rule is enabled and has its targets",
        **common,
    )


def _enable_rule(
    target: OwnRuleTarget,
    *,
    rule: Mapping[str, Any],
    by: str,
    problems: list[str],
    details: dict[str, Any],
    call_id: str | None,
    settings: Settings,
    common: dict[str, Any],
) -> Outcome:
    what = f"ML Warden's rule {target.name} is {str(rule.get('State', 'DISABLED')).lower()} ({by})"
    if problems:
        what += f"; {'; '.join(problems)}"
    findings = _findings(("own-rule-disabled",), call_id)
    undo = f"aws events disable-rule --name {shlex.quote(target.name)} --region {target.region}"
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=Severity.CRITICAL,
            reason=f"{what}; dry run: would enable it again",
            previous_state={"State": rule.get("State")},
            new_state={"State": "ENABLED"},
            details=details,
            findings=findings,
            **common,
        )
    events = _client("events", target.region)
    aws_call("events:EnableRule", events.enable_rule, Name=target.name)
    after = aws_call("events:DescribeRule", events.describe_rule, Name=target.name).get("State")
    kind, verified = (OutcomeKind.REMEDIATED, "enabled again and verified")
    if after != "ENABLED":
        kind, verified = (OutcomeKind.FAILED, f"enabled, but it reads back as {after}")
    return Outcome(
        outcome=kind,
        severity=Severity.CRITICAL,
        reason=f"{what}; {verified}",
        actions=("events:EnableRule",),
        previous_state={"State": rule.get("State")},
        new_state={"State": after},
        undo=undo,
        details=details,
        error_code=None if kind is OutcomeKind.REMEDIATED else "VerificationFailed",
        findings=findings,
        next_step="Find out who disabled ML Warden's rule: events it carried meanwhile were not delivered.",
        **common,
    )


def _own_resource(target: OwnResourceChange, trigger: Trigger, call_id: str | None) -> Outcome:
    return Outcome(
        check=CHECK,
        outcome=OutcomeKind.FLAGGED,
        severity=Severity.CRITICAL,
        reason=(
            f"ML Warden's own {target.kind} was changed by someone other than the deploying principal: "
            f"{target.call} by {trigger.actor or 'unknown'}. ML Warden may no longer be running the code and "
            "permissions it was deployed with"
        ),
        trigger=trigger,
        resource=target.arn,
        details=dict(target.details),
        findings=_findings((f"own-{target.kind}-changed",), call_id),
        next_step="Redeploy the stack (sam deploy) to restore it, and find out who made the change and how.",
    )


# --- the liveness canary --------------------------------------------------------------------------------


def _canary_arrived(target: CanaryArrival, trigger: Trigger, settings: Settings) -> Outcome:
    resource = resource_of(target)
    if settings.outcome_table is None:
        return ignored_at(CHECK, trigger, "liveness canary event: no outcome table to note it in", resource)
    delay = liveness.note_arrival(settings.outcome_table, target.region, target.path, target.called_at, liveness.now())
    metrics.add_metric(
        name="CanaryArrived" if target.path == "ssm" else "IamCanaryArrived", unit=MetricUnit.Count, value=1
    )
    if delay is not None:
        metrics.add_metric(name="CanaryDelay", unit=MetricUnit.Seconds, value=delay)
    return Outcome(
        check=CHECK,
        outcome=OutcomeKind.COMPLIANT,
        severity=Severity.INFORMATIONAL,
        reason=f"liveness canary ({target.path}) arrived{'' if delay is None else f' after {delay:.0f} s'}",
        trigger=trigger,
        resource=resource,
        details={"delay_seconds": delay},
    )


def canary_tick(settings: Settings, options: WatchOptions, region: str, account: str, now: datetime) -> dict[str, Any]:
    """The scheduled canary: change the canary resources, note it, and say whether earlier changes came back.

    It is also the backstop for a disabled rule (a rule cannot report its own disabling): every tick reads
    the state of ML Warden's own rules and evaluates those not enabled as the event path would (enabled
    again, CRITICAL). Raises AwsCallFailed when the change cannot be made (the Scheduler retries, then the
    dead-letter queue).
    """
    metrics.add_dimension(name="check", value=CHECK)
    if options.canary_parameter is None or settings.outcome_table is None:
        raise SettingsError("the liveness canary needs CANARY_PARAMETER and OUTCOME_TABLE")
    # Read first: what arrived is judged against what had been sent before this tick.
    record = liveness.read(settings.outcome_table, region)
    ssm = clients.client("ssm")
    aws_call(
        "ssm:PutParameter",
        ssm.put_parameter,
        Name=options.canary_parameter,
        Value=liveness.stamp(now),
        Type="String",
        Overwrite=True,
    )
    paths = ["ssm"]
    if options.canary_role is not None:
        aws_call(
            "iam:UpdateRole",
            clients.client("iam").update_role,
            RoleName=options.canary_role,
            Description=f"ML Warden liveness canary {liveness.stamp(now)}",
        )
        paths.append("iam")
    liveness.note_sent(settings.outcome_table, region, now)
    metrics.add_metric(name="CanarySent", unit=MetricUnit.Count, value=1)
    late = {path: liveness.overdue(record, path, now, options.liveness_window) for path in paths}
    late = {path: reason for path, reason in late.items() if reason is not None}
    metrics.add_metric(name="LivenessOverdue", unit=MetricUnit.Count, value=len(late))
    for path, reason in late.items():
        logger.error("liveness canary overdue", path=path, region=region, reason=reason)
    logger.info("liveness canary sent", region=region, paths=paths, overdue=sorted(late))
    rules = _own_rules_backstop(settings, options, region, account, now)
    return {"canary": "sent", "at": liveness.stamp(now), "paths": paths, "overdue": late, "own_rules": rules}


def _own_rules_backstop(
    settings: Settings, options: WatchOptions, region: str, account: str, now: datetime
) -> list[dict[str, Any]]:
    from mlwarden.pipeline import run_target  # noqa: PLC0415 - only the canary tick needs the sweep's way in

    if options.own_name_prefix is None:
        return []
    events = _client("events", region)
    try:
        listed = [
            rule
            for page in events.get_paginator("list_rules").paginate(NamePrefix=options.own_name_prefix)
            for rule in page.get("Rules", [])
        ]
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("events:ListRules", err) from err
    trigger = Trigger(
        event_id=f"liveness-canary-{liveness.stamp(now)}",
        source=liveness.SOURCE,
        kind="sweep",
        name="liveness canary",
        actor=None,
        time=liveness.stamp(now),
        account=account,
        region=region,
    )
    return [
        run_target(UNIT, OwnRuleTarget(str(rule["Name"]), region, account), trigger, settings).as_dict()
        for rule in listed
        if rule.get("State") != "ENABLED" and isinstance(rule.get("Name"), str)
    ]


# --- the sweep's way in: every trail of the region, Macie, and ML Warden's own rules -----------------------

SWEEP_PERMISSIONS = frozenset({"cloudtrail:DescribeTrails", "events:ListRules"})


def targets_from_inventory(inventory: Inventory) -> Iterator[Target]:
    trails = inventory.client("cloudtrail")
    try:
        listed = trails.describe_trails(includeShadowTrails=False).get("trailList", [])
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("cloudtrail:DescribeTrails", err) from err
    for trail in listed:
        arn = trail.get("TrailARN")
        if isinstance(arn, str):
            yield TrailTarget(arn, inventory.region, inventory.account)
    yield MacieTarget(inventory.account, inventory.region)
    prefix = load_options().own_name_prefix
    if prefix is not None:
        for rule in inventory.pages("events", "list_rules", "Rules", NamePrefix=prefix):
            if isinstance(rule.get("Name"), str):
                yield OwnRuleTarget(rule["Name"], inventory.region, inventory.account)


def key_of(target: Target) -> dict[str, Any]:
    if isinstance(target, TrailTarget):
        return {"trail": target.name, "region": target.region, "account": target.account}
    if isinstance(target, MacieTarget):
        return {"macie": target.account, "region": target.region}
    if isinstance(target, OwnRuleTarget):
        return {"rule": target.name, "region": target.region, "account": target.account}
    raise ValueError(f"{type(target).__name__} is named by events only, never by the sweep")


def target_of_key(key: Mapping[str, Any]) -> Target:
    if "trail" in key:
        return TrailTarget(str(key["trail"]), str(key["region"]), key.get("account"))
    if "macie" in key:
        return MacieTarget(str(key["macie"]), str(key["region"]))
    return OwnRuleTarget(str(key["rule"]), str(key["region"]), key.get("account"))


def _evaluate_for_sweep(target: Target, trigger: Trigger, settings: Settings) -> Outcome:
    return evaluate(target, trigger, settings)


def _decide_event(event: Event, settings: Settings) -> Outcome:
    return watch(event, settings, options=load_options())


UNIT = CheckUnit(
    name=CHECK,
    decide_event=_decide_event,
    targets_from_inventory=targets_from_inventory,
    evaluate=_evaluate_for_sweep,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    sweep_permissions=SWEEP_PERMISSIONS,
)
