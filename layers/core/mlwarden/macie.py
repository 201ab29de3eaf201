"""Macie sensitive-data findings: record on the bucket that it holds PII, escalate when it is public.

Trigger: Macie's `SensitiveData:*` findings. The finding names the bucket (and
object) and lists detection types with counts; Macie re-publishes a finding each
time it recurs, so the same bucket arrives many times. The bucket's tags are
re-read right before writing and merged: only ML Warden's `mlwarden:pii*` keys are
ours, every other tag is kept. The severity tag is never lowered, the detection
types only grow, and writing what is already there is not a change.

Tags are classification, not remediation, so an exempt bucket is still tagged. If
the bucket's public-access block is not fully on when the finding arrives, the
outcome is CRITICAL and the bucket is locked through block_public_s3's own code
path (`s3.block_bucket`), which also honours exemption and dry-run.

Only detection types and counts are read from the finding: never its occurrences,
and nothing from the object's content.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, s3
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import Event, MacieFinding, Unrecognised, partition_of
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored
from mlwarden.pii import PII_TAG  # block_public_s3 raises public+PII to CRITICAL on this key
from mlwarden.settings import RemediationMode, Settings, SettingsError

CHECK = "tag_pii_bucket"
SENSITIVE_DATA_PREFIX = "SensitiveData:"

# Tag keys, in the priority order they are written when the bucket's 50-tag limit does not leave room for all.
SEVERITY_TAG = "mlwarden:pii-severity"
TYPES_TAG = "mlwarden:pii-types"
LAST_FINDING_TAG = "mlwarden:pii-last-finding"
LAST_SEEN_TAG = "mlwarden:pii-last-seen"
BUCKET_TAG_KEYS = (PII_TAG, SEVERITY_TAG, TYPES_TAG, LAST_FINDING_TAG, LAST_SEEN_TAG)
OBJECT_TAG_KEYS = (PII_TAG, SEVERITY_TAG, TYPES_TAG)
BUCKET_TAG_LIMIT = 50
OBJECT_TAG_LIMIT = 10
TAG_VALUE_LIMIT = 256

MACIE_SEVERITIES = ("Low", "Medium", "High")  # ascending
_OUTCOME_SEVERITY = {"Low": Severity.LOW, "Medium": Severity.MEDIUM, "High": Severity.HIGH}

# The IAM actions this module calls (tests/template checks template.yaml grants exactly these).
TAG_PERMISSIONS = frozenset({"s3:GetBucketTagging", "s3:PutBucketTagging"})
# block_public_s3's public check, reused for the escalation (the account block only grades severity there).
PUBLIC_CHECK_PERMISSIONS = frozenset(
    {"s3:GetBucketPublicAccessBlock", "s3:GetBucketAcl", "s3:GetBucketPolicyStatus", "s3:GetAccountPublicAccessBlock"}
)
LOCK_PERMISSIONS = frozenset({"s3:PutBucketPublicAccessBlock"})  # only when LOCK_PUBLIC_PII_BUCKETS=true
OBJECT_PERMISSIONS = frozenset({"s3:GetObjectTagging", "s3:PutObjectTagging"})  # only when TAG_PII_OBJECTS=true
PERMISSIONS = TAG_PERMISSIONS | PUBLIC_CHECK_PERMISSIONS | LOCK_PERMISSIONS | OBJECT_PERMISSIONS

# S3 tag values: letters, digits, spaces and + - = . _ : / @. Types are space-separated, so a type has no space.
_TYPE_UNSAFE = re.compile(r"[^A-Za-z0-9+\-=._:/@]+")
_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9 +\-=._:/@]+")
_TYPE_LIMIT = 64
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


# --- options ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiOptions:
    """This check's own switches (template parameters TagPiiObjects and LockPublicPiiBuckets)."""

    tag_objects: bool = False
    lock_public_buckets: bool = True


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false, got {env[name]!r}")
    return raw == "true"


def load_options(environ: Mapping[str, str] | None = None) -> PiiOptions:
    env = os.environ if environ is None else environ
    return PiiOptions(
        tag_objects=_flag(env, "TAG_PII_OBJECTS", default=False),
        lock_public_buckets=_flag(env, "LOCK_PUBLIC_PII_BUCKETS", default=True),
    )


# --- reading the finding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiFinding:
    """The parts of a Macie sensitive-data finding that tagging needs."""

    finding_id: str
    finding_type: str
    bucket: str
    object_key: str | None
    severity: str | None  # Low | Medium | High, or None when the finding has none we know
    seen_at: str | None  # the finding's updatedAt (else createdAt, else the event's time), ISO 8601 UTC
    # detection type -> count; managed identifiers by type, custom identifiers as "custom:<name>"
    detections: dict[str, int] = field(default_factory=dict)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self.detections)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def detection_type(name: str, custom: bool = False) -> str | None:
    """A detection type as it goes into a tag value: allowed characters only, no spaces, bounded length.

    Deterministic, so the same type always gives the same token. Custom identifiers are prefixed
    "custom:" so that a custom identifier cannot pass for a managed one.
    """
    token = _TYPE_UNSAFE.sub("_", name.strip()).strip("_").lstrip("+")[:_TYPE_LIMIT]
    if custom:
        return f"custom:{token or 'unnamed'}"
    return token or None


def _detections(detail: Mapping[str, Any]) -> dict[str, int]:
    result = _mapping(_mapping(detail.get("classificationDetails")).get("result"))
    found: dict[str, int] = {}

    def add(name: Any, count: Any, custom: bool) -> None:
        if isinstance(name, str) and name.strip():
            token = detection_type(name, custom=custom)
            if token:
                found[token] = found.get(token, 0) + _count(count)

    for category in _list(result.get("sensitiveData")):
        for detection in _list(_mapping(category).get("detections")):
            add(_mapping(detection).get("type"), _mapping(detection).get("count"), custom=False)
    for detection in _list(_mapping(result.get("customDataIdentifiers")).get("detections")):
        add(_mapping(detection).get("name"), _mapping(detection).get("count"), custom=True)
    return found


def _severity(detail: Mapping[str, Any]) -> str | None:
    severity = _mapping(detail.get("severity"))
    description = severity.get("description")
    if isinstance(description, str) and description.strip().capitalize() in MACIE_SEVERITIES:
        return description.strip().capitalize()
    score = severity.get("score")
    if isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 3:
        return MACIE_SEVERITIES[score - 1]
    return None


def timestamp(value: Any) -> str | None:
    """An ISO 8601 time as YYYY-MM-DDTHH:MM:SSZ (UTC, whole seconds), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finding_of(event: Event) -> PiiFinding | str:
    """The sensitive-data finding an event carries, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if not isinstance(event, MacieFinding):
        return "not a Macie finding"
    if not event.finding_type.startswith(SENSITIVE_DATA_PREFIX):
        return f"Macie finding {event.finding_type} is not a sensitive-data finding"
    if event.bucket is None:
        return f"Macie finding {event.finding_type} names no bucket"
    if not _BUCKET_NAME.match(event.bucket):
        return f"Macie finding {event.finding_type} names an invalid bucket {event.bucket[:80]!r}"
    detail = event.raw
    seen_at = timestamp(detail.get("updatedAt")) or timestamp(detail.get("createdAt"))
    return PiiFinding(
        finding_id=event.finding_id,
        finding_type=event.finding_type,
        bucket=event.bucket,
        object_key=event.object_key,
        severity=_severity(detail),
        seen_at=seen_at or timestamp(event.envelope.time),
        detections=_detections(detail),
    )


# --- planning the tags (pure) -------------------------------------------------------------------------------


def tag_value(text: str) -> str:
    """Any text as an S3 tag value: disallowed characters become "_", at most 256 characters."""
    return _VALUE_UNSAFE.sub("_", text)[:TAG_VALUE_LIMIT]


def encode_types(types: Iterable[str]) -> tuple[str, int]:
    """Sorted, space-separated types within 256 characters; returns (value, number of types left out).

    When they do not fit, the first types in sorted order are kept and "+N" says how many were left out.
    """
    items = sorted(set(types))
    value = " ".join(items)
    if len(value) <= TAG_VALUE_LIMIT:
        return value, 0
    for kept in range(len(items) - 1, -1, -1):
        value = " ".join([*items[:kept], f"+{len(items) - kept}"])
        if len(value) <= TAG_VALUE_LIMIT:
            return value, len(items) - kept
    return f"+{len(items)}", len(items)  # unreachable: "+N" alone always fits


def decode_types(value: str | None) -> set[str]:
    """The types in a pii-types tag value (the "+N" marker and anything not a valid token are dropped)."""
    if not value:
        return set()
    return {token for token in value.split() if not token.startswith("+") and not _TYPE_UNSAFE.search(token)}


def higher_severity(current: str | None, new: str | None) -> str | None:
    known = [s for s in (current, new) if s in MACIE_SEVERITIES]
    return max(known, key=MACIE_SEVERITIES.index) if known else None


@dataclass(frozen=True)
class TagPlan:
    """The bucket tag set to write: merged with what is there, within S3's limits."""

    tags: dict[str, str]  # the whole set to write: foreign tags and ours
    own: dict[str, str]  # our keys in that set
    previous_own: dict[str, str | None]  # our keys as they were (None: absent)
    dropped_keys: tuple[str, ...]  # our keys that the tag limit left no room for
    types_left_out: int  # detection types the 256-character value could not hold
    new_types: tuple[str, ...]  # types this finding adds
    classification_changed: bool  # pii, severity or types differ from what the tags said
    changed: bool  # the tag set differs at all (including the last-finding bookkeeping)

    @property
    def truncated(self) -> bool:
        return bool(self.dropped_keys) or self.types_left_out > 0


def _is_newer(seen_at: str | None, recorded: str | None) -> bool:
    """Is a finding seen at `seen_at` at least as recent as the one the tags record?"""
    recorded_at = timestamp(recorded)
    return recorded_at is None or (seen_at is not None and seen_at >= recorded_at)


def plan_tags(current: Mapping[str, str], finding: PiiFinding, keys: tuple[str, ...], limit: int) -> TagPlan:
    """Merge the finding into a resource's tags: foreign tags kept, ours merged, within `limit` tags."""
    foreign = {key: value for key, value in current.items() if key not in keys}
    previous_own = {key: current.get(key) for key in keys}
    known_types = decode_types(current.get(TYPES_TAG))
    types_value, left_out = encode_types(known_types | finding.types)
    wanted: dict[str, str | None] = {
        PII_TAG: "true",
        SEVERITY_TAG: higher_severity(current.get(SEVERITY_TAG), finding.severity),
        TYPES_TAG: types_value or None,
    }
    if _is_newer(finding.seen_at, current.get(LAST_SEEN_TAG)):
        wanted[LAST_FINDING_TAG] = tag_value(finding.finding_id)
        wanted[LAST_SEEN_TAG] = finding.seen_at
    else:  # an older finding arrived late: the latest one stays recorded
        wanted[LAST_FINDING_TAG] = current.get(LAST_FINDING_TAG)
        wanted[LAST_SEEN_TAG] = current.get(LAST_SEEN_TAG)

    room = max(0, limit - len(foreign))
    own: dict[str, str] = {}
    dropped: list[str] = []
    for key in keys:
        value = wanted.get(key)
        if value is None:
            continue
        if len(own) < room:
            own[key] = value
        else:
            dropped.append(key)
    tags = {**foreign, **own}
    classification = (PII_TAG, SEVERITY_TAG, TYPES_TAG)
    return TagPlan(
        tags=tags,
        own=own,
        previous_own=previous_own,
        dropped_keys=tuple(dropped),
        types_left_out=left_out if TYPES_TAG in own else 0,
        new_types=tuple(sorted(finding.types - known_types)),
        classification_changed=any(own.get(k) != current.get(k) for k in classification if k in keys),
        changed=tags != dict(current),
    )


# --- reading and writing tags -----------------------------------------------------------------------------


class _BucketGone(Exception):
    """The bucket no longer exists."""


def _tag_dict(tag_set: Any) -> dict[str, str]:
    return {str(tag["Key"]): str(tag["Value"]) for tag in _list(tag_set)}


def read_bucket_tags(bucket: str) -> dict[str, str]:
    """The bucket's tags ({} when it has none). Unreadable tags raise: a merge needs all of them."""
    try:
        response = clients.client("s3").get_bucket_tagging(Bucket=bucket)
    except ClientError as err:
        code = error_code(err)
        if code == "NoSuchTagSet":
            return {}
        if code == "NoSuchBucket":
            raise _BucketGone from err
        raise AwsCallFailed.from_error("s3:GetBucketTagging", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("s3:GetBucketTagging", err) from err
    return _tag_dict(response.get("TagSet"))


def _tagging(tags: Mapping[str, str]) -> dict[str, Any]:
    return {"TagSet": [{"Key": key, "Value": value} for key, value in tags.items()]}


def write_bucket_tags(bucket: str, tags: Mapping[str, str]) -> dict[str, str]:
    """Replace the bucket's tag set and read it back."""
    try:
        clients.client("s3").put_bucket_tagging(Bucket=bucket, Tagging=_tagging(tags))
    except ClientError as err:
        if error_code(err) == "NoSuchBucket":  # deleted between our read and our write
            raise _BucketGone from err
        raise AwsCallFailed.from_error("s3:PutBucketTagging", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("s3:PutBucketTagging", err) from err
    return read_bucket_tags(bucket)


def _read_object_tags(bucket: str, key: str) -> dict[str, str] | None:
    """The object's tags, or None when the object no longer exists."""
    try:
        response = clients.client("s3").get_object_tagging(Bucket=bucket, Key=key)
    except ClientError as err:
        if error_code(err) in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise AwsCallFailed.from_error("s3:GetObjectTagging", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("s3:GetObjectTagging", err) from err
    return _tag_dict(response.get("TagSet"))


def _write_object_tags(bucket: str, key: str, tags: Mapping[str, str]) -> dict[str, str] | None:
    try:
        clients.client("s3").put_object_tagging(Bucket=bucket, Key=key, Tagging=_tagging(tags))
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("s3:PutObjectTagging", err) from err
    return _read_object_tags(bucket, key)


def _undo_tags(bucket: str, previous: Mapping[str, str]) -> str:
    if not previous:
        return f"aws s3api delete-bucket-tagging --bucket {shlex.quote(bucket)}"
    tagging = json.dumps(_tagging(previous), separators=(",", ":"))
    return f"aws s3api put-bucket-tagging --bucket {shlex.quote(bucket)} --tagging {shlex.quote(tagging)}"


# --- deciding ---------------------------------------------------------------------------------------------


class _TagsNotVerified(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def tag_pii_bucket(event: Event, settings: Settings, options: PiiOptions | None = None) -> Outcome:
    finding = finding_of(event)
    if isinstance(finding, str):
        return ignored(CHECK, event, finding)
    trigger = Trigger.of(event)
    resource = s3.BucketTarget(finding.bucket, partition_of(trigger.region)).arn
    try:
        return _classify(finding, trigger, resource, settings, options or PiiOptions())
    except _BucketGone:
        return ignored(CHECK, event, "the bucket no longer exists")
    except AwsCallFailed as err:
        return call_failed(
            CHECK,
            trigger,
            resource,
            "could not read the bucket's tags",
            err,
            details={"finding": _finding_details(finding)},
        )


def _finding_details(finding: PiiFinding) -> dict[str, Any]:
    # Types and counts only: never occurrences, never the object key (keys can carry names).
    return {
        "finding_id": finding.finding_id,
        "finding_type": finding.finding_type,
        "macie_severity": finding.severity,
        "seen_at": finding.seen_at,
        "detections": dict(sorted(finding.detections.items())),
        "detection_count": sum(finding.detections.values()),
        "names_an_object": finding.object_key is not None,
    }


def _tag_summary(plan: TagPlan) -> str:
    parts = [f"severity {plan.own.get(SEVERITY_TAG, 'unknown')}"]
    types = decode_types(plan.own.get(TYPES_TAG))
    parts.append(f"{len(types)} detection type(s), {len(plan.new_types)} new")
    if plan.types_left_out:
        parts.append(f"{plan.types_left_out} type(s) left out of {TYPES_TAG} (256-character limit)")
    if plan.dropped_keys:
        parts.append(
            f"tag set TRUNCATED: the bucket's other tags leave no room under S3's {BUCKET_TAG_LIMIT}-tag limit "
            f"for {', '.join(plan.dropped_keys)}"
        )
    return "; ".join(parts)


@dataclass
class _Progress:
    """What one check has done so far: the basis of its outcome, failed or not."""

    finding: PiiFinding
    common: dict[str, Any]
    actions: list[str] = field(default_factory=list)
    undo: list[str] = field(default_factory=list)

    @property
    def undo_command(self) -> str | None:
        return " ; ".join(self.undo) or None

    def failed(self, what: str, err: AwsCallFailed | None = None) -> Outcome:
        details = dict(self.common["details"])
        if err is not None:
            details["failed_action"] = err.action
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=_OUTCOME_SEVERITY.get(self.finding.severity or "", Severity.HIGH),
            reason=what,
            actions=tuple(self.actions),
            undo=self.undo_command,
            error_code=err.code if err is not None else "VerificationFailed",
            cause=err,
            **{**self.common, "details": details},
        )


def _classify(finding: PiiFinding, trigger: Trigger, resource: str, settings: Settings, options: PiiOptions) -> Outcome:
    current = read_bucket_tags(finding.bucket)
    plan = plan_tags(current, finding, BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT)
    details: dict[str, Any] = {
        "finding": _finding_details(finding),
        "tags": {
            "pii": plan.own,
            "dropped_keys": list(plan.dropped_keys),
            "types_left_out": plan.types_left_out,
            "foreign_tags_kept": len(plan.tags) - len(plan.own),
        },
    }
    done = _Progress(finding, {"check": CHECK, "trigger": trigger, "resource": resource, "details": details})

    if plan.changed and settings.enforce:
        try:
            after = write_bucket_tags(finding.bucket, plan.tags)
        except AwsCallFailed as err:
            return done.failed(f"could not tag the bucket: {err.explanation}", err)
        done.actions.append("s3:PutBucketTagging")
        done.undo.append(_undo_tags(finding.bucket, current))
        if after != plan.tags:
            return done.failed("the bucket's tags were written but read back different (a concurrent writer?)")

    if options.tag_objects and finding.object_key is not None:
        try:
            details["object"] = _tag_object(finding, settings, done.actions)
        except AwsCallFailed as err:
            return done.failed(f"could not tag the object: {err.explanation}", err)
        except _TagsNotVerified as err:
            return done.failed(err.what)

    # The public check and the lock are block_public_s3's (one implementation); with locking off it only reads.
    lock_settings = (
        settings if options.lock_public_buckets else replace(settings, remediation_mode=RemediationMode.DRY_RUN)
    )
    try:
        public = s3.block_bucket(finding.bucket, trigger, lock_settings)
    except AwsCallFailed as err:
        return done.failed(f"could not check public access: {err.explanation}", err)
    if public is None:
        return done.failed("the bucket disappeared during the check")
    return _decide(plan, public, settings, options, done)


def _tag_object(finding: PiiFinding, settings: Settings, actions: list[str]) -> dict[str, Any]:
    key = finding.object_key or ""
    current = _read_object_tags(finding.bucket, key)
    if current is None:
        return {"tagged": False, "reason": "the object no longer exists"}
    plan = plan_tags(current, finding, OBJECT_TAG_KEYS, OBJECT_TAG_LIMIT)
    result: dict[str, Any] = {"tags": plan.own, "dropped_keys": list(plan.dropped_keys), "changed": plan.changed}
    if plan.changed and settings.enforce:
        after = _write_object_tags(finding.bucket, key, plan.tags)
        actions.append("s3:PutObjectTagging")
        if after != plan.tags:
            raise _TagsNotVerified("the object's tags were written but read back different")
    return result


def _decide(plan: TagPlan, public: Outcome, settings: Settings, options: PiiOptions, done: _Progress) -> Outcome:
    tags_what = _tag_summary(plan)
    previous = {"Tags": plan.previous_own}
    new = {"Tags": plan.own}
    if public.outcome is OutcomeKind.COMPLIANT:  # block_public_s3: all four block settings are on
        # The bucket's severity (never lowered), not only this finding's.
        severity = _OUTCOME_SEVERITY.get(plan.own.get(SEVERITY_TAG) or done.finding.severity or "", Severity.MEDIUM)
        if not plan.changed and PII_TAG in plan.dropped_keys:
            return Outcome(
                outcome=OutcomeKind.FLAGGED,
                severity=severity,
                reason=f"PII found by Macie, but the bucket cannot be tagged ({tags_what})",
                **done.common,
            )
        if not plan.changed:
            return Outcome(
                outcome=OutcomeKind.COMPLIANT,
                severity=Severity.INFORMATIONAL,
                reason=f"the bucket's PII tags already record this finding ({tags_what})",
                **done.common,
            )
        if not plan.classification_changed and not plan.truncated:
            # A recurring finding only moves the last-finding bookkeeping: recorded, not worth an alert.
            refreshed = "updated" if settings.enforce else "dry run: would update"
            return Outcome(
                outcome=OutcomeKind.COMPLIANT,
                severity=Severity.INFORMATIONAL,
                reason=f"already classified; {refreshed} the last-finding tags ({tags_what})",
                actions=tuple(done.actions),
                previous_state=previous,
                new_state=new,
                undo=done.undo_command,
                **done.common,
            )
        if not settings.enforce:
            return Outcome(
                outcome=OutcomeKind.WOULD_REMEDIATE,
                severity=severity,
                reason=f"PII found by Macie; dry run: would tag the bucket ({tags_what})",
                previous_state=previous,
                new_state=new,
                **done.common,
            )
        return Outcome(
            outcome=OutcomeKind.REMEDIATED,
            severity=severity,
            reason=f"PII found by Macie; bucket tagged ({tags_what})",
            actions=tuple(done.actions),
            previous_state=previous,
            new_state=new,
            undo=done.undo_command,
            **done.common,
        )

    # The bucket's block is not fully on: PII in a public bucket.
    details = {**done.common["details"], "public_access": {"outcome": public.outcome.value, **public.details}}
    kind = public.outcome
    if kind is OutcomeKind.WOULD_REMEDIATE and settings.enforce:
        kind = OutcomeKind.FLAGGED  # enforce, but locking is off: block_public_s3 only read
    if kind in (OutcomeKind.EXEMPT, OutcomeKind.FLAGGED) and settings.enforce and not plan.changed:
        # The tags already record this very finding, so its alert went out when they were written.
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=(
                "PII in a public bucket, left unlocked "
                f"({'exempt' if kind is OutcomeKind.EXEMPT else 'locking is off'}); "
                f"unchanged since this finding was tagged and alerted ({tags_what})"
            ),
            **{**done.common, "details": details},
        )
    exposure = "; ".join(public.details.get("public_via") or []) or "no public grant yet"
    settings_off = ", ".join(public.details.get("settings_off") or [])
    lock = {
        OutcomeKind.REMEDIATED: "public-access block turned on and verified",
        OutcomeKind.WOULD_REMEDIATE: "dry run: would turn the public-access block on"
        if options.lock_public_buckets
        else "dry run; not locked: locking is off (LOCK_PUBLIC_PII_BUCKETS=false)",
        OutcomeKind.FLAGGED: "not locked: locking is off (LOCK_PUBLIC_PII_BUCKETS=false)",
        OutcomeKind.EXEMPT: f"bucket is exempt, not locked ({public.details.get('exemption')})",
    }.get(kind, public.reason)
    if not settings.enforce:
        tags_done = "would tag the bucket"
    else:
        tags_done = "bucket tagged" if "s3:PutBucketTagging" in done.actions else "tags already set"
    return Outcome(
        outcome=kind,
        severity=Severity.CRITICAL,
        reason=(
            f"PII in a public bucket ({exposure}; block settings off: {settings_off}); {lock}; "
            f"{tags_done} ({tags_what})"
        ),
        actions=(*done.actions, *public.actions),
        previous_state={**previous, **(public.previous_state or {})},
        new_state={**new, **(public.new_state or {})},
        undo=" ; ".join([*done.undo, *([public.undo] if public.undo else [])]) or None,
        exempt_hint=public.exempt_hint,
        error_code=public.error_code,
        cause=public.cause,
        **{**done.common, "details": details},
    )
