"""What exists in one account and region, read as cheaply as AWS allows: the sweep's way in to the checks.

A check's `targets_from_inventory(inventory)` lists its resources through `pages` (every list call is
paginated). Tags are read in bulk with the Resource Groups Tagging API (one call per 100 tagged
resources) instead of one call per resource; `known_tags` hands them to the checks' own tag readers,
which fall back to the per-resource call for anything the bulk read did not cover.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from mlwarden import clients
from mlwarden.errors import AwsCallFailed
from mlwarden.events import partition_of

T = TypeVar("T")
R = TypeVar("R")

# botocore's default connection pool holds 10 connections per client: more threads would only queue.
DEFAULT_CONCURRENCY = 10
TAGGING_PERMISSIONS = frozenset({"tag:GetResources"})
_IAM_PREFIX = {"s3control": "s3", "resourcegroupstaggingapi": "tag"}


@dataclass
class Inventory:
    """One account and region being swept."""

    account: str
    region: str
    # Global resources (S3 buckets, IAM policies) are listed once per sweep: in its first region.
    first_region: bool = True
    concurrency: int = DEFAULT_CONCURRENCY
    _tags: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    @property
    def partition(self) -> str:
        return partition_of(self.region)

    def client(self, service: str) -> Any:
        return clients.client(service, self.region)

    def pages(self, service: str, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
        """Every item under `key` of every page of a list call; AwsCallFailed when a page cannot be read."""
        action = f"{_IAM_PREFIX.get(service, service)}:{_action_name(operation)}"
        try:
            for page in self.client(service).get_paginator(operation).paginate(**kwargs):
                yield from page.get(key, [])
        except (ClientError, BotoCoreError) as err:
            raise AwsCallFailed.from_error(action, err) from err

    def tags_by_arn(self, resource_type: str, region: str | None = None) -> dict[str, dict[str, str]]:
        """Every tagged resource of a type (`s3:bucket`, `sagemaker:notebook-instance`) and its tags, in bulk.

        Read once per type and region per sweep. A resource absent from the answer has no tags.
        """
        where = region or self.region
        cache_key = f"{where}/{resource_type}"
        if cache_key not in self._tags:
            found: dict[str, dict[str, str]] = {}
            tagging = clients.client("resourcegroupstaggingapi", where)
            try:
                paginator = tagging.get_paginator("get_resources")
                for page in paginator.paginate(ResourceTypeFilters=[resource_type], ResourcesPerPage=100):
                    for entry in page.get("ResourceTagMappingList", []):
                        found[entry["ResourceARN"]] = {tag["Key"]: tag["Value"] for tag in entry.get("Tags", [])}
            except (ClientError, BotoCoreError) as err:
                raise AwsCallFailed.from_error("tag:GetResources", err) from err
            self._tags[cache_key] = found
        return self._tags[cache_key]

    def map(self, func: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """func over items on `concurrency` threads, results in order; the caller's context goes with each call."""
        items = list(items)
        if self.concurrency <= 1 or len(items) <= 1:
            yield from (func(item) for item in items)
            return
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mlwarden-sweep") as pool:
            futures = [pool.submit(contextvars.copy_context().run, func, item) for item in items]
            for future in futures:
                yield future.result()


def _action_name(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


# --- tags read in bulk, handed to the checks' per-resource readers ---------------------------------------

_KNOWN_TAGS: contextvars.ContextVar[Mapping[str, Mapping[str, str]] | None] = contextvars.ContextVar(
    "mlwarden_known_tags", default=None
)


def known_tags(arn: str) -> dict[str, str] | None:
    """The tags of `arn` if a bulk read covered it during this sweep, else None (read them per resource)."""
    known = _KNOWN_TAGS.get()
    if known is None or arn not in known:
        return None
    return dict(known[arn])


def with_known_tags(tags: Mapping[str, Mapping[str, str]]) -> contextvars.Token[Any]:
    """Make bulk-read tags (ARN -> tags; {} for a resource known to have none) visible to `known_tags`."""
    return _KNOWN_TAGS.set(tags)


def forget_known_tags(token: contextvars.Token[Any]) -> None:
    _KNOWN_TAGS.reset(token)
