"""`mlwarden lint`: ML Warden's IAM analyzer before deployment, where parliament or cloudsplaining run today.

    mlwarden lint [--json | --sarif] [--fail-on SEVERITY] PATH...

Each PATH is an IAM policy document (JSON), a CloudFormation or SAM template (YAML with the short-form
intrinsic functions, or JSON), or a directory searched for `*.json`, `*.yaml`, `*.yml` and `*.template`.
A template's inline and managed policies are linted (IAM roles, users, groups and policies, SAM
function `Policies`, and the resource policies of buckets, queues, topics and keys), with intrinsic
functions resolved to plausible values (`!Sub arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*`
becomes an account-wide ARN) and both branches of a statement-level `Fn::If` linted.

Exit status: 0 when no finding is at or above --fail-on (default HIGH), 1 when one is, 2 for unusable
input (a file that is neither JSON nor YAML, a path that does not exist).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlwarden.outcomes import Severity
from mlwarden.rules.policy_analysis import Finding, Rule, analyze, rank
from mlwarden_cli import sarif as sarif_log
from mlwarden_cli.template import _CfnLoader

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNUSABLE = 0, 1, 2
SUFFIXES = (".json", ".yaml", ".yml", ".template")
# Properties that hold a policy document, on any resource type.
_POLICY_PROPERTIES = ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument")
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "stack",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/stack/0",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NoValue": None,
}


class UnusableInput(ValueError):
    """A PATH that does not exist, or a file that is neither JSON nor YAML."""


@dataclass(frozen=True)
class Policy:
    """One policy document found in a file, where it is, and the line of each statement."""

    file: Path
    name: str  # `FlagWildcardIamRole/flag-wildcard-iam`, or the file name for a policy file
    pointer: str  # `Resources/FlagWildcardIamRole/Properties/Policies/0/PolicyDocument`, or ""
    document: dict[str, Any]
    lines: tuple[int, ...]  # per statement of `document`, 1-based (0 when unknown)


@dataclass(frozen=True)
class LintFinding:
    """One analyzer finding, located in a file."""

    policy: Policy
    finding: Finding

    @property
    def line(self) -> int:
        lines = self.policy.lines
        return lines[self.finding.statement] if self.finding.statement < len(lines) else 0

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "path": str(self.policy.file),
            "line": self.line,
            "policy": self.policy.name,
            "statement": self.finding.statement,
            "sid": self.finding.sid,
            "severity": self.finding.severity.value,
            "rule": self.finding.rule.value,
            "message": self.finding.message,
        }
        if self.finding.paths:
            shown["paths"] = list(self.finding.paths)
        return shown

    def as_text(self) -> str:
        where = f"{self.policy.file}:{self.line}" if self.line else str(self.policy.file)
        sid = f" ({self.finding.sid})" if self.finding.sid else ""
        return (
            f"{where}: {self.finding.severity.value} {self.finding.rule.value} "
            f"[{self.policy.name}, statement {self.finding.statement}{sid}] {self.finding.message}"
        )


# --- reading files --------------------------------------------------------------------------------------


def files_in(paths: list[Path]) -> list[tuple[Path, bool]]:
    """Each file to read, and whether it was named (a named file must hold a policy or a template;
    a directory's other JSON and YAML files are not ours to lint)."""
    found: list[tuple[Path, bool]] = []
    for path in paths:
        if path.is_dir():
            found += [(p, False) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in SUFFIXES]
        elif path.is_file():
            found.append((path, True))
        else:
            raise UnusableInput(f"{path}: no such file or directory")
    return found


def read(file: Path) -> tuple[Any, yaml.Node | None]:
    """The parsed file and its YAML node tree (for line numbers); JSON is tried first, then YAML."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UnusableInput(f"{file}: cannot read it ({err})") from err
    try:
        document: Any = json.loads(text)
    except ValueError:
        try:
            document = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            raise UnusableInput(f"{file}: neither JSON nor YAML") from err
    try:
        node = yaml.compose(text, Loader=_CfnLoader)
    except yaml.YAMLError:
        node = None  # JSON that YAML 1.1 cannot read (tabs): findings without a line
    return document, node


def policies_in(file: Path) -> list[Policy] | None:
    """The policies of a policy file or a template; None for any other JSON or YAML."""
    document, node = read(file)
    if not isinstance(document, Mapping):
        return None
    if "Statement" in document:
        lines = _statement_lines(_node_at(node, []), 1)
        return [Policy(file, file.name, "", dict(document), lines)]
    if isinstance(document.get("Resources"), Mapping):
        return list(_template_policies(file, document, node))
    return None


def _template_policies(file: Path, template: Mapping[str, Any], root: yaml.Node | None) -> Iterator[Policy]:
    resolver = Resolver(template)
    for logical_id, resource in template["Resources"].items():
        if not isinstance(resource, Mapping) or not isinstance(resource.get("Properties"), Mapping):
            continue
        properties = resource["Properties"]
        found: list[tuple[list[Any], str, Any]] = []
        policies = properties.get("Policies")
        for index, entry in enumerate(policies if isinstance(policies, list) else []):
            if isinstance(entry, Mapping) and isinstance(entry.get("PolicyDocument"), Mapping):
                name = entry.get("PolicyName")
                label = name if isinstance(name, str) else str(index)
                found.append((["Policies", index, "PolicyDocument"], label, entry["PolicyDocument"]))
            elif isinstance(entry, Mapping) and "Statement" in entry:  # a SAM function's inline policy
                found.append((["Policies", index], str(index), entry))
        for key in _POLICY_PROPERTIES:
            if isinstance(properties.get(key), Mapping):
                found.append(([key], key, properties[key]))
        for steps, label, raw in found:
            pointer = ["Resources", logical_id, "Properties", *steps]
            statements, raw_indexes = resolver.statements(raw)
            if steps == ["KeyPolicy"]:
                kept = [i for i, statement in enumerate(statements) if not delegates_to_iam(statement)]
                statements, raw_indexes = [statements[i] for i in kept], [raw_indexes[i] for i in kept]
            raw_lines = _statement_lines(_node_at(root, [*pointer, "Statement"]), 0)
            lines = tuple(raw_lines[i] if i < len(raw_lines) else 0 for i in raw_indexes)
            document = {"Version": "2012-10-17", "Statement": statements}
            yield Policy(file, f"{logical_id}/{label}", "/".join(map(str, pointer)), document, lines)


def delegates_to_iam(statement: Any) -> bool:
    """AWS's default key policy statement: the key's own account may do anything with the key, so IAM
    policies decide (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html).
    It grants nothing by itself; read as an identity policy it would be `kms:*` on `*`."""
    if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
        return False
    principal = statement.get("Principal")
    aws = principal.get("AWS") if isinstance(principal, Mapping) else None
    account = PSEUDO["AWS::AccountId"]
    return aws in (account, f"arn:aws:iam::{account}:root")


def _node_at(node: yaml.Node | None, steps: list[Any]) -> yaml.Node | None:
    for step in steps:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return None
    return node


def _statement_lines(node: yaml.Node | None, fallback: int) -> tuple[int, ...]:
    """The line of each statement under a policy (or its Statement) node."""
    statement = _node_at(node, ["Statement"]) if isinstance(node, yaml.MappingNode) else node
    if isinstance(statement, yaml.SequenceNode):
        return tuple(item.start_mark.line + 1 for item in statement.value)
    if isinstance(statement, yaml.MappingNode):
        return (statement.start_mark.line + 1,)
    return (fallback,)


class Resolver:
    """Intrinsic functions to plausible values, the way CloudFormation would resolve them in one account."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        resources = template.get("Resources")
        parameters = template.get("Parameters")
        self.resources: Mapping[str, Any] = resources if isinstance(resources, Mapping) else {}
        self.parameters: Mapping[str, Any] = parameters if isinstance(parameters, Mapping) else {}

    def statements(self, document: Mapping[str, Any]) -> tuple[list[Any], list[int]]:
        """Every statement, both branches of a statement-level Fn::If (AWS::NoValue dropped), and the
        index of the written statement each came from."""
        raw = document.get("Statement")
        written = raw if isinstance(raw, list) else [raw]
        found: list[Any] = []
        origins: list[int] = []
        for index, statement in enumerate(written):
            branches = [statement]
            if isinstance(statement, Mapping) and isinstance(statement.get("Fn::If"), list):
                branches = statement["Fn::If"][1:]
            for branch in branches:
                resolved = self.resolve(branch)
                if resolved is not None:
                    found.append(resolved)
                    origins.append(index)
        return found, origins

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not None]
        if not isinstance(value, Mapping):
            return value
        if "Ref" in value:
            return self.ref(str(value["Ref"]))
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            name, attribute = [*target, "Arn"][:2] if isinstance(target, list) else (str(target), "Arn")
            return self.arn(str(name)) if attribute == "Arn" else f"{name}-{attribute}"
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            if isinstance(sub, list) and sub and isinstance(sub[0], str):
                return self.sub(sub[0], sub[1] if len(sub) > 1 and isinstance(sub[1], Mapping) else {})
            return self.sub(sub, {}) if isinstance(sub, str) else None
        if "Fn::Join" in value:
            joined = value["Fn::Join"]
            if isinstance(joined, list) and len(joined) == 2 and isinstance(joined[1], list):
                return str(joined[0]).join(str(self.resolve(p)) for p in joined[1])
        if "Fn::If" in value and isinstance(value["Fn::If"], list) and len(value["Fn::If"]) == 3:
            return self.resolve(value["Fn::If"][1])
        return {key: self.resolve(v) for key, v in value.items()}

    def ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        parameter = self.parameters.get(name)
        if isinstance(parameter, Mapping):
            return str(parameter.get("Default", name))
        if self._type(name) == "AWS::S3::Bucket":
            return name.lower()
        return self.arn(name)

    def sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in variables:
                return str(self.resolve(variables[key]))
            if key.endswith(".Arn"):
                return self.arn(key.removesuffix(".Arn"))
            return str(self.ref(key))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def _type(self, name: str) -> str:
        resource = self.resources.get(name)
        kind = resource.get("Type") if isinstance(resource, Mapping) else None
        return kind if isinstance(kind, str) else "AWS::Events::Rule"  # SAM's generated rules

    def arn(self, name: str) -> str:
        """A plausible ARN for a template resource, by its type."""
        account, region = PSEUDO["AWS::AccountId"], PSEUDO["AWS::Region"]
        return {
            "AWS::Logs::LogGroup": f"arn:aws:logs:{region}:{account}:log-group:{name}:*",
            "AWS::SQS::Queue": f"arn:aws:sqs:{region}:{account}:{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{region}:{account}:{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{region}:{account}:key/{name.lower()}-0000",
            "AWS::IAM::Role": f"arn:aws:iam::{account}:role/{name}",
            "AWS::IAM::ManagedPolicy": f"arn:aws:iam::{account}:policy/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name.lower()}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{region}:{account}:table/{name}",
            "AWS::Serverless::Function": f"arn:aws:lambda:{region}:{account}:function:{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{region}:{account}:function:{name}",
            "AWS::Events::Rule": f"arn:aws:events:{region}:{account}:rule/{name}",
        }.get(self._type(name), f"arn:aws:cloudformation:{region}:{account}:stack/{name}")


# --- findings and output --------------------------------------------------------------------------------


def lint(paths: list[Path]) -> tuple[list[LintFinding], list[str]]:
    """Every finding in every policy under `paths`, and the problems (shapes IAM would reject)."""
    findings: list[LintFinding] = []
    problems: list[str] = []
    for file, named in files_in(paths):
        policies = policies_in(file)
        if policies is None and named:
            raise UnusableInput(f"{file}: neither an IAM policy document nor a CloudFormation template")
        for policy in policies or []:
            analysis = analyze(policy.document)
            # In a key policy, Resource "*" is that one key: decrypting with it is not decrypting with every key.
            key_policy = policy.pointer.endswith("/KeyPolicy")
            findings += [
                LintFinding(policy, f)
                for f in analysis.findings
                if not (key_policy and f.rule is Rule.DECRYPT_ON_ANY_KEY)
            ]
            problems += [f"{file}: {policy.name}: {problem}" for problem in analysis.problems]
    return findings, problems


def sarif(findings: list[LintFinding]) -> dict[str, Any]:
    """One SARIF 2.1.0 log: one run, one rule per analyzer rule, one result per finding."""
    rules = sorted({f.finding.rule for f in findings}, key=lambda r: r.value)
    results = []
    for item in findings:
        physical: dict[str, Any] = {"artifactLocation": {"uri": item.policy.file.as_posix()}}
        if item.line:
            physical["region"] = {"startLine": item.line}
        location: dict[str, Any] = {"physicalLocation": physical}
        where = "/".join(p for p in (item.policy.pointer, f"Statement/{item.finding.statement}") if p)
        location["logicalLocations"] = [{"fullyQualifiedName": where, "kind": "object"}]
        results.append(
            sarif_log.Result(
                rule_id=item.finding.rule.value,
                severity=item.finding.severity.value,
                message=f"{item.policy.name}, statement {item.finding.statement}: {item.finding.message}",
                locations=[location],
                properties={"paths": list(item.finding.paths)},
            )
        )
    return sarif_log.log(
        "mlwarden lint", "https://github.com/DataDog/pathfinding.cloud", [_sarif_rule(rule) for rule in rules], results
    )


def _sarif_rule(rule: Rule) -> sarif_log.Rule:
    sample = Finding(0, None, rule, Severity.LOW, (), ())
    return sarif_log.Rule(id=rule.value, description=sample.why, help=sample.suggestion)


def add_parser(commands: Any) -> None:
    """Register `lint` on the CLI's subcommands."""
    parser = commands.add_parser(
        "lint",
        help="lint IAM policies and CloudFormation/SAM templates with ML Warden's analyzer",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sarif_log.add_output_options(parser, json_help="one JSON object per finding per line")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")


def run(args: argparse.Namespace) -> int:
    try:
        findings, problems = lint(args.paths)
    except UnusableInput as err:
        print(f"mlwarden lint: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    for problem in problems:
        print(f"mlwarden lint: {problem}", file=sys.stderr)
    if args.sarif:
        print(json.dumps(sarif(findings), indent=2))
    else:
        for item in findings:
            print(json.dumps(item.as_json(), sort_keys=True) if args.json else item.as_text())
    threshold = rank(Severity(args.fail_on))
    return EXIT_FINDINGS if any(rank(f.finding.severity) >= threshold for f in findings) else EXIT_CLEAN
