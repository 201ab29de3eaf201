"""The KMS keys that encrypt ML data and models: not deleted while in use, rotated, not usable by anyone.

Security Hub controls (https://docs.aws.amazon.com/securityhub/latest/userguide/kms-controls.html):

- KMS.3 "AWS KMS keys should not be deleted unintentionally": a customer managed key scheduled for deletion
  (or disabled) that protects something ML Warden knows of (a bucket's default encryption names it, or it is
  tagged as protecting data) gets its deletion cancelled and is enabled again, because CancelKeyDeletion
  leaves a key Disabled (https://docs.aws.amazon.com/kms/latest/developerguide/deleting-keys-scheduling-key-deletion.html).
  CRITICAL. A key with no known use is alerted HIGH and left alone.
- KMS.4 "AWS KMS key rotation should be enabled": a symmetric customer managed key with key material from
  KMS and rotation off gets EnableKeyRotation (non-disruptive: old key material stays for decryption).
- KMS.5 "KMS keys should not be publicly accessible": a key policy that allows Principal "*" without a
  restricting condition is CRITICAL and flagged, never rewritten (a wrong key policy can lock its owners out).

Triggers: CloudTrail ScheduleKeyDeletion, DisableKey, DisableKeyRotation, CreateKey, PutKeyPolicy. The event
names the key; every decision is made on what KMS says now.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients, exemptions
from mlwarden.checks import CheckUnit
from mlwarden.controls import Findings
from mlwarden.errors import AwsCallFailed, error_code
from mlwarden.events import ApiCall, Event, Unrecognised, decode_policy_document, partition_of
from mlwarden.exemptions import exemption_for
from mlwarden.inventory import Inventory
from mlwarden.outcomes import Outcome, Severity, Trigger, call_failed, ignored, ignored_at
from mlwarden.pii import PII_TAG
from mlwarden.rules.policy_analysis import restricting_conditions
from mlwarden.settings import Settings

CHECK = "guard_kms_keys"
API_CALLS = frozenset({"ScheduleKeyDeletion", "DisableKey", "DisableKeyRotation", "CreateKey", "PutKeyPolicy"})
# A key tagged with this (any value: what it protects, in words) is in use for ML Warden.
PROTECTS_TAG = "mlwarden:protects"

DELETION = "KMS.3"
ROTATION = "KMS.4"
PUBLIC_POLICY = "KMS.5"

# The IAM actions this module calls: template.yaml grants exactly these (tests/template checks it).
READ_PERMISSIONS = frozenset(
    {"kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags", "kms:ListAliases"}
)
FIX_PERMISSIONS = frozenset({"kms:CancelKeyDeletion", "kms:EnableKey", "kms:EnableKeyRotation"})
# What the key protects: buckets whose default encryption names it.
USE_PERMISSIONS = frozenset({"s3:ListAllMyBuckets", "s3:GetEncryptionConfiguration"})
PERMISSIONS = READ_PERMISSIONS | FIX_PERMISSIONS | USE_PERMISSIONS
SWEEP_PERMISSIONS = frozenset({"kms:ListKeys"})

_KEY_ID = re.compile(r"^[a-zA-Z0-9-]{1,128}$")
_KEY_ARN = re.compile(r"^arn:(aws[a-zA-Z-]*):kms:([a-z0-9-]+):(\d{12}):key/([a-zA-Z0-9-]{1,128})$")
_CONDITION_WILDCARD = re.compile(r"^[*?]*$")


@dataclass(frozen=True)
class KeyTarget:
    """A KMS key, by id, in its region and account."""

    key_id: str
    region: str
    account: str

    @property
    def arn(self) -> str:
        return f"arn:{partition_of(self.region)}:kms:{self.region}:{self.account}:key/{self.key_id}"


# --- the event's way in --------------------------------------------------------------------------------------


def targets_from_event(event: Event) -> KeyTarget | str:
    """The key an event is about, or the reason it is not this check's."""
    if isinstance(event, Unrecognised):
        return event.reason
    if not isinstance(event, ApiCall):
        return "only CloudTrail KMS calls name a key for this check"
    if event.event_source != "kms.amazonaws.com" or event.event_name not in API_CALLS:
        return f"{event.event_source} {event.event_name} cannot delete, disable or open a key"
    named = event.parameter("keyId")
    if event.event_name == "CreateKey":
        metadata = event.response_elements.get("keyMetadata")
        named = metadata.get("arn") or metadata.get("keyId") if isinstance(metadata, Mapping) else None
    return _key(named, event)


def _key(named: Any, event: ApiCall) -> KeyTarget | str:
    if not isinstance(named, str) or not named:
        return f"{event.event_name} names no key"
    arn = _KEY_ARN.match(named)
    if arn is not None:
        return KeyTarget(key_id=arn.group(4), region=arn.group(2), account=arn.group(3))
    if named.startswith("alias/") or not _KEY_ID.match(named):
        # ScheduleKeyDeletion and DisableKey take a key id or ARN only; anything else is not a key we can read.
        return f"{event.event_name} names an invalid key {named[:80]!r}"
    account = event.recipient_account or event.actor.account
    if account is None or event.aws_region is None:
        return f"{event.event_name} names no account or region"
    return KeyTarget(key_id=named, region=event.aws_region, account=account)


def guard_keys(event: Event, settings: Settings) -> Outcome:
    """The event path: the key the event names, evaluated as the sweep evaluates it."""
    target = targets_from_event(event)
    if isinstance(target, str):
        return ignored(CHECK, event, target)
    return evaluate(target, Trigger.of(event), settings)


# --- reading KMS -----------------------------------------------------------------------------------------------


class _Gone(Exception):
    """The key does not exist (or is already deleted)."""


def _call(action: str, func: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return func(**kwargs)
    except ClientError as err:
        if error_code(err) == "NotFoundException":
            raise _Gone from err
        raise AwsCallFailed.from_error(action, err) from err
    except BotoCoreError as err:
        raise AwsCallFailed.from_error(action, err) from err


def _kms(key: KeyTarget) -> Any:
    """The KMS client of the key's region: the function's own (shared) client when it is that region."""
    home = clients.client("kms")
    return home if home.meta.region_name == key.region else clients.client("kms", key.region)


def _describe(key: KeyTarget) -> dict[str, Any]:
    metadata: dict[str, Any] = _call("kms:DescribeKey", _kms(key).describe_key, KeyId=key.key_id)["KeyMetadata"]
    return metadata


def _tags(key: KeyTarget) -> dict[str, str] | None:
    """The key's tags; None when they cannot be read (then the key's use is unknown, never "none")."""
    tags: dict[str, str] = {}
    try:
        for page in _kms(key).get_paginator("list_resource_tags").paginate(KeyId=key.key_id):
            tags.update({tag["TagKey"]: tag["TagValue"] for tag in page.get("Tags", [])})
    except ClientError as err:
        if error_code(err) == "NotFoundException":
            raise _Gone from err
        return None
    except BotoCoreError:
        return None
    return tags


def _aliases(key: KeyTarget) -> list[str]:
    names: list[str] = []
    try:
        for page in _kms(key).get_paginator("list_aliases").paginate(KeyId=key.key_id):
            names += [alias["AliasName"] for alias in page.get("Aliases", []) if "AliasName" in alias]
    except (ClientError, BotoCoreError):
        return []
    return names


def _policy(key: KeyTarget) -> Mapping[str, Any] | None:
    response = _call("kms:GetKeyPolicy", _kms(key).get_key_policy, KeyId=key.key_id, PolicyName="default")
    return decode_policy_document(response.get("Policy"))


def _rotation_enabled(key: KeyTarget) -> bool:
    response = _call("kms:GetKeyRotationStatus", _kms(key).get_key_rotation_status, KeyId=key.key_id)
    return bool(response.get("KeyRotationEnabled"))


# --- KMS.5: who may use the key --------------------------------------------------------------------------------


def _principals(statement: Mapping[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, Mapping):
        return []
    aws = principal.get("AWS")
    return [aws] if isinstance(aws, str) else [p for p in aws if isinstance(p, str)] if isinstance(aws, list) else []


def _restricting(condition: Any) -> tuple[str, ...]:
    """Condition keys that narrow who may use the key; a key compared with `*` alone narrows nothing."""
    if not isinstance(condition, Mapping):
        return ()
    narrowed: dict[str, Any] = {}
    for operator, clauses in condition.items():
        if not isinstance(clauses, Mapping):
            continue
        kept = {
            key: value
            for key, value in clauses.items()
            if not all(isinstance(v, str) and _CONDITION_WILDCARD.match(v) for v in _as_list(value))
        }
        if kept:
            narrowed[operator] = kept
    return restricting_conditions(narrowed)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def public_statements(policy: Mapping[str, Any] | None) -> list[str]:
    """The statements (by Sid or index) that let anyone use the key: Allow, Principal "*", no narrowing condition.

    Security Hub KMS.5 and IAM Access Analyzer treat such a key as public; a condition on the caller's account,
    organization, source VPC endpoint or a calling service narrows it.
    """
    if policy is None:
        return []
    found: list[str] = []
    for index, statement in enumerate(_as_list(policy.get("Statement"))):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        if "*" in _principals(statement) and not _restricting(statement.get("Condition")):
            found.append(str(statement.get("Sid") or f"statement {index}"))
    return found


# --- KMS.3: what the key protects ------------------------------------------------------------------------------


def _names_key(configured: str | None, key: KeyTarget, aliases: list[str]) -> bool:
    if not configured:
        return False
    if configured in (key.key_id, key.arn):
        return True
    alias = configured.split(":", 5)[-1] if configured.startswith("arn:") else configured
    return alias in aliases


def _bucket_key(bucket: str) -> list[str]:
    """The KMS keys a bucket's default encryption names ([] when it has none, or cannot be read)."""
    try:
        response = clients.client("s3").get_bucket_encryption(Bucket=bucket)
    except (ClientError, BotoCoreError):
        return []
    rules = response.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    return [
        str(rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"])
        for rule in rules
        if rule.get("ApplyServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
    ]


def protected_buckets(key: KeyTarget) -> list[str] | None:
    """The buckets whose default encryption names the key; None when the buckets cannot be listed."""
    aliases = _aliases(key)
    try:
        buckets = [b["Name"] for b in clients.client("s3").list_buckets().get("Buckets", []) if "Name" in b]
    except (ClientError, BotoCoreError):
        return None
    return sorted(b for b in buckets if any(_names_key(k, key, aliases) for k in _bucket_key(b)))


@dataclass(frozen=True)
class _Use:
    """What ML Warden knows the key protects."""

    buckets: tuple[str, ...]
    tagged: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def known(self) -> bool:
        return bool(self.buckets or self.tagged)

    def words(self) -> str:
        parts = [f"default encryption of bucket(s) {', '.join(self.buckets[:10])}"] if self.buckets else []
        parts += self.tagged
        return "; ".join(parts) or "nothing ML Warden knows of"

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"protects_buckets": list(self.buckets[:50]), "protects_tagged": list(self.tagged)}
        if self.unknown:
            found["use_unknown"] = list(self.unknown)
        return found


def _use(key: KeyTarget, tags: dict[str, str] | None) -> _Use:
    tagged: list[str] = []
    unknown: list[str] = []
    if tags is None:
        unknown.append("tags unreadable")
    else:
        if tags.get(PII_TAG, "").strip().lower() == "true":
            tagged.append(f"tagged {PII_TAG}=true")
        if tags.get(PROTECTS_TAG, "").strip():
            # The value names what the key protects; it is the key owner's text, so only its length is kept.
            tagged.append(f"tagged {PROTECTS_TAG}")
    buckets = protected_buckets(key)
    if buckets is None:
        unknown.append("buckets could not be listed")
    return _Use(buckets=tuple(buckets or ()), tagged=tuple(tagged), unknown=tuple(unknown))


# --- deciding ------------------------------------------------------------------------------------------------


def evaluate(target: KeyTarget, trigger: Trigger, settings: Settings) -> Outcome:
    """Decide on the key's live state, fix what is safe to fix, verify: the same for an event and the sweep."""
    try:
        return _evaluate(target, trigger, settings)
    except _Gone:
        return ignored_at(CHECK, trigger, "the key no longer exists", target.arn)
    except AwsCallFailed as err:
        return call_failed(CHECK, trigger, target.arn, "could not check the key", err)


def _evaluate(key: KeyTarget, trigger: Trigger, settings: Settings) -> Outcome:
    metadata = _describe(key)
    if metadata.get("KeyManager") != "CUSTOMER":
        return ignored_at(CHECK, trigger, "AWS managed key: AWS deletes, rotates and guards it", key.arn)
    state = str(metadata.get("KeyState") or "")
    if state in {"PendingReplicaDeletion", "Unavailable"}:
        return ignored_at(CHECK, trigger, f"key state {state}: nothing ML Warden can change", key.arn)
    tags = _tags(key)
    decision = Findings()
    details: dict[str, Any] = {"key_state": state, "key_spec": metadata.get("KeySpec")}
    exemption = exemption_for(key.arn, CHECK, tags, settings)
    details["exemption"] = exemption.reason
    may_fix = settings.enforce and not exemption.active

    if state in ("PendingDeletion", "Disabled"):
        _deletion(
            key, metadata=metadata, tags=tags, trigger=trigger, decision=decision, details=details, may_fix=may_fix
        )
    public = public_statements(_policy(key)) if state != "PendingDeletion" else []
    if public:
        decision.found(
            PUBLIC_POLICY,
            "key-policy-public",
            Severity.CRITICAL,
            f"key policy lets anyone use the key ({', '.join(public[:5])}: Principal * without a restricting "
            "condition); flagged, not rewritten: fix the policy by hand (a wrong key policy locks its owners out)",
        )
        details["public_statements"] = public[:20]
    # A key pending deletion has no rotation status; once its deletion is cancelled, it has.
    now = "Enabled" if "kms:EnableKey" in decision.actions else state
    if _rotatable(metadata) and now in ("Enabled", "Disabled"):
        _rotation(key, decision, fix_on=settings.enable_key_rotation, may_fix=may_fix)
    return decision.outcome(
        CHECK,
        trigger,
        key.arn,
        details,
        compliant="key is enabled, rotated and not public",
        exempt_hint=exemptions.hint(key.arn, CHECK),
        exemption=exemption.reason if exemption.active else None,
    )


def _rotatable(metadata: Mapping[str, Any]) -> bool:
    """Automatic rotation exists for symmetric encryption keys with key material from KMS only (KMS.4's scope)."""
    return metadata.get("KeySpec") == "SYMMETRIC_DEFAULT" and metadata.get("Origin") == "AWS_KMS"


def _deletion(
    key: KeyTarget,
    *,
    metadata: Mapping[str, Any],
    tags: dict[str, str] | None,
    trigger: Trigger,
    decision: Findings,
    details: dict[str, Any],
    may_fix: bool,
) -> None:
    state = str(metadata.get("KeyState"))
    use = _use(key, tags)
    details.update(use.details())
    when = f" (deletion date {metadata['DeletionDate']})" if metadata.get("DeletionDate") else ""
    what = "scheduled for deletion" + when if state == "PendingDeletion" else "disabled"
    by = f" by {trigger.actor}" if trigger.actor else ""
    if not use.known:
        unknown = f"; its use could not be fully read ({', '.join(use.unknown)})" if use.unknown else ""
        decision.found(
            DELETION,
            f"key-{state.lower()}",
            Severity.HIGH,
            f"key {what}{by}, protecting nothing ML Warden knows of{unknown}: left alone. Make sure no data, "
            "model or volume is encrypted with it before the waiting period ends",
        )
        return
    decision.found(
        DELETION,
        f"key-in-use-{state.lower()}",
        Severity.CRITICAL,
        f"key {what}{by} while it protects {use.words()}: everything it encrypted becomes unreadable",
    )
    decision.fixable("KeyState", state, "Enabled")
    if not may_fix:
        return
    kms = _kms(key)
    quoted = shlex.quote(key.arn)
    try:
        if state == "PendingDeletion":
            _call("kms:CancelKeyDeletion", kms.cancel_key_deletion, KeyId=key.key_id)
            decision.fixed("kms:CancelKeyDeletion", f"aws kms schedule-key-deletion --key-id {quoted}")
        # CancelKeyDeletion leaves the key Disabled: enable it, or it still decrypts nothing.
        _call("kms:EnableKey", kms.enable_key, KeyId=key.key_id)
        decision.fixed("kms:EnableKey", f"aws kms disable-key --key-id {quoted}")
    except AwsCallFailed as err:
        decision.failure = err
        return
    after = _describe(key).get("KeyState")
    if after != "Enabled":
        decision.unverified = f"the key reads back as {after}"


def _rotation(key: KeyTarget, decision: Findings, *, fix_on: bool, may_fix: bool) -> None:
    if _rotation_enabled(key):
        return
    decision.found(
        ROTATION,
        "key-rotation-off",
        Severity.MEDIUM,
        "automatic rotation of this symmetric customer managed key is off",
    )
    if not fix_on:
        return
    decision.fixable("KeyRotationEnabled", False, True)
    if not may_fix or decision.broken:
        return
    try:
        _call("kms:EnableKeyRotation", _kms(key).enable_key_rotation, KeyId=key.key_id)
    except AwsCallFailed as err:
        decision.failure = err
        return
    decision.fixed("kms:EnableKeyRotation", f"aws kms disable-key-rotation --key-id {shlex.quote(key.arn)}")
    if not _rotation_enabled(key):
        decision.unverified = "rotation reads back as off"


# --- the sweep's way in: every key of the region ---------------------------------------------------------------

# ListKeys pages: at most 1,000 keys per page (ListKeys API reference, Limit).
_LIST_KEYS_PAGE = 1000


def targets_from_inventory(inventory: Inventory) -> Iterator[KeyTarget]:
    for key in inventory.pages("kms", "list_keys", "Keys", PaginationConfig={"PageSize": _LIST_KEYS_PAGE}):
        key_id = key.get("KeyId")
        if isinstance(key_id, str) and _KEY_ID.match(key_id):
            yield KeyTarget(key_id=key_id, region=inventory.region, account=inventory.account)


def key_of(target: KeyTarget) -> dict[str, str]:
    return {"key": target.key_id, "region": target.region, "account": target.account}


def target_of_key(key: Mapping[str, Any]) -> KeyTarget:
    return KeyTarget(key_id=str(key["key"]), region=str(key["region"]), account=str(key["account"]))


def resource_of(target: KeyTarget) -> str:
    return target.arn


UNIT = CheckUnit(
    name=CHECK,
    decide_event=guard_keys,
    targets_from_inventory=targets_from_inventory,
    evaluate=evaluate,
    key_of=key_of,
    target_of_key=target_of_key,
    resource_of=resource_of,
    sweep_permissions=SWEEP_PERMISSIONS,
)
