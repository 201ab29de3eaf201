"""Alert rendering: a subject SNS accepts, a body a person can act on, attributes a filter policy can use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.alerts import SUBJECT_LIMIT, render, subject_for
from mlwarden.outcomes import Outcome, OutcomeKind, Severity, Trigger

BUCKET_63 = "ml-training-data-" + "x" * 46
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def trigger(**overrides: Any) -> Trigger:
    values: dict[str, Any] = {
        "event_id": "e-1",
        "source": "aws.s3",
        "kind": "cloudtrail",
        "name": "PutBucketAcl",
        "actor": "arn:aws:sts::123456789012:assumed-role/DataScientist/alice (AssumedRole)",
        "time": "2026-01-01T10:00:00Z",
        "account": "123456789012",
        "region": "us-east-1",
    }
    values.update(overrides)
    return Trigger(**values)


def remediated(resource: str = "arn:aws:s3:::training-data", **overrides: Any) -> Outcome:
    values: dict[str, Any] = {
        "check": "block_public_s3",
        "outcome": OutcomeKind.REMEDIATED,
        "severity": Severity.HIGH,
        "reason": "bucket is public (ACL grants READ to AllUsers); all four settings turned on and verified",
        "trigger": trigger(),
        "resource": resource,
        "actions": ("s3:PutBucketPublicAccessBlock",),
        "previous_state": {"PublicAccessBlockConfiguration": None},
        "new_state": {"PublicAccessBlockConfiguration": ALL_ON},
        "undo": "aws s3api delete-public-access-block --bucket training-data",
        "exempt_hint": "add the tag mlwarden:exempt=true to bucket training-data",
        "details": {"public_via": ["ACL grants READ to AllUsers"]},
    }
    values.update(overrides)
    return Outcome(**values)


def body_line(body: str, label: str) -> str:
    for line in body.splitlines():
        if line.startswith(f"{label}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label} line in:\n{body}")


def outcome_json(body: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(body.split("\nOutcome (JSON):\n", 1)[1])
    return parsed


def test_subject_names_severity_headline_check_and_bucket() -> None:
    assert subject_for(remediated()) == "[ML Warden] HIGH fixed: block_public_s3 training-data"


def test_subject_for_an_account_keeps_the_account_resource() -> None:
    outcome = remediated(resource="AWS::::Account:123456789012")

    assert subject_for(outcome) == "[ML Warden] HIGH fixed: block_public_s3 AWS::::Account:123456789012"


def test_subject_without_resource_says_unknown() -> None:
    assert subject_for(remediated(resource=None)).endswith("unknown resource")


@pytest.mark.parametrize("kind", list(OutcomeKind))
@pytest.mark.parametrize("severity", list(Severity))
def test_subject_fits_sns_limit_with_the_longest_bucket_name(kind: OutcomeKind, severity: Severity) -> None:
    subject = subject_for(remediated(f"arn:aws:s3:::{BUCKET_63}", outcome=kind, severity=severity))

    assert len(subject) < 100
    assert subject.isascii()
    assert subject.isprintable()


def test_long_subject_is_cut_with_an_ellipsis() -> None:
    subject = subject_for(
        remediated(f"arn:aws:s3:::{BUCKET_63}", outcome=OutcomeKind.WOULD_REMEDIATE, severity=Severity.CRITICAL)
    )

    assert len(subject) == SUBJECT_LIMIT
    assert subject.endswith("...")
    assert subject.startswith("[ML Warden] CRITICAL would fix (dry run): block_public_s3 ml-training-data-")


def test_non_ascii_and_line_breaks_are_replaced_in_the_subject() -> None:
    subject = subject_for(remediated(resource="données-été\nbucket\t"))

    assert subject == "[ML Warden] HIGH fixed: block_public_s3 donn?es-?t??bucket?"


@settings(max_examples=200, deadline=None)
@given(resource=st.text(max_size=300), check=st.text(min_size=1, max_size=80))
def test_any_subject_is_printable_ascii_under_100_characters(resource: str, check: str) -> None:
    subject = subject_for(remediated(resource=resource, check=check))

    assert len(subject) < 100
    assert all(" " <= char <= "~" for char in subject)


def test_attributes_carry_severity_check_outcome_account_region() -> None:
    alert = render(remediated())

    assert alert.attributes == {
        "severity": {"DataType": "String", "StringValue": "HIGH"},
        "check": {"DataType": "String", "StringValue": "block_public_s3"},
        "outcome": {"DataType": "String", "StringValue": "remediated"},
        "account": {"DataType": "String", "StringValue": "123456789012"},
        "region": {"DataType": "String", "StringValue": "us-east-1"},
    }


def test_missing_account_and_region_attributes_are_unknown_not_empty() -> None:
    alert = render(remediated(trigger=trigger(account=None, region=None)))

    assert alert.attributes["account"]["StringValue"] == "unknown"
    assert alert.attributes["region"]["StringValue"] == "unknown"


def test_body_says_what_where_who_done_undo_exempt() -> None:
    body = render(remediated()).body

    assert body.splitlines()[0] == "ML Warden block_public_s3: fixed (HIGH)"
    assert body_line(body, "What").startswith("bucket is public (ACL grants READ to AllUsers)")
    assert body_line(body, "Where") == "arn:aws:s3:::training-data (account 123456789012, region us-east-1)"
    assert body_line(body, "Who") == (
        "arn:aws:sts::123456789012:assumed-role/DataScientist/alice (AssumedRole), via PutBucketAcl "
        "at 2026-01-01T10:00:00Z (event e-1)"
    )
    assert body_line(body, "Done") == "s3:PutBucketPublicAccessBlock"
    assert body_line(body, "Now") == (
        'PublicAccessBlockConfiguration={"BlockPublicAcls": true, "IgnorePublicAcls": true, '
        '"BlockPublicPolicy": true, "RestrictPublicBuckets": true}'
    )
    before = body_line(body, "Before")
    assert before.startswith("PublicAccessBlockConfiguration=")
    assert "true" not in before  # no configuration before the fix
    assert body_line(body, "Undo") == "aws s3api delete-public-access-block --bucket training-data"
    assert body_line(body, "Exempt") == "add the tag mlwarden:exempt=true to bucket training-data"


def test_body_ends_with_the_outcome_as_json() -> None:
    outcome = remediated()

    parsed = outcome_json(render(outcome).body)

    assert parsed == json.loads(json.dumps(outcome.as_dict()))
    assert parsed["outcome"] == "remediated"
    assert parsed["previous_state"] == {"PublicAccessBlockConfiguration": None}
    assert parsed["trigger"]["name"] == "PutBucketAcl"


def test_dry_run_body_says_what_would_be_set() -> None:
    body = render(remediated(outcome=OutcomeKind.WOULD_REMEDIATE, actions=(), undo=None)).body

    assert body_line(body, "Done") == "no change made"
    assert body_line(body, "Would set").startswith('PublicAccessBlockConfiguration={"BlockPublicAcls": true')
    assert "\nNow:" not in body
    assert "\nUndo:" not in body


def test_config_trigger_without_actor_names_the_source() -> None:
    body = render(remediated(trigger=trigger(actor=None, kind="config", source="aws.config", time=None))).body

    assert body_line(body, "Who").startswith("config (aws.config), via PutBucketAcl at unknown time")


@pytest.mark.parametrize(
    ("kind", "needs_alert"),
    [
        (OutcomeKind.REMEDIATED, True),
        (OutcomeKind.WOULD_REMEDIATE, True),
        (OutcomeKind.FLAGGED, True),
        (OutcomeKind.EXEMPT, True),
        (OutcomeKind.FAILED, True),
        (OutcomeKind.COMPLIANT, False),
        (OutcomeKind.IGNORED, False),
    ],
)
def test_only_outcomes_for_a_human_need_an_alert(kind: OutcomeKind, needs_alert: bool) -> None:
    assert remediated(outcome=kind).needs_alert is needs_alert


def test_outcome_metric_names_are_camel_case() -> None:
    assert [kind.metric_name for kind in OutcomeKind] == [
        "Remediated",
        "WouldRemediate",
        "Flagged",
        "Compliant",
        "Exempt",
        "Ignored",
        "Failed",
    ]


# --- what failed: the subject never claims a fix for a check that only reads or flags ---------------------

SAGEMAKER = "check_sagemaker_encryption"
# (case, check, the action that failed, how the outcome records it, error code, expected headline)
# An action in `details.failed_action` raised; an action in `actions` was made but did not read back.
FAILED_CASES: list[tuple[str, str, str | None, str, str, str]] = [
    ("block write refused", "block_public_s3", "s3:PutBucketPublicAccessBlock", "raised", "AccessDenied", "to fix"),
    ("block not read back", "block_public_s3", "s3:PutBucketPublicAccessBlock", "done", "VerificationFailed", "to fix"),
    ("IAM policy unreadable", "flag_wildcard_iam", "iam:GetRolePolicy", "raised", "Throttling", "to check"),
    ("IAM tag not read back", "flag_wildcard_iam", "iam:TagRole", "done", "VerificationFailed", "to tag"),
    ("IAM revert refused", "flag_wildcard_iam", "iam:SetDefaultPolicyVersion", "raised", "AccessDenied", "to fix"),
    (
        "SageMaker describe refused",
        "check_sagemaker_encryption",
        "sagemaker:DescribeTrainingJob",
        "raised",
        "",
        "to check",
    ),
    ("SageMaker stop refused", SAGEMAKER, "sagemaker:StopTrainingJob", "raised", "", "to stop"),
    ("PII tags refused", "tag_pii_bucket", "s3:PutBucketTagging", "raised", "AccessDenied", "to tag"),
    ("nothing known about the failure", "tag_pii_bucket", None, "done", "VerificationFailed", ""),
]


def test_a_check_may_say_itself_what_it_failed_to_do() -> None:
    outcome = remediated(
        check="flag_wildcard_iam",
        outcome=OutcomeKind.FAILED,
        actions=(),
        details={"failed_action": "iam:TagRole", "failed_to": "flag", "next_step": "grant iam:TagRole"},
    )

    alert = render(outcome)

    assert alert.subject.startswith("[ML Warden] HIGH FAILED to flag: flag_wildcard_iam")
    assert body_line(alert.body, "To do") == "grant iam:TagRole"
    assert "By hand: do what To do above says." in what_to_do(alert.body)


@pytest.mark.parametrize(
    ("check", "action", "recorded", "code", "expected"), [c[1:] for c in FAILED_CASES], ids=[c[0] for c in FAILED_CASES]
)
def test_a_failed_subject_says_what_failed(
    check: str, action: str | None, recorded: str, code: str, expected: str
) -> None:
    outcome = remediated(
        check=check,
        outcome=OutcomeKind.FAILED,
        actions=(action,) if action and recorded == "done" else (),
        details={"failed_action": action} if recorded == "raised" else {},
        error_code=code or "AccessDeniedException",
        undo=None,
        new_state=None,
        previous_state=None,
    )
    headline = f"FAILED {expected}".strip()

    assert subject_for(outcome).startswith(f"[ML Warden] HIGH {headline}: {check} ")
    assert render(outcome).body.splitlines()[0] == f"ML Warden {check}: {headline} (HIGH)"


# --- what to do now -----------------------------------------------------------------------------------------


def what_to_do(body: str) -> str:
    return body.split("\nWhat to do now:\n", 1)[1].split("\n\n", 1)[0]


def test_a_fix_says_verify_how_to_undo_and_how_to_keep_it_open() -> None:
    steps = what_to_do(render(remediated()).body)

    assert "Verify that the change is wanted" in steps
    assert "To undo it: aws s3api delete-public-access-block --bucket training-data" in steps
    # the check's own exemption hint, else the registry command the security team runs
    assert "To keep it as it was, add the tag mlwarden:exempt=true to bucket training-data" in steps
    steps = what_to_do(render(remediated(exempt_hint=None)).body)
    assert (
        "To keep it as it was, ask the security team to register it: mlwarden exempt add "
        "arn:aws:s3:::training-data --until YYYY-MM-DD --reason TEXT --check block_public_s3"
    ) in steps


def test_a_flag_says_the_checks_own_next_step() -> None:
    outcome = remediated(
        check="flag_wildcard_iam",
        outcome=OutcomeKind.FLAGGED,
        actions=(),
        undo=None,
        next_step="replace s3:* on * with the actions and buckets the role needs",
    )

    body = render(outcome).body

    assert body_line(body, "To do") == "replace s3:* on * with the actions and buckets the role needs"
    assert "Next: do what To do above says." in what_to_do(body)
    assert "must fix it" in what_to_do(body)
    assert render(outcome).subject.startswith("[ML Warden] HIGH flagged: flag_wildcard_iam")


def test_a_flag_without_a_next_step_still_says_what_to_do() -> None:
    outcome = remediated(outcome=OutcomeKind.FLAGGED, actions=(), undo=None, exempt_hint=None)

    steps = what_to_do(render(outcome).body)

    assert "Next: fix what What above names" in steps
    assert "mlwarden exempt add" in steps


def test_a_dry_run_says_nothing_was_changed() -> None:
    steps = what_to_do(render(remediated(outcome=OutcomeKind.WOULD_REMEDIATE, actions=(), undo=None)).body)

    assert steps.strip().startswith("Dry run: nothing was changed")


def test_an_exemption_says_how_to_end_it() -> None:
    outcome = remediated(outcome=OutcomeKind.EXEMPT, details={"exemption": "registry entry until 2026-03-01"})

    steps = what_to_do(render(outcome).body)

    assert "exempt (registry entry until 2026-03-01)" in steps
    assert "mlwarden exempt revoke arn:aws:s3:::training-data" in steps


def test_a_refused_fix_says_which_permission_to_check_and_what_to_set_by_hand() -> None:
    outcome = remediated(
        outcome=OutcomeKind.FAILED,
        actions=(),
        undo=None,
        error_code="AccessDenied",
        details={"failed_action": "s3:PutBucketPublicAccessBlock"},
    )

    steps = what_to_do(render(outcome).body)

    assert "s3:PutBucketPublicAccessBlock failed with AccessDenied" in steps
    assert "ML Warden's role may call s3:PutBucketPublicAccessBlock" in steps
    assert 'By hand: set PublicAccessBlockConfiguration={"BlockPublicAcls": true' in steps
    assert "mlwarden replay --from-dlq" in steps


CHECKS = ["block_public_s3", "tag_pii_bucket", "flag_wildcard_iam", "check_sagemaker_encryption"]


@pytest.mark.parametrize("kind", [k for k in OutcomeKind if k not in (OutcomeKind.COMPLIANT, OutcomeKind.IGNORED)])
@pytest.mark.parametrize("check", CHECKS)
def test_every_alert_body_says_what_to_do_now(kind: OutcomeKind, check: str) -> None:
    steps = what_to_do(render(remediated(check=check, outcome=kind)).body)

    assert len(steps.strip().splitlines()) >= 2


# --- size: whatever the outcome, the message fits SNS and its JSON block stays whole -----------------------

SNS_LIMIT = 262_144  # https://docs.aws.amazon.com/sns/latest/api/API_MessageAttributeValue.html
TOP_LEVEL_KEYS = set(remediated().as_dict())


def published_bytes(alert: Any) -> int:
    parts = [alert.subject, alert.body]
    for name, value in alert.attributes.items():
        parts += [name, *value.values()]
    return sum(len(part.encode("utf-8")) for part in parts)


def test_a_small_alert_is_not_cut() -> None:
    alert = render(remediated())

    assert "truncated" not in outcome_json(alert.body)
    assert "\nCut:" not in alert.body


def test_a_huge_finding_list_is_cut_with_counts_and_the_json_stays_whole() -> None:
    findings = [{"rule": f"rule-{i}", "statement": "s3:* on * " * 20, "severity": "HIGH"} for i in range(6_000)]
    outcome = remediated(outcome=OutcomeKind.FLAGGED, details={"findings": findings}, reason="x" * 50_000)

    alert = render(outcome)

    assert published_bytes(alert) < SNS_LIMIT // 4
    parsed = outcome_json(alert.body)
    assert set(parsed) == TOP_LEVEL_KEYS | {"truncated"}
    cut = parsed["truncated"]["details.findings"]
    assert cut["kept"] == len(parsed["details"]["findings"])
    assert cut["kept"] + cut["left_out"] == 6_000
    assert parsed["truncated"]["reason"]["characters_left_out"] > 0
    assert body_line(alert.body, "Cut").startswith("this alert was shortened")
    # the attributes a filter policy uses are the same as on any alert
    assert alert.attributes == render(remediated(outcome=OutcomeKind.FLAGGED)).attributes


def test_non_ascii_text_is_measured_in_bytes() -> None:
    outcome = remediated(reason="données " * 40_000, details={"types": ["é" * 1000] * 500})

    alert = render(outcome)

    assert published_bytes(alert) < SNS_LIMIT // 4
    assert outcome_json(alert.body)["check"] == "block_public_s3"


def test_a_deeply_nested_detail_cannot_break_the_alert() -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(5_000):
        inner["next"] = {}
        inner = inner["next"]

    alert = render(remediated(details={"nested": nested}))

    assert published_bytes(alert) < SNS_LIMIT // 4
    assert "details.nested" in next(iter(outcome_json(alert.body)["truncated"]))


@settings(max_examples=60, deadline=None)
@given(
    details=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=3_000),
        lambda children: st.lists(children, max_size=40) | st.dictionaries(st.text(max_size=20), children, max_size=40),
        max_leaves=400,
    ),
    reason=st.text(max_size=20_000),
)
def test_any_outcome_renders_within_the_budget_with_a_whole_json_block(details: Any, reason: str) -> None:
    alert = render(remediated(details={"any": details}, reason=reason))

    assert published_bytes(alert) < SNS_LIMIT // 4
    assert set(outcome_json(alert.body)) >= TOP_LEVEL_KEYS


# --- what an alert may name ----------------------------------------------------------------------------------

EMAIL_ACTOR = (
    "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_DataScientist_0a1b2c3d/jane.doe@example.com (AssumedRole)"
)


def test_an_email_session_name_is_kept_as_the_actor() -> None:
    alert = render(remediated(trigger=trigger(actor=EMAIL_ACTOR)))

    assert body_line(alert.body, "Who").startswith(EMAIL_ACTOR)
    assert outcome_json(alert.body)["trigger"]["actor"] == EMAIL_ACTOR


FOREIGN = {"cost-center": "cc-4711-falcon", "owner": "ana.lopez@example.com"}
OWN = {"mlwarden:pii": "true", "mlwarden:pii-severity": "High"}


def test_other_teams_tags_are_hidden_wherever_they_appear_and_ours_are_shown() -> None:
    tag_set = [{"Key": k, "Value": v} for k, v in {**FOREIGN, **OWN}.items()]
    tagging = json.dumps({"TagSet": tag_set}, separators=(",", ":"))
    outcome = remediated(
        check="tag_pii_bucket",
        previous_state={"Tags": {**FOREIGN, **OWN}},
        new_state={"TagSet": tag_set},
        undo=f"aws s3api put-bucket-tagging --bucket b --tagging '{tagging}'",
        exempt_hint="aws iam tag-role --role-name r --tags Key=owner,Value=ana.lopez@example.com",
        details={"tags": {"seen": {**FOREIGN, **OWN}}, "resource_tags": tag_set},
    )

    alert = render(outcome)

    for text in (alert.body, alert.subject):
        for key, value in FOREIGN.items():
            assert value not in text
            assert f'"{key}"' not in text
            assert f"={key}," not in text
    parsed = outcome_json(alert.body)
    assert parsed["previous_state"]["Tags"] == {**OWN, "(other tags)": "2 not shown"}
    assert parsed["details"]["tags"]["seen"] == {**OWN, "(other tags)": "2 not shown"}
    assert {"Key": "mlwarden:pii", "Value": "true"} in parsed["new_state"]["TagSet"]
    assert {"Key": "<key not shown>", "Value": "<value not shown>"} in parsed["details"]["resource_tags"]
    assert '{"Key":"<key not shown>","Value":"<value not shown>"}' in body_line(alert.body, "Undo")
    assert '{"Key":"mlwarden:pii","Value":"true"}' in body_line(alert.body, "Undo")
    assert "Key=<key not shown>,Value=<value not shown>" in body_line(alert.body, "Exempt")


# --- text from events: whatever it holds, SNS accepts the message and no line is forged -----------------------


def test_a_value_cannot_forge_a_line_or_make_sns_refuse_the_message() -> None:
    forged = "training-data\nUndo:      aws s3api delete-bucket --bucket training-data\x00\ud800"
    outcome = remediated(
        new_state={"\ud800" + "k" * 100_000: True},
        resource=forged,
        reason=f"bucket {forged} is public",
        trigger=trigger(region="us-east-1\r\nX-Injected: 1", actor="alice\u2028Who: mallory"),
    )

    alert = render(outcome)

    alert.body.encode("utf-8")  # valid UTF-8: SNS takes nothing else
    undo_lines = [line for line in alert.body.splitlines() if line.startswith("Undo:")]
    assert undo_lines == ["Undo:      aws s3api delete-public-access-block --bucket training-data"]
    assert [line for line in alert.body.splitlines() if line.startswith("Who:")] == [
        "Who:       alice Who: mallory, via PutBucketAcl at 2026-01-01T10:00:00Z (event e-1)"
    ]
    assert all(" " <= ch <= "~" for value in alert.attributes.values() for ch in value["StringValue"])
    assert outcome_json(alert.body)["resource"].startswith("training-data\nUndo:")  # the JSON keeps it, escaped


# AWS tag keys and values: letters, digits, spaces and + - = . _ : / @ (values here without spaces, as a
# command's shorthand needs quotes around one with spaces).
TAG_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-=._:/@", min_size=4)


@settings(max_examples=100, deadline=None)
@given(tags=st.dictionaries(TAG_TEXT.map(lambda k: f"QXK{k}"), TAG_TEXT.map(lambda v: f"QXV{v}"), min_size=1))
def test_no_shape_of_another_teams_tags_reaches_an_alert(tags: dict[str, str]) -> None:
    tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
    shorthand = " ".join(f"Key={k},Value={v}" for k, v in tags.items())
    outcome = remediated(
        previous_state={"Tags": tags},
        new_state={"TagSet": tag_set},
        undo=f"aws s3api put-bucket-tagging --bucket b --tagging '{json.dumps({'TagSet': tag_set})}'",
        exempt_hint=f"aws iam tag-role --role-name r --tags {shorthand}",
        details={"tags": {"read": tags}, "list": [{"key": k, "value": v} for k, v in tags.items()]},
    )

    alert = render(outcome)

    assert "QXK" not in alert.body
    assert "QXV" not in alert.body
