"""Compile the privilege-escalation path catalogue into layers/core/mlwarden/rules/escalation_paths.json.

Source: Datadog's pathfinding.cloud (https://github.com/DataDog/pathfinding.cloud, Apache-2.0), the
public catalogue of AWS IAM privilege-escalation paths that tracks Rhino Security Labs', Bishop Fox's
iam-vulnerable, PMapper's and HackTricks' research and is still maintained. Its `data/paths/**.yaml`
files are extracted (id, name, category, required permissions) into
scripts/escalation_sources/pathfinding_cloud.json, the committed input of this script:

    .venv/bin/python scripts/build_escalation_paths.py --refresh-from ~/src/pathfinding.cloud
    .venv/bin/python scripts/build_escalation_paths.py            # also run by `make catalogue`

A test (tests/unit/test_escalation_paths.py) fails when the compiled file is not what this script
makes from its input, so the two are committed together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "scripts" / "escalation_sources" / "pathfinding_cloud.json"
OUTPUT = ROOT / "layers" / "core" / "mlwarden" / "rules" / "escalation_paths.json"
CATEGORIES = ("self-escalation", "principal-access", "new-passrole", "existing-passrole", "credential-access")

# ML Warden's additions, on top of pathfinding.cloud. Each is a set of actions that together run code as,
# or grant, a role the caller does not hold. Kept small: anything upstream publishes later is dropped here.
ADDITIONS: tuple[dict[str, Any], ...] = (
    # SageMaker: every job or app that runs a container under an execution role the caller passes.
    {
        "id": "mlwarden-sagemaker-01",
        "category": "new-passrole",
        "actions": ["iam:PassRole", "sagemaker:CreateHyperParameterTuningJob"],
    },  # training jobs under the role
    {
        "id": "mlwarden-sagemaker-02",
        "category": "new-passrole",
        "actions": ["iam:PassRole", "sagemaker:CreateModel", "sagemaker:CreateTransformJob"],
    },
    {
        "id": "mlwarden-sagemaker-03",
        "category": "new-passrole",
        "actions": [
            "iam:PassRole",
            "sagemaker:CreateModel",
            "sagemaker:CreateEndpointConfig",
            "sagemaker:CreateEndpoint",
        ],
    },  # the inference container runs as the model's role
    {
        "id": "mlwarden-sagemaker-04",
        "category": "new-passrole",
        "actions": ["iam:PassRole", "sagemaker:CreatePipeline", "sagemaker:StartPipelineExecution"],
    },
    {
        "id": "mlwarden-sagemaker-05",
        "category": "new-passrole",
        "actions": ["iam:PassRole", "sagemaker:CreateUserProfile", "sagemaker:CreatePresignedDomainUrl"],
    },  # Studio
    {
        "id": "mlwarden-sagemaker-06",
        "category": "existing-passrole",
        "actions": ["sagemaker:CreatePresignedDomainUrl"],
    },  # log in as an existing Studio user profile
    {
        "id": "mlwarden-sagemaker-07",
        "category": "existing-passrole",
        "actions": [
            "sagemaker:UpdateNotebookInstanceLifecycleConfig",
            "sagemaker:StopNotebookInstance",
            "sagemaker:StartNotebookInstance",
        ],
    },  # rewrite the start script of an attached config
    # Bedrock AgentCore: runtimes and code interpreters execute caller-supplied code under their role.
    {
        "id": "mlwarden-bedrock-01",
        "category": "new-passrole",
        "actions": ["iam:PassRole", "bedrock-agentcore:CreateAgentRuntime", "bedrock-agentcore:InvokeAgentRuntime"],
    },
    {
        "id": "mlwarden-bedrock-02",
        "category": "existing-passrole",
        "actions": ["bedrock-agentcore:UpdateAgentRuntime", "bedrock-agentcore:InvokeAgentRuntime"],
    },
    # Existing compute named by issue 12 that the pinned snapshot predates (later pathfinding.cloud ids
    # batch-002, codedeploy-001, ecs-006 describe the first three).
    {"id": "mlwarden-batch-01", "category": "existing-passrole", "actions": ["batch:SubmitJob"]},
    {
        "id": "mlwarden-codedeploy-01",
        "category": "existing-passrole",
        "actions": ["codedeploy:CreateDeployment", "codedeploy:RegisterApplicationRevision"],
    },
    {"id": "mlwarden-ecs-01", "category": "existing-passrole", "actions": ["ecs:ExecuteCommand", "ecs:DescribeTasks"]},
    {
        "id": "mlwarden-ecs-02",
        "category": "existing-passrole",
        "actions": ["ecs:RegisterTaskDefinition", "ecs:UpdateService"],
    },  # new image, same task role
    {
        "id": "mlwarden-states-01",
        "category": "existing-passrole",
        "actions": ["states:UpdateStateMachine", "states:StartExecution"],
    },  # SDK tasks run as the machine's role
    {
        "id": "mlwarden-sso-01",
        "category": "self-escalation",
        "actions": ["sso:PutInlinePolicyToPermissionSet", "sso:ProvisionPermissionSet"],
    },
    {
        "id": "mlwarden-sso-02",
        "category": "self-escalation",
        "actions": ["sso:AttachManagedPolicyToPermissionSet", "sso:ProvisionPermissionSet"],
    },
)


def extract(checkout: Path) -> dict[str, Any]:
    """pathfinding.cloud's path files, reduced to what the analyzer needs."""
    import yaml  # noqa: PLC0415 - only when refreshing the input from a checkout

    commit = subprocess.check_output(["git", "-C", str(checkout), "rev-parse", "HEAD"], text=True).strip()
    paths = []
    for file in sorted((checkout / "data" / "paths").rglob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        required = [p["permission"] for p in data["permissions"]["required"]]
        paths.append({"id": data["id"], "name": data["name"], "category": data["category"], "required": required})
    return {
        "source": "https://github.com/DataDog/pathfinding.cloud",
        "commit": commit,
        "license": "Apache-2.0",
        "paths": sorted(paths, key=lambda p: p["id"]),
    }


def build(source: dict[str, Any]) -> dict[str, Any]:
    paths = [
        {"id": p["id"], "category": p["category"], "actions": list(p["required"]), "source": "pathfinding.cloud"}
        for p in source["paths"]
    ]
    paths += [{**addition, "source": "mlwarden"} for addition in ADDITIONS]
    for path in paths:
        if path["category"] not in CATEGORIES:
            raise ValueError(f"{path['id']}: unknown category {path['category']!r}")
    return {
        "source": f"{source['source']} @ {source['commit']} ({source['license']}) + ML Warden additions",
        "version": source["commit"],
        "license": source["license"],
        "paths": paths,
    }


def render(catalogue: dict[str, Any]) -> str:
    return json.dumps(catalogue, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--refresh-from", type=Path, metavar="CHECKOUT", help="a git checkout of pathfinding.cloud")
    args = parser.parse_args()
    if args.refresh_from:
        SOURCE.write_text(json.dumps(extract(args.refresh_from), indent=1) + "\n", encoding="utf-8")
    catalogue = build(json.loads(SOURCE.read_text(encoding="utf-8")))
    OUTPUT.write_text(render(catalogue), encoding="utf-8")
    print(f"{OUTPUT}: {len(catalogue['paths'])} escalation paths from {catalogue['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
