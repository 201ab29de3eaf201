"""SageMaker security rules: pure functions over a resource's description, no AWS calls.

Each rule has a name, a severity and an explanation a data scientist can act on. The input is
what SageMaker's Describe* call answers (or the same keys from an event), so the rules can be
tested row by row without AWS. `evaluate` returns every rule the resource fails.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mlwarden.outcomes import Severity
from mlwarden.rules.instance_storage import NVME_FAMILIES


class Kind(StrEnum):
    """SageMaker resource types, spelt as in their ARNs (arn:...:sagemaker:REGION:ACCOUNT:<kind>/<name>)."""

    TRAINING_JOB = "training-job"
    PROCESSING_JOB = "processing-job"
    TRANSFORM_JOB = "transform-job"
    TUNING_JOB = "hyper-parameter-tuning-job"
    AUTOML_JOB = "automl-job"
    NOTEBOOK_INSTANCE = "notebook-instance"
    ENDPOINT_CONFIG = "endpoint-config"
    MODEL = "model"
    DOMAIN = "domain"


@dataclass(frozen=True)
class Rule:
    """One encryption or exposure rule, its severity and what it means."""

    name: str
    severity: Severity
    explanation: str
    # What to change, about the failing fields ("{fields}"): the alert's "What to do now" for this rule.
    next_step: str = "fix {fields}"


VOLUME_KEY = Rule(
    "storage-volume-not-encrypted-with-kms-key",
    Severity.HIGH,
    "The disk the instances use while they run (training data, checkpoints, scratch files) is not encrypted "
    "with your own KMS key. Set a KMS key so that access to the data can be controlled and revoked.",
    "set {fields} to your KMS key",
)
OUTPUT_KEY = Rule(
    "output-not-encrypted-with-kms-key",
    Severity.HIGH,
    "The results written to S3 (model artifacts, processed data, predictions, captured requests) are not "
    "encrypted with your own KMS key. Set a KMS key for the output.",
    "set {fields} to your KMS key",
)
INTER_CONTAINER = Rule(
    "inter-container-traffic-not-encrypted",
    Severity.MEDIUM,
    "Several instances work together and exchange data (for example gradients) unencrypted over the network. "
    "Turn on inter-container traffic encryption.",
    "set {fields} to true",
)
NO_NETWORK_ISOLATION = Rule(
    "no-vpc-and-no-network-isolation",
    Severity.LOW,
    "The containers run outside your VPC with network isolation off, so they can reach the internet and could "
    "send data anywhere. Run in a VPC (VpcConfig) or turn on network isolation.",
    "run it in your VPC or with network isolation: set {fields}",
)
NO_NETWORK_ISOLATION_PII = Rule(
    NO_NETWORK_ISOLATION.name,
    Severity.HIGH,
    NO_NETWORK_ISOLATION.explanation + " Its input data is tagged as personal data (mlwarden:pii=true).",
    NO_NETWORK_ISOLATION.next_step,
)
NOTEBOOK_INTERNET = Rule(
    "notebook-direct-internet-access",
    Severity.MEDIUM,
    "The notebook instance has direct internet access, so data can leave without passing your network "
    "controls. Create it in a VPC subnet with DirectInternetAccess Disabled.",
    "set DirectInternetAccess to Disabled, with a SubnetId and SecurityGroupIds of your VPC",
)
NOTEBOOK_ROOT = Rule(
    "notebook-root-access",
    Severity.MEDIUM,
    "Users of the notebook instance have root access: they can change its software and security settings. "
    "Set RootAccess Disabled unless root is needed.",
    "set RootAccess to Disabled",
)
DOMAIN_KEY = Rule(
    "studio-domain-not-encrypted-with-kms-key",
    Severity.HIGH,
    "The Studio domain's shared storage (every user's home directory) is not encrypted with your own KMS key. "
    "Create the domain with KmsKeyId.",
    "set KmsKeyId to your KMS key",
)
DOMAIN_PUBLIC = Rule(
    "studio-domain-public-internet",
    Severity.MEDIUM,
    "Studio apps in this domain reach the internet directly (AppNetworkAccessType PublicInternetOnly). "
    "Use VpcOnly so traffic goes through your VPC.",
    "set AppNetworkAccessType to VpcOnly",
)
PLAINTEXT_CREDENTIALS = Rule(
    "credentials-in-plain-text",
    Severity.HIGH,
    "A password, secret, token or access key is passed as a plain environment variable or hyperparameter: "
    "anyone who can describe the resource can read it, and it is stored in logs and job history. Use Secrets "
    "Manager (pass the secret's ARN and read it in the container) and rotate the exposed value.",
    "rotate the value exposed in {fields} now, then store it in Secrets Manager and pass only the secret's ARN",
)
# A name alone is no proof of a value: the recommended pattern passes a secret's name, path or file there.
CREDENTIAL_NAME = Rule(
    "credential-named-parameter",
    Severity.MEDIUM,
    "An environment variable or hyperparameter is named like a password, secret, token or key, but its value "
    "does not look like one (no key shape, not long and random). If it holds the value itself, anyone who can "
    "describe the resource can read it: move it to Secrets Manager. If it names or points to a secret, rename "
    "it (for example DB_SECRET_NAME, TOKEN_PATH) so that it reads as a reference.",
    "check the value of {fields}: pass a secret's ARN, name or file path there, never the secret itself",
)

RULES = (
    VOLUME_KEY,
    OUTPUT_KEY,
    INTER_CONTAINER,
    NO_NETWORK_ISOLATION,
    NOTEBOOK_INTERNET,
    NOTEBOOK_ROOT,
    DOMAIN_KEY,
    DOMAIN_PUBLIC,
    PLAINTEXT_CREDENTIALS,
    CREDENTIAL_NAME,
)


@dataclass(frozen=True)
class Finding:
    """A rule a description breaks, and the fields where."""

    rule: Rule
    # Where the problem is, as field paths of the description (never values).
    fields: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "severity": self.rule.severity.value,
            "fields": list(self.fields),
            "explanation": self.rule.explanation,
        }


# --- reading the description -------------------------------------------------------------------------------


def _get(description: Mapping[str, Any], path: str) -> Any:
    value: Any = description
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _set(value: Any) -> bool:
    """A field counts as set when it holds something other than null, "" or {}."""
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping | list):
        return bool(value)
    return value is not None


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def has_local_nvme(instance_type: Any) -> bool:
    """ml.p4d.24xlarge -> EC2 family p4d: does it carry local NVMe storage (no volume key possible)?"""
    if not isinstance(instance_type, str):
        return False
    parts = instance_type.strip().lower().split(".")
    if len(parts) != 3 or parts[0] != "ml":
        return False
    return parts[1] in NVME_FAMILIES


def _bucket_of(uri: Any) -> str | None:
    if isinstance(uri, str) and uri.startswith("s3://"):
        bucket = uri[5:].split("/", 1)[0]
        return bucket or None
    return None


# --- the shape of each resource type -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """Where one kind of resource keeps the settings the rules read (field paths)."""

    volume_key: str | None = None
    instance_type: str | None = None
    instance_count: str | None = None
    output_key: str | None = None
    inter_container: str | None = None
    vpc: str | None = None
    isolation: str | None = None
    environments: tuple[str, ...] = ()
    hyperparameters: str | None = None


_SHAPES: dict[Kind, _Shape] = {
    Kind.TRAINING_JOB: _Shape(
        volume_key="ResourceConfig.VolumeKmsKeyId",
        instance_type="ResourceConfig.InstanceType",
        instance_count="ResourceConfig.InstanceCount",
        output_key="OutputDataConfig.KmsKeyId",
        inter_container="EnableInterContainerTrafficEncryption",
        vpc="VpcConfig",
        isolation="EnableNetworkIsolation",
        environments=("Environment",),
        hyperparameters="HyperParameters",
    ),
    Kind.PROCESSING_JOB: _Shape(
        volume_key="ProcessingResources.ClusterConfig.VolumeKmsKeyId",
        instance_type="ProcessingResources.ClusterConfig.InstanceType",
        instance_count="ProcessingResources.ClusterConfig.InstanceCount",
        output_key="ProcessingOutputConfig.KmsKeyId",
        inter_container="NetworkConfig.EnableInterContainerTrafficEncryption",
        vpc="NetworkConfig.VpcConfig",
        isolation="NetworkConfig.EnableNetworkIsolation",
        environments=("Environment",),
    ),
    Kind.TRANSFORM_JOB: _Shape(
        volume_key="TransformResources.VolumeKmsKeyId",
        instance_type="TransformResources.InstanceType",
        output_key="TransformOutput.KmsKeyId",
        environments=("Environment",),
    ),
    Kind.TUNING_JOB: _Shape(
        volume_key="TrainingJobDefinition.ResourceConfig.VolumeKmsKeyId",
        instance_type="TrainingJobDefinition.ResourceConfig.InstanceType",
        instance_count="TrainingJobDefinition.ResourceConfig.InstanceCount",
        output_key="TrainingJobDefinition.OutputDataConfig.KmsKeyId",
        inter_container="TrainingJobDefinition.EnableInterContainerTrafficEncryption",
        vpc="TrainingJobDefinition.VpcConfig",
        isolation="TrainingJobDefinition.EnableNetworkIsolation",
        environments=("TrainingJobDefinition.Environment",),
        hyperparameters="TrainingJobDefinition.StaticHyperParameters",
    ),
    # DescribeAutoMLJob nests SecurityConfig in AutoMLJobConfig; DescribeAutoMLJobV2 has it at the top level.
    Kind.AUTOML_JOB: _Shape(output_key="OutputDataConfig.KmsKeyId"),
    Kind.NOTEBOOK_INSTANCE: _Shape(volume_key="KmsKeyId"),
    Kind.ENDPOINT_CONFIG: _Shape(volume_key="KmsKeyId"),
    Kind.MODEL: _Shape(
        vpc="VpcConfig", isolation="EnableNetworkIsolation", environments=("PrimaryContainer.Environment",)
    ),
    Kind.DOMAIN: _Shape(),
}


def _automl_security(description: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if isinstance(description.get("SecurityConfig"), Mapping):
        return "SecurityConfig", description["SecurityConfig"]
    return "AutoMLJobConfig.SecurityConfig", _mapping(_get(description, "AutoMLJobConfig.SecurityConfig"))


def input_buckets(kind: Kind, description: Mapping[str, Any]) -> list[str]:
    """The S3 buckets a resource reads its data from (to look up their PII tag)."""
    uris: list[Any] = []
    channels = _list(description.get("InputDataConfig")) + _list(description.get("AutoMLJobInputDataConfig"))
    if kind is Kind.TUNING_JOB:
        channels = _list(_get(description, "TrainingJobDefinition.InputDataConfig"))
        for definition in _list(description.get("TrainingJobDefinitions")):
            channels += _list(_mapping(definition).get("InputDataConfig"))
    uris += [_get(_mapping(channel), "DataSource.S3DataSource.S3Uri") for channel in channels]
    uris += [_get(_mapping(i), "S3Input.S3Uri") for i in _list(description.get("ProcessingInputs"))]
    uris.append(_get(description, "TransformInput.DataSource.S3DataSource.S3Uri"))
    containers = [description.get("PrimaryContainer"), *_list(description.get("Containers"))]
    uris += [_mapping(container).get("ModelDataUrl") for container in containers]
    return sorted({bucket for bucket in (_bucket_of(uri) for uri in uris) if bucket})


# --- credentials -------------------------------------------------------------------------------------------
#
# Stopping a job needs evidence of a secret VALUE: a key shape (access key ids, private keys, known token
# prefixes), or a long random-looking string under a credential's name. A credential's name with any other
# value is MEDIUM; a reference (a secret's ARN, name, path or file) is the recommended pattern, not a finding.

_NAME_WORDS = frozenset({"secret", "password", "passwd", "token", "credential", "credentials", "apikey"})
_NAME_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")})
# A last word that makes the name a reference to a secret: DB_SECRET_NAME, TOKEN_PATH, PASSWORD_FILE.
_REFERENCE_WORDS = frozenset({"name", "arn", "path", "file", "dir", "ref", "uri", "url", "location", "endpoint"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Shapes that are a secret wherever they appear, whatever the name.
_SECRET_SHAPES = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"  # AWS access key ids (long-term, temporary)
    r"|(?<![A-Za-z0-9])(?:"
    r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|sk-[A-Za-z0-9_-]{20,}|sk_live_[A-Za-z0-9]{20,}"  # OpenAI-style and Stripe secret keys
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face tokens
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab personal access tokens
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r")|-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----"
)
# A value that points at a secret (a secret store, a file, a URL) is a reference, not a secret.
_REFERENCE_VALUE = re.compile(r"^(arn:aws[a-z-]*:|\{\{resolve:|/|\./|~/|[a-z][a-z0-9+.-]*://)")
_HEX_TOKEN = re.compile(r"^(?=(?:[^0-9a-fA-F]*[0-9a-fA-F]){32})[0-9a-fA-F-]+$")
_ALPHABET_TOKEN = re.compile(r"^[A-Za-z0-9+/=_.-]{20,}$")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", name).lower()) if w]


def credential_name(name: str) -> bool:
    """SECRET, DB_PASSWORD, hfToken, API_KEY, AWS_SECRET_ACCESS_KEY; not max_new_tokens, tokenizer, DB_SECRET_NAME."""
    words = _words(name)
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    if any(word in _NAME_WORDS for word in words):
        return True
    return any(pair in _NAME_PAIRS for pair in itertools.pairwise(words))


def credential_value(value: str) -> bool:
    """Does the value carry a secret's own shape (an access key id, a known token prefix, a private key)?"""
    return bool(_SECRET_SHAPES.search(value))


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def random_looking(value: str) -> bool:
    """A long string that reads as generated, not written: 32+ hex digits, or mixed-case letters and digits."""
    text = value.strip()
    if len(text) < 20 or _REFERENCE_VALUE.match(text):
        return False
    if _HEX_TOKEN.match(text):
        return True
    if not _ALPHABET_TOKEN.match(text):
        return False
    classes = sum(bool(re.search(pattern, text)) for pattern in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes == 3 and _entropy(text) >= 4.0


def credential_rule(name: str, value: str) -> Rule | None:
    """PLAINTEXT_CREDENTIALS on evidence of a value, CREDENTIAL_NAME for a name alone, None for neither."""
    if credential_value(value):
        return PLAINTEXT_CREDENTIALS
    if not credential_name(name) or _REFERENCE_VALUE.match(value.strip()):
        return None
    return PLAINTEXT_CREDENTIALS if random_looking(value) else CREDENTIAL_NAME


def _credential_fields(path: str, values: Any) -> Iterator[tuple[Rule, str]]:
    for name, value in _mapping(values).items():
        if not isinstance(name, str) or not isinstance(value, str) or not value.strip():
            continue
        rule = credential_rule(name, value)
        if rule is not None:
            yield rule, f"{path}.{name}"


# --- the rules ---------------------------------------------------------------------------------------------


def evaluate(kind: Kind, description: Mapping[str, Any], *, pii: bool = False) -> list[Finding]:
    """Every rule the described resource fails, in RULES order. `pii`: an input bucket is tagged PII."""
    shape = _SHAPES[kind]
    return [
        *_volume(kind, shape, description),
        *_output(kind, shape, description),
        *_inter_container(kind, shape, description),
        *_network(kind, shape, description, pii),
        *_notebook(kind, description),
        *_domain(kind, description),
        *_credentials(kind, shape, description),
    ]


def _volume(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    if kind is Kind.AUTOML_JOB:
        prefix, security = _automl_security(description)
        return [] if _set(security.get("VolumeKmsKeyId")) else [Finding(VOLUME_KEY, (f"{prefix}.VolumeKmsKeyId",))]
    if kind is Kind.ENDPOINT_CONFIG:
        return _endpoint_volume(description)
    if shape.volume_key is None or _set(_get(description, shape.volume_key)):
        return []
    if kind is Kind.TRAINING_JOB and _list(_get(description, "ResourceConfig.InstanceGroups")):
        groups = [_mapping(g) for g in _list(_get(description, "ResourceConfig.InstanceGroups"))]
        if all(has_local_nvme(g.get("InstanceType")) for g in groups):
            return []
    elif shape.instance_type and has_local_nvme(_get(description, shape.instance_type)):
        return []
    return [Finding(VOLUME_KEY, (shape.volume_key,))]


def _endpoint_volume(description: Mapping[str, Any]) -> list[Finding]:
    if _set(description.get("KmsKeyId")):
        return []
    variants = [_mapping(v) for v in _list(description.get("ProductionVariants"))]
    # Serverless variants have no instance type and take no key; local NVMe instances take none either.
    needs_key = [t for t in (v.get("InstanceType") for v in variants) if isinstance(t, str) and not has_local_nvme(t)]
    return [Finding(VOLUME_KEY, ("KmsKeyId",))] if needs_key else []


def _output(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    if kind is Kind.ENDPOINT_CONFIG:
        missing = []
        capture = _mapping(description.get("DataCaptureConfig"))
        if capture and capture.get("EnableCapture", True) is not False and not _set(capture.get("KmsKeyId")):
            missing.append("DataCaptureConfig.KmsKeyId")
        async_output = _mapping(_get(description, "AsyncInferenceConfig.OutputConfig"))
        if async_output and not _set(async_output.get("KmsKeyId")):
            missing.append("AsyncInferenceConfig.OutputConfig.KmsKeyId")
        return [Finding(OUTPUT_KEY, tuple(missing))] if missing else []
    if shape.output_key is None or _set(_get(description, shape.output_key)):
        return []
    if kind is Kind.PROCESSING_JOB and not _list(_get(description, "ProcessingOutputConfig.Outputs")):
        return []  # a job that writes nothing has no output to encrypt
    return [Finding(OUTPUT_KEY, (shape.output_key,))]


def _instances(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> int:
    """How many instances take part at once (one means inter-container encryption has no effect)."""
    if kind is Kind.TRAINING_JOB:
        groups = _list(_get(description, "ResourceConfig.InstanceGroups"))
        if groups:
            return sum(_count(_mapping(g).get("InstanceCount")) for g in groups)
    count = _count(_get(description, shape.instance_count)) if shape.instance_count else 0
    if kind is Kind.TUNING_JOB:
        parallel = _count(_get(description, "HyperParameterTuningJobConfig.ResourceLimits.MaxParallelTrainingJobs"))
        return max(count, 1) * max(parallel, 1)
    return count


def _inter_container(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    if shape.inter_container is None or _get(description, shape.inter_container) is True:
        return []
    if _instances(kind, shape, description) <= 1:
        return []
    return [Finding(INTER_CONTAINER, (shape.inter_container,))]


def _network(kind: Kind, shape: _Shape, description: Mapping[str, Any], pii: bool) -> list[Finding]:
    rule = NO_NETWORK_ISOLATION_PII if pii else NO_NETWORK_ISOLATION
    if kind is Kind.AUTOML_JOB:
        prefix, security = _automl_security(description)
        return [] if _set(security.get("VpcConfig")) else [Finding(rule, (f"{prefix}.VpcConfig",))]
    if shape.vpc is None or shape.isolation is None:
        return []
    if _set(_get(description, shape.vpc)) or _get(description, shape.isolation) is True:
        return []
    return [Finding(rule, (shape.vpc, shape.isolation))]


def _notebook(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    if kind is not Kind.NOTEBOOK_INSTANCE:
        return []
    findings = []
    # Both default to Enabled when the create call leaves them out.
    if description.get("DirectInternetAccess", "Enabled") != "Disabled":
        findings.append(Finding(NOTEBOOK_INTERNET, ("DirectInternetAccess",)))
    if description.get("RootAccess", "Enabled") != "Disabled":
        findings.append(Finding(NOTEBOOK_ROOT, ("RootAccess",)))
    return findings


def _domain(kind: Kind, description: Mapping[str, Any]) -> list[Finding]:
    if kind is not Kind.DOMAIN:
        return []
    findings = []
    if not _set(description.get("KmsKeyId")):
        findings.append(Finding(DOMAIN_KEY, ("KmsKeyId",)))
    if description.get("AppNetworkAccessType", "PublicInternetOnly") != "VpcOnly":
        findings.append(Finding(DOMAIN_PUBLIC, ("AppNetworkAccessType",)))
    return findings


def _credentials(kind: Kind, shape: _Shape, description: Mapping[str, Any]) -> list[Finding]:
    found: list[tuple[Rule, str]] = []
    for path in shape.environments:
        found += _credential_fields(path, _get(description, path))
    if shape.hyperparameters:
        found += _credential_fields(shape.hyperparameters, _get(description, shape.hyperparameters))
    if kind is Kind.MODEL:
        for index, container in enumerate(_list(description.get("Containers"))):
            found += _credential_fields(f"Containers[{index}].Environment", _mapping(container).get("Environment"))
    if kind is Kind.TUNING_JOB:
        for index, definition in enumerate(_list(description.get("TrainingJobDefinitions"))):
            found += _credential_fields(
                f"TrainingJobDefinitions[{index}].StaticHyperParameters",
                _mapping(definition).get("StaticHyperParameters"),
            )
    findings = []
    for rule in (PLAINTEXT_CREDENTIALS, CREDENTIAL_NAME):
        fields = tuple(field for found_rule, field in found if found_rule is rule)
        if fields:
            findings.append(Finding(rule, fields))
    return findings


def worst(findings: list[Finding]) -> Severity:
    order = [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]
    for severity in order:
        if any(f.rule.severity is severity for f in findings):
            return severity
    return Severity.INFORMATIONAL
