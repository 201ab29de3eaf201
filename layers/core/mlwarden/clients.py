"""The one way ML Warden reaches AWS.

Clients are cached per (service, region), use botocore's standard retry mode and
honour the standard AWS_ENDPOINT_URL, so the same code runs against AWS, moto
server and `sam local invoke`.

A sweep reads thousands of resources in a burst, on several threads: inside `sweep_clients()` every
client uses botocore's adaptive retry mode (standard retries plus client-side rate limiting once AWS
throttles), and may count its HTTP requests per operation (`RequestCounter`). The event path never
enters it and keeps the standard mode.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
# Adaptive mode: the standard retries, and once AWS throttles, a client-side token bucket that slows this
# client's calls to the rate AWS accepts. More attempts than the event path: a sweep would rather wait out
# a burst of throttling than report a resource it could not read.
# https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html#adaptive-retry-mode
_SWEEP_CONFIG = _CONFIG.merge(Config(retries={"mode": "adaptive", "max_attempts": 10}))


class RequestCounter:
    """HTTP requests sent, per `service:Operation`, retries included (each attempt is one request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_operation: Counter[str] = Counter()

    def count(self, event_name: str, **_: Any) -> None:
        # request-created.<service id>.<Operation>: emitted once per attempt, before signing and sending.
        service, operation = event_name.split(".", 2)[1:]
        with self._lock:
            self.by_operation[f"{service}:{operation}"] += 1

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())


@dataclass
class _Mode:
    config: Config = _CONFIG
    counter: RequestCounter | None = None
    max_pool_connections: int | None = None


_mode = _Mode()
# boto3's default session is not thread-safe: clients are built one at a time (the sweep builds them on
# its threads, on first use).
_BUILDING = threading.Lock()


@functools.cache
def client(service: str, region: str | None = None) -> Any:
    """A botocore client (typed Any: each service's methods are generated at run time)."""
    config = _mode.config
    if _mode.max_pool_connections is not None:
        config = config.merge(Config(max_pool_connections=_mode.max_pool_connections))
    if os.environ.get("AWS_ENDPOINT_URL") == "":
        # template.yaml declares AWS_ENDPOINT_URL empty so `sam local invoke --env-vars` can set it;
        # empty means "the real AWS endpoints" on every botocore version.
        config = config.merge(Config(ignore_configured_endpoint_urls=True))
    with _BUILDING:
        aws_client = boto3.client(service, region_name=region, config=config)
    if service == "s3control":
        _keep_custom_endpoint_host(aws_client)
    if _mode.counter is not None:
        aws_client.meta.events.register("request-created", _mode.counter.count)
    return aws_client


@contextmanager
def sweep_clients(counter: RequestCounter | None = None, *, concurrency: int | None = None) -> Iterator[None]:
    """Every client built inside uses adaptive retries, a connection pool of `concurrency`, and `counter`.

    Enter it before the sweep's threads start: the mode is the process's (the cache is emptied on the way in
    and out, so no client of one mode serves the other).
    """
    global _mode  # noqa: PLW0603 - the factory's one setting, swapped as a whole
    previous = _mode
    _mode = _Mode(config=_SWEEP_CONFIG, counter=counter, max_pool_connections=concurrency)
    client.cache_clear()
    try:
        yield
    finally:
        _mode = previous
        client.cache_clear()


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
