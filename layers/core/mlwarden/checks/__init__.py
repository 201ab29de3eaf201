"""The checks: one module per check, each with its triggers, inventory, evaluation, remediation and permissions.

Every check is resource-centric. An event is one way to name the resources to evaluate
(`targets_from_event`), an inventory of the account is the other (`targets_from_inventory`); both
feed the same `evaluate(target, trigger, settings)`, and the pipeline (mlwarden.pipeline) wraps that
with the same guards, records and alerts whichever way the resource arrived.

Each check module ends with `UNIT = CheckUnit(...)`. Importing this package imports no check: a
handler imports only its own, for cold start; `load` imports one by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlwarden.events import Event
    from mlwarden.inventory import Inventory
    from mlwarden.outcomes import Outcome, Trigger
    from mlwarden.settings import Settings

CHECK_NAMES = (
    "block_public_s3",
    "tag_pii_bucket",
    "flag_wildcard_iam",
    "check_sagemaker_encryption",
    "watch_inputs",
    "guard_kms_keys",
    "guard_s3_data",
)


@dataclass(frozen=True)
class CheckUnit:
    """One check, as the pipeline and the sweep see it.

    - decide_event: the event path (run_check), which resolves the event's targets with the
      check's own `targets_from_event` and evaluates them with `evaluate`.
    - targets_from_inventory: the resources of one account and region, cheapest listing first.
    - evaluate: decide on live state, act, verify; the one decision both paths share.
    - key_of / target_of_key: a target as a short JSON-safe key and back, so the deployed sweep can
      hand targets from the planner to its workers through a queue.
    - resource_of: the ARN (or Config resource name) the outcome will carry.
    - known_tags: optional bulk tag read for the listed targets (saves one call per resource).
    - sweep_permissions: the IAM actions the inventory adds to the check's own permissions.
    - controls / target_of_resource: the Security Hub controls it owns, and how a finding names a target.
    - evaluate_last: the targets whose fix changes how the others are graded (the account-level S3 block
      holds back a bucket's public ACL): evaluated after the others, so that the others are graded on the
      state the sweep found, as an event about them would have been, not on a fix racing them.
    """

    name: str
    decide_event: Callable[[Event, Settings], Outcome]
    targets_from_inventory: Callable[[Inventory], Iterator[Any]]
    evaluate: Callable[[Any, Trigger, Settings], Outcome]
    key_of: Callable[[Any], Mapping[str, Any]]
    target_of_key: Callable[[Mapping[str, Any]], Any]
    resource_of: Callable[[Any], str]
    # Tags of the listed targets read in bulk (ARN -> tags), handed to the check's per-resource tag reads.
    known_tags: Callable[[Inventory, list[Any]], Mapping[str, Mapping[str, str]]] | None = None
    sweep_permissions: frozenset[str] = frozenset()
    # The AWS Security Hub control ids this check owns: Security Hub's findings for them are routed here.
    controls: frozenset[str] = frozenset()
    # The target a Security Hub finding's resource names ((ASFF type, id, region) -> target), or why none.
    target_of_resource: Callable[[str, str, str | None], Any] | None = None
    evaluate_last: Callable[[Any], bool] | None = None


def load(name: str) -> CheckUnit:
    """The check called `name`; KeyError when there is none."""
    if name not in CHECK_NAMES:
        raise KeyError(f"no check called {name!r}: the checks are {', '.join(CHECK_NAMES)}")
    unit: CheckUnit | None = getattr(importlib.import_module(f"mlwarden.checks.{name}"), "UNIT", None)
    if unit is None:
        raise KeyError(f"check {name!r} has no CheckUnit yet")
    return unit
