"""Unencrypted or exposed SageMaker resources, caught when they are created or updated, and by the sweep.

Triggers: CloudTrail Create*/Update* calls for jobs, notebooks, endpoint configurations, models,
Studio domains, model-monitoring job definitions and schedules, feature groups and inference
experiments; AWS Config's SageMaker rules (those Security Hub deploys for SageMaker.1 to .25)
turning NON_COMPLIANT; SageMaker's own training-job state changes. The sweep lists the same
resources (`targets_from_inventory`). The event names the resource; the decision is made on what
SageMaker describes now (CloudTrail may redact request parameters). Only when the describe call
fails is the event's own copy of a Create call used, and the outcome says so. Every failed rule of a
resource goes into one outcome, so one alert, carrying the Security Hub control ids it answers
(`controls`). Optionally (StopUnencryptedJobs) a running job that fails a HIGH rule is stopped.
The rules, their controls, severities and Config rule names are in mlwarden.rules.sagemaker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions, pii_memory
from mlwarden.checks import CheckUnit
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import ApiCall, ComplianceChange, Event, StateChange, Unrecognised, partition_of, scalar
from mlwarden.exemptions import exemption_for
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.pii import PII_TAG
from mlwarden.rules import sagemaker as rules
from mlwarden.rules.sagemaker import Finding, Kind, control_number, controls_of, input_buckets, worst
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
    # Root access (SageMaker.3) and the platform can be changed on a stopped notebook instance.
    "UpdateNotebookInstance": (Kind.NOTEBOOK_INSTANCE, "notebookInstanceName"),
    "CreateDataQualityJobDefinition": (Kind.DATA_QUALITY_JOB_DEFINITION, "jobDefinitionName"),
    "CreateModelQualityJobDefinition": (Kind.MODEL_QUALITY_JOB_DEFINITION, "jobDefinitionName"),
    "CreateModelBiasJobDefinition": (Kind.MODEL_BIAS_JOB_DEFINITION, "jobDefinitionName"),
    "CreateModelExplainabilityJobDefinition": (Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION, "jobDefinitionName"),
    "CreateMonitoringSchedule": (Kind.MONITORING_SCHEDULE, "monitoringScheduleName"),
    "UpdateMonitoringSchedule": (Kind.MONITORING_SCHEDULE, "monitoringScheduleName"),
    "CreateFeatureGroup": (Kind.FEATURE_GROUP, "featureGroupName"),
    "UpdateFeatureGroup": (Kind.FEATURE_GROUP, "featureGroupName"),
    "CreateInferenceExperiment": (Kind.INFERENCE_EXPERIMENT, "name"),
    "UpdateInferenceExperiment": (Kind.INFERENCE_EXPERIMENT, "name"),
}
# An update's request parameters are the change, not the resource: never decided on when Describe* fails.
UPDATE_CALLS = frozenset(name for name in API_CALLS if name.startswith("Update"))
# AWS Config managed rules -> the resource kinds they grade (mlwarden.rules.sagemaker), matched by prefix:
# deployed names carry suffixes, and Security Hub deploys them as "securityhub-<rule>-<suffix>".
CONFIG_RULE_KINDS = rules.config_rule_kinds()
CONFIG_RULES = tuple(CONFIG_RULE_KINDS)
CONFIG_RESOURCE_TYPES = {
    "AWS::SageMaker::NotebookInstance": Kind.NOTEBOOK_INSTANCE,
    "AWS::SageMaker::EndpointConfig": Kind.ENDPOINT_CONFIG,
    "AWS::SageMaker::Model": Kind.MODEL,
    "AWS::SageMaker::DataQualityJobDefinition": Kind.DATA_QUALITY_JOB_DEFINITION,
    "AWS::SageMaker::ModelQualityJobDefinition": Kind.MODEL_QUALITY_JOB_DEFINITION,
    "AWS::SageMaker::ModelBiasJobDefinition": Kind.MODEL_BIAS_JOB_DEFINITION,
    "AWS::SageMaker::ModelExplainabilityJobDefinition": Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION,
    "AWS::SageMaker::MonitoringSchedule": Kind.MONITORING_SCHEDULE,
    "AWS::SageMaker::FeatureGroup": Kind.FEATURE_GROUP,
    "AWS::SageMaker::InferenceExperiment": Kind.INFERENCE_EXPERIMENT,
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
    Kind.DATA_QUALITY_JOB_DEFINITION: _Api(
        "DescribeDataQualityJobDefinition", "describe_data_quality_job_definition", "JobDefinitionName"
    ),
    Kind.MODEL_QUALITY_JOB_DEFINITION: _Api(
        "DescribeModelQualityJobDefinition", "describe_model_quality_job_definition", "JobDefinitionName"
    ),
    Kind.MODEL_BIAS_JOB_DEFINITION: _Api(
        "DescribeModelBiasJobDefinition", "describe_model_bias_job_definition", "JobDefinitionName"
    ),
    Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION: _Api(
        "DescribeModelExplainabilityJobDefinition", "describe_model_explainability_job_definition", "JobDefinitionName"
    ),
    Kind.MONITORING_SCHEDULE: _Api(
        "DescribeMonitoringSchedule", "describe_monitoring_schedule", "MonitoringScheduleName"
    ),
    Kind.FEATURE_GROUP: _Api("DescribeFeatureGroup", "describe_feature_group", "FeatureGroupName"),
    Kind.INFERENCE_EXPERIMENT: _Api("DescribeInferenceExperiment", "describe_inference_experiment", "Name"),
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
# Only with DisableNotebookRootAccess=true (SageMaker.3), on notebook instances.
ROOT_PERMISSIONS = frozenset({"sagemaker:UpdateNotebookInstance", "sagemaker:ListTags"})

STOP_ENV = "STOP_UNENCRYPTED_JOBS"
ROOT_ENV = "DISABLE_NOTEBOOK_ROOT_ACCESS"
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,119}$")
_DOMAIN_ID = re.compile(r"^d-[a-z0-9]{1,60}$")
# Feature group names may hold underscores (CreateFeatureGroup API reference).
_FEATURE_GROUP_NAME = re.compile(r"^[a-zA-Z0-9]([_-]*[a-zA-Z0-9]){0,63}$")
_NAME_PATTERNS = {Kind.DOMAIN: _DOMAIN_ID, Kind.FEATURE_GROUP: _FEATURE_GROUP_NAME}


# --- configuration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """This check's optional behaviour (template parameter StopUnencryptedJobs)."""

    # Stop training / processing / transform / tuning jobs that fail a HIGH rule.
    stop_jobs: bool = False
    # SageMaker.3: turn root access off on a stopped notebook instance (DisableNotebookRootAccess).
    disable_notebook_root: bool = False


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "false").strip().lower() or "false"
    if raw not in ("true", "false"):
        raise SettingsError(f"{name} must be one of true | false, got {raw!r}")
    return raw == "true"


def load_options(environ: Mapping[str, str] | None = None) -> Options:
    env = os.environ if environ is None else environ
    return Options(stop_jobs=_flag(env, STOP_ENV), disable_notebook_root=_flag(env, ROOT_ENV))


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
    valid = _NAME_PATTERNS.get(kind, _NAME)
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
        from_event=None if event.event_name in UPDATE_CALLS else pascal_case(event.request_parameters),
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
    routed = next((name for name in CONFIG_RULES if rule.startswith(name)), None)
    if routed is None:
        return f"Config rule {event.rule_name} is not a SageMaker rule"
    if event.compliance != "NON_COMPLIANT":
        return f"Config rule {event.rule_name} reports {event.compliance}, nothing to check"
    kind = CONFIG_RESOURCE_TYPES.get(event.resource_type)
    if kind is None or kind not in CONFIG_RULE_KINDS[routed]:
        return f"Config resource type {event.resource_type} is not what the rule {routed} grades"
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


# us-east-1, us-gov-west-1, cn-north-1, eu-central-2: anything else is not a region to build a client for.
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")


def _sagemaker(region: str | None) -> Any:
    """SageMaker in the resource's own region: a sweep reaches every region, not only the function's.

    A region that is not one (a damaged event) reads the function's own region, as events always did."""
    default = clients.client("sagemaker")
    if region is None or region == default.meta.region_name or not _REGION.match(region):
        return default
    return clients.client("sagemaker", region)


def _call(api: _Api, service: str, *, region: str | None = None, **kwargs: Any) -> Any:
    aws = _sagemaker(region) if service == "sagemaker" else clients.client(service)
    try:
        return getattr(aws, api.method)(**kwargs)
    except ClientError as err:
        raise AwsCallFailed.from_error(f"{service}:{api.action}", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error(f"{service}:{api.action}", err) from err


def _not_found(err: AwsCallFailed) -> bool:
    if err.code in ("ResourceNotFound", "ResourceNotFoundException"):
        return True
    # DescribeNotebookInstance answers a missing instance with ValidationException "RecordNotFound".
    message = err.message.lower()
    return err.code == "ValidationException" and any(
        words in message for words in ("could not find", "not found", "recordnotfound")
    )


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
        data = _call(target.describe, "sagemaker", region=target.region, **{target.describe.parameter: target.name})
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
    return evaluate_target(target, Trigger.of(event), settings, options)


def evaluate(
    target: Target | ListingFailed, trigger: Trigger, settings: Settings, *, event: Event | None = None
) -> Outcome:
    """The sweep's way in: the event path's decision for a listed resource (options read from the environment)."""
    if isinstance(target, ListingFailed):
        return target.outcome(trigger)
    return evaluate_target(target, trigger, settings, load_options())


def evaluate_target(target: Target, trigger: Trigger, settings: Settings, options: Options) -> Outcome:
    """Describe the resource now, grade it, act if asked: the one decision of the event path and the sweep."""
    try:
        description = _describe(target)
        if description is None:
            return ignored_at(CHECK, trigger, f"the {target.kind.value} {target.name} no longer exists")
        return _decide(target, description, trigger, settings, options)
    except AwsCallFailed as err:
        failed = call_failed(CHECK, trigger, target.arn, f"could not check the {target.kind.value}", err)
        return replace(failed, controls=controls_of(target.kind))


def failed_controls(findings: list[Finding]) -> tuple[str, ...]:
    """The Security Hub controls the failed rules answer, in control order."""
    return tuple(sorted({c for f in findings for c in f.rule.controls}, key=control_number))


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
    findings = rules.evaluate(target.kind, description.data, pii=bool(pii_buckets))
    details: dict[str, Any] = {"described_by": description.read_from, "input_buckets": buckets}
    if pii_buckets:
        details["pii_buckets"] = pii_buckets
    unknown = sorted(b for b, pii in pii_of.items() if pii is None)
    if unknown:
        details["pii_unknown_buckets"] = unknown
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": target.arn}
    if not findings:
        # The controls it was graded against, and passes.
        common["controls"] = controls_of(target.kind)
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=f"the {target.kind.value} passes every rule (decided on {description.read_from})",
            details=details,
            **common,
        )
    details["failed_rules"] = [f.as_dict() for f in findings]
    common["controls"] = failed_controls(findings)
    common["findings"] = tuple(sorted({f.rule.name for f in findings}))  # one alert per resource and rule set
    common["next_step"] = next_step(target, findings)
    severity = worst(findings)
    what = f"{target.kind.value} {target.name}: {_summary(findings)}"
    if not description.live:
        what += f" (decided on the {description.read_from})"
    high = any(f.rule.severity is Severity.HIGH for f in findings)
    fix = None
    if options.stop_jobs and high and target.kind in STOPPABLE:
        fix = _stop_fix(target)
    elif options.disable_notebook_root and any(f.rule is rules.NOTEBOOK_ROOT for f in findings):
        fix = _root_fix(target)
    if fix is not None:
        return _fix(
            target,
            fix,
            description=description,
            what=what,
            severity=severity,
            details=details,
            common=common,
            settings=settings,
        )
    return Outcome(outcome=OutcomeKind.FLAGGED, severity=severity, reason=what, details=details, **common)


@dataclass(frozen=True)
class _Fix:
    """One safe fix: the call, the state it needs, the field that shows it took, and how to undo it."""

    api: _Api
    params: Mapping[str, Any]
    # The described field that must hold `ready` before the fix, and the values it may read back as after it.
    status_field: str
    ready: str
    verify_field: str
    verified: frozenset[str]
    previous: Mapping[str, Any]
    planned: Mapping[str, Any]
    done: str
    would: str
    # "not stopped", "root access left on": what the alert says when the guards hold the fix back.
    held_back: str
    undo: str
    by_hand: str


def _stop_fix(target: Target) -> _Fix:
    stop, status_field = _STOP[target.kind]
    return _Fix(
        api=stop,
        params={stop.parameter: target.name},
        status_field=status_field,
        ready="InProgress",
        verify_field=status_field,
        verified=frozenset({"Stopping", "Stopped"}),
        previous={status_field: "InProgress"},
        planned={status_field: "Stopping"},
        done="job stopped (StopUnencryptedJobs=true)",
        would="would stop the job",
        held_back="not stopped",
        undo=(
            f"a stopped job cannot be resumed: start a new {target.kind.value} with the settings named above, "
            f"or, to keep such a job running, {exemptions.hint(target.arn, CHECK)} before starting it"
        ),
        by_hand=f"stop the job yourself ({_stop_command(target, stop)})",
    )


_UPDATE_NOTEBOOK = _Api("UpdateNotebookInstance", "update_notebook_instance", "NotebookInstanceName")


def _root_fix(target: Target) -> _Fix:
    """SageMaker.3: root access off, on a stopped notebook instance only (an update needs it stopped, and
    stopping one would cut off the people working in it)."""
    return _Fix(
        api=_UPDATE_NOTEBOOK,
        params={"NotebookInstanceName": target.name, "RootAccess": "Disabled"},
        status_field="NotebookInstanceStatus",
        ready="Stopped",
        verify_field="RootAccess",
        verified=frozenset({"Disabled"}),
        previous={"RootAccess": "Enabled"},
        planned={"RootAccess": "Disabled"},
        done="root access turned off (DisableNotebookRootAccess=true)",
        would="would turn root access off",
        held_back="root access left on",
        undo=(
            f"aws sagemaker update-notebook-instance --notebook-instance-name {target.name} --root-access Enabled "
            f"(while it is stopped), or, to keep root access, {exemptions.hint(target.arn, CHECK)}"
        ),
        by_hand=(
            f"turn root access off yourself (aws sagemaker update-notebook-instance --notebook-instance-name "
            f"{target.name} --root-access Disabled, while it is stopped)"
        ),
    )


def _fix(
    target: Target,
    fix: _Fix,
    *,
    description: _Description,
    what: str,
    severity: Severity,
    details: dict[str, Any],
    common: dict[str, Any],
    settings: Settings,
) -> Outcome:
    """Exemption, dry-run, write, read back: the same guards for every fix this check makes."""
    status = description.data.get(fix.status_field)
    if not description.live or status != fix.ready:
        shown = status if description.live else "unknown (not described live)"
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=severity,
            reason=f"{what}; {fix.held_back}: {target.kind.value.split('-')[-1]} status is {shown}",
            details=details,
            **common,
        )
    tags = _resource_tags(target)
    if tags is None:
        # Never change a resource that may be exempt: without its tags, alert instead.
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=severity,
            reason=f"{what}; {fix.held_back}: its tags (exemption) could not be read",
            details=details,
            **common,
        )
    exemption = exemption_for(target.arn, CHECK, tags, settings)
    details["exemption"] = exemption.reason
    if exemption.active:
        return Outcome(
            outcome=OutcomeKind.EXEMPT,
            severity=Severity.LOW,
            reason=f"{what}; left as it is: {exemption.reason}",
            details=details,
            **common,
        )
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=severity,
            reason=f"{what}; dry run: {fix.would}",
            previous_state=dict(fix.previous),
            new_state=dict(fix.planned),
            details=details,
            **common,
        )
    by_hand = f"{fix.by_hand}, then {common['next_step']}"
    try:
        _call(fix.api, "sagemaker", region=target.region, **fix.params)
    except AwsCallFailed as err:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=severity,
            reason=f"{what}; could not {fix.would.removeprefix('would ')}: {err.explanation}",
            previous_state=dict(fix.previous),
            error_code=err.code,
            details={**details, "failed_action": err.action},
            cause=err,
            **{**common, "next_step": by_hand},
        )
    describe = {target.describe.parameter: target.name}
    after = _call(target.describe, "sagemaker", region=target.region, **describe).get(fix.verify_field)
    changed: dict[str, Any] = {
        "severity": severity,
        "actions": (f"sagemaker:{fix.api.action}",),
        "previous_state": dict(fix.previous),
        "new_state": {fix.verify_field: after},
        "undo": fix.undo,
        "details": details,
        **common,
    }
    if after not in fix.verified:
        return Outcome(
            outcome=OutcomeKind.FAILED,
            reason=f"{what}; {fix.api.action} was accepted but {fix.verify_field} reads back as {after}",
            error_code="VerificationFailed",
            **{**changed, "next_step": by_hand},
        )
    return Outcome(outcome=OutcomeKind.REMEDIATED, reason=f"{what}; {fix.done}", **changed)


def _resource_tags(target: Target) -> dict[str, str] | None:
    """The resource's tags; None when they cannot be read."""
    try:
        list_tags = _Api("ListTags", "list_tags", "ResourceArn")
        response = _call(list_tags, "sagemaker", region=target.region, ResourceArn=target.arn)
    except AwsCallFailed:
        return None
    return {str(tag.get("Key")): str(tag.get("Value", "")) for tag in response.get("Tags", [])}


# --- the sweep's way in: every resource of the region -------------------------------------------------------
#
# Jobs are listed InProgress only: a running job is the one whose data is still being read and written (and
# the only one StopUnencryptedJobs can stop); a finished job's settings cannot change, and its history would
# re-alert every day. Everything else is listed whatever its state: a stopped notebook instance or monitoring
# schedule starts again with the same settings. Inference experiments that ended are skipped.


@dataclass(frozen=True)
class _Listing:
    """One List* call of the sweep: its items, the name field of each, and its server-side filter."""

    kind: Kind
    action: str
    method: str
    items: str
    name: str
    filters: tuple[tuple[str, str], ...] = ()


_IN_PROGRESS = (("StatusEquals", "InProgress"),)
_LISTINGS = (
    _Listing(
        Kind.NOTEBOOK_INSTANCE,
        "ListNotebookInstances",
        "list_notebook_instances",
        "NotebookInstances",
        "NotebookInstanceName",
    ),
    _Listing(
        Kind.ENDPOINT_CONFIG, "ListEndpointConfigs", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName"
    ),
    _Listing(Kind.MODEL, "ListModels", "list_models", "Models", "ModelName"),
    _Listing(Kind.DOMAIN, "ListDomains", "list_domains", "Domains", "DomainId"),
    _Listing(
        Kind.TRAINING_JOB,
        "ListTrainingJobs",
        "list_training_jobs",
        "TrainingJobSummaries",
        "TrainingJobName",
        _IN_PROGRESS,
    ),
    _Listing(
        Kind.PROCESSING_JOB,
        "ListProcessingJobs",
        "list_processing_jobs",
        "ProcessingJobSummaries",
        "ProcessingJobName",
        _IN_PROGRESS,
    ),
    _Listing(
        Kind.TRANSFORM_JOB,
        "ListTransformJobs",
        "list_transform_jobs",
        "TransformJobSummaries",
        "TransformJobName",
        _IN_PROGRESS,
    ),
    _Listing(
        Kind.TUNING_JOB,
        "ListHyperParameterTuningJobs",
        "list_hyper_parameter_tuning_jobs",
        "HyperParameterTuningJobSummaries",
        "HyperParameterTuningJobName",
        _IN_PROGRESS,
    ),
    _Listing(
        Kind.AUTOML_JOB, "ListAutoMLJobs", "list_auto_ml_jobs", "AutoMLJobSummaries", "AutoMLJobName", _IN_PROGRESS
    ),
    _Listing(
        Kind.DATA_QUALITY_JOB_DEFINITION,
        "ListDataQualityJobDefinitions",
        "list_data_quality_job_definitions",
        "JobDefinitionSummaries",
        "MonitoringJobDefinitionName",
    ),
    _Listing(
        Kind.MODEL_QUALITY_JOB_DEFINITION,
        "ListModelQualityJobDefinitions",
        "list_model_quality_job_definitions",
        "JobDefinitionSummaries",
        "MonitoringJobDefinitionName",
    ),
    _Listing(
        Kind.MODEL_BIAS_JOB_DEFINITION,
        "ListModelBiasJobDefinitions",
        "list_model_bias_job_definitions",
        "JobDefinitionSummaries",
        "MonitoringJobDefinitionName",
    ),
    _Listing(
        Kind.MODEL_EXPLAINABILITY_JOB_DEFINITION,
        "ListModelExplainabilityJobDefinitions",
        "list_model_explainability_job_definitions",
        "JobDefinitionSummaries",
        "MonitoringJobDefinitionName",
    ),
    _Listing(
        Kind.MONITORING_SCHEDULE,
        "ListMonitoringSchedules",
        "list_monitoring_schedules",
        "MonitoringScheduleSummaries",
        "MonitoringScheduleName",
    ),
    _Listing(
        Kind.FEATURE_GROUP, "ListFeatureGroups", "list_feature_groups", "FeatureGroupSummaries", "FeatureGroupName"
    ),
    _Listing(
        Kind.INFERENCE_EXPERIMENT,
        "ListInferenceExperiments",
        "list_inference_experiments",
        "InferenceExperiments",
        "Name",
    ),
)
_ENDED_EXPERIMENTS = frozenset({"Completed", "Cancelled"})
# List* actions have no resource type: IAM accepts them only with Resource "*".
SWEEP_PERMISSIONS = frozenset(f"sagemaker:{listing.action}" for listing in _LISTINGS)


@dataclass(frozen=True)
class ListingFailed:
    """One kind of resource the sweep could not list. The other kinds are still swept; this one becomes a
    `failed` outcome (HIGH, alerted), because nothing is known about its resources."""

    kind: Kind
    action: str
    code: str
    message: str
    region: str
    account: str

    @property
    def resource(self) -> str:
        return f"{self.account}/{self.region}/{self.kind.value}"

    def outcome(self, trigger: Trigger) -> Outcome:
        err = AwsCallFailed(self.action, self.code, self.message)
        failed = call_failed(
            CHECK, trigger, self.resource, f"could not list the {self.kind.value}s of {self.region}", err
        )
        return replace(failed, controls=controls_of(self.kind))


def targets_from_inventory(inventory: Inventory) -> Iterator[Target | ListingFailed]:
    """Every SageMaker resource of the inventory's region this check grades (see the note above).

    A List* call that fails ends its own kind's listing only: the kinds after it are still listed.
    """
    for listing in _LISTINGS:
        try:
            yield from _listed(inventory, listing)
        except AwsCallFailed as err:
            yield ListingFailed(
                kind=listing.kind,
                action=f"sagemaker:{listing.action}",
                code=err.code,
                message=err.message,
                region=inventory.region,
                account=inventory.account,
            )


def _listed(inventory: Inventory, listing: _Listing) -> Iterator[Target]:
    for item in inventory.pages("sagemaker", listing.method, listing.items, **dict(listing.filters)):
        if not isinstance(item, Mapping):
            continue
        if listing.kind is Kind.INFERENCE_EXPERIMENT and item.get("Status") in _ENDED_EXPERIMENTS:
            continue
        target = _target(
            listing.kind,
            scalar(item.get(listing.name)),
            what=listing.action,
            region=inventory.region,
            account=inventory.account,
        )
        if isinstance(target, Target):
            yield target


def key_of(target: Target | ListingFailed) -> dict[str, str]:
    if isinstance(target, ListingFailed):
        return {"listing_failed": target.kind.value, **{k: getattr(target, k) for k in _FAILED_FIELDS}}
    return {
        "kind": target.kind.value,
        "name": target.name,
        "region": target.region or "",
        "account": target.account or "",
    }


_FAILED_FIELDS = ("action", "code", "message", "region", "account")


def target_of_key(key: Mapping[str, Any]) -> Target | ListingFailed:
    """The target a key names; ValueError when the key does not name one."""
    if "listing_failed" in key:
        fields = {name: str(key.get(name) or "") for name in _FAILED_FIELDS}
        return ListingFailed(kind=Kind(str(key["listing_failed"])), **fields)
    region = str(key.get("region") or "") or None
    target = _target(
        Kind(str(key.get("kind"))),
        str(key.get("name") or "") or None,
        what="sweep key",
        region=region,
        account=str(key.get("account") or "") or None,
    )
    if isinstance(target, str):
        raise ValueError(target)
    return target


def resource_of(target: Target | ListingFailed) -> str:
    return target.resource if isinstance(target, ListingFailed) else target.arn


UNIT = CheckUnit(
    name=CHECK,
    decide_event=lambda event, settings: check_resource(event, settings, load_options()),
    targets_from_inventory=targets_from_inventory,
    evaluate=evaluate,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    sweep_permissions=SWEEP_PERMISSIONS,
)


# --- the README's coverage table, rendered from the rules so that it cannot drift ----------------------------

COVERAGE_START = "<!-- sagemaker-coverage:start (tools/render_sagemaker_coverage.py) -->"
COVERAGE_END = "<!-- sagemaker-coverage:end -->"


def coverage_table() -> str:
    """SageMaker.1 to .25: severity, rule, trigger calls, Config rules, sweep listing, remediation."""
    calls: dict[Kind, list[str]] = {}
    for call, (kind, _) in API_CALLS.items():
        calls.setdefault(kind, []).append(f"`{call}`")
    by_control = {control: rule for rule in rules.CONTROL_RULES for control in rule.controls}
    lines = [
        "| control | severity | rule | at event time (CloudTrail) | AWS Config rules routed | sweep | remediation |",
        "|---|---|---|---|---|---|---|",
    ]
    for number in range(1, 26):
        control = f"SageMaker.{number}"
        if control in rules.NOT_COVERED:
            lines.append(f"| {control} | | | not applicable: {rules.NOT_COVERED[control]} | | | |")
            continue
        rule = by_control[control]
        triggers = ", ".join(call for kind in rule.kinds for call in calls.get(kind, []))
        config = ", ".join(f"`{name}`" for name in rule.config_rules)
        sweep = ", ".join(f"`{listing.action}`" for listing in _LISTINGS if listing.kind in rule.kinds)
        lines.append(
            f"| {control} | {rule.severity.value} | `{rule.name}` | {triggers} | {config} | {sweep} | "
            f"{rule.remediation or 'alert (its next step says what to change)'} |"
        )
    return "\n".join(lines)
