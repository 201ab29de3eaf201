"""Concurrent Macie findings for one bucket, as Macie sends them (one per object), against moto server.

Real threads, real HTTP, the real outcome table: PutBucketTagging replaces the whole tag set and takes no
condition, so concurrent findings race. Before the merge loop, 12 concurrent findings gave 11 `failed`
outcomes and lost PII types (issue 11). Now every type must end up recorded (in the outcome table's
record in full; in the 256-character tag value as far as it fits, with "+N" for the rest), the highest
severity kept, and no outcome `failed`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from mlwarden import clients, pii_memory
from mlwarden.checks import tag_pii_bucket as macie
from mlwarden.events import parse_event
from mlwarden.settings import load_settings
from mlwarden_cli.emulator import create_outcome_table

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "mlw-training-data-concurrent"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
FOREIGN = {"team": "ml-research", "owner": "data-platform"}

pytestmark = pytest.mark.integration


@pytest.fixture
def world(fresh_moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    endpoint = fresh_moto_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    clients.client.cache_clear()
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
    table = create_outcome_table(boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint))
    topic = boto3.client("sns", region_name="us-east-1", endpoint_url=endpoint).create_topic(Name="alerts")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=ALL_ON)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in FOREIGN.items()]})
    settings = load_settings({"ALERT_TOPIC_ARN": topic["TopicArn"], "OUTCOME_TABLE": table})
    yield {"s3": s3, "settings": settings}
    clients.client.cache_clear()


def finding(number: int, types: list[str], severity: str) -> dict[str, Any]:
    """The personal-data sample, re-aimed: its own finding id, detection types and severity."""
    event = copy.deepcopy(json.loads((ROOT / "events/macie/sensitive-data-personal.json").read_text()))
    detail = event["detail"]
    event["id"] = f"concurrent-{number}"
    detail["id"] = f"finding-{number:03d}"
    detail["updatedAt"] = f"2026-01-01T10:{number // 60:02d}:{number % 60:02d}Z"
    detail["severity"] = {"description": severity, "score": ("Low", "Medium", "High").index(severity) + 1}
    detail["resourcesAffected"]["s3Bucket"]["name"] = BUCKET
    detail["classificationDetails"]["result"]["sensitiveData"] = [
        {"category": "PERSONAL_INFORMATION", "detections": [{"type": t, "count": 1} for t in types], "totalCount": 1}
    ]
    return event


def run_concurrently(settings: Any, events: list[dict[str, Any]]) -> tuple[list[Any], float]:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        outcomes = list(pool.map(lambda e: macie.tag_pii_bucket(parse_event(e), settings), events))
    return outcomes, time.monotonic() - started


def tags_of(s3: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}


@pytest.mark.parametrize(
    ("findings", "type_name"),
    [
        (12, "T{:02d}{}"),  # 24 short types: the value holds them all
        (50, "CUSTOMER_RECORD_FIELD_{:02d}_{}"),  # 100 long types: the value is cut, "+N" counts the rest
    ],
)
def test_concurrent_findings_for_one_bucket_converge(world: dict[str, Any], findings: int, type_name: str) -> None:
    # Given N findings for one bucket, each with its own two types, one of them High, the rest Low or Medium
    types = [[type_name.format(i, suffix) for suffix in "AB"] for i in range(findings)]
    severities = ["High" if i == findings // 2 else ("Low", "Medium")[i % 2] for i in range(findings)]
    events = [finding(i, types[i], severities[i]) for i in range(findings)]

    # When they are handled at the same time
    outcomes, seconds = run_concurrently(world["settings"], events)

    # Then no outcome failed, and the record holds every type and the highest severity
    kinds = [o.outcome.value for o in outcomes]
    assert "failed" not in kinds, [o.reason for o in outcomes if o.outcome.value == "failed"]
    every_type = {t for pair in types for t in pair}
    remembered = pii_memory.recall(world["settings"], BUCKET_ARN, "test").record
    assert remembered is not None
    assert remembered.types == every_type
    assert remembered.severity == "High"
    # And the tags say what one finding with all of them would have said, the foreign tags kept
    tags = tags_of(world["s3"])
    assert {k: tags[k] for k in FOREIGN} == FOREIGN
    assert tags["mlwarden:pii"] == "true"
    assert tags["mlwarden:pii-severity"] == "High"
    assert tags["mlwarden:pii-types"] == macie.encode_types(every_type)[0]
    assert macie.decode_types(tags["mlwarden:pii-types"]) | set() <= every_type
    assert macie.left_out_count(tags["mlwarden:pii-types"]) == len(every_type) - len(
        macie.decode_types(tags["mlwarden:pii-types"])
    )
    # The latest finding is the one recorded as last seen
    assert tags["mlwarden:pii-last-finding"] == f"finding-{findings - 1:03d}"
    attempts = sorted(o.details["tags"]["merge_attempts"] for o in outcomes)
    print(  # the figures for the report (pytest -s)
        f"\n{findings} concurrent findings: {seconds:.2f} s; merge attempts per finding: min {attempts[0]}, "
        f"median {attempts[len(attempts) // 2]}, max {attempts[-1]}, total {sum(attempts)}; outcomes {sorted(kinds)}"
    )
