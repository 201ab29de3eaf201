"""Random damage to real-shaped events, shared by the handlers' fuzz tests.

Dropped keys, nulls, wrong types, huge and non-ASCII strings, lists where scalars belong,
deep nesting: what a malformed or hostile event may carry.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mlwarden import clients
from mlwarden.errors import AlertDeliveryFailed, RemediationFailed

ROOT = Path(__file__).resolve().parents[2]
# Every sample in events/: each handler is fuzzed with the others' events too.
SAMPLES = [
    json.loads(path.read_text()) for path in sorted((ROOT / "events").rglob("*.json")) if path.name != "env.json"
]
EXAMPLES = int(os.environ.get("MLWARDEN_FUZZ_EXAMPLES", "2000"))
OUTCOMES = {"remediated", "would-remediate", "flagged", "compliant", "exempt", "ignored", "failed"}
# The handlers share one moto world across examples (function-scoped fixtures are deliberate here).
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

DAMAGE: list[Any] = [
    None,
    "",
    0,
    -1,
    True,
    1.5,
    [],
    {},
    "x" * 100_000,
    "ü\u202e\U0001f512\x00",
    "arn:aws:s3:::",
    ["mlw-training-data-acl", "other"],
    {"nested": {"deeper": {"deepest": [{"k": None}]}}},
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _apply(event: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    parent: Any = event
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "drop" and isinstance(parent, dict):
        del parent[last]
    elif action == "wrap":
        parent[last] = [parent[last]]
    elif action == "nest":
        parent[last] = {"a": {"b": {"c": parent[last]}}}
    else:
        parent[last] = value


@st.composite
def damaged_events(draw: st.DrawFn, samples: list[Any]) -> Any:
    event = copy.deepcopy(draw(st.sampled_from(samples)))
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([None, [], "event", 42, [event]]))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(event)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["drop", "replace", "wrap", "nest"]))
        _apply(event, path, action, copy.deepcopy(draw(st.sampled_from(DAMAGE))))
    return event


_EXAMPLE_IDS = itertools.count()


def distinct_id(event: Any) -> Any:
    """Examples share one moto world and its outcome table: a distinct event id keeps one example from
    being taken as a redelivery of another (the id itself stays as damaged as it was)."""
    if isinstance(event, dict) and isinstance(event.get("id"), str):
        event["id"] += f"-{next(_EXAMPLE_IDS)}"
    return event


def run_damaged(handler: Callable[[Any], dict[str, Any]], event: Any, services: Iterable[str]) -> tuple[str, list[str]]:
    """Run one damaged event: its outcome, and every call the handler made to `services`.

    A `failed` outcome is raised deliberately after it was recorded; that is its outcome here.
    """
    distinct_id(event)
    calls: list[str] = []
    for service in services:
        clients.client(service).meta.events.register(
            "before-call.*.*", lambda model, **_: calls.append(model.name), unique_id=f"fuzz-{service}"
        )
    try:
        outcome = str(handler(event)["outcome"])
    except (RemediationFailed, AlertDeliveryFailed) as err:
        outcome = err.outcome.outcome.value
    return outcome, calls
