"""Settings are read once and fail at cold start with a message naming the variable."""

from __future__ import annotations

import pytest

from mlwarden.settings import RemediationMode, SettingsError, load_settings

TOPIC = "arn:aws:sns:us-east-1:123456789012:mlwarden-alerts"
ROLE = "arn:aws:iam::123456789012:role/BlockPublicS3Role"


def env(**overrides: str) -> dict[str, str]:
    values = {"ALERT_TOPIC_ARN": TOPIC}
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def test_minimal_environment_gives_enforce_mode_and_default_tag_key() -> None:
    settings = load_settings({"ALERT_TOPIC_ARN": TOPIC})

    assert settings.alert_topic_arn == TOPIC
    assert settings.remediation_mode is RemediationMode.ENFORCE
    assert settings.enforce is True
    assert settings.exempt_tag_key == "mlwarden:exempt"
    assert settings.remediator_role_arn is None


def test_every_variable_is_read() -> None:
    settings = load_settings(
        env(REMEDIATION_MODE="dry-run", EXEMPT_TAG_KEY="security/exempt", REMEDIATOR_ROLE_ARN=ROLE)
    )

    assert settings.remediation_mode is RemediationMode.DRY_RUN
    assert settings.enforce is False
    assert settings.exempt_tag_key == "security/exempt"
    assert settings.remediator_role_arn == ROLE


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_TOPIC_ARN", TOPIC)
    monkeypatch.setenv("REMEDIATION_MODE", "dry-run")

    assert load_settings().remediation_mode is RemediationMode.DRY_RUN


def test_surrounding_whitespace_is_ignored() -> None:
    settings = load_settings(
        env(ALERT_TOPIC_ARN=f"  {TOPIC}\n", REMEDIATION_MODE=" dry-run ", REMEDIATOR_ROLE_ARN=ROLE + " ")
    )

    assert settings.alert_topic_arn == TOPIC
    assert settings.remediation_mode is RemediationMode.DRY_RUN
    assert settings.remediator_role_arn == ROLE


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="missing"),
        pytest.param({"ALERT_TOPIC_ARN": ""}, id="empty"),
        pytest.param({"ALERT_TOPIC_ARN": "   "}, id="blank"),
    ],
)
def test_alert_topic_is_required(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"ALERT_TOPIC_ARN is required"):
        load_settings(environ)


@pytest.mark.parametrize(
    "value",
    [
        "mlwarden-alerts",  # a name, not an ARN
        "arn:aws:sqs:us-east-1:123456789012:mlwarden-alerts",  # another service
        "arn:aws:sns:us-east-1:12345:mlwarden-alerts",  # short account id
        "arn:aws:sns:us-east-1:123456789012:mlwarden alerts",  # space in the name
        "arn:aws:sns:us-east-1:123456789012:",  # no name
        "arn:aws:sns:us-east-1:123456789012:mlwarden-alerts:9f3c",  # a subscription ARN
    ],
)
def test_alert_topic_must_be_an_sns_topic_arn(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^ALERT_TOPIC_ARN must be an SNS topic ARN") as raised:
        load_settings({"ALERT_TOPIC_ARN": value})

    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws-us-gov:sns:us-gov-west-1:123456789012:alerts",
        "arn:aws-cn:sns:cn-north-1:123456789012:alerts",
        "arn:aws:sns:eu-west-1:123456789012:" + "a" * 256,
    ],
)
def test_alert_topic_in_other_partitions_is_accepted(value: str) -> None:
    assert load_settings({"ALERT_TOPIC_ARN": value}).alert_topic_arn == value


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_remediation_mode_means_enforce(value: str) -> None:
    assert load_settings(env(REMEDIATION_MODE=value)).remediation_mode is RemediationMode.ENFORCE


@pytest.mark.parametrize("value", ["fix", "dryrun", "dry_run", "audit", "true"])
def test_invalid_remediation_mode_names_the_variable_and_the_allowed_values(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env(REMEDIATION_MODE=value))

    message = str(raised.value)
    assert message.startswith("REMEDIATION_MODE must be one of")
    assert "enforce | dry-run" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_exempt_tag_key_means_the_default(value: str) -> None:
    assert load_settings(env(EXEMPT_TAG_KEY=value)).exempt_tag_key == "mlwarden:exempt"


@pytest.mark.parametrize(
    "value",
    ["aws:exempt", "AWS:exempt", "k" * 129, "exempt#now", "exempt*", "exempt{}", "exempt,x"],
)
def test_invalid_exempt_tag_key_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^EXEMPT_TAG_KEY must be a valid tag key"):
        load_settings(env(EXEMPT_TAG_KEY=value))


@pytest.mark.parametrize("value", ["k" * 128, "team:ml/exempt", "Exempt From Warden", "a+b=c.d_e:f/g@h", "ausnahme-ä"])
def test_valid_exempt_tag_keys_are_kept(value: str) -> None:
    assert load_settings(env(EXEMPT_TAG_KEY=value)).exempt_tag_key == value


@pytest.mark.parametrize("value", ["mlwarden:\texempt", "mlwarden:\nexempt"])
def test_exempt_tag_key_with_control_whitespace_is_rejected(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^EXEMPT_TAG_KEY"):
        load_settings(env(EXEMPT_TAG_KEY=value))


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_remediator_role_means_no_loop_guard_role(value: str) -> None:
    assert load_settings(env(REMEDIATOR_ROLE_ARN=value)).remediator_role_arn is None


def test_remediator_role_may_have_a_path() -> None:
    role = "arn:aws:iam::123456789012:role/service-role/mlwarden/BlockPublicS3Role"

    assert load_settings(env(REMEDIATOR_ROLE_ARN=role)).remediator_role_arn == role


@pytest.mark.parametrize(
    "value",
    [
        "BlockPublicS3Role",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:sts::123456789012:assumed-role/BlockPublicS3Role/session",
        "arn:aws:iam::1234:role/BlockPublicS3Role",
        "arn:aws:iam::123456789012:role/",
    ],
)
def test_invalid_remediator_role_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^REMEDIATOR_ROLE_ARN must be an IAM role ARN") as raised:
        load_settings(env(REMEDIATOR_ROLE_ARN=value))

    assert repr(value) in str(raised.value)


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --- exemptions ------------------------------------------------------------------------------------------


def test_exemption_defaults_trust_no_tags_and_allow_90_days() -> None:
    settings = load_settings(env())

    assert settings.exemption_table is None
    assert settings.trust_exemption_tags is False
    assert settings.max_exemption_days == 90


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_exemption_variables_mean_the_defaults(empty: str) -> None:
    settings = load_settings(env(EXEMPTION_TABLE=empty, TRUST_EXEMPTION_TAGS=empty, MAX_EXEMPTION_DAYS=empty))

    assert (settings.exemption_table, settings.trust_exemption_tags, settings.max_exemption_days) == (None, False, 90)


def test_exemption_variables_are_read() -> None:
    settings = load_settings(
        env(EXEMPTION_TABLE="mlwarden-exemptions", TRUST_EXEMPTION_TAGS="TRUE", MAX_EXEMPTION_DAYS="30")
    )

    assert (settings.exemption_table, settings.trust_exemption_tags, settings.max_exemption_days) == (
        "mlwarden-exemptions",
        True,
        30,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXEMPTION_TABLE", "no spaces allowed"),
        ("TRUST_EXEMPTION_TAGS", "yes"),
        ("MAX_EXEMPTION_DAYS", "0"),
        ("MAX_EXEMPTION_DAYS", "366"),
        ("MAX_EXEMPTION_DAYS", "-5"),
        ("MAX_EXEMPTION_DAYS", "²"),
        ("MAX_EXEMPTION_DAYS", "ninety"),
    ],
)
def test_invalid_exemption_variables_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(env(**{name: value}))


# --- flapping and alert dedup ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  "])
def test_flap_digest_and_dedup_window_default_when_empty(value: str) -> None:
    settings = load_settings(env(FLAP_DIGEST_MINUTES=value, ALERT_DEDUP_HOURS=value))
    assert (settings.flap_digest_minutes, settings.alert_dedup_hours) == (60, 24)


def test_flap_digest_and_dedup_window_are_read() -> None:
    settings = load_settings(env(FLAP_DIGEST_MINUTES="15", ALERT_DEDUP_HOURS="48"))
    assert (settings.flap_digest_minutes, settings.alert_dedup_hours) == (15, 48)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLAP_DIGEST_MINUTES", "4"),
        ("FLAP_DIGEST_MINUTES", "1441"),
        ("FLAP_DIGEST_MINUTES", "an hour"),
        ("FLAP_DIGEST_MINUTES", "7.5"),
        ("ALERT_DEDUP_HOURS", "0"),
        ("ALERT_DEDUP_HOURS", "169"),
        ("ALERT_DEDUP_HOURS", "-1"),
    ],
)
def test_invalid_flap_digest_or_dedup_window_names_the_variable_and_the_range(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name} must be a whole number from \d+ to \d+, got {value!r}"):
        load_settings(env(**{name: value}))


# --- guard_kms_keys and guard_s3_data ------------------------------------------------------------------------


def test_data_and_key_defaults_rotate_keys_and_make_pii_buckets_https_only() -> None:
    settings = load_settings(env())

    assert settings.enable_key_rotation is True
    assert settings.https_only_buckets == "pii"
    assert settings.trusted_account_ids == frozenset()
    assert settings.organization_id is None
    assert settings.default_encryption_key_arn is None


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_data_and_key_variables_mean_the_defaults(empty: str) -> None:
    settings = load_settings(
        env(
            ENABLE_KEY_ROTATION=empty,
            HTTPS_ONLY_BUCKETS=empty,
            TRUSTED_ACCOUNT_IDS=empty,
            ORGANIZATION_ID=empty,
            DEFAULT_ENCRYPTION_KEY_ARN=empty,
        )
    )

    assert (settings.enable_key_rotation, settings.https_only_buckets) == (True, "pii")
    assert settings.trusted_account_ids == frozenset()


def test_data_and_key_variables_are_read() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = load_settings(
        env(
            ENABLE_KEY_ROTATION="FALSE",
            HTTPS_ONLY_BUCKETS="all",
            TRUSTED_ACCOUNT_IDS="111122223333, 444455556666",
            ORGANIZATION_ID="o-abcdefghij",
            DEFAULT_ENCRYPTION_KEY_ARN=key,
        )
    )

    assert settings.enable_key_rotation is False
    assert settings.https_only_buckets == "all"
    assert settings.trusted_account_ids == frozenset({"111122223333", "444455556666"})
    assert settings.organization_id == "o-abcdefghij"
    assert settings.default_encryption_key_arn == key


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENABLE_KEY_ROTATION", "yes"),
        ("HTTPS_ONLY_BUCKETS", "some"),
        ("TRUSTED_ACCOUNT_IDS", "111122223333,abc"),
        ("TRUSTED_ACCOUNT_IDS", "*"),
        ("ORGANIZATION_ID", "r-abcd"),
        ("DEFAULT_ENCRYPTION_KEY_ARN", "alias/training"),
        ("DEFAULT_ENCRYPTION_KEY_ARN", "arn:aws:kms:us-east-1:123456789012:alias/training"),
    ],
)
def test_invalid_data_and_key_variables_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(env(**{name: value}))
