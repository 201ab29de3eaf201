"""AWS's IAM action catalogue, compacted (scripts/build_action_catalogue.py), loaded on first use.

Only wildcard expansion and "does this action take a resource?" need it, so a cold start that meets
no such question never reads the file; one that does pays about 2 ms (measured in bench/iam_analyzer.py).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

ACCESS_LEVELS = {"L": "List", "R": "Read", "W": "Write", "P": "Permissions management", "T": "Tagging"}


@dataclass(frozen=True)
class ActionInfo:
    """One IAM action as AWS's reference describes it."""

    service: str
    name: str
    access_level: str
    # False: IAM only accepts Resource "*" for it, so "*" there is not a finding.
    takes_resource: bool
    escalates: bool

    @property
    def full_name(self) -> str:
        return f"{self.service}:{self.name}"


@functools.cache
def _services() -> dict[str, str]:
    text = resources.files("mlwarden.rules").joinpath("action_catalogue.json").read_text(encoding="utf-8")
    services: dict[str, str] = json.loads(text)["services"]
    return services


@functools.cache
def _service_actions(service: str) -> dict[str, ActionInfo]:
    """One service's actions by lower-case name, parsed only when that service is asked about."""
    packed = _services().get(service)
    if not packed:
        return {}
    actions = {}
    for entry in packed.split("|"):
        name, flags = entry.split(":", 1)
        actions[name.lower()] = ActionInfo(
            service=service,
            name=name,
            access_level=ACCESS_LEVELS[flags[0]],
            takes_resource="r" in flags,
            escalates="e" in flags,
        )
    return actions


def known_service(service: str) -> bool:
    return service.lower() in _services()


def lookup(action: str) -> ActionInfo | None:
    """The catalogue entry of `service:Action` (case-insensitive), or None when AWS has no such action."""
    service, _, name = action.partition(":")
    return _service_actions(service.lower()).get(name.lower())


@functools.lru_cache(maxsize=1024)
def expand(pattern: str) -> tuple[ActionInfo, ...]:
    """The actions a `service:Pat*tern` matches, as IAM matches them (`*` and `?`, case-insensitive)."""
    service, _, name = pattern.lower().partition(":")
    if "*" in service or "?" in service:
        return ()  # "*" on its own is every action; callers treat it before asking
    regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in name))
    return tuple(info for lower, info in _service_actions(service).items() if regex.fullmatch(lower))
