"""`mlwarden sweep` against moto server while AWS throttles: every resource is still evaluated.

The throttling answers are injected below botocore's retry handler (a `before-send` hook answers instead of
the server), so the sweep's own retry configuration (adaptive mode) is what gets the sweep through. S3
answers an overloaded request with 503 SlowDown, the Resource Groups Tagging API with 400
ThrottlingException (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html,
https://docs.aws.amazon.com/resourcegroupstagging/latest/APIReference/API_GetResources.html#API_GetResources_Errors).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from mlwarden import clients
from mlwarden_cli.main import main
from tests.conftest import ALL_ON, REGION

BUCKETS = 12
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>R1</RequestId></Error>"
)
THROTTLING = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


class Throttler:
    """Answers the first requests of each kind with a throttling error, as many as `times` says."""

    def __init__(self, times: dict[str, int]) -> None:
        self.times = times
        self.lock = threading.Lock()
        self.throttled: dict[str, int] = {}

    def _throttle(self, kind: str) -> bool:
        with self.lock:
            if self.throttled.get(kind, 0) >= self.times.get(kind, 0):
                return False
            self.throttled[kind] = self.throttled.get(kind, 0) + 1
            return True

    def s3(self, request: Any, **_: Any) -> AWSResponse | None:
        kind = "GetPublicAccessBlock" if "publicAccessBlock" in request.url else "ListBuckets"
        if request.method != "GET" or not self._throttle(kind):
            return None
        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Body(SLOW_DOWN))

    def tagging(self, request: Any, **_: Any) -> AWSResponse | None:
        if not self._throttle("GetResources"):
            return None
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Body(THROTTLING))


@pytest.fixture
def seeded(fresh_moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", fresh_moto_server)
    s3 = boto3.session.Session().client("s3", region_name=REGION, endpoint_url=fresh_moto_server)
    for number in range(BUCKETS):
        name = f"throttled-{number:02d}"
        s3.create_bucket(Bucket=name)
        if number % 2:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=ALL_ON)
        else:
            s3.put_bucket_acl(Bucket=name, ACL="public-read")
    return s3


def test_a_sweep_throttled_mid_way_evaluates_every_resource(
    seeded: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each retry waits (exponential backoff, then adaptive rate limiting): few throttles keep the test short.
    throttler = Throttler({"ListBuckets": 1, "GetPublicAccessBlock": 3, "GetResources": 1})
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register_first("before-send.s3", throttler.s3)
    boto3.DEFAULT_SESSION.events.register_first("before-send.resource-groups-tagging-api", throttler.tagging)
    clients.client.cache_clear()

    status = main(["sweep", "--json", "--stats", "--check", "block_public_s3"])

    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    by_resource = {line["resource"]: line["outcome"] for line in lines}
    assert throttler.throttled == {"ListBuckets": 1, "GetPublicAccessBlock": 3, "GetResources": 1}
    assert status == 1
    assert len(by_resource) == BUCKETS + 1, err  # every bucket and the account
    assert "failed" not in by_resource.values()
    assert sorted(name for name, outcome in by_resource.items() if outcome == "would-remediate") == sorted(
        [f"arn:aws:s3:::throttled-{n:02d}" for n in range(0, BUCKETS, 2)] + ["AWS::::Account:123456789012"]
    )
    counted = {line.split()[1]: int(line.split()[0]) for line in err.splitlines() if line.strip()[:1].isdigit()}
    # --stats counts each attempt: the throttled ones and their retries.
    assert counted["s3:ListBuckets"] == 2
    assert counted["s3:GetPublicAccessBlock"] == BUCKETS + 3
    assert counted["resource-groups-tagging-api:GetResources"] == 2


def test_sweep_clients_retry_adaptively_and_the_event_path_keeps_standard_retries() -> None:
    assert clients.client("s3").meta.config.retries["mode"] == "standard"
    counter = clients.RequestCounter()
    with clients.sweep_clients(counter, concurrency=7):
        inside = clients.client("s3")
        assert inside.meta.config.retries["mode"] == "adaptive"
        assert inside.meta.config.max_pool_connections == 7
    assert clients.client("s3").meta.config.retries["mode"] == "standard"
    assert clients.client("s3") is not inside
