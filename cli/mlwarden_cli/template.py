"""Read template.yaml the way EventBridge and Lambda would use it: rules, handlers, environment."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from moto.events.models import EventPattern

DEFAULT_ACCOUNT = "123456789012"
# The stack name replay and local init assume (the default of samconfig.toml's stack_name).
STACK_NAME = "mlwarden"


class TemplateError(ValueError):
    """template.yaml is missing or has a shape replay cannot use."""


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short-form tags (!Ref, !GetAtt, ...) into their long form."""


def _construct_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def objects_in_arrays_merged(value: Any) -> Any:
    """An array of objects as one object whose leaves list every element's values.

    EventBridge matches a pattern field inside an array of objects if any element matches it (Security Hub's
    `detail.findings` is one: https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-arrays.html);
    moto's matcher only descends into objects, so replay hands it the arrays merged.
    """
    if isinstance(value, Mapping):
        return {key: objects_in_arrays_merged(item) for key, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        merged: dict[str, list[Any]] = {}
        for item in value:
            for key, inner in item.items():
                merged.setdefault(key, []).append(inner)
        return {key: objects_in_arrays_merged(items[0] if len(items) == 1 else items) for key, items in merged.items()}
    return value


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Mapping[str, Any]
    _compiled: Any = field(repr=False, compare=False)

    def matches(self, event: Any) -> bool:
        if not isinstance(event, Mapping):
            return False
        try:
            return bool(self._compiled.matches_event(objects_in_arrays_merged(dict(event))))
        except (AttributeError, TypeError, ValueError, KeyError, RecursionError):
            # moto's matcher assumes well-typed events; EventBridge would not match a malformed one either
            return False


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler_file: Path
    handler_name: str
    rules: tuple[Rule, ...]
    environment: Mapping[str, Any]  # unresolved template values

    def matches(self, event: Any) -> bool:
        return any(rule.matches(event) for rule in self.rules)


@dataclass(frozen=True)
class Template:
    path: Path
    parameters: Mapping[str, Any]
    resources: Mapping[str, Any]
    functions: tuple[FunctionSpec, ...]
    conditions: Mapping[str, Any] = field(default_factory=dict)

    def route(self, event: Any) -> list[FunctionSpec]:
        return [function for function in self.functions if function.matches(event)]

    def environment(self, function: FunctionSpec, account: str, region: str) -> dict[str, str]:
        """The function's variables as deployed with parameter defaults; unresolvable ones are left out."""
        resolved: dict[str, str] = {}
        for name, value in function.environment.items():
            text = self._resolve(value, account, region)
            if text is not None:
                resolved[name] = text
        return resolved

    def condition_holds(self, name: str) -> bool:
        """A template condition evaluated with the parameters' defaults (false when it cannot be evaluated)."""
        return self._holds(self.conditions.get(name), depth=0)

    def _holds(self, expression: Any, depth: int) -> bool:
        if not isinstance(expression, Mapping) or len(expression) != 1 or depth > len(self.conditions) + 8:
            return False
        ((function, argument),) = expression.items()
        if function == "Condition" and isinstance(argument, str):
            return self._holds(self.conditions.get(argument), depth + 1)
        if function == "Fn::Not" and isinstance(argument, list) and len(argument) == 1:
            return not self._holds(argument[0], depth + 1)
        if function in ("Fn::And", "Fn::Or") and isinstance(argument, list):
            combine = all if function == "Fn::And" else any
            return combine(self._holds(item, depth + 1) for item in argument)
        if function == "Fn::Equals" and isinstance(argument, list) and len(argument) == 2:
            left, right = (self._resolve(item, DEFAULT_ACCOUNT, "us-east-1") for item in argument)
            return left is not None and left == right
        return False

    def chosen(self, value: Any) -> Any:
        """The branch of an Fn::If the parameters' defaults choose (other values unchanged)."""
        while isinstance(value, Mapping) and set(value) == {"Fn::If"}:
            argument = value["Fn::If"]
            if not (isinstance(argument, list) and len(argument) == 3 and isinstance(argument[0], str)):
                return None
            value = argument[1] if self.condition_holds(argument[0]) else argument[2]
        return value

    def deployed(self, logical_id: str) -> bool:
        """False for a resource whose Condition is false with the parameters' defaults."""
        condition = self.resources.get(logical_id, {}).get("Condition")
        return condition is None or self.condition_holds(str(condition))

    def resolve(self, value: Any, account: str, region: str) -> str | None:
        """A property's value as deployed with the parameters' defaults; None when only a deployment knows it."""
        return self._resolve(value, account, region)

    def _resolve(self, value: Any, account: str, region: str) -> str | None:
        value = self.chosen(value)
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str | int | float):
            return str(value)
        if not isinstance(value, Mapping) or len(value) != 1:
            return None
        ((intrinsic, argument),) = value.items()
        pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK_NAME,
        }
        if intrinsic == "Ref" and isinstance(argument, str):
            if argument in pseudo:
                return pseudo[argument]
            parameter = self.parameters.get(argument)
            if isinstance(parameter, Mapping) and "Default" in parameter:
                return self._resolve(parameter["Default"], account, region)
            return None  # a resource's physical id exists only once deployed
        if intrinsic == "Fn::GetAtt" and isinstance(argument, list) and len(argument) == 2:
            resource = self.resources.get(argument[0], {})
            if resource.get("Type") == "AWS::IAM::Role" and argument[1] == "Arn":
                # Deployed names carry a stack prefix and suffix; replay uses the logical id.
                return f"arn:aws:iam::{account}:role/{argument[0]}"
            return None
        if intrinsic == "Fn::Sub" and isinstance(argument, str):

            def substitute(match: re.Match[str]) -> str:
                key = match.group(1)
                resolved = pseudo.get(key) or self._resolve({"Ref": key}, account, region)
                if resolved is None:
                    raise LookupError(key)
                return resolved

            try:
                return re.sub(r"\$\{([^}!]+)\}", substitute, argument)
            except LookupError:
                return None
        return None


def load_document(path: Path) -> dict[str, Any]:
    """template.yaml as a plain dict, short-form tags turned into their long form."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as err:
        raise TemplateError(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise TemplateError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources")
    return document


def load_template(path: Path) -> Template:
    document = load_document(path)
    resources: Mapping[str, Any] = document["Resources"]
    globals_env = document.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}) or {}
    functions = []
    for logical_id, resource in resources.items():
        if not isinstance(resource, Mapping) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties", {})
        code_uri = properties.get("CodeUri")
        handler = properties.get("Handler", "")
        if not isinstance(code_uri, str) or "." not in handler:
            raise TemplateError(f"{logical_id}: replay needs a local CodeUri and a module.function Handler")
        module, function_name = handler.rsplit(".", 1)
        rules = []
        for event_name, event in (properties.get("Events") or {}).items():
            if event.get("Type") not in ("EventBridgeRule", "CloudWatchEvent"):
                continue
            pattern = event.get("Properties", {}).get("Pattern")
            if not isinstance(pattern, Mapping):
                raise TemplateError(f"{logical_id}.{event_name}: rule has no inline Pattern")
            rules.append(Rule(event_name, pattern, EventPattern.load(json.dumps(pattern))))
        environment = {**globals_env, **(properties.get("Environment", {}).get("Variables", {}) or {})}
        functions.append(
            FunctionSpec(
                logical_id=logical_id,
                handler_file=path.parent / code_uri / f"{module.replace('.', '/')}.py",
                handler_name=function_name,
                rules=tuple(rules),
                environment=environment,
            )
        )
    return Template(
        path=path,
        parameters=document.get("Parameters", {}) or {},
        resources=resources,
        functions=tuple(functions),
        conditions=document.get("Conditions", {}) or {},
    )


def find_template(start: Path | None = None) -> Path:
    """template.yaml in the current directory or a parent; else the one next to this checkout."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "template.yaml"
        if candidate.is_file():
            return candidate
    return Path(__file__).resolve().parents[2] / "template.yaml"
