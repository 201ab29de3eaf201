"""`mlwarden exempt add|list|revoke` against moto: the registry's items and the alerts a subscriber receives."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mlwarden_cli.main import main

BUCKET_ARN = "arn:aws:s3:::mlw-public-website"
# moto's sts:GetCallerIdentity answer for its default credentials
CALLER = "arn:aws:sts::123456789012:user/moto"


def days_from_today(days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()


@pytest.fixture
def cli_env(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EXEMPTION_TABLE", aws.exemption_table)
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic_arn)
    return aws


def registry(aws: Any) -> list[dict[str, str]]:
    items = aws.dynamodb.scan(TableName=aws.exemption_table)["Items"]
    return [{k: v["S"] for k, v in item.items()} for item in items]


def test_add_writes_who_granted_it_from_the_caller_identity_and_alerts(cli_env: Any, capsys: Any) -> None:
    cli_env.bucket("mlw-public-website", acl="public-read")
    until = days_from_today(30)

    code = main(["exempt", "add", BUCKET_ARN, "--until", until, "--reason", "model cards SEC-1234"])

    assert code == 0
    [item] = registry(cli_env)
    assert item["resource"] == BUCKET_ARN
    assert item["check"] == "all"
    assert item["granted_by"] == CALLER
    assert item["expires_at"] == until
    assert item["reason"] == "model cards SEC-1234"
    alert = cli_env.only_alert()
    assert alert.attributes["severity"] == "HIGH"  # the bucket has no block right now
    assert alert.outcome["trigger"]["actor"] == CALLER
    assert f"until {until}" in alert.outcome["reason"]
    assert "non-compliant now" in alert.outcome["reason"]
    assert "granted" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("until", "env", "message"),
    [
        pytest.param(days_from_today(-1), {}, "is in the past", id="past"),
        pytest.param(days_from_today(91), {}, "beyond the maximum of 90 days", id="beyond-default-maximum"),
        pytest.param(days_from_today(31), {"MAX_EXEMPTION_DAYS": "30"}, "maximum of 30 days", id="beyond-maximum"),
        pytest.param("9999-12-31", {}, "beyond the maximum", id="forever"),
        pytest.param("2027-02-30", {}, "must be a date", id="impossible-date"),
    ],
)
def test_add_refuses_an_end_in_the_past_or_beyond_the_maximum(
    cli_env: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, until: str, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code = main(["exempt", "add", BUCKET_ARN, "--until", until, "--reason", "x"])

    assert code == 2
    assert message in capsys.readouterr().err
    assert registry(cli_env) == []
    assert cli_env.alerts() == []


@pytest.mark.parametrize("resource", ["*", "arn:aws:s3:::*", "arn:aws:*:::x", "bucket-name"])
def test_add_refuses_a_pattern_that_names_nothing(cli_env: Any, resource: str) -> None:
    assert main(["exempt", "add", resource, "--until", days_from_today(1), "--reason", "x"]) == 2
    assert registry(cli_env) == []


def test_a_change_whose_alert_fails_is_rolled_back(cli_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:no-such-topic")

    code = main(["exempt", "add", BUCKET_ARN, "--until", days_from_today(5), "--reason", "x"])

    assert code == 1
    assert registry(cli_env) == []


def test_list_json_says_whether_each_entry_is_in_force(cli_env: Any, capsys: Any) -> None:
    cli_env.grant_exemption(BUCKET_ARN, check="block_public_s3")
    cli_env.grant_exemption("arn:aws:s3:::old-site", days=5, granted_days_ago=10)
    cli_env.grant_exemption("arn:aws:s3:::too-long", days=200)

    assert main(["exempt", "list", "--json"]) == 0

    rows = {row["resource"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[BUCKET_ARN]["in_force"] is True
    assert rows["arn:aws:s3:::old-site"]["in_force"] is False
    assert "expired" in rows["arn:aws:s3:::old-site"]["status"]
    assert rows["arn:aws:s3:::too-long"]["in_force"] is False
    assert set(rows[BUCKET_ARN]) == {
        "resource",
        "check",
        "reason",
        "granted_by",
        "granted_at",
        "expires_at",
        "in_force",
        "status",
    }


def test_revoke_deletes_every_entry_for_the_resource_and_alerts(cli_env: Any) -> None:
    cli_env.grant_exemption(BUCKET_ARN, check="block_public_s3")
    cli_env.grant_exemption(BUCKET_ARN, check="tag_pii_bucket")
    cli_env.grant_exemption("arn:aws:s3:::other")

    assert main(["exempt", "revoke", BUCKET_ARN]) == 0

    assert [item["resource"] for item in registry(cli_env)] == ["arn:aws:s3:::other"]
    alert = cli_env.only_alert()
    assert "revoked (block_public_s3, tag_pii_bucket)" in alert.outcome["reason"]
    assert alert.outcome["trigger"]["actor"] == CALLER


def test_revoke_of_nothing_fails(cli_env: Any) -> None:
    assert main(["exempt", "revoke", BUCKET_ARN]) == 1
    assert cli_env.alerts() == []


def test_without_the_registry_table_exempt_refuses(aws: Any, capsys: Any) -> None:
    assert main(["exempt", "list"]) == 2
    assert "EXEMPTION_TABLE is not set" in capsys.readouterr().err


def test_an_exemption_added_by_the_cli_exempts_the_bucket(cli_env: Any, handler: Any, cloudtrail_event: Any) -> None:
    cli_env.bucket("mlw-public-website", acl="public-read")
    main(["exempt", "add", BUCKET_ARN, "--until", days_from_today(7), "--reason", "x", "--check", "block_public_s3"])

    result = handler(cloudtrail_event("PutBucketAcl", "mlw-public-website"))

    assert result["outcome"] == "exempt"
    assert cli_env.block_of("mlw-public-website") is None
