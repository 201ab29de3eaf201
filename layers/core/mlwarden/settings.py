"""Configuration read once at cold start, validated, typed.

A missing or invalid value fails here with a message that names the variable and
what it accepts, instead of failing on the first event.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Standard topics only: FIFO topics need a message group id and cannot deliver to e-mail.
_TOPIC_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
# S3 tag keys: up to 128 characters from letters, digits, spaces and + - = . _ : / @
_TAG_KEY = re.compile(r"^[\w +\-=.:/@]{1,128}$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
FLAP_THRESHOLD_RANGE = range(1, 101)
MAX_EXEMPTION_DAYS_RANGE = range(1, 366)
FLAP_DIGEST_MINUTES_RANGE = range(5, 1441)
ALERT_DEDUP_HOURS_RANGE = range(1, 169)
# IAM role names: 1-64 characters from letters, digits and + = , . @ _ -
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ORGANIZATION_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
HTTPS_ONLY_CHOICES = ("pii", "all", "off")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:kms:[a-z0-9-]+:\d{12}:key/[a-zA-Z0-9-]{1,128}$")


class SettingsError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""


class RemediationMode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class Settings:
    """The functions' configuration, read from the environment once at cold start."""

    alert_topic_arn: str
    remediation_mode: RemediationMode
    exempt_tag_key: str
    # The function's own execution role: CloudTrail events made by it are our own fixes.
    remediator_role_arn: str | None
    # DynamoDB table of per-event outcomes and per-resource fix counts; None runs without them.
    outcome_table: str | None = None
    # More fixes of one resource than this within an hour is flapping: still fixed every time, but one CRITICAL
    # flapping alert instead of one alert per fix.
    flap_threshold: int = 3
    # Exemptions (see exemptions.py): the registry table, whether resource tags may exempt, the longest exemption.
    exemption_table: str | None = None
    trust_exemption_tags: bool = False
    max_exemption_days: int = 90
    # While a resource flaps: at most one digest alert per resource per this many minutes.
    flap_digest_minutes: int = 60
    # The same resource with the same failed findings and severity alerts once within this many hours.
    alert_dedup_hours: int = 24
    # Outcomes that need a person also become AWS Security Hub findings (securityhub.py).
    security_hub_findings: bool = False
    # Organization mode: an event from another account is acted on through that account's member role
    # (arn:PARTITION:iam::ACCOUNT:role/MEMBER_ROLE_NAME); None acts with the function's own credentials only.
    member_role_name: str | None = None
    # The organization (o-...) whose accounts send events; alerts then name the account and its OU.
    # guard_s3_data also counts its principals as inside (S3.6).
    organization_id: str | None = None
    # False only for `mlwarden sweep` run without an alert topic: it reports and sends nothing. Never read from
    # the environment, so no variable can silence a deployed function.
    send_alerts: bool = True
    # guard_kms_keys: turn on automatic rotation of symmetric customer managed keys (KMS.4).
    enable_key_rotation: bool = True
    # guard_s3_data: which buckets get the HTTPS-only deny merged into their policy (S3.5): "pii" (tagged or
    # remembered as holding PII), "all" or "off"; accounts trusted by bucket policies besides this one (S3.6);
    # the KMS key named for the optional SSE-KMS fix of default encryption (S3.17, no fix when unset).
    https_only_buckets: str = "pii"
    trusted_account_ids: frozenset[str] = frozenset()
    default_encryption_key_arn: str | None = None

    @property
    def enforce(self) -> bool:
        return self.remediation_mode is RemediationMode.ENFORCE


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ

    topic = env.get("ALERT_TOPIC_ARN", "").strip()
    if not topic:
        raise SettingsError("ALERT_TOPIC_ARN is required: the ARN of the SNS topic that receives alerts")
    if topic.endswith(".fifo"):
        raise SettingsError(f"ALERT_TOPIC_ARN must be a standard SNS topic, not a FIFO topic, got {topic!r}")
    if not _TOPIC_ARN.match(topic):
        raise SettingsError(
            f"ALERT_TOPIC_ARN must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), got {topic!r}"
        )

    mode_raw = env.get("REMEDIATION_MODE", RemediationMode.ENFORCE.value).strip() or RemediationMode.ENFORCE.value
    try:
        mode = RemediationMode(mode_raw)
    except ValueError:
        allowed = " | ".join(m.value for m in RemediationMode)
        raise SettingsError(f"REMEDIATION_MODE must be one of {allowed}, got {mode_raw!r}") from None

    tag_key = env.get("EXEMPT_TAG_KEY", "mlwarden:exempt").strip() or "mlwarden:exempt"
    if not _TAG_KEY.match(tag_key) or tag_key.lower().startswith("aws:"):
        raise SettingsError(
            "EXEMPT_TAG_KEY must be a valid tag key (1-128 characters: letters, digits, spaces, + - = . _ : / @; "
            f"not starting with aws:), got {tag_key!r}"
        )

    role = env.get("REMEDIATOR_ROLE_ARN", "").strip() or None
    if role is not None and not _ROLE_ARN.match(role):
        raise SettingsError(
            f"REMEDIATOR_ROLE_ARN must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME), got {role!r}"
        )

    table = env.get("OUTCOME_TABLE", "").strip() or None
    if table is not None and not _TABLE_NAME.match(table):
        raise SettingsError(
            f"OUTCOME_TABLE must be a DynamoDB table name (3-255 characters: letters, digits, _ . -), got {table!r}"
        )

    threshold_raw = env.get("FLAP_THRESHOLD", "").strip() or "3"
    try:
        threshold = int(threshold_raw)
    except ValueError:
        threshold = 0
    if threshold not in FLAP_THRESHOLD_RANGE:
        raise SettingsError(
            f"FLAP_THRESHOLD must be a whole number from {FLAP_THRESHOLD_RANGE.start} to "
            f"{FLAP_THRESHOLD_RANGE.stop - 1}, got {threshold_raw!r}"
        )

    exemption_table = env.get("EXEMPTION_TABLE", "").strip() or None
    if exemption_table is not None and not _TABLE_NAME.match(exemption_table):
        raise SettingsError(
            "EXEMPTION_TABLE must be a DynamoDB table name (3-255 characters: letters, digits, _ . -), "
            f"got {exemption_table!r}"
        )
    trust_exemption_tags = _true_or_false(env, "TRUST_EXEMPTION_TAGS")
    max_days_raw = env.get("MAX_EXEMPTION_DAYS", "").strip() or "90"
    max_days = int(max_days_raw) if re.fullmatch(r"[0-9]{1,4}", max_days_raw) else 0
    if max_days not in MAX_EXEMPTION_DAYS_RANGE:
        raise SettingsError(
            f"MAX_EXEMPTION_DAYS must be a whole number of days from {MAX_EXEMPTION_DAYS_RANGE.start} to "
            f"{MAX_EXEMPTION_DAYS_RANGE.stop - 1}, got {max_days_raw[:40]!r}"
        )
    flap_digest_minutes = _whole_number(env, "FLAP_DIGEST_MINUTES", 60, FLAP_DIGEST_MINUTES_RANGE)
    alert_dedup_hours = _whole_number(env, "ALERT_DEDUP_HOURS", 24, ALERT_DEDUP_HOURS_RANGE)
    security_hub_findings = _true_or_false(env, "SECURITY_HUB_FINDINGS")

    member_role_name = env.get("MEMBER_ROLE_NAME", "").strip() or None
    if member_role_name is not None and not _ROLE_NAME.match(member_role_name):
        raise SettingsError(
            "MEMBER_ROLE_NAME must be an IAM role name (1-64 characters: letters, digits, + = , . @ _ -), "
            f"got {member_role_name[:80]!r}"
        )
    organization_id = env.get("ORGANIZATION_ID", "").strip() or None
    if organization_id is not None and not _ORGANIZATION_ID.match(organization_id):
        raise SettingsError(f"ORGANIZATION_ID must be an organization id (o-...), got {organization_id[:40]!r}")

    return Settings(
        alert_topic_arn=topic,
        remediation_mode=mode,
        exempt_tag_key=tag_key,
        remediator_role_arn=role,
        outcome_table=table,
        flap_threshold=threshold,
        exemption_table=exemption_table,
        trust_exemption_tags=trust_exemption_tags,
        max_exemption_days=max_days,
        flap_digest_minutes=flap_digest_minutes,
        alert_dedup_hours=alert_dedup_hours,
        security_hub_findings=security_hub_findings,
        member_role_name=member_role_name,
        organization_id=organization_id,
        **_data_and_keys(env),
    )


def _true_or_false(env: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower() or str(default).lower()
    if raw not in ("true", "false"):
        raise SettingsError(f"{name} must be one of true | false, got {raw[:40]!r}")
    return raw == "true"


def _whole_number(env: Mapping[str, str], name: str, default: int, allowed: range) -> int:
    raw = env.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = allowed.start - 1
    if value not in allowed:
        raise SettingsError(f"{name} must be a whole number from {allowed.start} to {allowed.stop - 1}, got {raw!r}")
    return value


# Checks read their own numeric switches (tag_pii_bucket's SWEEP_FINDINGS_DAYS) the same way.
whole_number = _whole_number


def _data_and_keys(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of guard_kms_keys and guard_s3_data."""
    https_only = env.get("HTTPS_ONLY_BUCKETS", "").strip().lower() or "pii"
    if https_only not in HTTPS_ONLY_CHOICES:
        raise SettingsError(
            f"HTTPS_ONLY_BUCKETS must be one of {' | '.join(HTTPS_ONLY_CHOICES)}, got {https_only[:40]!r}"
        )
    trusted = [part.strip() for part in env.get("TRUSTED_ACCOUNT_IDS", "").split(",") if part.strip()]
    if any(not _ACCOUNT_ID.match(account) for account in trusted):
        raise SettingsError(
            f"TRUSTED_ACCOUNT_IDS must be comma-separated 12-digit account ids, got {','.join(trusted)[:120]!r}"
        )
    encryption_key = env.get("DEFAULT_ENCRYPTION_KEY_ARN", "").strip() or None
    if encryption_key is not None and not _KMS_KEY_ARN.match(encryption_key):
        raise SettingsError(
            "DEFAULT_ENCRYPTION_KEY_ARN must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), "
            f"got {encryption_key[:120]!r}"
        )
    return {
        "enable_key_rotation": _true_or_false(env, "ENABLE_KEY_ROTATION", default=True),
        "https_only_buckets": https_only,
        "trusted_account_ids": frozenset(trusted),
        "default_encryption_key_arn": encryption_key,
    }
