"""Unencrypted or exposed SageMaker resources, caught when they are created.

Triggers: CloudTrail Create* calls for jobs, notebooks, endpoint configurations, models and
Studio domains; AWS Config's SageMaker rules turning NON_COMPLIANT; SageMaker's own training-job
state changes. The event names the resource; the decision is made on what SageMaker describes
now (CloudTrail may redact request parameters). Only when the describe call fails is the event's
own copy used, and the outcome says so. Every failed rule of a resource goes into one outcome,
so one alert. Optionally (StopUnencryptedJobs) a running job that fails a HIGH rule is stopped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions, pii_memory
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import ApiCall, ComplianceChange, Event, StateChange, Unrecognised, partition_of, scalar
from mlwarden.exemptions import exemption_for
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored
from mlwarden.pii import PII_TAG
from mlwarden.rules.sagemaker import Finding, Kind, evaluate, input_buckets, worst
from mlwarden.settings import Settings, SettingsError

CHECK = "check_sagemaker_encryption"
SAGEMAKER_EVENT_SOURCE = "sagemaker.amazonaws.com"

# CloudTrail call -> (resource kind, request parameter naming it).
API_CALLS: dict[str, tuple[Kind, str]] = {
    "CreateTrainingJob": (Kind.TRAINING_JOB, "trainingJobName"),
    "CreateProcessingJob": (Kind.PROCESSING_JOB, "processingJobName"),
    "CreateTransformJob": (Kind.TRANSFORM_JOB, "transformJobName"),
    "CreateHyperParameterTuningJob": (Kind.TUNING_JOB, "hyperParameterTuningJobName"),
    "CreateAutoMLJob": (Kind.AUTOML_JOB, "autoMLJobName"),
    "CreateAutoMLJobV2": (Kind.AUTOML_JOB, "autoMLJobName"),
    "CreateNotebookInstance": (Kind.NOTEBOOK_INSTANCE, "notebookInstanceName"),
    "CreateEndpointConfig": (Kind.ENDPOINT_CONFIG, "endpointConfigName"),
    "CreateModel": (Kind.MODEL, "modelName"),
    "CreateDomain": (Kind.DOMAIN, "domainName"),
}
# AWS Config managed rules, matched by prefix (deployed names carry suffixes; Security Hub adds "securityhub-").
CONFIG_RULES = (
    "sagemaker-notebook-instance-kms-key-configured",
    "sagemaker-endpoint-configuration-kms-key-configured",
    "sagemaker-notebook-no-direct-internet-access",
)
CONFIG_RESOURCE_TYPES = {
    "AWS::SageMaker::NotebookInstance": Kind.NOTEBOOK_INSTANCE,
    "AWS::SageMaker::EndpointConfig": Kind.ENDPOINT_CONFIG,
}


@dataclass(frozen=True)
class _Api:
    """The Describe* call that reads one kind of SageMaker resource."""

    action: str
    method: str
    parameter: str


_DESCRIBE: dict[Kind, _Api] = {
    Kind.TRAINING_JOB: _Api("DescribeTrainingJob", "describe_training_job", "TrainingJobName"),
    Kind.PROCESSING_JOB: _Api("DescribeProcessingJob", "describe_processing_job", "ProcessingJobName"),
    Kind.TRANSFORM_JOB: _Api("DescribeTransformJob", "describe_transform_job", "TransformJobName"),
    Kind.TUNING_JOB: _Api(
        "DescribeHyperParameterTuningJob", "describe_hyper_parameter_tuning_job", "HyperParameterTuningJobName"
    ),
    Kind.AUTOML_JOB: _Api("DescribeAutoMLJobV2", "describe_auto_ml_job_v2", "AutoMLJobName"),
    Kind.NOTEBOOK_INSTANCE: _Api("DescribeNotebookInstance", "describe_notebook_instance", "NotebookInstanceName"),
    Kind.ENDPOINT_CONFIG: _Api("DescribeEndpointConfig", "describe_endpoint_config", "EndpointConfigName"),
    Kind.MODEL: _Api("DescribeModel", "describe_model", "ModelName"),
    Kind.DOMAIN: _Api("DescribeDomain", "describe_domain", "DomainId"),
}
# CreateAutoMLJob (V1) jobs are described by their own call.
_DESCRIBE_AUTOML_V1 = _Api("DescribeAutoMLJob", "describe_auto_ml_job", "AutoMLJobName")

_STOP: dict[Kind, tuple[_Api, str]] = {
    Kind.TRAINING_JOB: (_Api("StopTrainingJob", "stop_training_job", "TrainingJobName"), "TrainingJobStatus"),
    Kind.PROCESSING_JOB: (_Api("StopProcessingJob", "stop_processing_job", "ProcessingJobName"), "ProcessingJobStatus"),
    Kind.TRANSFORM_JOB: (_Api("StopTransformJob", "stop_transform_job", "TransformJobName"), "TransformJobStatus"),
    Kind.TUNING_JOB: (
        _Api("StopHyperParameterTuningJob", "stop_hyper_parameter_tuning_job", "HyperParameterTuningJobName"),
        "HyperParameterTuningJobStatus",
    ),
}
STOPPABLE = frozenset(_STOP)

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
DESCRIBE_PERMISSIONS = frozenset(
    {f"sagemaker:{api.action}" for api in _DESCRIBE.values()} | {f"sagemaker:{_DESCRIBE_AUTOML_V1.action}"}
)
BUCKET_PERMISSIONS = frozenset({"s3:GetBucketTagging"})
# Only with StopUnencryptedJobs=true: the template grants these under that condition.
STOP_PERMISSIONS = frozenset({f"sagemaker:{api.action}" for api, _ in _STOP.values()} | {"sagemaker:ListTags"})

STOP_ENV = "STOP_UNENCRYPTED_JOBS"
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,119}$")
_DOMAIN_ID = re.compile(r"^d-[a-z0-9]{1,60}$")


# --- configuration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """This check's optional behaviour (template parameter StopUnencryptedJobs)."""

    # Stop training / processing / transform / tuning jobs that fail a HIGH rule.
    stop_jobs: bool = False


def load_options(environ: Mapping[str, str] | None = None) -> Options:
    env = os.environ if environ is None else environ
    raw = env.get(STOP_ENV, "false").strip().lower() or "false"
    if raw not in ("true", "false"):
        raise SettingsError(f"{STOP_ENV} must be one of true | false, got {raw!r}")
    return Options(stop_jobs=raw == "true")


# --- which resource ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A SageMaker resource to describe and grade."""

    kind: Kind
    # The name (the domain's id for a Studio domain) that Describe* takes.
    name: str
    partition: str
    region: str | None
    account: str | None
    describe: _Api
    # The event's own copy of the description, to fall back on when Describe* fails.
    from_event: Mapping[str, Any] | None
    event_copy: str

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:sagemaker:{self.region or ''}:{self.account or ''}:{self.kind.value}/{self.name}"


def targets_from_event(event: Event) -> Target | str:
    """The SageMaker resource an event is about, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if isinstance(event, ApiCall):
        return _api_call_target(event)
    if isinstance(event, ComplianceChange):
        return _compliance_target(event)
    if isinstance(event, StateChange):
        return _state_change_target(event)
    return f"{event.envelope.detail_type} is not about SageMaker"


def _target(
    kind: Kind,
    name: str | None,
    *,
    what: str,
    region: str | None,
    account: str | None,
    describe: _Api | None = None,
    from_event: Mapping[str, Any] | None = None,
    event_copy: str = "",
) -> Target | str:
    if name is None:
        return f"{what} names no {kind.value}"
    valid = _DOMAIN_ID if kind is Kind.DOMAIN else _NAME
    if not valid.match(name):
        return f"{what} names an invalid {kind.value} {name[:80]!r}"
    return Target(
        kind=kind,
        name=name,
        partition=partition_of(region),
        region=region,
        account=account,
        describe=describe or _DESCRIBE[kind],
        from_event=from_event or None,
        event_copy=event_copy,
    )


def _api_call_target(event: ApiCall) -> Target | str:
    if event.event_source != SAGEMAKER_EVENT_SOURCE:
        return f"{event.event_source} {event.event_name} is not a SageMaker call"
    if event.event_name == "AddTags":
        return _tagged_target(event)
    if event.event_name not in API_CALLS:
        return f"SageMaker call {event.event_name} creates nothing this check covers"
    kind, parameter = API_CALLS[event.event_name]
    name = event.parameter(parameter)
    if kind is Kind.DOMAIN:
        # DescribeDomain takes the id SageMaker assigned: only the response has it.
        name = _last_segment(event.response_elements.get("domainArn"))
    return _target(
        kind,
        name,
        what=event.event_name,
        region=event.aws_region,
        account=event.recipient_account,
        describe=_DESCRIBE_AUTOML_V1 if event.event_name == "CreateAutoMLJob" else None,
        from_event=pascal_case(event.request_parameters),
        event_copy=f"{event.event_name} request parameters",
    )


def _tagged_target(event: ApiCall) -> Target | str:
    """AddTags names the resource by ARN (arn:...:sagemaker:REGION:ACCOUNT:<kind>/<name>); routed for the exempt tag."""
    arn = event.parameter("resourceArn") or ""
    kind_name = arn.split(":", 5)[-1] if arn.startswith("arn:") and arn.count(":") >= 5 else ""
    kind = next((k for k in Kind if kind_name.startswith(f"{k.value}/")), None)
    if kind is None:
        return "AddTags names no SageMaker resource this check covers"
    return _target(kind, _last_segment(arn), what="AddTags", region=event.aws_region, account=event.recipient_account)


def _compliance_target(event: ComplianceChange) -> Target | str:
    rule = event.rule_name.removeprefix("securityhub-")
    if not rule.startswith(CONFIG_RULES):
        return f"Config rule {event.rule_name} is not a SageMaker rule"
    if event.compliance != "NON_COMPLIANT":
        return f"Config rule {event.rule_name} reports {event.compliance}, nothing to check"
    kind = CONFIG_RESOURCE_TYPES.get(event.resource_type)
    if kind is None:
        return f"Config resource type {event.resource_type} is not a notebook instance or endpoint configuration"
    name = _last_segment(event.resource_id) if event.resource_id.startswith("arn:") else event.resource_id
    return _target(kind, name, what=f"Config rule {event.rule_name}", region=event.aws_region, account=event.account)


def _state_change_target(event: StateChange) -> Target | str:
    detail = event.detail
    arn = detail.get("TrainingJobArn")
    name = _last_segment(arn) or _last_segment(event.resources[0] if event.resources else None)
    if name is None:
        name = scalar(detail.get("TrainingJobName"))
    return _target(
        Kind.TRAINING_JOB,
        name,
        what=event.envelope.detail_type,
        region=event.aws_region,
        account=event.account,
        from_event=detail,
        event_copy=f"{event.envelope.detail_type} event",
    )


def _last_segment(arn: Any) -> str | None:
    if isinstance(arn, str) and arn.startswith("arn:") and "/" in arn:
        return arn.rsplit("/", 1)[1] or None
    return None


# Maps whose keys are the user's own names: their case is kept.
_USER_KEYED = frozenset({"environment", "hyperParameters", "staticHyperParameters", "tags"})


def pascal_case(value: Any) -> Any:
    """CloudTrail's camelCase request parameters in the Describe* spelling (trainingJobName -> TrainingJobName)."""
    if isinstance(value, Mapping):
        converted = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                continue
            new_key = key[0].upper() + key[1:]
            converted[new_key] = item if key in _USER_KEYED else pascal_case(item)
        return converted
    if isinstance(value, list):
        return [pascal_case(item) for item in value]
    return value


# --- reading AWS -------------------------------------------------------------------------------------------


def _call(api: _Api, service: str, **kwargs: Any) -> Any:
    try:
        return getattr(clients.client(service), api.method)(**kwargs)
    except ClientError as err:
        raise AwsCallFailed.from_error(f"{service}:{api.action}", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error(f"{service}:{api.action}", err) from err


def _not_found(err: AwsCallFailed) -> bool:
    if err.code in ("ResourceNotFound", "ResourceNotFoundException"):
        return True
    message = err.message.lower()
    return err.code == "ValidationException" and ("could not find" in message or "not found" in message)


@dataclass(frozen=True)
class _Description:
    """A resource's description, live or from the event, and where it came from."""

    data: Mapping[str, Any]
    # "DescribeTrainingJob" when read live, else where the copy came from and why.
    read_from: str
    live: bool


def _describe(target: Target) -> _Description | None:
    """The live description; the event's copy when Describe* fails; None when the resource is gone."""
    try:
        data = _call(target.describe, "sagemaker", **{target.describe.parameter: target.name})
    except AwsCallFailed as err:
        # The event's copy is only worth deciding on when it says more than the resource's name.
        if target.from_event and len(target.from_event) > 1:
            return _Description(
                target.from_event, f"{target.event_copy}, because {target.describe.action} failed ({err.code})", False
            )
        if _not_found(err):
            return None
        raise
    data.pop("ResponseMetadata", None)
    return _Description(data, target.describe.action, True)


def _bucket_is_pii(bucket: str, partition: str, settings: Settings) -> bool | None:
    """True when the bucket's mlwarden:pii tag says so or Macie's finding is remembered (removing the tag
    does not lower the grading); False otherwise; None when neither can be read."""
    if pii_memory.recall(settings, f"arn:{partition}:s3:::{bucket}", CHECK).record is not None:
        return True
    try:
        tag_set = clients.client("s3").get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except ClientError as err:
        return False if error_code(err) == "NoSuchTagSet" else None
    except BotoCoreError:
        return None
    tags = {tag.get("Key"): str(tag.get("Value", "")) for tag in tag_set}
    return tags.get(PII_TAG, "").strip().lower() == "true"


# --- deciding ----------------------------------------------------------------------------------------------


def encryption_check(options: Options) -> Callable[[Event, Settings], Outcome]:
    """The check for `run_check`, with the function's options read at cold start."""

    def check(event: Event, settings: Settings) -> Outcome:
        return check_resource(event, settings, options)

    return check


def check_resource(event: Event, settings: Settings, options: Options) -> Outcome:
    target = targets_from_event(event)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    trigger = Trigger.of(event)
    try:
        description = _describe(target)
        if description is None:
            return ignored(CHECK, event, f"the {target.kind.value} {target.name} no longer exists")
        return _decide(target, description, trigger, settings, options)
    except AwsCallFailed as err:
        return call_failed(CHECK, trigger, target.arn, f"could not check the {target.kind.value}", err)


# A rule may fail on hundreds of fields (one per environment variable): the text names a few and counts the rest;
# the outcome's failed_rules keep them all.
_FIELDS_NAMED = 5
_JOBS = frozenset({Kind.TRAINING_JOB, Kind.PROCESSING_JOB, Kind.TRANSFORM_JOB, Kind.TUNING_JOB, Kind.AUTOML_JOB})


def _fields_text(fields: tuple[str, ...]) -> str:
    named = ", ".join(fields[:_FIELDS_NAMED])
    more = len(fields) - _FIELDS_NAMED
    return f"{named} and {more} more" if more > 0 else named


def _summary(findings: list[Finding]) -> str:
    parts = [f"{f.rule.name} ({f.rule.severity.value}: {_fields_text(f.fields)})" for f in findings]
    return f"{len(findings)} rule(s) failed: " + "; ".join(parts)


def next_step(target: Target, findings: list[Finding]) -> str:
    """What the owner changes, rule by rule, and where (a job or endpoint configuration cannot be edited)."""
    steps = "; ".join(f.rule.next_step.format(fields=_fields_text(f.fields)) for f in findings)
    if target.kind in _JOBS:
        job = target.kind.value.replace("-", " ")
        return f"a job cannot be changed: start the {job} again with these settings: {steps}"
    return (
        f"on the {target.kind.value} {target.name}: {steps} (a setting that cannot be updated in place, such as "
        f"a KMS key, needs a new {target.kind.value} created with it)"
    )


def _stop_command(target: Target, stop: _Api) -> str:
    """The AWS CLI spelling of a Stop* call: StopTrainingJob -> aws sagemaker stop-training-job --training-job-name."""

    def kebab(name: str) -> str:
        return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name).lower()

    return f"aws sagemaker {kebab(stop.action)} --{kebab(stop.parameter)} {target.name}"


def _decide(
    target: Target, description: _Description, trigger: Trigger, settings: Settings, options: Options
) -> Outcome:
    buckets = input_buckets(target.kind, description.data)
    pii_of = {bucket: _bucket_is_pii(bucket, target.partition, settings) for bucket in buckets}
    pii_buckets = sorted(b for b, pii in pii_of.items() if pii)
    findings = evaluate(target.kind, description.data, pii=bool(pii_buckets))
    details: dict[str, Any] = {"described_by": description.read_from, "input_buckets": buckets}
    if pii_buckets:
        details["pii_buckets"] = pii_buckets
    unknown = sorted(b for b, pii in pii_of.items() if pii is None)
    if unknown:
        details["pii_unknown_buckets"] = unknown
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": target.arn}
    if not findings:
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=f"the {target.kind.value} passes every rule (decided on {description.read_from})",
            details=details,
            **common,
        )
    details["failed_rules"] = [f.as_dict() for f in findings]
    common["findings"] = tuple(sorted({f.rule.name for f in findings}))  # one alert per resource and rule set
    common["next_step"] = next_step(target, findings)
    severity = worst(findings)
    what = f"{target.kind.value} {target.name}: {_summary(findings)}"
    if not description.live:
        what += f" (decided on the {description.read_from})"
    high = any(f.rule.severity is Severity.HIGH for f in findings)
    if options.stop_jobs and high and target.kind in STOPPABLE:
        return _stop(
            target,
            description=description,
            what=what,
            severity=severity,
            details=details,
            common=common,
            settings=settings,
        )
    return Outcome(outcome=OutcomeKind.FLAGGED, severity=severity, reason=what, details=details, **common)


def _stop(
    target: Target,
    *,
    description: _Description,
    what: str,
    severity: Severity,
    details: dict[str, Any],
    common: dict[str, Any],
    settings: Settings,
) -> Outcome:
    stop, status_field = _STOP[target.kind]
    status = description.data.get(status_field)
    if not description.live or status != "InProgress":
        shown = status if description.live else "unknown (not described live)"
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=severity,
            reason=f"{what}; not stopped: job status is {shown}",
            details=details,
            **common,
        )
    tags = _job_tags(target)
    if tags is None:
        # Never stop a job that may be exempt: without its tags, alert instead.
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=severity,
            reason=f"{what}; not stopped: its tags (exemption) could not be read",
            details=details,
            **common,
        )
    exemption = exemption_for(target.arn, CHECK, tags, settings)
    details["exemption"] = exemption.reason
    previous = {status_field: status}
    if exemption.active:
        return Outcome(
            outcome=OutcomeKind.EXEMPT,
            severity=Severity.LOW,
            reason=f"{what}; left running: {exemption.reason}",
            details=details,
            **common,
        )
    action = f"sagemaker:{stop.action}"
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=severity,
            reason=f"{what}; dry run: would stop the job",
            previous_state=previous,
            new_state={status_field: "Stopping"},
            details=details,
            **common,
        )
    undo = (
        f"a stopped job cannot be resumed: start a new {target.kind.value} with the settings named above, "
        f"or, to keep such a job running, {exemptions.hint(target.arn, CHECK)} before starting it"
    )
    by_hand = f"stop the job yourself ({_stop_command(target, stop)}), then {common['next_step']}"
    try:
        _call(stop, "sagemaker", **{stop.parameter: target.name})
    except AwsCallFailed as err:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=severity,
            reason=f"{what}; could not stop the job: {err.explanation}",
            previous_state=previous,
            error_code=err.code,
            details={**details, "failed_action": err.action},
            cause=err,
            **{**common, "next_step": by_hand},
        )
    after = _call(target.describe, "sagemaker", **{target.describe.parameter: target.name}).get(status_field)
    stopped: dict[str, Any] = {
        "severity": severity,
        "actions": (action,),
        "previous_state": previous,
        "new_state": {status_field: after},
        "undo": undo,
        "details": details,
        **common,
    }
    if after not in ("Stopping", "Stopped"):
        return Outcome(
            outcome=OutcomeKind.FAILED,
            reason=f"{what}; stop was requested but the job reads back as {after}",
            error_code="VerificationFailed",
            **{**stopped, "next_step": by_hand},
        )
    return Outcome(outcome=OutcomeKind.REMEDIATED, reason=f"{what}; job stopped (StopUnencryptedJobs=true)", **stopped)


def _job_tags(target: Target) -> dict[str, str] | None:
    """The job's tags; None when they cannot be read."""
    try:
        response = _call(_Api("ListTags", "list_tags", "ResourceArn"), "sagemaker", ResourceArn=target.arn)
    except AwsCallFailed:
        return None
    return {str(tag.get("Key")): str(tag.get("Value", "")) for tag in response.get("Tags", [])}
