"""`mlwarden sweep`: the contract of issue 13 (flags, exit status, output formats) against moto."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest

from mlwarden import checks, clients
from mlwarden.checks import CheckUnit
from mlwarden.inventory import Inventory
from mlwarden_cli import sweep as sweep_cli
from mlwarden_cli.main import main
from mlwarden_cli.replay import Replayed
from tests.conftest import ACCOUNT, ALL_ON, FIXTURES, AwsWorld

SARIF_SCHEMA = json.loads((FIXTURES / "sarif" / "sarif-schema-2.1.0.json").read_text("utf-8"))
# `replay --json`'s keys, whatever they are today, plus the sweep's own.
REPLAY_KEYS = set(Replayed("f", None, None, "compliant", None, None, (), False, "").as_json())
SWEEP_KEYS = REPLAY_KEYS | {"check", "controls"}


def sweep(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `mlwarden sweep ARGS`: exit status, stdout, stderr (argparse's refusals exit 2 too).

    These tests are about the CLI, with S3 state: they sweep block_public_s3 unless they name checks (the
    other checks' sweeps have their own tests; moto has no Macie finding API at all).
    """
    if "--all-checks-for-test" in args:
        args = tuple(arg for arg in args if arg != "--all-checks-for-test")
    elif "--check" not in args:
        args = ("--check", "block_public_s3", *args)
    try:
        status = main(["sweep", *args])
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def deployed(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> AwsWorld:
    """The environment names the stack's alert topic, outcome table and exemption registry."""
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    monkeypatch.setenv("OUTCOME_TABLE", aws.outcome_table)
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    return aws


@pytest.fixture
def account_blocked(aws: AwsWorld) -> AwsWorld:
    """An account whose account-level block is on: the buckets alone decide what is found."""
    aws.s3control.put_public_access_block(AccountId=ACCOUNT, PublicAccessBlockConfiguration=ALL_ON)
    return aws


def on_every_new_client(monkeypatch: pytest.MonkeyPatch, event: str, handler: Callable[..., Any]) -> None:
    """Register `handler` on every client built from now on (clients copy their session's handlers)."""
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register_first(event, handler)
    clients.client.cache_clear()


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


# --- dry-run, enforce, and what is sent ---------------------------------------------------------------------


def test_default_is_a_dry_run_that_changes_nothing_and_without_a_topic_sends_nothing(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("open-acl", acl="public-read")
    aws.bucket("no-block")

    status, out, _ = sweep(capsys)

    assert status == 1
    assert aws.block_of("open-acl") is None
    assert aws.block_of("no-block") is None
    assert aws.account_block() is None
    assert aws.alerts() == []
    assert "no alert sent (no ALERT_TOPIC_ARN)" in out
    assert "arn:aws:s3:::open-acl" in out
    assert "would-remediate" in out


def test_enforce_fixes_what_the_event_path_fixes_and_a_second_sweep_sends_nothing(
    deployed: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed.bucket("open-acl", acl="public-read")
    deployed.bucket("pii-open", acl="public-read", tags={"mlwarden:pii": "true"})
    deployed.bucket("locked", block=ALL_ON)

    status, out, _ = sweep(capsys, "--mode", "enforce", "--json")

    assert status == 1  # found (and fixed) a CRITICAL and two HIGH
    assert deployed.account_block() == ALL_ON
    assert deployed.block_of("open-acl") == ALL_ON
    assert deployed.block_of("pii-open") == ALL_ON
    by_resource = {line["resource"]: line for line in json_lines(out)}
    assert by_resource["arn:aws:s3:::pii-open"]["outcome"] == "remediated"
    assert by_resource["arn:aws:s3:::pii-open"]["severity"] == "CRITICAL"
    assert by_resource["arn:aws:s3:::locked"]["outcome"] == "compliant"
    first = deployed.alerts()
    assert sorted(alert.outcome["resource"] for alert in first) == [
        f"AWS::::Account:{ACCOUNT}",
        "arn:aws:s3:::open-acl",
        "arn:aws:s3:::pii-open",
    ]

    status, out, _ = sweep(capsys, "--mode", "enforce", "--json")

    assert status == 0
    assert {line["outcome"] for line in json_lines(out)} == {"compliant"}
    assert deployed.alerts() == first


def test_a_second_dry_run_over_unchanged_resources_sends_no_new_alert(
    deployed: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed.bucket("open-acl", acl="public-read")
    status, out, _ = sweep(capsys, "--json")
    assert status == 1
    assert [line["alerted"] for line in json_lines(out)] == [True, True]  # the account block, the bucket
    first = deployed.alerts()
    assert len(first) == 2

    status, out, _ = sweep(capsys, "--json")

    assert status == 1  # still found: still open
    assert [line["alerted"] for line in json_lines(out)] == [False, False]
    assert deployed.alerts() == first
    assert deployed.block_of("open-acl") is None


# --- output formats ------------------------------------------------------------------------------------------


def test_json_lines_carry_replays_keys_plus_check_and_no_event_id(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("open-acl", acl="public-read")
    aws.bucket("locked", block=ALL_ON)

    status, out, err = sweep(capsys, "--json", "--check", "block_public_s3")

    lines = json_lines(out)
    assert status == 1
    assert len(lines) == 3, err  # the account and two buckets
    for line in lines:
        assert set(line) == SWEEP_KEYS
        assert line["event_id"] is None
        assert line["check"] == "block_public_s3"
        assert line["function"] == "BlockPublicS3Function"
        assert isinstance(line["controls"], list)


def test_report_groups_findings_by_severity_critical_first_with_the_fix(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("no-block")  # MEDIUM
    aws.bucket("pii-open", acl="public-read", tags={"mlwarden:pii": "true"})  # CRITICAL
    aws.bucket("open-acl", acl="public-read")  # HIGH, as is the account without its block

    status, out, _ = sweep(capsys)

    assert status == 1
    headings = [line for line in out.splitlines() if line and line.split(" (")[0] in ("CRITICAL", "HIGH", "MEDIUM")]
    assert headings == ["CRITICAL (1)", "HIGH (2)", "MEDIUM (1)"]
    critical = out.split("CRITICAL (1)", 1)[1].split("HIGH (2)", 1)[0]
    assert "arn:aws:s3:::pii-open" in critical
    assert "Failed:    ACL grants READ to AllUsers" in critical
    assert "Would set: PublicAccessBlockConfiguration=" in critical
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("4 finding(s) (1 CRITICAL, 2 HIGH, 1 MEDIUM); 4 resource(s) evaluated")


def test_sarif_is_a_valid_sarif_2_1_0_log_with_one_result_per_finding(
    aws: AwsWorld, account_blocked: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("open-acl", acl="public-read")  # MEDIUM: the account-level block holds it back
    aws.bucket("locked", block=ALL_ON)

    status, out, _ = sweep(capsys, "--sarif")

    log = json.loads(out)
    jsonschema.validate(log, SARIF_SCHEMA)
    (run,) = log["runs"]
    assert status == 0
    assert [result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for result in run["results"]] == [
        "arn:aws:s3:::open-acl"
    ]
    assert run["results"][0]["level"] == "warning"
    assert run["results"][0]["properties"]["severity"] == "MEDIUM"
    assert run["results"][0]["properties"]["findings"] == ["ACL grants READ to AllUsers"]
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == ["block_public_s3"]


def test_sarif_of_a_clean_account_is_valid_too(
    aws: AwsWorld, account_blocked: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("locked", block=ALL_ON)
    status, out, _ = sweep(capsys, "--sarif")
    log = json.loads(out)
    jsonschema.validate(log, SARIF_SCHEMA)
    assert status == 0
    assert log["runs"][0]["results"] == []


def test_out_writes_the_output_to_the_file_and_nothing_to_stdout(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.bucket("open-acl", acl="public-read")
    target = tmp_path / "sweep.jsonl"

    status, out, _ = sweep(capsys, "--json", "--out", str(target))

    assert status == 1
    assert out == ""
    assert {line["resource"] for line in json_lines(target.read_text("utf-8"))} >= {"arn:aws:s3:::open-acl"}


def test_no_progress_bar_when_stderr_is_not_a_terminal(aws: AwsWorld, capsys: pytest.CaptureFixture[str]) -> None:
    aws.bucket("open-acl", acl="public-read")
    _, _, err = sweep(capsys, "--check", "block_public_s3")
    assert "[#" not in err
    assert "[-" not in err


def test_a_progress_bar_per_check_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    draw = sweep_cli.ProgressBars(stream).for_check("block_public_s3 us-east-1")
    assert draw is not None
    for done in range(5):
        draw("block_public_s3", done, 4)

    final = stream.getvalue().split("\r")[-1]
    assert final.startswith("block_public_s3 us-east-1")
    assert final.endswith("[" + "#" * sweep_cli.ProgressBars.WIDTH + "] 4/4\n")


def test_stats_prints_the_requests_per_operation_to_stderr(
    aws: AwsWorld, account_blocked: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("locked-1", block=ALL_ON)
    aws.bucket("locked-2", block=ALL_ON)

    _, out, err = sweep(capsys, "--stats", "--json")

    counts = {line.split()[1]: int(line.split()[0]) for line in err.splitlines() if line.strip()[:1].isdigit()}
    # Both buckets' blocks are fully on: one cheap read each, nothing deeper.
    assert counts["s3:GetPublicAccessBlock"] == 2
    assert counts["s3:ListBuckets"] == 1
    assert "s3:GetBucketAcl" not in counts
    assert counts["requests"] == sum(count for name, count in counts.items() if name != "requests")
    assert len(json_lines(out)) == 3


# --- which checks ------------------------------------------------------------------------------------------


@pytest.fixture
def without_a_unit(monkeypatch: pytest.MonkeyPatch) -> str:
    """flag_wildcard_iam as a check module that has no UNIT yet (it cannot list its resources)."""
    load = checks.load

    def load_or_fail(name: str) -> CheckUnit:
        if name == "flag_wildcard_iam":
            raise KeyError("check 'flag_wildcard_iam' has no CheckUnit yet")
        return load(name)

    monkeypatch.setattr(sweep_cli.checks, "load", load_or_fail)
    return "flag_wildcard_iam"


def test_a_check_that_cannot_list_yet_is_skipped_with_a_note(
    aws: AwsWorld,
    account_blocked: AwsWorld,
    capsys: pytest.CaptureFixture[str],
    without_a_unit: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws.bucket("locked", block=ALL_ON)
    # Every check but the Macie one (moto has no Macie finding API): the one without a unit is skipped.
    monkeypatch.setattr(sweep_cli.checks, "CHECK_NAMES", ("block_public_s3", "flag_wildcard_iam"))
    status, out, err = sweep(capsys, "--json", "--all-checks-for-test")
    assert status == 0
    assert f"{without_a_unit} skipped" in err
    assert without_a_unit not in {line["check"] for line in json_lines(out)}


def test_asking_for_a_check_that_cannot_list_exits_2(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], without_a_unit: str
) -> None:
    status, out, err = sweep(capsys, "--check", without_a_unit)
    assert status == 2
    assert out == ""
    assert "cannot sweep yet" in err


def test_check_limits_the_sweep_to_the_named_checks(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("open-acl", acl="public-read")
    loaded: list[str] = []
    load = checks.load
    monkeypatch.setattr(sweep_cli.checks, "load", lambda name: loaded.append(name) or load(name))

    status, out, err = sweep(capsys, "--json", "--check", "block_public_s3")

    assert loaded == ["block_public_s3"]
    assert "skipped" not in err
    assert {line["check"] for line in json_lines(out)} == {"block_public_s3"}
    assert status == 1


# --- exit status -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--check", "no_such_check"],
        ["--region", "mars-north-1"],
        ["--fail-on", "SEVERE"],
        ["--json", "--sarif"],
        ["--mode", "fix-everything"],
    ],
    ids=["unknown-check", "bad-region", "bad-severity", "json-and-sarif", "bad-mode"],
)
def test_unusable_arguments_exit_2_before_anything_is_read(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    aws.bucket("open-acl", acl="public-read")
    status, out, err = sweep(capsys, *args)
    assert status == 2
    assert out == ""
    assert err
    assert aws.block_of("open-acl") is None


def test_an_invalid_configuration_variable_exits_2(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAP_THRESHOLD", "many")
    status, _, err = sweep(capsys)
    assert status == 2
    assert "FLAP_THRESHOLD" in err


def test_fail_on_sets_the_severity_that_fails(
    aws: AwsWorld, account_blocked: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("open-acl", acl="public-read")  # MEDIUM: the account-level block holds it back

    assert sweep(capsys, "--fail-on", "CRITICAL")[0] == 0
    assert sweep(capsys)[0] == 0  # default HIGH
    assert sweep(capsys, "--fail-on", "medium")[0] == 1
    assert sweep(capsys, "--fail-on", "LOW")[0] == 1


def test_a_clean_account_exits_0(aws: AwsWorld, account_blocked: AwsWorld, capsys: pytest.CaptureFixture[str]) -> None:
    aws.bucket("locked", block=ALL_ON)
    status, out, _ = sweep(capsys)
    assert status == 0
    assert out.strip().splitlines()[-1].startswith("0 finding(s) (none); 2 resource(s) evaluated")


# --- faults ------------------------------------------------------------------------------------------------


def test_a_listing_that_is_refused_is_a_high_failure_naming_what_was_not_listed(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("open-acl", acl="public-read")

    def access_denied(**_: Any) -> tuple[_Http, dict[str, Any]]:
        error = {"Code": "AccessDenied", "Message": "Access Denied"}
        return _Http(403), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}

    on_every_new_client(monkeypatch, "before-call.s3.ListBuckets", access_denied)

    status, out, _ = sweep(capsys, "--json", "--fail-on", "CRITICAL")

    failed = [line for line in json_lines(out) if line["outcome"] == "failed"]
    assert status == 1  # a listing nobody could read is never "clean", whatever --fail-on says
    assert len(failed) == 1
    assert failed[0]["severity"] == "HIGH"
    assert "could not list the block_public_s3 resources" in failed[0]["reason"]
    assert "s3:ListBuckets" in failed[0]["reason"] or "AccessDenied" in failed[0]["reason"]


def test_a_bucket_deleted_between_listing_and_evaluation_ends_ignored(
    aws: AwsWorld, account_blocked: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.bucket("open-acl", acl="public-read")
    aws.bucket("short-lived")
    unit = checks.load("block_public_s3")

    def listing_then_deleted(inventory: Inventory) -> Iterator[Any]:
        listed = list(unit.targets_from_inventory(inventory))
        aws.s3.delete_bucket(Bucket="short-lived")
        return iter(listed)

    deleting = dataclasses.replace(unit, targets_from_inventory=listing_then_deleted)
    monkeypatch.setattr(sweep_cli.checks, "load", lambda name: deleting)

    status, out, err = sweep(capsys, "--check", "block_public_s3")

    assert status == 0  # open-acl is MEDIUM
    assert "Not evaluated (1)" in out
    assert "arn:aws:s3:::short-lived (block_public_s3): the bucket no longer exists" in out
    assert "Traceback" not in err


def test_enforce_grades_a_public_pii_bucket_on_the_state_found_not_on_the_account_fix_racing_it(
    deployed: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account-level block, fixed first, would hold the bucket's public ACL back: MEDIUM instead of
    CRITICAL for a PII bucket that was public until then. An event about the bucket says CRITICAL."""
    deployed.bucket("pii-open", acl="public-read", tags={"mlwarden:pii": "true"})
    # The bucket's first read is slow, so that a concurrent account fix would land before its grading.
    on_every_new_client(monkeypatch, "before-call.s3.GetPublicAccessBlock", lambda **_: time.sleep(0.3))

    status, out, _ = sweep(capsys, "--mode", "enforce", "--json")

    by_resource = {line["resource"]: line for line in json_lines(out)}
    assert status == 1
    assert by_resource["arn:aws:s3:::pii-open"]["outcome"] == "remediated"
    assert by_resource["arn:aws:s3:::pii-open"]["severity"] == "CRITICAL"
    assert by_resource[f"AWS::::Account:{ACCOUNT}"]["outcome"] == "remediated"
    assert deployed.account_block() == ALL_ON
    assert deployed.block_of("pii-open") == ALL_ON
    severities = {alert.outcome["resource"]: alert.outcome["severity"] for alert in deployed.alerts()}
    assert severities["arn:aws:s3:::pii-open"] == "CRITICAL"


def test_the_alert_for_a_refused_listing_says_what_could_not_be_listed_and_how_to_retry(
    deployed: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def access_denied(**_: Any) -> tuple[_Http, dict[str, Any]]:
        error = {"Code": "AccessDenied", "Message": "Access Denied"}
        return _Http(403), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}

    on_every_new_client(monkeypatch, "before-call.s3.ListBuckets", access_denied)

    status, _, _ = sweep(capsys, "--check", "block_public_s3")

    alert = deployed.only_alert()
    assert status == 1
    assert alert.outcome["outcome"] == "failed"
    assert alert.outcome["severity"] == "HIGH"
    assert "could not list the block_public_s3 resources" in alert.outcome["reason"]
    assert "mlwarden sweep --check block_public_s3" in alert.body
    assert "dead-letter queue" not in alert.body  # there is no event to re-drive


def test_several_regions_read_each_bucket_in_its_own_region_and_the_account_once(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.bucket("in-virginia", acl="public-read")
    aws.s3.create_bucket(Bucket="in-ireland", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    status, out, _ = sweep(capsys, "--json", "--region", "us-east-1", "--region", "eu-west-1")

    lines = json_lines(out)
    assert status == 1
    assert sorted((line["resource"], line["source"]) for line in lines) == [
        (f"AWS::::Account:{ACCOUNT}", f"sweep:{ACCOUNT}:us-east-1"),
        ("arn:aws:s3:::in-ireland", f"sweep:{ACCOUNT}:eu-west-1"),
        ("arn:aws:s3:::in-virginia", f"sweep:{ACCOUNT}:us-east-1"),
    ]


def test_asff_writes_the_findings_security_hub_would_get(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.securityhub.fake_hub import validate  # noqa: PLC0415 - botocore's own model of Security Hub

    aws.bucket("open-acl", acl="public-read")
    aws.bucket("locked", block=ALL_ON)
    asff = tmp_path / "findings.json"

    status, _, err = sweep(capsys, "--asff", str(asff))

    assert status == 1, err
    findings = json.loads(asff.read_text())
    validate("BatchImportFindings", {"Findings": findings})
    by_id = {finding["Id"]: finding for finding in findings}
    # The open bucket fails S3.8 (its block) and S3.2 (public read); the locked bucket passed and has none.
    assert "mlwarden/block_public_s3/S3.8/arn:aws:s3:::open-acl" in by_id
    assert "mlwarden/block_public_s3/S3.2/arn:aws:s3:::open-acl" in by_id
    assert not any("locked" in finding_id for finding_id in by_id)
    assert all(f["Compliance"]["Status"] == "FAILED" and f["Workflow"]["Status"] == "NEW" for f in findings)
