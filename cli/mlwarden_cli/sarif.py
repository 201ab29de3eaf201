"""Findings for people and tools: the `--json | --sarif` and `--fail-on` options of `mlwarden lint` and `mlwarden
sweep`, and the one SARIF 2.1.0 builder both use (https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# ML Warden's severities as SARIF levels (the severity itself goes in each result's properties).
LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note", "INFORMATIONAL": "note"}
FAIL_ON = ("CRITICAL", "HIGH", "MEDIUM", "LOW")


def add_output_options(parser: argparse.ArgumentParser, *, json_help: str) -> None:
    """`--json | --sarif` (one or the other: argparse exits 2 on both) and `--fail-on SEVERITY`."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help=json_help)
    output.add_argument("--sarif", action="store_true", help="one SARIF 2.1.0 log")
    parser.add_argument(
        "--fail-on",
        default="HIGH",
        type=str.upper,
        choices=FAIL_ON,
        metavar="SEVERITY",
        help="exit 1 when a finding is at or above it: CRITICAL, HIGH (default), MEDIUM or LOW",
    )


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    help: str


@dataclass(frozen=True)
class Result:
    rule_id: str
    severity: str
    message: str
    locations: list[dict[str, Any]]
    properties: dict[str, Any] = field(default_factory=dict)


def log(tool: str, information_uri: str | None, rules: Sequence[Rule], results: Sequence[Result]) -> dict[str, Any]:
    """One SARIF log with one run: `rules` in the order given, each result pointing at its rule by index."""
    index = {rule.id: position for position, rule in enumerate(rules)}
    driver: dict[str, Any] = {"name": tool, "version": _version()}
    if information_uri is not None:
        driver["informationUri"] = information_uri
    driver["rules"] = [
        {"id": rule.id, "shortDescription": {"text": rule.description}, "help": {"text": rule.help}} for rule in rules
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "results": [
                    {
                        "ruleId": result.rule_id,
                        "ruleIndex": index[result.rule_id],
                        "level": LEVEL[result.severity],
                        "message": {"text": result.message},
                        "locations": result.locations,
                        "properties": {"severity": result.severity, **result.properties},
                    }
                    for result in results
                ],
            }
        ],
    }


def _version() -> str:
    try:
        return metadata.version("mlwarden")
    except metadata.PackageNotFoundError:
        return "0"
