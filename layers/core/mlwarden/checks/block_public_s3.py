"""Public S3 access: decide on the bucket's (or account's) live state, block, verify.

Triggers: CloudTrail S3 calls that can open a bucket or drop its block, the AWS
Config managed rules about public buckets and account-level blocks, and Macie's
public-bucket policy findings. The event only names the resource; the decision is
made on what S3 says now.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions, inventory, pii_memory
from mlwarden.checks import CheckUnit
from mlwarden.errors import AwsCallFailed, aws_call, error_code
from mlwarden.events import ApiCall, ComplianceChange, Event, MacieFinding, StateChange, Unrecognised, partition_of
from mlwarden.exemptions import Exemption, exemption_for
from mlwarden.inventory import TAGGING_PERMISSIONS, Inventory
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.pii import PII_TAG
from mlwarden.settings import Settings

CHECK = "block_public_s3"

BUCKET_API_CALLS = frozenset(
    {
        "CreateBucket",
        "PutBucketAcl",
        "PutBucketPolicy",
        "DeleteBucketPublicAccessBlock",
        "PutBucketPublicAccessBlock",
        # Routed for the exempt tag only (run_check ignores tagging calls that do not set it).
        "PutBucketTagging",
    }
)
ACCOUNT_API_CALLS = frozenset({"PutAccountPublicAccessBlock", "DeleteAccountPublicAccessBlock"})
# Tagging calls can remove the mlwarden:pii tag that grades a public bucket CRITICAL: checked, and alerted.
TAGGING_API_CALLS = frozenset({"PutBucketTagging", "DeleteBucketTagging"})
S3_EVENT_SOURCES = frozenset({"s3.amazonaws.com", "s3control.amazonaws.com", "s3-control.amazonaws.com"})
# AWS Config managed rules, matched by prefix: deployed names carry suffixes, and
# Security Hub deploys the same rules as "securityhub-<rule>-<suffix>".
CONFIG_RULES = (
    "s3-bucket-public-read-prohibited",
    "s3-bucket-public-write-prohibited",
    "s3-bucket-level-public-access-prohibited",
    "s3-account-level-public-access-blocks",
)
MACIE_FINDINGS = frozenset({"Policy:IAMUser/S3BucketPublic", "Policy:IAMUser/S3BlockPublicAccessDisabled"})

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
BUCKET_PERMISSIONS = frozenset(
    {
        "s3:GetBucketPublicAccessBlock",
        "s3:PutBucketPublicAccessBlock",
        "s3:GetBucketTagging",
        "s3:GetBucketAcl",
        "s3:GetBucketPolicyStatus",
    }
)
# Account-level actions have no resource type: IAM only accepts Resource "*" for them.
ACCOUNT_PERMISSIONS = frozenset({"s3:GetAccountPublicAccessBlock", "s3:PutAccountPublicAccessBlock"})
# What every reader of a bucket's exposure calls (bucket_exposure), whichever check it grades for.
EXPOSURE_PERMISSIONS = frozenset(
    {"s3:GetBucketPublicAccessBlock", "s3:GetBucketAcl", "s3:GetBucketPolicyStatus", "s3:GetAccountPublicAccessBlock"}
)

FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
ALL_ON: dict[str, bool] = dict.fromkeys(FLAGS, True)
_PUBLIC_GROUPS = {
    "http://acs.amazonaws.com/groups/global/AllUsers": "AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers": "AuthenticatedUsers",
}
# Bucket names: today's rules plus the uppercase/underscore names legacy us-east-1 buckets may have.
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


@dataclass(frozen=True)
class BucketTarget:
    """A bucket a check acts on."""

    name: str
    partition: str

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.name}"


@dataclass(frozen=True)
class AccountTarget:
    """An account whose account-level public access block a check acts on."""

    account_id: str

    @property
    def resource(self) -> str:
        # AWS Config's and Security Hub's name for an account-level resource.
        return f"AWS::::Account:{self.account_id}"


Target = BucketTarget | AccountTarget


def targets_from_event(event: Event) -> Target | str:
    """The bucket or account an event is about, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if isinstance(event, ApiCall):
        return _api_call_target(event)
    if isinstance(event, ComplianceChange):
        return _compliance_target(event)
    if isinstance(event, StateChange):
        return f"{event.envelope.detail_type} is not about S3 public access"
    return _macie_target(event)


def _bucket(name: str | None, region: str | None, what: str) -> Target | str:
    if name is None:
        return f"{what} names no bucket"
    if not _BUCKET_NAME.match(name):
        return f"{what} names an invalid bucket {name[:80]!r}"
    return BucketTarget(name=name, partition=partition_of(region))


def _api_call_target(event: ApiCall) -> Target | str:
    if event.event_source not in S3_EVENT_SOURCES:
        return f"{event.event_source} {event.event_name} is not an S3 call"
    if event.event_name in BUCKET_API_CALLS | TAGGING_API_CALLS:
        return _bucket(event.parameter("bucketName"), event.aws_region, event.event_name)
    if event.event_name in ACCOUNT_API_CALLS:
        account = event.recipient_account or event.actor.account
        if account is None:
            return f"{event.event_name} names no account"
        return AccountTarget(account)
    return f"S3 call {event.event_name} cannot open public access"


def _compliance_target(event: ComplianceChange) -> Target | str:
    rule = event.rule_name.removeprefix("securityhub-")
    if not rule.startswith(CONFIG_RULES):
        return f"Config rule {event.rule_name} is not a public-S3 rule"
    if event.compliance != "NON_COMPLIANT":
        return f"Config rule {event.rule_name} reports {event.compliance}, nothing to fix"
    if event.resource_type == "AWS::S3::Bucket":
        return _bucket(event.resource_id, event.aws_region, f"Config rule {event.rule_name}")
    if event.resource_type == "AWS::::Account":
        account = event.resource_id if re.fullmatch(r"\d{12}", event.resource_id) else event.account
        return AccountTarget(account) if account else f"Config rule {event.rule_name} names no account"
    return f"Config resource type {event.resource_type} is not a bucket or an account"


def _macie_target(event: MacieFinding) -> Target | str:
    if event.finding_type not in MACIE_FINDINGS:
        return f"Macie finding {event.finding_type} is not a public-bucket finding"
    return _bucket(event.bucket, event.aws_region, f"Macie finding {event.finding_type}")


# --- reading and writing S3 ---------------------------------------------------------------------------


class _Gone(Exception):
    """The bucket no longer exists."""


def _read_bucket_block(name: str) -> dict[str, bool] | None:
    """The bucket's public-access block, or None when it has none."""
    s3 = clients.client("s3")
    try:
        response = s3.get_public_access_block(Bucket=name)
    except ClientError as err:
        code = error_code(err)
        if code == "NoSuchPublicAccessBlockConfiguration":
            return None
        if code == "NoSuchBucket":
            raise _Gone from err
        raise AwsCallFailed.from_error("s3:GetBucketPublicAccessBlock", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("s3:GetBucketPublicAccessBlock", err) from err
    config = response.get("PublicAccessBlockConfiguration", {})
    return {flag: bool(config.get(flag, False)) for flag in FLAGS}


def read_bucket_tags(name: str, partition: str = "aws") -> dict[str, str] | None:
    """The bucket's tags; {} when it has none; None when they cannot be read.

    During a sweep, tags read in bulk for this bucket (mlwarden.inventory) save the call.
    """
    known = inventory.known_tags(f"arn:{partition}:s3:::{name}")
    if known is not None:
        return known
    try:
        response = clients.client("s3").get_bucket_tagging(Bucket=name)
    except ClientError as err:
        code = error_code(err)
        if code == "NoSuchTagSet":
            return {}
        if code == "NoSuchBucket":
            raise _Gone from err
        return None
    except BotoCoreError:
        return None
    return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}


@dataclass(frozen=True)
class Exposure:
    """A bucket's exposure as S3 reports it now: the one definition of "public" every check grades with.

    Public means a grant to everyone (an ACL grant to AllUsers or AuthenticatedUsers, or a policy S3's
    GetBucketPolicyStatus calls public) that neither the bucket's own block nor the account's block
    neutralises. A grant only the account-level block holds back is one account change from public.
    """

    block: dict[str, bool] | None  # the bucket's own public-access block; None when it has none
    public_via: tuple[str, ...] = ()
    # Public grants that only the account-level block neutralises: one account change from public.
    held_back: tuple[str, ...] = ()
    # What could not be read (AccessDenied on GetBucketAcl, say): exposure unknown, never "not public".
    unknown: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        """All four of the bucket's own settings are on: nothing it grants is public, whatever the account."""
        return self.block == ALL_ON

    @property
    def public(self) -> bool:
        return bool(self.public_via)

    @property
    def settings_off(self) -> list[str]:
        return [flag for flag in FLAGS if not (self.block or {}).get(flag)]

    def grade(self, pii: bool) -> tuple[Severity, str]:
        """Severity and wording of this exposure, for a bucket that does (not) hold PII."""
        if self.blocked:
            return Severity.INFORMATIONAL, "all four public-access-block settings are on"
        if self.public and pii:
            severity, what = Severity.CRITICAL, f"bucket holding PII is public ({'; '.join(self.public_via)})"
        elif self.public:
            severity, what = Severity.HIGH, f"bucket is public ({'; '.join(self.public_via)})"
        elif self.unknown:
            severity, what = Severity.HIGH, "bucket's block is off and its exposure could not be read"
        elif self.held_back:
            severity, what = (
                Severity.MEDIUM,
                f"bucket grants public access ({'; '.join(self.held_back)}) that only the account-level block "
                "holds back",
            )
        else:
            severity, what = Severity.MEDIUM, "bucket has no public grant yet, but its block is off"
        return severity, f"{what}; public-access block settings off: {', '.join(self.settings_off)}"

    def as_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "public_via": list(self.public_via),
            "held_back_by_account_block": list(self.held_back),
            "settings_off": self.settings_off,
        }
        if self.unknown:
            details["exposure_unknown"] = list(self.unknown)
        return details


def bucket_exposure(name: str, account: str | None) -> Exposure:
    """Read a bucket's exposure now: its block, then (unless fully on) the account block, ACL and policy status.

    Raises _Gone when the bucket no longer exists, AwsCallFailed when its block cannot be read.
    """
    block = _read_bucket_block(name)
    if block == ALL_ON:
        return Exposure(block)
    current = block or dict.fromkeys(FLAGS, False)
    account_block = _account_block_if_readable(account) or {}
    s3 = clients.client("s3")
    public_via: list[str] = []
    held_back: list[str] = []
    unknown: list[str] = []

    def found(grant: str, bucket_flag: str) -> None:
        if current.get(bucket_flag):
            return
        (held_back if account_block.get(bucket_flag) else public_via).append(grant)

    try:
        grants = s3.get_bucket_acl(Bucket=name).get("Grants", [])
    except (ClientError, BotoCoreError) as err:
        unknown.append(f"acl ({error_code(err) if isinstance(err, ClientError) else type(err).__name__})")
        grants = []
    for grant in grants:
        group = _PUBLIC_GROUPS.get(str(grant.get("Grantee", {}).get("URI", "")))
        if group:
            found(f"ACL grants {grant.get('Permission', '?')} to {group}", "IgnorePublicAcls")
    try:
        if s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"]:
            found("bucket policy is public", "RestrictPublicBuckets")
    except ClientError as err:
        if error_code(err) != "NoSuchBucketPolicy":
            unknown.append(f"policy ({error_code(err)})")
    except BotoCoreError as err:
        unknown.append(f"policy ({type(err).__name__})")
    return Exposure(block, tuple(public_via), tuple(held_back), tuple(unknown))


def _account_block_if_readable(account: str | None) -> dict[str, bool] | None:
    """The account-level block, only to grade severity: unreadable counts as none."""
    if account is None:
        return None
    try:
        return _read_account_block(account)
    except AwsCallFailed:
        return None


def _read_account_block(account: str) -> dict[str, bool] | None:
    try:
        response = clients.client("s3control").get_public_access_block(AccountId=account)
    except ClientError as err:
        if error_code(err) == "NoSuchPublicAccessBlockConfiguration":
            return None
        raise AwsCallFailed.from_error("s3:GetAccountPublicAccessBlock", err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error("s3:GetAccountPublicAccessBlock", err) from err
    config = response.get("PublicAccessBlockConfiguration", {})
    return {flag: bool(config.get(flag, False)) for flag in FLAGS}


# --- deciding ------------------------------------------------------------------------------------------


def _config_args(config: Mapping[str, bool]) -> str:
    return ",".join(f"{flag}={str(config[flag]).lower()}" for flag in FLAGS)


def _undo_bucket(name: str, previous: Mapping[str, bool] | None) -> str:
    bucket = shlex.quote(name)
    if previous is None:
        return f"aws s3api delete-public-access-block --bucket {bucket}"
    return (
        f"aws s3api put-public-access-block --bucket {bucket} "
        f"--public-access-block-configuration {_config_args(previous)}"
    )


def _undo_account(account: str, previous: Mapping[str, bool] | None) -> str:
    if previous is None:
        return f"aws s3control delete-public-access-block --account-id {account}"
    return (
        f"aws s3control put-public-access-block --account-id {account} "
        f"--public-access-block-configuration {_config_args(previous)}"
    )


def _exempt_hint(arn: str) -> str:
    return exemptions.hint(arn, CHECK)


def _state(config: Mapping[str, bool] | None) -> dict[str, Any]:
    return {"PublicAccessBlockConfiguration": dict(config) if config is not None else None}


def block_public_access(event: Event, settings: Settings) -> Outcome:
    """The event path: the bucket or account the event names, evaluated as the sweep evaluates it."""
    target = targets_from_event(event)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    return evaluate(target, Trigger.of(event), settings, event=event)


def evaluate(target: Target, trigger: Trigger, settings: Settings, *, event: Event | None = None) -> Outcome:
    """Decide on the bucket's (or account's) live state, block, verify: the same for an event and the sweep.

    `event`: what named the target, when an event did; it tells whether a bucket that is now gone was
    reported exposed first.
    """
    try:
        if isinstance(target, BucketTarget):
            return _with_controls(exemptions.at_most_daily(_block_bucket(target, trigger, settings), settings))
        return replace(_block_account(target, trigger, settings), controls=(ACCOUNT_CONTROL,))
    except _Gone:
        resource = target.arn if isinstance(target, BucketTarget) else None
        if event is None:
            gone = ignored_at(CHECK, trigger, "the bucket no longer exists", resource)
        else:
            gone = gone_after_exposure(CHECK, event, trigger, resource)
        # Its Security Hub findings are archived (securityhub.py).
        return replace(gone, controls=_BUCKET_CONTROLS, details={**gone.details, "resource_gone": True})
    except AwsCallFailed as err:
        return call_failed(CHECK, trigger, resource_of(target), "could not check or block public access", err)


# --- AWS Security Hub controls ----------------------------------------------------------------------------

# S3.1: the account-level block; S3.8: a bucket's own block; S3.2 / S3.3: a bucket grants public read / write.
ACCOUNT_CONTROL = "S3.1"
BLOCK_CONTROL = "S3.8"
PUBLIC_READ_CONTROL = "S3.2"
PUBLIC_WRITE_CONTROL = "S3.3"
CONTROLS = frozenset({ACCOUNT_CONTROL, BLOCK_CONTROL, PUBLIC_READ_CONTROL, PUBLIC_WRITE_CONTROL})
_BUCKET_CONTROLS = (PUBLIC_READ_CONTROL, PUBLIC_WRITE_CONTROL, BLOCK_CONTROL)
_READ_GRANTS = ("READ", "FULL_CONTROL", "bucket policy is public")
_WRITE_GRANTS = ("WRITE", "FULL_CONTROL", "bucket policy is public")


def _with_controls(outcome: Outcome) -> Outcome:
    """A bucket's outcome covers S3.2, S3.3 and S3.8; `control_status` says which failed, which ML Warden fixed
    and which passed (securityhub.py makes findings of the first two and resolves the third's)."""
    if outcome.outcome in (OutcomeKind.IGNORED, OutcomeKind.FAILED) and not outcome.details:
        return outcome
    public = [str(grant) for grant in outcome.details.get("public_via") or ()]
    failed = {
        BLOCK_CONTROL: bool(outcome.details.get("settings_off")),
        PUBLIC_READ_CONTROL: any(marker in grant for grant in public for marker in _READ_GRANTS),
        PUBLIC_WRITE_CONTROL: any(marker in grant for grant in public for marker in _WRITE_GRANTS),
    }
    fixed = outcome.outcome is OutcomeKind.REMEDIATED
    status = {
        control: ("FIXED" if fixed else "FAILED") if failed[control] else "PASSED" for control in _BUCKET_CONTROLS
    }
    if outcome.outcome is OutcomeKind.COMPLIANT:
        status = dict.fromkeys(_BUCKET_CONTROLS, "PASSED")
    return replace(outcome, controls=_BUCKET_CONTROLS, details={**outcome.details, "control_status": status})


def target_of_resource(kind: str, resource_id: str, region: str | None) -> Target | str:
    """The bucket or account a Security Hub finding names (ASFF types AwsS3Bucket, AwsAccount)."""
    if kind == "AwsS3Bucket":
        name = resource_id.split(":::", 1)[-1] if resource_id.startswith("arn:") else resource_id
        return _bucket(name, region, "Security Hub finding")
    if kind == "AwsAccount":
        account = resource_id.removeprefix("AWS::::Account:")
        return AccountTarget(account) if re.fullmatch(r"\d{12}", account) else "Security Hub finding names no account"
    return f"Security Hub resource type {kind} is not a bucket or an account"


def resource_of(target: Target) -> str:
    return target.arn if isinstance(target, BucketTarget) else target.resource


# --- the sweep's way in: every bucket of the region, and the account ---------------------------------------

# ListBuckets lists every bucket of the account; filtered by region, each bucket is swept once, in its own
# region, where the Resource Groups Tagging API reads the tags of all of them in bulk.
SWEEP_PERMISSIONS = frozenset({"s3:ListAllMyBuckets"}) | TAGGING_PERMISSIONS
# ListBuckets pages: up to 10,000 buckets per page (ListBuckets API reference, MaxBuckets).
_LIST_BUCKETS_PAGE = 10_000


def targets_from_inventory(inventory: Inventory) -> Iterator[Target]:
    if inventory.first_region:
        yield AccountTarget(inventory.account)
    for bucket in inventory.pages(
        "s3",
        "list_buckets",
        "Buckets",
        BucketRegion=inventory.region,
        PaginationConfig={"PageSize": _LIST_BUCKETS_PAGE},
    ):
        name = bucket.get("Name")
        if isinstance(name, str) and _BUCKET_NAME.match(name):
            yield BucketTarget(name=name, partition=inventory.partition)


def known_tags(inventory: Inventory, targets: list[Target]) -> dict[str, dict[str, str]]:
    """The tags of every listed bucket in one bulk read: a bucket of this region absent from it has none."""
    tagged = inventory.tags_by_arn("s3:bucket")
    return {target.arn: tagged.get(target.arn, {}) for target in targets if isinstance(target, BucketTarget)}


def key_of(target: Target) -> dict[str, str]:
    if isinstance(target, BucketTarget):
        return {"bucket": target.name, "partition": target.partition}
    return {"account": target.account_id}


def target_of_key(key: Mapping[str, Any]) -> Target:
    if "bucket" in key:
        return BucketTarget(name=str(key["bucket"]), partition=str(key.get("partition") or "aws"))
    return AccountTarget(str(key["account"]))


def block_bucket(name: str, trigger: Trigger, settings: Settings, *, pii_found: bool = False) -> Outcome | None:
    """This check's decision and fix for one named bucket, for checks that escalate to it (tag_pii_bucket).

    The same code path as an event about the bucket: live state, exemption, dry-run, write and verify.
    `pii_found`: the caller knows the bucket holds PII (a Macie finding), whatever its tags say.
    None when the bucket no longer exists; AwsCallFailed from the first read propagates.
    """
    try:
        return _block_bucket(
            BucketTarget(name=name, partition=partition_of(trigger.region)), trigger, settings, pii_found=pii_found
        )
    except _Gone:
        return None


# --- exposure reported by an event, for a bucket that is gone ----------------------------------------------

_PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
_EXPOSURE_CONFIG_RULES = (
    "s3-bucket-public-read-prohibited",
    "s3-bucket-public-write-prohibited",
    "s3-bucket-level-public-access-prohibited",
)


def _policy_grants_everyone(policy: Any) -> bool:
    """An Allow to Principal "*" without a condition (a condition may restrict it to an organisation or VPC)."""
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError:
            return False
    if not isinstance(policy, Mapping):
        return False
    statements = policy.get("Statement")
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow" or statement.get("Condition"):
            continue
        principal = statement.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, Mapping) else principal
        if aws == "*" or (isinstance(aws, list) and "*" in aws):
            return True
    return False


def reported_exposure(event: Event) -> str | None:
    """What the event itself says was exposed, decided from its content alone (the resource may be gone)."""
    if isinstance(event, ApiCall) and not event.error_code:
        params = event.request_parameters
        if event.event_name == "PutBucketAcl":
            canned = (event.parameter("x-amz-acl") or "").strip().lower()
            grants = json.dumps({k: v for k, v in params.items() if k != "bucketName"}, default=str)
            if canned in _PUBLIC_CANNED_ACLS or any(
                f"groups/global/{group}" in grants for group in _PUBLIC_GROUPS.values()
            ):
                return "PutBucketAcl granted access to everyone"
        if event.event_name == "PutBucketPolicy" and _policy_grants_everyone(params.get("bucketPolicy")):
            return "PutBucketPolicy allowed Principal * without a condition"
        if event.event_name == "DeleteBucketPublicAccessBlock":
            return "DeleteBucketPublicAccessBlock removed the bucket's public-access block"
    if isinstance(event, MacieFinding):
        if event.finding_type in MACIE_FINDINGS:
            return f"Macie reported {event.finding_type}"
        bucket = event.raw.get("resourcesAffected") if isinstance(event.raw, Mapping) else None
        bucket = bucket.get("s3Bucket") if isinstance(bucket, Mapping) else None
        access = bucket.get("publicAccess") if isinstance(bucket, Mapping) else None
        if isinstance(access, Mapping) and access.get("effectivePermission") == "PUBLIC":
            return f"Macie's {event.finding_type} finding says the bucket was public"
    if isinstance(event, ComplianceChange) and event.compliance == "NON_COMPLIANT":
        rule = event.rule_name.removeprefix("securityhub-")
        if rule.startswith(_EXPOSURE_CONFIG_RULES):
            return f"AWS Config rule {event.rule_name} found the bucket NON_COMPLIANT"
    return None


def gone_after_exposure(check: str, event: Event, trigger: Trigger, resource: str | None) -> Outcome:
    """A bucket that no longer exists: alerted when the event reported it exposed (what was in it may have
    leaked before it was emptied and deleted), ignored otherwise."""
    exposure = reported_exposure(event)
    if exposure is None:
        return ignored(check, event, "the bucket no longer exists")
    return Outcome(
        check=check,
        outcome=OutcomeKind.FLAGGED,
        severity=Severity.MEDIUM,
        reason=(
            f"was public, now deleted: investigate ({exposure}; the bucket no longer exists). Find out who "
            "read or copied its objects while it was open (CloudTrail data events, S3 server access logs)"
        ),
        trigger=trigger,
        resource=resource,
        details={"reported_exposure": exposure, "bucket_exists": False},
    )


# --- the bucket's PII classification: tag and remembered record ---------------------------------------------


@dataclass(frozen=True)
class _Classification:
    tags: dict[str, str] | None  # None: unreadable
    remembered: pii_memory.Recall

    @property
    def tagged(self) -> bool:
        return self.tags is not None and self.tags.get(PII_TAG, "").strip().lower() == "true"

    @property
    def pii(self) -> bool:
        return self.tagged or self.remembered.record is not None

    @property
    def tag_removed(self) -> bool:
        """Macie found PII here (remembered), yet the readable tags no longer say so."""
        return self.remembered.record is not None and self.tags is not None and not self.tagged

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"pii_tag": self.tagged}
        record = self.remembered.record
        if record is not None:
            found["pii_remembered"] = {"types": sorted(record.types), "severity": record.severity}
        if self.remembered.unreadable:
            found["pii_record_unreadable"] = self.remembered.unreadable
        if self.tags is None:
            found["tags_unreadable"] = True
        return found


def _classification(bucket: BucketTarget, settings: Settings) -> _Classification:
    return _Classification(
        read_bucket_tags(bucket.name, bucket.partition), pii_memory.recall(settings, bucket.arn, CHECK)
    )


# The one PII classification of a bucket (its tag, or what Macie found and ML Warden remembers), for every
# check that grades a bucket with it (guard_s3_data too).
pii_classification = _classification


def _tag_removed_note(classification: _Classification, trigger: Trigger) -> str:
    record = classification.remembered.record
    since = f" since {record.first_found}" if record is not None and record.first_found else ""
    return (
        f"the {PII_TAG} tag is gone ({trigger.name} by {trigger.actor or 'unknown'}), but Macie found PII in this "
        f"bucket{since} and ML Warden still grades it as holding PII"
    )


def _block_bucket(bucket: BucketTarget, trigger: Trigger, settings: Settings, *, pii_found: bool = False) -> Outcome:
    exposure = bucket_exposure(bucket.name, trigger.account)
    # A tagging call may have removed mlwarden:pii: read the classification even when the block is on.
    tagging_call = trigger.kind == "cloudtrail" and trigger.name in TAGGING_API_CALLS
    classification = _classification(bucket, settings) if tagging_call or not exposure.blocked else None
    tag_removed = tagging_call and classification is not None and classification.tag_removed
    if classification is None or (exposure.blocked and not tag_removed):
        return Outcome(
            check=CHECK,
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason="all four public-access-block settings are already on",
            trigger=trigger,
            resource=bucket.arn,
        )
    details: dict[str, Any] = {**exposure.as_details(), **classification.details(), "pii": False}
    if tag_removed:
        details["pii_tag_removed"] = True
    if exposure.blocked:
        return Outcome(
            check=CHECK,
            outcome=OutcomeKind.FLAGGED,
            severity=Severity.MEDIUM,
            reason=f"{_tag_removed_note(classification, trigger)}; the bucket is not public (its block is fully on)",
            trigger=trigger,
            resource=bucket.arn,
            details=details,
        )
    exemption: Exemption = exemption_for(bucket.arn, CHECK, classification.tags, settings)
    pii = pii_found or classification.pii
    details.update(pii=pii, exemption=exemption.reason)
    severity, what = exposure.grade(pii)
    details["exposure_severity"] = severity.value
    if exposure.public and not pii and classification.tags is None:
        what += " (whether it holds PII is unknown: its tags could not be read)"
    if tag_removed:
        what = f"{what}; {_tag_removed_note(classification, trigger)}"
    block = exposure.block

    common: dict[str, Any] = {
        "check": CHECK,
        "trigger": trigger,
        "resource": bucket.arn,
        "details": details,
        "exempt_hint": _exempt_hint(bucket.arn),
        "findings": tuple(sorted({*exposure.public_via, *exposure.held_back, *exposure.unknown})),
    }
    if exemption.active:
        # An exemption prevents the change, never the truth: PII in the open stays CRITICAL.
        return Outcome(
            outcome=OutcomeKind.EXEMPT,
            severity=Severity.CRITICAL if exposure.public and pii else Severity.LOW,
            reason=f"{what}; left as is: {exemption.reason}",
            **common,
        )
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=severity,
            reason=f"{what}; dry run: would turn on all four settings",
            previous_state=_state(block),
            new_state=_state(ALL_ON),
            **common,
        )

    s3 = clients.client("s3")
    return _turn_on_and_verify(
        action="s3:PutBucketPublicAccessBlock",
        write=lambda: s3.put_public_access_block(Bucket=bucket.name, PublicAccessBlockConfiguration=ALL_ON),
        read_back=lambda: _read_bucket_block(bucket.name),
        previous=block,
        severity=severity,
        what=what,
        undo=_undo_bucket(bucket.name, block),
        common=common,
    )


def _block_account(account: AccountTarget, trigger: Trigger, settings: Settings) -> Outcome:
    block = _read_account_block(account.account_id)
    common: dict[str, Any] = {"check": CHECK, "trigger": trigger, "resource": account.resource}
    if block == ALL_ON:
        return Outcome(
            outcome=OutcomeKind.COMPLIANT,
            severity=Severity.INFORMATIONAL,
            reason="all four account-level public-access-block settings are already on",
            **common,
        )
    off = [flag for flag in FLAGS if not (block or {}).get(flag)]
    what = f"account-level public-access block settings off: {', '.join(off)}"
    # Only the registry can keep the account-level block off: a bucket's exemption (or its tag) cannot.
    exemption = exemption_for(account.resource, CHECK, None, settings)
    details: dict[str, Any] = {"settings_off": off, "exemption": exemption.reason}
    if exemption.active:
        return Outcome(
            outcome=OutcomeKind.EXEMPT,
            severity=Severity.MEDIUM,
            reason=f"{what}; left as is: {exemption.reason}. Each bucket's own block is still enforced.",
            details=details,
            **common,
        )
    if not settings.enforce:
        return Outcome(
            outcome=OutcomeKind.WOULD_REMEDIATE,
            severity=Severity.HIGH,
            reason=f"{what}; dry run: would turn on all four settings for the account",
            previous_state=_state(block),
            new_state=_state(ALL_ON),
            details=details,
            **common,
        )
    s3control = clients.client("s3control")
    return _turn_on_and_verify(
        action="s3:PutAccountPublicAccessBlock",
        write=lambda: s3control.put_public_access_block(
            AccountId=account.account_id, PublicAccessBlockConfiguration=ALL_ON
        ),
        read_back=lambda: _read_account_block(account.account_id),
        previous=block,
        severity=Severity.HIGH,
        what=what,
        undo=_undo_account(account.account_id, block),
        common={**common, "details": details},
    )


def _turn_on_and_verify(
    *,
    action: str,
    write: Callable[[], Any],
    read_back: Callable[[], dict[str, bool] | None],
    previous: dict[str, bool] | None,
    severity: Severity,
    what: str,
    undo: str,
    common: dict[str, Any],
) -> Outcome:
    """Write all four settings, read them back: a block that does not read back is a failure.

    A failure keeps everything already known (severity, exposure, previous state), and once the
    write went through it also keeps the action and the undo command. Every fix is made, however often
    the resource was re-opened: flapping changes only what is said about it (see flapguard, run by checks).
    """

    def failed(reason: str, err: AwsCallFailed | None, written: bool, after: dict[str, bool] | None) -> Outcome:
        details = dict(common.get("details") or {})
        if err is not None:
            details["failed_action"] = err.action
        return Outcome(
            outcome=OutcomeKind.FAILED,
            severity=severity,
            reason=f"{what}; {reason}",
            actions=(action,) if written else (),
            previous_state=_state(previous),
            new_state=_state(after) if written else None,
            undo=undo if written else None,
            error_code=err.code if err is not None else "VerificationFailed",
            cause=err,
            **{**common, "details": details},
        )

    try:
        aws_call(action, write)
    except AwsCallFailed as err:
        if err.code == "NoSuchBucket":  # deleted between our read and our write: nothing left to protect
            raise _Gone from err
        return failed(f"could not turn the block on: {err.explanation}", err, written=False, after=previous)
    try:
        after = read_back()
    except AwsCallFailed as err:
        return failed(f"the block was written but could not be read back: {err.explanation}", err, True, None)
    if after != ALL_ON:
        return failed(f"the block was written but reads back as {after}", None, written=True, after=after)
    reason = f"{what}; all four settings turned on and verified"
    return Outcome(
        outcome=OutcomeKind.REMEDIATED,
        severity=severity,
        reason=reason,
        actions=(action,),
        previous_state=_state(previous),
        new_state=_state(ALL_ON),
        undo=undo,
        **common,
    )


UNIT = CheckUnit(
    name=CHECK,
    decide_event=block_public_access,
    targets_from_inventory=targets_from_inventory,
    evaluate=evaluate,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    known_tags=known_tags,
    sweep_permissions=SWEEP_PERMISSIONS,
    controls=CONTROLS,
    target_of_resource=target_of_resource,
    # Fixing the account block first would grade every public bucket as held back by it.
    evaluate_last=lambda target: isinstance(target, AccountTarget),
)
