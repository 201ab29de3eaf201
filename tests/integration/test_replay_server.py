"""`mlwarden replay` as a user runs it: a separate process, against moto server over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

import mlwarden
from mlwarden_cli.emulator import (
    EXEMPTION_TABLE,
    FAKE_CREDENTIALS,
    OUTCOME_TABLE,
    create_exemption_table,
    create_outcome_table,
    moto_server,
)

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
MLWARDEN = Path(sys.executable).parent / "mlwarden"
UNRELATED = "unrelated/ec2-run-instances.json"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def account(endpoint: str) -> dict[str, Any]:
    """A fresh account state in the shared server: reset, then a topic with an SQS subscriber."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)
    s3, sns, sqs = (
        boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for service in ("s3", "sns", "sqs")
    )
    create_outcome_table(
        boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    )
    topic = sns.create_topic(Name="mlwarden-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    s3.create_bucket(Bucket="mlw-training-data-acl")
    s3.put_bucket_acl(Bucket="mlw-training-data-acl", ACL="public-read")
    return {"s3": s3, "sqs": sqs, "queue": queue, "topic": topic, "endpoint": endpoint}


def _replay(account: dict[str, Any], *args: str, topic: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": account["endpoint"],
        "ALERT_TOPIC_ARN": topic or account["topic"],
        "OUTCOME_TABLE": OUTCOME_TABLE,
    }
    return subprocess.run(
        [str(MLWARDEN), "replay", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
    )


def _lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _alerts(account: dict[str, Any]) -> list[dict[str, Any]]:
    messages = account["sqs"].receive_message(QueueUrl=account["queue"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def _block(account: dict[str, Any]) -> dict[str, bool] | None:
    try:
        return account["s3"].get_public_access_block(Bucket="mlw-training-data-acl")["PublicAccessBlockConfiguration"]
    except account["s3"].exceptions.ClientError:
        return None


def test_replay_remediates_over_http_and_reports_json_lines(account: dict[str, Any]) -> None:
    result = _replay(account, "--json", str(EVENTS / "s3/put-bucket-acl-public.json"))

    assert result.returncode == 0, result.stderr
    (line,) = _lines(result)
    assert set(line) >= {"event_id", "function", "outcome", "resource", "severity", "actions", "alerted", "reason"}
    assert line["function"] == "BlockPublicS3Function"
    assert line["outcome"] == "remediated"
    assert line["actions"] == ["s3:PutBucketPublicAccessBlock"]
    assert line["alerted"] is True
    assert _block(account) == ALL_ON
    (alert,) = _alerts(account)
    assert alert["MessageAttributes"]["outcome"]["Value"] == "remediated"


def test_replaying_the_same_event_twenty_times_changes_once_and_alerts_once(
    account: dict[str, Any], tmp_path: Path
) -> None:
    event = json.loads((EVENTS / "s3/put-bucket-acl-public.json").read_text())
    batch = tmp_path / "same-event.jsonl"
    batch.write_text("\n".join(json.dumps(event) for _ in range(20)))

    result = _replay(account, "--json", str(batch))

    lines = _lines(result)
    assert [line["outcome"] for line in lines] == ["remediated"] * 20
    assert [line["redelivered"] for line in lines] == [False] + [True] * 19
    assert len(_alerts(account)) == 1
    assert _block(account) == ALL_ON


def test_dry_run_changes_nothing_and_says_what_it_would_do(account: dict[str, Any]) -> None:
    result = _replay(account, "--json", "--mode", "dry-run", str(EVENTS / "s3/put-bucket-acl-public.json"))

    assert result.returncode == 0, result.stderr
    assert _lines(result)[0]["outcome"] == "would-remediate"
    assert _lines(result)[0]["actions"] == []
    assert _block(account) is None
    (alert,) = _alerts(account)
    assert "Would set:" in alert["Message"]


def test_unrouted_and_table_output(account: dict[str, Any]) -> None:
    result = _replay(account, str(EVENTS / "unrelated/ec2-run-instances.json"))

    assert result.returncode == 0
    assert "unrouted" in result.stdout
    json_result = _replay(account, "--json", str(EVENTS / "unrelated/ec2-run-instances.json"))
    assert _lines(json_result) == [
        {
            "event_id": json.loads((EVENTS / "unrelated/ec2-run-instances.json").read_text())["id"],
            "function": None,
            "outcome": "unrouted",
            "resource": None,
            "severity": None,
            "actions": [],
            "alerted": False,
            "reason": "no rule in the template matches this event",
            "redelivered": False,
            "source": str(EVENTS / "unrelated/ec2-run-instances.json"),
        }
    ]


def test_exit_1_when_a_handler_raises_after_fixing(account: dict[str, Any]) -> None:
    missing_topic = account["topic"].rsplit(":", 1)[0] + ":no-such-topic"
    result = _replay(account, "--json", str(EVENTS / "s3/put-bucket-acl-public.json"), topic=missing_topic)

    assert result.returncode == 1
    assert _lines(result)[0]["outcome"] == "remediated"
    assert _block(account) == ALL_ON  # the fix stands even though the alert could not be sent


def test_exit_2_for_unreadable_or_invalid_files(account: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    for args, message in (
        ([str(tmp_path / "missing.json")], "cannot read"),
        ([str(bad)], "not a JSON object, a JSON array or JSON Lines"),
    ):
        result = _replay(account, *args)
        assert result.returncode == 2
        assert message in result.stderr
    assert _block(account) is None


def test_exit_2_names_the_variable_replay_cannot_resolve(account: dict[str, Any]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "ALERT_TOPIC_ARN"}
    env.update(FAKE_CREDENTIALS, AWS_ENDPOINT_URL=account["endpoint"])
    result = subprocess.run(
        [str(MLWARDEN), "replay", str(EVENTS / "s3/put-bucket-acl-public.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "ALERT_TOPIC_ARN" in result.stderr


def test_array_file_replays_every_event(account: dict[str, Any], tmp_path: Path) -> None:
    events = [
        json.loads((EVENTS / name).read_text())
        for name in ("s3/put-bucket-acl-public.json", "unrelated/ec2-run-instances.json")
    ]
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(events))

    result = _replay(account, "--json", str(batch))

    assert [line["outcome"] for line in _lines(result)] == ["remediated", "unrouted"]
    assert [line["source"] for line in _lines(result)] == [f"{batch}:1", f"{batch}:2"]


def test_demo_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [str(MLWARDEN), "demo"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "checks passed" in result.stdout
    assert "[FAIL]" not in result.stdout


def test_stdout_carries_only_outcome_lines_however_many_events(account: dict[str, Any], tmp_path: Path) -> None:
    # Powertools keeps metric values across invocations when metrics are off and prints them once 100 pile up:
    # 250 events in one process printed EMF lines among the outcome lines.
    own_change = json.loads((EVENTS / "s3/put-bucket-public-access-block-by-mlwarden.json").read_text())
    events = [{**own_change, "id": f"00000000-0000-4000-8000-{n:012d}"} for n in range(250)]
    events += [json.loads((EVENTS / name).read_text()) for name in ("s3/put-bucket-acl-public.json", UNRELATED)]
    batch = tmp_path / "many.jsonl"
    batch.write_text("\n".join(json.dumps(event) for event in events))

    result = _replay(account, "--json", str(batch))

    assert result.returncode == 0, result.stderr[-2000:]
    lines = _lines(result)
    assert len(lines) == 252
    assert all(set(line) >= {"event_id", "function", "outcome"} for line in lines)
    assert [line["event_id"] for line in lines] == [event["id"] for event in events]
    assert "check decided" in result.stderr  # the handlers' logs go to stderr


def test_version_prints_the_version(account: dict[str, Any]) -> None:
    result = subprocess.run([str(MLWARDEN), "--version"], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0
    assert result.stdout == f"mlwarden {mlwarden.__version__}\n"


def test_an_array_element_that_is_not_an_object_is_unusable_input(account: dict[str, Any], tmp_path: Path) -> None:
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([json.loads((EVENTS / "s3/put-bucket-acl-public.json").read_text()), 42, ["x"]]))

    result = _replay(account, "--json", str(batch))

    assert result.returncode == 2
    assert [line["outcome"] for line in _lines(result)] == ["remediated", "unusable", "unusable"]
    assert f"{batch}:2: unusable input" in result.stderr
    assert _block(account) == ALL_ON  # the good event was replayed


def test_a_line_nested_100000_levels_is_skipped_and_the_others_replayed(
    account: dict[str, Any], tmp_path: Path
) -> None:
    batch = tmp_path / "deep-first.jsonl"
    deep = '{"detail":' * 100_000 + "{}" + "}" * 100_000
    batch.write_text(deep + "\n" + (EVENTS / "s3/put-bucket-acl-public.json").read_text().replace("\n", "") + "\n")

    result = _replay(account, "--json", str(batch))

    assert result.returncode == 2, result.stderr[-2000:]
    assert [line["outcome"] for line in _lines(result)] == ["unusable", "remediated"]
    assert "nests too deeply" in _lines(result)[0]["reason"]
    assert _block(account) == ALL_ON


def test_an_exemption_granted_with_the_cli_over_http_keeps_the_bucket_as_it_is(account: dict[str, Any]) -> None:
    # `mlwarden exempt` follows replay's conventions: the standard environment, AWS_ENDPOINT_URL included.
    dynamodb = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=account["endpoint"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    create_exemption_table(dynamodb)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": account["endpoint"],
        "ALERT_TOPIC_ARN": account["topic"],
        "OUTCOME_TABLE": OUTCOME_TABLE,
        "EXEMPTION_TABLE": EXEMPTION_TABLE,
    }
    until = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()

    def mlwarden(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MLWARDEN), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
        )

    added = mlwarden("exempt", "add", "arn:aws:s3:::mlw-training-data-acl", "--until", until, "--reason", "SEC-9")
    listed = mlwarden("exempt", "list", "--json")
    replayed = mlwarden("replay", "--json", str(EVENTS / "s3/put-bucket-acl-public.json"))

    assert added.returncode == 0, added.stderr
    assert [row["in_force"] for row in json.loads(listed.stdout)] == [True]
    assert _lines(replayed)[0]["outcome"] == "exempt"
    assert _block(account) is None
    subjects = [alert["Subject"] for alert in _alerts(account)]
    assert any("exemption_registry" in subject for subject in subjects)


@pytest.mark.parametrize(("setting", "findings"), [("true", 2), (None, 0)])
def test_replay_honours_security_hub_findings(account: dict[str, Any], setting: str | None, findings: int) -> None:
    # The template's SecurityHubFindings reaches the functions as SECURITY_HUB_FINDINGS; replay takes it from the
    # environment like every other variable the template declares (default: the parameter's default, false).
    hub = boto3.client(
        "securityhub",
        region_name="us-east-1",
        endpoint_url=account["endpoint"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    hub.enable_security_hub()
    extra = {} if setting is None else {"SECURITY_HUB_FINDINGS": setting}
    env_before = dict(os.environ)
    os.environ.update(extra)
    try:
        result = _replay(account, "--json", str(EVENTS / "s3/put-bucket-acl-public.json"))
    finally:
        os.environ.clear()
        os.environ.update(env_before)

    assert result.returncode == 0, result.stderr
    ids = sorted(finding["Id"] for finding in hub.get_findings()["Findings"])
    assert len(ids) == findings
    if findings:
        assert ids[1] == "mlwarden/block_public_s3/S3.8/arn:aws:s3:::mlw-training-data-acl"
