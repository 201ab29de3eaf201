"""`mlwarden local init` against moto server, as a user runs it (a separate process).

Contract: with AWS_ENDPOINT_URL set it creates every table and topic template.yaml declares, idempotently,
and prints one `export NAME=VALUE` line per function variable that refers to one of them; without it, it
refuses with exit 2 and touches nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from mlwarden_cli.emulator import FAKE_CREDENTIALS, moto_server
from mlwarden_cli.main import main
from mlwarden_cli.template import load_document

ROOT = Path(__file__).resolve().parents[2]
MLWARDEN = Path(sys.executable).parent / "mlwarden"
ACL_EVENT = ROOT / "events" / "s3" / "put-bucket-acl-public.json"

pytestmark = pytest.mark.integration

# A registry table as another feature would add it: composite key, an index, TTL; referred to by Ref and GetAtt.
EXTRA_TABLE = {
    "Type": "AWS::DynamoDB::Table",
    "Properties": {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "resource", "AttributeType": "S"},
            {"AttributeName": "check", "AttributeType": "S"},
            {"AttributeName": "granted_by", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "resource", "KeyType": "HASH"},
            {"AttributeName": "check", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "by-granter",
                "KeySchema": [{"AttributeName": "granted_by", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "TimeToLiveSpecification": {"AttributeName": "expires", "Enabled": True},
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "SomeKeyOnlyAwsHas"}},
    },
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def emulator(endpoint: str) -> str:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)
    return endpoint


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _environment(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_CREDENTIALS)
    env.update(overrides)
    return env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLWARDEN), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
    )


def _exports(stdout: str) -> dict[str, str]:
    exports = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), line
        name, value = line.removeprefix("export ").split("=", 1)
        exports[name] = value
    return exports


def _template_with_extra_table(tmp_path: Path) -> Path:
    """template.yaml plus an ExemptionTable that one function reads through EXEMPTION_TABLE (Ref) and
    EXEMPTION_TABLE_ARN (GetAtt)."""
    document = load_document(ROOT / "template.yaml")
    document["Resources"]["ExemptionTable"] = EXTRA_TABLE
    variables = document["Resources"]["BlockPublicS3Function"]["Properties"].setdefault(
        "Environment", {"Variables": {}}
    )["Variables"]
    variables["EXEMPTION_TABLE"] = {"Ref": "ExemptionTable"}
    variables["EXEMPTION_TABLE_ARN"] = {"Fn::GetAtt": ["ExemptionTable", "Arn"]}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_creates_the_templates_tables_and_topic_and_prints_their_variables(emulator: str) -> None:
    result = _run("local", "init", env=_environment(AWS_ENDPOINT_URL=emulator))

    assert result.returncode == 0, result.stderr
    exports = _exports(result.stdout)
    assert {"OUTCOME_TABLE", "ALERT_TOPIC_ARN"} <= set(exports)
    dynamodb, sns = _client("dynamodb", emulator), _client("sns", emulator)
    table = dynamodb.describe_table(TableName=exports["OUTCOME_TABLE"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = dynamodb.describe_time_to_live(TableName=exports["OUTCOME_TABLE"])["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiration")
    assert exports["ALERT_TOPIC_ARN"] in [t["TopicArn"] for t in sns.list_topics()["Topics"]]


def test_a_table_added_to_the_template_is_created_and_exported_with_no_code_change(
    emulator: str, tmp_path: Path
) -> None:
    template = _template_with_extra_table(tmp_path)

    result = _run("local", "init", "--template", str(template), env=_environment(AWS_ENDPOINT_URL=emulator))

    assert result.returncode == 0, result.stderr
    exports = _exports(result.stdout)
    assert exports["EXEMPTION_TABLE"] == "mlwarden-ExemptionTable"
    assert exports["EXEMPTION_TABLE_ARN"] == "arn:aws:dynamodb:us-east-1:123456789012:table/mlwarden-ExemptionTable"
    dynamodb = _client("dynamodb", emulator)
    table = dynamodb.describe_table(TableName="mlwarden-ExemptionTable")["Table"]
    assert table["KeySchema"] == EXTRA_TABLE["Properties"]["KeySchema"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["by-granter"]
    ttl = dynamodb.describe_time_to_live(TableName="mlwarden-ExemptionTable")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires"


def test_running_it_twice_changes_nothing_and_prints_the_same_lines(emulator: str, tmp_path: Path) -> None:
    template = str(_template_with_extra_table(tmp_path))
    env = _environment(AWS_ENDPOINT_URL=emulator)

    first = _run("local", "init", "--template", template, env=env)
    state = _state(emulator)
    second = _run("local", "init", "--template", template, env=env)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert second.stdout == first.stdout
    assert "(created)" in first.stderr
    assert "(created)" not in second.stderr
    assert _state(emulator) == state


def _state(endpoint: str) -> dict[str, Any]:
    dynamodb, sns = _client("dynamodb", endpoint), _client("sns", endpoint)
    tables = dynamodb.list_tables()["TableNames"]
    return {
        "topics": sorted(t["TopicArn"] for t in sns.list_topics()["Topics"]),
        "tables": {
            name: (
                json.dumps(dynamodb.describe_table(TableName=name)["Table"]["KeySchema"]),
                json.dumps(dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]),
            )
            for name in tables
        },
    }


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="no AWS_ENDPOINT_URL"),
        pytest.param({"AWS_ENDPOINT_URL": ""}, id="empty AWS_ENDPOINT_URL"),
        pytest.param({"AWS_ENDPOINT_URL": "https://dynamodb.us-east-1.amazonaws.com"}, id="AWS itself"),
        pytest.param({"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, id="endpoint ignored by boto3"),
        pytest.param({"AWS_ENDPOINT_URL_DYNAMODB": "https://dynamodb.us-east-1.amazonaws.com"}, id="service endpoint"),
    ],
)
def test_refuses_with_exit_2_unless_every_client_talks_to_the_emulator(
    emulator: str, overrides: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator)
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    if not overrides:
        monkeypatch.delenv("AWS_ENDPOINT_URL")

    status = main(["local", "init"])

    out = capsys.readouterr()
    assert status == 2
    assert out.out == ""
    assert "never touches a real account" in out.err
    assert _state(emulator) == {"topics": [], "tables": {}}


def test_its_exports_let_replay_use_the_outcome_table(emulator: str) -> None:
    s3 = _client("s3", emulator)
    s3.create_bucket(Bucket="mlw-training-data-acl")
    s3.put_bucket_acl(Bucket="mlw-training-data-acl", ACL="public-read")
    script = f'eval "$({MLWARDEN} local init)" && {MLWARDEN} replay --json {ACL_EVENT} {ACL_EVENT}'

    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env=_environment(AWS_ENDPOINT_URL=emulator),
        cwd=ROOT,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["outcome"], line["redelivered"]) for line in lines] == [("remediated", False), ("remediated", True)]
