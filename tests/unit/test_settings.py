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
