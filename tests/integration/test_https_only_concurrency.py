"""Concurrent HTTPS-only merges into one bucket policy, against moto server: real threads, real HTTP.

EventBridge delivers at least once and in parallel: a PutBucketPolicy and a Macie finding about the same PII
bucket, or one event delivered twice, evaluate the bucket at the same time. PutBucketPolicy replaces the whole
policy and takes no condition, so each invocation reads, merges and writes. They must converge: one
HTTPS-only statement, every statement the owner wrote kept, no invocation `failed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from mlwarden import clients
from mlwarden.checks import guard_s3_data as data
from mlwarden.checks.block_public_s3 import BucketTarget
from mlwarden.outcomes import OutcomeKind, Trigger
from mlwarden.rules.bucket_policy import HTTPS_ONLY_SID, requires_https
from mlwarden.settings import load_settings
from mlwarden_cli.emulator import create_outcome_table

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
BUCKET = "mlw-pii-https-concurrent"
ARN = f"arn:aws:s3:::{BUCKET}"
OWNER_STATEMENTS = [
    {
        "Sid": f"Reader{n}",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/Reader{n}"},
        "Action": "s3:GetObject",
        "Resource": f"{ARN}/*",
    }
    for n in range(5)
]


@pytest.fixture
def world(fresh_moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    endpoint = fresh_moto_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    clients.client.cache_clear()
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
    table = create_outcome_table(boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint))
    topic = boto3.client("sns", region_name="us-east-1", endpoint_url=endpoint).create_topic(Name="alerts")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "mlwarden:pii", "Value": "true"}]})
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": OWNER_STATEMENTS}))
    settings = load_settings({"ALERT_TOPIC_ARN": topic["TopicArn"], "OUTCOME_TABLE": table})
    yield {"s3": s3, "settings": settings}
    clients.client.cache_clear()


def test_concurrent_invocations_converge_on_one_statement_and_keep_the_owners(world: dict[str, Any]) -> None:
    trigger = Trigger.sweep("concurrent", ACCOUNT, "us-east-1")
    target = BucketTarget(name=BUCKET, partition="aws")

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: data.evaluate(target, trigger, world["settings"]), range(8)))

    policy = json.loads(world["s3"].get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert policy["Statement"][: len(OWNER_STATEMENTS)] == OWNER_STATEMENTS
    assert [s.get("Sid") for s in policy["Statement"]].count(HTTPS_ONLY_SID) == 1
    assert requires_https(policy, ARN)
    kinds = {o.outcome for o in outcomes}
    assert OutcomeKind.FAILED not in kinds
    assert OutcomeKind.REMEDIATED in kinds
    # An invocation that finds the statement merged by another has only S3.17 (SSE-S3 default) left to flag.
    assert kinds <= {OutcomeKind.REMEDIATED, OutcomeKind.FLAGGED}
