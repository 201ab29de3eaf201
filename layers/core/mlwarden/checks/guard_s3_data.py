"""Training-data buckets beyond "public": HTTPS only, no grants to other accounts, KMS encryption, access points.

Security Hub controls (https://docs.aws.amazon.com/securityhub/latest/userguide/s3-controls.html):

- S3.5 HTTPS only: a bucket policy without the deny on `aws:SecureTransport` false. Fixed (HTTPS_ONLY_BUCKETS:
  `pii` by default, `all`, `off`) by merging one statement (Sid MLWardenDenyInsecureTransport) into the policy:
  read, merge, write, read back, merge again when another writer replaced the policy meanwhile (a bounded
  number of times). A policy the statement would push past S3's 20 KB limit is flagged instead.
- S3.6 grants to other accounts (rules/bucket_policy.foreign_grants): flagged, never rewritten.
- S3.17 default encryption that is not SSE-KMS or DSSE-KMS: flagged (HIGH on a PII bucket); fixed to SSE-KMS
  only when DEFAULT_ENCRYPTION_KEY_ARN names the key to use.
- S3.19 access points: an access point whose own block public access settings are not all on (immutable
  after creation: flagged with recreate instructions), and an access-point policy S3 calls public.

Triggers: CloudTrail CreateBucket, PutBucketPolicy, DeleteBucketPolicy, PutBucketEncryption,
DeleteBucketEncryption, CreateAccessPoint, PutAccessPointPolicy; Macie's S3BucketEncryptionDisabled and
S3BucketSharedExternally policy findings. Public buckets themselves are block_public_s3's.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions
from mlwarden.checks import CheckUnit
from mlwarden.checks import block_public_s3 as public_s3
from mlwarden.checks.block_public_s3 import FLAGS, BucketTarget, pii_classification
from mlwarden.controls import Findings
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import ApiCall, Event, MacieFinding, Unrecognised, decode_policy_document, partition_of
from mlwarden.exemptions import exemption_for
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.rules import bucket_policy
from mlwarden.settings import Settings

CHECK = "guard_s3_data"
BUCKET_API_CALLS = frozenset(
    {"CreateBucket", "PutBucketPolicy", "DeleteBucketPolicy", "PutBucketEncryption", "DeleteBucketEncryption"}
)
ACCESS_POINT_API_CALLS = frozenset({"CreateAccessPoint", "PutAccessPointPolicy"})
MACIE_FINDINGS = frozenset({"Policy:IAMUser/S3BucketEncryptionDisabled", "Policy:IAMUser/S3BucketSharedExternally"})
S3_EVENT_SOURCES = public_s3.S3_EVENT_SOURCES

HTTPS_ONLY = "S3.5"
OTHER_ACCOUNTS = "S3.6"
KMS_ENCRYPTION = "S3.17"
ACCESS_POINTS = "S3.19"
KMS_ALGORITHMS = frozenset({"aws:kms", "aws:kms:dsse"})
# Times the HTTPS-only statement is merged again when another writer replaced the policy after ours.
MERGE_ATTEMPTS = 3

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
BUCKET_PERMISSIONS = frozenset(
    {
        "s3:GetBucketPolicy",
        "s3:PutBucketPolicy",
        "s3:GetEncryptionConfiguration",
        "s3:PutEncryptionConfiguration",
        "s3:GetBucketTagging",
    }
)
ACCESS_POINT_PERMISSIONS = frozenset({"s3:GetAccessPoint", "s3:GetAccessPointPolicyStatus"})
PERMISSIONS = BUCKET_PERMISSIONS | ACCESS_POINT_PERMISSIONS
# Buckets are listed as block_public_s3 lists them; access points per region (ListAccessPoints has no
# resource type: IAM only accepts "*").
SWEEP_PERMISSIONS = public_s3.SWEEP_PERMISSIONS | frozenset({"s3:ListAccessPoints"})

_ACCESS_POINT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")
_ACCESS_POINT_ARN = re.compile(r"^arn:(aws[a-zA-Z-]*):s3:([a-z0-9-]+):(\d{12}):accesspoint/([a-z0-9-]{3,50})$")
_ACCOUNT = re.compile(r"^\d{12}$")
# Undo commands quote the previous policy inline up to this size; beyond it, previous_state holds it.
_INLINE_UNDO_BYTES = 2048


@dataclass(frozen=True)
class AccessPointTarget:
    """An S3 access point, by name, in its account and region."""

    name: str
    account: str
    region: str

    @property
    def arn(self) -> str:
        return f"arn:{partition_of(self.region)}:s3:{self.region}:{self.account}:accesspoint/{self.name}"


Target = BucketTarget | AccessPointTarget


# --- the event's way in --------------------------------------------------------------------------------------


def targets_from_event(event: Event) -> Target | str:
    """The bucket or access point an event is about, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if isinstance(event, MacieFinding):
        if event.finding_type not in MACIE_FINDINGS:
            return f"Macie finding {event.finding_type} is not about encryption or sharing"
        return _bucket(event.bucket, event.aws_region, f"Macie finding {event.finding_type}")
    if not isinstance(event, ApiCall):
        return f"{type(event).__name__} events name no bucket for this check"
    if event.event_source not in S3_EVENT_SOURCES:
        return f"{event.event_source} {event.event_name} is not an S3 call"
    if event.event_name in BUCKET_API_CALLS:
        return _bucket(event.parameter("bucketName"), event.aws_region, event.event_name)
    if event.event_name in ACCESS_POINT_API_CALLS:
        return _access_point(event)
    return f"S3 call {event.event_name} changes no policy, encryption or access point"


def _bucket(name: str | None, region: str | None, what: str) -> Target | str:
    target = public_s3._bucket(name, region, what)
    return target if isinstance(target, BucketTarget | str) else f"{what} names no bucket"


def _access_point(event: ApiCall) -> Target | str:
    named = event.parameter("name") or event.parameter("Name") or event.parameter("accessPointName")
    if named is None:
        return f"{event.event_name} names no access point"
    arn = _ACCESS_POINT_ARN.match(named)
    if arn is not None:
        return AccessPointTarget(name=arn.group(4), region=arn.group(2), account=arn.group(3))
    if not _ACCESS_POINT_NAME.match(named):
        return f"{event.event_name} names an invalid access point {named[:80]!r}"
    account = event.parameter("x-amz-account-id") or event.parameter("accountId") or event.recipient_account
    if account is None or not _ACCOUNT.match(account) or event.aws_region is None:
        return f"{event.event_name} names no account or region"
    return AccessPointTarget(name=named, account=account, region=event.aws_region)


def guard_data(event: Event, settings: Settings) -> Outcome:
    """The event path: the bucket or access point the event names, evaluated as the sweep evaluates it."""
    target = targets_from_event(event)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    return evaluate(target, Trigger.of(event), settings)


def evaluate(target: Target, trigger: Trigger, settings: Settings) -> Outcome:
    """Decide on the live state, fix what is safe and switched on, verify: the same for an event and the sweep."""
    try:
        if isinstance(target, BucketTarget):
            return _evaluate_bucket(target, trigger, settings)
        return _evaluate_access_point(target, trigger, settings)
    except _Gone:
        return ignored_at(CHECK, trigger, "the resource no longer exists", target.arn)
    except AwsCallFailed as err:
        return call_failed(CHECK, trigger, target.arn, "could not check the bucket's data protection", err)


# --- reading and writing S3 ------------------------------------------------------------------------------------


class _Gone(Exception):
    """The bucket or access point no longer exists."""


_GONE_CODES = frozenset({"NoSuchBucket", "NoSuchAccessPoint"})


def _call(action: str, func: Callable[..., Any], *, absent: frozenset[str] = frozenset(), **kwargs: Any) -> Any:
    """Call AWS; None for the error codes that mean "not configured"; _Gone when the resource is gone."""
    try:
        return func(**kwargs)
    except ClientError as err:
        code = error_code(err)
        if code in absent:
            return None
        if code in _GONE_CODES:
            raise _Gone from err
        raise AwsCallFailed.from_error(action, err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error(action, err) from err


def _read_policy(bucket: str) -> tuple[str | None, Mapping[str, Any] | None]:
    """The bucket policy as S3 returns it (text) and parsed; (None, None) when there is none."""
    response = _call(
        "s3:GetBucketPolicy",
        clients.client("s3").get_bucket_policy,
        absent=frozenset({"NoSuchBucketPolicy"}),
        Bucket=bucket,
    )
    if response is None:
        return None, None
    text = str(response.get("Policy") or "")
    return text, decode_policy_document(text)


def _default_encryption(bucket: str) -> dict[str, Any] | None:
    response = _call(
        "s3:GetEncryptionConfiguration",
        clients.client("s3").get_bucket_encryption,
        absent=frozenset({"ServerSideEncryptionConfigurationNotFoundError"}),
        Bucket=bucket,
    )
    if response is None:
        return None
    rules = response.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default: dict[str, Any] = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    return default or None


# --- buckets: S3.5, S3.6, S3.17 --------------------------------------------------------------------------------


def _evaluate_bucket(bucket: BucketTarget, trigger: Trigger, settings: Settings) -> Outcome:
    text, policy = _read_policy(bucket.name)
    encryption = _default_encryption(bucket.name)
    classification = pii_classification(bucket, settings)
    exemption = exemption_for(bucket.arn, CHECK, classification.tags, settings)
    may_fix = settings.enforce and not exemption.active
    findings = Findings()
    details: dict[str, Any] = {**classification.details(), "pii": classification.pii, "exemption": exemption.reason}
    if text is not None and policy is None:
        details["policy_unreadable"] = True

    _https_only(
        bucket,
        text=text,
        policy=policy,
        pii=classification.pii,
        settings=settings,
        findings=findings,
        may_fix=may_fix,
    )
    _other_accounts(policy, trigger, settings, findings, details)
    _kms_encryption(
        bucket,
        encryption=encryption,
        pii=classification.pii,
        settings=settings,
        findings=findings,
        details=details,
        may_fix=may_fix,
    )
    return findings.outcome(
        CHECK,
        trigger,
        bucket.arn,
        details,
        compliant="bucket requires HTTPS, grants nothing to other accounts and is encrypted with KMS",
        exempt_hint=exemptions.hint(bucket.arn, CHECK),
        exemption=exemption.reason if exemption.active else None,
    )


def _https_fix_on(settings: Settings, pii: bool) -> bool:
    return settings.https_only_buckets == "all" or (settings.https_only_buckets == "pii" and pii)


def _https_only(
    bucket: BucketTarget,
    *,
    text: str | None,
    policy: Mapping[str, Any] | None,
    pii: bool,
    settings: Settings,
    findings: Findings,
    may_fix: bool,
) -> None:
    if bucket_policy.requires_https(policy, bucket.arn):
        return
    if text is not None and policy is None:
        # A policy S3 accepted but we cannot read: merging into it could clobber it. Say so; never write.
        findings.found(
            HTTPS_ONLY, "https-not-required", Severity.MEDIUM, "bucket policy could not be read: HTTPS-only unknown"
        )
        return
    severity = Severity.HIGH if pii else Severity.MEDIUM
    merged = bucket_policy.https_only_merged(policy, bucket.arn)
    if bucket_policy.size_of(merged) > bucket_policy.MAX_POLICY_BYTES:
        findings.found(
            HTTPS_ONLY,
            "https-not-required",
            severity,
            "bucket policy does not deny plain-HTTP requests, and adding the deny would pass S3's 20 KB policy "
            "limit: flagged, not changed; make room in the policy and add a Deny on aws:SecureTransport false",
        )
        return
    findings.found(HTTPS_ONLY, "https-not-required", severity, "bucket policy does not deny plain-HTTP requests")
    if not _https_fix_on(settings, pii):
        return
    findings.fixable("HttpsOnlyStatement", None, bucket_policy.HTTPS_ONLY_SID)
    findings.previous["Policy"] = text
    if may_fix:
        _merge_https_only(bucket, findings)


def _merge_https_only(bucket: BucketTarget, findings: Findings) -> None:
    """Read, merge, write, read back; merge again if another writer's policy replaced ours meanwhile."""
    s3 = clients.client("s3")
    previous: str | None = findings.previous.get("Policy")
    for _ in range(MERGE_ATTEMPTS):
        text, policy = _read_policy(bucket.name)
        if text is not None and policy is None:
            findings.unverified = "the bucket policy became unreadable while merging"
            return
        if bucket_policy.requires_https(policy, bucket.arn):
            break
        merged = bucket_policy.https_only_merged(policy, bucket.arn)
        if bucket_policy.size_of(merged) > bucket_policy.MAX_POLICY_BYTES:
            findings.unverified = "the policy grew past S3's 20 KB limit while merging"
            return
        try:
            _call("s3:PutBucketPolicy", s3.put_bucket_policy, Bucket=bucket.name, Policy=json.dumps(merged))
        except AwsCallFailed as err:
            findings.failure = err
            return
        _, after = _read_policy(bucket.name)
        if bucket_policy.requires_https(after, bucket.arn):
            break
    else:
        findings.unverified = f"the HTTPS-only statement did not hold after {MERGE_ATTEMPTS} merges"
        return
    findings.fixed("s3:PutBucketPolicy", _undo_policy(bucket.name, previous))


def _undo_policy(bucket: str, previous: str | None) -> str:
    quoted = shlex.quote(bucket)
    if previous is None:
        return f"aws s3api delete-bucket-policy --bucket {quoted}"
    if len(previous.encode()) <= _INLINE_UNDO_BYTES:
        return f"aws s3api put-bucket-policy --bucket {quoted} --policy {shlex.quote(previous)}"
    return (
        f"remove the statement with Sid {bucket_policy.HTTPS_ONLY_SID} from the policy of {quoted} "
        "(the whole previous policy is this outcome's previous_state)"
    )


def _other_accounts(
    policy: Mapping[str, Any] | None, trigger: Trigger, settings: Settings, findings: Findings, details: dict[str, Any]
) -> None:
    if policy is None or trigger.account is None:
        return
    grants = bucket_policy.foreign_grants(
        policy, trigger.account, trusted=settings.trusted_account_ids, organization=settings.organization_id
    )
    if not grants:
        return
    controls_bucket = any(grant.controls_bucket for grant in grants)
    anyone = any("*" in grant.principals for grant in grants)
    accounts = sorted({p for grant in grants for p in grant.principals})
    details["foreign_grants"] = [
        {"statement": g.statement, "principals": list(g.principals[:10]), "actions": list(g.actions[:10])}
        for g in grants[:20]
    ]
    findings.found(
        OTHER_ACCOUNTS,
        "grants-other-accounts",
        Severity.HIGH if controls_bucket or anyone else Severity.MEDIUM,
        f"bucket policy grants principals outside the account ({', '.join(accounts[:5])}"
        f"{' and more' if len(accounts) > 5 else ''}; statements {', '.join(g.statement for g in grants[:5])})"
        f"{': they may change its policy, ACLs or encryption' if controls_bucket else ''}; flagged, not changed: "
        "remove the grant, or add the account to TrustedAccountIds if it is yours",
    )


def _kms_encryption(
    bucket: BucketTarget,
    *,
    encryption: Mapping[str, Any] | None,
    pii: bool,
    settings: Settings,
    findings: Findings,
    details: dict[str, Any],
    may_fix: bool,
) -> None:
    algorithm = str((encryption or {}).get("SSEAlgorithm") or "none")
    details["default_encryption"] = algorithm
    if algorithm in KMS_ALGORITHMS:
        return
    findings.found(
        KMS_ENCRYPTION,
        "not-kms-encrypted",
        Severity.HIGH if pii else Severity.MEDIUM,
        f"default encryption is {algorithm}, not SSE-KMS with a key you control",
    )
    key = settings.default_encryption_key_arn
    if key is None:
        return
    findings.fixable("SSEAlgorithm", algorithm, "aws:kms")
    if not may_fix or findings.broken:
        return
    s3 = clients.client("s3")
    configuration = {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
                "BucketKeyEnabled": True,
            }
        ]
    }
    try:
        _call(
            "s3:PutEncryptionConfiguration",
            s3.put_bucket_encryption,
            Bucket=bucket.name,
            ServerSideEncryptionConfiguration=configuration,
        )
    except AwsCallFailed as err:
        findings.failure = err
        return
    after = _default_encryption(bucket.name) or {}
    if after.get("SSEAlgorithm") != "aws:kms" or after.get("KMSMasterKeyID") != key:
        findings.unverified = f"default encryption reads back as {after.get('SSEAlgorithm')}"
        return
    previous = {"Rules": [{"ApplyServerSideEncryptionByDefault": dict(encryption)}]} if encryption else None
    undo = (
        f"aws s3api put-bucket-encryption --bucket {shlex.quote(bucket.name)} "
        f"--server-side-encryption-configuration {shlex.quote(json.dumps(previous))}"
        if previous
        else f"aws s3api delete-bucket-encryption --bucket {shlex.quote(bucket.name)}"
    )
    findings.fixed("s3:PutEncryptionConfiguration", undo)


# --- access points: S3.19 -------------------------------------------------------------------------------------


def _evaluate_access_point(point: AccessPointTarget, trigger: Trigger, settings: Settings) -> Outcome:
    home = clients.client("s3control")
    s3control = home if home.meta.region_name == point.region else clients.client("s3control", point.region)
    described = _call("s3:GetAccessPoint", s3control.get_access_point, AccountId=point.account, Name=point.name)
    block = described.get("PublicAccessBlockConfiguration") or {}
    off = [flag for flag in FLAGS if not block.get(flag)]
    status = _call(
        "s3:GetAccessPointPolicyStatus",
        s3control.get_access_point_policy_status,
        absent=frozenset({"NoSuchAccessPointPolicy"}),
        AccountId=point.account,
        Name=point.name,
    )
    public_policy = bool(status and status.get("PolicyStatus", {}).get("IsPublic"))
    findings = Findings()
    bucket = str(described.get("Bucket") or "")
    details: dict[str, Any] = {"bucket": bucket, "settings_off": off, "policy_public": public_policy}
    if off:
        recreate = (
            f"aws s3control delete-access-point --account-id {point.account} --name {shlex.quote(point.name)} && "
            f"aws s3control create-access-point --account-id {point.account} --name {shlex.quote(point.name)} "
            f"--bucket {shlex.quote(bucket)}"
        )
        findings.found(
            ACCESS_POINTS,
            "access-point-block-off",
            # Security Hub rates S3.19 critical: one policy change from public, and the block cannot be fixed.
            Severity.CRITICAL if public_policy else Severity.HIGH,
            f"access point's block public access settings off: {', '.join(off)} (they cannot be changed after "
            f"creation: recreate it, which turns all four on, with {recreate})",
        )
    if public_policy:
        findings.found(
            ACCESS_POINTS,
            "access-point-policy-public",
            Severity.CRITICAL if off else Severity.HIGH,
            "access point policy is public (S3's policy status)"
            + ("" if off else "; its own block holds it back for now"),
        )
    exemption = exemption_for(point.arn, CHECK, None, settings)
    details["exemption"] = exemption.reason
    return findings.outcome(
        CHECK,
        trigger,
        point.arn,
        details,
        compliant="access point blocks public access and its policy is not public",
        exempt_hint=exemptions.hint(point.arn, CHECK),
        exemption=exemption.reason if exemption.active else None,
    )


# --- the sweep's way in: every bucket (listed as block_public_s3 lists them) and every access point ----------

_LIST_ACCESS_POINTS_PAGE = 1000


def targets_from_inventory(inventory: Inventory) -> Iterator[Target]:
    for target in public_s3.targets_from_inventory(inventory):
        if isinstance(target, BucketTarget):
            yield target
    yield from _access_points(inventory)


def _access_points(inventory: Inventory) -> Iterator[AccessPointTarget]:
    # ListAccessPoints has no botocore paginator: NextToken by hand.
    s3control = inventory.client("s3control")
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"AccountId": inventory.account, "MaxResults": _LIST_ACCESS_POINTS_PAGE}
        if token:
            kwargs["NextToken"] = token
        page = _call("s3:ListAccessPoints", s3control.list_access_points, **kwargs)
        for point in page.get("AccessPointList", []):
            name = point.get("Name")
            if isinstance(name, str) and _ACCESS_POINT_NAME.match(name):
                yield AccessPointTarget(name=name, account=inventory.account, region=inventory.region)
        token = page.get("NextToken")
        if not token:
            return


def key_of(target: Target) -> dict[str, str]:
    if isinstance(target, BucketTarget):
        return public_s3.key_of(target)
    return {"access_point": target.name, "account": target.account, "region": target.region}


def target_of_key(key: Mapping[str, Any]) -> Target:
    if "access_point" in key:
        return AccessPointTarget(name=str(key["access_point"]), account=str(key["account"]), region=str(key["region"]))
    target = public_s3.target_of_key(key)
    assert isinstance(target, BucketTarget)
    return target


def resource_of(target: Target) -> str:
    return target.arn


def known_tags(inventory: Inventory, targets: list[Target]) -> dict[str, dict[str, str]]:
    return public_s3.known_tags(inventory, [t for t in targets if isinstance(t, BucketTarget)])


UNIT = CheckUnit(
    name=CHECK,
    decide_event=guard_data,
    targets_from_inventory=targets_from_inventory,
    evaluate=evaluate,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    known_tags=known_tags,
    sweep_permissions=SWEEP_PERMISSIONS,
)
