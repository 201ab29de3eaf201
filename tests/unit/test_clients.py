"""The one client factory: cached, standard retries, and S3 Control usable against a custom endpoint.

No request leaves the process: a `before-send` hook answers in place of AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from mlwarden import __version__, clients

GET_ACCOUNT_BLOCK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<PublicAccessBlockConfiguration xmlns="http://awss3control.amazonaws.com/doc/2018-08-20/">'
    b"<BlockPublicAcls>true</BlockPublicAcls><IgnorePublicAcls>true</IgnorePublicAcls>"
    b"<BlockPublicPolicy>true</BlockPublicPolicy><RestrictPublicBuckets>true</RestrictPublicBuckets>"
    b"</PublicAccessBlockConfiguration>"
)


class _Raw:
    """Just enough of urllib3's response for botocore to read a body."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


def capture_s3control_requests(s3control: Any) -> list[Any]:
    sent: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request)
        return AWSResponse(request.url, 200, {"Content-Type": "application/xml"}, _Raw(GET_ACCOUNT_BLOCK))

    s3control.meta.events.register_first("before-send.s3-control", answer)
    return sent


def test_clients_are_cached_per_service_and_region() -> None:
    assert clients.client("s3") is clients.client("s3")
    assert clients.client("sns", "eu-west-1") is clients.client("sns", "eu-west-1")
    assert clients.client("sns", "eu-west-1") is not clients.client("sns", "us-east-1")


def test_client_uses_the_given_region_or_the_default() -> None:
    assert clients.client("sns", "eu-west-1").meta.region_name == "eu-west-1"
    assert clients.client("sns").meta.region_name == "us-east-1"


def test_clients_use_standard_retries() -> None:
    # botocore counts Config(max_attempts=5) as retries: 6 attempts in all.
    assert clients.client("s3").meta.config.retries == {"mode": "standard", "total_max_attempts": 6}


def test_clients_identify_ml_warden_in_the_user_agent() -> None:
    assert clients.client("s3").meta.config.user_agent_extra == f"mlwarden/{__version__}"


def test_custom_endpoint_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")

    assert clients.client("s3").meta.endpoint_url == "http://127.0.0.1:5000"


def test_s3control_against_a_custom_endpoint_has_no_account_host_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    s3control = clients.client("s3control")
    sent = capture_s3control_requests(s3control)

    response = s3control.get_public_access_block(AccountId="123456789012")

    assert [request.url for request in sent] == ["http://127.0.0.1:5000/v20180820/configuration/publicAccessBlock"]
    assert sent[0].headers["x-amz-account-id"] == b"123456789012"
    assert response["PublicAccessBlockConfiguration"]["BlockPublicAcls"] is True


def test_plain_boto3_s3control_would_prefix_the_account_on_a_custom_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reason the factory rewrites the host: without it the request goes to an unresolvable name.
    import boto3  # noqa: PLC0415

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    s3control = boto3.client("s3control")
    sent = capture_s3control_requests(s3control)

    s3control.get_public_access_block(AccountId="123456789012")

    assert sent[0].url.startswith("http://123456789012.127.0.0.1:5000/")


def test_s3control_on_aws_keeps_the_account_host_prefix() -> None:
    s3control = clients.client("s3control")
    sent = capture_s3control_requests(s3control)

    s3control.get_public_access_block(AccountId="123456789012")

    assert [request.url for request in sent] == [
        "https://123456789012.s3-control.us-east-1.amazonaws.com/v20180820/configuration/publicAccessBlock"
    ]


def test_empty_custom_endpoint_means_the_real_aws_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # template.yaml declares AWS_ENDPOINT_URL as "" so that `sam local invoke --env-vars` can override it.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")

    assert clients.client("s3", "eu-west-1").meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert clients.client("sns", "us-east-1").meta.endpoint_url == "https://sns.us-east-1.amazonaws.com"


def test_empty_custom_endpoint_keeps_the_account_host_prefix_for_s3control(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    s3control = clients.client("s3control")
    sent = capture_s3control_requests(s3control)

    s3control.get_public_access_block(AccountId="123456789012")

    assert sent[0].url.startswith("https://123456789012.s3-control.us-east-1.amazonaws.com/")
