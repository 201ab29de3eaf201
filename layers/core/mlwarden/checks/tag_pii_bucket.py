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
import random
import re
import shlex
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, pii_memory
from mlwarden.checks import CheckUnit
from mlwarden.checks import block_public_s3 as s3
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import Event, MacieFinding, Unrecognised, partition_of
from mlwarden.inventory import Inventory
from mlwarden.observability import logger, metrics
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.pii import PII_TAG  # block_public_s3 raises public+PII to CRITICAL on this key
from mlwarden.pii_memory import RememberedPii
from mlwarden.settings import RemediationMode, Settings, SettingsError, whole_number

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
# block_public_s3's exposure reading, reused for the escalation: one definition of "public".
PUBLIC_CHECK_PERMISSIONS = s3.EXPOSURE_PERMISSIONS
LOCK_PERMISSIONS = frozenset({"s3:PutBucketPublicAccessBlock"})  # only when LOCK_PUBLIC_PII_BUCKETS=true
OBJECT_PERMISSIONS = frozenset({"s3:GetObjectTagging", "s3:PutObjectTagging"})  # only when TAG_PII_OBJECTS=true
PERMISSIONS = TAG_PERMISSIONS | PUBLIC_CHECK_PERMISSIONS | LOCK_PERMISSIONS | OBJECT_PERMISSIONS

# S3 tag values: letters, digits, spaces and + - = . _ : / @. Types are space-separated, so a type has no space.
_TYPE_UNSAFE = re.compile(r"[^A-Za-z0-9+\-=._:/@]+")
_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9 +\-=._:/@]+")
_TYPE_LIMIT = 64
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
_TEXT_LIMIT = 2_048  # mlwarden.events' bound on an event's text fields


# --- options ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiOptions:
    """This check's own switches (template parameters TagPiiObjects and LockPublicPiiBuckets)."""

    tag_objects: bool = False
    lock_public_buckets: bool = True
    # The sweep lists the findings Macie updated within this many days (SWEEP_FINDINGS_DAYS).
    sweep_findings_days: int = 30


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false, got {env[name]!r}")
    return raw == "true"


# Macie keeps a finding for 90 days after it was last updated (Amazon Macie User Guide, "Storing and retaining
# sensitive data discovery results and findings"): a longer window would list nothing more.
SWEEP_FINDINGS_DAYS_RANGE = range(1, 91)


def load_options(environ: Mapping[str, str] | None = None) -> PiiOptions:
    env = os.environ if environ is None else environ
    return PiiOptions(
        tag_objects=_flag(env, "TAG_PII_OBJECTS", default=False),
        lock_public_buckets=_flag(env, "LOCK_PUBLIC_PII_BUCKETS", default=True),
        sweep_findings_days=whole_number(env, "SWEEP_FINDINGS_DAYS", 30, SWEEP_FINDINGS_DAYS_RANGE),
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
    # Values read from the finding that could not be used (out-of-range times, say): treated as absent.
    notes: tuple[str, ...] = ()
    # The sweep's other findings about the same bucket, merged into this one (merge_findings): their ids.
    merged_ids: tuple[str, ...] = ()

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


# AWS refuses requests whose clock is more than 15 minutes off; a time further ahead than that is not a real one.
CLOCK_SKEW = dt.timedelta(minutes=15)


def timestamp(value: Any, now: dt.datetime | None = None) -> str | None:
    """An ISO 8601 time as YYYY-MM-DDTHH:MM:SSZ (UTC, whole seconds), or None.

    None also for a time that cannot be a real one: beyond what UTC can hold (9999-12-31T23:59:59-01:00)
    or in the future (which would pin the last-seen tags forever). Callers treat it as absent.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        utc = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None
    if utc > (now or dt.datetime.now(dt.UTC)) + CLOCK_SKEW:
        return None
    # isoformat pads the year to four digits (strftime's %Y does not for years before 1000 on Linux).
    return utc.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _time_notes(detail: Mapping[str, Any]) -> tuple[str, ...]:
    """The finding's times that were present but unusable, for the outcome (the values are not repeated)."""
    return tuple(
        f"{name} is not a usable time (unparseable, out of range or in the future): treated as absent"
        for name in ("updatedAt", "createdAt")
        if detail.get(name) not in (None, "") and timestamp(detail.get(name)) is None
    )


def finding_of(event: Event) -> PiiFinding | str:
    """The sensitive-data finding an event carries, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if not isinstance(event, MacieFinding):
        return "not a Macie finding"
    return finding_from_detail(event.raw, received_at=event.envelope.time)


def finding_from_detail(detail: Mapping[str, Any], *, received_at: str | None = None) -> PiiFinding | str:
    """One parser for both ways in: an event's `detail` and a GetFindings finding are the same JSON object.

    `received_at`: when the event arrived, the last resort for the time it was seen.
    """
    finding_type, finding_id = _text(detail.get("type")), _text(detail.get("id"))
    if finding_type is None or finding_id is None:
        return "Macie finding has no type or id"
    if not finding_type.startswith(SENSITIVE_DATA_PREFIX):
        return f"Macie finding {finding_type} is not a sensitive-data finding"
    affected = _mapping(detail.get("resourcesAffected"))
    bucket = _text(_mapping(affected.get("s3Bucket")).get("name"))
    if bucket is None:
        return f"Macie finding {finding_type} names no bucket"
    if not _BUCKET_NAME.match(bucket):
        return f"Macie finding {finding_type} names an invalid bucket {bucket[:80]!r}"
    seen_at = timestamp(detail.get("updatedAt")) or timestamp(detail.get("createdAt"))
    return PiiFinding(
        finding_id=finding_id,
        finding_type=finding_type,
        bucket=bucket,
        object_key=_text(_mapping(affected.get("s3Object")).get("key")),
        severity=_severity(detail),
        seen_at=seen_at or timestamp(received_at),
        detections=_detections(detail),
        notes=_time_notes(detail),
    )


def _text(value: Any) -> str | None:
    # As mlwarden.events reads an event's text fields: a non-empty string, bounded.
    return value[:_TEXT_LIMIT] if isinstance(value, str) and value else None


# --- planning the tags (pure) -------------------------------------------------------------------------------


def tag_value(text: str) -> str:
    """Any text as an S3 tag value: disallowed characters become "_", at most 256 characters."""
    return _VALUE_UNSAFE.sub("_", text)[:TAG_VALUE_LIMIT]


def encode_types(types: Iterable[str], cut_before: str | None = None) -> tuple[str, int]:
    """Sorted, space-separated types within 256 characters; returns (value, number of types left out).

    When they do not fit, the first types in sorted order are kept and "+N" says how many were left out.
    `cut_before`: the value this merge started from. Types it cut are unknown to this writer (the outcome
    table's record knows them; without it they are lost), so N never drops below what that value still
    vouches for: its own N minus the types that are now shown in its place.
    """
    items = sorted(set(types))
    shown_before = decode_types(cut_before)
    hidden_before = left_out_count(cut_before)
    for kept in range(len(items), -1, -1):
        shown = items[:kept]
        newly_shown = len(set(shown) - shown_before)
        left_out = max(len(items) - kept, hidden_before - newly_shown)
        value = " ".join([*shown, f"+{left_out}"] if left_out else shown)
        if len(value) <= TAG_VALUE_LIMIT:
            return value, left_out
    return f"+{len(items)}", len(items)  # unreachable: "+N" alone always fits


def decode_types(value: str | None) -> set[str]:
    """The types in a pii-types tag value (the "+N" marker and anything not a valid token are dropped)."""
    if not value:
        return set()
    return {token for token in value.split() if not token.startswith("+") and not _TYPE_UNSAFE.search(token)}


def left_out_count(value: str | None) -> int:
    """The N of a "+N" marker in a pii-types value (0 when there is none or it is not a small number)."""
    for token in (value or "").split():
        if token.startswith("+") and token[1:].isdigit() and len(token) <= 6:
            return int(token[1:])
    return 0


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
    # Our tag values that could not be used (a last-seen time that cannot be real): treated as absent.
    notes: tuple[str, ...] = ()

    @property
    def truncated(self) -> bool:
        return bool(self.dropped_keys) or self.types_left_out > 0


def _is_newer(candidate: tuple[str | None, str], recorded_at: str | None, recorded_id: str | None) -> bool:
    """Is the finding (seen at, id) more recent than the one the tags record?

    Ties on time are broken by id, so concurrent writers agree on one latest finding. A recorded time
    that is not a real one (unparseable, out of range, in the future) counts as absent.
    """
    recorded = timestamp(recorded_at)
    if recorded is None:
        return True
    seen_at, finding_id = candidate
    return seen_at is not None and (seen_at, finding_id) > (recorded, recorded_id or "")


def _latest(finding: PiiFinding, remembered: RememberedPii | None) -> tuple[str | None, str]:
    """The latest finding known: this one, or the one the record holds (another finding's, seen later)."""
    mine = (finding.seen_at, tag_value(finding.finding_id))
    if remembered is None or remembered.latest_seen is None:
        return mine
    theirs = (remembered.latest_seen, remembered.latest_finding or "")
    return theirs if mine[0] is None or theirs > (mine[0], mine[1]) else mine


def plan_tags(
    current: Mapping[str, str],
    finding: PiiFinding,
    keys: tuple[str, ...],
    limit: int,
    remembered: RememberedPii | None = None,
) -> TagPlan:
    """Merge the finding into a resource's tags: foreign tags kept, ours merged, within `limit` tags.

    Our values are unions and maxima (types, severity, the latest finding), so merging is commutative:
    whatever order concurrent findings land in, merging all of them gives the same tags. `remembered`
    (the bucket's record in the outcome table) holds every type ever found, including those the
    256-character value had to cut, so a writer that reads a cut value loses nothing.
    """
    foreign = {key: value for key, value in current.items() if key not in keys}
    previous_own = {key: current.get(key) for key in keys}
    known_types = decode_types(current.get(TYPES_TAG))
    remembered_types = remembered.types if remembered is not None else frozenset()
    known_before = remembered.known_before if remembered is not None else frozenset()
    types_value, left_out = encode_types(
        known_types | remembered_types | finding.types, cut_before=current.get(TYPES_TAG)
    )
    severity = higher_severity(current.get(SEVERITY_TAG), finding.severity)
    wanted: dict[str, str | None] = {
        PII_TAG: "true",
        SEVERITY_TAG: higher_severity(severity, remembered.severity if remembered is not None else None),
        TYPES_TAG: types_value or None,
    }
    latest = _latest(finding, remembered)
    if _is_newer(latest, current.get(LAST_SEEN_TAG), current.get(LAST_FINDING_TAG)):
        wanted[LAST_SEEN_TAG], wanted[LAST_FINDING_TAG] = latest
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
        new_types=tuple(sorted(finding.types - known_types - known_before)),
        classification_changed=any(own.get(k) != current.get(k) for k in classification if k in keys),
        changed=tags != dict(current),
        notes=(
            (f"{LAST_SEEN_TAG} is not a usable time (unparseable, out of range or in the future): treated as absent",)
            if current.get(LAST_SEEN_TAG) is not None and timestamp(current.get(LAST_SEEN_TAG)) is None
            else ()
        ),
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


def _undo_tags(bucket: str, previous_own: Mapping[str, str | None]) -> str:
    """Put back only the keys ML Warden wrote, as they were; every other tag stays as it is *then*.

    PutBucketTagging replaces the whole set, so restoring the set we read would wipe tags set since.
    The command reads the set when it runs, drops our keys (a JMESPath filter) and adds back our keys'
    previous values.
    """
    name = shlex.quote(bucket)
    ours = json.dumps(list(BUCKET_TAG_KEYS), separators=(",", ":"))
    restored = json.dumps(
        [{"Key": key, "Value": value} for key, value in previous_own.items() if value is not None],
        separators=(",", ":"),
    )
    query = f"{{TagSet: [TagSet[?!contains(`{ours}`, Key)], `{restored}`][]}}"
    return (
        f'aws s3api put-bucket-tagging --bucket {name} --tagging "$(aws s3api get-bucket-tagging --bucket {name} '
        f'--query {shlex.quote(query)} --output json)"'
    )


# --- deciding ---------------------------------------------------------------------------------------------


class _TagsNotVerified(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def tag_pii_bucket(event: Event, settings: Settings, options: PiiOptions | None = None) -> Outcome:
    """The event path: the finding the event carries, evaluated as the sweep evaluates a listed finding."""
    finding = finding_of(event)
    if isinstance(finding, str):
        return ignored(CHECK, event, finding)
    return evaluate(finding, Trigger.of(event), settings, event=event, options=options)


def evaluate(
    target: Target,
    trigger: Trigger,
    settings: Settings,
    *,
    event: Event | None = None,
    options: PiiOptions | None = None,
) -> Outcome:
    """Merge the finding into the bucket's tags and lock the bucket if it is public: the same for an event and
    the sweep. `event`: what carried the finding, when an event did (a bucket gone since is then judged on
    what the event says)."""
    if isinstance(target, MacieNotEnabled):
        return _macie_not_enabled(target, trigger)
    if isinstance(target, BucketFindings):
        read = _read_bucket_findings(target, trigger)
        if isinstance(read, Outcome):
            return read
        target = read
    finding = target
    resource = s3.BucketTarget(finding.bucket, partition_of(trigger.region)).arn
    try:
        return _classify(finding, trigger, resource, settings, options or PiiOptions())
    except _BucketGone:
        if event is None:
            return ignored_at(CHECK, trigger, "the bucket no longer exists", resource)
        return s3.gone_after_exposure(CHECK, event, trigger, resource)
    except AwsCallFailed as err:
        return call_failed(
            CHECK,
            trigger,
            resource,
            "could not classify the bucket",
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
        **({"findings_merged": 1 + len(finding.merged_ids)} if finding.merged_ids else {}),
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
    # Steps that failed, in order; the check goes on where it safely can (lock first, classify second).
    failures: list[tuple[str, AwsCallFailed | None]] = field(default_factory=list)

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

    def with_failures(self, decided: Outcome) -> Outcome:
        """The decided outcome (exposure, lock, severity) turned `failed` when a step did not complete."""
        if not self.failures:
            return decided
        errors = [err for _, err in self.failures if err is not None]
        details = {**decided.details, "failed_steps": [what for what, _ in self.failures]}
        if errors:
            details["failed_action"] = errors[0].action
        return replace(
            decided,
            outcome=OutcomeKind.FAILED,
            severity=max(decided.severity, Severity.HIGH, key=_SEVERITY_ORDER.index),
            reason=f"{decided.reason}; FAILED: {'; '.join(what for what, _ in self.failures)}",
            error_code=errors[0].code if errors else "VerificationFailed",
            cause=errors[0] if errors else None,
            details=details,
        )


_SEVERITY_ORDER = (Severity.INFORMATIONAL, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
# Concurrent findings for one bucket race on PutBucketTagging, which replaces the whole set and takes no
# condition. This is not a retry of a failed call (botocore retries those) but a merge loop: read, merge,
# write, read back, and merge again while the read-back is missing what this or another finding added.
# The values only grow (unions, maxima), so each round converges; the bound stops a pathological storm,
# and the jitter spreads writers that would otherwise collide in lockstep.
MAX_MERGE_ATTEMPTS = 10
MERGE_JITTER_SECONDS = 0.05


@dataclass(frozen=True)
class _Merged:
    plan: TagPlan  # our keys as they now stand, compared with the tags before this finding
    attempts: int


def _remember(finding: PiiFinding, settings: Settings, resource: str) -> RememberedPii | None:
    latest = (finding.seen_at, tag_value(finding.finding_id)) if finding.seen_at else None
    return pii_memory.remember(settings, resource, finding.types, finding.severity, _now(), latest=latest)


def _record_covers(record: RememberedPii, finding: PiiFinding) -> bool:
    return (
        finding.types <= record.types
        and higher_severity(record.severity, finding.severity) == record.severity
        and _latest(finding, record) == (record.latest_seen, record.latest_finding or "")
    )


def _merge_bucket_tags(
    finding: PiiFinding, remembered: RememberedPii | None, settings: Settings, resource: str
) -> _Merged:
    first: TagPlan | None = None
    wrote = False
    for attempt in range(1, MAX_MERGE_ATTEMPTS + 1):
        current = read_bucket_tags(finding.bucket)
        plan = plan_tags(current, finding, BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT, remembered)
        first = first or plan
        if plan.changed and settings.enforce:
            after = write_bucket_tags(finding.bucket, plan.tags)
            wrote = True
            # Another finding may have added to the record since we read it: its types belong in the tags too.
            fresh = pii_memory.recall(settings, resource, CHECK).record
            if remembered is not None and fresh is not None and not _record_covers(fresh, finding):
                # Read back after the write: the record lost this finding. DynamoDB's ADD is atomic, but an
                # emulator's is not (moto creates the item twice when two updates race); ADD it again.
                remembered = _remember(finding, settings, resource)
                converged = False
            else:
                remembered = fresh or remembered
                converged = not plan_tags(after, finding, BUCKET_TAG_KEYS, BUCKET_TAG_LIMIT, remembered).changed
        else:
            converged = True
        if converged:
            metrics.add_metric(name="TagMergeAttempts", unit=MetricUnit.Count, value=attempt)
            return _Merged(
                replace(
                    plan,
                    previous_own=first.previous_own,
                    new_types=first.new_types,
                    classification_changed=first.classification_changed,
                    changed=wrote or (first.changed and not settings.enforce),
                    notes=first.notes,
                ),
                attempt,
            )
        logger.info("bucket tags changed by a concurrent writer, merging again", check=CHECK, attempt=attempt)
        time.sleep(random.uniform(0, MERGE_JITTER_SECONDS * attempt))  # noqa: S311 - jitter, not security
    raise _TagsNotVerified(
        f"the bucket's tags did not settle after {MAX_MERGE_ATTEMPTS} merges: other writers keep replacing them"
    )


def _classify(finding: PiiFinding, trigger: Trigger, resource: str, settings: Settings, options: PiiOptions) -> Outcome:
    details: dict[str, Any] = {"finding": _finding_details(finding)}
    if finding.notes:
        details["notes"] = list(finding.notes)
    done = _Progress(finding, {"check": CHECK, "trigger": trigger, "resource": resource, "details": details})

    # Lock first: a public bucket holding PII is closed even when classifying it fails (AccessDenied or
    # throttling on the tags). The public check and the lock are block_public_s3's: one definition of public.
    # With locking off it only reads.
    lock_settings = (
        settings if options.lock_public_buckets else replace(settings, remediation_mode=RemediationMode.DRY_RUN)
    )
    try:
        public = s3.block_bucket(finding.bucket, trigger, lock_settings, pii_found=True)
    except AwsCallFailed as err:
        public = None
        done.failures.append((f"could not check public access: {err.explanation}", err))
    else:
        if public is None:
            raise _BucketGone

    # Classify second: the remembered record (state ML Warden owns), then the tags merged with it.
    remembered: RememberedPii | None = None
    try:
        remembered = _remember(finding, settings, resource)
    except AwsCallFailed as err:
        # As with the outcome store: the table being down must not stop the tags and the lock. The tags
        # still hold the classification; the gap is logged, counted and shown in the outcome.
        details["pii_record_unavailable"] = err.code
        logger.warning("PII record not written, classifying on the tags alone", check=CHECK, error=err.code)
        metrics.add_metric(name="PiiRecordUnavailable", unit=MetricUnit.Count, value=1)
    plan: TagPlan | None = None
    try:
        merged = _merge_bucket_tags(finding, remembered, settings, resource)
    except AwsCallFailed as err:
        done.failures.append((f"could not tag the bucket: {err.explanation}", err))
    except _TagsNotVerified as err:
        done.failures.append((err.what, None))
    else:
        plan = merged.plan
        if plan.notes:
            details["notes"] = [*details.get("notes", []), *plan.notes]
        details["tags"] = {
            "pii": plan.own,
            "dropped_keys": list(plan.dropped_keys),
            "types_left_out": plan.types_left_out,
            "foreign_tags_kept": len(plan.tags) - len(plan.own),
            "merge_attempts": merged.attempts,
        }
        if plan.changed and settings.enforce:
            done.actions.append("s3:PutBucketTagging")
            done.undo.append(_undo_tags(finding.bucket, plan.previous_own))

    if options.tag_objects and finding.object_key is not None:
        try:
            details["object"] = _tag_object(finding, settings, done.actions)
        except AwsCallFailed as err:
            done.failures.append((f"could not tag the object: {err.explanation}", err))
        except _TagsNotVerified as err:
            done.failures.append((err.what, None))

    if public is None:  # exposure unknown: the failure is the outcome, with what classification did
        return done.failed("; ".join(what for what, _ in done.failures), done.failures[0][1])
    return done.with_failures(_decide(plan, public, settings, options, done))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _untagged(finding: PiiFinding) -> TagPlan:
    """The plan when the tags could not be merged: nothing written, nothing known about them."""
    return TagPlan(
        tags={},
        own={},
        previous_own={},
        dropped_keys=(),
        types_left_out=0,
        new_types=tuple(sorted(finding.types)),
        classification_changed=True,
        changed=False,
    )


def _decide(
    tagged: TagPlan | None, public: Outcome, settings: Settings, options: PiiOptions, done: _Progress
) -> Outcome:
    plan = tagged or _untagged(done.finding)
    tags_what = _tag_summary(plan) if tagged is not None else "the bucket's tags could not be merged"
    previous = {"Tags": plan.previous_own} if tagged is not None else {}
    new = {"Tags": plan.own} if tagged is not None else {}
    # The bucket's severity (never lowered), not only this finding's.
    classified = _OUTCOME_SEVERITY.get(plan.own.get(SEVERITY_TAG) or done.finding.severity or "", Severity.MEDIUM)
    if public.outcome is OutcomeKind.COMPLIANT and tagged is None:
        return Outcome(
            outcome=OutcomeKind.FLAGGED,
            severity=classified,
            reason="PII found by Macie; the bucket is not public (all four public-access-block settings are on)",
            **done.common,
        )
    if public.outcome is OutcomeKind.COMPLIANT:  # block_public_s3: all four block settings are on
        severity = classified
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

    # The bucket's block is not fully on: graded as block_public_s3 grades it (one definition of public).
    details = {**done.common["details"], "public_access": {"outcome": public.outcome.value, **public.details}}
    exposed = bool(public.details.get("public_via"))
    exposure_grade = Severity(public.details.get("exposure_severity", Severity.HIGH))
    severity = max(exposure_grade, classified, key=_SEVERITY_ORDER.index)
    kind = public.outcome
    if kind is OutcomeKind.WOULD_REMEDIATE and settings.enforce:
        kind = OutcomeKind.FLAGGED  # enforce, but locking is off: block_public_s3 only read
    if kind in (OutcomeKind.EXEMPT, OutcomeKind.FLAGGED) and settings.enforce and not plan.changed:
        # The tags already record this very finding, so its alert went out when they were written.
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason=(
                f"PII in a {'public bucket' if exposed else 'bucket whose block is off'}, left unlocked "
                f"({'exempt' if kind is OutcomeKind.EXEMPT else 'locking is off'}); "
                f"unchanged since this finding was tagged and alerted ({tags_what})"
            ),
            **{**done.common, "details": details},
        )
    if exposed:
        headline = f"PII in a public bucket ({'; '.join(public.details['public_via'])}"
    elif public.details.get("exposure_unknown"):
        headline = f"PII in a bucket whose exposure could not be read ({', '.join(public.details['exposure_unknown'])}"
    elif public.details.get("held_back_by_account_block"):
        held = "; ".join(public.details["held_back_by_account_block"])
        headline = f"PII in a bucket whose public grants only the account-level block holds back ({held}"
    else:
        headline = "PII in a bucket whose public-access block is off (no public grant yet"
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
        severity=severity,
        reason=f"{headline}; block settings off: {settings_off}); {lock}; {tags_done} ({tags_what})",
        actions=(*public.actions, *done.actions),  # locked first, classified second
        previous_state={**(public.previous_state or {}), **previous},
        new_state={**(public.new_state or {}), **new},
        undo=" ; ".join([*([public.undo] if public.undo else []), *done.undo]) or None,
        exempt_hint=public.exempt_hint,
        error_code=public.error_code,
        cause=public.cause,
        **{**done.common, "details": details},
    )


# --- the sweep's way in: Macie's sensitive-data findings of the region --------------------------------------

# ListFindings names the findings (ids only), GetFindings reads them 50 at a time (its limit): two calls per 50
# findings. Macie writes one finding per object, so the findings about one bucket are merged into one before
# they go through the event path's evaluation: one evaluation per bucket, not per object.
SWEEP_PERMISSIONS = frozenset({"macie2:ListFindings", "macie2:GetFindings"})
# GetFindings accepts at most 50 finding ids per call; ListFindings returns at most 50 per page.
GET_FINDINGS_BATCH = 50
LIST_FINDINGS_PAGE = 50
MACIE_NOT_ENABLED = "Macie is not enabled"


@dataclass(frozen=True)
class BucketFindings:
    """A bucket handed over as a key: its findings are listed and read from Macie again when it is evaluated."""

    bucket: str


@dataclass(frozen=True)
class MacieNotEnabled:
    """Macie is off in this account and region: there are no findings to sweep, and that is worth saying."""

    account: str
    region: str


Target = PiiFinding | BucketFindings | MacieNotEnabled


def targets_from_inventory(inventory: Inventory, options: PiiOptions | None = None) -> Iterator[Target]:
    """The sensitive-data findings Macie updated within the window, read as the event path reads a finding, one
    target per bucket (all its findings merged), or one per finding when objects are tagged too.

    Archived (suppressed) findings are left out, as Macie leaves them out of EventBridge.
    """
    options = options or load_options()
    try:
        findings = list_findings(inventory, options.sweep_findings_days)
    except AwsCallFailed as err:
        if _macie_is_off(err):
            yield MacieNotEnabled(inventory.account, inventory.region)
            return
        raise
    if options.tag_objects:  # each finding names its own object
        yield from findings
        return
    by_bucket: dict[str, list[PiiFinding]] = {}
    for finding in findings:
        by_bucket.setdefault(finding.bucket, []).append(finding)
    yield from (merge_findings(group) for group in by_bucket.values())


def list_findings(inventory: Inventory, days: int, bucket: str | None = None) -> list[PiiFinding]:
    """The region's (or one bucket's) unarchived sensitive-data findings updated within `days`, oldest first."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    criterion: dict[str, Any] = {
        "category": {"eq": ["CLASSIFICATION"]},
        "archived": {"eq": ["false"]},
        "updatedAt": {"gte": int(since.timestamp() * 1000)},
    }
    if bucket is not None:
        criterion["resourcesAffected.s3Bucket.name"] = {"eq": [bucket]}
    ids = list(
        inventory.pages(
            "macie2",
            "list_findings",
            "findingIds",
            findingCriteria={"criterion": criterion},
            sortCriteria={"attributeName": "updatedAt", "orderBy": "ASC"},
            PaginationConfig={"PageSize": LIST_FINDINGS_PAGE},
        )
    )
    found: list[PiiFinding] = []
    for start in range(0, len(ids), GET_FINDINGS_BATCH):
        for finding in _get_findings(inventory.client("macie2"), ids[start : start + GET_FINDINGS_BATCH]):
            parsed = finding_from_detail(_as_json(finding))
            if isinstance(parsed, PiiFinding):
                found.append(parsed)
    return found


def merge_findings(findings: list[PiiFinding]) -> PiiFinding:
    """Findings about one bucket as one: what merging each in turn into the bucket's tags would give.

    The tag merge takes unions and maxima (plan_tags), so one merge of the union is the same as one merge per
    finding: every type, the highest severity, the latest finding (by time, then id) as the last one seen.
    """
    if len(findings) == 1:
        return findings[0]
    latest = max(findings, key=lambda finding: (finding.seen_at or "", finding.finding_id))
    detections: Counter[str] = Counter()
    severity: str | None = None
    for finding in findings:
        detections.update(finding.detections)
        severity = higher_severity(severity, finding.severity)
    return replace(
        latest,
        object_key=None,  # several objects: none is named
        severity=severity,
        detections=dict(detections),
        notes=tuple(dict.fromkeys(note for finding in findings for note in finding.notes)),
        merged_ids=tuple(sorted(finding.finding_id for finding in findings if finding is not latest)),
    )


def _macie_is_off(err: AwsCallFailed) -> bool:
    # Macie answers every call with AccessDeniedException "Macie is not enabled." while it is off; a missing
    # permission is also AccessDeniedException, with another message, and stays a failed listing.
    return err.code == "AccessDeniedException" and MACIE_NOT_ENABLED.lower() in err.message.lower()


def _get_findings(macie: Any, ids: list[str]) -> list[Mapping[str, Any]]:
    """The findings, in the order asked; GetFindings returns what still exists (a deleted one is left out)."""
    try:
        found = macie.get_findings(findingIds=ids, sortCriteria={"attributeName": "updatedAt", "orderBy": "ASC"})
    except (ClientError, BotoCoreError) as err:
        raise AwsCallFailed.from_error("macie2:GetFindings", err) from err
    return [finding for finding in found.get("findings", []) if isinstance(finding, Mapping)]


def _as_json(finding: Mapping[str, Any]) -> Mapping[str, Any]:
    """A GetFindings finding as EventBridge carries it: botocore turns its times into datetimes, events keep text."""
    return {
        key: value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else value
        for key, value in finding.items()
    }


def _read_bucket_findings(target: BucketFindings, trigger: Trigger) -> PiiFinding | Outcome:
    inventory = Inventory(trigger.account or "", trigger.region or "us-east-1")
    findings = list_findings(inventory, load_options().sweep_findings_days, bucket=target.bucket)
    if not findings:
        return ignored_at(CHECK, trigger, "Macie holds no open sensitive-data finding about the bucket any more")
    return merge_findings(findings)


def _macie_not_enabled(target: MacieNotEnabled, trigger: Trigger) -> Outcome:
    return Outcome(
        check=CHECK,
        outcome=OutcomeKind.FLAGGED,
        severity=Severity.LOW,
        reason=(
            f"Macie is not enabled in account {target.account}, region {target.region}: nothing finds PII in its "
            "buckets, so none is tagged and a public bucket holding PII is graded as any public bucket. Enable "
            "Macie and automated sensitive data discovery (Security Hub control Macie.1)"
        ),
        trigger=trigger,
        resource=f"{target.account}/{target.region}",
        details={"macie_enabled": False},
        findings=("macie-not-enabled",),
    )


def _swept(target: Target, trigger: Trigger, settings: Settings) -> Outcome:
    # The sweep runs with the check's switches as the environment sets them (TAG_PII_OBJECTS, LOCK_PUBLIC_PII_BUCKETS).
    return evaluate(target, trigger, settings, options=load_options())


def key_of(target: Target) -> dict[str, str]:
    if isinstance(target, MacieNotEnabled):
        return {"macie_not_enabled": target.account, "region": target.region}
    # The bucket only: its findings (detections, object keys) stay in Macie, read again when the key is evaluated.
    return {"bucket": target.bucket}


def target_of_key(key: Mapping[str, Any]) -> Target:
    if "macie_not_enabled" in key:
        return MacieNotEnabled(str(key["macie_not_enabled"]), str(key["region"]))
    return BucketFindings(str(key["bucket"]))


def resource_of(target: Target) -> str:
    if isinstance(target, MacieNotEnabled):
        return f"{target.account}/{target.region}"
    return f"arn:aws:s3:::{target.bucket}"


UNIT = CheckUnit(
    name=CHECK,
    decide_event=tag_pii_bucket,
    targets_from_inventory=targets_from_inventory,
    evaluate=_swept,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    sweep_permissions=SWEEP_PERMISSIONS,
)
