"""Privilege-escalation paths: sets of IAM actions that together let a principal act with more privilege.

The paths come from escalation_paths.json, compiled at build time from Datadog's pathfinding.cloud plus
ML Warden's SageMaker and Bedrock additions (scripts/build_escalation_paths.py). A path is complete when
a policy grants every one of its actions; this module knows the paths and how to name them, and
policy_analysis decides what a document grants. Pure: no AWS calls.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

from mlwarden.rules import action_catalogue

# What completing a path gives its holder, by pathfinding.cloud's category.
_OUTCOME = {
    "self-escalation": "grant itself any permission",
    "principal-access": "act as other users or roles",
    "new-passrole": "run code as any role that trusts {service}",
    "existing-passrole": "run code as the role that existing {service} resources already have",
    "credential-access": "read credentials kept in {service}",
}
_SERVICE_NAMES = {
    "apprunner": "App Runner",
    "bedrock-agentcore": "Bedrock AgentCore",
    "cloudformation": "CloudFormation",
    "codebuild": "CodeBuild",
    "codedeploy": "CodeDeploy",
    "datapipeline": "Data Pipeline",
    "ec2": "EC2",
    "ec2-instance-connect": "EC2",
    "ecs": "ECS",
    "glue": "Glue",
    "lambda": "Lambda",
    "sagemaker": "SageMaker",
    "ssm": "Systems Manager",
    "states": "Step Functions",
    "batch": "Batch",
    "sso": "IAM Identity Center",
}
# The resource type named in a message, for the actions whose reach matters most.
_RESOURCE_WORDS = {"iam:passrole": "roles"}
_GLOB = re.compile(r"[*?]")


@dataclass(frozen=True)
class EscalationPath:
    """A set of actions that together let their holder act with more privilege."""

    id: str
    category: str
    actions: tuple[str, ...]  # as the catalogue spells them
    source: str
    keys: tuple[str, ...] = ()  # the actions lower-cased (IAM matches action names case-insensitively)
    # The actions that do something (not List or Read): a path is half held only through one of them.
    weighty: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        services = [a.split(":", 1)[0].lower() for a in self.actions if not a.lower().startswith(("iam:", "sts:"))]
        service = services[0] if services else "iam"
        return _OUTCOME.get(self.category, "act with more privilege").format(
            service=_SERVICE_NAMES.get(service, service)
        )


@dataclass(frozen=True)
class Catalogue:
    """The compiled escalation paths, with where they come from."""

    source: str
    version: str
    license: str
    paths: tuple[EscalationPath, ...]


@functools.cache
def catalogue() -> Catalogue:
    text = resources.files("mlwarden.rules").joinpath("escalation_paths.json").read_text(encoding="utf-8")
    data = json.loads(text)
    paths = tuple(
        EscalationPath(
            id=p["id"],
            category=p["category"],
            actions=tuple(p["actions"]),
            source=p["source"],
            keys=tuple(a.lower() for a in p["actions"]),
            weighty=tuple(a.lower() for a in p["actions"] if _does_something(a)),
        )
        for p in data["paths"]
    )
    return Catalogue(source=data["source"], version=data["version"], license=data["license"], paths=paths)


def _does_something(action: str) -> bool:
    info = action_catalogue.lookup(action)
    return info is None or info.access_level not in ("List", "Read")


@functools.cache
def _actions_by_service() -> dict[str, frozenset[str]]:
    by_service: dict[str, set[str]] = {}
    for path in catalogue().paths:
        for key in path.keys:
            by_service.setdefault(key.split(":", 1)[0], set()).add(key)
    return {service: frozenset(keys) for service, keys in by_service.items()}


def escalation_actions() -> frozenset[str]:
    """Every action some path needs, lower-cased."""
    return frozenset().union(*_actions_by_service().values())


def is_escalation_action(action: str) -> bool:
    return action.lower() in escalation_actions()


_NOTHING: frozenset[str] = frozenset()


def matched_by(pattern: str) -> frozenset[str]:
    """The path actions (lower-cased) an IAM action pattern matches, `*` and `?` included."""
    text = pattern.strip().lower()
    service = text.partition(":")[0]
    if service not in _actions_by_service() and not _GLOB.search(service) and text != "*":
        return _NOTHING  # most actions: a service no path uses
    return _matched_by(text)


@functools.lru_cache(maxsize=16384)
def _matched_by(text: str) -> frozenset[str]:
    service, _, name = text.partition(":")
    if text in ("*", "*:*"):
        return escalation_actions()
    if not _GLOB.search(service):
        candidates = _actions_by_service().get(service, frozenset())
        if not _GLOB.search(name):
            return frozenset({text}) & candidates
    else:
        candidates = escalation_actions()
    regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text))
    return frozenset(key for key in candidates if regex.fullmatch(key))


def spelled(key: str) -> str:
    """An action as AWS spells it (`iam:PassRole`), from its lower-cased key."""
    info = action_catalogue.lookup(key)
    return info.full_name if info else key


def resource_words(key: str) -> str:
    return _RESOURCE_WORDS.get(key, "resources")
