"""The one way ML Warden reaches AWS.

Clients are cached per (service, region), use botocore's standard retry mode and
honour the standard AWS_ENDPOINT_URL, so the same code runs against AWS, moto
server and `sam local invoke`.
"""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from mlwarden import __version__

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    user_agent_extra=f"mlwarden/{__version__}",
    connect_timeout=5,
    read_timeout=20,
)


@functools.cache
def client(service: str, region: str | None = None) -> Any:
    """A botocore client (typed Any: each service's methods are generated at run time)."""
    config = _CONFIG
    if os.environ.get("AWS_ENDPOINT_URL") == "":
        # template.yaml declares AWS_ENDPOINT_URL empty so `sam local invoke --env-vars` can set it;
        # empty means "the real AWS endpoints" on every botocore version.
        config = config.merge(Config(ignore_configured_endpoint_urls=True))
    aws_client = boto3.client(service, region_name=region, config=config)
    if service == "s3control":
        _keep_custom_endpoint_host(aws_client)
    return aws_client


def _keep_custom_endpoint_host(s3control: BaseClient) -> None:
    """S3 Control puts the account id in front of the host (ACCOUNT.s3-control...).

    Against a custom endpoint such as http://127.0.0.1:5000 that becomes an
    unresolvable name; drop the prefix again before the request is signed.
    Real AWS endpoints are left untouched.
    """
    endpoint = s3control.meta.endpoint_url
    default_host = f"s3-control.{s3control.meta.region_name}.amazonaws.com"
    custom_netloc = urlsplit(endpoint).netloc
    if not custom_netloc or custom_netloc.endswith(default_host) or "amazonaws.com" in custom_netloc:
        return

    def strip_account_prefix(request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        if parts.netloc != custom_netloc and parts.netloc.endswith("." + custom_netloc):
            request.url = urlunsplit(parts._replace(netloc=custom_netloc))

    s3control.meta.events.register("before-sign.s3-control", strip_account_prefix)
